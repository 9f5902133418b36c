"""What one optimizer step of one run costs on this machine: seconds and XLA memory.

``step_cost(config, batch_size)`` compiles the sweep's own training step for a single run —
``make_trainer`` of the group's ``train_spec``: minibatch sampling, the gradient (as
``accumulation`` microbatches when configured), the divergence check and the optimizer update;
no evaluation — over a span of ``steps`` steps, and reports:

* seconds per step: the median over ``repeats`` timed spans after one untimed call
  (compilation excluded), on the default device;
* memory, from XLA's ``memory_analysis()``: the temporary bytes of the minibatch gradient
  alone (``step_gradients`` on one batch: activations and gradients, what grows with the
  batch and shrinks with accumulation), and the temporary and argument bytes of the compiled
  span (which also holds the evaluation branch's buffers; arguments: parameters, optimizer
  state, the training and evaluation sets).

The run is the grid's first point (first learning rate, first seed, ...).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsgd._util import check_int
from jaxsgd.config import SweepConfig
from jaxsgd.data import Dataset
from jaxsgd.engine.sweep import grid_hparams, prepare, train_data, train_spec
from jaxsgd.engine.training import Group, initial_params, make_trainer, step_gradients
from jaxsgd.models import Model


class StepCost(NamedTuple):
    """seconds: per optimizer step (median over the timed spans); gradient_bytes: XLA's
    temporary memory of one minibatch gradient; temp_bytes and argument_bytes: those of the
    compiled span of steps."""

    seconds: float
    gradient_bytes: int
    temp_bytes: int
    argument_bytes: int


def step_cost(config: SweepConfig, batch_size: int, *, data: Dataset | None = None,
              model: Model | None = None, steps: int = 32, repeats: int = 5) -> StepCost:
    """Seconds and memory of one optimizer step of one run at ``batch_size`` (module doc)."""
    check_int("steps", steps, 1)
    check_int("repeats", repeats, 1)
    parts = prepare(config, data, model)
    spec = train_spec(parts.config, batch_size, parts.data.num_train)
    trainer = make_trainer(spec, parts.model.init, parts.model.apply, parts.task.loss,
                           parts.task.metrics)
    hp, seeds = grid_hparams(parts.config)
    hp = jax.tree.map(lambda a: a[0], hp)
    seed = int(seeds[0])
    arrays = train_data(parts.config, parts.data)
    state = jax.jit(trainer.init)(hp, seed, initial_params(parts.model.init, seed), arrays)
    span = (jnp.arange(steps, dtype=jnp.int32), jnp.full((steps,), -1, jnp.int32))
    compiled = jax.jit(trainer.advance).lower(state, hp, arrays, *span).compile()
    memory = compiled.memory_analysis()
    seconds = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        jax.block_until_ready(compiled(state, hp, arrays, *span))
        if i:  # the first call is a warm-up
            seconds.append((time.perf_counter() - start) / steps)
    group = Group(spec, parts.model.init, parts.model.apply, parts.task.loss,
                  parts.task.metrics)
    batch = arrays.batch(jnp.arange(batch_size))
    gradient = jax.jit(lambda p, b: step_gradients(group, p, b)[:2]).lower(
        state.params, batch).compile().memory_analysis()
    return StepCost(seconds=float(np.median(seconds)),
                    gradient_bytes=int(gradient.temp_size_in_bytes),
                    temp_bytes=int(memory.temp_size_in_bytes),
                    argument_bytes=int(memory.argument_size_in_bytes))
