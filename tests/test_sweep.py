"""The LR-selection rule (sweep.mark_best): on the stored sweeps behind the presets, and on the
cases that decide it (ties, divergence, the smallest-LR preference)."""
from pathlib import Path

import pandas as pd
import pytest

from ccql_utils.execution.sweep import mark_best

RESULTS = Path(__file__).resolve().parent.parent / "results"


def sweep(*rows):
    return pd.DataFrame(rows, columns=["lr", "state", "test_acc"])


@pytest.mark.parametrize("name", ["lr_sweep_quick_k25_random.csv", "lr_sweep_quick_k100.csv"])
def test_the_stored_sweeps_choices_are_what_the_rule_gives_again(name):
    stored = pd.read_csv(RESULTS / name)
    for loss, table in stored.groupby("loss"):
        again = mark_best(table.drop(columns="best"), tolerance=0.005)
        assert again.loc[again.best, "lr"].tolist() == table.loc[table.best, "lr"].tolist(), loss


def test_a_tie_within_tolerance_goes_to_the_smallest_lr():
    table = mark_best(sweep((0.3, "finished", 0.500), (0.1, "finished", 0.497), (0.03, "finished", 0.40)))
    assert table.loc[table.best, "lr"].tolist() == [0.1]
    exact = mark_best(sweep((0.3, "finished", 0.5), (0.1, "finished", 0.5)), tolerance=0.0)
    assert exact.loc[exact.best, "lr"].tolist() == [0.1]


def test_outside_tolerance_the_best_accuracy_wins_even_at_a_larger_lr():
    table = mark_best(sweep((0.01, "finished", 0.40), (0.1, "finished", 0.50)), tolerance=0.005)
    assert table.loc[table.best, "lr"].tolist() == [0.1]


def test_a_diverged_run_never_wins_and_an_all_diverged_sweep_has_no_best():
    table = mark_best(sweep((0.3, "diverged", float("nan")), (0.1, "finished", 0.2)))
    assert table.loc[table.best, "lr"].tolist() == [0.1]
    none = mark_best(sweep((0.3, "diverged", float("nan")), (1.0, "diverged", float("nan"))))
    assert not none.best.any()
