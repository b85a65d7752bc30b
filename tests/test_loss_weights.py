"""The loss-weight sweep (notebook 05): its variants, their LR grids, shared runs and parameters."""
import pytest

from ccql_utils.execution.context import RunContext
from ccql_utils.figures.notebook_parameters import NOTEBOOKS_DIR
from ccql_utils.figures.k_sweep import K_SWEEP_FIGURE
from ccql_utils.figures.loss_weights import WEIGHT_SWEEP_FIGURE, lr_grid, variants
from ccql_utils.core.losses import default_ccql_weight
from ccql_utils.figures.notebooks import check_parameters
from ccql_utils.figures.presets import K_SWEEP, LOSS_WEIGHTS


def k_sweep_configs(preset):
    return K_SWEEP_FIGURE.configs(preset, [0], RunContext())


def weight_sweep_configs(preset, k_values=None):
    return WEIGHT_SWEEP_FIGURE.configs(preset, [0], RunContext(), k_values)


def test_ce_ql_and_default_ccql_are_the_k_sweeps_own_runs_and_every_other_variant_is_new():
    for preset in LOSS_WEIGHTS:
        configs = weight_sweep_configs(preset)
        k_sweep = {c.run_id() for c in k_sweep_configs(preset).values()}
        shared = {name for (name, _), c in configs.items() if c.run_id() in k_sweep}
        assert shared == {"CE", "QL (w = 0)", "CCQL w = sqrt(K-1)-1"}, preset
        assert len({c.run_id() for c in configs.values()}) == len(configs)
        sizes = K_SWEEP[preset]
        assert {(c.train_per_class, c.test_per_class, c.epochs) for c in configs.values()} == {
            (sizes.train_per_class, sizes.test_per_class, sizes.epochs)}


@pytest.mark.parametrize("K", [25, 100])
def test_the_variants_are_the_issues_weights_and_hui_belkin_settings(K):
    by_name = {v.name: v for v in variants("quick", K)}
    w_star = default_ccql_weight(K)
    assert sorted(v.w for v in by_name.values() if v.family == "CCQL") == sorted(
        [0, 1, w_star, 10, 30, K - 2, 10 * K])  # linear weighting and a very large w, per K
    assert {(v.k, v.M) for v in by_name.values() if v.loss == "rescaled_square"} == {
        (1, 1), (1, 15), (1 + w_star, 1)}
    configs = weight_sweep_configs("quick", k_values=[K])
    assert configs["RS k = 1+w*, M = 1", K].loss_options == {"k": 1 + w_star, "M": 1.0}


@pytest.mark.parametrize("K", [25, 100])
def test_lr_grids_follow_the_correct_class_curvature(K):
    """lr x (1 + w) is the same grid for every CCQL weight; the rescaled square loss with
    k = 1 + w* probes default CCQL's grid x K/2 (the factor between the two losses), one step lower too."""
    ccql_grid = K_SWEEP["quick"].lr_grid["ccql"]
    w_star = default_ccql_weight(K)
    by_name = {v.name: v for v in variants("quick", K)}
    for v in by_name.values():
        if v.loss == "ccql":
            grid = lr_grid("quick", v, K)
            assert [lr * (1 + v.w) for lr in grid] == pytest.approx(
                [lr * (1 + w_star) for lr in ccql_grid], rel=0.01)
    rs = lr_grid("quick", by_name["RS k = 1+w*, M = 1"], K)
    assert len(rs) == len(ccql_grid) + 1 and rs[0] < rs[1]
    assert list(rs[1:]) == pytest.approx([lr * K / 2 for lr in ccql_grid], rel=0.01)
    assert lr_grid("quick", by_name["QL (w = 0)"], K) == K_SWEEP["quick"].lr_grid["ql"]


@pytest.mark.parametrize("bad, message", [({"k_values": [50]}, r"K \[50\] not in"),
                                          ({"seeds": [2, 2]}, "seeds must be distinct"),
                                          ({"w": 3}, r"unknown .*\['w'\]")])
def test_bad_notebook_values_are_refused_before_anything_runs(bad, message):
    with pytest.raises(ValueError, match=message):
        WEIGHT_SWEEP_FIGURE.prepare(**{"preset": "tiny", **bad})
    with pytest.raises(ValueError, match=message):
        check_parameters(NOTEBOOKS_DIR / "05_loss_weights.ipynb", {"preset": "quick", **bad})


def test_the_committed_quick_records_redraw_the_committed_figure_data_without_data(
        committed_records, assert_sweep_redraws):
    runs_dir = committed_records("loss_weights_quick_records.tar.gz", 138)
    result = WEIGHT_SWEEP_FIGURE.run(preset="quick", seeds=[0, 1, 2], runs_dir=runs_dir, progress=False,
                                     device="cpu")
    assert_sweep_redraws(result, "fig5_loss_weights_quick")
