"""Curvature of the loss: Hessian-vector products, top eigenvalues, trace and spectral density.

H = ∇²L(θ) is the Hessian of the mean loss ``loss_fn(params, batch)`` over the batch's n
examples, a symmetric d × d matrix (d = number of parameters; units: loss per parameter²). It
is never formed: everything below is built on the Hessian-vector product (SCIENCE.md,
"Curvature"), forward-over-reverse, about 1.5–3 gradients of cost:

    Hv = jvp(∇L, (θ,), (v,))                                       [d] -> [d]

* ``hvp`` — Hv for a pytree v shaped like params. With ``slice_size`` the batch is processed s
  examples at a time (``lax.scan``) and the slice HVPs summed with weights size/n, so memory
  holds one slice's activations; a remainder slice n mod s is handled exactly.
  ``hessian_matvec`` returns the same product as a closure on flat [d] vectors
  (``ravel_pytree`` order), which every estimator below builds once.
* ``top_hessian_eigenvalues`` — k extreme eigenpairs (λ, u), with honest residuals ‖Hu − λu‖
  from an actual HVP of each returned u. ``method="lanczos"``: m = ``num_iterations`` Lanczos
  steps with full reorthogonalisation give H Q ≈ Q T (Q [d, m] orthonormal, T [m, m]
  tridiagonal); the Ritz pairs (θ_i, Q s_i) from ``eigh(T)`` approximate both ends of the
  spectrum (``which="largest"`` or ``"smallest"``, the algebraically smallest, i.e. the most
  negative). A Ritz value is within its residual r of an eigenvalue (and within r²/gap when it
  is separated by a gap). ``method="power"``: power iteration on H − Σ_j λ_j u_j u_jᵀ
  (deflation), a fixed ``num_iterations`` per eigenvalue; it finds the k largest in *absolute
  value* |λ| (for a network these are usually its largest positive ones).
  ``block_top_hessian_eigenvalues``: the same on each diagonal block H_bb of the Hessian, one
  block per layer.
* ``hessian_trace`` — Hutchinson: tr H = E[vᵀHv] for Rademacher v (v_i = ±1), averaged over
  ``num_probes``; its standard error is the probes' sample standard deviation / √probes.
  For a diagonal H every probe gives tr H exactly.
* ``hessian_spectrum`` — stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani,
  Krishnan & Xiao 2019). From a Rademacher probe v (‖v‖² = d), m Lanczos steps give T with
  eigenpairs (θ_k, s_k); then vᵀf(H)v ≈ d Σ_k w_k f(θ_k) with w_k = (s_k)₁², exact for
  polynomials f of degree ≤ 2m − 1. Averaged over probes: tr f(H) ≈ d · mean_probes Σ_k w_k
  f(θ_k) (``spectral_moment``), and the density of eigenvalues (1/d) Σ_i δ(t − λ_i) ≈
  mean_probes Σ_k w_k N(t; θ_k, σ²).

Lanczos comes from matfree (``matfree.decomp.tridiag_sym(m, reortho="full")``, 0.6.3), used
because it was checked here to work in this use: under ``jit``, and under ``vmap`` over a
leading runs axis of params (with the HVP closing over traced params and batch), matching a
separate run per params to ~1e-15 in float64, with a fixed loop length (``fori_loop``, no
data-dependent stopping). Its full reorthogonalisation is Arnoldi with classical Gram–Schmidt
applied twice: O(d·m) work per step and a [m, d] basis in memory. Caveats: a start vector in
an invariant subspace of dimension < m (exact breakdown: an eigenvector of H, say) gives NaN,
which a random start avoids with probability one; and a Krylov space built from one vector
sees each distinct eigenvalue once in exact arithmetic, so an exactly repeated eigenvalue may
be reported once (the residuals do not flag the missing copy). Trace probes are drawn and
summed here with ``lax.map`` (one HVP in memory at a time; matfree's ``stochtrace`` vmaps all
probes at once).

Every function is pure and works under ``jit`` and ``vmap`` (e.g. over a sweep's final
params); sizes (k, iterations, probes, slices) are static Python ints. Call them under
``jit``: run eagerly, each of their loops is compiled anew on every call.

Example (the top 3 eigenvalues of every run of a sweep, [runs, 3]):
    >>> loss_fn = make_loss_fn(model, task_for(10))                        # doctest: +SKIP
    >>> top = lambda p: top_hessian_eigenvalues(loss_fn, p, (x, y), key=key, k=3)  # doctest: +SKIP
    >>> jax.jit(jax.vmap(top))(final_params).eigenvalues                   # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from matfree import decomp

from jaxsgd._util import batch_size as _batch_size
from jaxsgd._util import check_int

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]


# ---------------------------------------------------------------- validation and products


def _num_parameters(params: PyTree) -> int:
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("params has no arrays")
    return sum(math.prod(np.shape(leaf)) for leaf in leaves)


def _check_slice_size(slice_size, batch) -> None:
    if slice_size is not None:
        _batch_size(batch)
        check_int("slice_size", slice_size, 1)


def _plain_hvp(loss_fn, params, batch, v):
    return jax.jvp(lambda p: jax.grad(loss_fn)(p, batch), (params,), (v,))[1]


def hvp(loss_fn: LossFn, params: PyTree, batch: PyTree, v: PyTree, *,
        slice_size: int | None = None) -> PyTree:
    """The Hessian-vector product Hv of the mean loss over ``batch`` (pytree shaped like params).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over the batch's examples.
      params: parameter pytree θ.
      batch: pytree of arrays with a leading example axis of size n.
      v: tangent pytree shaped like ``params``.
      slice_size: examples per slice s (bounds memory); None (or s ≥ n) does all n at once.
        Hv = Σ_slices (size/n) · H_slice v: ⌊n/s⌋ slices of s, summed as they come in a
        ``lax.scan`` (memory: one slice's HVP and the running sum), and, when s does not
        divide n, one remainder slice of n mod s.
    """
    _check_slice_size(slice_size, batch)
    n = None if slice_size is None else _batch_size(batch)
    if slice_size is None or slice_size >= n:
        return _plain_hvp(loss_fn, params, batch, v)
    full, rest = divmod(n, slice_size)
    head = jax.tree.map(lambda a: a[:full * slice_size].reshape(full, slice_size, *a.shape[1:]),
                        batch)

    def add(total, examples):
        out = _plain_hvp(loss_fn, params, examples, v)
        return jax.tree.map(lambda t, h: t + h * (slice_size / n), total, out), None

    total, _ = jax.lax.scan(add, jax.tree.map(jnp.zeros_like, v), head)
    if rest:
        tail = jax.tree.map(lambda a: a[full * slice_size:], batch)
        out = _plain_hvp(loss_fn, params, tail, v)
        total = jax.tree.map(lambda t, h: t + h * (rest / n), total, out)
    return total


class FlatHessian(NamedTuple):
    """H as a linear map on flat vectors (``ravel_pytree`` order of params).

    matvec: ``v [d] -> Hv [d]``; unravel: ``[d] -> params pytree``; num_parameters: d;
    dtype: the flat dtype (the common dtype of the params leaves).
    """

    matvec: Callable[[jax.Array], jax.Array]
    unravel: Callable[[jax.Array], PyTree]
    num_parameters: int
    dtype: Any


def hessian_matvec(loss_fn: LossFn, params: PyTree, batch: PyTree, *,
                   slice_size: int | None = None) -> FlatHessian:
    """The flat closure v [d] -> Hv [d] of ``hvp`` (same arguments), built once per estimate."""
    _check_slice_size(slice_size, batch)
    flat, unravel = ravel_pytree(params)

    def matvec(v: jax.Array) -> jax.Array:
        return ravel_pytree(hvp(loss_fn, params, batch, unravel(v), slice_size=slice_size))[0]

    return FlatHessian(matvec, unravel, flat.size, flat.dtype)


# ---------------------------------------------------------------- extreme eigenpairs


class HessianEigenpairs(NamedTuple):
    """k eigenpairs of H (under vmap, each field gains the leading runs axis).

    eigenvalues: [k], loss per parameter²; "largest": descending; "smallest": ascending;
        power iteration: in the order found (descending |λ|).
    eigenvectors: pytree shaped like params with a leading [k] axis, unit norm (sign arbitrary).
    residuals: [k], ‖Hu − λu‖ from an actual HVP of each returned u (H has an eigenvalue
        within this distance of λ; within residual²/gap when λ is separated by a gap).
    converged: [k] bool, residual ≤ tol · ‖H‖, with ‖H‖ estimated as the largest |Ritz value|
        (Lanczos) or the largest |λ| found (power).
    num_matvecs: [] int, Hessian-vector products used, residual checks included.
    """

    eigenvalues: jax.Array
    eigenvectors: PyTree
    residuals: jax.Array
    converged: jax.Array
    num_matvecs: jax.Array


METHODS = ("lanczos", "power")
WHICH = ("largest", "smallest")


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")


def _check_eigen_args(d, k, num_iterations, method, which, tol):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if which == "smallest" and method != "lanczos":
        raise ValueError(f"which='smallest' needs method='lanczos' (power iteration finds the "
                         f"largest |λ|), got method={method!r}")
    k = check_int("k", k, 1, d, "the number of parameters")
    if num_iterations is None:
        num_iterations = min(d, max(64, 3 * k)) if method == "lanczos" else 100
    if method == "lanczos":
        num_iterations = check_int("num_iterations", num_iterations, k, d,
                                   "the number of parameters")
    else:
        num_iterations = check_int("num_iterations", num_iterations, 1)
    _check_positive("tol", tol)
    return k, num_iterations


def _lanczos(matvec, v0, num_steps):
    """m Lanczos steps from v0: (Ritz values θ [m] ascending, eigenvectors S [m, m] of T with
    T s_i = θ_i s_i, Lanczos basis Q [m, d]); the Ritz vectors are the rows of Sᵀ Q."""
    result = decomp.tridiag_sym(num_steps, reortho="full")(matvec, v0)
    theta, s = jnp.linalg.eigh(result.J_small)
    return theta, s, result.Q_tall


def _power(matvec, starts, num_iterations):
    """(λ [k], u [k, d], ‖Hu − λu‖ [k]) of the k largest |λ|: power iteration with deflation
    from the start vectors ``starts`` [k, d], num_iterations + 1 HVPs per eigenvector.

    Each iteration takes the HVP w = Hv of its unit input v, the Rayleigh quotient λ = vᵀw
    and the residual ‖w − λv‖, then moves to (w − Σ_j λ_j u_j u_jᵀv)/‖·‖; the pair returned
    is the last iteration's input with its own λ and residual (one HVP call site)."""
    k, d = starts.shape

    def step(_, carry, vecs, vals):
        v = carry[0]  # carry: (next input, last input, its λ, its residual)
        w = matvec(v)
        lam = v @ w
        residual = jnp.linalg.norm(w - lam * v)
        w = w - vecs.T @ (vals * (vecs @ v))  # H − Σ λ_j u_j u_jᵀ; unfound rows are zero
        norm = jnp.linalg.norm(w)
        return jnp.where(norm > 0, w / jnp.where(norm > 0, norm, 1), v), v, lam, residual

    def one(carry, j):
        vecs, vals = carry
        v = starts[j] / jnp.linalg.norm(starts[j])
        zero = jnp.zeros((), starts.dtype)
        _, u, lam, residual = jax.lax.fori_loop(
            0, num_iterations + 1, lambda i, c: step(i, c, vecs, vals), (v, v, zero, zero))
        return (vecs.at[j].set(u), vals.at[j].set(lam)), residual

    init = (jnp.zeros((k, d), starts.dtype), jnp.zeros((k,), starts.dtype))
    (vecs, vals), residuals = jax.lax.scan(one, init, jnp.arange(k))
    return vals, vecs, residuals


def top_hessian_eigenvalues(loss_fn: LossFn, params: PyTree, batch: PyTree, *,
                            key: jax.Array, k: int = 1, num_iterations: int | None = None,
                            method: str = "lanczos", which: str = "largest", tol: float = 1e-3,
                            slice_size: int | None = None) -> HessianEigenpairs:
    """The k extreme eigenpairs of the Hessian of ``loss_fn`` at ``params`` (see module).

    Args:
      loss_fn, params, batch, slice_size: as in ``hvp``.
      k: number of eigenpairs, 1 ≤ k ≤ d.
      key: PRNG key for the random start vector(s).
      num_iterations: Lanczos: the Krylov depth m, k ≤ m ≤ d (default min(d, max(64, 3k)));
        m = d is exact up to rounding. Power: iterations per eigenvalue (default 100).
        Convergence is fastest for eigenvalues separated from the rest; "smallest" (for a
        network, small negative eigenvalues next to the dense bulk around zero) usually needs
        a deeper Krylov space than "largest" — check ``converged``.
      method: "lanczos" (Lanczos with full reorthogonalisation, fixed depth) or "power"
        (power iteration with deflation; finds the largest |λ|, so negative λ of large
        magnitude too).
      which: "largest" (algebraically largest, descending) or "smallest" (the most negative,
        ascending; Lanczos only).
      tol: relative tolerance of ``converged``: residual ≤ tol · ‖H‖.

    Cost: m + k HVPs (Lanczos) or k·(num_iterations + 1) (power).
    """
    d = _num_parameters(params)
    k, num_iterations = _check_eigen_args(d, k, num_iterations, method, which, tol)
    _check_slice_size(slice_size, batch)
    h = hessian_matvec(loss_fn, params, batch, slice_size=slice_size)
    if method == "power":
        values, vectors, residuals = _power(h.matvec, jax.random.normal(key, (k, d), h.dtype),
                                            num_iterations)
        converged = residuals <= tol * jnp.max(jnp.abs(values))
        return HessianEigenpairs(values, jax.vmap(h.unravel)(vectors), residuals, converged,
                                 jnp.asarray(k * (num_iterations + 1)))
    theta, s, q = _lanczos(h.matvec, jax.random.normal(key, (d,), h.dtype), num_iterations)
    pick = jnp.arange(k) if which == "smallest" else jnp.arange(num_iterations - 1,
                                                                 num_iterations - 1 - k, -1)
    values, vectors = theta[pick], s[:, pick].T @ q
    vectors = vectors / jnp.linalg.norm(vectors, axis=1, keepdims=True)
    products = jax.lax.map(h.matvec, vectors)  # honest residuals: one HVP per Ritz vector
    residuals = jnp.linalg.norm(products - values[:, None] * vectors, axis=1)
    converged = residuals <= tol * jnp.max(jnp.abs(theta))
    return HessianEigenpairs(values, jax.vmap(h.unravel)(vectors), residuals, converged,
                             jnp.asarray(num_iterations + k))


def _block_layout(params: PyTree) -> list[tuple[str, PyTree, list[int]]]:
    """[(name, subtree, indices of its leaves in ``jax.tree.leaves(params)``)] per block."""
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    if len(paths) < 2:
        raise ValueError("params has a single array: no layer blocks (use "
                         "top_hessian_eigenvalues)")
    depth = 0
    while all(len(p) > depth and p[depth] == paths[0][depth] for p in paths):
        depth += 1
    layout: dict = {}
    for i, path in enumerate(paths):
        layout.setdefault(path[:depth + 1], []).append(i)
    blocks = []
    for prefix, idx in layout.items():
        node = params
        for entry in prefix:
            if isinstance(entry, jax.tree_util.DictKey):
                node = node[entry.key]
            elif isinstance(entry, jax.tree_util.SequenceKey):
                node = node[entry.idx]
            elif isinstance(entry, jax.tree_util.GetAttrKey):
                node = getattr(node, entry.name)
            else:
                raise ValueError(f"params: cannot split at {entry!r} into layer blocks")
        last = prefix[-1]
        name = str(getattr(last, "key", getattr(last, "idx", getattr(last, "name", last))))
        blocks.append((name, node, idx))
    return blocks


def hessian_blocks(params: PyTree) -> dict[str, PyTree]:
    """The layer blocks of params: {name: that layer's params (a subtree of params)}.

    The blocks are the children of the first node where the params tree branches; single-child
    wrappers above it are skipped. {"params": {"Dense_0": {kernel, bias}, "Dense_1": {...}}}
    (flax) and {"Dense_0": ..., "Dense_1": ...} both give the blocks "Dense_0" and "Dense_1",
    each with its kernel and bias; a list of layers gives "0", "1", … (dicts, lists, tuples
    and named tuples; a params tree with a single array has no blocks).
    """
    return {name: node for name, node, _ in _block_layout(params)}


def block_top_hessian_eigenvalues(loss_fn: LossFn, params: PyTree, batch: PyTree, *,
                                  key: jax.Array, k: int = 1,
                                  num_iterations: int | None = None, method: str = "lanczos",
                                  which: str = "largest", tol: float = 1e-3,
                                  slice_size: int | None = None
                                  ) -> dict[str, HessianEigenpairs]:
    """Top eigenpairs of each diagonal block H_bb = ∂²L/∂θ_b² (one block per layer).

    Blocks as in ``hessian_blocks``; block b is measured as the Hessian of θ_b ↦ L(θ) with the
    other parameters held fixed (its HVPs differentiate θ_b only). Arguments as in
    ``top_hessian_eigenvalues``; the Lanczos depth is min(num_iterations, d_b) for a block of
    d_b parameters (every block needs k ≤ d_b). The key is split once per block, in order.

    Returns:
      {block name: HessianEigenpairs}, eigenvectors shaped like that block's params; e.g.
      ``result["Dense_0"].eigenvalues[0]`` is the top eigenvalue of the first layer's block.
    """
    blocks = _block_layout(params)
    _check_eigen_args(_num_parameters(params), k, num_iterations, method, which, tol)
    for name, node, _ in blocks:
        size = _num_parameters(node)
        if k > size:
            check_int("k", k, 1, size, f"the size of block {name!r}")
    _check_slice_size(slice_size, batch)
    leaves, treedef = jax.tree.flatten(params)
    results = {}
    for (name, node, idx), block_key in zip(blocks, jax.random.split(key, len(blocks))):
        def block_loss(block, batch, idx=idx):
            full = list(leaves)
            for i, leaf in zip(idx, jax.tree.leaves(block)):
                full[i] = leaf
            return loss_fn(jax.tree.unflatten(treedef, full), batch)

        depth = num_iterations
        if method == "lanczos" and num_iterations is not None:
            depth = min(num_iterations, _num_parameters(node))
        results[name] = top_hessian_eigenvalues(
            block_loss, node, batch, k=k, key=block_key, num_iterations=depth, method=method,
            which=which, tol=tol, slice_size=slice_size)
    return results


# ---------------------------------------------------------------- trace and spectral density


class HessianTrace(NamedTuple):
    """A stochastic estimate of a trace (tr H, or tr Hᵖ from ``spectral_moment``).

    trace: [] the mean over probes (loss per parameter², to the power p); stderr: [] its
    standard error, sample standard deviation (ddof 1) / √num_probes (NaN for one probe);
    num_probes: [] int.
    """

    trace: jax.Array
    stderr: jax.Array
    num_probes: jax.Array


def _mean_and_stderr(samples: jax.Array) -> HessianTrace:
    """HessianTrace from per-probe estimates [..., P] (the last axis is the probes)."""
    p = samples.shape[-1]
    spread = jnp.std(samples, axis=-1, ddof=1) if p > 1 else jnp.full(samples.shape[:-1],
                                                                        jnp.nan)
    return HessianTrace(jnp.mean(samples, axis=-1), spread / math.sqrt(p), jnp.asarray(p))


def _rademacher(key, d, dtype):
    return jax.random.rademacher(key, (d,), jnp.int8).astype(dtype)


def hessian_trace(loss_fn: LossFn, params: PyTree, batch: PyTree, *, key: jax.Array,
                  num_probes: int, slice_size: int | None = None) -> HessianTrace:
    """Hutchinson's estimate of tr H: mean of vᵀHv over ``num_probes`` Rademacher probes v.

    Unbiased; Var(vᵀHv) = 2(‖H‖_F² − Σ_i H_ii²), so the standard error falls as 1/√probes
    (and is zero for a diagonal H). One HVP per probe, one probe in memory at a time.
    Arguments as in ``hvp``; ``key`` draws the probes.
    """
    _num_parameters(params)
    num_probes = check_int("num_probes", num_probes, 1)
    _check_slice_size(slice_size, batch)
    h = hessian_matvec(loss_fn, params, batch, slice_size=slice_size)

    def quadratic_form(probe_key):
        v = _rademacher(probe_key, h.num_parameters, h.dtype)
        return v @ h.matvec(v)

    return _mean_and_stderr(jax.lax.map(quadratic_form, jax.random.split(key, num_probes)))


class HessianSpectrum(NamedTuple):
    """Stochastic Lanczos quadrature of H (under vmap each field gains the runs axis).

    nodes: [num_probes, num_steps] Ritz values θ_k of each probe's tridiagonal T (ascending).
    weights: [num_probes, num_steps] w_k = (first component of T's k-th eigenvector)²; each
        probe's weights sum to 1.
    grid: [G] eigenvalue grid of the density (loss per parameter²).
    density: [G] mean_probes Σ_k w_k N(t; θ_k, σ²), the smoothed density of eigenvalues
        (1/d) Σ_i δ(t − λ_i); integrates to ≈ 1 over the default grid.
    sigma: [] the Gaussian width σ used.
    num_parameters: [] int, d.
    trace: [] tr H ≈ d · mean_probes Σ_k w_k θ_k (= Hutchinson on the same probes).
    trace_sq: [] tr H² = ‖H‖_F² ≈ d · mean_probes Σ_k w_k θ_k².
    """

    nodes: jax.Array
    weights: jax.Array
    grid: jax.Array
    density: jax.Array
    sigma: jax.Array
    num_parameters: jax.Array
    trace: jax.Array
    trace_sq: jax.Array


def spectral_moment(spectrum: HessianSpectrum, power: int) -> HessianTrace:
    """tr Hᵖ ≈ d · mean_probes Σ_k w_k θ_kᵖ, with its standard error over probes.

    Exact per probe (= vᵀHᵖv) for p ≤ 2·num_steps − 1, so for those p it is Hutchinson's
    unbiased estimate. Works on vmapped spectra (leading runs axes).
    """
    per_probe = jnp.sum(spectrum.weights * spectrum.nodes ** power, axis=-1)
    d = jnp.asarray(spectrum.num_parameters, per_probe.dtype)[..., None]
    return _mean_and_stderr(d * per_probe)


def hessian_spectrum(loss_fn: LossFn, params: PyTree, batch: PyTree, *, key: jax.Array,
                     num_steps: int, num_probes: int, grid: int | jax.Array = 1024,
                     sigma: float | None = None, slice_size: int | None = None
                     ) -> HessianSpectrum:
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature (see module).

    Args:
      loss_fn, params, batch, slice_size: as in ``hvp``.
      key: PRNG key for the Rademacher probes.
      num_steps: Lanczos steps m per probe, 1 ≤ m ≤ d (the m-node quadrature is exact for
        vᵀHᵖv, p ≤ 2m − 1; Ghorbani et al. 2019 used m = 90 on networks).
      num_probes: probes P ≥ 1 (the density's and the moments' sampling error falls as 1/√P).
      grid: number of grid points G ≥ 2 (default 1024, spanning [min θ − 6σ, max θ + 6σ]), or
        a 1-D array of points (e.g. to share one grid across runs).
      sigma: Gaussian width σ in eigenvalue units; default (max θ − min θ)/200, i.e. every
        feature narrower than 0.5% of the spectrum's range is smoothed (Ghorbani et al. used
        σ² = 1e-5 on the range rescaled to [−1, 1], about range/630).

    Cost: P·m HVPs and O(P·m²·d) reorthogonalisation, one probe at a time (memory: one
    [m, d] Lanczos basis); O(G·P·m) for the density.
    """
    d = _num_parameters(params)
    num_steps = check_int("num_steps", num_steps, 1, d, "the number of parameters")
    num_probes = check_int("num_probes", num_probes, 1)
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        check_int("grid", grid, 2)
    elif np.ndim(grid) != 1 or np.shape(grid)[0] < 2:
        raise ValueError(f"grid must be an int >= 2 or a 1-D array of >= 2 points, got "
                         f"{grid!r}")
    if sigma is not None:
        _check_positive("sigma", sigma)
    _check_slice_size(slice_size, batch)
    h = hessian_matvec(loss_fn, params, batch, slice_size=slice_size)

    def quadrature(probe_key):
        theta, s, _ = _lanczos(h.matvec, _rademacher(probe_key, d, h.dtype), num_steps)
        return theta, s[0] ** 2

    nodes, weights = jax.lax.map(quadrature, jax.random.split(key, num_probes))
    lo, hi = jnp.min(nodes), jnp.max(nodes)
    if sigma is None:
        eps = jnp.finfo(nodes.dtype).eps
        spread = jnp.maximum(hi - lo, jnp.maximum(1e-3 * jnp.maximum(-lo, hi), eps))
        width = spread / 200
    else:
        width = jnp.asarray(sigma, nodes.dtype)
    if isinstance(grid, (int, np.integer)):
        points = jnp.linspace(lo - 6 * width, hi + 6 * width, grid, dtype=nodes.dtype)
    else:
        points = jnp.asarray(grid, nodes.dtype)
    z = (points[:, None] - nodes.reshape(1, -1)) / width
    kernel = jnp.exp(-0.5 * z ** 2) / (width * math.sqrt(2 * math.pi))
    density = kernel @ weights.reshape(-1) / num_probes
    spectrum = HessianSpectrum(nodes, weights, points, density, width, jnp.asarray(d),
                               jnp.zeros((), nodes.dtype), jnp.zeros((), nodes.dtype))
    return spectrum._replace(trace=spectral_moment(spectrum, 1).trace,
                             trace_sq=spectral_moment(spectrum, 2).trace)
