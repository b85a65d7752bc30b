import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ccql_utils import TrainConfig, load_run
from ccql_utils.execution import scheduler
from ccql_utils.core.config import lr_at_epoch
from conftest import obtain_one, run_context, tiny_config

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- configuration
def test_paper_schedule_divides_lr_by_4_after_epochs_50_80_110_150_170():
    config = TrainConfig(epochs=200, lr=0.1)
    lrs = [lr_at_epoch(config, e) for e in range(200)]
    drops = [e for e in range(1, 200) if lrs[e] < lrs[e - 1]]
    assert drops == [50, 80, 110, 150, 170]
    assert lrs[0] == 0.1 and lrs[-1] == pytest.approx(0.1 / 4 ** 5)


def test_resolved_fills_defaults():
    c = TrainConfig(loss="ccql", classes="all", num_classes=None, seed=3).resolved()
    assert c.num_classes == 100 and c.class_seed == 3
    assert c.loss_options["w"] == pytest.approx(99 ** 0.5 - 1)
    assert TrainConfig(classes="mammals", num_classes=None).resolved().num_classes == 25


def test_run_id_ignores_execution_fields_but_not_the_experiment():
    a = tiny_config()
    assert a.run_id() == tiny_config(device="cuda", compile=True, checkpoint_every=5).run_id()
    assert a.run_id() != tiny_config(lr=0.1).run_id()
    assert a.run_id() != tiny_config(class_seed=1).run_id()
    # the default CCQL weight and an explicit one equal to it are the same run
    assert (tiny_config(loss="ccql").run_id()
            == tiny_config(loss="ccql", loss_options={"w": 4 ** 0.5 - 1}).run_id())
    assert a.run_id().startswith("ce-random5-wrn10-1-")


@pytest.mark.parametrize("overrides,match", [
    ({"loss": "mse"}, "unknown loss"), ({"classes": "fish"}, "unknown class subset"),
    ({"num_classes": 101}, "2 <= K <= 100"), ({"num_classes": 1}, "2 <= K <= 100"),
    ({"classes": "random", "num_classes": None}, "needs num_classes"),
    ({"classes": "mammals", "num_classes": 20}, "K = 25"),
    ({"classes": ["wolf", "unicorn"], "num_classes": None}, "unknown CIFAR-100 class names"),
    ({"depth": 12}, "6n \\+ 4"), ({"lr": 0.0}, "lr must be"), ({"lr": float("nan")}, "lr must be"),
    ({"epochs": 0}, "epochs"), ({"loss": "ccql", "loss_options": {"w": -1}}, "w >= 0"),
    ({"loss_options": {"w": 1}}, "takes options"), ({"precision": "fp16"}, "precision"),
    ({"lr_milestones": (0.5, 1.5)}, "fractions"), ({"compile": "fast"}, "reduce-overhead"),
])
def test_invalid_configurations_raise_value_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**overrides).resolved()


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"loss": "ce", "learning_rate": 0.1})


@pytest.mark.parametrize("compile,mode,step_marks", [
    (False, None, 0), (True, "default", 0), ("max-autotune", "max-autotune", 0),
    ("reduce-overhead", "reduce-overhead", 1)])
def test_trainer_compiles_in_the_configured_mode_and_marks_each_cuda_graph_step(
        synthetic_data, tmp_path, monkeypatch, compile, mode, step_marks):
    import torch
    from ccql_utils.core import train
    asked, marks, forwards = [], [], []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: asked.append(kw) or model)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(len(forwards)))
    trainer = train.Trainer(tiny_config(epochs=1, compile=compile, batch_size=64), synthetic_data, tmp_path,
                            progress=False)
    trainer.model.register_forward_hook(lambda *_: forwards.append(1))
    trainer.run()
    assert asked == ([] if mode is None else [{"mode": mode, "dynamic": train.COMPILE_DYNAMIC}])
    # reduce-overhead: one mark before every forward (train batches and eval batches), none else
    assert marks == list(range(len(forwards)))[:len(forwards) * step_marks] and len(forwards) >= 3


# ----------------------------------------------------------------------------- training end to end
@pytest.mark.realdata
def test_tiny_training_on_real_data_learns(real_data, tmp_path):
    # WRN-10-1, K = 5, 2 epochs on 300 images per class at batch 32, constant LR: ~2 s here
    config = tiny_config(train_per_class=300, batch_size=32, epochs=2, lr=0.05, lr_milestones=())
    run = obtain_one(run_context(tmp_path, real_data), config)
    h = run.history
    assert run.finished and len(h) == 2 and run.config["class_names"] == [
        "camel", "lizard", "man", "television", "worm"]
    assert h.train_loss.iloc[-1] < h.train_loss.iloc[0]
    assert h.test_loss_norm.iloc[-1] < 1.0           # below the loss of a zero output
    # chance is 0.20; with 500 test images 0.30 is 5 standard deviations above it
    assert h.test_acc.iloc[-1] > 0.30, h.to_string()


@pytest.mark.parametrize("loss", ["ce", "ql", "ccql", "rescaled_square"])
def test_tiny_training_on_synthetic_data_learns(synthetic_data, tmp_path, loss):
    config = tiny_config(loss=loss, epochs=4, lr=0.05, batch_size=16, lr_milestones=(),
                         train_per_class=None)
    run = obtain_one(run_context(tmp_path, synthetic_data), config)
    h = run.history
    assert run.finished and len(h) == 4
    assert h.train_loss.iloc[-1] < h.train_loss.iloc[0]
    assert h.test_acc.iloc[-1] >= 0.6, h.to_string()  # chance is 0.2
    assert (h.train_loss / h.train_loss_norm).round(10).nunique() == 1  # one reference value
    assert run.config["config"]["dataset"].startswith("unverified-")


def test_clean_train_pass_adds_columns(synthetic_data, tmp_path):
    run = obtain_one(run_context(tmp_path, synthetic_data), tiny_config(epochs=1, clean_train_eval=True))
    assert {"train_clean_loss", "train_clean_acc", "train_clean_loss_norm"} <= set(run.history.columns)


def test_finished_run_is_returned_without_training(synthetic_data, tmp_path, monkeypatch):
    config = tiny_config(epochs=1)
    first = obtain_one(run_context(tmp_path, synthetic_data), config)

    class NoTraining:
        def __init__(self, *args, **kwargs):
            raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(scheduler, "Trainer", NoTraining)
    again = obtain_one(run_context(tmp_path, synthetic_data), config)
    pd.testing.assert_frame_equal(first.history, again.history)
    files = sorted(p.name for p in first.run_dir.iterdir() if not p.name.startswith("."))
    assert files == ["checkpoint.pt", "config.json", "metrics.csv", "status.json"]


def test_divergence_is_recorded_and_never_reported_finished(synthetic_data, tmp_path):
    config = tiny_config(loss="ql", lr=1e4, epochs=3, weight_decay=0.0, momentum=0.0)
    run = obtain_one(run_context(tmp_path, synthetic_data), config)
    assert run.diverged and not run.finished
    assert run.status["diverged_epoch"] == 1 and len(run.history) == 1
    assert "non-finite" in run.status["reason"]
    assert load_run(run.run_dir).state == "diverged"


# ----------------------------------------------------------------------------- subprocess: CLI, kill, lock
def cli(args, data_args, runs_dir, **kwargs):
    cmd = [sys.executable, "-m", "ccql_utils", "train", *args, *data_args, "--runs-dir", str(runs_dir),
           "--device", "cpu", "--quiet"]
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


@pytest.fixture
def data_args(synthetic_root):
    """Real data when configured (as users run it), else the synthetic stand-in."""
    root = os.environ.get("CCQL_DATA_ROOT")
    if root:
        return ["--data-root", root]
    return ["--data-root", str(synthetic_root), "--unverified-data"]


RUN_ARGS = ["--loss", "ccql", "--classes", "random", "--k", "5", "--seed", "0", "--epochs", "6",
            "--lr", "0.05", "--depth", "10", "--width", "1", "--train-per-class", "40"]


def test_cli_prints_run_directory_last_and_rejects_bad_arguments(data_args, tmp_path):
    proc = cli(["--loss", "ce", "--k", "5", "--epochs", "1", "--depth", "10", "--width", "1",
                "--train-per-class", "20"], data_args, tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path and (run_dir / "metrics.csv").exists()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    # one bad value end to end in a real process; test_cli.py checks each option in-process
    for bad in (["--classes", "random"],):
        proc = cli(bad, data_args, tmp_path)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and "error:" in err, (bad, err)
    missing = cli(["--k", "5", "--epochs", "1"], ["--data-root", str(tmp_path / "nowhere")],
                  tmp_path / "runs2")
    _, err = missing.communicate(timeout=120)
    assert missing.returncode == 1 and "CCQL_DATA_ROOT" in err
    assert not (tmp_path / "runs2").exists()  # a data error leaves no empty run folder


@pytest.mark.slow
def test_killed_run_resumes_to_the_exact_uninterrupted_result(data_args, tmp_path):
    reference = cli(RUN_ARGS, data_args, tmp_path / "uninterrupted")
    out, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err
    expected = pd.read_csv(out.strip().splitlines()[-1] + "/metrics.csv")

    runs_dir = tmp_path / "killed"
    victim = cli(RUN_ARGS, data_args, runs_dir)
    deadline = time.time() + 300
    status = {}
    while time.time() < deadline and victim.poll() is None:
        statuses = list(runs_dir.glob("*/status.json"))
        status = json.loads(statuses[0].read_text()) if statuses else {}
        if status.get("epochs_completed", 0) >= 2:
            break
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert 2 <= status["epochs_completed"] < 6 and status["state"] == "running"

    resumed = cli(RUN_ARGS, data_args, runs_dir)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    run = load_run(out.strip().splitlines()[-1])
    assert run.finished and run.status["resumed_from_epoch"] >= 2
    got = run.history
    columns = [c for c in expected.columns if c != "seconds"]
    pd.testing.assert_frame_equal(got[columns], expected[columns], check_exact=True)


@pytest.mark.slow
def test_two_processes_asking_for_one_run_train_it_once(data_args, tmp_path):
    args = [*RUN_ARGS[:-8], "--epochs", "3", "--depth", "10", "--width", "1", "--train-per-class", "40"]
    procs = [cli(args, data_args, tmp_path) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in results]
    dirs = {out.strip().splitlines()[-1] for out, _ in results}
    assert len(dirs) == 1
    run = load_run(dirs.pop())
    assert run.finished and len(run.history) == 3
    assert run.status["resumed_from_epoch"] == 0  # the waiting process did not train again


def test_output_means_tell_an_all_ones_network_from_a_one_hot_one(synthetic_data, tmp_path):
    """What scripts/output_means.py reports for Fig 5's very large w: the mean test output on the
    correct class and on the others. A network whose last layer outputs 1 everywhere gives 1 and 1;
    one whose outputs are the one-hot labels would give 1 and 0."""
    import torch
    from ccql_utils.core.train import Trainer
    from tests.conftest import tiny_config
    trainer = Trainer(tiny_config(epochs=1, train_per_class=10), synthetic_data, tmp_path, progress=False)
    with torch.no_grad():
        trainer.model.fc.weight.zero_()
        trainer.model.fc.bias.fill_(1.0)
    means = trainer.output_means()
    assert means == pytest.approx({"correct_class_output": 1.0, "wrong_class_output": 1.0})
    # a network that outputs the one-hot label of each test image (the batches come in order)
    batches = iter([labels for _, labels in trainer.test_loader.eval_batches(trainer.config.eval_batch_size)])
    trainer.model_fn = lambda images: torch.nn.functional.one_hot(next(batches), 5).float()
    assert trainer.output_means() == pytest.approx({"correct_class_output": 1.0, "wrong_class_output": 0.0})
