"""The package's folders are its layers: a module imports only from its own layer or those below
it (shared modules < core, theory < execution < figures < cli), and no two modules import each
other, directly or round a cycle. Read from the source with ast, so lazy imports count too."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ccql_utils"
# layer of each folder (the top-level modules, "", are what every layer shares)
LAYERS = {"": 0, "core": 1, "theory": 1, "execution": 2, "figures": 3, "cli": 4}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The package modules `path` imports (relative imports, resolved; `from . import x` as x)."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1] if node.level > 1 else package
            base = [p for p in base if p]
            target = base + (node.module.split(".") if node.module else [])
            if node.module:
                found.add(".".join(target))
            else:
                found.update(".".join(target + [alias.name]) for alias in node.names)
    return {m for m in found if (PACKAGE / (m.replace(".", "/") + ".py")).exists()
            or (PACKAGE / m.replace(".", "/") / "__init__.py").exists()}


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py") if module_name(p) not in ("", "__main__")}


def layer(module: str) -> int:
    folder = module.split(".")[0] if "." in module or module in LAYERS else ""
    return LAYERS[folder]


def test_every_folder_of_the_package_is_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LAYERS) - {""}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_a_module_imports_only_from_its_layer_or_below(module):
    upward = sorted(m for m in GRAPH[module] if layer(m) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports from above: {upward}"


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module, path):
        state[module] = 1
        for dep in sorted(GRAPH.get(module, ())):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = 2
    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_the_graph_is_read_from_the_imports():
    """The checks above see real edges: a few that exist, lazy ones included."""
    assert "core.losses" in GRAPH["core.config"]
    assert "execution.scheduler" in GRAPH["figures.figure"]
    assert "execution.store" in GRAPH["cli.main"]  # imported inside a function
    assert "cli.remote" in GRAPH["cli.main"]       # `from . import remote`
