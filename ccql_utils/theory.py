"""Section III of the paper: K-class mixtures, linear classifiers, CE vs QL vs CCQL (numpy float64).

The statements are the corrected ones of docs/protocol.md, section 3:

* Mixture (Def. 3.1). Centers: M is K x d, row k = mu_k, ||mu_k|| = 1. y uniform on {0..K-1},
  x = mu_y + z, E z = 0, Cov z = sigma^2 I_d. "Bounded" noise here: z uniform on the sphere of
  radius sigma sqrt(d) (so Cov z = sigma^2 I_d and ||z|| = sigma sqrt(d) exactly).
* Classifier f(x) = Theta x, Theta K x d (optionally with an intercept column, see
  `ccql_population_optimum`).
* Per-sample losses: CE = -log softmax(f)[y]; QL = 1/2 ||onehot(y) - f||^2;
  CCQL(w) = QL + (w/2) (1 - f_y)^2. Normalized loss = loss / its value at f = 0
  (`losses.zero_output_loss`: log K, 1/2, (w + 1)/2); default w = sqrt(K - 1) - 1
  (`losses.default_ccql_weight`).

Population closed forms:

* QL (Lemma 3.4, corrected): Theta* = M (M^T M + K sigma^2 I_d)^{-1},
  min QL = 1/2 sum_k sigma^2 / (lambda_k + K sigma^2), lambda_k the K eigenvalues of M M^T;
  normalized min >= 1 - rank(M)/K.
* CE (Lemma 3.2): Theta = R M; on a bounded mixture with margin gamma (|mu_i^T mu_j| <= 1 - 3 gamma,
  ||z|| <= gamma) every sample has CE <= log(1 + (K - 1) exp(-R gamma)).
* CCQL at Theta = M (Lemma 3.5, with the 1/2):
  1/2 (||M M^T - I_K||_F^2 / K + K sigma^2) + (w/2) sigma^2.
* Exact CCQL optimum (not in the paper): rows decouple, theta_i = A_i^{-1} b_i with
  A_i = (1/K) sum_k (1 + w [k = i]) (mu_k mu_k^T + sigma^2 I_d), b_i = ((1 + w)/K) mu_i;
  as w -> inf, theta_i -> mu_i / (1 + sigma^2) and normalized min CCQL -> sigma^2 / (1 + sigma^2).

Empirical counterparts: least squares for QL/CCQL, CE by projected GD within its norm budget,
full-batch GD for each loss. The data behind notebooks/00_theory.ipynb is built from these in
`theory_figures`. Everything is seeded through numpy Generators; nothing touches global random
state.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd

from .losses import zero_output_loss

LOSSES = ("ce", "ql", "ccql")
NOISE_KINDS = ("gaussian", "bounded")
CENTER_KINDS = ("random", "equicorrelated")


# --- Argument checks: ValueError naming the argument and the offending value -----------------
def _check_int(value, low: int, name: str) -> int:
    if int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_real(value, name: str, high: float = math.inf) -> float:
    """value as a float in [0, high) (so finite: NaN and inf fail)."""
    value = float(value)
    if not 0.0 <= value < high:
        raise ValueError(f"{name} must lie in [0, {high}), got {value!r}")
    return value


def _check_K(K) -> int:
    return _check_int(K, 2, "number of classes K")


def _check_d(d) -> int:
    return _check_int(d, 1, "dimension d")


def _check_sigma(sigma) -> float:
    return _check_real(sigma, "noise level sigma")


def _check_rho(rho) -> float:
    return _check_real(rho, "center correlation rho", high=1.0)


def _check_w(w) -> float:
    return _check_real(w, "CCQL weight w")


def _check_M(M) -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2:
        raise ValueError(f"M must be a K x d matrix, got shape {M.shape}")
    _check_K(M.shape[0])
    _check_d(M.shape[1])
    return M


def _check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return loss


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


# --- Mixture sampling ------------------------------------------------------------------------
def sample_centers(K: int, d: int, rho: float = 0.0, kind: str = "random",
                   seed=0) -> np.ndarray:
    """Unit class centers, returned as M (K x d, float64), rows mu_k with ||mu_k|| = 1.

    kind="random": mu_k = normalize(sqrt(rho) u + sqrt(1 - rho) g_k), g_k uniform on the unit
      sphere, u a shared unit vector; pairwise correlations scatter around rho (exactly 0 in
      expectation for rho = 0). Any K, d. Nested: the first K' rows for a seed do not depend on K.
    kind="equicorrelated": mu_i^T mu_j = rho exactly for i != j, randomly rotated; needs K <= d.
    """
    K, d, rho = _check_K(K), _check_d(d), _check_rho(rho)
    rng = _rng(seed)
    if kind == "random":
        u = rng.standard_normal(d)
        u /= np.linalg.norm(u)
        g = rng.standard_normal((K, d))
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        M = math.sqrt(rho) * u[None, :] + math.sqrt(1.0 - rho) * g
    elif kind == "equicorrelated":
        if K > d:
            raise ValueError(f"equicorrelated centers need K <= d (got K={K}, d={d}); "
                             "use kind='random' for K > d")
        gram = (1.0 - rho) * np.eye(K) + rho * np.ones((K, K))
        L = np.linalg.cholesky(gram)                       # K x K, rows have unit norm
        Q, _ = np.linalg.qr(rng.standard_normal((d, d)))   # random rotation of R^d
        M = L @ Q[:K, :]
    else:
        raise ValueError(f"kind must be one of {CENTER_KINDS}, got {kind!r}")
    return M / np.linalg.norm(M, axis=1, keepdims=True)


def sample_mixture(M: np.ndarray, n: int, sigma: float, noise: str = "gaussian",
                   seed=0) -> tuple[np.ndarray, np.ndarray]:
    """n samples of the mixture with centers M (K x d): returns X (n x d) and labels y (n,).

    noise="gaussian": z ~ N(0, sigma^2 I_d); noise="bounded": z uniform on the sphere of radius
    sigma sqrt(d) (same covariance, ||z|| = sigma sqrt(d)). Labels are iid uniform.
    """
    M = _check_M(M)
    sigma = _check_sigma(sigma)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    K, d = M.shape
    rng = _rng(seed)
    y = rng.integers(0, K, size=int(n))
    g = rng.standard_normal((int(n), d))
    if noise == "gaussian":
        z = sigma * g
    elif noise == "bounded":
        z = sigma * math.sqrt(d) * g / np.linalg.norm(g, axis=1, keepdims=True)
    else:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
    return M[y] + z, y


def center_margin(M: np.ndarray) -> float:
    """gamma of Def. 3.1 for centers M (K x d): (1 - max_{i != j} |mu_i^T mu_j|) / 3."""
    M = _check_M(M)
    G = np.abs(M @ M.T)
    np.fill_diagonal(G, -np.inf)
    return float((1.0 - G.max()) / 3.0)


# --- Population losses and closed forms ------------------------------------------------------
def population_quadratic_loss(Theta: np.ndarray, M: np.ndarray, sigma: float,
                              w: float = 0.0) -> float:
    """Population CCQL(w) of the linear classifier Theta (K x d); w = 0 gives QL. Exact.

    = 1/(2K) sum_{i,k} c_ik [(delta_ik - theta_i^T mu_k)^2 + sigma^2 ||theta_i||^2],
    c_ik = 1 + w [i = k].
    """
    M, sigma, w = _check_M(M), _check_sigma(sigma), _check_w(w)
    K = M.shape[0]
    R = np.eye(K) - Theta @ M.T                       # R[i, k] = delta_ik - theta_i^T mu_k
    weighted = R ** 2 + w * np.diag(np.diag(R) ** 2)
    noise = sigma ** 2 * (K + w) * np.sum(Theta ** 2)
    return float((weighted.sum() + noise) / (2.0 * K))


def population_quadratic_grad(Theta: np.ndarray, M: np.ndarray, sigma: float,
                              w: float = 0.0) -> np.ndarray:
    """Gradient (K x d) of `population_quadratic_loss` with respect to Theta."""
    K = M.shape[0]
    R = np.eye(K) - Theta @ M.T
    C = 1.0 + w * np.eye(K)
    return (-(C * R) @ M + sigma ** 2 * (K + w) * Theta) / K


def numerical_rank(M: np.ndarray) -> int:
    """rank(M) with numpy's default SVD tolerance."""
    return int(np.linalg.matrix_rank(_check_M(M)))


def ql_population_minimizer(M: np.ndarray, sigma: float) -> np.ndarray:
    """Theta* = M (M^T M + K sigma^2 I_d)^{-1} (K x d); for sigma = 0 the min-norm M^+ (pinv)."""
    M, sigma = _check_M(M), _check_sigma(sigma)
    K, d = M.shape
    if sigma == 0.0:
        return np.linalg.pinv(M).T
    return np.linalg.solve(M.T @ M + K * sigma ** 2 * np.eye(d), M.T).T


def ql_population_min(M: np.ndarray, sigma: float) -> float:
    """min_Theta population QL = 1/2 sum_k sigma^2 / (lambda_k + K sigma^2) (Lemma 3.4, corrected).

    lambda_k: eigenvalues of M M^T (K x K). For sigma = 0 the limit 1/2 (1 - rank(M)/K).
    """
    M, sigma = _check_M(M), _check_sigma(sigma)
    K = M.shape[0]
    if sigma == 0.0:
        return 0.5 * (1.0 - numerical_rank(M) / K)
    lam = np.clip(np.linalg.eigvalsh(M @ M.T)[::-1], 0.0, None)   # K - rank(M) of them are 0
    return float(0.5 * np.sum(sigma ** 2 / (lam + K * sigma ** 2)))


def ql_normalized_min(M: np.ndarray, sigma: float) -> float:
    """min QL divided by its value at Theta = 0 (1/2)."""
    return ql_population_min(M, sigma) / zero_output_loss("ql", _check_M(M).shape[0])


def ql_rank_bound(M: np.ndarray) -> float:
    """Lower bound on normalized min QL: 1 - rank(M)/K (any sigma); 1 - min(K, d)/K generically."""
    M = _check_M(M)
    return 1.0 - numerical_rank(M) / M.shape[0]


def ccql_at_centers(M: np.ndarray, sigma: float, w: float) -> float:
    """Population CCQL(w) at Theta = M (Lemma 3.5): 1/2 (||MM^T - I||_F^2/K + K sigma^2) + w sigma^2/2.

    Exact for unit-norm centers (the noise term uses ||M||_F^2 = K).
    """
    M, sigma, w = _check_M(M), _check_sigma(sigma), _check_w(w)
    K = M.shape[0]
    off = np.linalg.norm(M @ M.T - np.eye(K)) ** 2
    return float(0.5 * (off / K + K * sigma ** 2) + 0.5 * w * sigma ** 2)


def _ccql_row_systems(M: np.ndarray, sigma: float, w: float, intercept: bool):
    """Row-decoupled normal equations: A (K x p x p), b (K x p), c_t (scalar E[c t^2] per row).

    p = d (+1 with an intercept feature fixed to 1). Row i minimises
    1/2 E[c_i (t_i - theta_i^T x)^2] = 1/2 (c_t - 2 b_i^T theta_i + theta_i^T A_i theta_i).
    """
    K, d = M.shape
    if intercept:
        Mx = np.hstack([M, np.ones((K, 1))])
        noise = np.diag(np.r_[np.full(d, sigma ** 2), 0.0])
    else:
        Mx = M
        noise = sigma ** 2 * np.eye(d)
    p = Mx.shape[1]
    second = Mx[:, :, None] * Mx[:, None, :] + noise[None]   # K x p x p: E[x x^T | k]
    base = second.sum(axis=0)                                 # sum over classes
    A = (base[None] + w * second) / K
    b = (1.0 + w) / K * Mx
    c_t = (1.0 + w) / K
    return A, b, c_t, p


def ccql_population_optimum(M: np.ndarray, sigma: float, w: float,
                            intercept: bool = False) -> tuple[np.ndarray, float]:
    """Exact population CCQL(w) minimiser and minimum: (Theta (K x d, or K x (d+1)), min loss).

    Rows decouple: theta_i = A_i^{-1} b_i (weighted least squares). With intercept=True the
    classifier is f(x) = Theta [x; 1] (last column = bias), which can output all-ones exactly.
    For singular A_i (sigma = 0, K < d) the min-norm solution (lstsq) is returned.
    """
    M, sigma, w = _check_M(M), _check_sigma(sigma), _check_w(w)
    A, b, c_t, p = _ccql_row_systems(M, sigma, w, intercept)
    if sigma > 0.0:   # every A_i is positive definite
        Theta = np.linalg.solve(A, b[:, :, None])[:, :, 0]
    else:
        Theta = np.stack([np.linalg.lstsq(A[i], b[i], rcond=None)[0] for i in range(len(b))])
    per_row = 0.5 * (c_t - np.einsum("ip,ip->i", b, Theta))
    return Theta, float(np.sum(per_row))


def ccql_population_min(M: np.ndarray, sigma: float, w: float) -> float:
    """min_Theta population CCQL(w) for f(x) = Theta x (exact, row-decoupled weighted LS)."""
    return ccql_population_optimum(M, sigma, w)[1]


def ccql_normalized_min(M: np.ndarray, sigma: float, w: float, intercept: bool = False) -> float:
    """min CCQL(w) divided by its value at Theta = 0 ((w + 1)/2)."""
    value = ccql_population_optimum(M, sigma, w, intercept)[1]
    return value / zero_output_loss("ccql", _check_M(M).shape[0], w)


def ccql_large_w_limit(sigma: float) -> float:
    """Limit of normalized min CCQL as w -> inf for f = Theta x (no intercept): sigma^2/(1+sigma^2).

    Each row tends to mu_i/(1 + sigma^2), the best linear predictor of 1 on class i alone.
    """
    sigma = _check_sigma(sigma)
    return sigma ** 2 / (1.0 + sigma ** 2)


def ccql_population_min_generic(M: np.ndarray, sigma: float, w: float,
                                Theta0: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Population CCQL minimised by a generic solver (scipy L-BFGS on all K*d entries).

    Independent check of `ccql_population_optimum`: returns (Theta, min loss).
    """
    from scipy.optimize import minimize
    M, sigma, w = _check_M(M), _check_sigma(sigma), _check_w(w)
    K, d = M.shape
    x0 = np.zeros(K * d) if Theta0 is None else np.asarray(Theta0, float).ravel()

    def fun(v):
        T = v.reshape(K, d)
        return (population_quadratic_loss(T, M, sigma, w),
                population_quadratic_grad(T, M, sigma, w).ravel())

    res = minimize(fun, x0, jac=True, method="L-BFGS-B",
                   options={"maxiter": 20000, "gtol": 1e-13, "ftol": 1e-15, "maxcor": 30})
    return res.x.reshape(K, d), float(res.fun)


def ce_lemma32_construction(M: np.ndarray, R: float) -> np.ndarray:
    """Theta = R M (K x d): row k = R mu_k, ||Theta||_F = R sqrt(K) for unit centers."""
    M = _check_M(M)
    if R < 0:
        raise ValueError(f"norm budget R must be >= 0, got {R!r}")
    return float(R) * M


def ce_lemma32_bound(K: int, R: float, gamma: float) -> float:
    """Per-sample CE bound of Lemma 3.2 at Theta = R M: log(1 + (K - 1) exp(-R gamma)) (nats)."""
    K = _check_K(K)
    return float(np.log1p((K - 1) * np.exp(-float(R) * float(gamma))))


def ce_lemma32_radius(K: int, gamma: float, eps: float) -> float:
    """Smallest R of Lemma 3.2 for target CE eps: R = log(K/eps)/gamma (needs gamma > 0)."""
    if gamma <= 0:
        raise ValueError(f"margin gamma must be > 0 for Lemma 3.2, got {gamma!r}")
    return float(np.log(_check_K(K) / eps) / gamma)


def adversarial_noise(M: np.ndarray, y: np.ndarray, gamma: float) -> np.ndarray:
    """Lemma 3.2's worst bounded noise for labels y: z = -gamma (mu_y - mu_k) / ||mu_y - mu_k||,
    toward the center mu_k nearest to mu_y (||z|| = gamma). Random noise almost never points at a
    neighbour, so only this makes a check of the bound able to fail."""
    M = _check_M(M)
    G = M @ M.T
    np.fill_diagonal(G, -np.inf)
    nearest = G.argmax(axis=1)[np.asarray(y)]
    diff = M[np.asarray(y)] - M[nearest]
    return -float(gamma) * diff / np.linalg.norm(diff, axis=1, keepdims=True)


def lemma33_success_bound(K: int, n: int, gamma: float, sigma: float) -> float:
    """Lemma 3.3 with its constant for Gaussian noise N(0, sigma^2 I): the margin event
    |z^T mu_k| <= gamma fails for one (sample, class) with probability 2 Phi(-gamma/sigma) <=
    2 exp(-gamma^2 / (2 sigma^2)), so by the union bound all n samples keep CE <=
    log(1 + (K - 1) exp(-R gamma)) with probability >= 1 - 2 K n exp(-gamma^2 / (2 sigma^2))
    (the paper's 1 - K n exp(-c gamma^2 / sigma^2) with c = 1/2 and the factor 2 of two tails)."""
    K, sigma = _check_K(K), _check_sigma(sigma)
    if sigma == 0:
        return 1.0
    return float(1.0 - 2 * K * int(n) * math.exp(-float(gamma) ** 2 / (2 * sigma ** 2)))


def lemma33_monte_carlo(M: np.ndarray, n: int, sigma: float, R: float, trials: int,
                        seed=0) -> dict[str, float]:
    """Lemma 3.3 by simulation: `trials` data sets of n Gaussian-noise samples. Returns the fraction
    in which the margin event holds for every (sample, class), the fraction in which every sample's
    CE at Theta = R M is within Lemma 3.2's bound (at least the former: the event implies it), and
    whether the CE bound held in every trial where the event held."""
    M = _check_M(M)
    K, d = M.shape
    gamma = center_margin(M)
    bound = ce_lemma32_bound(K, R, gamma)
    rng = _rng(seed)
    event = claim = implied = 0
    for _ in range(int(trials)):
        y = rng.integers(0, K, size=int(n))
        z = _check_sigma(sigma) * rng.standard_normal((int(n), d))
        holds = bool(np.abs(z @ M.T).max() <= gamma)
        ok = bool(per_sample_loss(float(R) * M, M[y] + z, y, "ce").max() <= bound + 1e-12)
        event, claim, implied = event + holds, claim + ok, implied + (ok or not holds)
    return {"event": event / trials, "ce_within_bound": claim / trials,
            "implication_held": implied == trials, "gamma": gamma, "trials": int(trials)}


def lemma35_printed_bound(M: np.ndarray, sigma: float) -> float:
    """The bound as the paper prints it: ||M M^T - I_K||_F^2 / K + K sigma^2 (no w, no 1/2)."""
    M, sigma = _check_M(M), _check_sigma(sigma)
    K = M.shape[0]
    return float(np.linalg.norm(M @ M.T - np.eye(K)) ** 2 / K + K * sigma ** 2)


def lemma35_printed_holds_below(M: np.ndarray, sigma: float, w_max: float = 1e8) -> float:
    """The largest w at which min CCQL(w) <= the printed Lemma 3.5 bound (inf if it holds up to
    w_max). min CCQL grows with w (it adds (w/2)(1 - f_y)^2 >= 0) toward sigma^2 w / (2 (1 +
    sigma^2)) + ..., while the printed bound has no w: for sigma > 0 it fails for large w, so
    the bound is true only below this weight."""
    M, sigma = _check_M(M), _check_sigma(sigma)
    bound = lemma35_printed_bound(M, sigma)
    holds = lambda w: ccql_population_min(M, sigma, w) <= bound
    if holds(w_max):
        return math.inf
    if not holds(0.0):
        return 0.0
    lo, hi = 0.0, math.log1p(w_max)  # bisection on u = log(1 + w): holds at lo, fails at hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if holds(math.expm1(mid)) else (lo, mid)
    return float(math.expm1(lo))


# --- Empirical losses, gradients and fits ----------------------------------------------------
def _logsumexp(F: np.ndarray) -> np.ndarray:
    m = F.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(F - m).sum(axis=1, keepdims=True)))[:, 0]


def per_sample_loss(Theta: np.ndarray, X: np.ndarray, y: np.ndarray, loss: str,
                    w: float = 0.0) -> np.ndarray:
    """Per-sample loss (n,) of f(x) = Theta x on samples X (n x d), labels y (n,)."""
    _check_loss(loss)
    F = X @ Theta.T
    idx = np.arange(len(y))
    if loss == "ce":
        return _logsumexp(F) - F[idx, y]
    E = F.copy()
    E[idx, y] -= 1.0
    value = 0.5 * np.sum(E ** 2, axis=1)
    if loss == "ccql":
        value = value + 0.5 * w * E[idx, y] ** 2
    return value


def empirical_loss(Theta, X, y, loss: str, w: float = 0.0, normalized: bool = False) -> float:
    """Mean loss over the samples; if normalized, divided by its value at f = 0."""
    value = float(np.mean(per_sample_loss(Theta, X, y, loss, w)))
    return value / zero_output_loss(loss, _check_K(Theta.shape[0]), w) if normalized else value


def loss_and_grad(Theta: np.ndarray, X: np.ndarray, y: np.ndarray, loss: str,
                  w: float = 0.0) -> tuple[float, np.ndarray]:
    """Mean loss and its gradient (K x d) with respect to Theta (K x d) on samples X (n x d)."""
    _check_loss(loss)
    n = len(y)
    F = X @ Theta.T
    idx = np.arange(n)
    if loss == "ce":
        lse = _logsumexp(F)
        value = float(np.mean(lse - F[idx, y]))
        G = np.exp(F - lse[:, None])
        G[idx, y] -= 1.0
    else:
        G = F.copy()
        G[idx, y] -= 1.0
        value = 0.5 * np.sum(G ** 2, axis=1)
        if loss == "ccql":
            value = value + 0.5 * w * G[idx, y] ** 2
            G[idx, y] *= (1.0 + w)
        value = float(np.mean(value))
    return value, G.T @ X / n


def _outputs(Theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """f(x) for every sample (n x K); Theta is K x d, or K x (d + 1) with a bias last column."""
    if Theta.shape[1] == X.shape[1] + 1:
        return X @ Theta[:, :-1].T + Theta[:, -1]
    return X @ Theta.T


def accuracy(Theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """Fraction of samples with argmax_k f(x)_k == y (Theta may carry a bias column)."""
    return float(np.mean(np.argmax(_outputs(Theta, X), axis=1) == y))


def output_statistics(Theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Mean margin f_y - max_{i != y} f_i and mean wrong-class output f_i (i != y) over samples.

    Theta is K x d or K x (d + 1) (last column a bias). An all-ones classifier has margin 0 and
    wrong-class output 1.
    """
    F = _outputs(Theta, X)
    n, K = F.shape
    idx = np.arange(n)
    correct = F[idx, y]
    others = F.copy()
    others[idx, y] = -np.inf
    off_mean = (F.sum(axis=1) - correct) / (K - 1)
    return {"margin": float(np.mean(correct - others.max(axis=1))),
            "wrong_class_output": float(np.mean(off_mean))}


def ql_least_squares(X: np.ndarray, y: np.ndarray, K: int) -> np.ndarray:
    """Empirical QL minimiser Theta (K x d) on n samples: one-hot least squares (lstsq)."""
    Y = np.eye(_check_K(K))[y]
    return np.linalg.lstsq(X, Y, rcond=None)[0].T


def ccql_least_squares(X: np.ndarray, y: np.ndarray, K: int, w: float) -> np.ndarray:
    """Empirical CCQL(w) minimiser Theta (K x d): row i is LS with weight 1 + w on class-i samples."""
    K, w = _check_K(K), _check_w(w)
    n, d = X.shape
    base = X.T @ X
    Theta = np.empty((K, d))
    for i in range(K):
        Xi = X[y == i]
        A = base + w * Xi.T @ Xi
        b = (1.0 + w) * Xi.sum(axis=0)
        Theta[i] = np.linalg.lstsq(A, b, rcond=None)[0]
    return Theta


def class_means(X: np.ndarray, y: np.ndarray, K: int) -> np.ndarray:
    """Per-class sample means (K x d); a class without samples gets a zero row."""
    K = _check_K(K)
    sums = np.zeros((K, X.shape[1]))
    np.add.at(sums, y, X)
    counts = np.bincount(y, minlength=K)[:, None]
    return sums / np.maximum(counts, 1)


def smoothness(X: np.ndarray, y: np.ndarray, K: int, loss: str, w: float = 0.0) -> float:
    """Upper bound L on the Hessian of the mean loss in Theta, so GD with step 1/L is monotone.

    QL: lambda_max(X^T X / n); CCQL: max_i lambda_max((X^T X + w X_i^T X_i)/n);
    CE: lambda_max(X^T X / n) / 2 (softmax Hessian <= I/2 in logit space).
    """
    _check_loss(loss)
    n = len(y)
    S = X.T @ X / n
    top = float(np.linalg.eigvalsh(S)[-1])
    if loss == "ce":
        return 0.5 * top
    if loss == "ql" or w == 0:
        return top
    return max(float(np.linalg.eigvalsh(S + w * X[y == i].T @ X[y == i] / n)[-1])
               for i in range(K))


def ce_fit_norm_budget(X: np.ndarray, y: np.ndarray, K: int, R: float, iters: int = 200,
                       Theta0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CE trained within the norm budget ||Theta||_F <= R sqrt(K): projected GD, step 1/L.

    Returns (Theta, losses) with losses (iters + 1,) the mean CE per step (non-increasing).
    """
    K = _check_K(K)
    radius = float(R) * math.sqrt(K)
    Theta = np.zeros((K, X.shape[1])) if Theta0 is None else np.array(Theta0, dtype=float)
    step = 1.0 / smoothness(X, y, K, "ce")
    losses = []
    for _ in range(int(iters)):
        value, G = loss_and_grad(Theta, X, y, "ce")
        losses.append(value)
        Theta = Theta - step * G
        norm = np.linalg.norm(Theta)
        if norm > radius:
            Theta *= radius / norm
    losses.append(loss_and_grad(Theta, X, y, "ce")[0])
    return Theta, np.asarray(losses)


def gradient_descent(X: np.ndarray, y: np.ndarray, K: int, loss: str, iters: int,
                     w: float = 0.0, lr: float | None = None, X_test=None, y_test=None,
                     record_at: Iterable[int] | None = None) -> pd.DataFrame:
    """Full-batch GD on f = Theta x from Theta = 0 for one loss, step lr (default 1/L, see
    `smoothness`). Records the iterations in record_at (default: every one): columns
    iteration, train_loss, train_loss_norm (/ `zero_output_loss`), train_acc, test_acc (NaN
    without test data)."""
    _check_loss(loss)
    K = _check_K(K)
    w = _check_w(w) if loss == "ccql" else 0.0
    step = 1.0 / smoothness(X, y, K, loss, w) if lr is None else float(lr)
    ref = zero_output_loss(loss, K, w)
    record = set(range(int(iters) + 1)) if record_at is None else {int(t) for t in record_at}
    Theta = np.zeros((K, X.shape[1]))
    rows = []
    for t in range(int(iters) + 1):
        value, G = loss_and_grad(Theta, X, y, loss, w)
        if t in record:
            rows.append({"iteration": t, "train_loss": value, "train_loss_norm": value / ref,
                         "train_acc": accuracy(Theta, X, y),
                         "test_acc": accuracy(Theta, X_test, y_test) if X_test is not None
                         else float("nan")})
        if t < iters:
            Theta = Theta - step * G
    return pd.DataFrame(rows)


