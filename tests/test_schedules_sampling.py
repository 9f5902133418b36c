"""Learning-rate schedules, optimizer families and minibatch sampling against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsgd.hyperparams import hparams
from jaxsgd.optimizers import learning_rate_multiplier, make_optimizer
from jaxsgd.engine.sampling import init_sampler, permutation, sample_indices, stable_order


def multipliers(schedule, total, warmup, decay, boundaries=(0.5, 0.75)):
    f = jax.jit(lambda t: learning_rate_multiplier(t, total, schedule, jnp.float32(warmup),
                                                   jnp.float32(decay), boundaries))
    return np.asarray(jax.vmap(f)(jnp.arange(total)))


def test_constant_with_linear_warmup():
    m = multipliers("constant", 100, warmup=0.1, decay=0.1)
    np.testing.assert_allclose(m[:10], (np.arange(10) + 1) / 10, rtol=1e-6)
    np.testing.assert_array_equal(m[10:], 1.0)
    np.testing.assert_array_equal(multipliers("constant", 100, 0.0, 0.1), 1.0)


def test_cosine_decays_from_one_to_final_fraction():
    total, decay = 101, 0.2
    m = multipliers("cosine", total, warmup=0.0, decay=decay)
    t = np.arange(total)
    expected = decay + (1 - decay) * 0.5 * (1 + np.cos(np.pi * t / (total - 1)))
    np.testing.assert_allclose(m, expected, rtol=1e-5, atol=1e-6)
    assert m[0] == pytest.approx(1.0) and m[-1] == pytest.approx(decay)


def test_step_decay_at_boundaries():
    m = multipliers("step", 100, warmup=0.0, decay=0.1, boundaries=(0.5, 0.75))
    np.testing.assert_allclose(m[:50], 1.0)
    np.testing.assert_allclose(m[50:75], 0.1, rtol=1e-6)
    np.testing.assert_allclose(m[75:], 0.01, rtol=1e-5)


def hp(lr=0.1, momentum=0.9, wd=0.0):
    return hparams(learning_rate=lr, momentum=momentum, weight_decay=wd)


@pytest.mark.parametrize("name, reference", [
    ("sgd", lambda: optax.sgd(0.1)),
    ("momentum", lambda: optax.sgd(0.1, momentum=0.9)),
    ("nesterov", lambda: optax.sgd(0.1, momentum=0.9, nesterov=True)),
    ("adam", lambda: optax.adam(0.1, b1=0.9)),
    ("adamw", lambda: optax.adamw(0.1, b1=0.9, weight_decay=0.0)),
])
def test_optimizer_families_equal_plain_optax(name, reference):
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    grads = [{"w": jnp.array([0.5, 0.1, -0.3]) * (k + 1)} for k in range(4)]
    ours, ref = make_optimizer(name, hp(), total_steps=10), reference()
    s1, s2 = ours.init(params), ref.init(params)
    p1 = p2 = params
    for g in grads:
        u1, s1 = ours.update(g, s1, p1)
        u2, s2 = ref.update(g, s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    np.testing.assert_allclose(p1["w"], p2["w"], rtol=1e-6)
    assert float(s1.hyperparams["learning_rate"]) == pytest.approx(0.1)


def test_coupled_and_decoupled_weight_decay():
    params = {"w": jnp.array([2.0])}
    zero = {"w": jnp.array([0.0])}
    sgd = make_optimizer("sgd", hp(lr=0.1, wd=0.5), total_steps=10)
    u, _ = sgd.update(zero, sgd.init(params), params)
    assert float(u["w"][0]) == pytest.approx(-0.1 * 0.5 * 2.0)  # gradient of ½·wd·|w|²
    adamw = make_optimizer("adamw", hp(lr=0.1, wd=0.5), total_steps=10)
    u, _ = adamw.update(zero, adamw.init(params), params)
    assert float(u["w"][0]) == pytest.approx(-0.1 * 0.5 * 2.0)  # decoupled: lr·wd·w


def draw(sampling, num_train, batch_size, steps, key=0):
    key = jax.random.key(key)
    state = init_sampler(num_train, sampling)
    step = jax.jit(lambda s, t: sample_indices(s, key, t, batch_size, num_train, sampling))
    out = []
    for t in range(steps):
        state, idx = step(state, jnp.int32(t))
        out.append(np.asarray(idx))
    return np.stack(out)


def test_epoch_sampling_visits_each_example_once_per_epoch():
    n, b = 50, 8  # 6 steps an epoch, 2 examples dropped each epoch
    idx = draw("epoch", n, b, 12)
    for epoch in range(2):
        seen = idx[6 * epoch:6 * (epoch + 1)].ravel()
        assert len(seen) == 48 and len(np.unique(seen)) == 48
        assert seen.min() >= 0 and seen.max() < n
    assert not np.array_equal(idx[:6], idx[6:])  # reshuffled
    np.testing.assert_array_equal(idx, draw("epoch", n, b, 12))  # reproducible
    assert not np.array_equal(idx, draw("epoch", n, b, 12, key=1))


@pytest.mark.parametrize("n", [1, 2, 50, 4000, 70_000])  # 0, 1, 1, 2 and 2 rounds of sorting
def test_permutation_is_jax_random_permutation_bitwise(n):
    keys = jax.random.split(jax.random.key(n), 64 if n < 10_000 else 4)
    ours = jax.jit(jax.vmap(permutation, in_axes=(0, None)), static_argnums=1)(keys, n)
    theirs = jax.vmap(lambda k: jax.random.permutation(k, n))(keys)
    assert ours.dtype == jnp.int32 and ours.shape == (len(keys), n)
    np.testing.assert_array_equal(ours, theirs)


def test_stable_order_keeps_equal_keys_in_place_order():
    rng = np.random.default_rng(0)
    for keys in (np.array([5, 3, 5, 1, 3, 3, 2**32 - 1, 0, 2**31, 2**31 - 1], np.uint32),
                 rng.integers(0, 4, 300).astype(np.uint32),  # many ties
                 rng.integers(0, 2**32, 300, dtype=np.uint64).astype(np.uint32)):
        expected = np.argsort(keys, kind="stable")
        np.testing.assert_array_equal(jax.jit(stable_order)(jnp.asarray(keys)), expected)
        _, lax_order = jax.lax.sort_key_val(jnp.asarray(keys), jnp.arange(len(keys)))
        np.testing.assert_array_equal(lax_order, expected)


def test_replacement_sampling_is_uniform_and_depends_only_on_step():
    idx = draw("replacement", 10, 100, 50)
    counts = np.bincount(idx.ravel(), minlength=10)
    assert counts.min() > 400 and counts.max() < 600  # 500 expected, sd ≈ 21
    key = jax.random.key(0)
    _, at_7 = sample_indices(init_sampler(10, "replacement"), key, jnp.int32(7), 100, 10,
                             "replacement")
    np.testing.assert_array_equal(idx[7], at_7)


def test_adam_beta2_near_one_keeps_its_complement_exact():
    """b2 is traced as 1 - b2 (computed in float64): a float32 b2 = 0.999999 would make the
    second-moment weight 1 - b2 wrong by 1.3%; here it is exact to float32 rounding."""
    hp = hparams(learning_rate=0.1, b2=0.999999)
    assert hp.one_minus_b2 == np.float32(1e-6)
    assert abs((1 - np.float32(0.999999)) / 1e-6 - 1) > 0.01  # what a float32 b2 would give
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    g = {"w": jnp.array([0.5, 0.1, -0.3])}
    tx = make_optimizer("adam", hp, total_steps=10)
    _, state = tx.update(g, tx.init(params), params)
    nu = state.inner_state[1][0].nu["w"]  # chain(decay, chain(scale_by_adam, lr))
    np.testing.assert_allclose(nu, 1e-6 * g["w"] ** 2, rtol=1e-6)
