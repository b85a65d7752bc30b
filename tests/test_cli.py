"""The command line: invalid input is one line and exit 2 before anything is created; divergence
is exit 3 naming the run and its LR; experiments run and export without papermill."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccql_utils.cli import main as cli
from ccql_utils.cli.main import main
from ccql_utils.core.data import write_synthetic_cifar100

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TINY_RUN = ["--loss", "ce", "--k", "5", "--epochs", "1", "--depth", "10", "--width", "1"]


@pytest.fixture
def data_args(synthetic_root):
    root = os.environ.get("CCQL_DATA_ROOT")
    return ["--data-root", root] if root else ["--data-root", str(synthetic_root), "--unverified-data"]


def exit_code_and_stderr(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("bad,named", [
    (["--train-per-class", "0"], "train_per_class"),
    (["--train-per-class", "600"], "train_per_class must be an integer from 1 to 500"),
    (["--train-per-class", "-3"], "train_per_class"),
    (["--device", "tpu"], "device 'tpu'"),
    (["--seed", str(2**70)], "seed must be an integer from 0 to 9,999,999,999,999"),
    (["--seed", str(2**45)], "seed must be an integer from 0 to 9,999,999,999,999"),  # overflowed in epoch 1
    (["--momentum", "1.5"], "momentum must lie in [0, 1)"),
    (["--weight-decay", "-1"], "weight_decay must be a number >= 0"),
    (["--lr-factor", "0"], "lr_factor must lie in (0, 1]"),
    (["--loss", "hinge"], "--loss"),
    (["--depth", "11"], "depth must be 6n + 4"),
])
def test_invalid_train_options_are_one_line_exit_2_and_create_nothing(capsys, tmp_path, data_args,
                                                                      bad, named):
    code, err = exit_code_and_stderr(capsys, ["train", *TINY_RUN, *bad, *data_args,
                                              "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("lrs,named", [(",", "at least one number"), ("0.1,-0.01", "positive"),
                                       ("abc", "comma-separated numbers")])
def test_sweep_lr_refuses_empty_or_negative_grids(capsys, tmp_path, data_args, lrs, named):
    code, err = exit_code_and_stderr(capsys, ["sweep-lr", "--lrs", lrs, *TINY_RUN, *data_args,
                                              "--runs-dir", str(tmp_path / "runs")])
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_notebook_parameters_are_checked_before_any_cell_runs(capsys, tmp_path):
    notebook = str(PROJECT_ROOT / "notebooks" / "01_k25_random.ipynb")
    runs = tmp_path / "runs"
    code, err = exit_code_and_stderr(capsys, ["notebook", notebook, "-p", "seed", "abc", "-p",
                                              "runs_dir", str(runs), "--output", str(tmp_path / "o.ipynb")])
    assert code == 2 and "seed must be an integer" in err and not runs.exists()
    code, err = exit_code_and_stderr(capsys, ["notebook", notebook, "-p", "train_per_class", "600"])
    assert code == 2 and "train_per_class" in err
    code, err = exit_code_and_stderr(capsys, ["notebook", str(tmp_path / "missing.ipynb")])
    assert code == 2 and "no notebook at" in err and "executed copy" not in err


def test_run_all_names_a_bad_data_root_and_a_missing_value(capsys, tmp_path):
    code, err = exit_code_and_stderr(capsys, ["all", "--data-root", str(tmp_path / "nowhere")])
    assert code == 2 and str(tmp_path / "nowhere") in err
    code, err = exit_code_and_stderr(capsys, ["all", "--preset"])
    assert code == 2 and "--preset" in err and len(err.strip().splitlines()) == 1


def test_a_damaged_run_is_one_line_exit_1(capsys, tmp_path, data_args):
    args = ["train", *TINY_RUN, *data_args, "--runs-dir", str(tmp_path), "--quiet"]
    assert main(args) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    (run_dir / "checkpoint.pt").unlink()
    (run_dir / "metrics.csv").write_text("epoch\n")
    code, err = exit_code_and_stderr(capsys, args)
    assert code == 1 and err.startswith("error: ") and str(run_dir) in err
    assert len(err.strip().splitlines()) == 1


def test_run_command_trains_an_experiment_and_exits_3_naming_a_diverged_run(capsys, tmp_path, data_args):
    code, err = exit_code_and_stderr(capsys, [
        "run", "k25_random", "--preset", "tiny", "--device", "cpu", "--lr", "ql=10000",
        "--runs-dir", str(tmp_path), *data_args, "--quiet"])
    assert code == 3
    assert "error: run QL diverged at epoch 1 (lr 10000.0): lower its learning rate" in err


@pytest.mark.slow
def test_run_all_exits_3_when_a_run_diverged_and_draws_it_as_diverged(tmp_path):
    synthetic = tmp_path / "data"
    write_synthetic_cifar100(synthetic, train_per_class=12, test_per_class=6)
    proc = subprocess.run([sys.executable, "-m", "ccql_utils", "all", "--preset", "tiny", "--only",
                           "01", "--device", "cpu", "--data-root", str(synthetic), "--unverified-data",
                           "--lr", "ql=10000", "--runs-dir", str(tmp_path / "runs"), "--quiet"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg"}, timeout=600)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "QL of 01_k25_random.ipynb diverged at epoch 1 (lr 10000.0)" in proc.stderr
    figures = PROJECT_ROOT / "outputs" / "tiny" / "figures"
    record = json.loads((figures / "fig1_k25_random_tiny.provenance.json").read_text())
    assert record["parameters"]["diverged_runs"] == ["QL"]
    table = (figures / "fig1_k25_random_tiny.csv").read_text()
    assert "QL" in table


def test_run_all_on_a_cluster_hands_every_figures_runs_to_the_executor_at_once(tmp_path, monkeypatch):
    """With --executor ray, all runs of all figures are submitted in one call before any notebook
    runs (so a cluster trains them side by side), each shared run once."""
    from ccql_utils.execution import context
    from ccql_utils.figures import notebooks
    from ccql_utils.figures.registry import figure_of_notebook
    calls = []
    monkeypatch.setattr(cli, "obtain", lambda ctx, configs, *a, **kw: calls.append(
        ("train", dict(configs), {"executor": ctx.executor, "runs_per_gpu": ctx.runs_per_gpu})))

    def execute_notebook(path, out, parameters, **kw):  # the notebook's record, as drawn from the runs
        calls.append(("notebook", Path(path).name))
        if notebooks.trains(path):
            record = Path(parameters["figures_dir"]) / f"{figure_of_notebook(path).stem}_tiny.provenance.json"
            assert str(record).startswith(str(tmp_path))
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({"parameters": {"runs": {}}}))
    monkeypatch.setattr(notebooks, "execute_notebook", execute_notebook)
    monkeypatch.setattr(cli, "summarise", lambda *a, **kw: 0)
    monkeypatch.setattr(cli, "PROJECT_ROOT", tmp_path)  # the outputs folder of `all`
    monkeypatch.setattr(context, "PROJECT_ROOT", tmp_path)  # its figures folder
    code = main(["all", "--preset", "tiny", "--device", "cpu", "--executor", "ray",
                     "--runs-per-gpu", "4", "--runs-dir", str(tmp_path / "runs")])
    assert code == 0
    kind, configs, kw = calls[0]
    assert kind == "train" and kw["executor"] == "ray" and kw["runs_per_gpu"] == 4
    # Fig 1: 3 runs, Fig 2: 3, Fig 3: its random-class runs are Fig 1's, so 3 more (the mammals)
    assert len(configs) == 9 and all(run_id == c.run_id() for run_id, c in configs.items())
    assert [c[1] for c in calls[1:]] == ["00_theory.ipynb", "01_k25_random.ipynb", "02_k100.ipynb",
                                         "03_mammals_vs_random.ipynb", "04_k_sweep.ipynb",
                                         "05_loss_weights.ipynb", "06_loss_zoo.ipynb"]


def test_train_defaults_to_the_paper_presets_lr_for_the_loss_and_k():
    """`train --loss ql --classes all` is the paper's protocol: its LR is the paper preset's for
    QL at K = 100, not TrainConfig's 0.1; a given --lr wins; a K without a measured LR keeps 0.1."""
    from ccql_utils.cli.options import config_from_args
    from ccql_utils.figures.presets import PAPER_LRS
    parse = cli.build_parser().parse_args
    assert config_from_args(parse(["train", "--loss", "ql", "--classes", "all"])).lr == PAPER_LRS[100]["ql"] == 0.01
    assert config_from_args(parse(["train", "--loss", "ccql", "--k", "25"])).lr == PAPER_LRS[25]["ccql"]
    assert config_from_args(parse(["train", "--loss", "ql", "--classes", "all", "--lr", "0.2"])).lr == 0.2
    assert config_from_args(parse(["train", "--loss", "ql", "--k", "5"])).lr == 0.1
