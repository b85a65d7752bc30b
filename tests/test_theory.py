"""Tests of ccql_utils.theory.model: every closed form against brute force, bad parameters, GD."""
import math

import numpy as np
import pytest
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from ccql_utils.core.losses import default_ccql_weight, make_loss
from ccql_utils.theory.model import (
    ccql_large_w_limit, ccql_normalized_min, ccql_population_min, ccql_population_min_generic,
    ccql_population_optimum, center_margin, numerical_rank, population_quadratic_grad,
    population_quadratic_loss, ql_normalized_min, ql_population_min, ql_population_minimizer,
    ql_rank_bound, sample_centers, sample_mixture,
)
from ccql_utils.theory.empirical import (
    accuracy, ccql_least_squares, ce_fit_norm_budget, class_means, empirical_loss,
    gradient_descent, loss_and_grad, output_statistics, per_sample_loss, ql_least_squares,
)
from ccql_utils.theory.lemmas import (
    adversarial_noise, ccql_at_centers, ce_lemma32_bound, ce_lemma32_construction,
    ce_lemma32_radius, lemma33_monte_carlo, lemma33_success_bound, lemma35_printed_bound,
    lemma35_printed_holds_below,
)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Small matrices: BLAS threads only slow these tests down on a shared CPU."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# (K, d, sigma, rho, kind): K < d, K = d and rank-deficient K > d
SIZES = [(3, 5, 0.2, 0.0, "random"), (8, 12, 0.1, 0.4, "equicorrelated"),
         (10, 10, 0.3, 0.2, "random"), (30, 6, 0.1, 0.0, "random"), (40, 8, 0.5, 0.5, "random")]


def _brute_force_min(M, sigma, w):
    """Minimise the population CCQL(w) over all K*d entries with L-BFGS (no closed form used)."""
    K, d = M.shape
    res = minimize(lambda v: (population_quadratic_loss(v.reshape(K, d), M, sigma, w),
                              population_quadratic_grad(v.reshape(K, d), M, sigma, w).ravel()),
                   np.zeros(K * d), jac=True, method="L-BFGS-B",
                   options={"maxiter": 20000, "gtol": 1e-12, "ftol": 1e-15})
    return res.fun


# ----------------------------------------------------------------------------------------------
# Population loss itself (Monte Carlo) and its gradient (finite differences)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("w", [0.0, 2.5])
def test_population_loss_matches_monte_carlo(w):
    M = sample_centers(6, 4, 0.3, seed=1)
    Theta = np.random.default_rng(2).standard_normal((6, 4)) * 0.5
    X, y = sample_mixture(M, 200_000, 0.3, seed=3)
    mc = empirical_loss(Theta, X, y, "ccql" if w else "ql", w)
    assert mc == pytest.approx(population_quadratic_loss(Theta, M, 0.3, w), rel=0.01)


def test_population_gradient_matches_finite_differences():
    M = sample_centers(5, 3, 0.0, seed=4)
    Theta = np.random.default_rng(5).standard_normal((5, 3))
    G = population_quadratic_grad(Theta, M, 0.2, 1.5)
    eps = 1e-6
    for i, j in [(0, 0), (2, 1), (4, 2)]:
        E = np.zeros_like(Theta)
        E[i, j] = eps
        fd = (population_quadratic_loss(Theta + E, M, 0.2, 1.5)
              - population_quadratic_loss(Theta - E, M, 0.2, 1.5)) / (2 * eps)
        assert fd == pytest.approx(G[i, j], rel=1e-6, abs=1e-9)


# ----------------------------------------------------------------------------------------------
# QL (Lemma 3.4, corrected) and the rank bound
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("K,d,sigma,rho,kind", SIZES)
def test_ql_closed_form_matches_normal_equations_and_solver(K, d, sigma, rho, kind):
    M = sample_centers(K, d, rho, kind, seed=K + d)
    closed = ql_population_min(M, sigma)
    Theta = ql_population_minimizer(M, sigma)
    assert population_quadratic_loss(Theta, M, sigma) == pytest.approx(closed, rel=1e-10)
    assert np.abs(population_quadratic_grad(Theta, M, sigma)).max() < 1e-12
    assert _brute_force_min(M, sigma, 0.0) == pytest.approx(closed, rel=1e-7)
    # normalized minimum >= 1 - rank/K, strictly above it for sigma > 0
    assert ql_normalized_min(M, sigma) > ql_rank_bound(M)
    assert ql_rank_bound(M) == pytest.approx(1 - min(K, d) / K)


@pytest.mark.parametrize("K,d,sigma,rho,kind", SIZES[2:])
def test_ql_closed_form_matches_large_sample_least_squares(K, d, sigma, rho, kind):
    M = sample_centers(K, d, rho, kind, seed=7)
    X, y = sample_mixture(M, 100_000, sigma, seed=8)
    Theta = ql_least_squares(X, y, K)
    assert empirical_loss(Theta, X, y, "ql") == pytest.approx(ql_population_min(M, sigma), rel=0.02)
    assert np.abs(Theta - ql_population_minimizer(M, sigma)).max() < 0.05


def test_protocol_check_k50_d20():
    """docs/protocol.md, section 3.3: K=50, d=20, sigma=0.1, random: min QL ~ 0.34 >= 0.30."""
    M = sample_centers(50, 20, 0.0, "random", seed=2024)
    closed = ql_population_min(M, 0.1)
    normal = population_quadratic_loss(ql_population_minimizer(M, 0.1), M, 0.1)
    assert normal == pytest.approx(closed, rel=1e-10)
    X, y = sample_mixture(M, 200_000, 0.1, seed=2025)
    fit = empirical_loss(ql_least_squares(X, y, 50), X, y, "ql")
    assert fit == pytest.approx(closed, rel=0.01)
    assert 0.5 * (1 - 20 / 50) == pytest.approx(0.30)
    assert 0.30 < closed < 0.40          # 0.3452 for these centers


def test_ql_rank_deficient_and_sigma_limits():
    rng = np.random.default_rng(0)
    base = sample_centers(4, 10, 0.0, seed=rng)
    M = np.vstack([base, base[:2]])      # K = 6 < d = 10 but rank 4 (repeated centers)
    assert numerical_rank(M) == 4
    assert ql_rank_bound(M) == pytest.approx(1 - 4 / 6)
    assert ql_normalized_min(M, 0.0) == pytest.approx(1 - 4 / 6)
    assert ql_normalized_min(M, 1e-4) == pytest.approx(1 - 4 / 6, abs=1e-6)
    assert _brute_force_min(M, 0.2, 0.0) == pytest.approx(ql_population_min(M, 0.2), rel=1e-7)
    # sigma = 0 with K > d: the minimum is exactly the bound, and the pinv minimiser attains it
    M = sample_centers(25, 5, 0.0, seed=1)
    assert population_quadratic_loss(ql_population_minimizer(M, 0.0), M, 0.0) == \
        pytest.approx(0.5 * (1 - 5 / 25), rel=1e-10)
    # d fixed, K growing: normalized min QL tends to 1
    values = [ql_normalized_min(sample_centers(K, 5, 0.0, seed=3), 0.1) for K in (10, 100, 400)]
    assert values[0] < values[1] < values[2] and values[2] > 0.97


def test_ql_loss_grows_with_center_correlation():
    values = [ql_population_min(sample_centers(10, 20, rho, "equicorrelated", seed=0), 0.2)
              for rho in (0.0, 0.3, 0.6, 0.9)]
    assert all(a < b for a, b in zip(values, values[1:]))


# ----------------------------------------------------------------------------------------------
# CCQL: Lemma 3.5 and the exact row-decoupled optimum
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("K,d,sigma,rho,kind", SIZES)
@pytest.mark.parametrize("w", [0.0, 1.0, 7.0])
def test_ccql_exact_minimum_matches_solver(K, d, sigma, rho, kind, w):
    M = sample_centers(K, d, rho, kind, seed=K * d)
    Theta, exact = ccql_population_optimum(M, sigma, w)
    assert exact == pytest.approx(ccql_population_min(M, sigma, w))
    assert population_quadratic_loss(Theta, M, sigma, w) == pytest.approx(exact, rel=1e-10)
    assert np.abs(population_quadratic_grad(Theta, M, sigma, w)).max() < 1e-10
    assert _brute_force_min(M, sigma, w) == pytest.approx(exact, rel=1e-7)
    assert ccql_population_min_generic(M, sigma, w)[1] == pytest.approx(exact, rel=1e-7)
    # min QL <= min CCQL <= CCQL at Theta = M (Lemma 3.5); w = 0 is QL
    assert ql_population_min(M, sigma) <= exact + 1e-12
    assert exact <= ccql_at_centers(M, sigma, w) + 1e-12
    if w == 0:
        assert exact == pytest.approx(ql_population_min(M, sigma), rel=1e-10)


@pytest.mark.parametrize("K,d,sigma", [(5, 8, 0.2), (30, 6, 0.1)])
def test_ccql_at_centers_is_population_loss_at_M(K, d, sigma):
    M = sample_centers(K, d, 0.3, seed=11)
    for w in (0.0, 3.0):
        assert ccql_at_centers(M, sigma, w) == pytest.approx(
            population_quadratic_loss(M, M, sigma, w), rel=1e-12)


def test_ccql_least_squares_matches_population_optimum():
    M = sample_centers(12, 6, 0.2, seed=21)
    w = default_ccql_weight(12)
    X, y = sample_mixture(M, 100_000, 0.2, seed=22)
    Theta = ccql_least_squares(X, y, 12, w)
    Theta_star, value = ccql_population_optimum(M, 0.2, w)
    assert empirical_loss(Theta, X, y, "ccql", w) == pytest.approx(value, rel=0.02)
    assert np.abs(Theta - Theta_star).max() < 0.05


def test_ccql_normalized_min_falls_with_w_to_its_limit():
    M = sample_centers(40, 10, 0.0, seed=5)
    sigma = 0.3
    ws = [0.0, 1.0, 10.0, 100.0, 1e4, 1e7]
    values = [ccql_normalized_min(M, sigma, w) for w in ws]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[0] == pytest.approx(ql_normalized_min(M, sigma))
    assert values[-1] == pytest.approx(ccql_large_w_limit(sigma), rel=1e-4)
    # with an intercept the all-ones output is reachable and the loss goes to 0
    affine = [ccql_normalized_min(M, sigma, w, intercept=True) for w in (10.0, 1e4, 1e7)]
    assert affine[0] > affine[1] > affine[2] and affine[2] < 1e-5
    # and the rows tend to mu_i / (1 + sigma^2) without intercept
    Theta, _ = ccql_population_optimum(M, sigma, 1e9)
    assert np.allclose(Theta, M / (1 + sigma ** 2), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# CE: Lemma 3.2 on bounded samples
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("K,d,rho,kind", [(5, 10, 0.2, "equicorrelated"), (20, 20, 0.0, "random"),
                                          (60, 10, 0.0, "random")])
def test_lemma32_bound_holds_on_bounded_samples(K, d, rho, kind):
    M = sample_centers(K, d, rho, kind, seed=K)
    gamma = center_margin(M)
    assert gamma > 0
    X, y = sample_mixture(M, 3000, gamma / math.sqrt(d), "bounded", seed=1)
    assert np.allclose(np.linalg.norm(X - M[y], axis=1), gamma)
    for R in (1.0, 10.0, ce_lemma32_radius(K, gamma, 0.01)):
        Theta = ce_lemma32_construction(M, R)
        assert np.linalg.norm(Theta) == pytest.approx(R * math.sqrt(K))
        ce = per_sample_loss(Theta, X, y, "ce")
        assert ce.max() <= ce_lemma32_bound(K, R, gamma) + 1e-12
    assert ce_lemma32_bound(K, ce_lemma32_radius(K, gamma, 0.01), gamma) <= 0.01


@pytest.mark.parametrize("K,d,rho,kind", [(10, 10, 0.0, "equicorrelated"), (2, 5, 0.0, "equicorrelated"),
                                          (8, 12, 0.3, "equicorrelated"), (30, 12, 0.0, "random")])
def test_lemma32_bound_holds_against_the_worst_noise_and_is_nearly_tight_there(K, d, rho, kind):
    """Noise of norm gamma pointing at the nearest center. With near-orthogonal centers and gamma
    close to 1/3 the worst margin is R (1 - sqrt(2) / 3) < 2 R gamma, so a bound twice as tight
    (log(1 + (K - 1) exp(-2 R gamma))) is broken there: this check can fail."""
    M = sample_centers(K, d, rho, kind, seed=K)
    gamma = center_margin(M)
    y = np.arange(K).repeat(3)
    X = M[y] + adversarial_noise(M, y, gamma)
    assert np.allclose(np.linalg.norm(X - M[y], axis=1), gamma)
    radius = ce_lemma32_radius(K, gamma, 0.01)
    for R in (1.0, 10.0, 30.0, radius):
        ce = per_sample_loss(ce_lemma32_construction(M, R), X, y, "ce")
        assert ce.max() <= ce_lemma32_bound(K, R, gamma) * (1 + 1e-9)
    if kind == "equicorrelated" and rho == 0:  # orthogonal: gamma = 1/3, the tighter bound fails
        ce = per_sample_loss(ce_lemma32_construction(M, radius), X, y, "ce").max()
        assert ce > math.log1p((K - 1) * math.exp(-2 * radius * gamma))


@pytest.mark.parametrize("sigma", [0.03, 0.04, 0.045])
def test_lemma33_probability_is_at_least_its_bound_and_falls_with_sigma_and_n(sigma):
    """Gaussian noise; the bound's constant is stated (c = 1/2 with a factor 2: lemma33_success_bound)."""
    M = sample_centers(10, 50, 0.0, "random", seed=1)
    gamma = center_margin(M)
    trials = 400
    got = lemma33_monte_carlo(M, 100, sigma, R=20.0, trials=trials, seed=2)
    bound = lemma33_success_bound(10, 100, gamma, sigma)
    assert 0 < bound < 1
    se = math.sqrt(max(bound * (1 - bound), 1 / trials) / trials)
    assert got["event"] >= bound - 3 * se and got["implication_held"]
    assert got["ce_within_bound"] >= got["event"]
    more_noise = lemma33_monte_carlo(M, 100, 1.6 * sigma, R=20.0, trials=trials, seed=3)
    more_samples = lemma33_monte_carlo(M, 1000, sigma, R=20.0, trials=trials // 4, seed=4)
    assert more_noise["event"] < got["event"] and more_samples["event"] <= got["event"]
    assert lemma33_success_bound(10, 1000, gamma, sigma) < bound < lemma33_success_bound(10, 100, gamma, sigma / 2)


def test_lemma33_covers_noise_that_lemma32_cannot():
    """The remark after Lemma 3.3: sigma ~ gamma / sqrt(log K n) suffices, where Lemma 3.2 needs
    ||z|| ~ sigma sqrt(d) <= gamma. In d = 400 such noise has norm about 2.5 gamma."""
    K, n, d = 10, 50, 400
    M = sample_centers(K, d, 0.0, "random", seed=5)
    gamma = center_margin(M)
    sigma = gamma / math.sqrt(2 * math.log(20 * K * n))  # the bound says >= 0.9
    assert sigma * math.sqrt(d) > 2 * gamma
    assert lemma33_success_bound(K, n, gamma, sigma) == pytest.approx(0.9)
    assert lemma33_monte_carlo(M, n, sigma, R=30.0, trials=200, seed=6)["event"] >= 0.9 - 3 * 0.0212


@pytest.mark.parametrize("K,d,sigma", [(10, 20, 0.3), (50, 20, 0.1), (25, 40, 0.2)])
def test_the_printed_lemma35_bound_holds_only_below_a_weight_it_does_not_mention(K, d, sigma):
    """The paper's bound ||M M^T - I||_F^2 / K + K sigma^2 has no w, but min CCQL(w) grows with w:
    true at the paper's w = sqrt(K - 1) - 1 and at w = K - 2 here, false past w*."""
    M = sample_centers(K, d, 0.0, "random", seed=K)
    printed = lemma35_printed_bound(M, sigma)
    w_star = lemma35_printed_holds_below(M, sigma)
    assert K - 2 < w_star < math.inf
    for w in (default_ccql_weight(K), K - 2, 0.9 * w_star):
        assert ccql_population_min(M, sigma, w) <= printed
    assert ccql_population_min(M, sigma, 1.1 * w_star) > printed
    assert ccql_population_min(M, sigma, 10 * K) > printed or 10 * K < w_star
    # the corrected value at Theta = M (with the 1/2 and the w term) bounds min CCQL at every w
    for w in (0.0, 1.0, w_star, 100 * w_star):
        assert ccql_population_min(M, sigma, w) <= ccql_at_centers(M, sigma, w) + 1e-12
    # sigma = 0: the printed bound holds at every w, and normalized CCQL vanishes as w grows
    assert lemma35_printed_holds_below(M, 0.0) == math.inf
    assert ccql_normalized_min(M, 0.0, 1e6) < 1e-5 < ccql_normalized_min(M, sigma, 1e6)


def test_ce_fit_within_norm_budget():
    M = sample_centers(15, 8, 0.0, seed=3)
    X, y = sample_mixture(M, 1500, 0.2, seed=4)
    R = 3.0
    start = ce_lemma32_construction(M, R)
    Theta, losses = ce_fit_norm_budget(X, y, 15, R, iters=60, Theta0=start)
    assert np.linalg.norm(Theta) <= R * math.sqrt(15) * (1 + 1e-12)
    assert np.all(np.diff(losses) <= 1e-12)
    assert losses[-1] < empirical_loss(start, X, y, "ce")


# ----------------------------------------------------------------------------------------------
# Empirical losses, gradients and GD
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["ce", "ql", "ccql"])
def test_loss_and_grad_matches_finite_differences(loss):
    M = sample_centers(6, 4, 0.0, seed=0)
    X, y = sample_mixture(M, 50, 0.3, seed=1)
    Theta = np.random.default_rng(2).standard_normal((6, 4))
    value, G = loss_and_grad(Theta, X, y, loss, 2.0)
    assert value == pytest.approx(empirical_loss(Theta, X, y, loss, 2.0))
    eps = 1e-6
    for i, j in [(0, 0), (3, 2), (5, 3)]:
        E = np.zeros_like(Theta)
        E[i, j] = eps
        fd = (loss_and_grad(Theta + E, X, y, loss, 2.0)[0]
              - loss_and_grad(Theta - E, X, y, loss, 2.0)[0]) / (2 * eps)
        assert fd == pytest.approx(G[i, j], rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("loss", ["ce", "ql", "ccql"])
@pytest.mark.parametrize("K,d", [(5, 10), (40, 8)])
def test_gradient_descent_decreases_each_loss(loss, K, d):
    M = sample_centers(K, d, 0.0, seed=K)
    X, y = sample_mixture(M, 800, 0.2, seed=1)
    w = default_ccql_weight(K)
    df = gradient_descent(X, y, K, loss, iters=40, w=w, X_test=X, y_test=y)
    assert df["train_loss_norm"].iloc[0] == pytest.approx(1.0)
    assert np.all(np.diff(df["train_loss"]) <= 1e-12)          # monotone at step 1/L
    assert df["train_loss_norm"].iloc[-1] < 0.9
    assert df["test_acc"].iloc[-1] > 2.0 / K
    if loss != "ce":   # quadratic losses converge to the least-squares optimum
        Theta = ql_least_squares(X, y, K) if loss == "ql" else ccql_least_squares(X, y, K, w)
        df = gradient_descent(X, y, K, loss, iters=400, w=w, record_at=[400])
        assert df["train_loss"].iloc[-1] == pytest.approx(
            empirical_loss(Theta, X, y, loss, w), rel=1e-4)


@pytest.mark.parametrize("loss", ["ce", "ql", "ccql"])
def test_normalized_losses_use_the_training_losses_reference(loss):
    """The theory normalizes by the same value at zero outputs as the network losses do."""
    K = 12
    w = default_ccql_weight(K)
    M = sample_centers(K, 6, 0.2, seed=3)
    X, y = sample_mixture(M, 400, 0.3, seed=4)
    Theta = np.random.default_rng(5).standard_normal((K, 6))
    reference = make_loss(loss, K, **({"w": w} if loss == "ccql" else {})).reference_value
    assert empirical_loss(np.zeros((K, 6)), X, y, loss, w) == pytest.approx(reference, rel=1e-12)
    assert empirical_loss(Theta, X, y, loss, w, normalized=True) == pytest.approx(
        empirical_loss(Theta, X, y, loss, w) / reference, rel=1e-12)
    if loss == "ql":
        assert ql_normalized_min(M, 0.3) == pytest.approx(ql_population_min(M, 0.3) / reference)
    if loss == "ccql":
        assert ccql_normalized_min(M, 0.3, w) == pytest.approx(
            ccql_population_min(M, 0.3, w) / reference)


def test_class_means_accuracy_and_output_statistics():
    X = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    y = np.array([0, 0, 1])
    assert np.allclose(class_means(X, y, 3), [[2, 0], [0, 2], [0, 0]])   # empty class -> 0
    assert accuracy(np.eye(2), X, y) == 1.0
    ones = np.hstack([np.zeros((2, 2)), np.ones((2, 1))])                  # bias column only
    assert accuracy(ones, X, y) == pytest.approx(2 / 3)                    # ties -> class 0
    assert output_statistics(ones, X, y) == {"margin": 0.0, "wrong_class_output": 1.0}
    stats = output_statistics(np.eye(2), X, y)                             # f(x) = x
    assert stats["margin"] == pytest.approx((1 + 3 + 2) / 3)
    assert stats["wrong_class_output"] == pytest.approx(0.0)


# ----------------------------------------------------------------------------------------------
# Sampling and bad parameters
# ----------------------------------------------------------------------------------------------
def test_sample_centers_properties():
    M = sample_centers(6, 9, 0.4, "equicorrelated", seed=0)
    G = M @ M.T
    assert np.allclose(np.diag(G), 1.0)
    assert np.allclose(G[~np.eye(6, dtype=bool)], 0.4)
    R = sample_centers(50, 7, 0.3, seed=1)
    assert np.allclose(np.linalg.norm(R, axis=1), 1.0)
    assert np.allclose(sample_centers(20, 7, 0.3, seed=1), R[:20])      # nested in K
    assert np.array_equal(sample_centers(5, 3, seed=9), sample_centers(5, 3, seed=9))
    X, y = sample_mixture(R, 50_000, 0.2, seed=2)
    Z = X - R[y]
    assert np.allclose(np.cov(Z.T), 0.04 * np.eye(7), atol=0.003)
    Xb, yb = sample_mixture(R, 50_000, 0.2, "bounded", seed=2)
    Zb = Xb - R[yb]
    assert np.allclose(np.linalg.norm(Zb, axis=1), 0.2 * math.sqrt(7))
    assert np.allclose(np.cov(Zb.T), 0.04 * np.eye(7), atol=0.003)
    assert np.bincount(y, minlength=50).min() > 0


@pytest.mark.parametrize("call", [
    lambda: sample_centers(5, 0),                      # d < 1
    lambda: sample_centers(5, -3),
    lambda: sample_centers(1, 5),                      # K < 2
    lambda: sample_centers(5, 5, rho=-0.1),            # rho outside [0, 1)
    lambda: sample_centers(5, 5, rho=1.0),
    lambda: sample_centers(10, 5, 0.2, "equicorrelated"),   # needs K <= d
    lambda: sample_centers(5, 5, kind="nope"),
    lambda: sample_mixture(np.eye(3), 10, -0.1),       # sigma < 0
    lambda: sample_mixture(np.eye(3), 10, 0.1, noise="nope"),
    lambda: sample_mixture(np.eye(3), 0, 0.1),
    lambda: ql_population_min(np.eye(3), -1.0),
    lambda: ql_population_min(np.ones((1, 3)), 0.1),   # K < 2
    lambda: ccql_population_min(np.eye(3), 0.1, -1.0),  # w < 0
    lambda: ccql_at_centers(np.eye(3), -0.1, 1.0),
    lambda: ce_lemma32_bound(1, 1.0, 0.1),
    lambda: ce_lemma32_radius(5, 0.0, 0.1),
    lambda: empirical_loss(np.eye(3), np.eye(3), np.arange(3), "mse"),
])
def test_bad_parameters_raise_value_error(call):
    with pytest.raises(ValueError):
        call()
