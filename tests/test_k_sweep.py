"""The K sweep (notebook 04): its class draws, its configurations and its parameters."""
import pytest

from ccql_utils.execution.context import RunContext
from ccql_utils.core.data import random_classes
from ccql_utils.figures.notebook_parameters import NOTEBOOKS_DIR
from ccql_utils.figures.k_sweep import K_SWEEP_FIGURE, theory_min_losses
from ccql_utils.figures.notebooks import check_parameters
from ccql_utils.figures.presets import K_SWEEP


def k_sweep_configs(preset, class_seed=0):
    return K_SWEEP_FIGURE.configs(preset, [class_seed], RunContext())


@pytest.mark.parametrize("class_seed", [0, 7])
def test_class_draws_are_nested_in_k_as_documented(class_seed):
    ks = K_SWEEP["paper"].k_values
    draws = {k: set(random_classes(k, class_seed)) for k in ks}
    assert all(draws[a] < draws[b] for a, b in zip(ks, ks[1:]))
    configs = k_sweep_configs("quick", class_seed=class_seed)
    assert {c.class_seed for c in configs.values()} == {class_seed}


def test_every_k_has_the_same_images_per_class_and_each_loss_its_grid():
    for preset, sweep in K_SWEEP.items():
        configs = k_sweep_configs(preset)
        assert set(configs) == {(loss, k) for loss in ("ce", "ql", "ccql") for k in sweep.k_values}
        assert {c.train_per_class for c in configs.values()} == {sweep.train_per_class}
        assert {c.epochs for c in configs.values()} == {sweep.epochs}
        assert all(c.lr == sweep.lr_grid[c.loss][0] for c in configs.values())
        assert all(c.loss == loss for (loss, k), c in configs.items() if k > 2)
        if 2 in sweep.k_values:  # CCQL's default weight is 0 at K = 2: it is QL's run, one run id
            assert configs["ccql", 2].run_id() == configs["ql", 2].run_id()


def test_the_theory_stand_in_rises_with_k_and_ccql_stays_below_ql():
    th = theory_min_losses((2, 10, 100), d=64, sigma=0.3).pivot(index="K", columns="loss",
                                                                 values="min_loss_norm")
    assert th.QL.is_monotonic_increasing and (th.CCQL[[10, 100]] < th.QL[[10, 100]]).all()
    assert th.CCQL[2] == pytest.approx(th.QL[2])   # w = 0 at K = 2: CCQL is QL


@pytest.mark.parametrize("bad, message", [({"k_values": [3]}, r"K \[3\] not in"),
                                          ({"seeds": [1, 1]}, "seeds must be distinct"),
                                          ({"preset": "nope"}, "unknown preset")])
def test_bad_notebook_values_are_refused_before_anything_runs(bad, message):
    with pytest.raises(ValueError, match=message):
        K_SWEEP_FIGURE.prepare(**{"preset": "tiny", **bad})
    with pytest.raises(ValueError, match=message):
        check_parameters(NOTEBOOKS_DIR / "04_k_sweep.ipynb", {"preset": "tiny", **bad})


def test_the_committed_quick_records_redraw_the_committed_figure_data_without_data(
        committed_records, assert_sweep_redraws):
    runs_dir = committed_records("k_sweep_quick_records.tar.gz", 108)
    result = K_SWEEP_FIGURE.run(preset="quick", seeds=[0, 1, 2], runs_dir=runs_dir, progress=False, device="cpu")
    assert_sweep_redraws(result, "fig4_k_sweep_quick")
