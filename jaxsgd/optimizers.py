"""Optimizers and learning-rate schedules with every hyperparameter a traced value.

The optimizer of a run is built *inside* the traced training function from the run's
``HParams`` (scalars, vmapped over runs), so a new learning rate, momentum or schedule
parameter changes array values, never the compiled program. ``optax.inject_hyperparams``
keeps the current learning rate and the values the family reads (momentum; Adam's b2, eps;
weight decay: ``jaxsgd.hyperparams``) in the optimizer state, where probes can read them
(``opt_state.hyperparams["learning_rate"]``).

Schedules are multipliers of the peak learning rate, functions of the optimizer step count:
linear warm-up over ``warmup × total_steps`` steps, then
* constant: 1;
* cosine: from 1 down to ``decay`` at the last step;
* step: multiplied by ``decay`` at each fraction in ``boundaries`` of the run.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence, Union

import jax
import jax.numpy as jnp
import optax

from jaxsgd.hyperparams import (OPTIMIZER_ARGS, HParams, hparams,  # noqa: F401 (doctest)
                                used_optimizer_args)


# A user's own optimizer: the optax transformation of one run from its traced hyperparameters,
# e.g. ``lambda hp: optax.lion(hp.learning_rate, b1=hp.momentum)``.
OptimizerFactory = Callable[[HParams], optax.GradientTransformation]


def learning_rate_multiplier(
    count: jnp.ndarray,
    total_steps: int,
    schedule: str,
    warmup: jnp.ndarray,
    decay: jnp.ndarray,
    boundaries: Sequence[float] = (0.5, 0.75),
) -> jnp.ndarray:
    """Multiplier in (0, 1] of the peak learning rate at optimizer step ``count`` (0-based).

    ``total_steps`` is static; ``warmup`` (fraction of total_steps) and ``decay`` may be traced.
    """
    t = jnp.asarray(count, jnp.float32)
    warmup_steps = warmup * total_steps
    ramp = jnp.where(warmup_steps > 0, jnp.minimum(1.0, (t + 1.0) / jnp.maximum(warmup_steps, 1.0)), 1.0)
    if schedule == "constant":
        after = jnp.float32(1.0)
    elif schedule == "cosine":
        span = jnp.maximum(total_steps - 1 - warmup_steps, 1.0)
        progress = jnp.clip((t - warmup_steps) / span, 0.0, 1.0)
        after = decay + (1.0 - decay) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    elif schedule == "step":
        passed = sum((t >= b * total_steps).astype(jnp.float32) for b in boundaries)
        after = decay**passed
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return ramp * after


def scale_by_adam(b1, one_minus_b2, eps) -> optax.GradientTransformation:
    """``optax.scale_by_adam`` with β2 given as its complement 1 − β2.

    The second moment is ν ← (1 − β2) g² + β2 ν and its bias correction 1 − β2^t, exactly as
    optax computes them, but 1 − β2 is the traced value itself (computed in float64 on the
    host): a float32 β2 near 1 would carry it with a relative error of up to 2⁻²⁴/(1 − β2)
    (1.3e-5 at β2 = 0.999, 1.3% at 0.999999). At β2 = 0.999, 1e-8 this equals
    ``optax.scale_by_adam(b1, 0.999, 1e-8)`` with Python-float arguments bitwise.
    """

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros,
                                      nu=jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        b2 = 1 - one_minus_b2
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = jax.tree.map(lambda g, t: one_minus_b2 * g**2 + b2 * t, updates, state.nu)
        count = optax.safe_increment(state.count)
        mu_hat = optax.tree.bias_correction(mu, b1, count)
        nu_hat = optax.tree.bias_correction(nu, b2, count)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu_hat, nu_hat)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def _family(optimizer: str, learning_rate, momentum, one_minus_b2, eps,
            weight_decay) -> optax.GradientTransformation:
    """The optax transformation of one optimizer family (args may be traced or callables)."""
    if optimizer in ("adam", "adamw"):
        adam = scale_by_adam(momentum, one_minus_b2, eps)
        if optimizer == "adamw":  # decoupled decay: as optax.adamw
            return optax.chain(adam, optax.add_decayed_weights(weight_decay),
                               optax.scale_by_learning_rate(learning_rate))
        # Coupled L2 (added to the gradient first), then optax.adam's chain
        base = optax.chain(adam, optax.scale_by_learning_rate(learning_rate))
    elif optimizer == "sgd":
        base = optax.sgd(learning_rate)
    elif optimizer in ("momentum", "nesterov"):
        base = optax.sgd(learning_rate, momentum=momentum, nesterov=optimizer == "nesterov")
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    # Coupled L2: decay added to the gradient before the family's update.
    return optax.chain(optax.add_decayed_weights(weight_decay), base)


def fixed_horizon(hparams: HParams, batch_size: int, reference: int,
                  b1: bool = False) -> HParams:
    """Adam's β2 (and with ``b1`` β1, the ``momentum`` field) given at batch size ``reference``,
    rescaled to ``batch_size`` so that its averaging half-life stays fixed in *examples*
    (Marek et al. 2025):

        β(B) = β_ref^(B / B_ref),   half-life  h = B · ln 2 / (−ln β(B)) = B_ref · ln 2 / (−ln β_ref)

    e.g. β2 = 0.999 at B_ref = 64 (h = 44 339 examples) becomes 0.999875 at B = 8 and 0.98412
    at B = 1024 (β1 = 0.9: 0.98692 and 0.18530). 1 − β2 is computed as −expm1(r · log1p(−(1 − β2_ref))), exact in float32.
    """
    r = batch_size / reference
    out = hparams._replace(one_minus_b2=-jnp.expm1(r * jnp.log1p(-hparams.one_minus_b2)))
    return out._replace(momentum=hparams.momentum ** r) if b1 else out


def learning_rate_factor(batch_size: int, reference: int, rule: str) -> float:
    """The factor a per-batch-size rule applies to a learning rate given at batch size
    ``reference``: B/B_ref ("linear": Goyal et al. 2017), √(B/B_ref) ("sqrt": Malladi et al.
    2022) or 1 ("none")."""
    if rule == "none":
        return 1.0
    if rule not in ("linear", "sqrt"):
        raise ValueError(f"rule: {rule!r} is not one of none, linear, sqrt")
    ratio = batch_size / reference
    return ratio if rule == "linear" else ratio**0.5


def scaled_learning_rate(hparams: HParams, batch_size: int, reference: int,
                         rule: str) -> HParams:
    """The grid's learning rate ε, given at batch size ``reference``, at ``batch_size``
    (``learning_rate_factor``). E.g. ε = 0.1 at B_ref = 256 is 0.4 at B = 1024 (linear), 0.2
    (sqrt)."""
    if rule == "none":
        return hparams
    return hparams._replace(
        learning_rate=hparams.learning_rate * learning_rate_factor(batch_size, reference, rule))


def half_life(one_minus_beta, batch_size: int):
    """The examples over which an EMA with decay β = 1 − ``one_minus_beta`` per step of
    ``batch_size`` examples halves a past value's weight: B · ln 2 / (−ln β)."""
    return batch_size * jnp.log(2.0) / -jnp.log1p(-jnp.asarray(one_minus_beta))


def make_optimizer(
    optimizer: Union[str, OptimizerFactory],
    hparams: HParams,
    total_steps: int,
    schedule: str = "constant",
    boundaries: Sequence[float] = (0.5, 0.75),
    clock: Callable[[jnp.ndarray], jnp.ndarray] | None = None,
) -> optax.GradientTransformation:
    """optax optimizer of one run; static family/schedule, traced ``hparams``.

    The schedule's step is the optimizer's step count, or ``clock(count)`` (a float: e.g. a
    batch-size schedule's examples seen in steps of its first batch size), over
    ``total_steps`` such steps.

    ``optimizer`` is a built-in family's name (``jaxsgd.config.OPTIMIZERS``) or a user's own
    factory ``hp -> optax.GradientTransformation``. The factory is called with the run's
    ``HParams`` whose ``learning_rate`` is the *scheduled* rate of the current step (peak ×
    schedule multiplier, a traced scalar; ``optax.inject_hyperparams`` re-calls the factory each
    step, so the factory must give the same state structure for every rate); every other field
    is the run's traced grid value, read as the factory likes (``hp.momentum``, ``hp.b2``,
    ``hp.weight_decay``, ...). Built-in families add coupled L2 weight decay themselves; a
    factory applies ``hp.weight_decay`` only if it reads it.

    Example:
        >>> hp = hparams(learning_rate=0.1, momentum=0.9)
        >>> tx = make_optimizer("momentum", hp, total_steps=100)
        >>> lion = make_optimizer(lambda hp: optax.lion(hp.learning_rate, b1=hp.momentum), hp,
        ...                       total_steps=100)
    """

    def lr(count):
        mult = learning_rate_multiplier(count if clock is None else clock(count), total_steps, schedule, hparams.warmup,
                                        hparams.decay, boundaries)
        return hparams.learning_rate * mult

    if callable(optimizer):
        def user(learning_rate):
            return optimizer(hparams._replace(learning_rate=learning_rate))

        return optax.inject_hyperparams(user)(learning_rate=lr)

    # Inject (trace into the state) exactly the values this family reads; it ignores the others.
    names = used_optimizer_args(optimizer)
    unused = {n: getattr(hparams, n) for n in OPTIMIZER_ARGS if n not in names}

    def factory(learning_rate, **values):
        return _family(optimizer, learning_rate, **values, **unused)

    # inject_hyperparams reads the factory's signature: name every injected value in it.
    factory.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
         for n in ("learning_rate", *names)])
    return optax.inject_hyperparams(factory)(
        learning_rate=lr, **{name: getattr(hparams, name) for name in names})
