"""The three figures of notebooks/00_theory.ipynb, each a tidy frame (the CSV saved beside the
figure) and a plot of it: the normalized minimal loss vs K at fixed d, the exact CCQL optimum as
w grows, and full-batch GD of the three losses (with `least_squares_accuracy_vs_n` beside it).

Randomness: every draw uses its own named stream, `np.random.default_rng([seed, STREAMS[name],
*key])`, so adding a K or a sample size to one sweep leaves every other draw unchanged, and the
figures that share centers or test sets name the same stream. These keys are what the committed
figures were drawn with; changing one changes them. (Row 1 of `lemmas.verification_table` also
draws from [seed, 1], for something else, which is harmless.)
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..reference import default_ccql_weight, zero_output_loss
from .model import (LOSSES, ccql_large_w_limit, ccql_normalized_min, ccql_population_optimum,
                     one_blas_thread, population_quadratic_loss, ql_normalized_min,
                     ql_population_minimizer, ql_rank_bound, sample_centers, sample_mixture)
from .empirical import (accuracy, ccql_least_squares, ce_fit_norm_budget, class_means,
                        empirical_loss, gradient_descent, output_statistics, ql_least_squares)
from .lemmas import ccql_at_centers, ce_lemma32_construction

STREAMS = {
    "loss_vs_k_centers": 1,   # min_loss_vs_k_frame: centers (one draw per rho, nested in K)
    "loss_vs_k_samples": 2,   # min_loss_vs_k_frame: the samples for CE, per K
    "ccql_vs_w_centers": 3,   # ccql_vs_w_frame: centers
    "ccql_vs_w_test": 4,      # ccql_vs_w_frame: test samples, per K
    "gd_centers": 5,          # gd_dynamics_frame and least_squares_accuracy_vs_n: centers
    "gd_train": 6,            # gd_dynamics_frame: training samples, per K
    "gd_test": 7,             # gd_dynamics_frame and least_squares_accuracy_vs_n: test samples
    "ls_train": 8,            # least_squares_accuracy_vs_n: training samples, per n
}


def stream(seed: int, name: str, *key: int) -> np.random.Generator:
    """The Generator of the named stream (see `STREAMS`) for one seed and key (e.g. K)."""
    return np.random.default_rng([seed, STREAMS[name], *key])


# --- Figure 1: normalized minimal loss vs K ----------------------------------------------------
@one_blas_thread
def min_loss_vs_k_frame(d: int, Ks: Sequence[int], sigmas: Sequence[float],
                        rhos: Sequence[float], R: float, n: int, seed: int = 0,
                        ce_iters: int = 0) -> pd.DataFrame:
    """Normalized minimal losses vs K at fixed d, random centers (nested in K for each rho).

    Long frame, columns: K, sigma, rho, quantity, value. Quantities: 'ql_min' (closed form),
    'rank_bound' (1 - rank/K; sigma NaN), 'ccql_min' (exact, w = sqrt(K-1) - 1), 'ccql_at_M'
    (Lemma 3.5, normalized), 'ce_at_RM' (mean CE at Theta = R M on n Gaussian samples, / log K),
    and with ce_iters > 0 'ce_budget' (CE after projected GD from R M within ||Theta||_F <= R sqrt K).
    """
    rows = []
    for rho in rhos:
        M_all = sample_centers(max(Ks), d, rho, "random", seed=stream(seed, "loss_vs_k_centers"))
        for K in Ks:
            M = M_all[:K]
            w = default_ccql_weight(K)
            rows.append({"K": K, "sigma": np.nan, "rho": rho, "quantity": "rank_bound",
                         "value": ql_rank_bound(M)})
            for sigma in sigmas:
                def add(q, v):
                    rows.append({"K": K, "sigma": sigma, "rho": rho, "quantity": q, "value": v})
                add("ql_min", ql_normalized_min(M, sigma))
                add("ccql_min", ccql_normalized_min(M, sigma, w))
                add("ccql_at_M", ccql_at_centers(M, sigma, w) / zero_output_loss("ccql", K, w))
                X, y = sample_mixture(M, n, sigma, seed=stream(seed, "loss_vs_k_samples", K))
                Theta_RM = ce_lemma32_construction(M, R)
                add("ce_at_RM", empirical_loss(Theta_RM, X, y, "ce", normalized=True))
                if ce_iters > 0:
                    _, losses = ce_fit_norm_budget(X, y, K, R, ce_iters, Theta0=Theta_RM)
                    add("ce_budget", losses[-1] / zero_output_loss("ce", K))
    return pd.DataFrame(rows)


def plot_min_loss_vs_k(frame: pd.DataFrame, d: int, R: float):
    """One panel per rho: QL and CCQL minima and budgeted CE vs K (log), one colour per sigma,
    with the rank bound; returns the figure."""
    rhos = frame["rho"].unique()
    sigmas = frame["sigma"].dropna().unique()
    colors = dict(zip(sigmas, plt.cm.viridis(np.linspace(0.0, 0.85, len(sigmas)))))
    styles = {"ql_min": ("-", "QL min"), "ccql_min": ("--", "CCQL min, w = sqrt(K-1) - 1"),
              "ce_budget": (":", f"CE, ||Theta||_F <= {R:g} sqrt(K)")}
    fig, axes = plt.subplots(1, len(rhos), figsize=(6 * len(rhos), 5.5), sharey=True, squeeze=False)
    for ax, rho in zip(axes[0], rhos):
        sub = frame[frame.rho == rho]
        bound = sub[sub.quantity == "rank_bound"]
        ax.plot(bound.K, bound.value, "k-", lw=2.5, alpha=0.6, label="bound 1 - rank(M)/K")
        for quantity, (ls, label) in styles.items():
            for sigma in sigmas:
                s = sub[(sub.quantity == quantity) & (sub.sigma == sigma)]
                ax.plot(s.K, s.value, ls, color=colors[sigma], marker=".",
                        label=f"{label}, sigma = {sigma:g}")
        ax.axvline(d, color="gray", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(f"number of classes K (d = {d}, vertical line K = d)")
        ax.set_title(f"random unit centers, shared component rho = {rho:g}")
    axes[0, 0].set_ylabel("normalized minimal loss (loss / loss at Theta = 0)")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


# --- Figure 2: the exact CCQL optimum vs w -----------------------------------------------------
@one_blas_thread
def ccql_vs_w_frame(d: int, Ks: Sequence[int], sigma: float, rho: float,
                    ws: Sequence[float], n_test: int, seed: int = 0) -> pd.DataFrame:
    """Normalized min CCQL and the test accuracy of the CCQL optimum's argmax vs w.

    For each K (random centers) and w, both f = Theta x ('linear', the paper's model) and
    f = Theta x + b ('affine', can output all-ones exactly). Columns: K, w, model, ccql_norm,
    accuracy (on n_test fresh samples), margin and wrong_class_output (`output_statistics`),
    large_w_limit (sigma^2/(1+sigma^2), the linear model's w -> inf value), and
    nearest_center_acc (accuracy of Theta = M, argmax_k mu_k^T x).
    """
    rows = []
    for K in Ks:
        M = sample_centers(K, d, rho, "random", seed=stream(seed, "ccql_vs_w_centers"))
        X, y = sample_mixture(M, n_test, sigma, seed=stream(seed, "ccql_vs_w_test", K))
        nearest = accuracy(M, X, y)
        for w in ws:
            for model, intercept in (("linear", False), ("affine", True)):
                Theta, value = ccql_population_optimum(M, sigma, w, intercept)
                rows.append({"K": K, "sigma": float(sigma), "w": float(w), "model": model,
                             "ccql_norm": value / zero_output_loss("ccql", K, w),
                             "accuracy": accuracy(Theta, X, y), **output_statistics(Theta, X, y),
                             "large_w_limit": ccql_large_w_limit(sigma),
                             "nearest_center_acc": nearest})
    return pd.DataFrame(rows)


def plot_ccql_vs_w(frame: pd.DataFrame, d: int, sigma: float, rho: float):
    """2 x 2 panels vs w (symlog): normalized min CCQL, accuracy, mean wrong-class output and
    margin, one colour per K, linear solid and affine dashed, at noise `sigma`; rows of the frame
    at sigma = 0 (if any) add the linear model's normalized min CCQL to panel (a), dotted: there
    it falls to 0, as the paper says, while at sigma > 0 it levels off. Returns the figure."""
    noiseless = frame[(frame.sigma == 0) & (frame.model == "linear")] if sigma != 0 else frame.iloc[:0]
    frame = frame[frame.sigma == sigma]
    Ks = frame["K"].unique()
    colors = dict(zip(Ks, plt.cm.plasma(np.linspace(0.0, 0.8, len(Ks)))))
    panels = [("ccql_norm", "normalized min CCQL", "log"),
              ("accuracy", "test accuracy of argmax", "linear"),
              ("wrong_class_output", "mean wrong-class output f_i, i != y", "linear"),
              ("margin", "mean margin f_y - max_{i != y} f_i", "log")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (column, ylabel, yscale) in zip(axes.ravel(), panels):
        for K in Ks:
            for model, ls in (("linear", "-"), ("affine", "--")):
                s = frame[(frame.K == K) & (frame.model == model)]
                ax.plot(s.w, s[column], ls, color=colors[K], label=f"K = {K}, f = Theta x" +
                        (" + b" if model == "affine" else ""))
            if column == "accuracy":
                ax.axhline(s.nearest_center_acc.iloc[0], color=colors[K], lw=0.8, ls=":")
        ax.set_xscale("symlog", linthresh=1e-2)
        ax.set_xlim(0, frame["w"].max())
        ax.set_yscale(yscale)
        ax.set_xlabel("CCQL weight w")
        ax.set_ylabel(ylabel)
    for K in noiseless["K"].unique():
        s = noiseless[noiseless.K == K]
        exact = s.ccql_norm.max() < 1e-12  # K <= d: M has full row rank, so Theta = M fits exactly
        axes[0, 0].plot(s.w, s.ccql_norm.clip(lower=1e-12), ":", lw=1.6, color=colors.get(K, "grey"),
                        label=f"K = {K}, f = Theta x, sigma = 0" + (": exactly 0 (K <= d)" if exact else ""))
    if len(noiseless):
        axes[0, 0].set_ylim(bottom=1e-12)
    axes[0, 0].axhline(ccql_large_w_limit(sigma), color="k", lw=0.8, ls=(0, (1, 3)),
                       label="sigma^2/(1+sigma^2)")
    axes[0, 0].legend(fontsize=7)
    axes[0, 1].set_title("dotted: nearest-center classifier (Theta = M)", fontsize=9)
    fig.suptitle(f"Exact population CCQL optimum vs w (d = {d}, sigma = {sigma:g}, rho = {rho:g}"
                 + ("; dotted in (a): sigma = 0)" if len(noiseless) else ")"))
    fig.tight_layout()
    return fig


# --- Figure 3: gradient-descent dynamics -------------------------------------------------------
def record_iterations(iters: int, n_points: int = 40) -> np.ndarray:
    """Iterations 0..iters to record, roughly log-spaced (always includes 0, 1 and iters)."""
    points = np.unique(np.round(np.geomspace(1, max(int(iters), 1), n_points)).astype(int))
    return np.unique(np.r_[0, points, int(iters)])


@one_blas_thread
def gd_dynamics_frame(d: int, Ks: Sequence[int], sigma: float, rho: float, n_train: int,
                      n_test: int, iters: int, n_record: int = 40, seed: int = 0) -> pd.DataFrame:
    """Full-batch GD (`gradient_descent`) of CE, QL and CCQL (w = sqrt(K-1) - 1) for each K on the
    same n_train samples, recorded at ~n_record log-spaced iterations.

    Columns: K, loss, iteration, train_loss, train_loss_norm, train_acc, test_acc. Reference rows
    (iteration = iters): 'ql_ls_optimum' and 'ccql_ls_optimum' (exact empirical minimisers),
    'ql_population_optimum' and 'ccql_population_optimum' (closed forms; loss = population loss),
    'nearest_center' (oracle Theta = M) and 'class_means' (Theta rows = the training class
    means); for these two the loss columns hold QL values.
    """
    frames = []
    record_at = record_iterations(iters, n_record)
    for K in Ks:
        M = sample_centers(K, d, rho, "random", seed=stream(seed, "gd_centers"))
        X, y = sample_mixture(M, n_train, sigma, seed=stream(seed, "gd_train", K))
        Xt, yt = sample_mixture(M, n_test, sigma, seed=stream(seed, "gd_test", K))
        w = default_ccql_weight(K)
        for loss in LOSSES:
            df = gradient_descent(X, y, K, loss, iters, w=w, X_test=Xt, y_test=yt, record_at=record_at)
            df.insert(0, "loss", loss)
            df.insert(0, "K", K)
            frames.append(df)
        references = (
            ("ql_ls_optimum", "ql", ql_least_squares(X, y, K)),
            ("ccql_ls_optimum", "ccql", ccql_least_squares(X, y, K, w)),
            ("ql_population_optimum", "ql", ql_population_minimizer(M, sigma)),
            ("ccql_population_optimum", "ccql", ccql_population_optimum(M, sigma, w)[0]),
            ("nearest_center", "ql", M),
            ("class_means", "ql", class_means(X, y, K)))
        for name, loss, Theta in references:
            loss_w = w if loss == "ccql" else 0.0
            value = (population_quadratic_loss(Theta, M, sigma, loss_w) if name.endswith("population_optimum")
                     else empirical_loss(Theta, X, y, loss, w))
            frames.append(pd.DataFrame([{
                "K": K, "loss": name, "iteration": iters, "train_loss": value,
                "train_loss_norm": value / zero_output_loss(loss, K, loss_w),
                "train_acc": accuracy(Theta, X, y), "test_acc": accuracy(Theta, Xt, yt)}]))
    return pd.concat(frames, ignore_index=True)


def plot_gd_dynamics(frame: pd.DataFrame, d: int, n_train: int, sigma: float):
    """Per K a column: normalized train loss (top) and test accuracy (bottom) vs GD iteration
    for CE, QL, CCQL, with the rank bound, the population optima and the nearest-center
    oracle as reference lines; returns the figure."""
    Ks = frame["K"].unique()
    iters = frame["iteration"].max()
    loss_colors = {"ce": "tab:blue", "ql": "tab:orange", "ccql": "tab:green"}
    fig, axes = plt.subplots(2, len(Ks), figsize=(4.5 * len(Ks), 7), squeeze=False)
    for j, K in enumerate(Ks):
        sub = frame[frame.K == K]
        ref = sub.set_index("loss")
        for loss, color in loss_colors.items():
            s = sub[sub.loss == loss]
            axes[0, j].plot(s.iteration, s.train_loss_norm, color=color, label=loss.upper())
            axes[1, j].plot(s.iteration, s.test_acc, color=color, label=loss.upper())
            if loss != "ce":
                axes[1, j].axhline(ref.loc[f"{loss}_population_optimum", "test_acc"], color=color,
                                   ls=":", lw=1, label=f"{loss.upper()} population optimum")
        axes[0, j].axhline(1 - d / K if K > d else 0, color="k", ls=":", lw=1, label="1 - rank/K")
        axes[1, j].axhline(ref.loc["nearest_center", "test_acc"], color="gray", ls="--", lw=1,
                           label="nearest center (Theta = M)")
        axes[0, j].set_title(f"K = {K}, d = {d}, n = {n_train}, sigma = {sigma:g}")
        for ax, top in zip(axes[:, j], (1.05, 1.02)):
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlim(0, iters)
            ax.set_ylim(0, top)
            ax.set_xlabel("GD iteration (step 1/L per loss)")
    axes[0, 0].set_ylabel("normalized train loss")
    axes[1, 0].set_ylabel("test accuracy")
    axes[0, 0].legend(fontsize=8)
    axes[1, -1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


@one_blas_thread
def least_squares_accuracy_vs_n(d: int, K: int, sigma: float, rho: float, ns: Sequence[int],
                                n_test: int, seed: int = 0) -> pd.DataFrame:
    """Test accuracy of the empirical QL and CCQL (w = sqrt(K-1) - 1) minimisers vs sample size.

    Same centers and test set as `gd_dynamics_frame` for this K and seed; the population optima
    are an n = inf row. Columns: n, samples_per_class, ql_acc, ccql_acc, nearest_center_acc.
    """
    M = sample_centers(K, d, rho, "random", seed=stream(seed, "gd_centers"))
    Xt, yt = sample_mixture(M, n_test, sigma, seed=stream(seed, "gd_test", K))
    w = default_ccql_weight(K)
    fits = []   # (n, QL fit, CCQL fit)
    for n in ns:
        X, y = sample_mixture(M, n, sigma, seed=stream(seed, "ls_train", n))
        fits.append((n, ql_least_squares(X, y, K), ccql_least_squares(X, y, K, w)))
    fits.append((float("inf"), ql_population_minimizer(M, sigma), ccql_population_optimum(M, sigma, w)[0]))
    frame = pd.DataFrame([{"n": n, "samples_per_class": n / K, "ql_acc": accuracy(ql, Xt, yt),
                           "ccql_acc": accuracy(ccql, Xt, yt)} for n, ql, ccql in fits])
    frame["nearest_center_acc"] = accuracy(M, Xt, yt)
    return frame
