"""The batched per-example path (``jaxsgd.measure._separable``): losses it proves a mean or a
scaled sum of per-example terms are computed from the batched program, the others from the
per-example loss — both exact against ``vmap(grad)`` of loss_fn(θ, e[None])."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsgd.measure._taps import TappedLoss
from jaxsgd.measure.per_example import example_gradient_gram, value_grad_and_example_norms

RNG = np.random.default_rng(1)
TOKENS = jnp.asarray(RNG.normal(size=(12, 5, 8)).astype(np.float32))  # 12 sequences of 5
LABELS = jnp.asarray(RNG.integers(0, 6, (12, 5)))
PARAMS = {"w": jnp.asarray(RNG.normal(size=(8, 16)).astype(np.float32)) / 3,
          "b": jnp.asarray(RNG.normal(size=16).astype(np.float32)) / 10,
          "v": jnp.asarray(RNG.normal(size=(16, 6)).astype(np.float32)) / 4}


def _logits(p, x):
    return jnp.tanh(x @ p["w"] + p["b"]) @ p["v"]


def _token_xent(logits, labels):
    flat = logits.reshape(-1, logits.shape[-1])  # [B·T, V]: T entries per example
    return -jnp.take_along_axis(jax.nn.log_softmax(flat), labels.reshape(-1, 1), -1)[:, 0]


def _mean_over_tokens(p, b):
    return jnp.mean(_token_xent(_logits(p, b[0]), b[1]))


def _scaled_sum(p, b):
    return jnp.sum(_token_xent(_logits(p, b[0]), b[1])) / 100.0


def _last_token_only(p, b):
    logits = _logits(p, b[0])[:, -1]  # a static index: gather on a non-example axis
    return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), b[1][:, -1:], -1))


def _batch_statistics(p, b):
    h = b[0] @ p["w"]
    h = (h - jnp.mean(h, axis=0)) + p["b"]  # centred over the batch: examples interact
    return jnp.mean(_token_xent(jnp.tanh(h) @ p["v"], b[1]))


def _weight_penalty(p, b):
    return _mean_over_tokens(p, b) + 1e-2 * jnp.sum(jnp.square(p["w"]))


def _token_count_normalised(p, b):
    mask = (b[1] > 0).reshape(-1)
    return jnp.sum(_token_xent(_logits(p, b[0]), b[1]) * mask) / jnp.sum(mask)


SEPARABLE = {"mean over tokens": (_mean_over_tokens, 12.0), "scaled sum": (_scaled_sum, 1.0),
             "last token": (_last_token_only, 12.0)}
NOT_SEPARABLE = {"batch statistics": (_batch_statistics, "broadcast_in_dim on a sum over"),
                 "weight penalty": (_weight_penalty, "add on a sum over examples"),
                 "count-normalised": (_token_count_normalised, "div on a sum over")}


def _reference(loss_fn):
    grads = jax.vmap(lambda e: jax.grad(loss_fn)(PARAMS, jax.tree.map(lambda a: a[None], e)))(
        (TOKENS, LABELS))
    return jax.tree.map(lambda g: jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), 1), grads), grads


def _check(loss_fn):
    want, grads = jax.jit(_reference, static_argnums=0)(loss_fn)
    _, _, norms = jax.jit(lambda p, b: value_grad_and_example_norms(loss_fn, p, b))(
        PARAMS, (TOKENS, LABELS))
    for name in PARAMS:
        np.testing.assert_allclose(norms[name], want[name], rtol=1e-4, err_msg=name)
    _, _, gram = jax.jit(lambda p, b: example_gradient_gram(loss_fn, p, b))(
        PARAMS, (TOKENS, LABELS))
    flat = jnp.concatenate([g.reshape(12, -1) for g in jax.tree.leaves(grads)], 1)
    np.testing.assert_allclose(gram, flat @ flat.T, rtol=1e-4, atol=1e-6 * float(jnp.max(gram)))


@pytest.mark.parametrize("name", list(SEPARABLE))
def test_separable_losses_use_the_batched_program_and_match_vmap_grad(name):
    loss_fn, factor = SEPARABLE[name]
    tapped = TappedLoss(loss_fn, PARAMS, (TOKENS, LABELS))
    assert tapped.separable and tapped.factor == factor, tapped.why_per_example
    assert "vmap" not in tapped.methods
    _check(loss_fn)


@pytest.mark.parametrize("name", list(NOT_SEPARABLE))
def test_other_losses_fall_back_to_the_per_example_program_and_stay_exact(name):
    loss_fn, reason = NOT_SEPARABLE[name]
    tapped = TappedLoss(loss_fn, PARAMS, (TOKENS, LABELS))
    assert not tapped.separable and reason in tapped.why_per_example, tapped.why_per_example
    _check(loss_fn)
