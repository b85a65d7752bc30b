"""The presets' learning rates are the ones the recorded measurements show train."""
from pathlib import Path

import pandas as pd
import pytest

from ccql_utils.figures.presets import PRESETS, experiment_configs

RESULTS = Path(__file__).resolve().parent.parent / "results"


# experiment, K, the probe's per-epoch table, the number of test images it measured accuracy on
PROBES = {25: ("k25_random", "lr_probe_paper_k25_h200.csv", 2500),
          100: ("k100", "lr_probe_paper_k100_capped_h200.csv", 1000)}


def probe_summary(history: pd.DataFrame, num_classes: int) -> pd.DataFrame:
    """One row per run of an LR probe's per-epoch table (results/lr_probe_*.csv); `trained` when
    every epoch's losses are finite and the final test accuracy is at least 5x chance (a run that
    collapses to a constant output sits at chance)."""
    rows = []
    for run, h in history.groupby("run", sort=False):
        finite = h[["train_loss", "test_loss"]].notna().all().all()
        final = h.sort_values("epoch").iloc[-1]
        rows.append({"run": run, "loss": final.loss, "lr": final.lr_initial, "epochs": len(h),
                     "test_acc": final.test_acc,
                     "trained": bool(finite and final.test_acc >= 5 / num_classes)})
    return pd.DataFrame(rows)


def probe(k):
    return probe_summary(pd.read_csv(RESULTS / PROBES[k][1]), num_classes=k)


@pytest.fixture(scope="module")
def wrn28_probe():
    return probe(25)


@pytest.mark.parametrize("k", sorted(PROBES))
@pytest.mark.parametrize("preset", ["paper", "gpu-short"])
def test_paper_scale_lrs_are_measured_lrs_that_trained_within_one_se_of_the_best(preset, k):
    experiment, _, test_images = PROBES[k]
    probed_all = probe(k)
    for label, c in experiment_configs(experiment, preset).items():
        probed = probed_all[probed_all.loss == c.loss]
        chosen = probed[probed.lr == c.lr]
        assert not chosen.empty, f"{label}: lr {c.lr} was never measured at WRN-28-10, K = {k}"
        assert chosen.trained.all(), f"{label}: lr {c.lr} diverged or collapsed in the probe"
        best = probed[probed.trained].test_acc.max()
        # within one standard error of a test accuracy measured on the probe's test images
        standard_error = (best * (1 - best) / test_images) ** 0.5
        assert chosen.test_acc.max() >= best - standard_error, (label, c.lr, chosen.test_acc.max(), best)


def test_the_probe_records_the_failures_the_old_paper_lrs_would_have_hit(wrn28_probe):
    failed = wrn28_probe[~wrn28_probe.trained]
    assert {("ql", 0.1), ("ql", 0.05), ("ccql", 0.1)} <= set(zip(failed.loss, failed.lr))


def test_paper_scale_lrs_at_k100_are_no_larger_than_at_k25_and_name_their_capped_probe():
    for preset in ("paper", "gpu-short"):
        lr = PRESETS[preset].lr
        assert all(lr[100][loss] <= lr[25][loss] for loss in ("ql", "ccql"))
        assert PROBES[100][1] in PRESETS[preset].lr_provenance



def test_gpu_short_is_the_papers_model_and_data_on_a_compressed_schedule():
    paper = experiment_configs("k25_random", "paper")
    short = experiment_configs("k25_random", "gpu-short")
    for label in paper:
        p, s = paper[label], short[label]
        assert (s.depth, s.width, s.train_per_class, s.test_per_class) == (28, 10, None, None)
        assert (s.lr, s.batch_size, s.lr_milestones) == (p.lr, p.batch_size, p.lr_milestones)
        assert s.epochs == 60 and p.epochs == 200
    assert PRESETS["gpu-short"].paper_scale and not PRESETS["quick"].paper_scale
