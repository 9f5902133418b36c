"""jaxsgd's optimizer step against the bare step: what its bookkeeping costs per batch size.

Both train the reference grid's 16 runs (MLP 40-256-256-10, SGD, 2^17 examples per run),
vmapped and sharded over the devices the same way, with no evaluation:

* ``bare``: ``xla_ceiling.bare_step`` — forward, backward and ``p - lr * g`` on one fixed
  minibatch per run, one ``lax.scan`` over every step;
* ``jaxsgd``: the engine's own programs for the reference configuration (``init``, then
  ``advance`` over the engine's chunks) with no step an evaluation slot: per-epoch sampling and
  the minibatch gather, the evaluation ``lax.cond`` (never taken), the loss monitor, optax and
  the freeze of diverged or stopped runs.

Each is compiled first, then timed in ``--repeats`` interleaved rounds; the best of each is
reported, and their ratio (jaxsgd / bare: 1.05 is 5% of bookkeeping).

    python benchmarks/step_overhead.py                  # B = 16, 64, 256, 1024
    python benchmarks/step_overhead.py --batch-sizes 16 --budget 32768

Writes the table to ``benchmarks/results/step_overhead.txt`` (``--out``).
"""

from __future__ import annotations

import time

import jax
import numpy as np

from jaxsgd.engine import sharding, sweep
from reference_grid import Transcript, benchmark_arguments, sweep_config  # 8 CPU devices
from xla_ceiling import RUNS, bare_arguments, bare_step, sharded_scan


def jaxsgd_training(batch_size: int, budget: int, mesh):
    """A function running the reference sweep's training at one batch size without
    evaluations: the engine's own ``init`` and ``advance`` programs over its chunks."""
    config = sweep_config(batch_size, budget)
    parts = sweep.prepare(config)
    spec = sweep.train_spec(config, batch_size, parts.data.num_train)
    hp, seeds = sweep.grid_hparams(config)
    hp, seeds = sharding.shard_runs(hp, mesh), sharding.shard_runs(seeds, mesh)
    data = sweep.train_data(config, parts.data, mesh)
    programs = sharding.group_programs(spec, parts.model, parts.task, (), mesh, "step_overhead")
    params = sharding.init_params_program(parts.model, mesh, "step_overhead")(seeds)
    steps = np.arange(spec.num_steps, dtype=np.int32)
    slots = np.full(spec.num_steps, -1, np.int32)  # no step is evaluated
    chunk = sweep.chunk_length(spec.num_steps, None)
    spans = [sharding.replicate((steps[a:a + chunk], slots[a:a + chunk]), mesh)
             for a in range(0, spec.num_steps, chunk)]

    def run():
        state = programs.init(hp, seeds, params, data)
        for span in spans:
            state = programs.advance(state, hp, data, *span)
        return state

    return run, parts.data


def bare_training(batch_size: int, budget: int, mesh, data):
    """The bare step's scan over the same number of steps, one fixed minibatch per run."""
    program = sharded_scan(bare_step, budget // batch_size, mesh)
    args = bare_arguments(batch_size, data, mesh)
    return lambda: program(*args)


def main() -> None:
    args = benchmark_arguments(__doc__, budget=2**17, repeats=5,
                               results="step_overhead.txt").parse_args()
    say = Transcript()
    mesh = sharding.run_mesh()
    say(f"jax {jax.__version__}, {mesh.size} {jax.devices()[0].platform} devices, {RUNS} runs, "
        f"{args.budget} examples per run, no evaluation; best of {args.repeats} interleaved "
        f"rounds")
    say(f"{'B':>6} {'steps':>6} {'bare s':>8} {'jaxsgd s':>9} {'jaxsgd/bare':>11}")
    for b in args.batch_sizes:
        train, data = jaxsgd_training(b, args.budget, mesh)
        calls = {"bare": bare_training(b, args.budget, mesh, data), "jaxsgd": train}
        best = dict.fromkeys(calls, float("inf"))
        for call in calls.values():
            jax.block_until_ready(call())  # compile
        for _ in range(args.repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                jax.block_until_ready(call())
                best[name] = min(best[name], time.perf_counter() - start)
        say(f"{b:>6} {args.budget // b:>6} {best['bare']:>8.3f} {best['jaxsgd']:>9.3f} "
            f"{best['jaxsgd'] / best['bare']:>11.3f}")
    say.write(args.out)


if __name__ == "__main__":
    main()
