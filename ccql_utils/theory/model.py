"""Section III of the paper: the K-class mixture and the population losses of linear
classifiers under CE, QL and CCQL (numpy float64), as corrected in docs/protocol.md, section 3.

* Mixture (Def. 3.1): M is K x d, row k = mu_k, ||mu_k|| = 1; y uniform on {0..K-1},
  x = mu_y + z, E z = 0, Cov z = sigma^2 I_d. Classifier f(x) = Theta x, Theta K x d (an
  intercept column optional).
* Losses: CE = -log softmax(f)[y]; QL = 1/2 ||onehot(y) - f||^2; CCQL(w) = QL + (w/2)(1 - f_y)^2;
  a normalized loss is divided by its value at f = 0 (`reference.zero_output_loss`).
* Closed forms (at their functions): QL's optimum (Lemma 3.4, corrected), CCQL's (not in the paper).

Everything is seeded through numpy Generators; nothing touches global random state.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from threadpoolctl import threadpool_limits

from ..reference import zero_output_loss

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


_check_K = functools.partial(_check_int, low=2, name="number of classes K")
_check_d = functools.partial(_check_int, low=1, name="dimension d")
_check_sigma = functools.partial(_check_real, name="noise level sigma")
_check_rho = functools.partial(_check_real, name="center correlation rho", high=1.0)
_check_w = functools.partial(_check_real, name="CCQL weight w")


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


def one_blas_thread(function):
    """Run `function` with BLAS capped at one thread: on these small matrices BLAS threads only
    add overhead, and on a shared CPU a spinning thread pool can make them ten times slower."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)
    return wrapper


# --- Mixture sampling ------------------------------------------------------------------------
def sample_centers(K: int, d: int, rho: float = 0.0, kind: str = "random",
                   seed=0) -> np.ndarray:
    """Unit class centers M (K x d, float64), rows mu_k with ||mu_k|| = 1.

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
    """n samples of the mixture with centers M (K x d): X (n x d) and iid uniform labels y (n,).
    noise="gaussian": z ~ N(0, sigma^2 I_d); noise="bounded": z uniform on the sphere of radius
    sigma sqrt(d) (the same covariance)."""
    M, sigma, n = _check_M(M), _check_sigma(sigma), _check_int(n, 1, "sample count n")
    K, d = M.shape
    rng = _rng(seed)
    y = rng.integers(0, K, size=n)
    g = rng.standard_normal((n, d))
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
    """Exact population CCQL(w) of the linear classifier Theta (K x d); w = 0 gives QL:
    1/(2K) sum_{i,k} c_ik [(delta_ik - theta_i^T mu_k)^2 + sigma^2 ||theta_i||^2], c_ik = 1 + w [i = k]."""
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
    """min_Theta population QL = 1/2 sum_k sigma^2 / (lambda_k + K sigma^2) (Lemma 3.4, corrected),
    lambda_k the eigenvalues of M M^T (K x K); for sigma = 0 the limit 1/2 (1 - rank(M)/K)."""
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


def ccql_population_optimum(M: np.ndarray, sigma: float, w: float,
                            intercept: bool = False) -> tuple[np.ndarray, float]:
    """Exact population CCQL(w) minimiser and minimum: (Theta (K x d, or K x (d+1)), min loss).

    Rows decouple (weighted least squares): theta_i = A_i^{-1} b_i with
    A_i = (1/K) sum_k (1 + w [k = i]) (mu_k mu_k^T + sigma^2 I_d), b_i = ((1 + w)/K) mu_i, and
    min = 1/2 sum_i ((1 + w)/K - b_i^T theta_i). With intercept=True, f(x) = Theta [x; 1] (last
    column = bias), which can output all-ones exactly. Singular A_i (sigma = 0, K < d): min-norm
    solution (lstsq).
    """
    M, sigma, w = _check_M(M), _check_sigma(sigma), _check_w(w)
    K, d = M.shape
    if intercept:   # a feature fixed to 1, without noise
        M = np.hstack([M, np.ones((K, 1))])
        noise = np.diag(np.r_[np.full(d, sigma ** 2), 0.0])
    else:
        noise = sigma ** 2 * np.eye(d)
    second = M[:, :, None] * M[:, None, :] + noise[None]     # K x p x p: E[x x^T | k]
    A = (second.sum(axis=0)[None] + w * second) / K
    b = (1.0 + w) / K * M
    if sigma > 0.0:   # every A_i is positive definite
        Theta = np.linalg.solve(A, b[:, :, None])[:, :, 0]
    else:
        Theta = np.stack([np.linalg.lstsq(A[i], b[i], rcond=None)[0] for i in range(K)])
    per_row = 0.5 * ((1.0 + w) / K - np.einsum("ip,ip->i", b, Theta))
    return Theta, float(np.sum(per_row))


def ccql_population_min(M: np.ndarray, sigma: float, w: float) -> float:
    """min_Theta population CCQL(w) for f(x) = Theta x (exact, row-decoupled weighted LS)."""
    return ccql_population_optimum(M, sigma, w)[1]


def ccql_normalized_min(M: np.ndarray, sigma: float, w: float, intercept: bool = False) -> float:
    """min CCQL(w) divided by its value at Theta = 0 ((w + 1)/2)."""
    value = ccql_population_optimum(M, sigma, w, intercept)[1]
    return value / zero_output_loss("ccql", _check_M(M).shape[0], w)


def ccql_large_w_limit(sigma: float) -> float:
    """Limit of normalized min CCQL as w -> inf for f = Theta x (no intercept): sigma^2/(1+sigma^2);
    each row tends to mu_i/(1 + sigma^2), the best linear predictor of 1 on class i alone."""
    sigma = _check_sigma(sigma)
    return sigma ** 2 / (1.0 + sigma ** 2)


def ccql_population_min_generic(M: np.ndarray, sigma: float, w: float) -> tuple[np.ndarray, float]:
    """Population CCQL minimised by a generic solver (scipy L-BFGS on all K*d entries from 0), an
    independent check of `ccql_population_optimum`: returns (Theta, min loss)."""
    from scipy.optimize import minimize
    M, sigma, w = _check_M(M), _check_sigma(sigma), _check_w(w)
    K, d = M.shape

    def fun(v):
        T = v.reshape(K, d)
        return (population_quadratic_loss(T, M, sigma, w),
                population_quadratic_grad(T, M, sigma, w).ravel())

    res = minimize(fun, np.zeros(K * d), jac=True, method="L-BFGS-B",
                   options={"maxiter": 20000, "gtol": 1e-13, "ftol": 1e-15, "maxcor": 30})
    return res.x.reshape(K, d), float(res.fun)
