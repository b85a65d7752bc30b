"""Every notebook under nbval (tagged outputs compared) at the tiny preset, and what it writes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccql_utils.figures.notebook_parameters import NOTEBOOKS_DIR, declared_names, parameters_set_in
from ccql_utils.figures.registry import FIGURES, figure_of_notebook
from ccql_utils.figures.notebooks import check_parameters, execute_notebook, trains
from ccql_utils.figures.paper_figures import PaperFigure

ALL_NOTEBOOKS = sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb"))
PAPER_NOTEBOOKS = [f.notebook for f in FIGURES.values() if isinstance(f, PaperFigure)]
SAVED = {"00_theory.ipynb": ["theory_min_loss_vs_k", "theory_ccql_vs_w", "theory_gd_dynamics"],
           "01_k25_random.ipynb": ["fig1_k25_random_tiny"], "02_k100.ipynb": ["fig2_k100_tiny"],
           "03_mammals_vs_random.ipynb": ["fig3_mammals_vs_random_tiny"],
           "04_k_sweep.ipynb": ["fig4_k_sweep_tiny"], "05_loss_weights.ipynb": ["fig5_loss_weights_tiny"],
           "06_loss_zoo.ipynb": ["fig6_loss_zoo_tiny"]}


def test_every_notebook_is_covered():
    assert ALL_NOTEBOOKS == sorted(SAVED)


@pytest.fixture(scope="module")
def data_parameters(tmp_path_factory):
    """Real data when CCQL_DATA_ROOT is set, else a synthetic stand-in (verify_data=False)."""
    root = os.environ.get("CCQL_DATA_ROOT")
    if root:
        return {"data_root": str(Path(root).resolve()), "verify_data": True}
    from ccql_utils.core.data import write_synthetic_cifar100
    synthetic = tmp_path_factory.mktemp("synthetic")
    write_synthetic_cifar100(synthetic, train_per_class=12, test_per_class=6)
    return {"data_root": str(synthetic), "verify_data": False}


@pytest.fixture(scope="module")
def shared_runs(shared_tmp):
    """One run store for all notebooks (on every test worker), as run_all uses: 03 reuses 01's
    QL run and 05 the K sweep's CE, QL and CCQL runs (which also keeps this module fast)."""
    return shared_tmp / "test_notebooks-runs"


@pytest.mark.parametrize("name", ALL_NOTEBOOKS)
def test_notebook_runs_under_nbval_and_writes_its_figures(name, tmp_path, data_parameters, shared_runs):
    parameters = {"figures_dir": str(tmp_path / "figures")}
    if trains(name):
        parameters.update(data_parameters, preset="tiny", runs_dir=str(shared_runs),
                          device="cpu", progress=False)
    prepared = tmp_path / "notebooks" / name
    execute_notebook(NOTEBOOKS_DIR / name, prepared, parameters, prepare_only=True)
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", str(prepared), "-q",
                           "-p", "no:cacheprovider"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
    for figure in SAVED[name]:
        for suffix in (".png", ".pdf", ".csv", ".provenance.json"):
            path = tmp_path / "figures" / f"{figure}{suffix}"
            assert path.exists() and path.stat().st_size > 0, path
        record = json.loads((tmp_path / "figures" / f"{figure}.provenance.json").read_text())
        env = record["environment"]
        assert env["commit"] and env["date_utc"]
        assert bool(env["torch"]) == trains(name)  # the theory draws without torch, and says so
        if name in ("04_k_sweep.ipynb", "05_loss_weights.ipynb", "06_loss_zoo.ipynb"):
            p = record["parameters"]  # tiny: 2 K x 3 losses; 6 variants at K = 5; 4 losses at K = 5
            assert p["preset"] == "tiny" and "NOT the paper's scale" in record["caption"]
            assert len(p["runs"]) == (4 if name.startswith("06") else 6)
            assert all(r["state"] == "finished" for r in p["runs"].values())
            assert (tmp_path / "figures" / f"{figure}_lr_probe.csv").stat().st_size > 0
        if name in PAPER_NOTEBOOKS:
            p = record["parameters"]
            assert p["preset"] == "tiny" and "NOT the paper's scale" in record["caption"]
            assert "trained on cpu (" in record["caption"]  # the card (here the CPU) is named
            for run in p["runs"].values():
                assert run["state"] == "finished" and run["epochs_completed"] == 2
                assert len(run["class_names"]) == run["config"]["num_classes"]
                assert run["config"]["depth"] == 10 and run["device"].startswith("cpu")


def test_unknown_parameter_names_fail_loudly(tmp_path):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['epoch'\]"):
        execute_notebook(NOTEBOOKS_DIR / "01_k25_random.ipynb", tmp_path / "x.ipynb", {"epoch": 5})
    check_parameters(NOTEBOOKS_DIR / "01_k25_random.ipynb", {"epochs": 5, "lr": {"ce": 0.1}})


def test_training_notebooks_share_no_cell_and_set_only_their_figures_parameters_at_none():
    """Each training notebook is a few cells over its registry entry: no cell is a copy of
    another notebook's beyond a call of the figure protocol (at most three lines, e.g.
    `result.save(result.plot())`), and its parameters cell sets a few of its figure's names to
    None (the defaults live in the figure)."""
    import papermill
    owners: dict[str, list[str]] = {}
    for figure in FIGURES.values():
        if not figure.trains:
            continue
        cells = json.loads((NOTEBOOKS_DIR / figure.notebook).read_text())["cells"]
        for cell in cells:
            if cell["cell_type"] == "code":
                owners.setdefault("".join(cell["source"]), []).append(figure.notebook)
        declared = papermill.inspect_notebook(str(NOTEBOOKS_DIR / figure.notebook))
        assert set(declared) <= set(figure.parameters) and len(declared) <= 4, figure.notebook
        assert {p["default"] for p in declared.values()} == {"None"}, figure.notebook
        assert figure_of_notebook(figure.notebook) is figure
    assert {src: nbs for src, nbs in owners.items() if len(nbs) > 1 and src.count("\n") >= 3} == {}


def test_cli_notebook_command_refuses_unknown_parameters():
    proc = subprocess.run([sys.executable, "-m", "ccql_utils", "notebook",
                           str(NOTEBOOKS_DIR / "02_k100.ipynb"), "-p", "epoch", "3"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown parameter" in proc.stderr


def _ccql_kernel_registered() -> bool:
    from jupyter_client.kernelspec import KernelSpecManager
    return "ccql" in KernelSpecManager().find_kernel_specs()


@pytest.mark.parametrize("name", ["01_k25_random.ipynb", "00_theory.ipynb"])
def test_plain_papermill_refuses_a_misspelled_parameter(name, tmp_path):
    """`papermill NOTEBOOK OUT -p epoch 3` (no project wrapper) fails in the cell after the
    parameters, naming the declared parameters, before anything trains."""
    misspelled = {"00_theory.ipynb": "sead", "01_k25_random.ipynb": "epoch"}[name]
    command = [sys.executable, "-m", "papermill", str(Path("notebooks") / name),
               str(tmp_path / "out.ipynb"), "-p", misspelled, "3"]
    if not _ccql_kernel_registered():  # the set-up registers it; papermill reads the notebook's
        command += ["-k", "python3"]
    proc = subprocess.run(command, cwd=NOTEBOOKS_DIR.parent, capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg"}, timeout=300)
    assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    figure = figure_of_notebook(name)
    valid = ", ".join(figure.parameters if figure.trains else declared_names(NOTEBOOKS_DIR / name))
    assert f"unknown parameter(s) ['{misspelled}'] for {name}; it takes: {valid}" in proc.stderr
    executed = json.loads((tmp_path / "out.ipynb").read_text())
    ran = [c for c in executed["cells"] if c["cell_type"] == "code" and c["execution_count"]]
    assert len(ran) == 3  # parameters, papermill's injected parameters, the checked call


def test_notebook_parameters_ignore_names_of_an_earlier_run_in_the_same_kernel():
    figure = FIGURES["k25_random"]
    parameters_cell = "# Parameters, ...\npreset = 'tiny'\n"
    rerun = {"In": ["", parameters_cell, "run_notebook(...)"],
             "preset": "tiny", "result": object(), "paths": {}, "fig": None}
    # later cells' names are not parameters
    assert parameters_set_in(rerun, figure.notebook, figure.parameters) == {"preset": "tiny"}
    assert parameters_set_in({**rerun, "seeds": [1, 2]}, figure.notebook, figure.parameters) == {
        "preset": "tiny", "seeds": [1, 2]}  # a value set by papermill's cell, or in a kernel without history
    typo = {**rerun, "In": ["", parameters_cell + "epoch = 3\n", "..."], "epoch": 3}
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['epoch'\]"):
        parameters_set_in(typo, figure.notebook, figure.parameters)
    with pytest.raises(ValueError, match=r"\['epoch'\].*takes: preset, seed"):
        parameters_set_in({"preset": None, "epoch": 3, "os": os}, figure.notebook, figure.parameters)


def test_notebooks_name_the_project_kernel():
    """JupyterLab opens them with the kernel the set-up registers (scripts/ensure_env.sh);
    headless execution passes kernel_name="python3" explicitly and needs no such kernel."""
    for name in ALL_NOTEBOOKS:
        spec = json.loads((NOTEBOOKS_DIR / name).read_text())["metadata"]["kernelspec"]
        assert spec == {"display_name": "Python (ccql)", "language": "python", "name": "ccql"}


def test_checked_parameters_raise_no_papermill_warning(tmp_path, caplog):
    """The short parameters cell lists a few names; papermill would warn of every other one
    passed, though each was checked against the figure first."""
    execute_notebook(NOTEBOOKS_DIR / "04_k_sweep.ipynb", tmp_path / "04.ipynb",
                     {"preset": "tiny", "runs_dir": str(tmp_path), "progress": False}, prepare_only=True)
    assert "unknown parameter" not in caplog.text
