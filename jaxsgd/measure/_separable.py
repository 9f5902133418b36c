"""Which axis of every value in a batched loss's jaxpr belongs to which example.

``loss_fn(params, batch)`` traced at batch sizes B and B + 1 gives two jaxprs with the same
equations; an axis whose size differs between them is indexed by examples. ``example_axes``
walks both and proves, equation by equation, that the loss is *separable*:

    L(θ, batch) = s(B) · Σ_i f(θ, e_i),   with s(B) = c / B (a mean) or c (a scaled sum),

i.e. every example-dependent value has exactly one example axis on which entry r belongs to
example r // g (g entries per example: g = 1, or g = T after ``x.reshape(-1, V)`` of [B, T, V])
and is computed from that example alone, and the only operation across examples is a final sum
scaled by constants. Where that holds, one backward pass through the *batched* program gives
each example's own cotangents: B·∂L/∂y_i (mean) or ∂L/∂y_i (sum) is ∂ℓ_i/∂y_i for ℓ_i =
loss_fn(θ, e_i[None]), without the unit example axis of a vmapped per-example loss (which costs
up to 25% of a step in transposed copies on the reference MLP).

The proof is by rules per primitive (elementwise maps, reshapes that keep each example's
entries together, reductions and contractions over other axes, batched contractions that pair
example i with example i, gathers within an example, convolutions over the batch dimension);
any other operation on example-dependent values, a loss normalised by a batch-dependent value
(e.g. a count of unmasked tokens), or an example-independent term added to the sum (a weight
penalty) raises ``NotSeparable`` with the reason, and the caller uses the per-example form.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from jax.extend import core as jcore

CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "remat", "checkpoint",
                   "custom_jvp_call", "custom_vjp_call"})
_CUSTOM = frozenset({"custom_jvp_call", "custom_vjp_call"})
_ELEMENTWISE = frozenset("""
    abs acos acosh add add_any and asin asinh atan atan2 atanh bitcast_convert_type cbrt ceil
    clamp conj convert_element_type copy copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2
    expm1 floor ge gt igamma igammac imag integer_pow is_finite le lgamma log log1p logistic lt
    max min mul ne neg nextafter not or population_count pow real reduce_precision rem round
    rsqrt select_n shift_left shift_right_arithmetic shift_right_logical sign sin sinh sqrt square
    stop_gradient sub tan tanh xor optimization_barrier
""".split())
_REDUCE = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
                     "reduce_or", "reduce_xor", "argmax", "argmin"})
_ALONG = {"cumsum": "axis", "cumprod": "axis", "cummax": "axis", "cummin": "axis",
          "cumlogsumexp": "axis", "sort": "dimension", "concatenate": "dimension",
          "split": "axis"}


class Rows(NamedTuple):
    """A value's example axis: entry r along ``axis`` belongs to example r // ``group``."""

    axis: int
    group: int


class Total(NamedTuple):
    """A sum over examples times ``scale`` (its value in the traces at B and at B + 1)."""

    scale: tuple[float, float]


class NotSeparable(Exception):
    """The loss is not provably a scaled sum of per-example terms (the reason)."""


def example_axes(closed_a, closed_b, batched: list[bool], size: int) -> tuple[dict, float]:
    """Prove ``closed_a`` (traced at batch size ``size``) separable, against ``closed_b``
    (the same function at ``size + 1``). ``batched[k]``: whether argument k is a batch leaf
    (leading example axis). Returns ({variable of closed_a (nested calls too): Rows or Total;
    absent: example-independent}, factor), with ``factor`` = s(1)/s(B): example i's cotangent
    of a value y is ``factor``·∂L/∂y_i. Raises ``NotSeparable``."""
    notes: dict = {}
    ins = [Rows(0, 1) if b else None for b in batched]
    try:
        outs = _walk(closed_a, closed_b, ins, notes, size, inside_custom=False)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        # a primitive whose parameters these rules do not know (another JAX version): the
        # per-example form is exact, so fall back rather than guess
        raise NotSeparable(f"the loss's program could not be analysed ({error!r})") from None
    out = outs[0] if len(outs) == 1 else None
    if not isinstance(out, Total):
        raise NotSeparable("the loss is not a sum over examples")
    (sa, sb) = out.scale
    if math.isclose(sa * size, sb * (size + 1), rel_tol=1e-6):
        return notes, float(size)  # a mean: s(B) = c/B
    if math.isclose(sa, sb, rel_tol=1e-6):
        return notes, 1.0  # a scaled sum
    raise NotSeparable(f"the sum over examples is scaled by {sa:g} at B={size} and by {sb:g} "
                       f"at B={size + 1}, neither a mean nor a constant")


def inner(eqn) -> jcore.ClosedJaxpr:
    """The closed jaxpr of a call-like equation (``jit``, ``custom_jvp_call``, ...)."""
    jaxpr = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr",
                                                   eqn.params.get("fun_jaxpr")))
    return jaxpr if isinstance(jaxpr, jcore.ClosedJaxpr) else jcore.ClosedJaxpr(jaxpr, ())


def _walk(closed_a, closed_b, ins, notes, size, inside_custom) -> list:
    ja, jb = closed_a.jaxpr, closed_b.jaxpr
    scalars = {}  # variable -> (value at B, value at B + 1), for scalar constants
    for va, vb, ca, cb in zip(ja.constvars, jb.constvars, closed_a.consts, closed_b.consts):
        if getattr(ca, "shape", None) == () and getattr(cb, "shape", None) == ():
            scalars[va] = (float(ca), float(cb))
    for v, note in zip(ja.invars, ins):
        if note is not None:
            notes[v] = note
    if len(ja.eqns) != len(jb.eqns):
        raise NotSeparable("the loss's program differs between batch sizes")
    for ea, eb in zip(ja.eqns, jb.eqns):
        name = ea.primitive.name
        if name != eb.primitive.name or len(ea.outvars) != len(eb.outvars):
            raise NotSeparable("the loss's program differs between batch sizes")
        came = [None if isinstance(v, jcore.Literal) else notes.get(v) for v in ea.invars]
        if name in CALLS:
            custom = inside_custom or name in _CUSTOM
            count = len(inner(ea).jaxpr.invars)  # custom_vjp_call: the call's arguments last
            outs = _walk(inner(ea), inner(eb), came[len(came) - count:], notes, size, custom)
        else:
            outs = _rule(ea, eb, came, size, scalars)
        if inside_custom and any(isinstance(o, Total) for o in outs):
            raise NotSeparable(f"a custom derivative sums over examples ({name})")
        for v, note in zip(ea.outvars, outs):
            if note is not None:
                notes[v] = note
        if all(c is None for c in came) and len(ea.outvars) == 1 and not ea.outvars[0].aval.shape:
            value = _scalar_value(ea, eb, scalars)
            if value is not None:
                scalars[ea.outvars[0]] = value
    return [None if isinstance(v, jcore.Literal) else notes.get(v) for v in ja.outvars]


def _constant(va, vb, scalars):
    """(at B, at B + 1) of a scalar constant operand (a literal, a constant, or computed from
    those), or None."""
    if isinstance(va, jcore.Literal) and isinstance(vb, jcore.Literal):
        if getattr(va.val, "shape", ()) == () and getattr(vb.val, "shape", ()) == ():
            return float(va.val), float(vb.val)
        return None
    return None if isinstance(va, jcore.Literal) else scalars.get(va)


def _scalar_value(ea, eb, scalars):
    """(at B, at B + 1) of a scalar computed from scalar constants by + - × ÷, or None."""
    eqn = ea
    args = [_constant(va, vb, scalars) for va, vb in zip(ea.invars, eb.invars)]
    if any(a is None for a in args):
        return None
    ops = {"convert_element_type": lambda x: x, "neg": lambda x: -x, "copy": lambda x: x,
           "mul": lambda x, y: x * y, "div": lambda x, y: x / y, "add": lambda x, y: x + y,
           "sub": lambda x, y: x - y}
    op = ops.get(eqn.primitive.name)
    if op is None or len(args) != op.__code__.co_argcount:
        return None
    try:
        return tuple(op(*(a[t] for a in args)) for t in (0, 1))
    except ZeroDivisionError:
        return None


def _changed(eqn_a, eqn_b, k: int, size: int):
    """Rows of output k from its shapes at B and B + 1 (None: no example axis)."""
    sa, sb = eqn_a.outvars[k].aval.shape, eqn_b.outvars[k].aval.shape
    axes = [i for i, (x, y) in enumerate(zip(sa, sb)) if x != y]
    if len(sa) != len(sb) or len(axes) > 1:
        raise NotSeparable(f"{eqn_a.primitive.name} gives a value with several batch axes")
    if not axes:
        return None
    group = sb[axes[0]] - sa[axes[0]]
    if group <= 0 or sa[axes[0]] != group * size:
        raise NotSeparable(f"{eqn_a.primitive.name} gives an axis not a multiple of the batch")
    return Rows(axes[0], group)


def _rule(ea, eb, came, size, scalars) -> list:
    """The notes of one equation's outputs from its inputs' (``NotSeparable`` if unproved)."""
    name, params = ea.primitive.name, ea.params
    outs = [_changed(ea, eb, k, size) for k in range(len(ea.outvars))]
    if all(c is None for c in came):
        return outs  # a function of B alone (iota, a broadcast constant): separable
    if any(isinstance(c, Total) for c in came):
        return [_total_rule(ea, eb, came, scalars)]
    rows = [c for c in came if c is not None]
    shape_in = [v.aval.shape for v in ea.invars]
    first = came.index(rows[0])
    r = rows[0]
    if name in _ELEMENTWISE or name in _ALONG or name in ("rev", "pad", "slice",
                                                           "dynamic_slice", "top_k"):
        if any(c != r for c in rows):
            raise NotSeparable(f"{name} combines values with different example axes")
        expected = [r] * len(outs)
        if name in _ALONG and params[_ALONG[name]] == r.axis:
            raise NotSeparable(f"{name} runs along the example axis")
        if name == "rev" and r.axis in params["dimensions"]:
            raise NotSeparable("rev reverses the example axis")
        if name == "pad" and tuple(params["padding_config"][r.axis]) != (0, 0, 0):
            raise NotSeparable("pad pads the example axis")
        if name == "slice" and (params["start_indices"][r.axis] != 0
                                or params["limit_indices"][r.axis] != shape_in[0][r.axis]
                                or (params["strides"] or {r.axis: 1})[r.axis] != 1):
            raise NotSeparable("slice cuts the example axis")
        if name == "dynamic_slice" and (first != 0 or params["slice_sizes"][r.axis]
                                        != shape_in[0][r.axis]):
            raise NotSeparable("dynamic_slice cuts the example axis")
        if name == "top_k" and r.axis == len(shape_in[0]) - 1:
            raise NotSeparable("top_k runs along the example axis")
    elif name == "transpose":
        expected = [Rows(tuple(params["permutation"]).index(r.axis), r.group)]
    elif name == "broadcast_in_dim":
        expected = [Rows(params["broadcast_dimensions"][r.axis], r.group)]
    elif name in ("reshape", "squeeze", "expand_dims"):
        if name == "reshape" and params.get("dimensions") is not None:
            raise NotSeparable("reshape with a transposition")
        out = outs[0]
        if out is None or (math.prod(shape_in[0][:r.axis])
                           != math.prod(ea.outvars[0].aval.shape[:out.axis])):
            raise NotSeparable(f"{name} interleaves examples")
        expected = [out]
    elif name in _REDUCE:
        axes = tuple(params["axes"])
        if r.axis in axes:
            if name != "reduce_sum":
                raise NotSeparable(f"{name} over the example axis")
            return [Total((1.0, 1.0))]
        expected = [Rows(r.axis - sum(a < r.axis for a in axes), r.group)]
    elif name == "dot_general":
        expected = [_dot_rule(ea, came)]
    elif name == "conv_general_dilated":
        dn = params["dimension_numbers"]
        if (came[1] is not None or r.axis != dn.lhs_spec[0] or params["feature_group_count"] != 1
                or params["batch_group_count"] != 1):
            raise NotSeparable("a convolution across examples")
        expected = [Rows(dn.out_spec[0], r.group)]
    elif name == "gather":
        expected = [_gather_rule(ea, came)]
    else:
        raise NotSeparable(f"{name} on example-dependent values")
    if outs != expected:
        raise NotSeparable(f"{name}: the example axis is not where the rule puts it")
    return outs


def _dot_rule(eqn, came) -> Rows:
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    nl, nr = (len(v.aval.shape) for v in eqn.invars)
    lfree = [d for d in range(nl) if d not in lc and d not in lb]
    rfree = [d for d in range(nr) if d not in rc and d not in rb]
    lhs, rhs = came
    if lhs is not None and rhs is not None:
        if (lhs.group == rhs.group and lhs.axis in lb and rhs.axis in rb
                and tuple(lb).index(lhs.axis) == tuple(rb).index(rhs.axis)):
            return Rows(tuple(lb).index(lhs.axis), lhs.group)
        raise NotSeparable("dot_general pairs different examples")
    if lhs is not None and lhs.axis in lfree:
        return Rows(len(lb) + lfree.index(lhs.axis), lhs.group)
    if rhs is not None and rhs.axis in rfree:
        return Rows(len(lb) + len(lfree) + rfree.index(rhs.axis), rhs.group)
    raise NotSeparable("dot_general contracts the example axis")


def _gather_rule(eqn, came) -> Rows:
    dn, sizes = eqn.params["dimension_numbers"], eqn.params["slice_sizes"]
    operand, indices = came
    out_rank = len(eqn.outvars[0].aval.shape)
    batch_positions = [d for d in range(out_rank) if d not in dn.offset_dims]
    if indices is not None:
        if indices.axis == len(eqn.invars[1].aval.shape) - 1:
            raise NotSeparable("gather indexes along the example axis")
        if operand is not None:
            obd, ibd = tuple(dn.operand_batching_dims), tuple(dn.start_indices_batching_dims)
            if (operand.group != indices.group or operand.axis not in obd
                    or ibd[obd.index(operand.axis)] != indices.axis):
                raise NotSeparable("gather looks up other examples' entries")
        return Rows(batch_positions[indices.axis], indices.group)
    kept = [d for d in range(len(eqn.invars[0].aval.shape))
            if d not in dn.collapsed_slice_dims and d not in dn.operand_batching_dims]
    if (operand.axis in dn.start_index_map or operand.axis not in kept
            or sizes[operand.axis] != eqn.invars[0].aval.shape[operand.axis]):
        raise NotSeparable("gather indexes along the example axis")
    return Rows(dn.offset_dims[kept.index(operand.axis)], operand.group)


def _total_rule(eqn, eqn_b, came, scalars) -> Total:
    """A sum over examples may only be scaled by constants, negated, summed or converted."""
    name = eqn.primitive.name
    totals = [c for c in came if isinstance(c, Total)]
    if name in ("convert_element_type", "copy", "reduce_sum") and len(came) == 1:
        return totals[0]
    if name == "neg":
        return Total(tuple(-s for s in totals[0].scale))
    if name in ("add", "add_any", "sub") and len(totals) == 2 and all(
            math.isclose(x, y, rel_tol=1e-6) for x, y in zip(*(t.scale for t in totals))):
        return totals[0]
    if name in ("mul", "div") and len(totals) == 1:
        k = 1 - came.index(totals[0])
        c = _constant(eqn.invars[k], eqn_b.invars[k], scalars)
        if c is not None and (name == "mul" or k == 1) and 0 not in c:
            s = totals[0].scale
            return Total(tuple(x * y if name == "mul" else x / y for x, y in zip(s, c)))
    raise NotSeparable(f"{name} on a sum over examples (only a constant scale may follow one)")
