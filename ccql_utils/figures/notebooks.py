"""Executing the notebooks headlessly with papermill, refusing bad parameters before any cell runs.

papermill passes a name a notebook does not declare silently (a typo such as `epoch=5` would run
at the default), and a bad value would only fail deep inside a cell, so `execute_notebook` first
checks every name against the notebook's figure and builds its run configurations.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.config import resolve_device
from .notebook_parameters import parameters_set_in
from .registry import figure_of_notebook


class NotebookFailed(RuntimeError):
    """A cell raised; the message names the notebook, the executed copy and the error."""


def trains(path: str | Path) -> bool:
    """Whether a notebook trains runs (and so takes the run parameters: preset, runs_dir, ...)."""
    return getattr(figure_of_notebook(path), "trains", False)


def check_parameters(path: str | Path, parameters: dict[str, Any]) -> None:
    """ValueError for a name the notebook does not take, and for a value its figure refuses."""
    if not Path(path).is_file():
        raise ValueError(f"no notebook at {path}")
    figure = figure_of_notebook(path)
    if figure is None or not figure.trains:
        parameters_set_in(parameters, path)  # the names its own parameters cell declares
        return
    try:
        preset, seeds, ctx, own, configs = figure.prepare(**parameters)
        resolve_device(ctx.device)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"notebook parameter: {exc}") from None


def execute_notebook(path: str | Path, output_path: str | Path, parameters: dict[str, Any] | None = None,
                     cwd: str | Path | None = None, prepare_only: bool = False,
                     log_output: bool = True):
    """Run `path` with papermill into `output_path` (cwd: the notebook's folder by default).
    ValueError for bad parameters (before anything runs), NotebookFailed when a cell fails.
    prepare_only injects the parameters without executing (the tests run it under nbval)."""
    import logging
    import papermill
    parameters = dict(parameters or {})
    check_parameters(path, parameters)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    # papermill warns of every name the short parameters cell does not list; they were checked
    # against the figure above, so the warning would only alarm.
    checked = logging.Filter()
    checked.filter = lambda record: not str(record.msg).startswith("Passed unknown parameter")
    logger = logging.getLogger("papermill")
    logger.addFilter(checked)
    try:
        return papermill.execute_notebook(
            str(path), str(output_path), parameters=parameters, prepare_only=prepare_only,
            cwd=str(cwd or Path(path).parent), log_output=log_output, progress_bar=False,
            kernel_name="python3")
    except papermill.PapermillExecutionError as exc:
        raise NotebookFailed(f"notebook {Path(path).name} failed in cell {exc.exec_count}: "
                             f"{exc.ename}: {exc.evalue} (executed copy with the traceback: "
                             f"{output_path})") from None
    finally:
        logger.removeFilter(checked)


def parse_parameter(text: str) -> Any:
    """A -p value: JSON if it parses (numbers, true/false/null, lists, dicts), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
