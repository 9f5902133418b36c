"""λ_max tracked during training: the top Hessian eigenvalue of every run every k steps.

``lambda_max_probe(every=16)`` measures λ_max(H), the algebraically largest eigenvalue of the
Hessian H = ∇²L(θ_t) of the training loss, at optimizer steps 0, k, 2k, … inside the sweep
(``jaxsgd.probes.base``). Under full-batch gradient descent at learning rate ε, λ_max rises to
≈ 2/ε and hovers there (the edge of stability, Cohen et al. 2021); under SGD it stays below,
lower for smaller batches (SCIENCE.md, "Curvature").

Which loss: by default the step's own minibatch (B examples; for full-batch GD that is the
whole training set), or with ``data=(x, y)`` a fixed batch of training examples, a constant of
the compiled program shared by every run (its SHA-256 enters the probe's options, so resuming a
sweep with other data is refused).

Estimator — warm-started Lanczos. The probe's state per run is the previous measurement's top
Ritz vector v (a flat [d] unit vector in ``ravel_pytree`` order; random at initialisation, from
the probe's key). Each measurement runs m = ``num_iterations`` Lanczos steps from v with full
reorthogonalisation, on Hessian-vector products (forward-over-reverse,
Hv = jvp(∇L, (θ,), (v,))), giving

    H Q = Q T + β_m q_{m+1} e_mᵀ,      Q [d, m] orthonormal, T [m, m] tridiagonal,

and reports the top Ritz value λ = max eig(T) (never above the true λ_max) and its relative
residual ‖Hy − λy‖/|λ| = |β_m s_m|/|λ| for the Ritz vector y = Q s (no extra HVP; some
eigenvalue of H lies within it). The next start is one more power step on y, free from the
same relation: (H − σ)y = (λ − σ)y + β_m s_m q_{m+1}, normalised, with the shift
σ = min(0, λ_min(T))/2 so that large negative eigenvalues cannot take over. (On the reference
MLP this start halves the warm estimate's error at m = 2 against restarting from y.) With
m = 1, λ is the Rayleigh quotient vᵀHv and the next start Hv/‖Hv‖: power iteration.

The HVP is ``curvature.hessian_matvec``; the Lanczos loop is its own rather than matfree's
(which ``curvature.top_hessian_eigenvalues`` uses) because a warm start needs three things
matfree does not give: the next start from the Lanczos relation without an extra HVP, a
breakdown that stays finite (a warm start that *is* an eigenvector closes the Krylov space
after one step; matfree then returns NaN), and m ≤ 8 steps unrolled with no [m, d] basis.

Once the start is close to the top eigenvector — after a few measurements, while the Hessian
drifts slowly — a few iterations per measurement suffice. The estimate lags when the top
eigenvector turns quickly (progressive sharpening at a large learning rate) or when the top
two eigenvalues cross, and on small minibatches, whose Hessians differ from step to step; a
large ``residual`` says so (raise ``num_iterations`` or lower ``every``). It is a warning
sign, not an error bar: the Ritz value can be further from λ_max than its residual when the
top gap is small.

With ``reference_iterations = r > 0`` the probe also runs a full Lanczos of r steps from a
fresh random vector at the same points (``reference``, with its ``reference_residual``): a
slow, cold-started check of the warm estimate's accuracy, for benchmarks and plots.

Cost: one measurement is m HVPs (≈ 2 gradients each) on the batch used, amortised over
``every`` steps: on the step's minibatch about 1 + 2m/every plain training steps per step.
The reference MLP (benchmarks/curvature_probe.py) measures it; see
benchmarks/results/curvature_probe.txt.

Every function is pure and works under ``jit`` and ``vmap`` over the runs of a sweep (a fixed
number of iterations, no data-dependent loop).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxsgd._util import array_digest, check_int
from jaxsgd.measure.curvature import hessian_matvec
from jaxsgd.probes.base import Probe

PyTree = Any


class TopEigenpair(NamedTuple):
    """The top Ritz pair of a Lanczos run on a symmetric matrix (flat vectors, one run).

    value: [] the largest Ritz value θ (≤ λ_max of the matrix).
    vector: [d] its unit Ritz vector y.
    residual: [] ‖Ay − θy‖ from the Lanczos relation (absolute, same units as θ).
    next_start: [d] unit (A − σ)y with σ = min(0, θ_min)/2 (θ_min the smallest Ritz value): a
      power step on y, free from the Lanczos relation Ay = θy + β_m s_m q_{m+1}; the shift
      keeps the top eigenvalue dominant when negative ones are large.
    """

    value: jax.Array
    vector: jax.Array
    residual: jax.Array
    next_start: jax.Array


UNROLL = 8  # Lanczos runs of at most this many steps are unrolled (no dynamic basis updates)


def lanczos_top_eigenpair(matvec: Callable[[jax.Array], jax.Array], start: jax.Array,
                          num_iterations: int, *, unit_start: bool = False) -> TopEigenpair:
    """Top Ritz pair of ``matvec`` (symmetric, [d] -> [d]) after ``num_iterations`` Lanczos
    steps from ``start`` [d] (any nonzero vector; ``unit_start=True`` promises ‖start‖ = 1 and
    skips normalising it), with full reorthogonalisation.

    Exactly ``num_iterations`` matvecs: unrolled up to ``UNROLL`` steps (step j
    reorthogonalises against its j vectors only), a ``lax.fori_loop`` over a [m, d] basis
    beyond. When the Krylov space closes (an invariant subspace, to working precision:
    β_j ≤ 64·eps·‖T_j‖, where the next vector would be rounding noise that destroys
    orthogonality), the remaining steps are inert and the Ritz pair is exact to that
    precision. ``num_iterations`` must be at most d (checked by the caller).
    """
    m = num_iterations
    dtype = start.dtype
    tol = 64 * jnp.finfo(dtype).eps
    q0 = start if unit_start else start / jnp.linalg.norm(start)

    def advance(w, alpha, scale, live):
        """β, the next Lanczos vector (0 after a breakdown), the running ‖T‖ and liveness."""
        beta = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.abs(alpha) + beta)
        going = live & (beta > tol * scale)
        return beta, jnp.where(going, w / jnp.where(going, beta, 1), 0), scale, going

    if m <= UNROLL:
        vectors, alphas, betas, lives = [], [], [], [jnp.bool_(True)]
        q, scale = q0, jnp.zeros((), dtype)
        for _ in range(m):
            vectors.append(q)
            w = matvec(q)
            for sweep in range(2):  # classical Gram-Schmidt, twice ("twice is enough")
                coefficients = [jnp.vdot(u, w) for u in vectors]
                if sweep == 0:
                    alpha = coefficients[-1]  # qᵀAq: the first sweep's last coefficient
                w = w - sum(c * u for c, u in zip(coefficients, vectors))
            beta, q, scale, live = advance(w, alpha, scale, lives[-1])
            alphas.append(alpha), betas.append(beta), lives.append(live)
        alphas, betas, live = jnp.stack(alphas), jnp.stack(betas), jnp.stack(lives)

        def combine(s):
            return sum(c * u for c, u in zip(s, vectors))
    else:
        def step(j, carry):
            basis, alphas, betas, live, scale, q = carry
            basis = basis.at[j].set(q)
            w = matvec(q)
            coefficients = basis @ w  # against every Lanczos vector (rows > j are 0),
            alpha = coefficients[j]  # qᵀAq
            w = w - basis.T @ coefficients
            w = w - basis.T @ (basis @ w)  # twice
            beta, q, scale, going = advance(w, alpha, scale, live[j])
            return (basis, alphas.at[j].set(alpha), betas.at[j].set(beta),
                    live.at[j + 1].set(going), scale, q)

        init = (jnp.zeros((m, start.shape[0]), dtype), jnp.zeros((m,), dtype),
                jnp.zeros((m,), dtype), jnp.zeros((m + 1,), bool).at[0].set(True),
                jnp.zeros((), dtype), q0)
        basis, alphas, betas, live, _, q = jax.lax.fori_loop(0, m, step, init)

        def combine(s):
            return basis.T @ s
    q_last = q
    # Rows after a breakdown have q = 0: give them a diagonal strictly below α_0 = q0ᵀAq0 ≤
    # θ_max, decoupled, so they can neither win nor mix with the top Ritz pair.
    diagonal = jnp.where(live[:m], alphas, alphas[0] - jnp.abs(alphas[0]) - 1)
    off = jnp.where(live[1:m], betas[:-1], 0)
    betas = jnp.where(live[1:], betas, 0)  # the last β: 0 after a breakdown (residual ≈ 0)
    tri = jnp.diag(diagonal) + jnp.diag(off, 1) + jnp.diag(off, -1)
    values, vectors_t = jnp.linalg.eigh(tri)
    s = vectors_t[:, -1]
    # Norms from the small problem, not from passes over [d] vectors (the cost at small
    # batches): Q is orthonormal, so ‖y‖ = ‖s‖ = 1, and q_{m+1} ⟂ y, so ‖step‖² is the sum of
    # its two coefficients' squares.
    y = combine(s)
    shift = jnp.minimum(values[0], 0) / 2
    a, b = values[-1] - shift, betas[-1] * s[-1]
    size = jnp.sqrt(a * a + b * b)
    step = jnp.where(size > 0, (a * y + b * q_last) / jnp.where(size > 0, size, 1), y)  # Ay = 0
    return TopEigenpair(values[-1], y, jnp.abs(betas[-1] * s[-1]), step)


def _check_data(data) -> tuple[Any, str] | None:
    """The fixed batch as numpy leaves (same pytree) and its digest, or None."""
    if data is None:
        return None
    leaves, treedef = jax.tree.flatten(data)
    if not leaves:
        raise ValueError(f"data: {type(data).__name__} holds no arrays; expected (x, y)")
    arrays = []
    for leaf in leaves:
        a = np.asarray(leaf)
        if a.ndim == 0 or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ValueError(f"data: a leaf of shape {a.shape} and dtype {a.dtype}; every leaf "
                             f"must be a numeric array with a leading example axis")
        arrays.append(a)
    sizes = sorted({a.shape[0] for a in arrays})
    if len(sizes) != 1:
        raise ValueError(f"data: leaves have different numbers of examples {sizes}")
    if sizes[0] < 1:
        raise ValueError("data: holds 0 examples")
    for a in arrays:
        if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
            raise ValueError("data: holds non-finite values (NaN or inf)")
    return jax.tree.unflatten(treedef, arrays), array_digest(*arrays)


def _fixed_batch(fixed, batch):
    """``fixed`` (numpy leaves) as constants with the minibatch's structure and dtypes."""
    got, want = jax.tree.structure(fixed), jax.tree.structure(batch)
    if got != want:
        raise ValueError(f"data: structure {got} does not match the training batches' {want}")
    out = []
    for a, b in zip(jax.tree.leaves(fixed), jax.tree.leaves(batch)):
        if a.shape[1:] != b.shape[1:]:
            raise ValueError(f"data: examples of shape {a.shape[1:]} where the training set's "
                             f"have shape {tuple(b.shape[1:])}")
        out.append(jnp.asarray(a.astype(np.dtype(b.dtype))))
    return jax.tree.unflatten(want, out)


def lambda_max_probe(every: int = 16, num_iterations: int = 2, data: PyTree | None = None,
                     reference_iterations: int = 0, name: str = "lambda_max") -> Probe:
    """λ_max of the training loss's Hessian for every run every ``every`` steps (see module
    docstring).

    Args:
      every: measure at optimizer steps 0, every, 2·every, …
      num_iterations: Lanczos steps (HVPs) per measurement, warm-started from the previous
        measurement's top eigenvector (1: one power-iteration step).
      data: None (the step's own minibatch) or a fixed batch of training examples, a pytree
        like the minibatches (usually ``(x [n, ...], y [n, ...])``), e.g. the first 1024
        examples; a constant of the compiled program, never copied per run.
      reference_iterations: if > 0, also a cold Lanczos of this many steps from a fresh random
        vector at the same points (costs that many HVPs per measurement).
      name: the probe's name (prefix of its result variables).

    Outputs per measurement (float32 scalars; results ``{name}_{output}`` over ``{name}_step``):
      value (λ_max, the top Ritz value, in loss units per parameter²), residual
      (‖Hy − λy‖/|λ| of its Ritz vector y); with ``reference_iterations`` also reference and
      reference_residual (the same for the cold Lanczos).

    Example::

        probe = lambda_max_probe(every=16)
        m = run_sweep(config, probes=(probe,)).metrics
        m.lambda_max_value.sel(batch_size=1024)   # [learning_rate, seed, lambda_max_step]
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: {name!r} must be a non-empty string")
    every = check_int("every", every, 1, unit="optimizer steps")
    num_iterations = check_int("num_iterations", num_iterations, 1, unit="Lanczos steps")
    reference_iterations = check_int("reference_iterations", reference_iterations, 0,
                                     unit="Lanczos steps; 0: none")
    checked = _check_data(data)
    fixed, digest = checked if checked is not None else (None, None)

    def check_size(d: int) -> None:
        for label, m in (("num_iterations", num_iterations),
                         ("reference_iterations", reference_iterations)):
            if m > d:
                raise ValueError(f"{label}: {m} exceeds the number of parameters ({d})")

    def init(params, key):
        flat, _ = ravel_pytree(params)
        check_size(flat.shape[0])
        v = jax.random.normal(key, flat.shape, flat.dtype)
        return v / jnp.linalg.norm(v)

    def measure(loss_fn, params, opt_state, batch, key, step, state):
        del opt_state, step
        used = batch if fixed is None else _fixed_batch(fixed, batch)
        hessian = hessian_matvec(loss_fn, params, used)
        matvec = hessian.matvec
        check_size(hessian.num_parameters)
        start = state
        top = lanczos_top_eigenpair(matvec, start, num_iterations, unit_start=True)
        # A NaN or inf anywhere in an HVP reaches α and β, so these two scalars stand for the
        # whole vector (no pass over [d] to check it).
        finite = jnp.isfinite(top.value) & jnp.isfinite(top.residual)
        out = {"value": top.value, "residual": top.residual / jnp.abs(top.value)}
        if reference_iterations:
            cold = jax.random.normal(key, start.shape, start.dtype)
            ref = lanczos_top_eigenpair(matvec, cold, reference_iterations)
            # One more HVP: the reference's residual measured, not taken from the Lanczos
            # relation (which underflows to 0 in float32 once converged).
            miss = jnp.linalg.norm(matvec(ref.vector) - ref.value * ref.vector)
            out.update(reference=ref.value, reference_residual=miss / jnp.abs(ref.value))
        state = jnp.where(finite, top.next_start, start)
        return state, {k: v.astype(jnp.float32) for k, v in out.items()}

    options = (("num_iterations", num_iterations), ("reference_iterations", reference_iterations),
               ("data", digest))
    return Probe(name=name, every=every, init=init, measure=measure, options=options)
