"""The noisy quadratic model (Zhang et al. 2019, "Which Algorithmic Choices Matter at Which
Batch Sizes?"): exact expected-loss dynamics, steps to a target, and a Monte Carlo check.

Model (SCIENCE.md): L(x) = ½ Σ_i h_i x_i² over K coordinates (default h_i = 1/i); a batch of B
examples gives the gradient g_i = h_i x_i + n_i, n_i ~ N(0, c_i/B) independent (default c = h:
per-example noise covariance H); E x_i(0)² = s0_i (default 1: x₀ ~ N(0, I)). Optimizer (the
optax chain of ``nqm_monte_carlo``): preconditioner P = H^(−p), heavy-ball momentum β, learning
rate ε, and the paper's exponential moving average of the iterates (decay γ; the loss is then
that of the average z):

    m_{t+1} = β m_t + h^(−p) g(x_t),  x_{t+1} = x_t − ε m_{t+1},  z_{t+1} = γ z_t + (1 − γ) x_{t+1},
    m_0 = 0, z_0 = x_0.

Per coordinate, with h̃ = h^(1−p) and a = 1 − εh̃, the state y = (x_t, v_t, z_t) with the velocity
v_t = x_t − x_{t−1} (only with momentum; v_0 = 0) and z only with averaging follows
y_{t+1} = M y_t + w ε h^(−p) n_t:

        ⎡ a            β          0 ⎤          ⎡ −1      ⎤
    M = ⎢ −εh̃          β          0 ⎥,     w = ⎢ −1      ⎥,
        ⎣ (1 − γ)a    (1 − γ)β    γ ⎦          ⎣ −(1 − γ)⎦

so the raw second moments S_t = E[y_t y_tᵀ] (d × d, d ≤ 3, the mean's contribution included)
obey S_{t+1} = M S_t Mᵀ + W, W = ε² h^(−2p) (c/B) w wᵀ, S_0 = s0·e eᵀ (e = (1, 0, 1): v_0 = 0,
z_0 = x_0), and the expected loss is
ℓ(t) = ½ Σ_i h_i S_t[obs, obs] (obs: z with averaging, else x). Without momentum or averaging
this is SCIENCE.md's s(t+1) = (1 − εh̃)² s(t) + ε² h^(1−2p)/B (c = h): preconditioning turns
the curvature h into h^(1−p) and the noise variance c/B into c h^(−2p)/B. The moments converge
iff 0 < εh̃_max < 2(1 + β), to the steady-state risk ℓ∞.

Matrix powers, never stepping: A(S) = M S Mᵀ + W has A^(2^j)(S) = P_j S P_jᵀ + G_j with P_0 = M,
G_0 = W, P_{j+1} = P_j², G_{j+1} = G_j + P_j G_j P_jᵀ (float64), and S_t composes A^(2^j) over
the set bits of t: a million-step horizon costs 20 small matrix products, like a 20-step one.

``make_nqm`` builds the model; ``nqm_expected_loss`` gives ℓ(t), ``nqm_first_crossing`` the first
step below a target and ``nqm_steps_to_target`` its minimum over learning rates per batch size
(``nqm_critical_batch_size`` reads the scaling off it); ``nqm_monte_carlo`` simulates the same
model with optax to check them all.

Units: steps are optimizer steps, batch sizes examples; ``steps`` arguments are [T] integers.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsgd._util import check_int
from jaxsgd.analysis.critical import examples_crossing


class NQM(NamedTuple):
    """A noisy quadratic model, [K] float64 arrays: h curvatures (Hessian eigenvalues), c
    per-example gradient noise variances (a batch of B has c/B), s0 = E x_i(0)²."""

    h: np.ndarray
    c: np.ndarray
    s0: np.ndarray


def _vector(name: str, values, size: int | None = None, *, positive: bool) -> np.ndarray:
    a = np.atleast_1d(np.asarray(values, np.float64))
    if a.ndim != 1 or (size is not None and a.size not in (1, size)):
        raise ValueError(f"{name}: shape {a.shape} is not [{size if size else 'K'}] or scalar")
    bad = a[~(np.isfinite(a) & ((a > 0) if positive else (a >= 0)))]
    if bad.size:
        raise ValueError(f"{name}: {bad[0]:g} is not a {'positive' if positive else 'non-negative'}"
                         " finite number")
    return a if size is None else np.broadcast_to(a, (size,)).copy()


def make_nqm(dim: int = 10_000, *, h=None, c=None, s0=1.0) -> NQM:
    """The NQM with h_i = 1/i (i = 1..dim), c = h and s0 = 1, or the given h (positive; sets K),
    c and s0 (non-negative; [K] arrays or scalars)."""
    if h is None:
        h = 1.0 / np.arange(1, check_int("dim", dim, 1) + 1, dtype=np.float64)
    h = _vector("h", h, positive=True)
    c = h.copy() if c is None else _vector("c", c, h.size, positive=False)
    return NQM(h, c, _vector("s0", s0, h.size, positive=False))


# --------------------------------------------------------------------------- the linear system
# The static layout (momentum?, averaging?) picks the state (x, [x_{t−1}], [z]): d = 1, 2 or 3.
# Matrices are stored [d, d, ..., K] (coordinates last, contiguous) and multiplied entry by
# entry: with d ≤ 3 that is a few fused elementwise passes over K, not K tiny GEMMs.


def _matmul(a, b, transpose_b=False):
    """a @ b (or a @ bᵀ) for [d, d, ..., K] stacks of per-coordinate matrices."""
    d = len(a)
    entry = (lambda k, j: b[j, k]) if transpose_b else (lambda k, j: b[k, j])
    return jnp.stack([jnp.stack([sum(a[i, k] * entry(k, j) for k in range(d)) for j in range(d)])
                      for i in range(d)])


def _advance(s, p, g):
    """A^(2^j)(S) = P S Pᵀ + G."""
    return _matmul(_matmul(p, s), p, transpose_b=True) + g


def _system(nqm, config, layout):
    """(M, W, S_0) [d, d, K] for one config = (ε, B, β, γ, p) (see module docstring).

    The momentum state is (x_t, v_t = x_t − x_{t−1}), not (x_t, x_{t−1}): with β near 1 and a
    small ε the two iterates are nearly equal, and their second moments cancel to all but a few
    digits (the loss drifted by ~10% at 10⁶ steps with β = 0.9999, ε = 10⁻⁷); the velocity
    basis keeps every entry of M in [−1, 1] and nothing cancels.
    """
    h, c, s0 = nqm
    lr, batch, beta, gamma, power = config
    momentum, averaging = layout
    one, zero = jnp.ones_like(h), jnp.zeros_like(h)
    beta = beta if momentum else 0.0
    step = lr * h ** (1.0 - power)  # εh̃
    a = 1.0 - step
    if momentum:  # x' = (1 − εh̃)x + βv − εn,  v' = −εh̃x + βv − εn
        rows, w, start = [[a, beta * one], [-step, beta * one]], [one, one], [one, zero]
    else:
        rows, w, start = [[a]], [one], [one]
    if averaging:  # z' = γz + (1 − γ)x'
        rows = [r + [zero] for r in rows] + [[(1.0 - gamma) * v for v in rows[0]] + [gamma * one]]
        w.append((1.0 - gamma) * one)
        start.append(one)
    var = lr**2 * h ** (-2.0 * power) * c / batch
    d = len(rows)
    return (jnp.stack([jnp.stack(r) for r in rows]),
            jnp.stack([jnp.stack([var * w[i] * w[j] for j in range(d)]) for i in range(d)]),
            jnp.stack([jnp.stack([s0 * start[i] * start[j] for j in range(d)])
                       for i in range(d)]))


def _loss(h, s, layout):
    """½ Σ_i h_i S_i[obs, obs]: [d, d, ..., K] -> [...]."""
    return 0.5 * jnp.sum(h * (s[-1, -1] if layout[1] else s[0, 0]), axis=-1)


def _powers(m, w, levels):
    """(P_j, G_j) for j < levels: [levels, d, d, K] each."""
    def square(carry, _):
        p, g = carry
        return (_matmul(p, p), _advance(g, p, g)), carry
    return jax.lax.scan(square, (m, w), None, length=levels)[1]


def _at_step(p, g, s, t):
    """S_t from S_0 = s: A^(2^j) for every set bit j of t ([levels] tables p, g)."""
    def bit(s, xs):
        pj, gj, j = xs
        return jnp.where((t >> j) & 1, _advance(s, pj, gj), s), None
    return jax.lax.scan(bit, s, (p, g, jnp.arange(p.shape[0])))[0]


@functools.partial(jax.jit, static_argnames=("levels", "layout"))
def _expected_loss(nqm, configs, steps, levels, layout):
    """ℓ at ``steps`` [T] (< 2^levels) for each of the [N, 5] configs: [N, T]."""
    def one(config):
        m, w, s0 = _system(nqm, config, layout)
        p, g = _powers(m, w, levels)
        return jax.lax.map(lambda t: _loss(nqm.h, _at_step(p, g, s0, t), layout), steps,
                           batch_size=32)
    return jax.vmap(one)(configs)


@functools.partial(jax.jit, static_argnames=("levels", "layout"))
def _steps(nqm, configs, target, exact_steps, levels, layout):
    """First step with ℓ ≤ target for each of the [N, 5] configs; inf if not by 2^(levels−1)."""
    def loss(s):
        return _loss(nqm.h, s, layout)

    def one(config):
        m, w, s0 = _system(nqm, config, layout)
        p, g = _powers(m, w, levels)
        grid = jax.vmap(_advance, (None, 0, 0))(s0, p, g)  # S at t = 2^j
        below = jax.vmap(loss)(grid) <= target
        k = jnp.argmax(below)  # the first crossing of the grid: in (2^(k−1), 2^k]
        low = jnp.where(k > 0, 2 ** (k - 1), 0)

        def lift(carry, xs):  # binary lifting: the last step with ℓ > target in [low, 2^k)
            s, t = carry
            pj, gj, j = xs
            cand = _advance(s, pj, gj)
            move = (j < k - 1) & (loss(cand) > target)
            return (jnp.where(move, cand, s), jnp.where(move, t + 2**j, t)), None

        start = jnp.where(k > 0, grid[jnp.maximum(k - 1, 0)], s0)
        xs = (p[::-1], g[::-1], jnp.arange(levels - 1, -1, -1))
        lifted = jax.lax.scan(lift, (start, low), xs)[0][1] + 1

        def walk(carry):  # one exact step of the recursion
            s, t, _ = carry
            s = _advance(s, m, w)
            return s, t + 1, loss(s) <= target

        limit = jnp.where(below.any() & (2**k <= exact_steps), 2**k, 0)
        _, walked, hit = jax.lax.while_loop(lambda c: ~c[2] & (c[1] < limit), walk,
                                            (s0, jnp.zeros((), k.dtype), jnp.zeros((), bool)))
        found = jnp.where(below.any(), jnp.where(hit, walked, lifted), jnp.inf)
        return jnp.where(loss(s0) <= target, 0.0, found)
    return jax.vmap(one)(configs)


def _chunked(fn, configs: np.ndarray, per_config_floats: int, fixed: bool) -> np.ndarray:
    """``fn`` over chunks of the [N, 5] configs, each chunk's working set about 2²⁴ floats
    (128 MiB) and padded to a power of two (the same one per model and layout if ``fixed``):
    few shapes, so few compilations."""
    size = min(16, max(1, 2**24 // per_config_floats), 16 if fixed else len(configs))
    size = 1 << (int(size) - 1).bit_length()
    padded = np.concatenate([configs, np.repeat(configs[:1], -len(configs) % size, 0)])
    outs = [np.asarray(fn(jnp.asarray(padded[i:i + size]))) for i in range(0, len(padded), size)]
    return np.concatenate(outs)[:len(configs)]


# --------------------------------------------------------------------------- public API


_HYPER = ("learning_rate", "batch_size", "momentum", "averaging", "precondition")
_RULES = [("a positive finite number", lambda v: v > 0)] * 2 + [
    ("in [0, 1)", lambda v: (v >= 0) & (v < 1))] * 2 + [("finite", lambda v: v == v)]


def _configs(learning_rate, batch_size, momentum, averaging, precondition):
    """Broadcast hyperparameters -> ([N, 5] float64 configs, shape, layout), validated."""
    arrays = {k: np.asarray(v, np.float64) for k, v in zip(_HYPER, (
        learning_rate, batch_size, momentum, averaging, precondition))}
    for (k, v), (rule, ok) in zip(arrays.items(), _RULES):
        bad = v[~(ok(v) & np.isfinite(v))]
        if bad.size:
            raise ValueError(f"{k}: {bad.flat[0]:g} is not {rule}")
    try:
        shaped = np.broadcast_arrays(*arrays.values())
    except ValueError:
        raise ValueError(f"hyperparameter shapes {[v.shape for v in arrays.values()]} "
                         f"({', '.join(_HYPER)}) do not broadcast") from None
    layout = (bool((arrays["momentum"] != 0).any()), bool((arrays["averaging"] != 0).any()))
    return np.stack([a.reshape(-1) for a in shaped], 1), shaped[0].shape, layout


def _check_steps(steps) -> np.ndarray:
    t = np.atleast_1d(np.asarray(steps))
    if t.ndim != 1 or t.size == 0 or not np.issubdtype(t.dtype, np.integer) or (t < 0).any():
        raise ValueError(f"steps: {steps!r} is not a non-empty [T] array of non-negative integers")
    return t


def _as_jax(nqm: NQM) -> NQM:
    return NQM(*(jnp.asarray(a, jnp.float64) for a in nqm))


def nqm_expected_loss(nqm: NQM, steps, learning_rate, batch_size, *, momentum=0.0,
                      averaging=0.0, precondition=0.0) -> np.ndarray:
    """Exact expected loss ℓ(t) at the given steps (see module docstring).

    Args:
      nqm: the model (``make_nqm``).
      steps: [T] non-negative integers (optimizer steps; 10⁶ costs what 10 does).
      learning_rate, batch_size (examples), momentum β ∈ [0, 1), averaging (EMA decay γ ∈
        [0, 1); 0: no averaging), precondition (power p of P = H^(−p)): broadcastable arrays.

    Returns:
      float64 [*broadcast shape, T]; unstable configurations grow (to inf).
    """
    t = _check_steps(steps)
    configs, shape, layout = _configs(learning_rate, batch_size, momentum, averaging, precondition)
    levels = -(-max(1, int(t.max()).bit_length()) // 16) * 16  # few distinct programs
    with jax.enable_x64(True):
        jnqm, steps64 = _as_jax(nqm), jnp.asarray(t, jnp.int64)
        out = _chunked(lambda cfg: _expected_loss(jnqm, cfg, steps64, levels, layout), configs,
                       (2 * levels + 32) * (1 + layout[0] + layout[1]) ** 2 * nqm.h.size, False)
    return out.reshape(*shape, t.size)


def nqm_first_crossing(nqm: NQM, target: float, learning_rate, batch_size, *, momentum=0.0,
                       averaging=0.0, precondition=0.0, max_steps: int = 2**32,
                       exact_steps: int = 1024) -> np.ndarray:
    """The first step with ℓ(t) ≤ ``target``: float64 [*broadcast shape] of the hyperparameters
    (as in ``nqm_expected_loss``); 0 if ℓ(0) ≤ target, inf if not by ``max_steps`` (rounded up
    to a power of two).

    ℓ at t = 2^j finds the first bracket (2^(j−1), 2^j] that ends below the target. If 2^j ≤
    ``exact_steps`` every step up to it is walked: exact, also for momentum curves that oscillate
    across the target. Beyond, binary lifting on the powers of A bisects the bracket: exact when
    ℓ crosses the target once in it — always for SGD started above its steady state (each s_i(t)
    is then monotone) — else some later crossing in the bracket.
    """
    if not (np.isfinite(target) and target > 0):
        raise ValueError(f"target: {target!r} is not a positive finite number")
    max_steps, exact_steps = check_int("max_steps", max_steps, 1), check_int(
        "exact_steps", exact_steps, 0)
    configs, shape, layout = _configs(learning_rate, batch_size, momentum, averaging, precondition)
    levels = (max_steps - 1).bit_length() + 1  # the grid t = 2^j reaches max_steps
    with jax.enable_x64(True):
        jnqm = _as_jax(nqm)
        out = _chunked(lambda cfg: _steps(jnqm, cfg, float(target), exact_steps, levels, layout),
                       configs, 3 * levels * (1 + layout[0] + layout[1]) ** 2 * nqm.h.size, True)
    return out.reshape(shape)


class NQMSteps(NamedTuple):
    """Result of ``nqm_steps_to_target``: [B] arrays, batch sizes ascending.

    batch_size: examples. steps: optimizer steps to the target at the best hyperparameters
    (inf where no searched learning rate reaches it within ``max_steps``). learning_rate,
    momentum, averaging: the best values (NaN where unreachable). target: the loss target.
    """

    batch_size: np.ndarray
    steps: np.ndarray
    learning_rate: np.ndarray
    momentum: np.ndarray
    averaging: np.ndarray
    target: float


def nqm_steps_to_target(nqm: NQM, batch_sizes: Sequence[float], target: float = 0.01, *,
                        momentum: float | Sequence[float] = 0.0,
                        averaging: float | Sequence[float] = 0.0, precondition: float = 0.0,
                        learning_rates: Sequence[float] | None = None,
                        learning_rates_per_decade: int = 4, learning_rate_decades: float = 8.0,
                        refine: int = 3, refine_points: int = 6, max_steps: int = 2**32,
                        exact_steps: int = 1024) -> NQMSteps:
    """Fewest steps to ℓ(t) ≤ ``target`` (``nqm_first_crossing``) per batch size, over learning
    rates and every combination of the given momenta and EMA decays.

    The learning-rate grid has ``learning_rates_per_decade`` points per decade over
    ``learning_rate_decades`` decades below ε_stable·(1 − 10⁻³), ε_stable = 2(1 + β)/max h^(1−p),
    or is ``learning_rates``; each of ``refine`` rounds adds ``refine_points`` between the best
    point's neighbours (ties: the middle of the tied points). A best learning rate at the lower
    edge of the grid means the grid is too short.
    """
    b = np.sort(_vector("batch_sizes", batch_sizes, positive=True))
    for name, value in (("momentum", momentum), ("averaging", averaging)):
        v = np.asarray(value, np.float64)
        if v.ndim > 1 or v.size == 0 or not ((v >= 0) & (v < 1)).all():
            raise ValueError(f"{name}: {value!r} is not a value or list of values in [0, 1)")
    if not (np.isfinite(learning_rate_decades) and learning_rate_decades > 0):
        raise ValueError(f"learning_rate_decades: {learning_rate_decades!r} is not positive")
    per_decade = check_int("learning_rates_per_decade", learning_rates_per_decade, 1)
    refine, refine_points = check_int("refine", refine, 0), check_int(
        "refine_points", refine_points, 1)
    # One line per (batch size, β, γ), each with its own learning-rate search: [lines, 1].
    lines = [a.reshape(-1, 1) for a in np.meshgrid(b, np.atleast_1d(momentum),
                                                   np.atleast_1d(averaging), indexing="ij")]
    if learning_rates is None:
        stable = 2 * (1 + lines[1]) / np.max(nqm.h ** (1.0 - float(precondition)))
        grid = np.logspace(-learning_rate_decades, 0, round(per_decade * learning_rate_decades) + 1)
        eps = stable * (1 - 1e-3) * grid
    else:
        eps = np.broadcast_to(_vector("learning_rates", learning_rates, positive=True),
                              (lines[0].size, np.size(learning_rates)))

    def evaluate(eps):  # [lines, n] -> steps [lines, n]
        return nqm_first_crossing(nqm, target, eps, lines[0], momentum=lines[1],
                                  averaging=lines[2], precondition=precondition,
                                  max_steps=max_steps, exact_steps=exact_steps)

    all_eps, all_steps = eps, evaluate(eps)
    for _ in range(refine):
        all_eps, all_steps, best = _best(all_eps, all_steps)
        rows = np.arange(len(best))
        lo = all_eps[rows, np.maximum(best - 1, 0)]
        hi = all_eps[rows, np.minimum(best + 1, all_eps.shape[1] - 1)]
        new = lo[:, None] * (hi / lo)[:, None] ** (np.arange(1, refine_points + 1)
                                                   / (refine_points + 1))
        all_eps = np.concatenate([all_eps, new], 1)
        all_steps = np.concatenate([all_steps, evaluate(new)], 1)
    all_eps, all_steps, best = _best(all_eps, all_steps)
    rows = np.arange(len(best))
    line_steps = all_steps[rows, best].reshape(b.size, -1)
    pick = np.argmin(line_steps, axis=1)  # the best (β, γ) per batch size
    steps = line_steps[np.arange(b.size), pick]

    def chosen(v):
        return np.where(np.isfinite(steps), v.reshape(b.size, -1)[np.arange(b.size), pick], np.nan)

    return NQMSteps(b, steps, chosen(all_eps[rows, best]), chosen(lines[1]), chosen(lines[2]),
                    float(target))


def _best(eps: np.ndarray, steps: np.ndarray):
    """Sort each line by learning rate; the middle index among its fewest steps (integer steps
    tie over a flat optimum). Returns (eps, steps, best) [lines, n], [lines, n], [lines]."""
    order = np.argsort(eps, axis=1)
    eps, steps = np.take_along_axis(eps, order, 1), np.take_along_axis(steps, order, 1)
    ties = steps == steps.min(axis=1, keepdims=True)
    first, last = np.argmax(ties, axis=1), steps.shape[1] - 1 - np.argmax(ties[:, ::-1], axis=1)
    return eps, steps, (first + last) // 2


def nqm_critical_batch_size(result: NQMSteps, threshold: float = 1.2) -> float:
    """The batch size where steps first exceed perfect scaling from the smallest batch size by
    ``threshold`` (examples B·S > threshold·B_0·S_0), interpolated in (log B, log B·S); NaN if
    never (or at the smallest B already). Needs the smallest B in the perfect-scaling regime."""
    if not (np.isfinite(threshold) and threshold > 1):
        raise ValueError(f"threshold: {threshold!r} is not a finite number above 1")
    examples = result.batch_size * result.steps
    if not np.isfinite(examples[0]):
        return math.nan
    return examples_crossing(result.batch_size, examples, threshold * examples[0])


# --------------------------------------------------------------------------- Monte Carlo


class NQMMonteCarlo(NamedTuple):
    """Simulated loss: the mean over runs and its standard error, [*broadcast shape, T] each."""

    mean: np.ndarray
    stderr: np.ndarray


def _optimizer(learning_rate, preconditioner, momentum):
    """x ← x − ε m, m ← β m + P g: ``optax.sgd`` after scaling the gradient by P = h^(−p)."""
    precondition = optax.stateless(lambda updates, params=None: updates * preconditioner)
    return optax.chain(precondition, optax.sgd(learning_rate, momentum=momentum))


@functools.partial(jax.jit, static_argnames=("num_steps", "num_runs"))
def _simulate(nqm, configs, key, num_steps, num_runs):
    """Loss mean and standard error over runs at steps 0..num_steps: [num_steps + 1, N] each."""
    h, c, s0 = nqm
    init_key, noise_key = jax.random.split(key)
    shape = (len(configs), num_runs, h.size)
    x0 = jnp.sqrt(s0) * jax.random.normal(init_key, shape, h.dtype)

    def init(config, x):
        lr, _, beta, _, power = config
        return _optimizer(lr, h ** (-power), beta).init(x)

    def update(config, x, z, state, noise):  # one run, one step
        lr, batch, beta, gamma, power = config
        grad = h * x + jnp.sqrt(c / batch) * noise  # the Gaussian gradient oracle
        updates, state = _optimizer(lr, h ** (-power), beta).update(grad, state, x)
        x = optax.apply_updates(x, updates)
        return x, optax.incremental_update(x, z, 1.0 - gamma), state

    per_run = jax.vmap(jax.vmap(update, (None, 0, 0, 0, 0)))  # configs × runs
    states = jax.vmap(jax.vmap(init, (None, 0)))(configs, x0)

    def moments(z):
        loss = 0.5 * jnp.sum(h * z**2, axis=-1)  # [N, runs]
        return jnp.mean(loss, 1), jnp.std(loss, 1, ddof=1) / jnp.sqrt(num_runs)

    def step(carry, t):  # the moments at step t, then one step (the last one is not used)
        x, z, state = carry
        noise = jax.random.normal(jax.random.fold_in(noise_key, t), shape, h.dtype)
        return per_run(configs, x, z, state, noise), moments(z)

    return jax.lax.scan(step, (x0, x0, states), jnp.arange(num_steps + 1))[1]


def nqm_monte_carlo(nqm: NQM, steps, learning_rate, batch_size, *, key: jax.Array,
                    momentum=0.0, averaging=0.0, precondition=0.0,
                    num_runs: int = 1000) -> NQMMonteCarlo:
    """Simulate the NQM with optax (see module docstring): the loss of the iterate (of its EMA
    where ``averaging`` > 0) at ``steps`` [T], as mean over ``num_runs`` independent runs
    (x₀ ~ N(0, diag s0), fresh gradient noise every step) and its standard error.

    Hyperparameters broadcast as in ``nqm_expected_loss``; every configuration and run is one
    ``vmap`` lane of a single ``lax.scan`` over max(steps) steps. Float32 unless x64 is on.
    Returns ``NQMMonteCarlo`` with [*broadcast shape, T] arrays.
    """
    t = _check_steps(steps)
    configs, shape, _ = _configs(learning_rate, batch_size, momentum, averaging, precondition)
    num_runs = check_int("num_runs", num_runs, 2)
    dtype = jnp.zeros(()).dtype  # float32, or float64 under x64
    model = NQM(*(jnp.asarray(a, dtype) for a in nqm))
    mean, stderr = _simulate(model, jnp.asarray(configs, dtype), key, int(t.max()), num_runs)
    return NQMMonteCarlo(*(np.asarray(a, np.float64)[t].T.reshape(*shape, t.size)
                           for a in (mean, stderr)))
