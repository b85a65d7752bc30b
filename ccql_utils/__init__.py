"""ccql_utils: reproduction of "Exploring the Role of Loss Functions in Multiclass Classification".

The layout is the architecture; each layer imports only from those above it in this list:
- provenance, progress, reference: what every layer shares (paths, records of how a file was
  made, progress lines, the closed forms the losses and the theory share)
- core/:      the science of one run: losses, the WideResNet, CIFAR-100 subsets, `TrainConfig`, the
              `Trainer` (and several small ones stacked as one program)
- theory/:    the linear mixture model of Sections 3-4 (numpy only)
- execution/: where runs live and how they are obtained: the run store and its records, the run
              context, the scheduler (here, stacked, or on Ray), LR sweeps
- figures/:   the experiments and presets, one `Figure` protocol and its instances, the notebooks
- cli/:       `python -m ccql_utils`

The public API the notebooks and tests use:
- losses:  `make_loss(name, num_classes, **options)`, `register_loss` (core/user_losses.py: bring your own)
- model:   `WideResNet(depth, widen_factor, num_classes, dropout)`
- data:    `load_cifar100`, `select_classes`, `make_subset`, `DeviceLoader`
- a run:   `TrainConfig` (core/config.py), `Trainer` (core/train.py)
- runs:    `RunStore` (the run folders), `load_run`, `execution.scheduler.obtain` (train, resume or read back)
- figures: `figures.registry.FIGURES[name].run(preset=..., seeds=...)` -> a result to plot, save, tabulate

Names are imported on first use, so that `import ccql_utils` (and the numpy-only theory) does not
load torch.
"""
import importlib

_MODULES = {"core.config": "TrainConfig", "core.data": "DataError load_cifar100 make_subset select_classes",
            "core.loader": "DeviceLoader", "core.losses": "default_ccql_weight make_loss",
            "core.user_losses": "register_loss", "core.train": "RunError RunDiverged Trainer",
            "core.wrn": "WideResNet count_parameters", "execution.store": "Run RunStore load_run"}
_HOMES = {name: module for module, names in _MODULES.items() for name in names.split()}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'ccql_utils' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
