"""What a researcher sees while runs train: one line per epoch in logs, a bar updated in place in
terminals and notebooks, and a stored run said to be read back rather than trained."""
import pytest

from ccql_utils import TrainConfig
from ccql_utils.execution.scheduler import obtain
from ccql_utils.progress import EpochProgress, progress_mode
from conftest import run_context


def config(**overrides):
    return TrainConfig(**{**dict(loss="ce", num_classes=5, train_per_class=20, depth=10, width=1,
                                 epochs=3, lr=0.05, device="cpu"), **overrides})


def test_headless_output_is_one_line_per_epoch_and_names_the_stored_run(synthetic_data, tmp_path, capsys):
    ctx = run_context(tmp_path, synthetic_data, progress="lines")
    obtain(ctx, {"CE": config()}, "demo")
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("[demo] run 1/1 CE: training")
    assert [line.split()[:3] for line in err[1:]] == [["CE", "epoch", f"{e}/3"] for e in (1, 2, 3)]
    obtain(ctx, {"CE": config()}, "demo")
    assert capsys.readouterr().err.strip().endswith(
        f"finished, read from the store ({ctx.store.path(config()).name})")


def test_a_bar_is_updated_in_place_once_per_epoch(capsys):
    display = EpochProgress("bar", "QL", epochs=4, done=1)
    for epoch in (2, 3, 4):
        display.update({"epoch": epoch, "lr": 0.1, "train_loss": 0.5, "train_acc": 0.5,
                        "test_loss": 0.6, "test_acc": 0.4, "seconds": 1.0})
    assert display.bar.n == 4
    display.close()
    assert "\n" not in capsys.readouterr().err.strip()  # redrawn with carriage returns, one line


def test_progress_modes():
    assert progress_mode(False) == progress_mode("off") == "off"
    assert progress_mode("lines") == "lines"
    assert progress_mode(None) == "lines"  # pytest's stderr is not a terminal, no notebook kernel
    with pytest.raises(ValueError, match="progress must be"):
        progress_mode("loud")
