"""Per-example squared gradient norms for any JAX loss, from its jaxpr (one backward pass).

The loss of one example is ℓ(θ, e) = loss_fn(θ, e[None]) (``loss_fn`` is a mean of independent
per-example losses). The jaxpr interpreted here is that of ``loss_fn`` on the whole batch where
``jaxsgd.measure._separable`` proves it a mean (or scaled sum) of per-example terms — it then
also says which axis of each value belongs to which example —, else that of ℓ, vmapped over
the examples (exact as well, but its unit example axis costs transposed copies: up to 1.27× a
gradient against 1.02× for 16 vmapped runs of an MLP). A *use* of a parameter leaf is an operation
that is linear in a value P derived from the leaf by structural operations only (the *chain*:
reshape, transpose, broadcast, static slice, dtype conversion), with no other operand derived
from a parameter:

* ``dot_general`` (dense layers, attention projections, tied output layers),
* ``conv_general_dilated`` with P as the kernel,
* ``add``/``sub`` (biases, LayerNorm shifts) and ``mul`` (LayerNorm scales),
* ``gather`` from P (embedding lookups).

Each use's output y gets a zero *tap* z added. Differentiating the tapped batch loss (or the
mean of the vmapped tapped ℓ) with respect to θ and the taps gives in one backward pass the
mean gradient and every example's output cotangent δ_i = B·∂L/∂z_i (for a mean; the rows of
example i along its example axis, in the batched program). In the batched program a use whose
output has no example axis (a parameter used before the examples enter) makes its leaf
"vmap". Example
i's gradient of P is the transpose of the linear map P ↦ y at δ_i, and of the leaf the transpose
of its chain after that. Its squared norm is taken per leaf by one of these methods:

* "dense": the leaf's only use is a ``dot_general`` without batch dimensions and its chain keeps
  norms (no broadcast). With the other operand's rows x_t (t over its free axes, e.g. a
  sequence) and δ_t, g = Σ_t x_t ⊗ δ_t and |g|² = Σ_{t,s} (x_t·x_s)(δ_t·δ_s): |x|²·|δ|² for one
  row, the Gram form when T²(K + N) < K·N, else Σ_t x_t ⊗ δ_t formed per example;
* "embedding": the leaf's only use is a row lookup (``jnp.take(E, ids, axis=0)``), the same
  with x_t one-hot: |g|² = Σ_{t,s} [id_t = id_s] δ_t·δ_s;
* "explicit": every use is recognised, but not as above (several uses, a bias broadcast over a
  sequence, a LayerNorm scale, a convolution kernel): example i's gradient of the leaf is
  formed (vmapped transposes, B × the leaf's size) and summed over its uses;
* "vmap": some use is not recognised (a nonlinear function of a parameter, a use inside a
  loop or a custom derivative): that leaf's per-example gradients come from ``vmap(grad)`` of
  ℓ — exact, at about B gradients of one example;
* "unused": the loss does not depend on the leaf (its norms are 0).

``TappedLoss(loss_fn, params, batch).methods`` reports the method per leaf and ``.separable``
the program (trace only); ``value_grad_and_norms`` computes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from jaxsgd.measure._separable import NotSeparable, Rows, example_axes, inner

PyTree = Any

_CHAIN = {"convert_element_type", "reshape", "transpose", "broadcast_in_dim", "squeeze",
          "expand_dims", "copy", "copy_p", "reduce_precision", "slice"}
_CHANGES_NORM = {"broadcast_in_dim", "slice"}  # chain links after which |g_P| ≠ |g_leaf|
_CALLS = {"jit", "pjit", "closed_call", "core_call"}
_LINEAR = {"dot_general", "conv_general_dilated", "add", "sub", "mul", "gather"}
METHODS = ("dense", "embedding", "explicit", "vmap", "unused")


class _Use(NamedTuple):
    """One linear use of a parameter leaf (static: the program's structure)."""

    leaf: int
    chain: tuple  # ((primitive, params), ...) from the leaf to the operand P
    primitive: Any
    params: dict
    position: int  # which operand of the use is P
    shape: jax.ShapeDtypeStruct  # of its output (one example, or the batch when separable)
    others: tuple | None  # separable: the Rows of each other operand
    out: Rows | None  # separable: the Rows of the output


class _Found(NamedTuple):
    uses: list  # [_Use], in evaluation order
    unsupported: dict  # leaf -> reason
    notes: dict | None  # separable: variable -> Rows/Total (``_separable.example_axes``)


def _linear_in(name: str, position: int) -> bool:
    if name == "gather":
        return position == 0  # the looked-up array, not the indices
    if name == "conv_general_dilated":
        return position == 1  # the kernel
    return True


def _interpret(closed, args, origins, found: _Found | None, taps, recorded):
    """Evaluate ``closed`` on ``args``. ``origins[i]``: (leaf, chain) for an argument derived
    from a parameter leaf, else None. With ``found``, each use is appended to it; with
    ``taps``, use k's output gets ``taps[k]`` added and its other operands are appended to
    ``recorded``. Returns (outputs, their origins)."""
    jaxpr = closed.jaxpr
    env, where = {}, {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, closed.consts))
    for v, a, o in zip(jaxpr.invars, args, origins):
        env[v] = a
        if o is not None:
            where[v] = o
    for eqn in jaxpr.eqns:
        values = [read(v) for v in eqn.invars]
        came = [None if isinstance(v, jcore.Literal) else where.get(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in _CALLS:
            outs, out_origins = _interpret(inner(eqn), values, came, found, taps, recorded)
            for v, x, o in zip(eqn.outvars, outs, out_origins):
                env[v] = x
                if o is not None:
                    where[v] = o
            continue
        outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
        outs = outs if eqn.primitive.multiple_results else [outs]
        derived = [i for i, o in enumerate(came) if o is not None]
        if derived:
            if name in _CHAIN and len(values) == 1:
                leaf, chain = came[0]
                where[eqn.outvars[0]] = (leaf, chain + ((eqn.primitive, dict(eqn.params)),))
            elif name in _LINEAR and len(derived) == 1 and _linear_in(name, derived[0]):
                position = derived[0]
                if found is not None:
                    leaf, chain = came[position]
                    others = out = None
                    if found.notes is not None:
                        others = tuple(None if isinstance(v, jcore.Literal)
                                       else found.notes.get(v)
                                       for i, v in enumerate(eqn.invars) if i != position)
                        out = found.notes.get(eqn.outvars[0])
                        if (not isinstance(out, Rows) or eqn.invars[position] in found.notes
                                or not all(isinstance(o, Rows) for o in others)):
                            found.unsupported.setdefault(
                                leaf, f"used by {name} apart from the examples")
                    found.uses.append(_Use(leaf, chain, eqn.primitive, dict(eqn.params),
                                           position, jax.ShapeDtypeStruct(outs[0].shape,
                                                                          outs[0].dtype),
                                           others, out))
                if taps is not None:
                    outs = [outs[0] + taps[len(recorded)]]
                    recorded.append([x for i, x in enumerate(values) if i != position])
            elif found is not None:
                for i in derived:
                    found.unsupported.setdefault(came[i][0], f"used by {name}")
        for v, x in zip(eqn.outvars, outs):
            env[v] = x
    return ([read(v) for v in jaxpr.outvars],
            [None if isinstance(v, jcore.Literal) else where.get(v) for v in jaxpr.outvars])


def _keeps_norm(chain) -> bool:
    return all(p.name not in _CHANGES_NORM for p, _ in chain)


def _is_dense(use: _Use) -> bool:
    if use.primitive.name != "dot_general":
        return False
    _, (lhs_batch, rhs_batch) = use.params["dimension_numbers"]
    return not lhs_batch and not rhs_batch


def _is_row_lookup(use: _Use) -> bool:
    """``jnp.take(P, ids, axis=0)`` on a 2-D P: one whole row per index."""
    if use.primitive.name != "gather":
        return False
    dn, sizes = use.params["dimension_numbers"], use.params["slice_sizes"]
    return (tuple(dn.collapsed_slice_dims) == (0,) and tuple(dn.start_index_map) == (0,)
            and not tuple(dn.operand_batching_dims) and len(sizes) == 2 and sizes[0] == 1)


class TappedLoss:
    """The loss of ``loss_fn`` with its parameter uses found (by tracing only).

    Where ``_separable.example_axes`` proves ``loss_fn`` a mean (or scaled sum) of
    per-example terms, the uses are those of the batched program (``separable``: True), else
    of the per-example loss ℓ(θ, e) = loss_fn(θ, e[None]), vmapped (``why_per_example``:
    the reason). ``methods``: per parameter leaf (in ``jax.tree.leaves`` order), one of
    ``METHODS``; ``found.unsupported``: leaf -> why it needs "vmap".
    """

    def __init__(self, loss_fn: Callable, params: PyTree, batch: PyTree):
        self.param_def = jax.tree.structure(params)
        self.batch_def = jax.tree.structure(batch)
        self.num_params = self.param_def.num_leaves
        spec = lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))  # noqa: E731
        flat_params = [spec(x) for x in jax.tree.leaves(params)]
        flat_batch = [spec(x) for x in jax.tree.leaves(batch)]

        def batched(*flat):
            return loss_fn(jax.tree.unflatten(self.param_def, flat[:self.num_params]),
                           jax.tree.unflatten(self.batch_def, flat[self.num_params:]))

        def one(*flat):
            return batched(*flat[:self.num_params], *(e[None] for e in flat[self.num_params:]))

        self.one = one
        self.separable, self.factor, self.why_per_example = False, None, None
        size = flat_batch[0].shape[0]
        self.closed = jax.make_jaxpr(batched)(*flat_params, *flat_batch)
        try:
            try:
                other = jax.make_jaxpr(batched)(*flat_params, *(
                    jax.ShapeDtypeStruct((size + 1, *x.shape[1:]), x.dtype) for x in flat_batch))
            except Exception as error:  # noqa: BLE001 - any failure means: not provable
                raise NotSeparable(f"loss_fn fails at batch size {size + 1}: {error}") from None
            notes, self.factor = example_axes(self.closed, other,
                                              [False] * len(flat_params) + [True] * len(flat_batch),
                                              size)
            self.separable = True
        except NotSeparable as reason:
            self.why_per_example = str(reason)
            notes = None
            flat_batch = [jax.ShapeDtypeStruct(x.shape[1:], x.dtype) for x in flat_batch]
            self.closed = jax.make_jaxpr(one)(*flat_params, *flat_batch)
        self.found = _Found([], {}, notes)
        flat = [*flat_params, *flat_batch]
        jax.eval_shape(lambda *f: _interpret(self.closed, f, self.origins(len(f)), self.found,
                                             None, [])[0], *flat)
        self.methods = [self._method(i) for i in range(self.num_params)]

    def origins(self, count: int) -> list:
        return [(i, ()) for i in range(self.num_params)] + [None] * (count - self.num_params)

    def uses_of(self, leaf: int) -> list[int]:
        return [k for k, u in enumerate(self.found.uses) if u.leaf == leaf]

    def _method(self, leaf: int) -> str:
        uses = [self.found.uses[k] for k in self.uses_of(leaf)]
        if leaf in self.found.unsupported:
            return "vmap"
        if not uses:
            return "unused"
        if len(uses) == 1 and _keeps_norm(uses[0].chain):
            if _is_dense(uses[0]):
                return "dense"
            if _is_row_lookup(uses[0]):
                return "embedding"
        return "explicit"

    def tapped(self, flat_params, flat_batch, taps):
        """(L, recorded operands) of the program (the batch, or one example), use k's output
        shifted by ``taps[k]``."""
        recorded = []
        outs, _ = _interpret(self.closed, [*flat_params, *flat_batch],
                             self.origins(self.num_params + len(flat_batch)), None, taps,
                             recorded)
        return outs[0], recorded


# --------------------------------------------------------------------------- the norms


def _dense_rows(use: _Use, other, delta):
    """(x [B, T, K], δ [B, T, N]) of a dense use: g_i = Σ_t x_it ⊗ δ_it (K, N: the parameter
    operand's contracted and free axes, in any consistent order)."""
    (lhs_c, rhs_c), _ = use.params["dimension_numbers"]
    b = other.shape[0]
    contract = (rhs_c if use.position == 0 else lhs_c)  # the other operand's contracted axes
    free = [a for a in range(other.ndim - 1) if a not in contract]
    x = jnp.transpose(other, (0, *(a + 1 for a in free), *(a + 1 for a in contract)))
    t = math.prod(other.shape[a + 1] for a in free)
    x = x.reshape(b, t, -1)
    # Output axes: the lhs's free axes, then the rhs's. The other operand's come first when it
    # is the lhs (the parameter is the rhs), last otherwise.
    n = delta[0].size // t
    if use.position == 1:
        d = delta.reshape(b, t, n)
    else:
        d = jnp.swapaxes(delta.reshape(b, n, t), 1, 2)
    return x, d


def outer_sq_norms(x, d):
    """|Σ_t x_t ⊗ δ_t|² per example: x [B, T, K], δ [B, T, N] -> [B] (the cheapest of
    |x|²|δ|² for T = 1, the Gram form Σ_{t,s} (x_t·x_s)(δ_t·δ_s), the outer product formed)."""
    t, k, n = x.shape[1], x.shape[2], d.shape[2]
    if t == 1:
        return jnp.sum(jnp.square(x[:, 0]), -1) * jnp.sum(jnp.square(d[:, 0]), -1)
    if t * t * (k + n) < k * n:
        return jnp.sum(jnp.einsum("bti,bsi->bts", x, x) * jnp.einsum("bto,bso->bts", d, d),
                       axis=(1, 2))
    return jnp.sum(jnp.square(jnp.einsum("bti,bto->bio", x, d)), axis=(1, 2))


def outer_gram(x, d):
    """K_ij = g_i·g_j for g_i = Σ_t x_it ⊗ δ_it: x [B, T, K], δ [B, T, N] -> [B, B]
    ((XXᵀ)∘(ΔΔᵀ) for T = 1, the Gram form over T, or the outer products formed)."""
    b, t, k, n = x.shape[0], x.shape[1], x.shape[2], d.shape[2]
    if t == 1:
        return (x[:, 0] @ x[:, 0].T) * (d[:, 0] @ d[:, 0].T)
    if t * t * (k + n) < k * n:
        return jnp.einsum("atbs,atbs->ab", jnp.einsum("ati,bsi->atbs", x, x),
                          jnp.einsum("ato,bso->atbs", d, d))
    g = jnp.einsum("bti,bto->bio", x, d).reshape(b, -1)
    return g @ g.T


def _lookup_rows(use: _Use, ids, delta):
    """(ids [B, T], δ rows [B, T, D]) of a row lookup: g_i = Σ_t e_{id_t} ⊗ δ_t."""
    b = ids.shape[0]
    offset = tuple(use.params["dimension_numbers"].offset_dims)  # the row's axis in the output
    rows = jnp.moveaxis(delta, offset[0] + 1, -1)
    return ids.reshape(b, -1), rows.reshape(b, -1, rows.shape[-1])


def _explicit_grads(tapped: TappedLoss, leaf: int, flat_params, recorded, deltas):
    """Example i's gradient of ``leaf`` [B, *leaf shape]: Σ over its uses of the transposes."""
    value = flat_params[leaf]

    def one(others_by_use, delta_by_use):
        total = jnp.zeros_like(value)
        for k, others, delta in zip(tapped.uses_of(leaf), others_by_use, delta_by_use):
            use = tapped.found.uses[k]

            def through(leaf_value, use=use, others=others):
                p = leaf_value
                for primitive, params in use.chain:
                    p = primitive.bind(p, **params)
                operands = list(others)
                operands.insert(use.position, p)
                return use.primitive.bind(*operands, **use.params)

            _, transpose = jax.vjp(through, value)
            total = total + transpose(delta)[0]
        return total

    ks = tapped.uses_of(leaf)
    return jax.vmap(one)([recorded[k] for k in ks], [deltas[k] for k in ks])


class _Pass(NamedTuple):
    """One tapped backward pass over a batch (flat, in leaf order)."""

    loss: jax.Array
    grads: list
    recorded: list  # per use: its other operands, [B, ...] each
    deltas: list  # per use: ∂ℓ_i/∂y_i [B, ...]
    vmapped: dict  # leaf -> per-example gradients [B, *leaf] for "vmap" leaves


def _split(x, rows: Rows | None, size: int):
    """[B, ...] from a batched value: example i's entries, its example axis (``rows.group``
    long) in place (None: returned as is, the value of a use that is never read)."""
    if rows is None:
        return x
    x = jnp.moveaxis(x, rows.axis, 0)
    return jnp.moveaxis(x.reshape(size, rows.group, *x.shape[1:]), 1, rows.axis + 1)


def _run(tapped: TappedLoss, params: PyTree, batch: PyTree, selected=None) -> _Pass:
    flat_params, flat_batch = jax.tree.leaves(params), jax.tree.leaves(batch)
    b = flat_batch[0].shape[0]
    uses = tapped.found.uses
    if tapped.separable:
        zeros = [jnp.zeros(u.shape.shape, u.shape.dtype) for u in uses]

        def mean_loss(fp, taps):
            return tapped.tapped(fp, flat_batch, taps)
    else:
        zeros = [jnp.zeros((b, *u.shape.shape), u.shape.dtype) for u in uses]

        def mean_loss(fp, taps):
            losses, recorded = jax.vmap(lambda e, z: tapped.tapped(fp, e, z))(flat_batch, taps)
            return jnp.mean(losses), recorded

    (loss, recorded), (grads, dtaps) = jax.value_and_grad(mean_loss, argnums=(0, 1),
                                                          has_aux=True)(flat_params, zeros)
    if tapped.separable:
        recorded = [[_split(x, r, b) for x, r in zip(xs, u.others or [None] * len(xs))]
                    for xs, u in zip(recorded, uses)]
        deltas = [_split(d * tapped.factor, u.out, b) for d, u in zip(dtaps, uses)]
    else:
        deltas = [d * b for d in dtaps]
    fallback = [i for i, m in enumerate(tapped.methods)
                if m == "vmap" and (selected is None or selected[i])]
    vmapped = {}
    if fallback:
        def one(example):
            def loss_of(chosen):
                fp = list(flat_params)
                for i, v in zip(fallback, chosen):
                    fp[i] = v
                return tapped.one(*fp, *example)

            return jax.grad(loss_of)([flat_params[i] for i in fallback])

        vmapped = dict(zip(fallback, jax.vmap(one)(flat_batch)))
    return _Pass(loss, grads, recorded, deltas, vmapped)


def _factors(tapped: TappedLoss, run: _Pass, flat_params, leaf: int):
    """(method, its per-example factors) of one leaf: dense (x [B,T,K], δ [B,T,N]),
    embedding (ids [B,T], rows δ [B,T,D]), or the per-example gradients flattened [B, size]."""
    method, ks = tapped.methods[leaf], tapped.uses_of(leaf)
    if method == "dense":
        use = tapped.found.uses[ks[0]]
        return method, _dense_rows(use, run.recorded[ks[0]][0], run.deltas[ks[0]])
    if method == "embedding":
        use = tapped.found.uses[ks[0]]
        return method, _lookup_rows(use, run.recorded[ks[0]][0], run.deltas[ks[0]])
    if method == "explicit":
        g = _explicit_grads(tapped, leaf, flat_params, run.recorded, run.deltas)
    elif method == "vmap":
        g = run.vmapped[leaf]
    else:
        return method, None
    return "flat", g.reshape(g.shape[0], -1)


def value_grad_and_norms(tapped: TappedLoss, params: PyTree, batch: PyTree, selected=None):
    """(mean loss, grads like params, squared per-example norms like params, leaves [B]).
    ``selected`` (a bool per leaf; None: all): the other leaves' norms are not computed (NaN)."""
    run = _run(tapped, params, batch, selected)
    flat_params = jax.tree.leaves(params)
    b = jax.tree.leaves(batch)[0].shape[0]
    norms = []
    for i in range(tapped.num_params):
        if selected is not None and not selected[i]:
            norms.append(jnp.full((b,), jnp.nan, run.loss.dtype))
            continue
        method, f = _factors(tapped, run, flat_params, i)
        if method == "dense":
            norms.append(outer_sq_norms(*f))
        elif method == "embedding":
            ids, rows = f
            same = (ids[:, :, None] == ids[:, None, :]).astype(rows.dtype)
            norms.append(jnp.sum(same * jnp.einsum("btd,bsd->bts", rows, rows), axis=(1, 2)))
        elif method == "flat":
            norms.append(jnp.sum(jnp.square(f), axis=1))
        else:
            norms.append(jnp.zeros((b,), run.loss.dtype))
    unflatten = lambda leaves: jax.tree.unflatten(tapped.param_def, leaves)  # noqa: E731
    return run.loss, unflatten(run.grads), unflatten(norms)


def value_grad_and_gram(tapped: TappedLoss, params: PyTree, batch: PyTree):
    """(mean loss, grads like params, K [B, B] = g_i·g_j summed over every leaf)."""
    run = _run(tapped, params, batch)
    flat_params = jax.tree.leaves(params)
    b = jax.tree.leaves(batch)[0].shape[0]
    gram = jnp.zeros((b, b), run.loss.dtype)
    for i in range(tapped.num_params):
        method, f = _factors(tapped, run, flat_params, i)
        if method == "dense":
            gram = gram + outer_gram(*f)
        elif method == "embedding":
            ids, rows = f
            same = (ids[:, :, None, None] == ids[None, None, :, :]).astype(rows.dtype)
            gram = gram + jnp.einsum("atbs,atbs->ab", same,
                                     jnp.einsum("atd,bsd->atbs", rows, rows))
        elif method == "flat":
            gram = gram + f @ f.T
    return run.loss, jax.tree.unflatten(tapped.param_def, run.grads), gram
