"""Executing the notebooks headlessly with papermill, refusing bad parameters before any cell runs.

papermill passes parameters that a notebook does not declare silently (a typo such as `epoch=5`
would run the preset's default), and a bad value would only fail deep inside a cell.
`execute_notebook` checks every name against the notebook's `parameters` cell and, for the
experiment notebooks, builds the run configurations from the values first; either problem is a
ValueError naming the parameter.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .presets import EXPERIMENTS, OVERRIDES, experiment_seed_configs, resolve_preset
from .provenance import PROJECT_ROOT

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
EXPERIMENT_NOTEBOOKS = {e.notebook: name for name, e in EXPERIMENTS.items()}
# The notebooks beyond the paper -> the module that runs each (its FIGURE, notebook_values)
SWEEP_NOTEBOOKS = {"04_k_sweep.ipynb": "k_sweep", "05_loss_weights.ipynb": "loss_weights"}


class NotebookFailed(RuntimeError):
    """A cell raised; the message names the notebook, the executed copy and the error."""


def experiment_of(path: str | Path) -> str | None:
    """The experiment a notebook draws (None for the theory notebook)."""
    return EXPERIMENT_NOTEBOOKS.get(Path(path).name)


def trains(path: str | Path) -> bool:
    """Whether a notebook trains runs (and so takes the run parameters: preset, runs_dir, ...)."""
    return experiment_of(path) is not None or Path(path).name in SWEEP_NOTEBOOKS


def sweep_module(path: str | Path):
    """The module (k_sweep, loss_weights) that runs a notebook beyond the paper, else None."""
    import importlib
    name = SWEEP_NOTEBOOKS.get(Path(path).name)
    return importlib.import_module(f"ccql_utils.{name}") if name else None


def figure_of(path: str | Path) -> str | None:
    """The stem of the figure a training notebook saves (the preset is appended)."""
    experiment = experiment_of(path)
    if experiment:
        return EXPERIMENTS[experiment].figure
    module = sweep_module(path)
    return module.FIGURE if module else None


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """The names declared in the notebook's `parameters` cell, with their default source text."""
    import papermill
    if not Path(path).is_file():
        raise ValueError(f"no notebook at {path}")
    declared = papermill.inspect_notebook(str(path))
    if not declared:
        raise ValueError(f"{path} has no cell tagged 'parameters'")
    return {name: info["default"] for name, info in declared.items()}


def _is_int(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


# How the execution parameters of the training notebooks are checked (None: the default)
EXECUTION_CHECKS = {
    "runs_per_gpu": (lambda v: _is_int(v, 1), "an integer >= 1"),
    "verify_data": (lambda v: isinstance(v, bool), "true or false"),
    "theory_d": (lambda v: _is_int(v, 2), "an integer >= 2"),
    "theory_sigma": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < float("inf"),
                     "a number >= 0"),
    "k_values": (lambda v: isinstance(v, list) and bool(v) and all(_is_int(k, 2) for k in v),
                 "a list of class counts such as [5, 25]"),
}


def check_execution_parameters(parameters: dict[str, Any]) -> None:
    """ValueError naming the first execution parameter (executor, device, progress, ...) whose
    value cannot work, so that it fails before any cell runs rather than inside one."""
    from .config import resolve_device
    from .context import RunContext
    from .progress import progress_mode
    for name, value in parameters.items():
        if value is None:
            continue
        if name in EXECUTION_CHECKS and not EXECUTION_CHECKS[name][0](value):
            raise ValueError(f"notebook parameter {name} must be {EXECUTION_CHECKS[name][1]}, got {value!r}")
        try:
            {"executor": lambda v: RunContext(executor=v), "device": resolve_device, "progress": progress_mode}.get(
                name, lambda v: v)(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"notebook parameter {name}: {exc}") from None


def check_parameters(path: str | Path, parameters: dict[str, Any]) -> None:
    """ValueError for undeclared names, and for values the experiment's configurations refuse."""
    declared = notebook_parameters(path)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {Path(path).name}; "
                         f"it declares: {', '.join(declared)}")
    check_execution_parameters(parameters)
    if Path(path).name in SWEEP_NOTEBOOKS:
        try:
            sweep_module(path).notebook_values(parameters)
        except ValueError as exc:
            raise ValueError(f"notebook parameter: {exc}") from None
        return
    experiment = experiment_of(path)
    if experiment is None:
        return
    from .experiments import NOTEBOOK_DEFAULTS
    values = {name: NOTEBOOK_DEFAULTS[name] if parameters.get(name) is None else parameters[name]
              for name in ("preset", "seed", "device", *OVERRIDES) if name in NOTEBOOK_DEFAULTS}
    preset, seed = values.pop("preset"), values.pop("seed")
    seeds = parameters.get("seeds")
    try:
        experiment_seed_configs(experiment, resolve_preset(preset, values.get("device") or "auto"),
                                seeds, seed, **values)
    except ValueError as exc:
        raise ValueError(f"notebook parameter: {exc}") from None


def execute_notebook(path: str | Path, output_path: str | Path, parameters: dict[str, Any] | None = None,
                     cwd: str | Path | None = None, prepare_only: bool = False,
                     log_output: bool = True):
    """Run `path` with papermill into `output_path` (cwd: the notebook's folder by default).

    Raises ValueError for bad parameters (before anything runs) and NotebookFailed when a cell
    fails. prepare_only injects the parameters without executing (the tests then run the
    prepared notebook under nbval).
    """
    import papermill
    parameters = dict(parameters or {})
    check_parameters(path, parameters)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    try:
        return papermill.execute_notebook(
            str(path), str(output_path), parameters=parameters, prepare_only=prepare_only,
            cwd=str(cwd or Path(path).parent), log_output=log_output, progress_bar=False,
            kernel_name="python3")
    except papermill.PapermillExecutionError as exc:
        raise NotebookFailed(f"notebook {Path(path).name} failed in cell {exc.exec_count}: "
                             f"{exc.ename}: {exc.evalue} (executed copy with the traceback: "
                             f"{output_path})") from None


def parse_parameter(text: str) -> Any:
    """A -p value: JSON if it parses (numbers, true/false/null, lists, dicts), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# Names IPython itself puts in a notebook's namespace (underscore names are skipped anyway).
IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


def declared_names(notebook: str | Path) -> list[str]:
    """The names a notebook's `parameters` cell assigns, in order (read with json and ast, so a
    kernel without papermill can call it). A relative path not found from the working folder is
    looked up in the repository's notebooks/."""
    path = Path(notebook)
    if not path.is_absolute() and not path.exists():
        path = NOTEBOOKS_DIR / path
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    sources = ["".join(c["source"]) for c in cells
               if c["cell_type"] == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if not sources:
        raise ValueError(f"{path} has no cell tagged 'parameters'")
    return _assigned_names(sources[0])


def _assigned_names(source: str) -> list[str]:
    import ast
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name) and leaf.id not in names:
                    names.append(leaf.id)
    return names


def refuse_unknown_names(namespace: dict[str, Any], notebook: str | Path) -> None:
    """ValueError naming the declared parameters when the parameters just set include a name the
    notebook's `parameters` cell does not declare (a typo such as `epoch = 3`).

    Called from the cell right after the parameters cell: plain papermill only warns about an
    unknown `-p` name and injects it in a cell of its own ("# Parameters"), then the notebook
    would run at its defaults. In IPython the names checked are those assigned by the cells run
    just before this one whose source starts with "# Parameters" (the notebook's parameters cell
    and papermill's injected one), so names defined by later cells of an earlier run in the same
    kernel are not mistaken for parameters. Without IPython's history, every user-defined global
    (not a module, function or class; not IPython's own names or underscore names) is checked.
    """
    import inspect
    declared = declared_names(notebook)
    history = namespace.get("In")
    if isinstance(history, list) and history:
        candidates: set[str] = set()
        for source in reversed(history[:-1]):  # history[-1] is the cell running now
            if not source.lstrip().startswith("# Parameters"):
                break
            candidates.update(_assigned_names(source))
    else:
        candidates = {name for name, value in namespace.items()
                      if not name.startswith("_") and name not in IPYTHON_NAMES
                      and not (inspect.ismodule(value) or inspect.isroutine(value)
                               or inspect.isclass(value))}
    unknown = sorted(name for name in candidates - set(declared) if name in namespace)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {Path(notebook).name}; "
                         f"it declares: {', '.join(declared)}")
