"""What a researcher sees while runs train: per run, one display updated once per epoch (epoch,
loss, accuracy), a bar updated in place in a terminal or in JupyterLab (`tqdm.auto`: a widget
there), or one line per epoch where the output is a log (papermill's headless runs, pipes, CI).
Never a line per batch."""
from __future__ import annotations

import sys

MODES = ("auto", "bar", "lines", "off")


def _interactive_kernel() -> bool:
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return type(shell).__name__ == "ZMQInteractiveShell"


def progress_mode(progress: bool | str | None) -> str:
    """'bar', 'lines' or 'off' for `progress`: True, None or 'auto' (a bar in a terminal or an
    interactive notebook kernel, else lines), 'bar', 'lines', False or 'off'."""
    if progress is False or progress == "off":
        return "off"
    if progress in (None, True, "auto"):
        return "bar" if sys.stderr.isatty() or _interactive_kernel() else "lines"
    if progress not in MODES:
        raise ValueError(f"progress must be True, False or one of {', '.join(MODES)}, got {progress!r}")
    return progress


def describe_epoch(row: dict) -> str:
    return (f"lr {row['lr']:.4g}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}  "
            f"test loss {row['test_loss']:.4f} acc {row['test_acc']:.3f}  {row['seconds']:.1f}s")


class EpochProgress:
    """The display of one run's epochs: `update(row)` after each epoch, `close()` at the end."""

    def __init__(self, progress: bool | str | None, name: str, epochs: int, done: int = 0):
        self.mode, self.name, self.epochs = progress_mode(progress), name, epochs
        self.bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm
            self.bar = tqdm(total=epochs, initial=done, desc=name, unit="epoch", file=sys.stderr,
                            dynamic_ncols=True, leave=True)

    def update(self, row: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(describe_epoch(row), refresh=False)
            self.bar.update(1)
        elif self.mode == "lines":
            print(f"{self.name} epoch {row['epoch']}/{self.epochs}  {describe_epoch(row)}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
