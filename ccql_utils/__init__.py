"""ccql_utils: reproduction of "Exploring the Role of Loss Functions in Multiclass Classification".

The public API the notebooks and tests use:
- losses:  `make_loss(name, num_classes, **options)` for 'ce', 'ql', 'ccql', 'rescaled_square'
- model:   `WideResNet(depth, widen_factor, num_classes, dropout)`
- data:    `load_cifar100`, `select_classes`, `make_subset`, `DeviceLoader`
- a run:   `TrainConfig` (config.py), `Trainer` (train.py)
- runs:    `scheduler.obtain(ctx, {label: config})` trains, resumes or reads back runs; `RunStore`, `load_run`
- figures: `presets.experiment_configs`, `experiments.run_experiment`, `plots.plot_experiment`
"""
from .config import TrainConfig
from .data import DataError, load_cifar100, make_subset, select_classes
from .loader import DeviceLoader
from .losses import default_ccql_weight, make_loss
from .runs import Run, RunError, RunStore, load_run
from .train import RunDiverged, Trainer
from .wrn import WideResNet, count_parameters

__all__ = ["DataError", "DeviceLoader", "load_cifar100", "make_subset", "select_classes",
           "default_ccql_weight", "make_loss", "Run", "RunError", "RunStore", "load_run",
           "RunDiverged", "TrainConfig", "Trainer", "WideResNet", "count_parameters"]
