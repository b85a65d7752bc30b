"""Every number the result tables of README.md and docs/results.md quote for a committed figure is
that figure's CSV value, rounded as printed: a sentence or a table cannot drift from the records
it reports.

Three table shapes are read:
- a result row (docs/results.md): | [Fig N](figures/<stem>.png), ... | run | train acc | test acc | train / test loss | ...
- the README's table: one row per run, one "train / test" column per preset (`gpu-short`, `quick`), the
  figure's CSV found by its number and preset; "not trained" is checked too (no such run in the CSV);
- the K sweep's, the weight sweep's and the theory figures' tables of docs/results.md, each found by
  its header.
"""
import math
import re
from pathlib import Path

import pandas as pd
import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", "docs/results.md")
TEXT = {name: (PROJECT_ROOT / name).read_text() for name in DOCUMENTS}
# A result row: | [Fig N](figures/<stem>.png), ... | <run> | train acc | test acc | train / test loss | ...
# (a continuation row leaves the first cell empty: it is the figure above's; docs/ link with ../)
ROW = re.compile(r"^\| (?:\[Fig \d\]\((?:\.\./)?(figures/[\w.-]+)\.png\)[^|]*)? ?\| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", re.M)
# document labels -> the figures' legend labels
LABELS = {"25 random": "QL, random", "25 mammals": "QL, mammals"}  # Fig 3's rows are QL's unless named


def quoted_rows(text: str):
    rows, figure = [], None
    for match in ROW.finditer(text):
        stem, run, train_acc, test_acc, losses = match.groups()
        figure = stem or figure
        if figure is None or "/" not in losses:
            continue
        run = re.sub(r" \(LR [\d.]+\)", "", run.strip())
        if "fig3" in figure and ", " in run:  # a control row names its loss: "CE, 25 mammals"
            loss, subset = run.split(", ")
            run = f"{loss}, {subset.split()[-1]}"
        rows.append((figure, LABELS.get(run, run), train_acc, test_acc, losses))
    return rows


def tables(text: str):
    """Every markdown table of `text`: (header cells, [row cells, ...])."""
    found, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s:|-]+\|$", lines[i + 1]) and (
                i == 0 or not lines[i - 1].startswith("|")):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(cells(row))
            found.append((cells(line), rows))
    return found


def cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def table_with(text: str, header_start: str):
    matches = [t for t in tables(text) if " | ".join(t[0]).startswith(header_start)]
    assert len(matches) == 1, f"{len(matches)} tables start with {header_start!r}"
    return matches[0]


def _check(quoted: str, value: float, scale: float = 1.0) -> None:
    """`quoted` (e.g. '**78.8%**', '0.062') is `value` * scale rounded to the digits it shows."""
    text = quoted.strip("*% ")
    decimals = len(text.split(".")[1]) if "." in text else 0
    assert abs(float(text) - value * scale) <= 0.5 * 10 ** -decimals + 1e-9, (quoted, value * scale)


def _check_mean_sd(quoted: str, values: pd.Series, scale: float = 1.0) -> None:
    """'47.9 +- 0.5%': the mean and the sample standard deviation; '78.8%': the mean."""
    mean, *sd = quoted.split("+-")
    _check(mean, values.mean(), scale)
    if sd:
        _check(sd[0], values.std(ddof=1), scale)


def final_epochs(data: pd.DataFrame, run: str) -> pd.DataFrame:
    rows = data[data.run == run]
    return rows[rows.epoch == rows.epoch.max()]


# --- result rows (docs/results.md) ---------------------------------------------------------------

def test_the_documents_quote_result_tables_for_the_committed_figures():
    figures = {figure for figure, *_ in quoted_rows(TEXT["docs/results.md"])}
    assert {"figures/fig1_k25_random_gpu-short", "figures/fig3_mammals_vs_random_gpu-short",
            "figures/fig1_k25_random_quick", "figures/fig2_k100_quick",
            "figures/fig3_mammals_vs_random_quick"} <= figures


ALL_ROWS = [(name, *row) for name in DOCUMENTS for row in quoted_rows(TEXT[name])]


@pytest.mark.parametrize("document,figure,run,train_acc,test_acc,losses", ALL_ROWS,
                         ids=[f"{d}-{f.split('/')[1]}-{r}" for d, f, r, *_ in ALL_ROWS])
def test_every_number_in_the_result_tables_is_the_figure_csv_rounded(
        document, figure, run, train_acc, test_acc, losses):
    data = pd.read_csv(PROJECT_ROOT / f"{figure}.csv")
    final = final_epochs(data, run)
    assert len(final), f"{run} not in {figure}.csv"
    _check_mean_sd(train_acc, final.train_acc, 100)
    _check_mean_sd(test_acc, final.test_acc, 100)
    train_loss, test_loss = losses.split("/")
    _check(train_loss, final.train_loss_norm.mean())
    _check(test_loss, final.test_loss_norm.mean())


# --- the README's table: the paper beside each preset ----------------------------------------------

def readme_table():
    """(figure number, run, preset, 'train / test' cell) for every preset cell of the README's table."""
    header, rows = table_with(TEXT["README.md"], "figure | run")
    presets = {i: m.group(1) for i, c in enumerate(header) if (m := re.fullmatch(r"`([\w-]+)` train / test", c))}
    assert set(presets.values()) == {"gpu-short", "quick"}, header
    quoted, number = [], None
    for row in rows:
        if row[0]:
            number = re.match(r"Fig (\d)", row[0]).group(1)
        quoted += [(number, row[1], preset, row[i]) for i, preset in presets.items()]
    return quoted


def figure_csv(number: str, preset: str) -> Path | None:
    found = sorted((PROJECT_ROOT / "figures").glob(f"fig{number}_*_{preset}.csv"))
    assert len(found) <= 1, found
    return found[0] if found else None


def test_the_readme_table_covers_every_paper_figure_at_both_presets():
    numbers = {(number, preset) for number, _, preset, cell in readme_table() if cell != "not trained"}
    assert {("1", "gpu-short"), ("3", "gpu-short"), ("1", "quick"), ("2", "quick"), ("3", "quick")} <= numbers


@pytest.mark.parametrize("number,run,preset,cell", readme_table(),
                         ids=[f"fig{n}-{r}-{p}" for n, r, p, _ in readme_table()])
def test_every_number_in_the_readme_table_is_the_figure_csv_rounded(number, run, preset, cell):
    path = figure_csv(number, preset)
    if cell == "not trained":  # then the committed figure has no such run
        assert path is None or run not in set(pd.read_csv(path).run), (path, run)
        return
    assert path is not None, f"no committed figure for Fig {number} at {preset}"
    final = final_epochs(pd.read_csv(path), run)
    assert len(final), f"{run} not in {path.name}"
    train_acc, test_acc = cell.split(" / ")
    _check_mean_sd(train_acc, final.train_acc, 100)
    _check_mean_sd(test_acc, final.test_acc, 100)


# --- the sweeps and the theory figures (docs/results.md) ---------------------------------------------

def test_the_k_sweep_table_is_the_figure_csv_rounded():
    header, rows = table_with(TEXT["docs/results.md"], "K | 2 | 5 | 10 | 25 | 50 | 100")
    data = pd.read_csv(PROJECT_ROOT / "figures/fig4_k_sweep_quick.csv")
    assert [row[0] for row in rows] == ["CE", "QL", "CCQL", "QL's normalized training loss"]
    for row in rows:
        loss, column, scale = (("QL", "train_loss_norm", 1) if "normalized" in row[0] else (row[0], "test_acc", 100))
        for k, quoted in zip(header[1:], row[1:]):
            values = data[(data.loss == loss) & (data.K == int(k))][column]
            assert len(values) == 3, (loss, k)
            _check(quoted.split(" (")[0], values.mean(), scale)


WEIGHT_COLUMNS = {"CE": "CE", "QL (w = 0)": "QL (w = 0)", "CCQL w = 1": "CCQL w = 1",
                  "CCQL w*": "CCQL w = sqrt(K-1)-1", "CCQL w = 10": "CCQL w = 10", "CCQL w = 30": "CCQL w = 30",
                  "CCQL w = K - 2": "CCQL w = K-2", "CCQL w = 10 K": "CCQL w = 10K",
                  "RS (1, 1)": "RS k = 1, M = 1", "RS (1, 15)": "RS k = 1, M = 15",
                  "RS (1 + w*, 1)": "RS k = 1+w*, M = 1"}


def test_the_weight_sweep_table_is_the_figure_csv_rounded():
    header, rows = table_with(TEXT["docs/results.md"], "K | CE | QL (w = 0)")
    assert header[1:] == list(WEIGHT_COLUMNS)
    data = pd.read_csv(PROJECT_ROOT / "figures/fig5_loss_weights_quick.csv")
    assert [row[0] for row in rows] == ["25", "100"]
    for row in rows:
        for column, quoted in zip(header[1:], row[1:]):
            values = data[(data.variant == WEIGHT_COLUMNS[column]) & (data.K == int(row[0]))].test_acc
            assert len(values) == 3, (column, row[0])
            _check_mean_sd(quoted, values, 100)


def test_the_loss_zoo_table_is_the_figure_csv_rounded():
    header, rows = table_with(TEXT["docs/results.md"], "loss | K | LR | test acc")
    data = pd.read_csv(PROJECT_ROOT / "figures/fig6_loss_zoo_quick.csv")
    assert len(rows) == data.groupby(["loss", "K"]).ngroups
    for loss, k, lr, test_acc, train_acc, loss_norm, ece in rows:
        runs = data[(data.loss == loss) & (data.K == int(k))]
        assert len(runs) == 3, (loss, k)
        _check(lr, runs.lr.iloc[0])
        _check_mean_sd(test_acc, runs.test_acc, 100)
        _check(train_acc, runs.train_acc.mean(), 100)
        _check(loss_norm, runs.train_loss_norm.mean())
        _check(ece, runs.test_ece.mean())


def test_the_theory_min_loss_table_is_the_figure_csv_rounded():
    header, rows = table_with(TEXT["docs/results.md"], "K | 10 | 20 | 50 | 100 | 200")
    data = pd.read_csv(PROJECT_ROOT / "figures/theory_min_loss_vs_k.csv")
    data = data[(data.rho == 0) & ((data.sigma == 0.1) | data.sigma.isna())]
    quantities = {"QL, normalized minimum": "ql_min", "rank bound 1 - d/K": "rank_bound",
                  "CCQL (w = sqrt(K-1) - 1), normalized minimum": "ccql_min",
                  "CE within the budget, normalized": "ce_budget"}
    assert [row[0] for row in rows] == list(quantities)
    for row in rows:
        for k, quoted in zip(header[1:], row[1:]):
            value = data[(data.quantity == quantities[row[0]]) & (data.K == int(k))].value
            assert len(value) == 1, (row[0], k)
            _check(quoted, value.item())


def test_the_theory_ccql_vs_w_table_is_the_figure_csv_rounded():
    header, rows = table_with(TEXT["docs/results.md"], "K | model | normalized min CCQL")
    data = pd.read_csv(PROJECT_ROOT / "figures/theory_ccql_vs_w.csv")
    columns = [("ccql_norm", (0, 10, 1e6)), ("accuracy", (0, 1e6)), ("wrong_class_output", (1e6,))]
    assert len(rows) == 4
    for row in rows:
        model = row[1].split()[0]
        for (column, ws), quoted in zip(columns, row[2:]):
            for w, part in zip(ws, quoted.split(" / "), strict=True):
                value = data[(data.K == int(row[0])) & (data.model == model) & (data.sigma == 0.3)
                             & (data.w.apply(lambda x: math.isclose(x, w)))][column]
                assert len(value) == 1, (row, column, w)
                _check(part, value.item())


def test_the_theory_gd_table_is_the_figure_csv_rounded():
    header, rows = table_with(TEXT["docs/results.md"], "K | 10 | 40 | 160")
    data = pd.read_csv(PROJECT_ROOT / "figures/theory_gd_dynamics.csv")
    last = data[data.iteration == data.groupby(["K", "loss"]).iteration.transform("max")]
    spec = {"test accuracy, CE / CCQL / QL": ("test_acc", ("ce", "ccql", "ql")),
            "test accuracy of the QL population optimum": ("test_acc", ("ql_population_optimum",)),
            "normalized training loss, CE / CCQL / QL": ("train_loss_norm", ("ce", "ccql", "ql"))}
    assert [row[0] for row in rows] == list(spec)
    for row in rows:
        column, losses = spec[row[0]]
        for k, quoted in zip(header[1:], row[1:]):
            for loss, part in zip(losses, quoted.split(" / "), strict=True):
                value = last[(last.K == int(k)) & (last.loss == loss)][column]
                assert len(value) == 1, (row[0], k, loss)
                _check(part, value.item())
