"""Minibatch sampling inside the training scan, reproducible from a run's key and the step.

* "epoch": each epoch is a fresh permutation of the training set drawn from
  ``fold_in(key, epoch)``; step ``t`` takes the ``t mod (N // B)``-th block of B indices (the
  last ``N mod B`` examples of each permutation are dropped, so every batch has exactly B
  distinct examples).
* "replacement": B indices drawn uniformly from ``fold_in(key, t)``.

Both depend only on (key, step), never on how the steps are chunked. A batch-size schedule's
stage s > 0 samples from ``stage_key(key, s)`` with the step counted from the stage's first
step, so every stage begins a fresh epoch (``jaxsgd.config.SweepConfig.stages``). The step counter is a
Python-level/unbatched value, so the per-epoch reshuffle is a ``lax.cond`` branch that runs once
an epoch even when vmapped over runs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class SamplerState(NamedTuple):
    """perm: [N] int32, the current epoch's permutation (length 0 for "replacement")."""

    perm: jnp.ndarray


STAGE_TAG = 0x5354  # fold_in(key, STAGE_TAG) roots the stage keys, apart from the epoch keys


def stage_key(key: jax.Array, stage: int) -> jax.Array:
    """The sampling key of a batch-size schedule's stage: ``key`` itself for stage 0 (a run
    without growth), else ``fold_in(fold_in(key, STAGE_TAG), stage)``."""
    if stage == 0:
        return key
    return jax.random.fold_in(jax.random.fold_in(key, STAGE_TAG), stage)


def init_sampler(num_train: int, sampling: str) -> SamplerState:
    size = num_train if sampling == "epoch" else 0
    return SamplerState(perm=jnp.zeros((size,), jnp.int32))


def sample_indices(
    state: SamplerState,
    key: jax.Array,
    step: jnp.ndarray,
    batch_size: int,
    num_train: int,
    sampling: str,
) -> tuple[SamplerState, jnp.ndarray]:
    """Indices [batch_size] int32 of the minibatch at optimizer step ``step`` (unbatched int)."""
    if sampling == "replacement":
        idx = jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, num_train)
        return state, idx.astype(jnp.int32)
    steps_per_epoch = num_train // batch_size
    epoch, position = jnp.divmod(step, steps_per_epoch)
    perm = jax.lax.cond(
        position == 0,
        lambda: jax.random.permutation(jax.random.fold_in(key, epoch), num_train).astype(jnp.int32),
        lambda: state.perm,
    )
    idx = jax.lax.dynamic_slice_in_dim(perm, position * batch_size, batch_size)
    return SamplerState(perm=perm), idx
