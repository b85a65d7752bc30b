"""The linear classifiers of `theory` on samples: per-sample losses and their gradients,
accuracy, least-squares fits (the empirical QL and CCQL minimisers), CE within a norm budget by
projected gradient descent, and full-batch gradient descent for each loss.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd

from ..reference import zero_output_loss
from .model import _check_K, _check_loss, _check_w


def _loss_terms(Theta: np.ndarray, X: np.ndarray, y: np.ndarray, loss: str,
                w: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample loss (n,) and its gradient in the outputs f = Theta x (n x K)."""
    _check_loss(loss)
    F = X @ Theta.T
    idx = np.arange(len(y))
    if loss == "ce":
        m = F.max(axis=1, keepdims=True)
        lse = m + np.log(np.exp(F - m).sum(axis=1, keepdims=True))   # stable log-sum-exp
        G = np.exp(F - lse)
        G[idx, y] -= 1.0
        return lse[:, 0] - F[idx, y], G
    G = F.copy()
    G[idx, y] -= 1.0
    value = 0.5 * np.sum(G ** 2, axis=1)
    if loss == "ccql":
        value = value + 0.5 * w * G[idx, y] ** 2
        G[idx, y] *= (1.0 + w)
    return value, G


def per_sample_loss(Theta: np.ndarray, X: np.ndarray, y: np.ndarray, loss: str,
                    w: float = 0.0) -> np.ndarray:
    """Per-sample loss (n,) of f(x) = Theta x on samples X (n x d), labels y (n,)."""
    return _loss_terms(Theta, X, y, loss, w)[0]


def empirical_loss(Theta, X, y, loss: str, w: float = 0.0, normalized: bool = False) -> float:
    """Mean loss over the samples; if normalized, divided by its value at f = 0."""
    value = float(np.mean(per_sample_loss(Theta, X, y, loss, w)))
    return value / zero_output_loss(loss, _check_K(Theta.shape[0]), w) if normalized else value


def loss_and_grad(Theta: np.ndarray, X: np.ndarray, y: np.ndarray, loss: str,
                  w: float = 0.0) -> tuple[float, np.ndarray]:
    """Mean loss and its gradient (K x d) with respect to Theta (K x d) on samples X (n x d)."""
    value, G = _loss_terms(Theta, X, y, loss, w)
    return float(np.mean(value)), G.T @ X / len(y)


def _outputs(Theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """f(x) for every sample (n x K); Theta is K x d, or K x (d + 1) with a bias last column."""
    if Theta.shape[1] == X.shape[1] + 1:
        return X @ Theta[:, :-1].T + Theta[:, -1]
    return X @ Theta.T


def accuracy(Theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """Fraction of samples with argmax_k f(x)_k == y (Theta may carry a bias column)."""
    return float(np.mean(np.argmax(_outputs(Theta, X), axis=1) == y))


def output_statistics(Theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Mean margin f_y - max_{i != y} f_i and mean wrong-class output f_i (i != y) over samples
    (Theta may carry a bias column); an all-ones classifier has margin 0 and wrong-class output 1."""
    F = _outputs(Theta, X)
    n, K = F.shape
    idx = np.arange(n)
    correct = F[idx, y]
    others = F.copy()
    others[idx, y] = -np.inf
    return {"margin": float(np.mean(correct - others.max(axis=1))),
            "wrong_class_output": float(np.mean((F.sum(axis=1) - correct) / (K - 1)))}


def ql_least_squares(X: np.ndarray, y: np.ndarray, K: int) -> np.ndarray:
    """Empirical QL minimiser Theta (K x d) on n samples: one-hot least squares (lstsq)."""
    Y = np.eye(_check_K(K))[y]
    return np.linalg.lstsq(X, Y, rcond=None)[0].T


def ccql_least_squares(X: np.ndarray, y: np.ndarray, K: int, w: float) -> np.ndarray:
    """Empirical CCQL(w) minimiser Theta (K x d): row i is LS with weight 1 + w on class-i samples."""
    K, w = _check_K(K), _check_w(w)
    base = X.T @ X
    Theta = np.empty((K, X.shape[1]))
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
    """Upper bound L on the Hessian of the mean loss in Theta, so GD with step 1/L is monotone:
    QL: lambda_max(X^T X / n); CCQL: max_i lambda_max((X^T X + w X_i^T X_i)/n);
    CE: lambda_max(X^T X / n) / 2 (softmax Hessian <= I/2 in logit space)."""
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
    """CE trained within the norm budget ||Theta||_F <= R sqrt(K) by projected GD, step 1/L:
    returns (Theta, losses), losses (iters + 1,) the mean CE per step (non-increasing)."""
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
                     w: float = 0.0, X_test=None, y_test=None,
                     record_at: Iterable[int] | None = None) -> pd.DataFrame:
    """Full-batch GD on f = Theta x from Theta = 0 for one loss, step 1/L (see `smoothness`).
    Records the iterations in record_at (default: every one): columns iteration, train_loss,
    train_loss_norm (/ `zero_output_loss`), train_acc, test_acc (NaN without test data)."""
    K = _check_K(K)
    w = _check_w(w) if loss == "ccql" else 0.0
    step = 1.0 / smoothness(X, y, K, loss, w)
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
