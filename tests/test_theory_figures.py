"""Tests of ccql_utils.theory.figures (small sizes) and of notebook 00's text against its output."""
import re
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from ccql_utils.theory.figures import (
    STREAMS, ccql_vs_w_frame, gd_dynamics_frame, least_squares_accuracy_vs_n, min_loss_vs_k_frame,
    one_blas_thread, plot_ccql_vs_w, plot_gd_dynamics, plot_min_loss_vs_k, record_iterations,
)
from ccql_utils.theory.lemmas import format_verification_table, verification_table

matplotlib.use("Agg")
THEORY_NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "00_theory.ipynb"


def test_verification_table_small():
    configs = [(5, 8, 0.1, 0.2, "equicorrelated"), (30, 6, 0.2, 0.0, "random"),
               (20, 5, 0.0, 0.0, "random")]
    table = verification_table(configs, n=20_000, seed=0, n_ce=500)
    assert len(table) == 3
    assert (table["relerr_normal_eq"] < 1e-10).all()
    assert (table["relerr_mc"] < 0.05).all()
    assert (table["relerr_ccql"] < 1e-6).all()
    assert (table["ql_closed"] >= table["ql_bound"] - 1e-12).all()
    assert (table["ce_max"] <= table["ce_bound"]).all()
    assert (table["ccql_exact"] <= table["ccql_at_M"]).all()
    assert np.allclose(table["ccql_reference"], (table["w"] + 1) / 2)
    shown = format_verification_table(table)
    assert (shown["QL >= bound"] == "yes").all() and (shown["CE max <= bound"] == "yes").all()
    assert (shown["rel err NE"] == "< 1e-10").all()


def test_figure_frames_small():
    df = min_loss_vs_k_frame(5, [2, 5, 20], [0.1], [0.0, 0.5], R=5.0, n=300, seed=0, ce_iters=3)
    assert set(df["quantity"]) == {"rank_bound", "ql_min", "ccql_min", "ccql_at_M", "ce_at_RM",
                                   "ce_budget"}
    ql = df[df.quantity == "ql_min"].set_index(["rho", "K"])["value"]
    bound = df[df.quantity == "rank_bound"].set_index(["rho", "K"])["value"]
    assert (ql >= bound).all()
    cc = df[df.quantity == "ccql_min"].set_index(["rho", "K"])["value"]
    assert (cc.loc[:, 20] < ql.loc[:, 20]).all()        # CCQL sits below QL at K > d
    df = ccql_vs_w_frame(5, [4, 12], 0.3, 0.0, [0.0, 1.0, 1e6], n_test=500)
    assert len(df) == 2 * 3 * 2
    affine = df[(df.model == "affine") & (df.w == 1e6)]
    assert (affine["wrong_class_output"] > 0.99).all() and (affine["margin"] < 1e-3).all()
    df = gd_dynamics_frame(5, [4, 12], 0.2, 0.0, n_train=300, n_test=300, iters=10, n_record=5)
    assert set(df["loss"]) >= {"ce", "ql", "ccql", "ql_ls_optimum", "nearest_center"}
    by_n = least_squares_accuracy_vs_n(5, 12, 0.2, 0.0, [200, 2000], n_test=300)
    assert list(by_n["n"][:2]) == [200, 2000] and np.isinf(by_n["n"].iloc[-1])
    assert ((by_n[["ql_acc", "ccql_acc"]] > 0) & (by_n[["ql_acc", "ccql_acc"]] <= 1)).all().all()


def test_bad_dimension_raises_value_error():
    with pytest.raises(ValueError, match="dimension d"):
        min_loss_vs_k_frame(0, [2], [0.1], [0.0], 1.0, 10)


def test_named_streams_are_distinct_and_a_sweep_extends_without_changing_its_draws():
    assert len(set(STREAMS.values())) == len(STREAMS)
    small = gd_dynamics_frame(5, [4], 0.2, 0.0, n_train=200, n_test=200, iters=5, n_record=3)
    grown = gd_dynamics_frame(5, [4, 9], 0.2, 0.0, n_train=200, n_test=200, iters=5, n_record=3)
    assert grown[grown.K == 4].reset_index(drop=True).equals(small)
    small = min_loss_vs_k_frame(5, [3, 6], [0.1], [0.0], R=2.0, n=100)
    grown = min_loss_vs_k_frame(5, [3, 6, 10], [0.1], [0.0], R=2.0, n=100)
    assert grown[grown.K < 10].reset_index(drop=True).equals(small)


def test_record_iterations_are_log_spaced_and_include_the_ends():
    it = record_iterations(100, 10)
    assert it[0] == 0 and it[1] == 1 and it[-1] == 100 and np.all(np.diff(it) > 0)
    assert len(it) <= 11 and np.all(np.diff(it)[1:] >= np.diff(it)[:-1] - 1)


def test_frames_run_with_one_blas_thread_and_restore_the_count():
    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    seen = []
    probe = one_blas_thread(lambda: seen.extend(blas_threads()))
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        probe()
        assert blas_threads() == before
    assert seen and all(n == 1 for n in seen)


def test_plots_draw_one_panel_per_sweep_value(tmp_path):
    loss_vs_k = min_loss_vs_k_frame(5, [2, 5, 20], [0.1, 0.3], [0.0, 0.5], R=5.0, n=100,
                                    ce_iters=2)
    fig = plot_min_loss_vs_k(loss_vs_k, 5, 5.0)
    assert len(fig.axes) == 2                                   # one per rho
    assert len(fig.axes[0].lines) == 1 + 3 * 2 + 1              # bound, 3 curves x 2 sigma, K = d
    ccql_w = ccql_vs_w_frame(5, [4, 12], 0.3, 0.0, [0.0, 1.0, 100.0], n_test=200)
    fig = plot_ccql_vs_w(ccql_w, 5, 0.3, 0.0)
    assert len(fig.axes) == 4 and len(fig.axes[0].lines) == 2 * 2 + 1   # K x model, limit
    dynamics = gd_dynamics_frame(5, [4, 12, 30], 0.2, 0.0, n_train=200, n_test=200, iters=5,
                                 n_record=3)
    fig = plot_gd_dynamics(dynamics, 5, 200, 0.2)
    assert len(fig.axes) == 2 * 3                               # loss and accuracy per K
    fig.savefig(tmp_path / "gd.png")


# --- Notebook 00: its text quotes no numbers; its checked cells print them --------------------
# Decimals and scientific notation ("0.344", "2e+02"); section and lemma numbers are not results.
NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+(?:e[+-]?\d+)?|\d+e[+-]?\d+)(?!\.?\d)")
NOT_A_RESULT = re.compile(r"(Lemmas?|Def\.|[Ss]ection|§)\s*$")


def _numbers(text: str) -> set[str]:
    return {m.group(1) for m in NUMBER.finditer(text)
            if not NOT_A_RESULT.search(text[:m.start()][-12:])}


def test_the_theory_notebook_text_quotes_no_numbers_and_its_checked_cells_print_them():
    assert _numbers("gives 0.344 at 2e+02 and 0.5%, Lemma 3.2, section 3.3") == {"0.344", "2e+02", "0.5"}
    nb = nbformat.read(THEORY_NOTEBOOK, as_version=4)
    claims = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            assert not _numbers(cell.source), f"a number in the text, not printed by code: {cell.source[:80]}"
        elif "nbval-check-output" in cell.metadata.get("tags", []):
            assert cell.outputs, "a checked cell without stored output checks nothing"
            claims += sum(line.startswith("- ") for output in cell.outputs
                          for line in output.get("text", "").splitlines())
    assert claims >= 20, "the checked cells print the text's claims, one per line"
