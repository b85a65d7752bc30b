"""What a notebook's parameters cell (and papermill's injected one) set, read without torch or
papermill, so the numpy-only theory notebook can check its own: a name outside the notebook's
parameters is refused, naming the valid ones."""
from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path
from typing import Any

from ..provenance import PROJECT_ROOT

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
# Names IPython itself puts in a notebook's namespace (underscore names are skipped anyway).
IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


def declared_names(notebook: str | Path) -> list[str]:
    """The names a notebook's `parameters` cell assigns, in order (read with json and ast, so a
    kernel without papermill can call it); a bare file name is looked up in notebooks/."""
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
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    targets = [target for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign))
               for target in (node.targets if isinstance(node, ast.Assign) else [node.target])]
    return list(dict.fromkeys(leaf.id for target in targets for leaf in ast.walk(target)
                              if isinstance(leaf, ast.Name)))


def parameters_set_in(namespace: dict[str, Any], notebook: str | Path, valid=None) -> dict[str, Any]:
    """The values in `namespace` of the parameters `valid` (default: those the notebook's
    `parameters` cell declares); ValueError naming the valid ones for another name they set.

    Plain papermill only warns of an unknown `-p` name, injected in a cell of its own. In IPython
    the names read are those assigned by the cells run just before this one whose source starts
    with "# Parameters" (so an earlier run's later cells in the same kernel do not count); without
    IPython's history, every user-defined global that is not a module, routine or class."""
    valid = list(declared_names(notebook) if valid is None else valid)
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
                      and not (inspect.ismodule(value) or inspect.isroutine(value) or inspect.isclass(value))}
    unknown = sorted(name for name in candidates - set(valid) if name in namespace)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {Path(notebook).name}; "
                         f"it takes: {', '.join(valid)}")
    return {name: namespace[name] for name in valid if name in namespace}


def refuse_unknown_names(namespace: dict[str, Any], notebook: str | Path) -> None:
    """For a notebook that declares all its parameters in its own cell (the theory notebook)."""
    parameters_set_in(namespace, notebook)
