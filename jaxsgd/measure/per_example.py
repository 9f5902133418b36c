"""Per-example gradient norms at almost the cost of one gradient, for any JAX model.

``method="taps"`` finds the parameters' linear uses in the loss's jaxpr
(``jaxsgd.measure._taps``: dense contractions, convolutions, biases, LayerNorm scales,
embedding lookups) and computes every leaf's per-example squared norms from one tapped
backward pass; a leaf used any other way gets exact ``vmap(grad)`` norms alone, and
``example_norms_method`` says which, per leaf. It works for plain JAX, flax linen, ``flax.nnx``
and equinox alike. ``method="layers"`` is the path below, for flax linen Dense and Conv layers
only, and faster where it applies; ``method="auto"`` (the default) takes it when it covers
every leaf, else the taps. ``method="vmap"`` is ``vmap(grad)`` over examples for every leaf.

For a mean loss L = (1/B) Σ_i ℓ_i over B independent examples, the gradient of a dense layer
y = x W + b is G_W = (1/B) Σ_i x_iᵀ δ_i with δ_i = ∂ℓ_i/∂y_i, so example i's own gradient is
g_i = x_iᵀ δ_i and (Goodfellow 2015)

    |g_i,W|² = |x_i|² · |δ_i|²,     |g_i,b|² = |δ_i|²          (x_i [in], δ_i [out]).

δ_i is what backpropagation already computes: adding a zero "perturbation" z to the layer's
output and differentiating L with respect to z gives ∂L/∂z_i = δ_i / B. So one backward pass
gives the mean gradient *and* every example's squared gradient norm, per layer, for the price
of a few row norms (O(B·(in + out)) against the O(B·in·out) matmuls). On the reference MLP the
extra cost is a few percent of a training step (benchmarks/noise_probe.py).

Layers are found by intercepting flax ``nn.Dense`` and ``nn.Conv`` calls made while ``loss_fn``
runs (``flax.linen.intercept_methods``), so this works for any ``loss_fn`` built on flax linen
modules, not only jaxsgd's models:

* ``nn.Dense`` on inputs [B, in]: the formula above; on inputs [B, T, ..., in] the per-example
  gradient Σ_t x_itᵀ δ_it is formed explicitly ([B, in, out]) or through the Gram matrices of
  x_i and δ_i, whichever is smaller.
* ``nn.Conv`` (no feature groups, 'SAME'/'VALID'/explicit padding): the per-example kernel
  gradient is patchesᵀ δ with the input's patches (``lax.conv_general_dilated_patches``),
  formed explicitly: [B, window·C_in, C_out].

Requirements: examples are independent (no batch statistics), each intercepted layer is called
once per forward pass, and every parameter leaf belongs to an intercepted layer. When any of
these fails (or ``loss_fn`` is not flax), ``method="auto"`` falls back to the exact
``vmap(grad)`` over examples, which costs about B gradients of one example each.

    value_grad_and_example_norms(loss_fn, params, batch)
        -> (loss [], grads (like params), sq_norms (like params, each leaf [B]))
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsgd._util import batch_size as _batch_size
from jaxsgd._util import key_name, leaf_paths
from jaxsgd.measure._taps import (TappedLoss, outer_gram, outer_sq_norms, value_grad_and_gram,
                                  value_grad_and_norms)

PyTree = Any
METHODS = ("auto", "taps", "layers", "vmap")


class _Call(NamedTuple):
    """One intercepted layer call: its parameter path, kind and the module (for its settings)."""

    path: tuple[str, ...]
    kind: str  # "dense" or "conv"
    module: nn.Module


class UnsupportedModel(ValueError):
    """The layer-wise path cannot handle this loss_fn (reason in the message)."""


def _kind(module: nn.Module, method_name: str) -> str | None:
    if method_name != "__call__":
        return None
    if type(module) is nn.Dense:
        return "dense"
    if type(module) is nn.Conv:
        return "conv"
    return None


def _tapped_loss(loss_fn, params, batch, perturbations):
    """loss_fn with each Dense/Conv output shifted by its perturbation; returns (loss, taps).

    With ``perturbations=None`` the outputs are unchanged and the taps record output shapes.
    taps: list of (_Call, layer input, output shape) in call order.
    """
    taps = []

    def interceptor(next_fun, args, kwargs, context):
        kind = _kind(context.module, context.method_name)
        if kind is None:
            return next_fun(*args, **kwargs)
        out = next_fun(*args, **kwargs)
        call = _Call(tuple(context.module.path), kind, context.module)
        taps.append((call, args[0], out.shape))
        if perturbations is not None:
            out = out + perturbations[len(taps) - 1]
        return out

    with nn.intercept_methods(interceptor):
        loss = loss_fn(params, batch)
    return loss, taps


def _check_layers(params, calls: list[_Call]) -> None:
    """UnsupportedModel unless every leaf is the kernel/bias of exactly one intercepted call."""
    seen = [c.path for c in calls]
    repeated = {p for p in seen if seen.count(p) > 1}
    if repeated:
        raise UnsupportedModel(f"layers called more than once per forward pass: {sorted(repeated)}")
    for call in calls:
        if call.kind == "conv" and (call.module.feature_group_count != 1
                                    or isinstance(call.module.padding, str)
                                    and call.module.padding.upper() not in ("SAME", "VALID")):
            raise UnsupportedModel(f"conv layer {'/'.join(call.path)}: feature groups or padding "
                                   f"{call.module.padding!r} are not supported")
    covered = {(*c.path, name) for c in calls for name in ("kernel", "bias")}
    missing = [p for p in leaf_paths(params) if p not in covered]
    if missing:
        raise UnsupportedModel("parameters outside any flax Dense/Conv layer: "
                               + ", ".join("/".join(map(str, p)) for p in missing))


def _dense_sq_norms(x, delta):
    """Per-example |g_W|², |g_b|² of y = x W + b: x [B, ..., in], delta [B, ..., out] -> [B]."""
    b = x.shape[0]
    x = x.reshape(b, -1, x.shape[-1])
    delta = delta.reshape(b, -1, delta.shape[-1])
    bias = jnp.sum(jnp.square(jnp.sum(delta, axis=1)), axis=-1)
    return outer_sq_norms(x, delta), bias


def _padding(module: nn.Conv, num_spatial: int):
    padding = module.padding
    if isinstance(padding, str):
        return padding.upper()
    if isinstance(padding, int):
        return [(padding, padding)] * num_spatial
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def _tuple(value, n: int) -> tuple[int, ...]:
    if value is None:
        return (1,) * n
    return (value,) * n if isinstance(value, int) else tuple(value)


def _layer_taps(loss_fn, params, batch):
    """(loss, grads, [(call, layer input, δ [B, ..., out])]) from one tapped backward pass."""
    b = _batch_size(batch)
    # Trace once (abstractly) to learn the layers and their output shapes.
    calls, shapes = [], []

    def probe_shapes(p, d):
        loss, taps = _tapped_loss(loss_fn, p, d, None)
        calls.extend(t[0] for t in taps)
        shapes.extend(jax.ShapeDtypeStruct(t[2], loss.dtype) for t in taps)
        return loss

    jax.eval_shape(probe_shapes, params, batch)
    _check_layers(params, calls)
    zeros = [jnp.zeros(s.shape, s.dtype) for s in shapes]

    def tapped(p, z):
        loss, taps = _tapped_loss(loss_fn, p, batch, z)
        return loss, [t[1] for t in taps]

    (loss, inputs), (grads, dz) = jax.value_and_grad(tapped, argnums=(0, 1), has_aux=True)(
        params, zeros)
    # ∂L/∂z_i = δ_i / B
    return loss, grads, [(c, x, d * b) for c, x, d in zip(calls, inputs, dz)]


def _layer_inputs(call: _Call, x):
    """What multiplies the kernel: the input itself (Dense) or its patches (Conv)."""
    if call.kind == "dense":
        return x
    num_spatial = x.ndim - 2
    if num_spatial > 3:
        raise UnsupportedModel(f"conv with {num_spatial} spatial dims")
    module = call.module
    window = _tuple(module.kernel_size, num_spatial)
    spatial = "DHW"[-num_spatial:]
    dims = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
    return jax.lax.conv_general_dilated_patches(
        x, window, _tuple(module.strides, num_spatial), _padding(module, num_spatial),
        lhs_dilation=_tuple(module.input_dilation, num_spatial),
        rhs_dilation=_tuple(module.kernel_dilation, num_spatial),
        dimension_numbers=jax.lax.conv_dimension_numbers(
            x.shape, (*window, x.shape[-1], module.features), dims))


def _by_leaf(params, per_layer: dict):
    def leaf(path, _):
        keys = tuple(key_name(k) for k in path)
        return per_layer[keys[:-1]][keys[-1]]

    return jax.tree_util.tree_map_with_path(leaf, params)


def _layer_norms(loss_fn, params, batch):
    loss, grads, taps = _layer_taps(loss_fn, params, batch)
    sq_norms = {}
    for call, x, delta in taps:
        kernel, bias = _dense_sq_norms(_layer_inputs(call, x), delta)
        sq_norms[call.path] = {"kernel": kernel, "bias": bias}
    return loss, grads, _by_leaf(params, sq_norms)


def _dense_gram(x, delta):
    """Σ over kernel and bias of g_i·g_j: x [B, ..., in], delta [B, ..., out] -> [B, B]."""
    b = x.shape[0]
    x = x.reshape(b, -1, x.shape[-1])
    delta = delta.reshape(b, -1, delta.shape[-1])
    bias = jnp.sum(delta, axis=1)
    return bias @ bias.T + outer_gram(x, delta)


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
) -> tuple[jax.Array, PyTree, PyTree]:
    """Mean loss, its gradient, and each example's squared gradient norm per parameter leaf.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean of independent per-example losses.
      params: parameter pytree.
      batch: pytree of arrays with a leading example axis of size B.
      method: "taps" (the jaxpr's parameter uses, ``vmap(grad)`` for the leaves it cannot
        prove exact: ``example_norms_method``), "layers" (flax Dense/Conv interception;
        ``UnsupportedModel`` if it cannot apply), "auto" (layers where they cover every leaf,
        else taps) or "vmap" (``vmap(grad)`` for every leaf).

    Returns:
      (loss [], grads like params, sq_norms like params with each leaf [B]): sq_norms[leaf][i]
      = |∂ℓ_i/∂leaf|², the squared norm of example i's own gradient (loss_fn on it alone).
    """
    if method not in METHODS:
        raise ValueError(f"method: {method!r}; known: {', '.join(METHODS)}")
    if method == "vmap":
        return _vmap_norms(loss_fn, params, batch)
    if method == "layers" or (method == "auto" and _layers_apply(loss_fn, params, batch)):
        return _layer_norms(loss_fn, params, batch)
    return value_grad_and_norms(_tapped(loss_fn, params, batch), params, batch)


def example_gradient_gram(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    batch: PyTree,
    *,
    method: str = "auto",
) -> tuple[jax.Array, PyTree, jax.Array]:
    """Mean loss, its gradient, and the Gram matrix K_ij = g_i·g_j of per-example gradients.

    K [B, B] sums over every parameter leaf. On the layer path a Dense layer on [B, in]
    contributes (X Xᵀ) ∘ (Δ Δᵀ) + Δ Δᵀ, O(B²·(in + out)), without any per-example gradient;
    other layers form their per-example kernel gradients explicitly. The "vmap" path holds all
    B per-example gradients at once (B × parameters floats). ``method`` as in
    ``value_grad_and_example_norms``. The noise scale's bootstrap (``jaxsgd.analysis.intervals``)
    resamples examples through K: |mean of resampled g|² = wᵀKw / B².
    """
    if method not in METHODS:
        raise ValueError(f"method: {method!r}; known: {', '.join(METHODS)}")
    if method == "taps" or (method == "auto" and not _layers_apply(loss_fn, params, batch)):
        return value_grad_and_gram(_tapped(loss_fn, params, batch), params, batch)
    if method != "vmap":
        loss, grads, taps = _layer_taps(loss_fn, params, batch)
        gram = sum(_dense_gram(_layer_inputs(c, x), d) for c, x, d in taps)
        return loss, grads, gram
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)

    def one(example):
        g = jax.grad(loss_fn)(params, jax.tree.map(lambda a: a[None], example))
        return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(g)])

    flat = jax.vmap(one)(batch)
    return loss, grads, flat @ flat.T


def _tapped(loss_fn, params, batch) -> TappedLoss:
    return TappedLoss(loss_fn, params, jax.tree.map(lambda a: a[0], batch))


def _layers_apply(loss_fn, params, batch) -> bool:
    """Whether the flax Dense/Conv interception covers every leaf (trace only). Where it does,
    ``method="auto"`` takes it: it costs 1.0–1.06 gradients on the reference MLP against
    1.09–1.44 for the jaxpr taps, whose per-example loss ℓ(θ, e[None]) carries a unit axis
    that vmap turns into transposed copies (benchmarks/example_norms.py)."""
    try:
        jax.eval_shape(lambda p, d: _layer_norms(loss_fn, p, d), params, batch)
    except UnsupportedModel:
        return False
    return True


def example_norms_method(loss_fn, params, batch, *, method: str = "auto") -> PyTree:
    """How ``method`` ("auto" or "taps") computes each leaf's per-example norms, like
    ``params``: "layers" (flax Dense/Conv interception: "auto" only, when it covers every
    leaf), else the jaxpr taps' "dense", "embedding", "explicit", "unused", or "vmap" where no
    faster way is proved exact (``jaxsgd.measure._taps``). By tracing only."""
    if method not in ("auto", "taps"):
        raise ValueError(f"method: {method!r}; known: auto, taps")
    if method == "auto" and _layers_apply(loss_fn, params, batch):
        return jax.tree.map(lambda _: "layers", params)
    tapped = _tapped(loss_fn, params, batch)
    return jax.tree.unflatten(tapped.param_def, tapped.methods)


def fused_method(loss_fn, params, batch) -> str | None:
    """The ``method`` that gives every leaf's per-example norms for about one backward pass —
    "layers" where the flax interception covers every leaf, else "taps" where no leaf needs
    ``vmap(grad)`` — or None: what ``method="auto"`` would choose, decided once (trace only),
    so a training step computing the norms at every step does not decide it again."""
    if _layers_apply(loss_fn, params, batch):
        return "layers"
    return None if "vmap" in _tapped(loss_fn, params, batch).methods else "taps"
