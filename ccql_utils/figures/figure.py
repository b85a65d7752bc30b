"""The figure protocol: a `Figure` says which runs it needs, how to draw and tabulate them; a
`FigureResult` holds the runs and owns seeds, caption, provenance and saving. Runs are keyed by
(*point, seed): a point is what a figure compares (a legend label, or a loss and a K), a seed the
model initialisation and data order. The instances: registry.FIGURES.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..core.config import TrainConfig
from ..execution.context import RunContext
from .presets import get_preset, resolve_preset, seed_list
from ..execution.store import FINAL_STATES, Run
from ..execution.scheduler import obtain

# Every training figure's parameters: name -> (default, meaning). None given keeps the default.
RUN_PARAMETERS = {
    "preset": ("auto", "paper, gpu-short (CUDA), quick (CPU), tiny (tests); auto: paper on CUDA, else quick"),
    "seed": (0, "model initialisation, data order and the random class draw"),
    "seeds": (None, "several seeds, e.g. [0, 1, 2]: mean and +-1 sd bands; the classes stay the first seed's"),
    "data_root": (None, "folder holding cifar-100-python/, or a pack (default $CCQL_DATA_ROOT, then data/)"),
    "verify_data": (True, "False accepts a copy whose content is not CIFAR-100's (the tests' stand-in)"),
    "device": ("auto", "auto, cpu, cuda, cuda:1, ..."),
    "runs_dir": (None, "the run store: finished runs are reused, interrupted ones resume (default runs/)"),
    "figures_dir": (None, "default figures/ (outputs/tiny/figures at the tiny preset)"),
    "progress": (True, "per-epoch progress while training"),
    "executor": ("local", "local: one run after another; ray: concurrently on a Ray cluster"),
    "address": (None, "the Ray cluster to join (default $RAY_ADDRESS, else a local one)"),
    "runs_per_gpu": (None, "runs sharing one GPU, small models stacked (default 32 on a GPU, 1 on a CPU)"),
}
# What "train" means in every training figure (train.py): the paper plots it the same way.
TRAIN_METRICS_NOTE = ("train = running mean over each epoch's augmented batches in train mode "
                      "(not a clean pass over the training set)")
CONTEXT_PARAMETERS = tuple(name for name in RUN_PARAMETERS if name not in ("preset", "seed", "seeds"))


@dataclass
class FigureResult:
    """The runs of one figure at one preset, keyed by (*point, seed)."""

    figure: "Figure"
    preset: str
    ctx: RunContext
    configs: dict[tuple, TrainConfig]
    runs: dict[tuple, Run]
    extra: dict = field(default_factory=dict)  # a figure's other frames (an LR probe, a theory curve)

    @property
    def seeds(self) -> list[int]:
        return list(dict.fromkeys(key[-1] for key in self.configs))

    @property
    def points(self) -> list[tuple]:
        return list(dict.fromkeys(key[:-1] for key in self.configs))

    def name(self, key: tuple) -> str:
        """A run's name in tables, messages and provenance: its point, and its seed when there are several."""
        name = self.figure.point_name(key[:-1])
        return f"{name} (seed {key[-1]})" if len(self.seeds) > 1 else name

    def missing(self) -> list[str]:
        """Names of the runs not (yet) finished or diverged: drawn as far as they got, if at all."""
        return [self.name(key) for key, run in self.runs.items() if run.state not in FINAL_STATES]

    def diverged(self) -> dict[str, str]:
        """name -> 'diverged at epoch N (lr X)' for each diverged run."""
        return {self.name(key): run.describe() for key, run in self.runs.items() if run.diverged}

    def caption(self) -> str:
        """The scale, the seeds and the cards that made the figure (so a quick run is never taken
        for the paper's), and the runs still missing."""
        paper = get_preset(self.preset).paper_scale
        scale = "the paper's model and data" if paper else "NOT the paper's scale"
        seeds = (f"seed {self.seeds[0]}" if len(self.seeds) == 1 else
                 f"seeds {', '.join(map(str, self.seeds))} (mean, band +- 1 sd)")
        devices = sorted({r.status["device"] for r in self.runs.values() if r.status.get("device")})
        missing = self.missing()
        return (f"preset '{self.preset}' ({scale}): {self.figure.sizes(self)}, {seeds}"
                + (f"; trained on {', '.join(devices)}" if devices else "")
                + (f"\nNOT YET TRAINED: {', '.join(missing)}" if missing else ""))

    def provenance(self) -> dict[str, Any]:
        """Everything that made the figure: preset, seeds, each run's configuration and record."""
        p = get_preset(self.preset)
        return {"figure": self.figure.name, "preset": self.preset, "seeds": self.seeds,
                "preset_description": p.description, "lr_provenance": p.lr_provenance,
                **self.figure.describe(self),
                "runs": {self.name(key): {
                    "point": list(key[:-1]), "seed": key[-1], "run_id": run.run_dir.name,
                    "config": self.configs[key].identity(), "class_names": run.class_names,
                    "state": run.state, "epochs_completed": len(run.history),
                    "device": run.status.get("device"),
                    "torch": run.status.get("torch"),  # the training machine's (None: not recorded)
                    "diverged_epoch": run.status.get("diverged_epoch")}
                    for key, run in self.runs.items()},
                "diverged_runs": list(self.diverged()), "missing_runs": self.missing()}

    def plot(self):
        return self.figure.plot(self)

    def table(self) -> pd.DataFrame:
        return self.figure.table(self)

    def data(self) -> pd.DataFrame:
        return self.figure.data(self)

    def save(self, fig, extra: dict | None = None) -> dict:
        """PNG + PDF + the figure's data as CSV + provenance as <stem>_<preset> in the context's
        figures folder, and the figure's other frames beside it as <stem>_<preset>_<name>.csv."""
        from ..provenance import atomic_write_text, save_figure
        stem = f"{self.figure.stem}_{self.preset}"
        paths = save_figure(fig, stem, data=self.figure.data(self), caption=self.caption(),
                            params={**self.provenance(), **(extra or {})},
                            figures_dir=self.ctx.figures_for(self.preset))
        for name, frame in self.figure.extra_files(self).items():
            paths[name] = paths["png"].with_name(f"{stem}_{name}.csv")
            atomic_write_text(paths[name], frame.to_csv(index=False))
        return paths


class Figure:
    """A figure: its registry name, file stem, notebook and title, its own parameters beyond
    RUN_PARAMETERS ({name: (default, meaning)}), and how it obtains, draws and tabulates runs."""

    trains = True

    def __init__(self, name: str, stem: str, notebook: str, title: str, parameters: dict | None = None):
        self.name, self.stem, self.notebook, self.title = name, stem, notebook, title
        self.parameters = {**RUN_PARAMETERS, **(parameters or {})}

    def __repr__(self) -> str:
        return f"<Figure {self.name}: {self.title}>"

    def describe_parameters(self) -> str:
        """The parameters a notebook or `-p NAME VALUE` may set, their defaults and meanings."""
        return "\n".join(f"{name:<15} {default!r:<10} {meaning}"
                         for name, (default, meaning) in self.parameters.items())

    def prepare(self, **given) -> tuple[str, list[int], RunContext, dict, dict]:
        """Everything checked before a run starts: (preset, seeds, context, the figure's own
        values, the configurations) from `given` over the defaults (None keeps one), the context
        built from its settings unless given as `ctx`. ValueError names what is wrong."""
        ctx = given.pop("ctx", None)
        unknown = sorted(set(given) - set(self.parameters))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for {self.name}; valid: {', '.join(self.parameters)}")
        v = {name: default if given.get(name) is None else given[name]
             for name, (default, _) in self.parameters.items()}
        settings = {name: v.pop(name) for name in CONTEXT_PARAMETERS}
        if ctx is None:
            ctx = RunContext.of(**settings)
        elif set(given) & set(CONTEXT_PARAMETERS):
            raise ValueError(f"give a RunContext or its settings, not both: {sorted(set(given) & set(CONTEXT_PARAMETERS))}")
        preset = resolve_preset(v.pop("preset"), ctx.device)
        seeds = seed_list(v.pop("seeds"), v.pop("seed"))
        return preset, seeds, ctx, v, self.configs(preset, seeds, ctx, **v)

    def run(self, train: bool | None = None, **given) -> FigureResult:
        """Obtain the figure's runs (stored, resumed or trained: scheduler.obtain) and return them
        as a result. train: None trains what is missing unless that would take hours on a CPU
        that device 'auto' chose (a paper-scale preset on a laptop): then it draws the stored runs
        and names the missing ones (`FigureResult.missing`); False never trains; True always does."""
        preset, seeds, ctx, own, configs = self.prepare(**given)
        configs, extra = self.settle(preset, seeds, ctx, own, configs, train)
        result = FigureResult(self, preset, ctx, configs, {}, extra)  # its run names come from configs
        result.runs = obtain(ctx, configs, self.name, train=train, name_of=result.name)
        return result

    # what each figure defines
    def point_name(self, point: tuple) -> str:
        return " ".join(str(p) for p in point)

    def configs(self, preset: str, seeds: list[int], ctx: RunContext, **own) -> dict[tuple, TrainConfig]:
        """(*point, seed) -> the run's configuration."""
        raise NotImplementedError

    def settle(self, preset, seeds, ctx, own, configs, train=None) -> tuple[dict, dict]:
        """The configurations to train and the figure's other frames (FigureResult.extra): here
        `configs` as they are; a sweep first probes each point's LRs and settles on one."""
        return configs, {}

    def sizes(self, result: FigureResult) -> str:
        """The model, data and schedule, for the caption."""
        c = next(iter(result.configs.values()))
        return f"WRN-{c.depth}-{c.width}, {c.train_per_class or 500} train images/class, {c.epochs} epochs"

    def describe(self, result: FigureResult) -> dict:
        """The figure's own provenance, beside the runs'."""
        return {}

    def plot(self, result: FigureResult):
        raise NotImplementedError

    def table(self, result: FigureResult) -> pd.DataFrame:
        raise NotImplementedError

    def data(self, result: FigureResult) -> pd.DataFrame:
        """The figure's data, saved as its CSV."""
        return self.table(result)

    def extra_files(self, result: FigureResult) -> dict[str, pd.DataFrame]:
        return {}

    def finish(self, fig, result: FigureResult, title: str | None = None):
        """Give `fig` its title (default the figure's), the caption and what "train" means."""
        fig.suptitle(f"{title or self.title}\n{result.caption()}\n{TRAIN_METRICS_NOTE}", fontsize=10)
        fig.tight_layout()
        return fig
