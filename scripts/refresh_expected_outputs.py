"""Refresh the expected outputs that nbval compares in the notebooks.

Executes every notebook (the experiment ones at the tiny preset) into a temporary folder and
copies the outputs of the cells tagged `nbval-check-output` back into notebooks/; every other
output is cleared (executed notebooks of real runs live in outputs/, not in git).

    .venv/bin/python scripts/refresh_expected_outputs.py --data-root ../shared/data [--only 00]
"""
import argparse
import tempfile
from pathlib import Path

import nbformat

from ccql_utils.figures.notebook_parameters import NOTEBOOKS_DIR
from ccql_utils.figures.notebooks import execute_notebook, trains

CHECK_TAG = "nbval-check-output"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--only", default="", help="only notebooks whose file name contains this")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for source in sorted(p for p in NOTEBOOKS_DIR.glob("*.ipynb") if args.only in p.name):
            name = source.name
            executed = Path(tmp) / name
            parameters = {"figures_dir": f"{tmp}/figures"}
            if trains(source):
                parameters.update(preset="tiny", data_root=str(Path(args.data_root).resolve()),
                                  runs_dir=f"{tmp}/runs", device="cpu", progress=False)
            execute_notebook(source, executed, parameters, log_output=False)
            ran = [c for c in nbformat.read(executed, as_version=4).cells
                   if "injected-parameters" not in c.metadata.get("tags", [])]
            nb = nbformat.read(source, as_version=4)
            for cell, done in zip(nb.cells, ran):
                assert cell.source == done.source, f"{name}: cells out of step"
                if cell.cell_type != "code":
                    continue
                checked = CHECK_TAG in cell.metadata.get("tags", [])
                cell.outputs = done.outputs if checked else []
                cell.execution_count = done.execution_count if checked else None
                cell.metadata.pop("papermill", None)
                cell.metadata.pop("execution", None)
            nbformat.write(nb, source)
            print(f"refreshed {source}")


if __name__ == "__main__":
    main()
