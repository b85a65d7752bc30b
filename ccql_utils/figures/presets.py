"""The experiments (the paper's figures) and the presets (scales) that turn them into run configs.

The one home of every experiment default: the protocol is `TrainConfig`'s defaults (config.py);
each preset changes only what its scale needs (model size, epochs, images per class, LRs), the
sweeps' tables below their sizes. Learning rates and where they come from: results/README.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..core.config import TrainConfig
from ..core.losses import LOSSES


@dataclass(frozen=True)
class Experiment:
    """The runs of one of the paper's figures (legend label -> loss, classes, K) and what the
    paper reports for each (WRN-28-10, 200 epochs; docs/protocol.md, "What the paper reports")."""

    name: str
    runs: dict
    paper_reports: dict


def _losses(classes: str, k: int) -> dict:
    return {LOSSES[loss].label: dict(loss=loss, classes=classes, num_classes=k) for loss in ("ce", "ql", "ccql")}


EXPERIMENTS = {e.name: e for e in (
    Experiment("k25_random", _losses("random", 25), {
                   "CE": "~100% train acc; best test accuracy of the three",
                   "QL": "~100% train acc; slowest to train, lowest test acc; normalized test loss stays near 1",
                   "CCQL": "~100% train acc; trains faster and tests better than QL"}),
    Experiment("k100", _losses("all", 100), {
                   "CE": "100% train acc (only CE); 79.5-81.5% test acc is the public WRN-28-10 yardstick",
                   "QL": "stagnates: < 20% test acc",
                   "CCQL": "> 90% train acc, ~65% test acc"}),
    # The paper shows QL alone; CE and CCQL on both subsets are the control it lacks (is the
    # mammal penalty QL's, or the classes' difficulty?). The random-class runs are Fig 1's.
    Experiment("mammals_vs_random", {f"{LOSSES[loss].label}, {subset}": dict(loss=loss, classes=subset, num_classes=25)
                for loss in ("ql", "ce", "ccql") for subset in ("random", "mammals")}, {
                   "QL, random": "100% train acc; trains faster and tests better than mammals",
                   "QL, mammals": "100% train acc; trains slower, lower test acc",
                   **{f"{label}, {subset}": "not in the paper (a control)"
                      for label in ("CE", "CCQL") for subset in ("random", "mammals")}}),
)}


@dataclass(frozen=True)
class Preset:
    """Model size, schedule length, data size and initial LRs of one scale of the experiments.

    lr: {K: {loss: initial LR}}; epochs: {K: epochs}; train_per_class: {K: cap} (None = all 500).
    """

    name: str
    description: str
    depth: int
    width: int
    epochs: dict = field(default_factory=dict)
    train_per_class: dict = field(default_factory=dict)
    lr: dict = field(default_factory=dict)
    batch_size: int = 128
    test_per_class: int | None = None
    checkpoint_every: int = 1
    lr_provenance: str = ""
    paper_scale: bool = False   # the paper's model and data (comparable with its numbers)
    clean_train_eval: bool | int = False  # the un-augmented training set in eval mode every N epochs


# Measured on WRN-28-10 (results/lr_probe_paper_*_h200.csv; how the choice follows: results/README.md).
PAPER_LRS = {25: {"ce": 0.1, "ql": 0.03, "ccql": 0.02}, 100: {"ce": 0.1, "ql": 0.01, "ccql": 0.01}}
PAPER_LR_PROVENANCE = (
    "K = 25: measured on WRN-28-10 with all 500 images per class (25-epoch probe: "
    "results/lr_probe_paper_k25_h200.csv): CE 0.1 (72.4% test; 0.03 gave 72.9%, within one standard "
    "error of 0.9 points; 0.1 is the WideResNet authors' 200-epoch value), QL "
    "0.03 (53.6%; 0.1 is NaN in epoch 1, 0.05 collapses to chance), CCQL 0.02 (65.0%; 0.1 is NaN, "
    "0.03 starts at chance). K = 100: chosen by the scaling of the summed square losses' curvature "
    "with K and 1 + w, then checked on WRN-28-10 with a capped subset (40 train / 10 test images "
    "per class, 12-epoch probe: results/lr_probe_paper_k100_capped_h200.csv): no "
    "run diverged; CE 0.1 (12.3%), QL 0.01 (7.4%, the best; 0.03 fell to 4.6%), CCQL 0.01 (12.0%; "
    "0.005 gave 12.4%, within one standard error of 1.0 point; 0.02 gave 8.4%). A capped probe "
    "checks stability and early progress, not the full-data optimum.")

PAPER = Preset(
    name="paper",
    description="The paper's protocol: WRN-28-10, 200 epochs, batch 128, all 500 images per "
                "class, LR / 4 after epochs 50, 80, 110, 150, 170 (needs a CUDA GPU).",
    depth=28, width=10, epochs={25: 200, 100: 200}, train_per_class={25: None, 100: None},
    lr=PAPER_LRS, checkpoint_every=5, lr_provenance=PAPER_LR_PROVENANCE, paper_scale=True,
    # "all three reach ~100% training accuracy" is measured on clean images, not on augmented batches
    clean_train_eval=10)

PRESETS = {p.name: p for p in (
    PAPER,
    replace(  # the paper's model, data and LRs; only the schedule is shorter
        PAPER, name="gpu-short",
        description="The paper's model and data (WRN-28-10, all 500 images per class, full test "
                    "set) on the paper's schedule compressed to 60 epochs (LR / 4 after epochs 15, "
                    "24, 33, 45, 51), so Fig 1's three runs fit one 10-minute GPU job. Shows the "
                    "paper's ordering at its scale; not its near-100% training accuracy, which "
                    "needs the 200-epoch schedule.",
        epochs={25: 60, 100: 60}, checkpoint_every=10, clean_train_eval=False),
    Preset(
        name="quick",
        description="CPU-sized: WRN-10-1, 200 train images per class and 50 epochs at K = 25, "
                    "50 per class and 20 epochs at K = 100; full test sets. Shows the trends, "
                    "not the paper's accuracies.",
        depth=10, width=1, epochs={25: 50, 100: 20}, train_per_class={25: 200, 100: 50},
        lr={25: {"ce": 0.1, "ql": 0.1, "ccql": 0.03}, 100: {"ce": 0.1, "ql": 0.01, "ccql": 0.01}},
        lr_provenance="Chosen by `sweep-lr` on the real CIFAR-100 at this preset's model and data "
                      "(15 epochs at K = 25, 8 at K = 100; results/lr_sweep_quick_*.csv): the "
                      "smallest LR within 0.5 points of the best final test accuracy."),
    Preset(
        name="tiny",
        description="For tests: WRN-10-1, 10 train and 5 test images per class, 2 epochs.",
        depth=10, width=1, epochs={25: 2, 100: 2}, train_per_class={25: 10, 100: 10},
        lr={25: {"ce": 0.05, "ql": 0.05, "ccql": 0.05}, 100: {"ce": 0.05, "ql": 0.05, "ccql": 0.05}},
        batch_size=64, test_per_class=5,
        lr_provenance="Arbitrary: the tiny preset only checks that the pipeline runs."),
)}


@dataclass(frozen=True)
class KSweep:
    """The K sweep (notebook 04) at one preset: the model, batch and schedule milestones are the
    preset's; the same images per class at every K. lr_grid: {loss: LRs} that a probe of
    probe_epochs tries at every K (the best by sweep.mark_best trains the full run)."""

    k_values: tuple
    train_per_class: int | None
    test_per_class: int | None
    epochs: int
    probe_epochs: int
    lr_grid: dict


K_VALUES = (2, 5, 10, 25, 50, 100)
# Grids: CE around the WideResNet value; QL and CCQL from the measured K = 25 and K = 100 LRs
# (results/README.md) down, as their stable LR falls with K, and up, as it rises at small K.
PAPER_K_GRID = {"ce": (0.03, 0.1), "ql": (0.003, 0.01, 0.03, 0.1), "ccql": (0.005, 0.01, 0.02, 0.05)}
K_SWEEP = {
    "paper": KSweep(K_VALUES, None, None, epochs=200, probe_epochs=15, lr_grid=PAPER_K_GRID),
    "gpu-short": KSweep(K_VALUES, None, None, epochs=60, probe_epochs=10, lr_grid=PAPER_K_GRID),
    "quick": KSweep(K_VALUES, 50, 50, epochs=12, probe_epochs=4,
                    lr_grid={"ce": (0.03, 0.1, 0.3), "ql": (0.01, 0.03, 0.1), "ccql": (0.003, 0.01, 0.03)}),
    # tiny: the pipeline only (one loss probes two LRs, so a choice is made), seconds under nbval
    "tiny": KSweep((2, 5), 10, 5, epochs=2, probe_epochs=1,
                   lr_grid={"ce": (0.05,), "ql": (0.02, 0.05), "ccql": (0.05,)}),
}


@dataclass(frozen=True)
class WeightSweep:
    """The loss-weight sweep (notebook 05) at one preset: its K values, CCQL weights w (0 is QL,
    a K_WEIGHTS name depends on K, None is the default sqrt(K-1) - 1) and rescaled-square settings
    (k, M) (k None is 1 + the default w, CCQL's equivalent). Sizes, probe and base LR grids are the
    preset's K_SWEEP entry, so CE, QL and default-w CCQL are the K sweep's own runs."""

    k_values: tuple
    weights: tuple
    rescaled: tuple


# Hui & Belkin's many-class setting is k = 1, M = 15; (1, 1) is the plain square loss / K.
# Weights given as text depend on K: "K-2" is the linear weighting the paper says the square root
# beats "consistently"; "10K" a very large w, where the paper reports chance accuracy.
WEIGHTS, RESCALED = (0, 1, None, 10, 30, "K-2", "10K"), ((1, 1), (1, 15), (None, 1))
K_WEIGHTS = {"K-2": lambda k: k - 2, "10K": lambda k: 10 * k}
LOSS_WEIGHTS = {name: WeightSweep((25, 100), WEIGHTS, RESCALED) for name in ("paper", "gpu-short", "quick")}
LOSS_WEIGHTS["tiny"] = WeightSweep((5,), (0, None, 10), ((1, 15), (None, 1)))


@dataclass(frozen=True)
class LossZoo:
    """The loss zoo (notebook 06) at one preset: its K values and losses (losses.LOSSES names);
    images, epochs, probe and LR grids are the preset's K_SWEEP entry."""

    k_values: tuple
    losses: tuple


ZOO = ("ce", "ql", "ccql", "rescaled_square", "squentropy", "label_smoothing", "focal", "brier")
LOSS_ZOO = {name: LossZoo((25, 100), ZOO) for name in ("paper", "gpu-short", "quick")}
LOSS_ZOO["tiny"] = LossZoo((5,), ("ce", "ql", "focal", "brier"))  # the pipeline only, seconds under nbval


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} or auto")
    return PRESETS[name]


def resolve_preset(preset: str, device: str = "auto") -> str:
    """'auto' -> paper on a CUDA device (for device 'auto': if one is available), else quick;
    another name is checked."""
    if preset != "auto":
        return get_preset(preset).name
    if device == "auto":
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return "paper" if str(device).startswith("cuda") else "quick"


OVERRIDES = ("epochs", "depth", "width", "train_per_class", "batch_size", "lr", "w", "device",
             "compile", "precision", "class_seed", "clean_train_eval", "checkpoint_every")


def experiment_configs(experiment: str, preset: str = "quick", seed: int = 0,
                       **overrides) -> dict[str, TrainConfig]:
    """The runs of `experiment` at `preset`, keyed by their legend label, resolved (validated).
    overrides: OVERRIDES (None keeps the preset's value; lr a number or {loss: lr}, w CCQL's
    weight); an unknown name is a ValueError."""
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown}; valid: {', '.join(OVERRIDES)}")
    p, e = get_preset(preset), get_experiment(experiment)
    o = {k: v for k, v in overrides.items() if v is not None}
    configs = {}
    for label, run in e.runs.items():
        k, loss = run["num_classes"], run["loss"]
        lr = o.get("lr", p.lr[k])
        if isinstance(lr, dict):
            unknown = sorted(set(lr) - set(p.lr[k]))
            if unknown:
                raise ValueError(f"lr has unknown loss name(s) {unknown}; use {', '.join(p.lr[k])}")
            lr = lr.get(loss, p.lr[k][loss])
        sized = {"depth": p.depth, "width": p.width, "epochs": p.epochs[k], "batch_size": p.batch_size,
                 "train_per_class": p.train_per_class[k], "checkpoint_every": p.checkpoint_every,
                 "clean_train_eval": p.clean_train_eval}
        sized.update({name: o[name] for name in (*sized, "device", "compile", "precision") if name in o})
        configs[label] = TrainConfig(
            **run, **sized, loss_options={"w": o["w"]} if loss == "ccql" and "w" in o else {}, seed=seed,
            class_seed=o.get("class_seed"), test_per_class=p.test_per_class, lr=lr).resolved()
    return configs


def seed_list(seeds, seed: int = 0) -> list[int]:
    """The seeds of an experiment: `seeds` (a list of distinct integers) or, if None, [seed]."""
    if seeds is None:
        return [seed]
    if isinstance(seeds, (int, str)) or not len(seeds) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of integers, e.g. [0, 1, 2]; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    return list(seeds)

