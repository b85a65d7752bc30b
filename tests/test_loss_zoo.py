"""The loss zoo: the four added losses against hand computations, a user's loss (registered from a
function, refused when broken, identified by its code) training, resuming and stacking as a
built-in one does, the test ECE, and the zoo figure with a loss defined in a notebook cell."""
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from ccql_utils import TrainConfig, Trainer
from ccql_utils.core.losses import BUILT_IN, LOSSES, make_loss
from ccql_utils.core.train import EpochSums
from ccql_utils.core.user_losses import register_loss, source_hash
from conftest import obtain_one, run_context, tiny_config

# Two samples, K = 3: outputs and labels small enough to compute by hand
OUTPUTS = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
LABELS = [0, 2]


def hand_softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def hand_values(name):
    """Each loss's per-sample values, written out from its definition (plain Python)."""
    out = []
    for row, y in zip(OUTPUTS, LABELS):
        p, k = hand_softmax(row), len(row)
        wrong = sum(v * v for i, v in enumerate(row) if i != y)
        if name == "squentropy":
            out.append(-math.log(p[y]) + wrong / (k - 1))
        elif name == "label_smoothing":  # eps = 0.1: target 0.9 + 0.1/3 on y, 0.1/3 elsewhere
            target = [0.1 / 3 + (0.9 if i == y else 0.0) for i in range(k)]
            out.append(-sum(t * math.log(q) for t, q in zip(target, p)))
        elif name == "focal":  # gamma = 2
            out.append(-(1 - p[y]) ** 2 * math.log(p[y]))
        elif name == "brier":
            out.append(sum((q - (1.0 if i == y else 0.0)) ** 2 for i, q in enumerate(p)))
    return out


@pytest.mark.parametrize("name", ["squentropy", "label_smoothing", "focal", "brier"])
def test_the_added_losses_match_their_hand_computed_values(name):
    loss = make_loss(name, 3)
    outputs, labels = torch.tensor(OUTPUTS, dtype=torch.float64), torch.tensor(LABELS)
    expected = hand_values(name)
    assert loss.per_sample(outputs, labels).tolist() == pytest.approx(expected, rel=1e-12)
    assert float(loss(outputs, labels)) == pytest.approx(sum(expected) / 2, rel=1e-12)
    zeros = torch.zeros(3, 3, dtype=torch.float64)  # the normalization: the loss at zero outputs
    assert loss.reference_value == pytest.approx(float(loss(zeros, torch.arange(3))), rel=1e-12)


def test_focal_with_gamma_zero_is_ce_and_label_smoothing_with_eps_zero_is_ce():
    outputs, labels = torch.randn(16, 7, dtype=torch.float64), torch.randint(0, 7, (16,))
    ce = float(make_loss("ce", 7)(outputs, labels))
    assert float(make_loss("focal", 7, gamma=0.0)(outputs, labels)) == pytest.approx(ce, rel=1e-12)
    assert float(make_loss("label_smoothing", 7, eps=0.0)(outputs, labels)) == pytest.approx(ce, rel=1e-12)


def ce_plus_l2(outputs, labels, beta=0.1):
    return F.cross_entropy(outputs, labels) + beta * outputs.pow(2).mean()


@pytest.fixture
def user_loss():
    """Registers `name` -> ce_plus_l2 for one test and removes it after."""
    names = []

    def register(name="ce_plus_l2", fn=ce_plus_l2, **kwargs):
        names.append(name)
        return register_loss(name, fn, **kwargs)
    yield register
    for name in names:
        LOSSES.pop(name, None)


def test_a_user_loss_computes_its_function_normalized_by_its_value_at_zero_outputs(user_loss):
    user_loss(beta=0.1)
    loss = make_loss("ce_plus_l2", 5, beta=0.5)
    outputs, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert float(loss(outputs, labels)) == pytest.approx(float(ce_plus_l2(outputs, labels, beta=0.5)))
    assert loss.reference_value == pytest.approx(math.log(5))
    stacked_outputs, stacked_labels = torch.randn(8, 3, 5), torch.randint(0, 5, (8, 3))
    assert loss.batch_means(stacked_outputs, stacked_labels).tolist() == pytest.approx(
        [float(ce_plus_l2(stacked_outputs[:, i], stacked_labels[:, i], beta=0.5)) for i in range(3)])
    with pytest.raises(ValueError, match=r"takes options \['beta'\], got \['gamma'\]"):
        make_loss("ce_plus_l2", 5, gamma=1.0)


@pytest.mark.parametrize("fn, says", [
    (lambda o, y: o.sum(1), "not a scalar tensor"),
    (lambda o, y: o.sum() * float("nan"), "returned nan"),
    (lambda o, y: o.detach().pow(2).mean(), "no .*gradient"),
    (lambda o, y: (o * 0).sum(), "no .*gradient"),
    (lambda o, y: o[:, 99].mean(), "raised IndexError"),
    (lambda o, y: 1.0, "not a scalar tensor"),
    (lambda o, y: exec("raise RuntimeError('first\\nsecond')"), "raised RuntimeError: first$"),
])
def test_a_broken_user_loss_is_refused_in_one_line_before_training(user_loss, fn, says):
    with pytest.raises(ValueError, match=says) as caught:
        user_loss("broken", fn)
    assert "\n" not in str(caught.value) and "broken" in str(caught.value)
    assert "broken" not in LOSSES


def test_a_user_loss_without_a_usable_normalization_must_state_one(user_loss):
    with pytest.raises(ValueError, match="value at zero outputs is 0.*pass reference="):
        user_loss("zero_at_zero", lambda o, y: o.pow(2).mean())
    assert user_loss("zero_at_zero", lambda o, y: o.pow(2).mean(), reference=2.0).cls(4).reference_value == 2.0


def test_a_built_in_name_cannot_be_taken_by_a_user_loss():
    for name in BUILT_IN:
        with pytest.raises(ValueError, match="new name"):
            register_loss(name, ce_plus_l2)
    assert LOSSES["ce"].code is None


def test_editing_a_user_loss_gives_it_new_run_ids_and_old_configs_are_refused(user_loss):
    config = TrainConfig(loss="ce_plus_l2", num_classes=5, depth=10, width=1)
    user_loss(beta=0.1)
    first = config.resolved()
    assert first.loss_code == source_hash(ce_plus_l2) and first.loss_options == {"beta": 0.1}
    user_loss(beta=0.1)  # the same code again: the same run
    assert config.resolved().run_id() == first.run_id()

    def edited(outputs, labels, beta=0.1):
        return F.cross_entropy(outputs, labels) + beta * outputs.abs().mean()
    user_loss("ce_plus_l2", edited, beta=0.1)
    second = config.resolved()
    assert second.run_id() != first.run_id() and second.loss_code == source_hash(edited)
    assert TrainConfig(loss="ce_plus_l2", num_classes=5, loss_options={"beta": 0.2}).resolved().run_id() \
        != second.run_id()
    stale = TrainConfig.from_dict({**first.identity(), "device": "cpu"})
    with pytest.raises(ValueError, match="other code"):
        stale.resolved()
    # built-in losses keep their run ids: no loss_code in their identity
    assert "loss_code" not in TrainConfig(loss="ce").identity()


def test_a_user_loss_trains_resumes_and_stacks_as_a_built_in_one(user_loss, synthetic_data, tmp_path):
    user_loss(beta=0.1)
    config = tiny_config(loss="ce_plus_l2", epochs=3, calibration_bins=10)
    alone = obtain_one(run_context(tmp_path / "alone", synthetic_data), config)
    assert alone.finished and alone.config["config"]["loss_code"] == source_hash(ce_plus_l2)

    class Stop(Exception):
        pass

    def stop_after_one(history):
        if len(history) == 1:
            raise Stop
    run_dir = tmp_path / "resumed" / config.resolved().run_id()
    run_dir.mkdir(parents=True)
    with pytest.raises(Stop):
        Trainer(config, synthetic_data, run_dir, on_epoch=stop_after_one).run()
    resumed = Trainer(config, synthetic_data, run_dir)
    assert len(resumed.history) == 1
    history = pd.DataFrame(resumed.run()).drop(columns="seconds")
    pd.testing.assert_frame_equal(history, alone.history.drop(columns="seconds"), check_dtype=False)

    from ccql_utils.execution.scheduler import obtain
    pair = {"mine": config, "ce": tiny_config(loss="ce", epochs=3, calibration_bins=10)}
    stacked = obtain(run_context(tmp_path / "stacked", synthetic_data, runs_per_gpu=2), pair)
    assert [r.status.get("stacked_runs") for r in stacked.values()] == [2, 2]
    assert stacked["mine"].history.test_acc.tolist() == pytest.approx(alone.history.test_acc.tolist(), abs=0.05)
    assert stacked["mine"].history.train_loss.iloc[0] == pytest.approx(alone.history.train_loss.iloc[0], rel=1e-3)
    assert stacked["mine"].history.test_ece.tolist() == pytest.approx(alone.history.test_ece.tolist(), abs=0.05)
    assert stacked["ce"].history.test_ece.between(0, 1).all()


def test_ece_is_the_weighted_gap_between_confidence_and_accuracy_per_bin():
    # Three samples, 2 bins over the max softmax: confidences 0.9 (right), 0.8 (wrong), 0.6 (right)
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0])
    sums = EpochSums.zeros("cpu", bins=2)
    sums.add(torch.tensor(0.0), probs.log(), labels)
    # bin [0.5, 1): all three; mean confidence 2.3 / 3, accuracy 2 / 3
    assert sums.ece() == pytest.approx(abs(2.3 / 3 - 2 / 3))
    sums = EpochSums.zeros("cpu", bins=10)
    sums.add(torch.tensor(0.0), probs.log(), labels)  # bins 0.9, 0.8, 0.6: |0.9-1| + |0.8-0| + |0.6-1|
    assert sums.ece() == pytest.approx((0.1 + 0.8 + 0.4) / 3)
    stacked = EpochSums.zeros("cpu", (2,), bins=10)  # two stacked runs: [B, N, K]
    stacked.add(torch.zeros(2), torch.stack([probs.log(), probs.flip(1).log()], 1), torch.zeros(3, 2, dtype=torch.long))
    assert stacked.ece() == pytest.approx([(0.1 + 0.8 + 0.4) / 3, (0.9 + 0.2 + 0.6) / 3])


def test_calibration_bins_add_the_test_ece_to_every_epoch_and_to_the_identity(synthetic_data, tmp_path):
    config = tiny_config(calibration_bins=15, epochs=2)
    run = obtain_one(run_context(tmp_path, synthetic_data), config)
    assert run.history.test_ece.between(0, 1).all() and len(run.history) == 2
    assert config.resolved().run_id() != tiny_config(epochs=2).resolved().run_id()
    with pytest.raises(ValueError, match="calibration_bins"):
        tiny_config(calibration_bins=1).resolved()


NOTEBOOK_CELLS = [
    """import torch.nn.functional as F
from ccql_utils.core.user_losses import register_loss

def cell_loss(outputs, labels, beta=0.2):
    return F.cross_entropy(outputs, labels) + beta * outputs.pow(2).mean()

register_loss("cell_loss", cell_loss, label="CE + cell", beta=0.2)""",
    """from ccql_utils.figures.registry import FIGURES
result = FIGURES["loss_zoo"].run(preset="tiny", losses=["ce", "cell_loss"], data_root={root!r},
                                 verify_data=False, runs_dir={runs!r}, figures_dir={figures!r},
                                 device="cpu", progress=False)
result.save(result.plot())""",
]


@pytest.mark.slow
def test_a_loss_defined_in_a_notebook_cell_appears_in_the_zoo_figure(synthetic_root, tmp_path):
    import nbformat
    from nbclient import NotebookClient
    cells = [c.format(root=str(synthetic_root), runs=str(tmp_path / "runs"), figures=str(tmp_path / "figures"))
             for c in NOTEBOOK_CELLS]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    table = pd.read_csv(tmp_path / "figures" / "fig6_loss_zoo_tiny.csv")
    assert set(table.loss) == {"CE", "CE + cell"} and (table.state == "finished").all()
    provenance = json.loads((tmp_path / "figures" / "fig6_loss_zoo_tiny.provenance.json").read_text())
    code = provenance["parameters"]["user_losses"]["cell_loss"]
    assert len(code) == 12 and all(r["config"].get("loss_code") in (None, code)
                                   for r in provenance["parameters"]["runs"].values())


def test_the_command_line_trains_a_loss_from_a_module(tmp_path, synthetic_root):
    module = tmp_path / "my_losses.py"
    module.write_text("import torch.nn.functional as F\nfrom ccql_utils.core.user_losses import register_loss\n\n"
                      "def cli_loss(outputs, labels, beta=0.1):\n"
                      "    return F.cross_entropy(outputs, labels) + beta * outputs.pow(2).mean()\n\n"
                      "register_loss('cli_loss', cli_loss, beta=0.1)\n")
    args = [sys.executable, "-m", "ccql_utils", "train", "--loss-module", str(module), "--loss", "cli_loss",
            "--loss-option", "beta=0.3", "--k", "5", "--depth", "10", "--width", "1", "--epochs", "1",
            "--train-per-class", "10", "--data-root", str(synthetic_root), "--unverified-data",
            "--runs-dir", str(tmp_path / "runs"), "--device", "cpu", "--quiet"]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    config = json.loads((next((tmp_path / "runs").iterdir()) / "config.json").read_text())["config"]
    assert config["loss"] == "cli_loss" and config["loss_options"] == {"beta": 0.3}
    without = subprocess.run(args[:4] + args[6:], capture_output=True, text=True)
    assert without.returncode == 2 and "invalid choice: 'cli_loss'" in without.stderr


def test_the_zoo_probes_each_loss_from_its_related_grid():
    from ccql_utils.figures.loss_zoo import LOSS_ZOO_FIGURE
    from ccql_utils.figures.presets import K_SWEEP
    grids = K_SWEEP["quick"].lr_grid
    assert LOSS_ZOO_FIGURE.grid("quick", ("focal", 25)) == tuple(grids["ce"])
    assert LOSS_ZOO_FIGURE.grid("quick", ("brier", 100)) == tuple(np.round(np.array(grids["ce"]) * 10, 6))
    assert LOSS_ZOO_FIGURE.grid("quick", ("ql", 100)) == tuple(grids["ql"])
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        LOSS_ZOO_FIGURE.configs("quick", [0], _ctx(), losses=["nope"])


def _ctx():
    from ccql_utils.execution.context import RunContext
    return RunContext.of(device="cpu")


def test_the_committed_zoo_records_redraw_the_committed_figure_data_without_data(
        committed_records, assert_sweep_redraws):
    """Fig 6 at quick (K = 25 and 100): 50 probe and 48 full runs, read back from the records."""
    from ccql_utils.figures.registry import FIGURES
    runs_dir = committed_records("loss_zoo_quick_records.tar.gz", 98)
    result = FIGURES["loss_zoo"].run(preset="quick", seeds=[0, 1, 2], runs_dir=runs_dir,
                                     progress=False, device="cpu", losses=list(BUILT_IN))
    assert all(run.finished for run in result.runs.values()) and len(result.runs) == 48
    assert_sweep_redraws(result, "fig6_loss_zoo_quick")
