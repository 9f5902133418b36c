"""Per-example gradient norms at about the cost of one gradient, for any JAX model.

For a mean loss L = (1/B) Σ_i ℓ_i over B independent examples, the gradient of a dense layer
y = x W + b is G_W = (1/B) Σ_i x_iᵀ δ_i with δ_i = ∂ℓ_i/∂y_i, so example i's own gradient is
g_i = x_iᵀ δ_i and (Goodfellow 2015)

    |g_i,W|² = |x_i|² · |δ_i|²,     |g_i,b|² = |δ_i|²          (x_i [in], δ_i [out]).

δ_i is what backpropagation already computes: adding a zero "tap" z to the layer's output and
differentiating L with respect to z gives ∂L/∂z_i = δ_i / B. So one backward pass gives the
mean gradient *and* every example's squared gradient norm, per layer, for the price of a few
row norms (O(B·(in + out)) against the O(B·in·out) matmuls).

``method="auto"`` (the default) finds the parameters' linear uses in the loss's jaxpr
(``jaxsgd.measure._taps``: dense contractions, attention projections, convolutions, biases,
LayerNorm scales, embedding lookups; inputs with sequence or patch axes through per-example
Gram matrices) and taps them, in the batched program itself where ``loss_fn`` is proved a mean
of per-example terms (``jaxsgd.measure._separable``), else in the vmapped per-example loss. A
leaf used any other way gets exact ``vmap(grad)`` norms alone; ``example_norms_method`` says
which, per leaf. It works for plain JAX, flax linen, ``flax.nnx`` and equinox alike, and costs
0.99–1.00 gradients on the reference MLP and 1.3 on a small transformer
(``benchmarks/example_norms.py``). ``method="vmap"`` is ``vmap(grad)`` over examples for every
leaf (about B single-example gradients).

    value_grad_and_example_norms(loss_fn, params, batch)
        -> (loss [], grads (like params), sq_norms (like params, each leaf [B]))

``leaves`` (a regular expression searched in each leaf's path, "LayerNorm_0/scale") restricts
the norms to the leaves it matches — e.g. ``leaves="LayerNorm"``, the normalisation layers'
parameters whose noise scale tracks the whole model's in transformers (Gray et al. 2024) at
a fraction of the cost; the other leaves' norms are NaN (not computed).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxsgd._util import leaf_paths

from jaxsgd.measure._taps import TappedLoss, value_grad_and_gram, value_grad_and_norms

PyTree = Any
METHODS = ("auto", "vmap")


def _vmap_norms(loss_fn, params, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)

    def one(example):
        g = jax.grad(loss_fn)(params, jax.tree.map(lambda a: a[None], example))
        return jax.tree.map(lambda leaf: jnp.sum(jnp.square(leaf)), g)

    return loss, grads, jax.vmap(one)(batch)


def value_grad_and_example_norms(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    batch: PyTree,
    *,
    method: str = "auto",
    leaves: str | None = None,
) -> tuple[jax.Array, PyTree, PyTree]:
    """Mean loss, its gradient, and each example's squared gradient norm per parameter leaf.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean of independent per-example losses.
      params: parameter pytree.
      batch: pytree of arrays with a leading example axis of size B.
      method: "auto" (one tapped backward pass; ``vmap(grad)`` for the leaves it cannot prove
        exact: ``example_norms_method``) or "vmap" (``vmap(grad)`` for every leaf).
      leaves: a regular expression; only the leaves whose path ("a/b/c") it matches get norms
        (``selected_leaves``), the others NaN. None: every leaf.

    Returns:
      (loss [], grads like params, sq_norms like params with each leaf [B]): sq_norms[leaf][i]
      = |∂ℓ_i/∂leaf|², the squared norm of example i's own gradient (loss_fn on it alone).
    """
    _check_method(method)
    selected = selected_leaves(params, leaves)
    if method == "vmap":
        loss, grads, norms = _vmap_norms(loss_fn, params, batch)
        return loss, grads, jax.tree.map(
            lambda n, keep: n if keep else jnp.full_like(n, jnp.nan), norms,
            jax.tree.unflatten(jax.tree.structure(params), selected))
    return value_grad_and_norms(TappedLoss(loss_fn, params, batch), params, batch,
                                None if leaves is None else selected)


def leaves_pattern(leaves: str) -> re.Pattern:
    """``leaves`` compiled; a ``ValueError`` naming it when it is not a regular expression."""
    try:
        return re.compile(leaves)
    except (re.error, TypeError) as error:
        raise ValueError(f"leaves: {leaves!r} is not a regular expression ({error})") from None


def selected_leaves(params: PyTree, leaves: str | None) -> list[bool]:
    """Whether each leaf (``jax.tree.leaves`` order) has a path ("a/b/c") in which the regular
    expression ``leaves`` is found (``re.search``); all True for None. A pattern that matches
    no leaf is an error naming the paths."""
    paths = ["/".join(p) for p in leaf_paths(params)]
    if leaves is None:
        return [True] * len(paths)
    pattern = leaves_pattern(leaves)
    found = [pattern.search(p) is not None for p in paths]
    if not any(found):
        shown = ", ".join(paths[:8]) + (", ..." if len(paths) > 8 else "")
        raise ValueError(f"leaves: {leaves!r} matches no parameter path ({shown})")
    return found


def example_gradient_gram(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    batch: PyTree,
    *,
    method: str = "auto",
) -> tuple[jax.Array, PyTree, jax.Array]:
    """Mean loss, its gradient, and the Gram matrix K_ij = g_i·g_j of per-example gradients.

    K [B, B] sums over every parameter leaf. With "auto" a dense layer on [B, in] contributes
    (X Xᵀ) ∘ (Δ Δᵀ), O(B²·(in + out)), without any per-example gradient; other uses form
    their per-example gradients explicitly (``jaxsgd.measure._taps``). The "vmap" path holds
    all B per-example gradients at once (B × parameters floats). The noise scale's bootstrap
    (``jaxsgd.analysis.intervals``) resamples examples through K: |mean of resampled g|² =
    wᵀKw / B².
    """
    _check_method(method)
    if method == "auto":
        return value_grad_and_gram(TappedLoss(loss_fn, params, batch), params, batch)
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)

    def one(example):
        g = jax.grad(loss_fn)(params, jax.tree.map(lambda a: a[None], example))
        return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(g)])

    flat = jax.vmap(one)(batch)
    return loss, grads, flat @ flat.T


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method: {method!r}; known: {', '.join(METHODS)}")


def example_norms_method(loss_fn, params, batch) -> PyTree:
    """How ``method="auto"`` computes each leaf's per-example norms, like ``params``: "dense",
    "embedding", "explicit", "unused", or "vmap" where no faster way is proved exact
    (``jaxsgd.measure._taps``). By tracing only."""
    tapped = TappedLoss(loss_fn, params, batch)
    return jax.tree.unflatten(tapped.param_def, tapped.methods)


def fused_norms(loss_fn, params, batch, leaves: str | None = None) -> Callable | None:
    """``(params, batch) -> (loss, grads, sq_norms)`` giving the per-example norms of the
    leaves ``leaves`` selects in the one backward pass — ``value_grad_and_example_norms`` for
    batches shaped like ``batch`` — or None where a selected leaf needs ``vmap(grad)``. The
    loss is traced once here, so a training step computing the norms at every step (or in every
    microbatch) neither decides nor traces again."""
    tapped = TappedLoss(loss_fn, params, batch)
    selected = selected_leaves(params, leaves)
    if any(m == "vmap" and keep for m, keep in zip(tapped.methods, selected)):
        return None
    chosen = None if leaves is None else selected
    return lambda p, b: value_grad_and_norms(tapped, p, b, chosen)
