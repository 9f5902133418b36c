"""Sharpness of a point in parameter space: worst-case (ε-sharpness, SAM, adaptive, m-sharpness)
and average-case (Gaussian perturbations).

Notation (SCIENCE.md, "Sharpness and minima quality"): L the mean loss of ``loss_fn`` on
``batch``, θ the flattened parameters (``ravel_pytree``), d = dim θ, all norms over the whole
flattened vector. Every worst-case measure here is one problem in scaled coordinates: the
perturbation is e = s ⊙ u with a per-parameter scale s and u in a ball of radius r,

    max_{‖u‖_p ≤ r} L(θ + s ⊙ u) − L(θ)

* ``epsilon_sharpness`` (Keskar et al. 2017, "On Large-Batch Training ... Sharp Minima"):
  s = |θ| + 1, p = ∞, r = ε, i.e. the box C_ε = {z : |z_i| ≤ ε(|θ_i| + 1)}, reported as
  φ = [max_{z∈C_ε} L(θ + z) − L(θ)] / (1 + L(θ)) × 100 (a percentage).
  ``epsilon_sharpness_lbfgsb`` maximises the same box with scipy's L-BFGS-B (float64, one run
  at a time): the reference the projected ascent is checked against.
* ``sam_sharpness`` (Foret et al. 2021, "Sharpness-Aware Minimization"): s = 1, p = 2, r = ρ.
  One step from u = 0 is SAM's first-order e = ρ g/‖g‖.
* ``adaptive_sharpness`` (ASAM, Kwon et al. 2021; Andriushchenko et al. 2023, "A Modern Look at
  the Relationship between Sharpness and Generalization"): s = |θ| + η, p = 2 or ∞, r = ρ. With
  η = 0 it is invariant to any rescaling θ → D θ (D diagonal, positive) that leaves the
  function unchanged, such as Dinh et al.'s (2017) ReLU rescaling (α W₁, α b₁, W₂/α): the
  objective as a function of u is the same, so are its gradients, so is the ascent path.
  Plain ε- and SAM sharpness change under it. Parameters equal to 0 (e.g. zero-initialised
  biases) are not perturbed when η = 0.
* m-sharpness (Foret et al. 2021; Andriushchenko & Flammarion 2022, "Towards Understanding
  Sharpness-Aware Minimization"): ``m=`` on ``sam_sharpness``/``adaptive_sharpness`` splits the
  n examples into n/m consecutive sub-batches of m (m must divide n), maximises on each
  separately and averages: (1/K) Σ_k [max_u L_k(θ + s ⊙ u) − L_k(θ)], K = n/m.
* ``average_sharpness``: E_δ[L(θ + δ)] − L(θ) with δ = σ s ⊙ ξ, ξ ~ N(0, I), s = 1 or
  |θ| + η (``adaptive=True``). Monte Carlo over ``num_samples`` draws (vmapped), antithetic by
  default (each draw at ±δ, which cancels the first-order term gᵀδ exactly), with its standard
  error. For small σ it is ≈ ½σ² tr(S H S), S = diag(s): ½σ² tr H for plain noise.

The maximiser is projected ascent in u, a fixed number of steps (no data-dependent loop, so
everything works under ``jit`` and ``vmap``, e.g. over a sweep's [runs] axis):

* p = ∞ (ε-sharpness, adaptive with norm="linf"): Auto-PGD (Croce & Hein 2020, "Reliable
  evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks"):
  sign steps (scale-free: every coordinate moves the same fraction of its own half-width, while
  gradients span decades) of size η, first η = ``step_size``·r, with momentum 0.75, projected
  on the box; at checkpoints (after 22%, 41%, 57%, … of the steps) η halves and the ascent
  restarts from the best point when fewer than 75% of the steps since the last checkpoint
  increased the loss, or when neither η nor the best value changed.
* p = 2 (SAM, adaptive with norm="l2"): u_{t+1} = Π(u_t + ``step_size``·r·g/‖g‖). On a
  quadratic this is a damped power iteration: it converges to ½ρ²λ_max at the minimum
  (measured: 10 steps 0.99, 20 steps 0.999 of it for eigenvalue ratio 0.75).

The reported max is the best loss seen at any iterate or at θ (a lower bound on the true max:
every point is in the set), with the Frank–Wolfe gap there, max_{v in the set} ∇f(u*)·(v − u*)
= r‖∇f(u*)‖_dual − ∇f(u*)·u*: 0 at a local maximum (a KKT point of the box or ball), positive
where a step could still climb. Cost: ``num_steps`` + 1 gradients per start, plus a loss.

Starts. Near a stationary point (∇L = 0, e.g. at a minimum) ascent from u = 0 cannot move. A
random start drawn with ``key``, uniform in a small ball of radius ``start``·r around 0 (default
0.01), breaks the tie while elsewhere the first step still follows the gradient (a start
uniform in the whole box lands in worse local maxima: measured on a trained 195-parameter MLP
over 8 keys, mean/best found, ε = 1e-3: 0.9997 with start 0.01, 0.964 with start 1).
``epsilon_sharpness`` adds a second start (``power_steps``, default 5): the better of the
corners ±r·sign(v), v the top eigenvector of the scaled Hessian S H S by power iteration (at
a minimum the box's best corner is where ½uᵀSHSu is largest), and keeps the better ascent of
the two (vmapped). Measured on MNIST-1D (4000 training examples), MLP 40-256-256-10, against
scipy's L-BFGS-B with 100 iterations from the same random start (the issue-14 solutions: a
small batch at a tuned learning rate, a large batch at a tuned one, a large batch at a small
one, and large-batch momentum SGD): the former default (20 cosine-decayed sign steps, random
start) found 0.81, 0.66, 0.99 and 0.98 of it; Auto-PGD from the random start alone 0.95, 1.53,
1.04, 1.00; both starts 1.13, 1.60, 1.16, 1.05, in 0.7 s against 7–17 s for L-BFGS-B (which
stops in worse local maxima: on 1000 examples, 1000 iterations instead of 100 added 1.5–7.5%). ``sam_sharpness`` and
``adaptive_sharpness`` start at u = 0 unless given a ``key``, so that ``num_steps=1`` is
SAM's/ASAM's first-order perturbation.

Example (final params of a sweep, [runs] leading axis):
    >>> sharp = jax.jit(jax.vmap(lambda p, k: epsilon_sharpness(loss_fn, p, batch, key=k)))(
    ...     params, jax.random.split(key, runs))          # doctest: +SKIP
    >>> sharp.sharpness                                    # [runs], percent  # doctest: +SKIP

The problems are non-concave with many local maxima (a box has 2^d corners): every result is a
lower bound. For a tighter one, vmap over several keys (more starts) and take the max.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxsgd._util import batch_size as _batch_size
from jaxsgd._util import check_int
from jaxsgd.measure.curvature import hvp

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]
NORMS = ("l2", "linf")


class EpsilonSharpness(NamedTuple):
    """Keskar et al.'s ε-sharpness (scalars; [runs] under vmap).

    sharpness: φ = (max_loss − loss) / (1 + loss) × 100, in percent.
    max_loss: the largest L(θ + z) found in the box C_ε.
    loss: L(θ).
    num_steps: ascent steps taken (projected ascent), or scipy's L-BFGS-B iteration count.
    gap: the convergence measure, in percent like φ: the Frank–Wolfe gap at the point found,
      max_{z∈C_ε} ∇L(θ + z*)·(z − z*) / (1 + L(θ)) × 100. 0 at a local maximum of the box;
      what a step along the linearisation could still add (small against φ: converged).
    """

    sharpness: jax.Array
    max_loss: jax.Array
    loss: jax.Array
    num_steps: jax.Array
    gap: jax.Array


class WorstCaseSharpness(NamedTuple):
    """max_{e in the set} L(θ + e) − L(θ) (scalars; [runs] under vmap).

    sharpness: max_loss − loss (loss units; with m, the mean over sub-batches).
    max_loss: the largest L(θ + e) found (with m, the mean of the sub-batches' maxima).
    loss: L(θ) (with m, the mean of the sub-batch losses = L on the whole batch).
    num_steps: ascent steps taken (per sub-batch).
    gap: the Frank–Wolfe gap at the point found, max_{e in the set} ∇L(θ + e*)·(e − e*)
      (loss units; with m, the mean over sub-batches): 0 at a local maximum.
    """

    sharpness: jax.Array
    max_loss: jax.Array
    loss: jax.Array
    num_steps: jax.Array
    gap: jax.Array


class AverageSharpness(NamedTuple):
    """E_δ[L(θ + δ)] − L(θ) from Monte Carlo (scalars; [runs] under vmap).

    sharpness: the mean of L(θ + δ_k) − L(θ) over samples (loss units).
    standard_error: its standard error (sample std over draws / √num_samples).
    perturbed_loss: the mean of L(θ + δ_k).
    loss: L(θ).
    num_samples: draws of δ (each evaluated at ±δ when antithetic).
    """

    sharpness: jax.Array
    standard_error: jax.Array
    perturbed_loss: jax.Array
    loss: jax.Array
    num_samples: jax.Array


# --- validation (before any compute; traced values, e.g. a vmapped ρ, are not checked) ------

def _check_positive(name: str, value) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    if not np.all(np.asarray(value) > 0):  # also catches NaN
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _check_nonnegative(name: str, value) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    if not np.all(np.asarray(value) >= 0):
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _check_start(start) -> None:
    if not 0 < start <= 1:
        raise ValueError(f"start must be in (0, 1] (a fraction of the radius), got {start!r}")


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _check_m(m, batch: PyTree) -> int | None:
    if m is None:
        return None
    check_int("m", m)
    n = _batch_size(batch)
    if n % m:
        raise ValueError(f"m must divide the batch size {n}, got m={m}")
    return int(m)


# --- the projected ascent shared by every worst-case measure --------------------------------

def _project(u: jax.Array, radius, norm: str) -> jax.Array:
    if norm == "linf":
        return jnp.clip(u, -radius, radius)
    size = jnp.sqrt(jnp.sum(jnp.square(u)))
    return u * jnp.minimum(1.0, radius / jnp.maximum(size, jnp.finfo(u.dtype).tiny))


def _direction(g: jax.Array, norm: str) -> jax.Array:
    if norm == "linf":
        return jnp.sign(g)
    size = jnp.sqrt(jnp.sum(jnp.square(g)))
    return jnp.where(size > 0, g / jnp.where(size > 0, size, 1.0), 0.0)


def _random_start(key: jax.Array, shape, dtype, radius, norm: str) -> jax.Array:
    """Uniform in the ball {‖u‖_p ≤ radius} (pass radius = start·r)."""
    if norm == "linf":
        return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * radius
    k_dir, k_rad = jax.random.split(key)
    direction = _direction(jax.random.normal(k_dir, shape, dtype), "l2")
    return direction * radius * jax.random.uniform(k_rad, (), dtype) ** (1.0 / math.prod(shape))


def _scaled_objective(loss_fn: LossFn, params: PyTree, scale_kind: str, eta):
    """(θ flat, s, f(u, batch) = L(θ + s ⊙ u))."""
    flat, unravel = ravel_pytree(params)
    if scale_kind == "one":
        scale = jnp.ones_like(flat)
    elif scale_kind == "keskar":
        scale = jnp.abs(flat) + 1.0
    else:
        scale = jnp.abs(flat) + eta
    return flat, scale, lambda u, batch: loss_fn(unravel(flat + scale * u), batch)


def _checkpoint_windows(num_steps: int) -> np.ndarray:
    """APGD's checkpoints (Croce & Hein 2020, §3.2) w_j = ⌈p_j N⌉, p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), as [num_steps + 1] int32: the window
    w_j − w_{j−1} at each step w_j > 0, 0 at every other step."""
    fractions = [0.0, 0.22]
    while fractions[-1] <= 1.0:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    points = sorted({math.ceil(round(p * num_steps, 9)) for p in fractions if p <= 1.0})
    windows = np.zeros(num_steps + 1, np.int32)
    for before, w in zip(points, points[1:]):
        windows[w] = w - before
    return windows


class _Ascent(NamedTuple):
    """The best point an ascent found: f(u*), u*, ∇f(u*)."""

    value: jax.Array
    u: jax.Array
    grad: jax.Array


def _at(value_and_grad, u: jax.Array) -> _Ascent:
    value, grad = value_and_grad(u)
    return _Ascent(value, u, grad)


def _better(a: _Ascent, b: _Ascent) -> _Ascent:
    return jax.tree.map(lambda x, y: jnp.where(b.value > a.value, y, x), a, b)


def _box_ascent(value_and_grad, u0: jax.Array, radius, num_steps: int, step_size) -> _Ascent:
    """Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness", Alg. 1)
    in the box ‖u‖_∞ ≤ r: sign steps of size η (first η = step_size·r) with momentum 0.75,

        z = Π(u_k + η sign ∇f(u_k)),  u_{k+1} = Π(u_k + ¾(z − u_k) + ¼(u_k − u_{k−1})),

    and at each checkpoint η halves, restarting from the best point, if fewer than 75% of
    the steps since the last checkpoint increased f, or if neither η nor the best value
    changed over the window. Costs ``num_steps`` gradients (the first at u0)."""
    windows = jnp.asarray(_checkpoint_windows(num_steps))
    start = _at(value_and_grad, u0)
    eta = jnp.asarray(step_size, u0.dtype) * radius

    def step(carry, k):
        current, previous, best, eta, rises, best_at_checkpoint, halved = carry
        z = jnp.clip(current.u + eta * jnp.sign(current.grad), -radius, radius)
        alpha = jnp.where(k == 1, 1.0, 0.75)  # the first step has no momentum
        u = jnp.clip(current.u + alpha * (z - current.u) + (1 - alpha) * (current.u - previous),
                     -radius, radius)
        new = _at(value_and_grad, u)
        best = _better(best, new)
        rises = rises + (new.value > current.value)
        window = windows[k]
        checkpoint = window > 0
        halve = checkpoint & ((rises < 0.75 * window)
                              | (~halved & (best.value <= best_at_checkpoint)))
        current_next = jax.tree.map(lambda b, n: jnp.where(halve, b, n), best, new)
        carry = (current_next, jnp.where(halve, best.u, current.u), best,
                 jnp.where(halve, 0.5 * eta, eta), jnp.where(checkpoint, 0, rises),
                 jnp.where(checkpoint, best.value, best_at_checkpoint),
                 jnp.where(checkpoint, halve, halved))
        return carry, None

    carry = (start, u0, start, eta, jnp.asarray(0), start.value, jnp.asarray(False))
    carry, _ = jax.lax.scan(step, carry, jnp.arange(1, num_steps + 1))
    return carry[2]


def _ball_ascent(value_and_grad, u0: jax.Array, radius, num_steps: int, step_size) -> _Ascent:
    """Projected normalised-gradient ascent in ‖u‖₂ ≤ r, constant steps step_size·r (module
    docstring). Costs ``num_steps`` gradients (the first at u0)."""

    def step(carry, _):
        current, best = carry
        u = _project(current.u + step_size * radius * _direction(current.grad, "l2"), radius,
                     "l2")
        new = _at(value_and_grad, u)
        return (new, _better(best, new)), None

    start = _at(value_and_grad, u0)
    (_, best), _ = jax.lax.scan(step, (start, start), None, num_steps)
    return best


def _ascend(objective, u0: jax.Array, batch: PyTree, radius, norm: str, num_steps: int,
            step_size) -> _Ascent:
    """The best of the iterates u0, …, u_{num_steps} of the ascent for ``norm`` (one
    gradient each)."""
    ascent = _box_ascent if norm == "linf" else _ball_ascent
    return ascent(jax.value_and_grad(lambda u: objective(u, batch)), u0, radius, num_steps,
                  step_size)


def _frank_wolfe_gap(ascent: _Ascent, radius, norm: str) -> jax.Array:
    """max over the set of ∇f(u*)·(v − u*) = r‖∇f‖_dual − ∇f·u*: 0 at a local maximum (KKT),
    and how much a step along the linearisation could still add: a convergence measure."""
    dual = (jnp.sum(jnp.abs(ascent.grad)) if norm == "linf"
            else jnp.sqrt(jnp.sum(jnp.square(ascent.grad))))
    return jnp.maximum(radius * dual - jnp.vdot(ascent.grad, ascent.u), 0.0)


def _eigenvector_corner(objective, batch, flat, radius, norm: str, key, power_steps: int):
    """The better of ±(the point of the set along the top eigenvector v of the scaled
    Hessian ∇²_u f(0) = S H S): v from ``power_steps`` power iterations (Hessian-vector
    products) from a normal draw; the point is r·sign(v) (box) or r·v/‖v‖ (ball)."""
    zero = jnp.zeros_like(flat)

    def power(_, v):
        hv = hvp(objective, zero, batch, v)
        return hv / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(hv))), jnp.finfo(flat.dtype).tiny)

    v = jax.lax.fori_loop(0, power_steps, power,
                          jax.random.normal(key, flat.shape, flat.dtype))
    corner = radius * (jnp.sign(v) if norm == "linf" else _direction(v, "l2"))
    return jnp.where(objective(corner, batch) >= objective(-corner, batch), corner, -corner)


def _worst_case(loss_fn, params, batch, key, *, radius, scale_kind, eta, norm, num_steps,
                step_size, start, power_steps=0):
    """(max found, L(θ), Frank–Wolfe gap at the max) of L(θ + s ⊙ u) over ‖u‖_p ≤ radius:
    the ascent from u = 0 (``key`` None) or a random start near 0, and with ``power_steps``
    also from the top eigenvector's corner, keeping the best."""
    flat, _, objective = _scaled_objective(loss_fn, params, scale_kind, eta)
    radius = jnp.asarray(radius, flat.dtype)
    if key is None:
        starts = [jnp.zeros_like(flat)]
    else:
        starts = [_random_start(key, flat.shape, flat.dtype, start * radius, norm)]
    if power_steps:  # epsilon_sharpness only, which always has a key
        starts.append(_eigenvector_corner(objective, batch, flat, radius, norm,
                                          jax.random.fold_in(key, 1), power_steps))
    ascents = jax.vmap(lambda u0: _ascend(objective, u0, batch, radius, norm, num_steps,
                                          step_size))(jnp.stack(starts))
    best = jax.tree.map(lambda a: a[jnp.argmax(ascents.value)], ascents)
    loss = loss_fn(params, batch)
    return jnp.maximum(best.value, loss), loss, _frank_wolfe_gap(best, radius, norm)


def _sub_batched_worst_case(loss_fn, params, batch, key, m, **options) -> WorstCaseSharpness:
    num_steps = jnp.asarray(options["num_steps"], jnp.int32)
    if m is None:
        best, loss, gap = _worst_case(loss_fn, params, batch, key, **options)
        return WorstCaseSharpness(best - loss, best, loss, num_steps, gap)
    k = _batch_size(batch) // m
    subs = jax.tree.map(lambda a: a.reshape(k, m, *a.shape[1:]), batch)
    keys = None if key is None else jax.random.split(key, k)
    best, loss, gap = jax.vmap(lambda b, kk: _worst_case(loss_fn, params, b, kk, **options),
                               in_axes=(0, None if keys is None else 0))(subs, keys)
    return WorstCaseSharpness(jnp.mean(best - loss), jnp.mean(best), jnp.mean(loss), num_steps,
                              jnp.mean(gap))


# --- public measures ------------------------------------------------------------------------

def epsilon_sharpness(loss_fn: LossFn, params: PyTree, batch: PyTree, *, key: jax.Array,
                      epsilon=1e-3, num_steps: int = 20, step_size=2.0, start: float = 0.01,
                      power_steps: int = 5) -> EpsilonSharpness:
    """Keskar et al.'s ε-sharpness by Auto-PGD from two starts (see module docstring).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss.
      params: any pytree (one run; ``vmap`` for a [runs] axis).
      batch: the examples the loss is measured on (usually the training set or a large batch).
      key: draws the random start, uniform in the box shrunk by ``start`` (needed: at a
        minimum ∇L = 0), and the power iteration's first vector.
      epsilon: box size ε (> 0); Keskar et al. report ε = 1e-3 and 5e-4.
      num_steps: ascent steps (>= 1) from each start, each one gradient of ``loss_fn`` on
        ``batch``.
      step_size: the first sign step as a fraction of each half-width ε(|θ_i| + 1) (> 0;
        APGD's 2 crosses the box); Auto-PGD halves it when progress stalls.
      start: the random start's box as a fraction of C_ε, in (0, 1].
      power_steps: Hessian-vector products of the power iteration whose eigenvector's corner
        is the second start (>= 0; 0: the random start only, half the ascent's cost).

    Returns:
      ``EpsilonSharpness``: φ in percent, max_loss, loss, num_steps, gap (convergence).
    """
    _check_positive("epsilon", epsilon)
    check_int("num_steps", num_steps)
    _check_positive("step_size", step_size)
    _check_start(start)
    check_int("power_steps", power_steps, 0)
    best, loss, gap = _worst_case(loss_fn, params, batch, key, radius=epsilon,
                                  scale_kind="keskar", eta=0.0, norm="linf",
                                  num_steps=num_steps, step_size=step_size, start=start,
                                  power_steps=power_steps)
    return EpsilonSharpness((best - loss) / (1.0 + loss) * 100.0, best, loss,
                            jnp.asarray(num_steps, jnp.int32), gap / (1.0 + loss) * 100.0)


def epsilon_sharpness_lbfgsb(loss_fn: LossFn, params: PyTree, batch: PyTree,
                             *, key: jax.Array | None = None, epsilon=1e-3, max_iter: int = 1000,
                             tol: float = 1e-12, start: float = 0.01) -> EpsilonSharpness:
    """ε-sharpness maximised with scipy's L-BFGS-B on −L(θ + z), z ∈ C_ε (the reference).

    Runs in float64 (params and floating batch leaves are cast; ``jax.enable_x64`` inside),
    with one jitted ``value_and_grad`` of L(θ + z). Not for ``jit``/``vmap``: a host loop.

    Args:
      key: the random start, drawn as ``epsilon_sharpness`` draws it (same key and
        ``start``: the same point up to float32 rounding); None starts at z = 0, where
        L-BFGS-B stops at once if ∇L = 0.
      epsilon: box size ε (> 0).
      max_iter: L-BFGS-B's ``maxiter`` (>= 1).
      tol: its ``ftol`` and ``gtol`` (> 0).
      start: as for ``epsilon_sharpness``.

    Returns:
      ``EpsilonSharpness`` as float64 NumPy scalars; num_steps is scipy's iteration count
      (``nit``).
    """
    from scipy.optimize import minimize

    _check_positive("epsilon", epsilon)
    check_int("max_iter", max_iter)
    _check_positive("tol", tol)
    _check_start(start)
    with jax.enable_x64(True):
        def cast(a):
            a = jnp.asarray(a)
            return a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a

        params64, batch64 = jax.tree.map(cast, params), jax.tree.map(cast, batch)
        flat, unravel = ravel_pytree(params64)
        half_width = epsilon * (jnp.abs(flat) + 1.0)
        loss = float(loss_fn(params64, batch64))

        if key is None:
            z0 = np.zeros(flat.shape)
        else:
            u0 = _random_start(key, flat.shape, flat.dtype,
                               jnp.asarray(start * epsilon, flat.dtype), "linf")
            z0 = np.asarray((jnp.abs(flat) + 1.0) * u0)
        bound = np.asarray(half_width)
        def negative(z):
            value, grad = _negative_value_and_grad(loss_fn, unravel, flat, z, batch64)
            return float(value), np.asarray(grad)

        result = minimize(negative, z0, jac=True,
                          method="L-BFGS-B", bounds=list(zip(-bound, bound)),
                          options={"maxiter": max_iter, "ftol": tol, "gtol": tol})
    best = max(-float(result.fun), loss)
    grad = -np.asarray(result.jac)  # ∇L at the point found
    gap = max(float(bound @ np.abs(grad) - grad @ result.x), 0.0)
    return EpsilonSharpness(np.float64((best - loss) / (1.0 + loss) * 100.0), np.float64(best),
                            np.float64(loss), np.int64(result.nit),
                            np.float64(gap / (1.0 + loss) * 100.0))


@partial(jax.jit, static_argnums=(0, 1))
def _negative_value_and_grad(loss_fn, unravel, flat, z, batch):
    """−L(θ + z) and its gradient; compiled once per (loss_fn, parameter layout)."""
    value, grad = jax.value_and_grad(lambda z: loss_fn(unravel(flat + z), batch))(z)
    return -value, -grad


def sam_sharpness(loss_fn: LossFn, params: PyTree, batch: PyTree, *, rho=0.05,
                  num_steps: int = 1, step_size=1.0, key: jax.Array | None = None,
                  start: float = 0.01, m: int | None = None) -> WorstCaseSharpness:
    """SAM's worst case in an L2 ball: max_{‖e‖₂≤ρ} L(θ + e) − L(θ) (module docstring).

    Args:
      rho: the ball's radius ρ (> 0), in parameter units.
      num_steps: ascent steps (>= 1); 1 from u = 0 is SAM's e = ρ g/‖g‖, more steps are
        projected normalised-gradient ascent on the ball.
      step_size: the first step as a fraction of ρ (> 0; 1 makes the first step SAM's).
      key: a random start, uniform in the ball of radius ``start``·ρ; None (default) starts at
        e = 0, which cannot move where ∇L = 0.
      start: the random start's radius as a fraction of ρ, in (0, 1].
      m: m-sharpness: the mean of the worst cases on sub-batches of m examples (m must divide
        the batch size); None: the whole batch.
    """
    _check_positive("rho", rho)
    check_int("num_steps", num_steps)
    _check_positive("step_size", step_size)
    _check_start(start)
    m = _check_m(m, batch)
    return _sub_batched_worst_case(loss_fn, params, batch, key, m, radius=rho, scale_kind="one",
                                   eta=0.0, norm="l2", num_steps=num_steps, step_size=step_size,
                                   start=start)


def adaptive_sharpness(loss_fn: LossFn, params: PyTree, batch: PyTree, *, rho=0.05,
                       norm: str = "l2", eta=0.0, num_steps: int = 1, step_size=1.0,
                       key: jax.Array | None = None, start: float = 0.01,
                       m: int | None = None) -> WorstCaseSharpness:
    """Adaptive (ASAM) worst case: max over ‖e / (|θ| + η)‖_p ≤ ρ of L(θ + e) − L(θ).

    Invariant to function-preserving rescalings of θ when η = 0 (module docstring).

    Args:
      rho: the radius ρ (> 0), relative to |θ| + η (a fraction of each parameter's size).
      norm: "l2" or "linf" (a box |e_i| ≤ ρ(|θ_i| + η)).
      eta: η >= 0 added to |θ| (ASAM uses 0.01 for training; 0 for exact invariance).
      num_steps, step_size, key, start, m: as for ``sam_sharpness``; with norm="linf" the steps are
        sign steps, and step_size 1 moves from 0 straight to a corner.
    """
    _check_positive("rho", rho)
    _check_norm(norm)
    _check_nonnegative("eta", eta)
    check_int("num_steps", num_steps)
    _check_positive("step_size", step_size)
    _check_start(start)
    m = _check_m(m, batch)
    return _sub_batched_worst_case(loss_fn, params, batch, key, m, radius=rho,
                                   scale_kind="adaptive", eta=eta, norm=norm,
                                   num_steps=num_steps, step_size=step_size, start=start)


def average_sharpness(loss_fn: LossFn, params: PyTree, batch: PyTree, *, key: jax.Array,
                      sigma=0.01, num_samples: int = 64, adaptive: bool = False, eta=0.0,
                      antithetic: bool = True) -> AverageSharpness:
    """Average-case sharpness E_δ[L(θ + δ)] − L(θ), δ ~ N(0, σ² diag(s²)) (module docstring).

    Args:
      key: draws the perturbations.
      sigma: σ (> 0): parameter units, or relative to |θ| + η when ``adaptive``.
      num_samples: draws δ_k (>= 2), vmapped: memory holds num_samples parameter vectors.
      adaptive: s = |θ| + η (δ_i ~ N(0, σ²(|θ_i| + η)²)) instead of s = 1.
      eta: η >= 0, used when ``adaptive``.
      antithetic: evaluate each draw at +δ and −δ (2 losses per draw) and average the pair:
        the same expectation, without the first-order term's variance.

    Returns:
      ``AverageSharpness``: the mean, its standard error, mean perturbed loss, L(θ), draws.
    """
    _check_positive("sigma", sigma)
    check_int("num_samples", num_samples, 2)
    _check_nonnegative("eta", eta)
    flat, _, objective = _scaled_objective(loss_fn, params,
                                               "adaptive" if adaptive else "one", eta)
    loss = loss_fn(params, batch)
    noise = sigma * jax.random.normal(key, (num_samples, *flat.shape), flat.dtype)
    if antithetic:
        perturbed = jax.vmap(lambda u: 0.5 * (objective(u, batch) + objective(-u, batch)))(noise)
    else:
        perturbed = jax.vmap(lambda u: objective(u, batch))(noise)
    gaps = perturbed - loss
    return AverageSharpness(jnp.mean(gaps), jnp.std(gaps, ddof=1) / math.sqrt(num_samples),
                            jnp.mean(perturbed), loss, jnp.asarray(num_samples, jnp.int32))
