"""Section III theory: K-class mixtures, linear classifiers, CE vs QL vs CCQL (numpy, float64).

Conventions follow REPRODUCTION.md, "Theory (Section III), corrected":

* Centers: M is K x d, row k = mu_k (unit norm). Mixture: y uniform on {0..K-1}, x = mu_y + z,
  E z = 0, Cov z = sigma^2 I_d. "Bounded" noise: z uniform on the sphere of radius
  sigma * sqrt(d) (so Cov z = sigma^2 I_d and ||z|| = sigma sqrt(d) exactly).
* Linear classifier f(x) = Theta x, Theta is K x d (optionally with an intercept column, see
  `ccql_population_optimum`).
* Per-sample losses: CE = -log softmax(f)[y]; QL = 1/2 ||onehot(y) - f||^2;
  CCQL(w) = QL + (w/2) (1 - f_y)^2. Reference values at f = 0 ("normalized" = loss / reference):
  log K, 1/2 and (w + 1)/2.

Closed forms (population, i.e. expectations over the mixture):

* QL (Lemma 3.4, corrected): Theta* = M (M^T M + K sigma^2 I_d)^{-1},
  min QL = 1/2 sum_k sigma^2 / (lambda_k + K sigma^2), lambda_k the K eigenvalues of M M^T;
  normalized min >= 1 - rank(M)/K.
* CE (Lemma 3.2): Theta = R M; on a bounded mixture with margin gamma (|mu_i^T mu_j| <= 1 - 3 gamma,
  ||z|| <= gamma) every sample has CE <= log(1 + (K - 1) exp(-R gamma)).
* CCQL at Theta = M (Lemma 3.5): 1/2 (||M M^T - I_K||_F^2 / K + K sigma^2) + (w/2) sigma^2.
* Exact CCQL optimum: rows decouple, theta_i = A_i^{-1} b_i with
  A_i = (1/K) sum_k (1 + w [k = i]) (mu_k mu_k^T + sigma^2 I_d), b_i = ((1 + w)/K) mu_i.

Empirical counterparts: least squares for QL/CCQL, CE by projected GD within its norm budget,
full-batch GD for each loss. The `*_frame` functions and `verification_table` build the data
behind notebooks/00_theory.ipynb (they run with OpenBLAS capped at one thread, see
`blas_threads`).

Everything is seeded through numpy Generators; no function touches global random state.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

LOSSES = ("ce", "ql", "ccql")
NOISE_KINDS = ("gaussian", "bounded")
CENTER_KINDS = ("random", "equicorrelated")


# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------
def _check_K(K) -> int:
    if int(K) != K or K < 2:
        raise ValueError(f"number of classes K must be an integer >= 2, got {K!r}")
    return int(K)


def _check_d(d) -> int:
    if int(d) != d or d < 1:
        raise ValueError(f"dimension d must be an integer >= 1, got {d!r}")
    return int(d)


def _check_sigma(sigma) -> float:
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"noise level sigma must be finite and >= 0, got {sigma!r}")
    return sigma


def _check_rho(rho) -> float:
    rho = float(rho)
    if not (0.0 <= rho < 1.0):
        raise ValueError(f"center correlation rho must be in [0, 1), got {rho!r}")
    return rho


def _check_w(w) -> float:
    w = float(w)
    if not np.isfinite(w) or w < 0:
        raise ValueError(f"CCQL weight w must be finite and >= 0, got {w!r}")
    return w


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


def _openblas_thread_controls() -> list[tuple]:
    """(get, set) thread-count functions of every OpenBLAS loaded in this process (Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()
                     and line.split()[-1].startswith("/")}
    except OSError:
        return []
    names = [(f"{prefix}_get_num_threads{suffix}", f"{prefix}_set_num_threads{suffix}")
             for prefix in ("scipy_openblas", "openblas") for suffix in ("64_", "")]
    controls = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        found = [(getattr(lib, get), getattr(lib, set_)) for get, set_ in names
                 if hasattr(lib, get) and hasattr(lib, set_)]
        controls.extend(found[:1])
    return controls


@contextlib.contextmanager
def blas_threads(n_threads: int = 1):
    """Temporarily cap OpenBLAS threads. The matrices here are small (n x K, K, d <= a few
    thousand), where BLAS threads only add overhead, and on a CPU shared with another job a
    spinning thread pool can make them 10x slower. No-op where OpenBLAS cannot be found."""
    controls = _openblas_thread_controls()
    previous = [get() for get, _ in controls]
    for _, set_ in controls:
        set_(int(n_threads))
    try:
        yield
    finally:
        for (_, set_), count in zip(controls, previous):
            set_(int(count))


def _single_blas_thread(function):
    """Run `function` inside `blas_threads(1)`."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with blas_threads(1):
            return function(*args, **kwargs)
    return wrapper


def default_ccql_weight(K: int) -> float:
    """The paper's CCQL weight w = sqrt(K - 1) - 1 (so CCQL = QL at K = 2)."""
    return math.sqrt(_check_K(K) - 1) - 1.0


# ----------------------------------------------------------------------------------------------
# Mixture sampling
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# Population losses and closed forms
# ----------------------------------------------------------------------------------------------
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


def ql_population_eigenvalues(M: np.ndarray) -> np.ndarray:
    """The K eigenvalues of M M^T (descending, clipped at 0); K - rank(M) of them are 0."""
    M = _check_M(M)
    lam = np.linalg.eigvalsh(M @ M.T)[::-1]
    return np.clip(lam, 0.0, None)


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
    lam = ql_population_eigenvalues(M)
    return float(0.5 * np.sum(sigma ** 2 / (lam + K * sigma ** 2)))


def ql_normalized_min(M: np.ndarray, sigma: float) -> float:
    """min QL divided by its reference 1/2 (value at Theta = 0)."""
    return 2.0 * ql_population_min(M, sigma)


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
    """min CCQL(w) divided by its reference (w + 1)/2."""
    return ccql_population_optimum(M, sigma, w, intercept)[1] * 2.0 / (float(w) + 1.0)


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


# ----------------------------------------------------------------------------------------------
# Empirical losses, gradients and fits
# ----------------------------------------------------------------------------------------------
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


def reference_loss(loss: str, K: int, w: float = 0.0) -> float:
    """Loss at f = 0: log K (CE), 1/2 (QL), (w + 1)/2 (CCQL)."""
    _check_loss(loss)
    return {"ce": math.log(_check_K(K)), "ql": 0.5, "ccql": 0.5 * (float(w) + 1.0)}[loss]


def empirical_loss(Theta, X, y, loss: str, w: float = 0.0, normalized: bool = False) -> float:
    """Mean loss over the samples; divided by `reference_loss` if normalized."""
    value = float(np.mean(per_sample_loss(Theta, X, y, loss, w)))
    return value / reference_loss(loss, Theta.shape[0], w) if normalized else value


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


def accuracy(Theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """Fraction of samples with argmax_k (Theta x)_k == y (Theta may carry a bias column)."""
    if Theta.shape[1] == X.shape[1] + 1:
        F = X @ Theta[:, :-1].T + Theta[:, -1]
    else:
        F = X @ Theta.T
    return float(np.mean(np.argmax(F, axis=1) == y))


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
    iteration, train_loss, train_loss_norm (/ `reference_loss`), train_acc, test_acc (NaN
    without test data)."""
    _check_loss(loss)
    K = _check_K(K)
    w = _check_w(w) if loss == "ccql" else 0.0
    step = 1.0 / smoothness(X, y, K, loss, w) if lr is None else float(lr)
    ref = reference_loss(loss, K, w)
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


# ----------------------------------------------------------------------------------------------
# Data frames behind the notebook's table and figures
# ----------------------------------------------------------------------------------------------
DEFAULT_TABLE_CONFIGS = (
    # (K, d, sigma, rho, center kind)
    (10, 20, 0.1, 0.0, "equicorrelated"),
    (10, 20, 0.3, 0.5, "equicorrelated"),
    (20, 20, 0.1, 0.0, "random"),
    (50, 20, 0.1, 0.0, "random"),      # the REPRODUCTION.md check (0.3423 for its centers)
    (50, 20, 0.3, 0.3, "random"),
    (100, 10, 0.05, 0.0, "random"),
    (100, 10, 0.0, 0.0, "random"),
)


@_single_blas_thread
def verification_table(configs: Iterable[Sequence] = DEFAULT_TABLE_CONFIGS, n: int = 20000,
                       seed: int = 0, ce_eps: float = 0.01, n_ce: int = 2000) -> pd.DataFrame:
    """One row per (K, d, sigma, rho, kind): closed forms vs independent computations.

    Columns: ql_closed (eigenvalue formula), ql_normal_eq (population loss at the normal-equation
    solution), ql_mc (in-sample min QL of an n-sample LS fit), their relative errors,
    ql_bound (1/2 (1 - rank/K)); gamma, R = log(K/eps)/gamma, ce_bound and ce_max (largest
    per-sample CE at Theta = R M on n_ce bounded samples of radius gamma); ccql_exact,
    ccql_generic (L-BFGS) at w = sqrt(K-1) - 1 and their relative error; ccql_at_M (Lemma 3.5).
    """
    rows = []
    for j, (K, d, sigma, rho, kind) in enumerate(configs):
        rng = np.random.default_rng([seed, j])
        M = sample_centers(K, d, rho, kind, seed=rng)
        closed = ql_population_min(M, sigma)
        normal = population_quadratic_loss(ql_population_minimizer(M, sigma), M, sigma)
        X, y = sample_mixture(M, n, sigma, "gaussian", seed=rng)
        mc = empirical_loss(ql_least_squares(X, y, K), X, y, "ql")
        gamma = center_margin(M)
        R = ce_lemma32_radius(K, gamma, ce_eps)
        Xb, yb = sample_mixture(M, n_ce, gamma / math.sqrt(d), "bounded", seed=rng)
        ce_max = float(per_sample_loss(ce_lemma32_construction(M, R), Xb, yb, "ce").max())
        w = default_ccql_weight(K)
        ccql_exact = ccql_population_min(M, sigma, w)
        ccql_generic = ccql_population_min_generic(M, sigma, w)[1]
        rows.append({
            "K": K, "d": d, "sigma": sigma, "rho": rho, "centers": kind, "rank": numerical_rank(M),
            "ql_closed": closed, "ql_normal_eq": normal, "ql_mc": mc,
            "relerr_normal_eq": abs(normal - closed) / closed,
            "relerr_mc": abs(mc - closed) / closed,
            "ql_bound": 0.5 * ql_rank_bound(M),
            "gamma": gamma, "R": R, "ce_bound": ce_lemma32_bound(K, R, gamma), "ce_max": ce_max,
            "w": w, "ccql_exact": ccql_exact, "ccql_generic": ccql_generic,
            "relerr_ccql": abs(ccql_generic - ccql_exact) / ccql_exact,
            "ccql_at_M": ccql_at_centers(M, sigma, w),
        })
    return pd.DataFrame(rows)


def format_verification_table(table: pd.DataFrame) -> pd.DataFrame:
    """Strings stable across BLAS/thread counts: 4 significant digits; relative errors below
    1e-10 (normal equations) / 1e-6 (L-BFGS) shown as '< 1e-10' / '< 1e-6', Monte Carlo rounded
    to 1 significant digit; bound checks as 'yes'/'NO'."""
    def sig(x, digits=4):
        return f"{x:.{digits}g}"

    def small(x, threshold, label):
        return label if x < threshold else f"{x:.1g}"

    return pd.DataFrame({
        "K": table["K"], "d": table["d"], "sigma": table["sigma"], "rho": table["rho"],
        "centers": table["centers"], "rank": table["rank"],
        "QL closed": table["ql_closed"].map(sig),
        "QL normal eq": table["ql_normal_eq"].map(sig),
        "QL Monte Carlo": table["ql_mc"].map(sig),
        "rel err NE": table["relerr_normal_eq"].map(lambda x: small(x, 1e-10, "< 1e-10")),
        "rel err MC": table["relerr_mc"].map(lambda x: f"{x:.0e}" if x >= 1e-3 else "< 1e-3"),
        "QL >= bound": np.where(table["ql_closed"] >= table["ql_bound"] - 1e-12, "yes", "NO"),
        "bound": table["ql_bound"].map(sig),
        "CE bound": table["ce_bound"].map(lambda x: sig(x, 3)),
        "CE max <= bound": np.where(table["ce_max"] <= table["ce_bound"], "yes", "NO"),
        "CCQL exact": table["ccql_exact"].map(sig),
        "CCQL L-BFGS": table["ccql_generic"].map(sig),
        "rel err CCQL": table["relerr_ccql"].map(lambda x: small(x, 1e-6, "< 1e-6")),
        "CCQL at M": table["ccql_at_M"].map(sig),
    })


@_single_blas_thread
def min_loss_vs_k_frame(d: int, Ks: Sequence[int], sigmas: Sequence[float],
                        rhos: Sequence[float], R: float, n: int, seed: int = 0,
                        ce_iters: int = 0) -> pd.DataFrame:
    """Normalized minimal losses vs K at fixed d, random centers (nested in K for each rho).

    Long frame, columns: K, sigma, rho, quantity, value. Quantities: 'ql_min' (closed form),
    'rank_bound' (1 - rank/K), 'ccql_min' (exact, w = sqrt(K-1) - 1), 'ccql_at_M' (Lemma 3.5,
    normalized), 'ce_at_RM' (mean CE at Theta = R M on n Gaussian samples, / log K), and with
    ce_iters > 0 'ce_budget' (CE after projected GD within ||Theta||_F <= R sqrt K from R M).
    """
    d = _check_d(d)
    rows = []
    for rho in rhos:
        M_all = sample_centers(max(Ks), d, rho, "random", seed=np.random.default_rng([seed, 1]))
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
                add("ccql_at_M", ccql_at_centers(M, sigma, w) * 2.0 / (w + 1.0))
                X, y = sample_mixture(M, n, sigma, "gaussian",
                                      seed=np.random.default_rng([seed, 2, K]))
                Theta_RM = ce_lemma32_construction(M, R)
                add("ce_at_RM", empirical_loss(Theta_RM, X, y, "ce", normalized=True))
                if ce_iters > 0:
                    _, losses = ce_fit_norm_budget(X, y, K, R, ce_iters, Theta0=Theta_RM)
                    add("ce_budget", losses[-1] / math.log(K))
    return pd.DataFrame(rows)


def output_statistics(Theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Mean margin f_y - max_{i != y} f_i and mean wrong-class output f_i (i != y) over samples.

    Theta is K x d or K x (d + 1) (last column a bias). An all-ones classifier has margin 0 and
    wrong-class output 1.
    """
    if Theta.shape[1] == X.shape[1] + 1:
        F = X @ Theta[:, :-1].T + Theta[:, -1]
    else:
        F = X @ Theta.T
    n, K = F.shape
    idx = np.arange(n)
    correct = F[idx, y]
    others = F.copy()
    others[idx, y] = -np.inf
    off_mean = (F.sum(axis=1) - correct) / (K - 1)
    return {"margin": float(np.mean(correct - others.max(axis=1))),
            "wrong_class_output": float(np.mean(off_mean))}


@_single_blas_thread
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
        M = sample_centers(K, d, rho, "random", seed=np.random.default_rng([seed, 3]))
        X, y = sample_mixture(M, n_test, sigma, "gaussian", seed=np.random.default_rng([seed, 4, K]))
        nearest = accuracy(M, X, y)
        for w in ws:
            for model, intercept in (("linear", False), ("affine", True)):
                Theta, value = ccql_population_optimum(M, sigma, w, intercept)
                rows.append({"K": K, "w": float(w), "model": model,
                             "ccql_norm": value * 2.0 / (float(w) + 1.0),
                             "accuracy": accuracy(Theta, X, y), **output_statistics(Theta, X, y),
                             "large_w_limit": ccql_large_w_limit(sigma),
                             "nearest_center_acc": nearest})
    return pd.DataFrame(rows)


def record_iterations(iters: int, n_points: int = 40) -> np.ndarray:
    """Iterations 0..iters to record, roughly log-spaced (always includes 0, 1 and iters)."""
    points = np.unique(np.round(np.geomspace(1, max(int(iters), 1), n_points)).astype(int))
    return np.unique(np.r_[0, points, int(iters)])


@_single_blas_thread
def gd_dynamics_frame(d: int, Ks: Sequence[int], sigma: float, rho: float, n_train: int,
                      n_test: int, iters: int, n_record: int = 40, seed: int = 0) -> pd.DataFrame:
    """GD dynamics of linear classifiers with CE, QL, CCQL (w = sqrt(K-1) - 1) for each K.

    Each loss runs full-batch GD from Theta = 0 at step 1/L (its own smoothness bound) on the
    same n_train samples, recorded at ~n_record log-spaced iterations. Columns: K, loss,
    iteration, train_loss, train_loss_norm, train_acc, test_acc. Reference rows (iteration =
    iters): 'ql_ls_optimum' and 'ccql_ls_optimum' (exact empirical minimisers),
    'ql_population_optimum' and 'ccql_population_optimum' (closed forms; loss = population loss),
    'nearest_center' (oracle Theta = M, argmax_k mu_k^T x) and 'class_means' (Theta rows = the
    training class means); for these two the loss columns hold QL values.
    """
    frames = []
    record_at = record_iterations(iters, n_record)
    for K in Ks:
        M = sample_centers(K, d, rho, "random", seed=np.random.default_rng([seed, 5]))
        X, y = sample_mixture(M, n_train, sigma, "gaussian", seed=np.random.default_rng([seed, 6, K]))
        Xt, yt = sample_mixture(M, n_test, sigma, "gaussian", seed=np.random.default_rng([seed, 7, K]))
        w = default_ccql_weight(K)
        for loss in LOSSES:
            df = gradient_descent(X, y, K, loss, iters, w=w, X_test=Xt, y_test=yt,
                                  record_at=record_at)
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
            if name.endswith("population_optimum"):   # exact population loss
                value = population_quadratic_loss(Theta, M, sigma, w if loss == "ccql" else 0.0)
            else:
                value = empirical_loss(Theta, X, y, loss, w)
            frames.append(pd.DataFrame([{
                "K": K, "loss": name, "iteration": iters, "train_loss": value,
                "train_loss_norm": value / reference_loss(loss, K, w),
                "train_acc": accuracy(Theta, X, y), "test_acc": accuracy(Theta, Xt, yt)}]))
    return pd.concat(frames, ignore_index=True)


@_single_blas_thread
def least_squares_accuracy_vs_n(d: int, K: int, sigma: float, rho: float, ns: Sequence[int],
                                n_test: int, seed: int = 0) -> pd.DataFrame:
    """Test accuracy of the empirical QL and CCQL (w = sqrt(K-1) - 1) minimisers vs sample size.

    Same centers and test set as `gd_dynamics_frame` for this K and seed; the population
    optima and the nearest-center classifier are given as n = inf rows. Columns: n, ql_acc,
    ccql_acc, samples_per_class.
    """
    M = sample_centers(K, d, rho, "random", seed=np.random.default_rng([seed, 5]))
    Xt, yt = sample_mixture(M, n_test, sigma, "gaussian", seed=np.random.default_rng([seed, 7, K]))
    w = default_ccql_weight(K)
    rows = []
    for n in ns:
        X, y = sample_mixture(M, n, sigma, "gaussian", seed=np.random.default_rng([seed, 8, n]))
        rows.append({"n": n, "samples_per_class": n / K,
                     "ql_acc": accuracy(ql_least_squares(X, y, K), Xt, yt),
                     "ccql_acc": accuracy(ccql_least_squares(X, y, K, w), Xt, yt)})
    rows.append({"n": float("inf"), "samples_per_class": float("inf"),
                 "ql_acc": accuracy(ql_population_minimizer(M, sigma), Xt, yt),
                 "ccql_acc": accuracy(ccql_population_optimum(M, sigma, w)[0], Xt, yt)})
    frame = pd.DataFrame(rows)
    frame["nearest_center_acc"] = accuracy(M, Xt, yt)
    return frame
