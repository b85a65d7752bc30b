"""Every number the README's result tables quote for a committed figure is that figure's CSV value,
rounded as printed: a sentence or a table cannot drift from the records it reports."""
import re
from pathlib import Path

import pandas as pd
import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
README = (PROJECT_ROOT / "README.md").read_text()
# A result row: | [Fig N](figures/<stem>.png), ... | <run> | train acc | test acc | train / test loss | ...
# (a continuation row leaves the first cell empty: it is the figure above's)
ROW = re.compile(r"^\| (?:\[Fig \d\]\((figures/[\w.-]+)\.png\)[^|]*)? ?\| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", re.M)
# README labels -> the figures' legend labels
LABELS = {"25 random": "QL, random", "25 mammals": "QL, mammals"}  # Fig 3's rows are QL's unless named


def quoted_rows():
    rows, figure = [], None
    for match in ROW.finditer(README):
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


def _check(quoted: str, value: float, scale: float = 1.0) -> None:
    """`quoted` (e.g. '**78.8%**', '0.062') is `value` * scale rounded to the digits it shows."""
    text = quoted.strip("*% ")
    decimals = len(text.split(".")[1]) if "." in text else 0
    assert abs(float(text) - value * scale) <= 0.5 * 10 ** -decimals + 1e-9, (quoted, value * scale)


def test_the_readme_quotes_result_tables_for_the_committed_figures():
    figures = {figure for figure, *_ in quoted_rows()}
    assert {"figures/fig1_k25_random_gpu-short", "figures/fig3_mammals_vs_random_gpu-short",
            "figures/fig1_k25_random_quick", "figures/fig2_k100_quick",
            "figures/fig3_mammals_vs_random_quick"} <= figures


@pytest.mark.parametrize("figure,run,train_acc,test_acc,losses", quoted_rows(),
                         ids=[f"{f.split('/')[1]}-{r}" for f, r, *_ in quoted_rows()])
def test_every_number_in_the_readme_result_tables_is_the_figure_csv_rounded(
        figure, run, train_acc, test_acc, losses):
    data = pd.read_csv(PROJECT_ROOT / f"{figure}.csv")
    final = data[(data.run == run) & (data.epoch == data[data.run == run].epoch.max())]
    assert len(final), f"{run} not in {figure}.csv"
    for quoted, column, scale in ((train_acc, "train_acc", 100), (test_acc, "test_acc", 100)):
        mean, *sd = [part for part in quoted.split("+-")]
        _check(mean, final[column].mean(), scale)
        if sd:  # several seeds: the sample standard deviation
            _check(sd[0], final[column].std(ddof=1), scale)
    train_loss, test_loss = losses.split("/")
    _check(train_loss, final.train_loss_norm.mean())
    _check(test_loss, final.test_loss_norm.mean())
