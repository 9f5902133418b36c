"""The noisy quadratic model: exact dynamics against brute-force recursions and a Monte Carlo
simulation with optax, first crossings against dense curves, and the paper's findings.

One model size (K = 100) wherever programs could be shared, so each compiles once.
"""

import itertools
import math

import jax
import numpy as np
import pytest

from jaxsgd.theory.nqm import (NQMSteps, make_nqm, nqm_critical_batch_size, nqm_expected_loss,
                        nqm_first_crossing, nqm_monte_carlo, nqm_steps_to_target)

K = 100
NQM100 = make_nqm(K)


def moment_recursion(nqm, num_steps, lr, batch, beta=0.0, gamma=0.0, power=0.0):
    """ℓ(t), t = 0..num_steps, stepping the full 3-state second-moment recursion in NumPy."""
    h, c, s0 = nqm
    a = 1 + beta - lr * h ** (1 - power)
    m = np.zeros((h.size, 3, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0] = a, -beta, 1
    m[:, 2, 0], m[:, 2, 1], m[:, 2, 2] = (1 - gamma) * a, -(1 - gamma) * beta, gamma
    w = np.array([1.0, 0.0, 1 - gamma])
    noise = (lr**2 * h ** (-2 * power) * c / batch)[:, None, None] * np.outer(w, w)
    s = s0[:, None, None] * np.ones((3, 3))
    obs = 2 if gamma else 0
    out = []
    for _ in range(num_steps + 1):
        out.append(0.5 * np.sum(h * s[:, obs, obs]))
        s = m @ s @ m.transpose(0, 2, 1) + noise
    return np.array(out)


def test_make_nqm():
    nqm = make_nqm(4)
    np.testing.assert_allclose(nqm.h, [1, 1 / 2, 1 / 3, 1 / 4])
    np.testing.assert_array_equal(nqm.c, nqm.h)
    np.testing.assert_array_equal(nqm.s0, np.ones(4))
    custom = make_nqm(h=[2.0, 1.0], c=0.5, s0=[1.0, 3.0])
    np.testing.assert_array_equal(custom.c, [0.5, 0.5])
    np.testing.assert_array_equal(custom.s0, [1.0, 3.0])


def test_sgd_is_the_science_recursion_at_any_horizon():
    # s(t+1) = (1 − εh)² s(t) + ε² h / B (SCIENCE.md), and the steady state ε/(B(2 − εh)).
    h, lr, batch = NQM100.h, 0.3, 8.0
    s, curve = np.ones(K), []
    for _ in range(301):
        curve.append(0.5 * np.sum(h * s))
        s = (1 - lr * h) ** 2 * s + lr**2 * h / batch
    steps = np.array([0, 1, 7, 300, 10**6, 2**40])
    # Broadcasting: [2, 1] learning rates × [3] batch sizes.
    grid = nqm_expected_loss(NQM100, steps, np.array([[0.1], [lr]]), [1.0, batch, 16.0])
    assert grid.shape == (2, 3, steps.size)
    exact = grid[1, 1]
    np.testing.assert_allclose(exact[:4], np.array(curve)[steps[:4]], rtol=1e-12)
    steady = 0.5 * np.sum(h * lr / (batch * (2 - lr * h)))
    np.testing.assert_allclose(exact[4:], steady, rtol=1e-9)  # h = 0.01: (1 − εh)^(2·10⁶) ≈ 0
    assert abs(exact[3] - steady) > 1e-3  # t = 300 is not yet steady: the test can tell


VARIANTS = {  # learning rate, momentum, EMA decay, preconditioning power
    "sgd": (1.0, 0.0, 0.0, 0.0),
    "momentum": (0.2, 0.8, 0.0, 0.0),
    "preconditioning": (0.5, 0.0, 0.0, 0.5),
    "averaging": (1.0, 0.0, 0.9, 0.0),
    "all": (0.4, 0.5, 0.8, 0.3),
}
LR, BETA, GAMMA, POWER = (np.array(v) for v in zip(*VARIANTS.values()))
STEPS = np.array([1, 5, 20, 100])


def test_momentum_averaging_preconditioning_match_the_moment_recursion():
    exact = nqm_expected_loss(NQM100, STEPS, LR, 2.0, momentum=BETA, averaging=GAMMA,
                              precondition=POWER)
    assert exact.shape == (len(VARIANTS), STEPS.size)
    for row, (lr, beta, gamma, power) in zip(exact, VARIANTS.values()):
        brute = moment_recursion(NQM100, STEPS[-1], lr, 2.0, beta, gamma, power)[STEPS]
        np.testing.assert_allclose(row, brute, rtol=1e-11)


def test_monte_carlo_with_optax_matches_exact_dynamics():
    mc = nqm_monte_carlo(NQM100, STEPS, LR, 2.0, key=jax.random.key(0), momentum=BETA,
                         averaging=GAMMA, precondition=POWER, num_runs=600)
    exact = nqm_expected_loss(NQM100, STEPS, LR, 2.0, momentum=BETA, averaging=GAMMA,
                              precondition=POWER)
    assert mc.mean.shape == mc.stderr.shape == exact.shape
    z = (mc.mean - exact) / mc.stderr
    assert np.abs(z).max() < 3, dict(zip(VARIANTS, np.round(z, 2)))
    # The check has power: the dynamics of batch size 4 instead of 2 are rejected everywhere.
    wrong = nqm_expected_loss(NQM100, STEPS, LR, 4.0, momentum=BETA, averaging=GAMMA,
                              precondition=POWER)
    assert (np.abs((mc.mean - wrong) / mc.stderr)[:, -1] > 10).all()


def test_first_crossing_against_dense_curves():
    # Every step of the brute-force curve against the grid + walk + bisection. At B = 10⁶ the
    # momentum curves oscillate across the target; at B = 4 they are smooth, and bisection
    # alone (exact_steps=0) finds the same first step.
    lrs, batches, targets = np.array([0.05, 0.5, 2.5]), np.array([4.0, 1e6]), [0.3, 0.03, 0.01]
    curves = {(lr, b): moment_recursion(NQM100, 3000, lr, b, beta=0.9)
              for lr in lrs for b in batches}
    for target in targets:
        found = nqm_first_crossing(NQM100, target, lrs[:, None], batches, momentum=0.9)
        bisected = nqm_first_crossing(NQM100, target, lrs, 4.0, momentum=0.9, exact_steps=0)
        for (i, lr), (j, b) in itertools.product(enumerate(lrs), enumerate(batches)):
            below = np.flatnonzero(curves[lr, b] <= target)
            dense = below[0] if below.size else math.inf
            assert found[i, j] == dense or (dense == math.inf and found[i, j] > 3000), (lr, b)
            if b == 4.0:
                assert bisected[i] == found[i, j], (lr, target)
    assert nqm_first_crossing(NQM100, 100.0, 0.1, 1.0) == 0  # ℓ(0) is already below


@pytest.fixture(scope="module")
def paper():
    """Steps to ℓ = 0.01 at the best learning rate, B = 4..2^20, K = 100 (coarse search)."""
    batch_sizes = 2.0 ** np.arange(2, 21, 2)
    search = dict(learning_rates_per_decade=3, refine=2, refine_points=4)
    return {name: nqm_steps_to_target(NQM100, batch_sizes, 0.01, **kw, **search)
            for name, kw in [("sgd", {}), ("momentum", {"momentum": 0.9}),
                             ("preconditioning", {"precondition": 0.5})]}


def test_best_learning_rate_grows_linearly_then_saturates(paper):
    lr = paper["sgd"].learning_rate
    ratios = lr[1:] / lr[:-1]  # batch size ×4 per point
    assert ((ratios[:2] > 3.2) & (ratios[:2] < 4.8)).all(), ratios
    assert np.all(np.abs(ratios[-4:] - 1) < 0.05), ratios
    assert lr[-1] > 0.8 * 2 / NQM100.h.max()  # saturates near the stability bound, not far below


def test_momentum_helps_at_large_batch_only(paper):
    ratio = paper["momentum"].steps / paper["sgd"].steps
    assert abs(ratio[0] - 1) < 0.03, ratio
    assert ratio[-1] < 0.7, ratio
    # At small batch size momentum just rescales the learning rate: ε/(1 − β) ≈ ε_SGD.
    np.testing.assert_allclose(paper["momentum"].learning_rate[0] / 0.1,
                               paper["sgd"].learning_rate[0], rtol=0.15)


def test_preconditioning_raises_the_critical_batch_size(paper):
    sgd, pre = (nqm_critical_batch_size(paper[k]) for k in ("sgd", "preconditioning"))
    assert np.isfinite(sgd) and pre > 3 * sgd, (sgd, pre)
    # Perfect scaling below it: steps × 4 when the batch size is ÷ 4.
    np.testing.assert_allclose(paper["sgd"].steps[0] / paper["sgd"].steps[1], 4, rtol=0.05)


def test_critical_batch_size_reads_the_examples_crossing():
    b = 2.0 ** np.arange(8)
    steps = 1000 * (1 + 10 / b)  # E = 1000 (B + 10): E(1) = 11000, 1.2 × that at B = 3.2
    result = NQMSteps(b, steps, b, 0 * b, 0 * b, 0.01)
    assert 2 < nqm_critical_batch_size(result) < 4
    assert math.isnan(nqm_critical_batch_size(result._replace(steps=1000 / b)))  # perfect


@pytest.mark.parametrize("call, match", [
    (lambda: make_nqm(0), "dim: 0"),
    (lambda: make_nqm(h=[1.0, -1.0]), "h: -1"),
    (lambda: make_nqm(3, c=[1.0, 2.0]), "c: shape"),
    (lambda: nqm_expected_loss(NQM100, [1, -2], 0.1, 1), "steps"),
    (lambda: nqm_expected_loss(NQM100, [1.5], 0.1, 1), "steps"),
    (lambda: nqm_expected_loss(NQM100, [1], 0.0, 1), "learning_rate: 0"),
    (lambda: nqm_expected_loss(NQM100, [1], 0.1, [1, -4]), "batch_size: -4"),
    (lambda: nqm_expected_loss(NQM100, [1], 0.1, 1, momentum=1.0), "momentum: 1"),
    (lambda: nqm_expected_loss(NQM100, [1], 0.1, 1, averaging=-0.1), "averaging: -0.1"),
    (lambda: nqm_expected_loss(NQM100, [1], [0.1, 0.2], [1, 2, 3]), "do not broadcast"),
    (lambda: nqm_steps_to_target(NQM100, [4], 0.0), "target: 0"),
    (lambda: nqm_steps_to_target(NQM100, [4], 0.01, momentum=[0.5, 1.2]), "momentum"),
    (lambda: nqm_steps_to_target(NQM100, [0], 0.01), "batch_sizes: 0"),
    (lambda: nqm_steps_to_target(NQM100, [4], 0.01, refine=-1), "refine: -1"),
    (lambda: nqm_monte_carlo(NQM100, [3], 0.1, 1, key=jax.random.key(0), num_runs=1), "num_runs"),
    (lambda: nqm_critical_batch_size(NQMSteps(*[np.ones(2)] * 5, 0.01), 1.0), "threshold"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _decimal_loss(h, c, s0, lr, batch, beta, steps, digits=60):
    """½ Σ_i h_i E x_i(t)² for heavy-ball momentum, by exact repeated squaring of the moment
    recursion in ``digits``-digit decimal arithmetic (independent of jaxsgd's basis: the state
    is (x_t, x_{t−1}), the moments the 3-vector (E x², E x x₋, E x₋²) plus a constant)."""
    from decimal import Decimal, getcontext

    getcontext().prec = digits
    total = Decimal(0)
    for hi, ci, si in zip(h, c, s0):
        hi, ci, si = Decimal(float(hi)), Decimal(float(ci)), Decimal(float(si))  # exact
        lr_, b_, beta_ = Decimal(float(lr)), Decimal(float(batch)), Decimal(float(beta))
        a = 1 + beta_ - lr_ * hi
        noise = lr_ * lr_ * ci / b_
        # x' = a x − β x₋ + ε n, x₋' = x:  (xx, xy, yy)' from (xx, xy, yy) and 1
        step = [[a * a, -2 * a * beta_, beta_ * beta_, noise],
                [a, -beta_, 0, 0],
                [1, 0, 0, 0],
                [0, 0, 0, 1]]

        def mul(p, q):
            return [[sum(p[i][k] * q[k][j] for k in range(4)) for j in range(4)]
                    for i in range(4)]

        result = [[Decimal(int(i == j)) for j in range(4)] for i in range(4)]
        power, t = step, steps
        while t:
            if t & 1:
                result = mul(power, result)
            power, t = mul(power, power), t >> 1
        moments = [sum(result[i][j] * v for j, v in enumerate((si, si, si, 1)))
                   for i in range(4)]
        total += hi * moments[0] / 2
    return float(total)


def test_momentum_near_one_matches_high_precision_arithmetic():
    """β up to 0.99999, learning rates down to 1e-7, 2·10⁶ steps, eigenvalues down to 1e-5:
    exact to 1e-6 against 60-digit decimal arithmetic."""
    h = np.logspace(0, -5, 12)
    nqm = make_nqm(h=h)
    steps = np.asarray([1000, 100_000, 2_000_000])
    for beta, lr in itertools.product((0.999, 0.9999, 0.99999), (1e-7, 1e-4)):
        got = nqm_expected_loss(nqm, steps, lr, 4.0, momentum=beta)
        want = [_decimal_loss(nqm.h, nqm.c, nqm.s0, lr, 4.0, beta, int(t)) for t in steps]
        np.testing.assert_allclose(np.ravel(got), want, rtol=1e-6, err_msg=f"β={beta}, ε={lr}")


def test_a_binned_spectrum_equals_its_repeated_coordinates():
    """Coordinates of equal curvature as one bin (noise and start scaled by the count): the
    same loss curve and the same steps to target, with momentum near 1."""
    counts, h = np.asarray([3, 5, 4]), np.asarray([1.0, 1e-2, 1e-4])
    repeated = make_nqm(h=np.repeat(h, counts))
    binned = make_nqm(h=h, c=h * counts, s0=counts.astype(float))
    steps = np.asarray([10, 10_000, 1_000_000])
    for beta in (0.9, 0.9999):
        a = nqm_expected_loss(repeated, steps, 1e-3, 2.0, momentum=beta)
        b = nqm_expected_loss(binned, steps, 1e-3, 2.0, momentum=beta)
        np.testing.assert_allclose(a, b, rtol=1e-9)
        target = 0.3 * float(np.ravel(a)[0])
        crossing = nqm_first_crossing(repeated, target, 1e-3, 2.0, momentum=beta)
        assert 10 < crossing < np.inf
        assert crossing == nqm_first_crossing(binned, target, 1e-3, 2.0, momentum=beta)
