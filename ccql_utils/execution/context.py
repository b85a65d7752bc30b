"""Where runs, data and figures live, and how runs execute: one `RunContext` per command or
notebook, built once and passed down. A default (the field comments below) means the same
wherever a command starts; a relative path given by the user is relative to the folder the
command runs in, and is made absolute here."""
from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

from ..provenance import PROJECT_ROOT
from .store import RunStore

EXECUTORS = ("local", "ray")


def _absolute(path) -> Path | None:
    return None if path is None else Path(path).expanduser().resolve()


@dataclass(frozen=True)
class RunContext:
    runs_dir: Path = PROJECT_ROOT / "runs"
    figures_dir: Path | None = None  # None: figures/, or outputs/tiny/figures for a tiny result
    data_root: Path | None = None    # None: $CCQL_DATA_ROOT, else data/ (data.locate_cifar100)
    verify_data: bool = True         # False accepts a copy that is not CIFAR-100's content
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    executor: str = "local"          # local: one run after another here; ray: on a Ray cluster
    address: str | None = None       # the Ray cluster to join (default $RAY_ADDRESS, else a local one)
    runs_per_gpu: int | None = None  # runs stacked on one GPU (None: 32 small ones on a GPU, else 1)
    progress: bool | str | None = None  # progress.py: True/None auto, 'bar', 'lines', False

    def __post_init__(self):
        for name in ("runs_dir", "figures_dir", "data_root"):
            object.__setattr__(self, name, _absolute(getattr(self, name)))
        if self.runs_dir is None:
            object.__setattr__(self, "runs_dir", PROJECT_ROOT / "runs")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        r = self.runs_per_gpu
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
            raise ValueError(f"runs_per_gpu must be an integer >= 1, got {r!r}")
        if not isinstance(self.verify_data, bool):
            raise ValueError(f"verify_data must be true or false, got {self.verify_data!r}")
        from ..progress import progress_mode
        progress_mode(self.progress)

    @classmethod
    def of(cls, **values) -> "RunContext":
        """A context from keyword values where None means the default (a notebook's or a CLI's)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown run setting(s) {unknown}; valid: {', '.join(sorted(names))}")
        return cls(**{k: v for k, v in values.items() if v is not None})

    @cached_property  # made once; cached_property writes __dict__, which a frozen dataclass allows
    def store(self) -> RunStore:
        return RunStore(self.runs_dir, data_root=self.data_root, verify_data=self.verify_data,
                        progress=self.progress)

    def figures_for(self, preset: str) -> Path:
        """Where a figure at `preset` is saved."""
        if self.figures_dir is not None:
            return self.figures_dir
        return PROJECT_ROOT / ("outputs/tiny/figures" if preset == "tiny" else "figures")
