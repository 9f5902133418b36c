"""Sharpness measures against ground truth: closed forms on quadratics (ε-sharpness at a
minimum, ½ρ²λ_max, SAM/ASAM first-order perturbations, ½σ² tr H, m-sharpness of isotropic
per-example quadratics), Dinh et al.'s ReLU rescaling on a real MLP, L-BFGS-B as the reference
maximiser, and vmap over runs equal to measuring each run alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsgd.losses import cross_entropy
from jaxsgd.models import make_model
from jaxsgd.measure.sharpness import (adaptive_sharpness, average_sharpness, epsilon_sharpness,
                              epsilon_sharpness_lbfgsb, sam_sharpness)

D = 12


def _quadratic(h, minimum):
    """L(θ) = ½ (θ − θ*)ᵀ H (θ − θ*) (the batch is ignored)."""
    h, minimum = jnp.asarray(h), jnp.asarray(minimum)
    return lambda p, batch: 0.5 * (p - minimum) @ h @ (p - minimum)


def _dense_hessian(seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    eigenvalues = np.geomspace(0.1, 4.0, D)
    eigenvalues[-2] = 3.0  # gap λ₂/λ₁ = 0.75
    return q @ np.diag(eigenvalues) @ q.T, rng.normal(size=D)


# --- quadratics: closed forms ---------------------------------------------------------------

def test_epsilon_sharpness_at_the_minimum_of_a_diagonal_quadratic_is_the_box_corner():
    """At θ*, ∇L = 0 and the max over the box is at a corner: 100·½ Σ h_i (ε(|θ*_i| + 1))²."""
    rng = np.random.default_rng(0)
    h = np.geomspace(0.01, 100.0, D)
    minimum = rng.normal(size=D) * np.geomspace(0.1, 10.0, D)  # |θ*_i| + 1 scaling matters
    epsilon = 1e-3
    truth = 100 * 0.5 * np.sum(h * (epsilon * (np.abs(minimum) + 1)) ** 2)
    with jax.enable_x64(True):
        loss = _quadratic(np.diag(h), minimum)
        theta, key = jnp.asarray(minimum), jax.random.key(0)

        @jax.jit
        def measures(p, k):
            # ASAM's l∞ box with η = 1 is the same box: its max is the same corner.
            return (epsilon_sharpness(loss, p, None, key=k, epsilon=epsilon),
                    epsilon_sharpness(loss, p, None, key=k, epsilon=epsilon, num_steps=1,
                                      step_size=0.5, power_steps=0),
                    adaptive_sharpness(loss, p, None, rho=epsilon, norm="linf", eta=1.0,
                                       num_steps=20, step_size=0.5, key=k))

        pga, one_step, box = measures(theta, key)
        ref = epsilon_sharpness_lbfgsb(loss, theta, None, key=key, epsilon=epsilon)
        stuck = epsilon_sharpness_lbfgsb(loss, theta, None, key=None, epsilon=epsilon)
    assert float(pga.loss) == 0.0 and int(pga.num_steps) == 20
    np.testing.assert_allclose(float(pga.sharpness), truth, rtol=1e-10)
    np.testing.assert_allclose(ref.sharpness, truth, rtol=1e-10)
    np.testing.assert_allclose(float(box.sharpness), truth / 100, rtol=1e-10)
    assert ref.num_steps >= 1
    assert stuck.sharpness == 0.0  # zero start, zero gradient: L-BFGS-B cannot move
    # Half a box width from near the centre falls short (≈ ¼ of the corner's value) and its
    # Frank–Wolfe gap says so (Σ h_i (r_i/2)² ≈ ½ of it); the corner's gap is 0.
    assert float(one_step.sharpness) < 0.3 * truth and float(one_step.gap) > 0.45 * truth
    assert abs(float(pga.gap)) < 1e-12 * truth and ref.gap < 1e-9 * truth


def test_sam_sharpness_at_a_minimum_approaches_half_rho_squared_lambda_max():
    h, minimum = _dense_hessian()
    rho = 0.1
    lam = np.linalg.eigvalsh(h)
    scale = np.abs(minimum)
    adaptive_lam = np.linalg.eigvalsh(scale[:, None] * h * scale[None, :])
    with jax.enable_x64(True):
        loss = _quadratic(h, minimum)

        @jax.jit
        def measures(p, k):
            return (sam_sharpness(loss, p, None, rho=rho),
                    sam_sharpness(loss, p, None, rho=rho, num_steps=10, key=k),
                    sam_sharpness(loss, p, None, rho=rho, num_steps=50, key=k),
                    adaptive_sharpness(loss, p, None, rho=rho, num_steps=50, key=k))

        zero_start, short, ascent, adaptive = measures(jnp.asarray(minimum), jax.random.key(1))
    assert float(zero_start.sharpness) == 0.0  # ∇L = 0 at θ*: SAM's e = ρ g/‖g‖ is 0
    truth = 0.5 * rho**2 * lam[-1]
    assert 0.95 * truth < float(short.sharpness) <= truth * (1 + 1e-12)  # measured 0.987
    np.testing.assert_allclose(float(ascent.sharpness), truth, rtol=1e-5)  # measured 3e-7
    # ‖e/|θ|‖ ≤ ρ: e = diag(|θ|) u, the worst case is ½ρ² λ_max(diag|θ| H diag|θ|).
    np.testing.assert_allclose(float(adaptive.sharpness), 0.5 * rho**2 * adaptive_lam[-1],
                               rtol=1e-4)


def test_first_order_sam_and_asam_perturbations_match_their_closed_forms():
    """Away from the minimum, one step from 0: SAM e = ρ g/‖g‖, ASAM (l2) e = ρ T²g/‖Tg‖,
    ASAM (l∞) e = ρ T sign(g), T = diag(|θ| + η); L(θ + e) − L(θ) = gᵀe + ½ eᵀHe."""
    h, minimum = _dense_hessian(1)
    theta = minimum + np.random.default_rng(2).normal(size=D)
    g = h @ (theta - minimum)
    rho, eta = 0.2, 0.01
    t = np.abs(theta) + eta
    perturbations = {"sam": rho * g / np.linalg.norm(g),
                     "l2": rho * t**2 * g / np.linalg.norm(t * g),
                     "linf": rho * t * np.sign(g)}
    with jax.enable_x64(True):
        loss = _quadratic(h, minimum)
        got = jax.jit(lambda p: {
            "sam": sam_sharpness(loss, p, None, rho=rho),
            "l2": adaptive_sharpness(loss, p, None, rho=rho, eta=eta),
            "linf": adaptive_sharpness(loss, p, None, rho=rho, eta=eta, norm="linf")})(
                jnp.asarray(theta))
    for name, e in perturbations.items():
        np.testing.assert_allclose(float(got[name].sharpness), g @ e + 0.5 * e @ h @ e,
                                   rtol=1e-10, err_msg=name)
        assert int(got[name].num_steps) == 1


@pytest.mark.parametrize("adaptive", [False, True])
def test_average_sharpness_of_a_quadratic_is_half_sigma_squared_trace_within_its_error(
        adaptive):
    """E[L(θ + δ)] − L(θ) = ½σ² tr(S H S) exactly for a quadratic, at any θ (S = I or
    diag|θ|); one draw's sd is σ²·sqrt(tr((SHS)²)/2) at the minimum."""
    h, minimum = _dense_hessian(3)
    sigma, n = 0.05, 4000
    theta = minimum + 0.5 * np.random.default_rng(4).normal(size=D)
    s = np.abs(theta) if adaptive else np.ones(D)
    shs = s[:, None] * h * s[None, :]
    truth = 0.5 * sigma**2 * np.trace(shs)
    with jax.enable_x64(True):
        loss = _quadratic(h, minimum)
        paired, plain = jax.jit(lambda p, k: [
            average_sharpness(loss, p, None, key=k, sigma=sigma, num_samples=n, adaptive=adaptive,
                              antithetic=antithetic) for antithetic in (True, False)])(
            jnp.asarray(theta), jax.random.key(5))
    for est in (paired, plain):
        assert abs(float(est.sharpness) - truth) < 4 * float(est.standard_error)
        assert float(est.perturbed_loss) == pytest.approx(float(est.loss + est.sharpness))
    # Antithetic pairs are exactly ½δᵀSHSδ: the first-order term's variance is gone.
    sd = sigma**2 * np.sqrt(np.trace(shs @ shs) / 2)
    assert float(paired.standard_error) == pytest.approx(sd / np.sqrt(n), rel=0.1)
    assert float(paired.standard_error) < 0.5 * float(plain.standard_error)


def test_m_sharpness_of_isotropic_per_example_quadratics_matches_the_closed_form():
    """L_i(θ) = ½‖θ − x_i‖²: on a sub-batch S, max_{‖e‖≤ρ} is ρ‖θ − x̄_S‖ + ½ρ² (e along the
    gradient: SAM's step is exact), and the adaptive l∞ box max is Σ_j ρ t_j|a_j| + ½ρ²t_j²
    with a = θ − x̄_S, t = |θ| + η (a corner)."""
    rng = np.random.default_rng(6)
    x, theta = rng.normal(size=(12, 5)), rng.normal(size=5)
    rho, eta = 0.3, 0.1
    t = np.abs(theta) + eta

    def loss(p, batch):
        return 0.5 * jnp.mean(jnp.sum(jnp.square(p - batch), axis=1))

    with jax.enable_x64(True):
        for m in (1, 3, 12, None):
            means = x.reshape(-1 if m is None else 12 // m, 12 if m is None else m, 5).mean(1)
            a = theta - means
            sam, box = jax.jit(lambda p, b: (
                sam_sharpness(loss, p, b, rho=rho, m=m),
                adaptive_sharpness(loss, p, b, rho=rho, eta=eta, norm="linf", m=m)))(
                    jnp.asarray(theta), jnp.asarray(x))
            np.testing.assert_allclose(float(sam.sharpness),
                                       np.mean(rho * np.linalg.norm(a, axis=1)) + rho**2 / 2,
                                       rtol=1e-10, err_msg=f"m={m}")
            np.testing.assert_allclose(float(box.sharpness),
                                       np.mean(np.sum(rho * t * np.abs(a) + rho**2 * t**2 / 2,
                                                      axis=1)), rtol=1e-10, err_msg=f"m={m}")
            np.testing.assert_allclose(float(sam.loss), float(loss(theta, x)), rtol=1e-12)


# --- a real MLP -------------------------------------------------------------------------------

MODEL = make_model("mlp", (8,), 3, width=16, depth=1)  # 8-16-3 ReLU, 195 parameters


def _mlp_loss(params, batch):
    return cross_entropy(MODEL.apply(params, batch[0]), batch[1])


@pytest.fixture(scope="module")
def trained_mlp():
    """The MLP after 300 full-batch GD steps (learning rate 0.5) on 64 learnable examples."""
    x = jax.random.normal(jax.random.key(0), (64, 8))
    batch = (x, jnp.argmax(x[:, :3] + 0.5 * x[:, 3:6], axis=1))

    @jax.jit
    def train(params):
        def step(p, _):
            g = jax.grad(_mlp_loss)(p, batch)
            return jax.tree.map(lambda a, b: a - 0.5 * b, p, g), None
        return jax.lax.scan(step, params, None, 300)[0]

    return train(MODEL.init(jax.random.key(1))), batch


def test_pga_epsilon_sharpness_agrees_with_lbfgsb_on_an_mlp(trained_mlp):
    """Both from the same random start; half a step from near the centre falls far short.
    Measured (ε: L-BFGS-B %, its iterations; APGD/L-BFGS-B; half a step/L-BFGS-B): 1e-3:
    0.015349, 54; 1.00004; 0.49. 1e-2: 0.38011, 87; 1.00024; 0.21. Both gaps 0 (float32)."""
    params, batch = trained_mlp
    key = jax.random.key(0)

    @jax.jit
    def measures(p, k, eps):
        return (epsilon_sharpness(_mlp_loss, p, batch, key=k, epsilon=eps),
                epsilon_sharpness(_mlp_loss, p, batch, key=k, epsilon=eps, num_steps=1,
                                  step_size=0.5, power_steps=0))

    for epsilon in (1e-3, 1e-2):
        ref = epsilon_sharpness_lbfgsb(_mlp_loss, params, batch, key=key, epsilon=epsilon)
        got, half = measures(params, key, epsilon)
        assert ref.num_steps > 1 and int(got.num_steps) == 20 and int(half.num_steps) == 1
        assert float(got.sharpness) >= (1 - 1e-3) * ref.sharpness
        assert float(got.gap) < 1e-3 * float(got.sharpness)
        assert float(got.loss) == pytest.approx(ref.loss, rel=1e-5)
        assert float(half.sharpness) < 0.5 * ref.sharpness


def _rescale(params, alpha):
    """Dinh et al. (2017): (α W₁, α b₁, W₂/α, b₂) computes the same ReLU network."""
    first, second = params["Dense_0"], params["Dense_1"]
    return {"Dense_0": {"kernel": alpha * first["kernel"], "bias": alpha * first["bias"]},
            "Dense_1": {"kernel": second["kernel"] / alpha, "bias": second["bias"]}}


def test_relu_rescaling_leaves_adaptive_sharpness_unchanged_but_not_plain_sharpness(
        trained_mlp):
    alpha = 10.0
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), trained_mlp[0])
        batch = (jnp.asarray(trained_mlp[1][0], jnp.float64), trained_mlp[1][1])
        scaled = _rescale(params, alpha)
        np.testing.assert_allclose(MODEL.apply(scaled, batch[0]), MODEL.apply(params, batch[0]),
                                   rtol=1e-12, atol=1e-12)
        key = jax.random.key(7)

        def measures(p):
            return {
                "asam_l2": adaptive_sharpness(_mlp_loss, p, batch, rho=0.3, num_steps=10,
                                              key=key).sharpness,
                "asam_average": average_sharpness(_mlp_loss, p, batch, key=key, sigma=0.1,
                                                  num_samples=16, adaptive=True).sharpness,
                "epsilon": epsilon_sharpness(_mlp_loss, p, batch, key=key, epsilon=1e-3).sharpness,
                "sam": sam_sharpness(_mlp_loss, p, batch, rho=0.1, num_steps=10,
                                     key=key).sharpness,
                "average": average_sharpness(_mlp_loss, p, batch, key=key, sigma=0.01,
                                             num_samples=16).sharpness}

        measures = jax.jit(measures)
        before, after = measures(params), measures(scaled)
    for name in ("asam_l2", "asam_average"):
        assert float(before[name]) > 0
        np.testing.assert_allclose(float(after[name]), float(before[name]), rtol=1e-9,
                                   err_msg=name)
    for name in ("epsilon", "sam", "average"):
        ratio = float(after[name]) / float(before[name])
        assert abs(ratio - 1) > 0.1, (name, ratio)


def test_vmap_over_runs_equals_measuring_each_run_alone(trained_mlp):
    trained, batch = trained_mlp
    runs = jax.tree.map(lambda a: jnp.stack([a, 0.8 * a, 1.3 * a]), trained)
    keys = jax.random.split(jax.random.key(4), 3)

    def measures(p, k):
        return (epsilon_sharpness(_mlp_loss, p, batch, key=k, num_steps=5),
                sam_sharpness(_mlp_loss, p, batch, rho=0.1, num_steps=3, key=k, m=16),
                average_sharpness(_mlp_loss, p, batch, key=k, num_samples=8))

    together = jax.jit(jax.vmap(measures))(runs, keys)
    one = jax.jit(measures)
    for r in range(3):
        alone = one(jax.tree.map(lambda a: a[r], runs), keys[r])
        for got, want in zip(jax.tree.leaves(together), jax.tree.leaves(alone)):
            assert got.shape == (3,)
            np.testing.assert_allclose(got[r], want, rtol=2e-5, atol=1e-7)


# --- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda f, p, b, k: epsilon_sharpness(f, p, b, key=k, epsilon=0.0), "epsilon must be > 0"),
    (lambda f, p, b, k: epsilon_sharpness(f, p, b, key=k, num_steps=0), "num_steps: 0 is not"),
    (lambda f, p, b, k: epsilon_sharpness(f, p, b, key=k, step_size=-1.0), "step_size must be"),
    (lambda f, p, b, k: epsilon_sharpness_lbfgsb(f, p, b, key=k, epsilon=-1e-3), "epsilon"),
    (lambda f, p, b, k: epsilon_sharpness_lbfgsb(f, p, b, key=k, max_iter=0), "max_iter"),
    (lambda f, p, b, k: sam_sharpness(f, p, b, rho=float("nan")), "rho must be > 0"),
    (lambda f, p, b, k: sam_sharpness(f, p, b, num_steps=2.5), "num_steps: 2.5 is not"),
    (lambda f, p, b, k: sam_sharpness(f, p, b, m=5), "m must divide the batch size 64"),
    (lambda f, p, b, k: adaptive_sharpness(f, p, b, m=0), "m: 0 is not an integer >= 1"),
    (lambda f, p, b, k: adaptive_sharpness(f, p, b, norm="l1"), "norm must be one of"),
    (lambda f, p, b, k: adaptive_sharpness(f, p, b, eta=-0.1), "eta must be >= 0"),
    (lambda f, p, b, k: average_sharpness(f, p, b, key=k, sigma=0), "sigma must be > 0"),
    (lambda f, p, b, k: average_sharpness(f, p, b, key=k, num_samples=1), "num_samples: 1 is not an integer >= 2"),
])
def test_bad_input_raises_a_value_error_naming_it(call, message):
    x = jnp.zeros((64, 8))
    calls = []

    def loss(p, b):
        calls.append(1)
        return _mlp_loss(p, b)

    with pytest.raises(ValueError, match=message):
        call(loss, MODEL.init(jax.random.key(0)), (x, jnp.zeros(64, jnp.int32)),
             jax.random.key(0))
    assert not calls  # raised before any compute


# --- trained solutions, flat to sharp ---------------------------------------------------------

@pytest.fixture(scope="module")
def solutions():
    """MNIST-1D (1000 training examples), MLP 40-256-256-10, Adam, 1000 steps: a small batch
    at a tuned learning rate, a large batch at a tuned one, a large batch at a small one."""
    from jaxsgd import Grid, SweepConfig, make_loss_fn, run_sweep, task_for
    from jaxsgd.data import mnist1d

    config = SweepConfig(data="mnist1d", data_options={"num_samples": 1250}, model="mlp",
                         model_options={"width": 256, "depth": 2}, optimizer="adam",
                         batch_sizes=(32, 500), budget=1000, budget_unit="steps",
                         eval_every=500, grid=Grid(learning_rate=(3e-3, 1e-4)))
    result = run_sweep(config, progress=False)
    params = [result.run_params(32, learning_rate=3e-3), result.run_params(500, learning_rate=3e-3),
              result.run_params(500, learning_rate=1e-4)]
    data = mnist1d(num_samples=1250)
    model = make_model("mlp", (40,), 10, width=256, depth=2)
    return (jax.tree.map(lambda *a: jnp.stack(a), *params), make_loss_fn(model, task_for(10)),
            (jnp.asarray(data.x_train), jnp.asarray(data.y_train)))


def test_epsilon_sharpness_defaults_reach_lbfgsb_on_flat_and_sharp_solutions(solutions):
    """Auto-PGD from two starts, vmapped over the three solutions, against scipy's L-BFGS-B
    (100 iterations, float64) from the same random start. Measured (φ %, L-BFGS-B %, gap/φ):
    0.866, 0.734, 0.4%; 1.861, 1.176, 0.05%; 19.72, 18.80, 0.02% (1.18, 1.58, 1.05 of the
    reference). The former default (20 cosine-decayed sign steps from the random start) found
    0.81 and 0.66 of it on the first two at 4000 examples (the module docstring)."""
    params, loss_fn, batch = solutions
    keys = jax.random.split(jax.random.key(3), 3)
    got = jax.jit(jax.vmap(lambda p, k: epsilon_sharpness(loss_fn, p, batch, key=k)))(params,
                                                                                     keys)
    refs = [epsilon_sharpness_lbfgsb(loss_fn, jax.tree.map(lambda a: a[i], params), batch,
                                     key=keys[i], max_iter=100) for i in range(3)]
    sharpness = np.asarray(got.sharpness)
    assert np.all(np.diff(sharpness) > 0)  # flat → sharp
    for i, ref in enumerate(refs):
        assert sharpness[i] >= 0.97 * ref.sharpness, (i, sharpness[i], ref.sharpness)
    assert np.all(np.asarray(got.gap) < 1e-2 * sharpness)  # converged: a local maximum
