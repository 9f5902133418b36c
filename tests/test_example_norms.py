"""Per-example squared gradient norms from the loss's jaxpr (``method="auto"``), for models
written in plain JAX, flax linen, flax.nnx and equinox, and a small transformer, against
``vmap(grad)`` over examples: per leaf and in total, to 1e-4 relative (float32), with no leaf
falling back; and the per-example Gram matrix against the explicit per-example gradients."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsgd.measure._taps import TappedLoss
from jaxsgd.measure.noise import gradient_noise_scale
from jaxsgd.measure.per_example import (example_gradient_gram, example_norms_method,
                                        value_grad_and_example_norms)

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(24, 40)).astype(np.float32))
Y = jnp.asarray(RNG.integers(0, 10, 24))


def _xent(logits, labels):
    return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1))


def _pure_jax():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {"w1": jax.random.normal(k1, (40, 64)) / 6, "b1": jnp.zeros(64),
              "w2": jax.random.normal(k2, (64, 64)) / 8, "b2": jnp.full(64, 0.1),
              "w3": jax.random.normal(k3, (64, 10)) / 8, "b3": jnp.zeros(10)}

    def loss(p, b):
        h = jax.nn.relu(b[0] @ p["w1"] + p["b1"])
        h = jnp.tanh(jnp.dot(h, p["w2"]) + p["b2"])
        return _xent(h @ p["w3"] + p["b3"], b[1])

    return params, loss, (X, Y)


class _NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.l1, self.l2 = nnx.Linear(40, 32, rngs=rngs), nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.gelu(self.l1(x)))


def _nnx():
    graph, state = nnx.split(_NnxMLP(nnx.Rngs(0)))
    return state, lambda s, b: _xent(nnx.merge(graph, s)(b[0]), b[1]), (X, Y)


def _equinox():
    arrays, static = eqx.partition(eqx.nn.MLP(40, 10, 32, 2, key=jax.random.key(3)),
                                   eqx.is_array)
    return arrays, lambda a, b: _xent(jax.vmap(eqx.combine(a, static))(b[0]), b[1]), (X, Y)


class _CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, padding="VALID")(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def _linen_cnn():
    images = jnp.asarray(RNG.normal(size=(16, 8, 8, 3)).astype(np.float32))
    model = _CNN()
    params = model.init(jax.random.key(0), images[:1])["params"]
    return params, lambda p, b: _xent(model.apply({"params": p}, b[0]), b[1]), (images, Y[:16])


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
        x = x + nn.MultiHeadDotProductAttention(num_heads=2)(nn.LayerNorm()(x), mask=mask)
        return x + nn.Dense(32)(nn.gelu(nn.Dense(64)(nn.LayerNorm()(x))))


class _LM(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        positions = self.param("position", nn.initializers.normal(0.02), (24, 32))
        x = nn.Embed(50, 32)(tokens) + positions[:tokens.shape[1]]  # a static slice
        return nn.Dense(50)(nn.LayerNorm()(_Block()(x)))


def _transformer():
    """Embeddings, causal 2-head attention, LayerNorms, an MLP; one sequence is one example."""
    tokens = jnp.asarray(RNG.integers(0, 50, (8, 17)))
    model = _LM()
    params = model.init(jax.random.key(0), tokens[:1, :-1])["params"]
    return params, lambda p, b: _xent(model.apply({"params": p}, b[:, :-1]), b[:, 1:]), tokens


MODELS = {"pure JAX MLP": _pure_jax, "flax.nnx MLP": _nnx, "equinox MLP": _equinox,
          "flax linen CNN": _linen_cnn, "flax transformer": _transformer}


def _per_example_grads(loss_fn, params, batch):
    return jax.jit(jax.vmap(lambda p, e: jax.grad(loss_fn)(p, jax.tree.map(lambda a: a[None], e)),
                            in_axes=(None, 0)))(params, batch)


@pytest.mark.parametrize("name", list(MODELS))
def test_example_norms_equal_vmap_grad_per_leaf_and_in_total(name):
    params, loss_fn, batch = MODELS[name]()
    methods = jax.tree.leaves(example_norms_method(loss_fn, params, batch))
    assert "vmap" not in methods and "dense" in methods, methods
    tapped = TappedLoss(loss_fn, params, batch)  # the batched program, no unit example axis
    assert tapped.separable, tapped.why_per_example
    loss, grads, norms = jax.jit(
        lambda p, b: value_grad_and_example_norms(loss_fn, p, b))(params, batch)
    want = jax.tree.map(lambda g: jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=1),
                        _per_example_grads(loss_fn, params, batch))
    total = sum(jax.tree.leaves(want))
    np.testing.assert_allclose(sum(jax.tree.leaves(norms)), total, rtol=1e-4)
    for got, ref in zip(jax.tree.leaves(norms), jax.tree.leaves(want)):
        # relative per leaf; a leaf whose gradient vanishes (attention's key bias: softmax is
        # shift-invariant) is compared against the example's total instead
        assert np.all(np.abs(got - ref) <= 1e-4 * ref + 1e-6 * total)
    ref_loss, ref_grads = jax.jit(jax.value_and_grad(loss_fn))(params, batch)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-6)
    for got, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["pure JAX MLP", "flax transformer"])
def test_example_gradient_gram_equals_explicit_per_example_gradients(name):
    params, loss_fn, batch = MODELS[name]()
    _, _, gram = jax.jit(lambda p, b: example_gradient_gram(loss_fn, p, b))(
        params, batch)
    flat = jnp.concatenate([g.reshape(g.shape[0], -1) for g in
                            jax.tree.leaves(_per_example_grads(loss_fn, params, batch))], axis=1)
    want = flat @ flat.T
    np.testing.assert_allclose(gram, want, rtol=1e-4, atol=1e-5 * float(jnp.max(want)))


def test_noise_scale_of_the_layernorm_leaves_alone():
    """``leaves="LayerNorm"`` (Gray et al. 2024's proxy): the noise scale of the matching leaves
    from their per-example gradients; the other leaves' entries NaN; bad patterns refused."""
    params, loss_fn, batch = _transformer()
    got = jax.jit(lambda p, b: gradient_noise_scale(loss_fn, p, b, leaves="LayerNorm"))(
        params, batch)
    grads = _per_example_grads(loss_fn, params, batch)
    chosen = [g for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]
              if "LayerNorm" in jax.tree_util.keystr(path)]
    flat = jnp.concatenate([g.reshape(g.shape[0], -1) for g in chosen], axis=1)
    mean = jnp.mean(flat, axis=0)
    grad_sq = float(jnp.sum(mean ** 2))
    trace = float(jnp.mean(jnp.sum(flat ** 2, axis=1))) - grad_sq
    assert float(got.grad_sq_norm) == pytest.approx(grad_sq, rel=1e-4)
    assert float(got.trace_cov) == pytest.approx(trace, rel=1e-4)
    assert np.isnan(float(got.per_leaf.trace_cov["Dense_0"]["kernel"]))
    assert np.isfinite(float(got.per_leaf.trace_cov["LayerNorm_0"]["scale"]))
    with pytest.raises(ValueError, match="leaves: 'BatchNorm' matches no parameter path"):
        gradient_noise_scale(loss_fn, params, batch, leaves="BatchNorm")
    with pytest.raises(ValueError, match=r"leaves: '\[' is not a regular expression"):
        value_grad_and_example_norms(loss_fn, params, batch, leaves="[")
