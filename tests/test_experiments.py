import json
from pathlib import Path

import numpy as np
import pytest

from ccql_utils.figures.registry import FIGURES
from ccql_utils.figures.paper_figures import class_names
from ccql_utils.figures.presets import EXPERIMENTS, PRESETS, experiment_configs, resolve_preset


def test_paper_preset_is_the_papers_protocol():
    for label, c in experiment_configs("k25_random", "paper").items():
        assert (c.depth, c.width, c.epochs, c.batch_size) == (28, 10, 200, 128)
        assert c.train_per_class is None and c.test_per_class is None
        assert (c.momentum, c.weight_decay, c.lr_factor) == (0.9, 5e-4, 0.25)
        assert c.lr_milestones == (0.25, 0.4, 0.55, 0.75, 0.85)
    assert experiment_configs("k25_random", "paper")["CE"].lr == 0.1
    assert experiment_configs("k100", "paper")["CCQL"].loss_options["w"] == pytest.approx(8.95, abs=1e-3)


def test_experiments_have_the_papers_runs():
    assert [(c.loss, c.classes, c.num_classes) for c in experiment_configs("k25_random").values()] == [
        ("ce", "random", 25), ("ql", "random", 25), ("ccql", "random", 25)]
    assert {c.classes for c in experiment_configs("k100").values()} == {"all"}
    fig3 = experiment_configs("mammals_vs_random")
    assert [(c.loss, c.classes) for c in fig3.values()][:2] == [("ql", "random"), ("ql", "mammals")]
    assert {(c.loss, c.classes) for c in fig3.values()} == {  # the paper's QL, and the controls
        (loss, subset) for loss in ("ce", "ql", "ccql") for subset in ("random", "mammals")}
    # Fig 3's random-class runs are Fig 1's runs: the run store trains them once
    fig1 = experiment_configs("k25_random")
    assert all(fig3[f"{label}, random"].run_id() == fig1[label].run_id() for label in fig1)


def test_overrides():
    configs = experiment_configs("k25_random", "quick", seed=3, epochs=7, lr={"ql": 0.02}, w=2.0,
                                 width=2)
    assert {c.epochs for c in configs.values()} == {7}
    assert configs["QL"].lr == 0.02 and configs["CE"].lr == PRESETS["quick"].lr[25]["ce"]
    assert configs["CCQL"].loss_options == {"w": 2.0} and configs["CE"].width == 2
    assert configs["CE"].class_seed == 3
    assert {c.lr for c in experiment_configs("k100", "quick", lr=0.3).values()} == {0.3}
    with pytest.raises(ValueError, match="unknown override"):
        experiment_configs("k25_random", "quick", epoch=3)
    with pytest.raises(ValueError, match="unknown preset"):
        experiment_configs("k25_random", "fast")
    with pytest.raises(ValueError, match="unknown experiment"):
        experiment_configs("k50", "quick")


def test_resolve_preset():
    assert resolve_preset("auto", "cpu") == "quick"
    assert resolve_preset("auto", "cuda") == "paper"
    assert resolve_preset("tiny") == "tiny"
    with pytest.raises(ValueError):
        resolve_preset("huge")


def test_every_figure_is_one_registry_entry_with_its_own_notebook_and_stem():
    from ccql_utils.figures.notebook_parameters import NOTEBOOKS_DIR
    assert len({f.notebook for f in FIGURES.values()}) == len(FIGURES) == 7
    assert sorted(f.notebook for f in FIGURES.values()) == sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb"))
    assert len({f.stem for f in FIGURES.values()}) == len(FIGURES)


def test_every_run_has_a_paper_report():
    for name, experiment in EXPERIMENTS.items():
        assert set(experiment_configs(name)) == set(experiment.paper_reports)


def test_run_experiment_table_figure_and_provenance(synthetic_root, tmp_path):
    kwargs = dict(preset="tiny", data_root=synthetic_root, runs_dir=tmp_path / "runs",
                  figures_dir=tmp_path / "figures", verify_data=False, progress=False, device="cpu")
    result = FIGURES["k25_random"].run(**kwargs)
    assert all(run.finished for run in result.runs.values())
    table = result.table()
    assert list(table.run) == ["CE", "QL", "CCQL"] and set(table.preset) == {"tiny"}
    assert (table.epochs == "2/2").all()
    histories = result.data()
    assert len(histories) == 6 and set(histories.run) == {"CE", "QL", "CCQL"}

    paths = result.save(result.plot())
    assert paths["png"].name == "fig1_k25_random_tiny.png"
    record = json.loads(paths["provenance"].read_text())
    assert record["parameters"]["runs"]["QL"]["class_names"] == result.runs["QL", 0].class_names
    assert record["parameters"]["diverged_runs"] == []


def test_finished_experiment_is_read_back_without_loading_data(synthetic_root, tmp_path, monkeypatch):
    from ccql_utils.execution import store as runs
    kwargs = dict(preset="tiny", data_root=synthetic_root, runs_dir=tmp_path / "runs",
                  verify_data=False, progress=False, device="cpu", epochs=1)
    first = FIGURES["mammals_vs_random"].run(**kwargs)

    def no_data(*args, **kw):
        raise AssertionError("data loaded for finished runs")
    monkeypatch.setattr(runs, "load_cifar100", no_data)
    again = FIGURES["mammals_vs_random"].run(**kwargs)
    assert again.data().equals(first.data())


def test_sweep_marks_the_smallest_lr_within_tolerance_of_the_best(synthetic_data, tmp_path):
    from ccql_utils import TrainConfig
    from ccql_utils.execution.sweep import sweep_lr
    from conftest import run_context
    config = TrainConfig(loss="ql", num_classes=5, depth=10, width=1, epochs=1, batch_size=16,
                         train_per_class=20, device="cpu")
    ctx = run_context(tmp_path, synthetic_data)
    table = sweep_lr(config, [1e4, 0.05, 0.01], ctx, tolerance=1.0)
    assert list(table.lr) == [0.01, 0.05, 1e4]
    assert list(table.state) == ["finished", "finished", "diverged"]
    assert table.best.tolist() == [True, False, False]   # tolerance 1.0: the smallest finished LR
    strict = sweep_lr(config, [0.05, 0.01], ctx, tolerance=0.0)
    assert strict.loc[strict.best, "test_acc"].item() == strict.test_acc.max()


def test_several_seeds_share_one_class_draw_and_give_mean_and_sd_per_run(synthetic_root, tmp_path):
    kwargs = dict(preset="tiny", data_root=synthetic_root, runs_dir=tmp_path / "runs",
                  figures_dir=tmp_path / "figures", verify_data=False, progress=False, device="cpu", epochs=1)
    single = FIGURES["k25_random"].run(seed=1, **kwargs)
    result = FIGURES["k25_random"].run(seeds=[1, 2, 3], **kwargs)
    assert result.seeds == [1, 2, 3] and len(result.runs) == 9
    # seed 1 of the three is the single-seed run (same run id, read back), and all share its classes
    assert result.runs["QL", 1].run_dir == single.runs["QL", 1].run_dir
    assert {tuple(run.class_names) for run in result.runs.values()} == {tuple(class_names(single)["QL"])}
    assert len({run.history.test_acc.iloc[-1] for (label, _), run in result.runs.items() if label == "CE"}) > 1

    table = result.table().set_index("run")
    finals = [result.runs["CCQL", s].history.test_acc.iloc[-1] for s in (1, 2, 3)]
    assert table.loc["CCQL", "n"] == 3 and table.loc["CCQL", "seeds"] == "1,2,3"
    assert table.loc["CCQL", "test acc"] == pytest.approx(np.mean(finals))
    assert table.loc["CCQL", "test acc sd"] == pytest.approx(np.std(finals, ddof=1))
    assert set(result.data().seed) == {1, 2, 3}

    paths = result.save(result.plot())
    record = json.loads(paths["provenance"].read_text())["parameters"]
    assert record["seeds"] == [1, 2, 3] and "CE (seed 2)" in record["runs"]
    assert "seeds 1, 2, 3 (mean, band +- 1 sd)" in result.caption()


@pytest.mark.parametrize("seeds", ["0,1", [], [0, 0], [0, 1.5], 3])
def test_a_bad_seed_list_is_refused_by_name(seeds):
    with pytest.raises(ValueError, match="seeds must be"):
        FIGURES["k25_random"].prepare(preset="tiny", seeds=seeds)


QUICK_SEED_FIGURES = {"k25_random": "fig1_k25_random_quick", "k100": "fig2_k100_quick",
                      "mammals_vs_random": "fig3_mammals_vs_random_quick"}
# Fig 3 at quick also draws its class-draw control: the random classes of draws 1 and 2 (18 runs)
DRAWS = {"mammals_vs_random": ("fig3_class_draws_quick_records.tar.gz", 18, [0, 1, 2])}


@pytest.mark.parametrize("experiment", sorted(QUICK_SEED_FIGURES))
def test_committed_quick_3_seed_records_redraw_the_committed_figure_data_without_data(
        experiment, committed_records):
    import pandas as pd
    runs_dir = committed_records("quick_3_seeds_records.tar.gz", 27)
    draws = {}
    if experiment in DRAWS:
        archive, count, draws["class_seeds"] = DRAWS[experiment]
        committed_records(archive, count)
    result = FIGURES[experiment].run(preset="quick", seeds=[0, 1, 2], runs_dir=runs_dir, progress=False,
                                     device="cpu", **draws)
    assert result.seeds == [0, 1, 2] and all(run.finished for run in result.runs.values())
    committed = pd.read_csv(Path(__file__).resolve().parent.parent / "figures" /
                            f"{QUICK_SEED_FIGURES[experiment]}.csv")
    pd.testing.assert_frame_equal(result.data().reset_index(drop=True), committed,
                                  check_dtype=False, rtol=1e-12)


def test_the_h200_10_seed_quick_sweep_reads_back_without_data_and_orders_the_losses_in_every_seed(
        committed_records):
    """Fig 1 at `quick` with 10 seeds, the 30 runs round 4 trained stacked on an H200: read from
    the records alone, and CE > CCQL > QL in final test accuracy for every seed (docs/results.md's
    claim; `python -m ccql_utils run k25_random --preset quick --seeds 0,...,9` prints the table)."""
    runs_dir = committed_records("quick_k25_random_10_seeds_h200_records.tar.gz", 30)
    result = FIGURES["k25_random"].run(preset="quick", seeds=list(range(10)), runs_dir=runs_dir,
                            progress=False, device="cpu")
    assert all(run.finished and run.status["stacked_runs"] == 30 for run in result.runs.values())
    final = {key: run.final()["test_acc"] for key, run in result.runs.items()}
    for seed in range(10):
        assert final["CE", seed] > final["CCQL", seed] > final["QL", seed], seed


def test_provenance_pins_the_code_and_keeps_no_machine_paths(tmp_path):
    """A commit with '-dirty' alone does not say which code ran: uncommitted changes to code add
    the hash of their diff; figures written earlier in the same run do not count as changes.
    Paths are made relative to the repository, or reduced to their last part outside it."""
    import subprocess
    from ccql_utils.provenance import PROJECT_ROOT, _jsonable, git_commit
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "figures").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "figures" / "f.csv").write_text("a\n1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    clean = git_commit(tmp_path)
    assert len(clean) == 40
    (tmp_path / "figures" / "f.csv").write_text("a\n2\n")
    assert git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    first = git_commit(tmp_path)
    (tmp_path / "code.py").write_text("x = 3\n")
    second = git_commit(tmp_path)
    assert first.startswith(clean + "-dirty-") and second.startswith(clean + "-dirty-") and first != second
    assert _jsonable({"figures_dir": str(PROJECT_ROOT / "figures"), "data_root": "/home/someone/data",
                      "preset": "quick"}) == {"figures_dir": "figures", "preset": "quick",
                                              "data_root": "<outside the repository>/data"}


def test_fig3_class_draws_are_pooled_in_the_curves_and_paired_by_seed_in_the_mammal_gap(synthetic_root, tmp_path):
    from ccql_utils.figures.paper_figures import subset_gaps, tidy_histories
    kwargs = dict(preset="tiny", data_root=synthetic_root, runs_dir=tmp_path / "runs", verify_data=False,
                  figures_dir=tmp_path / "figures", progress=False, device="cpu", epochs=1)
    with pytest.raises(ValueError, match="class_seeds must start with the first draw, 0"):
        FIGURES["mammals_vs_random"].prepare(seeds=[0, 1], class_seeds=[5], **kwargs)
    result = FIGURES["mammals_vs_random"].run(seeds=[0, 1], class_seeds=[0, 5], **kwargs)
    assert len(result.runs) == 6 * 2 + 3 * 2  # the mammals once, the random classes per draw
    drawn = result.runs["QL, random (draw 5)", 1]
    assert result.configs["QL, random (draw 5)", 1].class_seed == 5 and drawn.class_names != result.runs["QL, random", 1].class_names
    assert not any("(draw" in name for name in tidy_histories(result).run.unique())
    gaps = subset_gaps(result).set_index("loss")
    acc = {key: 100 * run.final()["test_acc"] for key, run in result.runs.items()}
    pairs = [acc[f"QL, random{d}", s] - acc["QL, mammals", s] for d in ("", " (draw 5)") for s in (0, 1)]
    assert gaps.loc["QL", "n"] == 4 and gaps.loc["QL", "gap (points)"] == pytest.approx(np.mean(pairs))
    draws = [np.mean([acc[f"QL, random{d}", s] for s in (0, 1)]) for d in ("", " (draw 5)")]
    assert gaps.loc["QL", "random sd over draws"] == pytest.approx(np.std(draws, ddof=1))
    assert set(result.table().run) >= {"CE, random (draw 5)", "CE, mammals"}
