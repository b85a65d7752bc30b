"""Bad input from a hostile or careless user (or a full disk) ends in one line and the documented exit code (2 for
bad arguments, before anything is created; 1 for data and runtime errors), never a traceback."""
import json

import numpy as np
import pytest
import torch

from ccql_utils.core import packs as P
from ccql_utils.cli.main import main
from ccql_utils.core.train import EpochSums


def run_cli(capsys, argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip()


@pytest.mark.parametrize("argv,named", [
    (["run", "k25_random", "--preset", "tiny", "--seeds", "0,,1"], "without empty items"),
    (["run", "k25_random", "--preset", "tiny", "--seeds", ","], "at least one integer"),
    (["run", "k25_random", "--preset", "tiny", "--lr", "ql=0.1,ql=0.2"], "ql twice"),
    (["run", "k25_random", "--preset", "tiny", "--device", "tpu"], "unknown device 'tpu'"),
    (["all", "--preset", "tiny", "--device", "tpu"], "unknown device 'tpu'"),
    (["train", "--seed", str(2**45), "--k", "5", "--depth", "10", "--width", "1"], "seed must be an integer from 0"),
    (["plan", "--budget-s", "0"], "positive number of seconds"),
    (["notebook", "notebooks/04_k_sweep.ipynb", "-p", "k_values", "abc", "--prepare-only"], "k_values"),
    (["notebook", "notebooks/04_k_sweep.ipynb", "-p", "runs_per_gpu", "0", "--prepare-only"], "runs_per_gpu"),
    (["notebook", "notebooks/02_k100.ipynb", "-p", "executor", "ray2", "--prepare-only"], "executor"),
    (["notebook", "notebooks/02_k100.ipynb", "-p", "verify_data", "3", "--prepare-only"], "verify_data"),
    (["notebook", "notebooks/04_k_sweep.ipynb", "-p", "theory_sigma", "-1", "--prepare-only"], "theory_sigma"),
])
def test_bad_arguments_exit_2_in_one_line_naming_them(capsys, tmp_path, argv, named):
    code, err = run_cli(capsys, [*argv, *(["--runs-dir", tmp_path / "runs"] if argv[0] in ("run", "all", "train", "plan") else
                                         ["--output", tmp_path / "nb.ipynb"])])
    assert code == 2 and named in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "nb.ipynb").exists()


def _rewrite(pack, path, change, checksums: bool):
    """`pack` with `change` applied to its arrays, written to `path`; checksums: recomputed, so
    that the damage reaches the checks behind the sha256 (as a forger would)."""
    with np.load(pack) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    if checksums:
        meta = json.loads(str(arrays["meta"]))
        meta["sha256"] = {n: P.array_sha256(arrays[n]) for n in P.PACKED_ARRAYS if n in arrays}
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


@pytest.mark.parametrize("change,checksums,named", [
    (lambda a: a.pop("test_fine"), False, "not a readable pack"),
    (lambda a: a.update(train_fine=a["train_fine"][:-1]), True, "malformed"),
    (lambda a: a.update(train_fine=a["train_fine"] + 150), True, "malformed"),
    (lambda a: a.update(train_images=a["train_images"].astype(np.float32)), True, "malformed"),
    (lambda a: a.update(meta=np.array("{not json")), False, "not a readable pack"),
    (None, False, "not a readable pack"),  # truncated
])
def test_malformed_packs_are_one_line_errors(capsys, synthetic_data, tmp_path, change, checksums, named):
    pack = P.pack_subset(synthetic_data, tmp_path / "good.npz", range(5))
    bad = tmp_path / "bad.npz"
    if change is None:
        bad.write_bytes(pack.read_bytes()[:5000])
    else:
        _rewrite(pack, bad, change, checksums)
    code, err = run_cli(capsys, ["verify-pack", bad])
    assert code == 1 and named in err and len(err.splitlines()) == 1, err


def test_pack_refuses_an_output_that_is_a_folder(capsys, synthetic_root, tmp_path):
    (tmp_path / "taken.npz").mkdir()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    for output in ("taken.npz", "taken"):
        code, err = run_cli(capsys, ["pack", "--classes", "all", "--output", tmp_path / output,
                                     "--data-root", synthetic_root, "--unverified-data"])
        assert code == 2 and "folder" in err and len(err.splitlines()) == 1, err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_a_non_finite_loss_records_no_accuracy_beside_it():
    sums = EpochSums.zeros("cpu", (2,))
    sums.add(torch.tensor([0.5, float("nan")]), torch.randn(4, 2, 3), torch.zeros(4, 2, dtype=torch.long))
    loss, acc = sums.read()
    assert np.isfinite(acc[0]) and np.isnan(acc[1]) and np.isnan(loss[1])


def test_a_figure_whose_write_fails_leaves_the_previous_files_whole(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from ccql_utils.provenance import save_figure
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    save_figure(fig, "f", data=pd.DataFrame({"x": [1]}), figures_dir=tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_savefig = fig.savefig

    def disk_full_in_pdf(target, format=None, **kwargs):
        if format != "pdf":
            return real_savefig(target, format=format, **kwargs)
        (target.write if hasattr(target, "write") else open(target, "wb").write)(b"%PDF-1.4 partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(fig, "savefig", disk_full_in_pdf)
    with pytest.raises(OSError, match="No space left"):
        save_figure(fig, "f", data=pd.DataFrame({"x": [2]}), figures_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)  # no temporary file left
    assert (tmp_path / "f.pdf").read_bytes() == before["f.pdf"]
    assert (tmp_path / "f.csv").read_bytes() == before["f.csv"]  # not yet rewritten when it failed


def test_import_refuses_a_different_record_of_a_stored_run_unless_replace(capsys, synthetic_data, tmp_path):
    import pandas as pd
    from ccql_utils.execution.records import export_records
    from tests.conftest import obtain_one, run_context, tiny_config
    run = obtain_one(run_context(tmp_path / "a", synthetic_data), tiny_config(epochs=1, train_per_class=10))
    export_records([run.run_dir], tmp_path / "one.tar.gz")
    metrics = pd.read_csv(run.run_dir / "metrics.csv")
    metrics.loc[0, "test_acc"] = 0.5  # a plausible, different record of the same run
    metrics.to_csv(run.run_dir / "metrics.csv", index=False)
    export_records([run.run_dir], tmp_path / "other.tar.gz")
    assert run_cli(capsys, ["import", tmp_path / "one.tar.gz", "--runs-dir", tmp_path / "b"])[0] == 0
    code, err = run_cli(capsys, ["import", tmp_path / "other.tar.gz", "--runs-dir", tmp_path / "b"])
    assert code == 1 and "other.tar.gz" in err and "--replace" in err, err
    stored = tmp_path / "b" / run.run_dir.name / "metrics.csv"
    assert pd.read_csv(stored).loc[0, "test_acc"] != 0.5
    code, err = run_cli(capsys, ["import", tmp_path / "other.tar.gz", "--runs-dir", tmp_path / "b", "--replace"])
    assert code == 0 and pd.read_csv(stored).loc[0, "test_acc"] == 0.5
