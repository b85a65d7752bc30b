"""The registry of figures, the one table the CLI, `all`, the notebooks and the tests read:

    FIGURES["k25_random"].run(preset="quick", seeds=[0, 1, 2])   ->  a FigureResult
    result.plot(), result.save(fig), result.table()
"""
from __future__ import annotations

from pathlib import Path

from .figure import Figure, FigureResult
from .notebook_parameters import declared_names, parameters_set_in
from .k_sweep import K_SWEEP_FIGURE
from .loss_weights import WEIGHT_SWEEP_FIGURE
from .loss_zoo import LOSS_ZOO_FIGURE
from .paper_figures import PAPER_FIGURES


class TheoryFigures(Figure):
    """The linear mixture model's figures (notebook 00, numpy only, no runs): its parameters are
    those its own parameters cell declares."""

    trains = False

    def __init__(self):
        super().__init__("theory", "theory_min_loss_vs_k", "00_theory.ipynb",
                         "The linear mixture model (Sections 3-4)")
        self.parameters = {n: (None, "see the notebook") for n in declared_names(self.notebook)}


THEORY = TheoryFigures()
FIGURES: dict[str, Figure] = {f.name: f for f in (THEORY, *PAPER_FIGURES, K_SWEEP_FIGURE, WEIGHT_SWEEP_FIGURE,
                                                 LOSS_ZOO_FIGURE)}
TRAINING_FIGURES = tuple(name for name, f in FIGURES.items() if f.trains)


def get_figure(name: str) -> Figure:
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; choose one of {', '.join(FIGURES)}")
    return FIGURES[name]


def figure_of_notebook(path: str | Path) -> Figure | None:
    """The figure a notebook draws (by its file name), None for a notebook not in the registry."""
    return next((f for f in FIGURES.values() if f.notebook == Path(path).name), None)


def run_notebook(name: str, namespace: dict) -> FigureResult:
    """What a training notebook runs (`run_notebook(name, globals())`): the figure at the
    parameters its first cells set (notebook_parameters.parameters_set_in)."""
    figure = get_figure(name)
    return figure.run(**parameters_set_in(namespace, figure.notebook, figure.parameters))
