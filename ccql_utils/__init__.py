"""ccql_utils: reproduction of "Exploring the Role of Loss Functions in Multiclass Classification".

The public API the notebooks and tests use:
- losses:  `make_loss(name, num_classes, **options)`, `register_loss` (user_losses.py: bring your own)
- model:   `WideResNet(depth, widen_factor, num_classes, dropout)`
- data:    `load_cifar100`, `select_classes`, `make_subset`, `DeviceLoader`
- a run:   `TrainConfig` (config.py), `Trainer` (train.py)
- runs:    `RunStore` (the run folders), `load_run`, `scheduler.obtain` (train, resume or read back)
- figures: `figures.FIGURES[name].run(preset=..., seeds=...)` -> a result to plot, save, tabulate

Names are imported on first use, so that `import ccql_utils` (and the numpy-only theory) does not
load torch.
"""
import importlib

_HOMES = {"TrainConfig": "config", "DataError": "data", "load_cifar100": "data", "make_subset": "data",
          "select_classes": "data", "DeviceLoader": "loader", "default_ccql_weight": "losses",
          "make_loss": "losses", "register_loss": "user_losses", "Run": "runs", "RunStore": "runs",
          "load_run": "runs", "RunError": "train", "RunDiverged": "train", "Trainer": "train",
          "WideResNet": "wrn", "count_parameters": "wrn"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'ccql_utils' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
