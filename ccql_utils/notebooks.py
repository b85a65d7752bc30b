"""Executing the notebooks headlessly with papermill, refusing unknown parameter names.

papermill passes parameters that a notebook does not declare silently (a typo such as `epoch=5`
would run the preset's default). `execute_notebook` checks every name against the notebook's
`parameters` cell first and raises ValueError listing the valid ones.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .provenance import PROJECT_ROOT

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
# The experiment notebooks (they take preset/data/run parameters); the theory one needs no data.
EXPERIMENT_NOTEBOOKS = {"01_k25_random.ipynb": "k25_random", "02_k100.ipynb": "k100",
                        "03_mammals_vs_random.ipynb": "mammals_vs_random"}


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """The names declared in the notebook's `parameters` cell, with their default source text."""
    import papermill
    declared = papermill.inspect_notebook(str(path))
    if not declared:
        raise ValueError(f"{path} has no cell tagged 'parameters'")
    return {name: info["default"] for name, info in declared.items()}


def check_parameters(path: str | Path, parameters: dict[str, Any]) -> None:
    declared = notebook_parameters(path)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {Path(path).name}; "
                         f"it declares: {', '.join(declared)}")


def execute_notebook(path: str | Path, output_path: str | Path, parameters: dict[str, Any] | None = None,
                     cwd: str | Path | None = None, prepare_only: bool = False,
                     log_output: bool = True):
    """Run `path` with papermill into `output_path` (cwd: the notebook's folder by default).

    Raises ValueError for undeclared parameters and papermill's PapermillExecutionError (which
    names the failing cell) when a cell fails. prepare_only injects the parameters without
    executing (the tests then run the prepared notebook under nbval).
    """
    import papermill
    parameters = dict(parameters or {})
    check_parameters(path, parameters)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    return papermill.execute_notebook(
        str(path), str(output_path), parameters=parameters, prepare_only=prepare_only,
        cwd=str(cwd or Path(path).parent), log_output=log_output, progress_bar=False,
        kernel_name="python3")


def parse_parameter(text: str) -> Any:
    """A -p value: JSON if it parses (numbers, true/false/null, lists, dicts), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
