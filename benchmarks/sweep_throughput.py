"""Compile time and steady-state throughput of the sweep engine on the reference grid.

Reference grid (issue 2): MNIST-1D, MLP 40-256-256-10, SGD, 4 seeds x 4 learning rates,
batch sizes {16, 64, 256, 1024}, 2^17 examples per run, 16 evaluations.

Per batch-size group it reports: compile time (jit lower + compile of the vmapped init/advance/
finish; the initial-parameter program is compiled once per sweep and reported apart), steady-state run time of the compiled program (second call, same shapes), examples/s
(all runs together), µs per run-step, and the fraction of steady time spent in evaluation
(measured by re-running the same group with a single evaluation).

    python benchmarks/sweep_throughput.py            # reference grid
    python benchmarks/sweep_throughput.py --quick    # 2^13 examples per run
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxsgd import Grid, SweepConfig
from jaxsgd.evaluation import eval_slots, evaluation_steps
from jaxsgd.sweep import grid_hparams, group_program, init_program, prepare, train_data, train_spec


def time_group(config, batch_size, data, model, task, params):
    """(compile s, steady s, steps, final state) of one batch-size group."""
    spec = train_spec(config, batch_size, int(data.x.shape[0]))
    init, advance, finish = group_program(spec, model, task, model_key=("bench", config.eval_every))
    hp, seeds = grid_hparams(config)
    slots = jnp.asarray(eval_slots(evaluation_steps(config, batch_size), spec.num_steps)[0])
    steps = jnp.arange(spec.num_steps, dtype=jnp.int32)
    t0 = time.perf_counter()
    init_c = init.lower(hp, seeds, params, data).compile()
    state_shape = jax.eval_shape(init, hp, seeds, params, data)
    adv_c = advance.lower(state_shape, hp, data, steps, slots).compile()
    fin_c = finish.lower(state_shape, hp, data).compile()
    compile_s = time.perf_counter() - t0

    def run():
        s = init_c(hp, seeds, params, data)
        s = adv_c(s, hp, data, steps, slots)
        s = fin_c(s, hp, data)
        jax.block_until_ready(s)
        return s

    run()  # warm-up
    t0 = time.perf_counter()
    state = run()
    steady_s = time.perf_counter() - t0
    return compile_s, steady_s, spec.num_steps, state


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2^13 examples per run")
    args = parser.parse_args()
    budget = 2**13 if args.quick else 2**17
    config = SweepConfig(
        data="mnist1d", data_options={"num_samples": 5000}, model="mlp",
        model_options={"width": 256, "depth": 2}, batch_sizes=(16, 64, 256, 1024), budget=budget,
        eval_every=budget // 16,
        grid=Grid(learning_rate=(0.01, 0.03, 0.1, 0.3), seed=(0, 1, 2, 3)))
    dataset, model, task = prepare(config)
    data = train_data(config, dataset)
    runs = config.grid.num_runs
    _, seeds = grid_hparams(config)
    t0 = time.perf_counter()
    params_program = init_program(model, ("bench",)).lower(seeds).compile()
    init_compile = time.perf_counter() - t0
    params = params_program(seeds)
    print(f"jax {jax.__version__}, devices {jax.devices()}, {runs} runs/group, {budget} examples/run")
    print(f"{'B':>6} {'steps':>6} {'compile s':>10} {'steady s':>9} {'examples/s':>11} "
          f"{'us/run-step':>12} {'eval share':>10}")
    total_c = total_s = 0.0
    no_eval = config.replace(eval_every=budget)
    for b in config.batch_sizes:
        c, s, steps, _ = time_group(config, b, data, model, task, params)
        _, s0, _, _ = time_group(no_eval, b, data, model, task, params)
        total_c += c
        total_s += s
        print(f"{b:>6} {steps:>6} {c:>10.2f} {s:>9.2f} {runs * budget / s:>11.0f} "
              f"{1e6 * s / (runs * steps):>12.1f} {max(0.0, 1 - s0 / s):>10.1%}")
    print(f"initial-parameter program (once per sweep): compile {init_compile:.2f} s")
    print(f"total: compile {total_c + init_compile:.1f} s, steady {total_s:.1f} s, "
          f"{runs * budget * len(config.batch_sizes) / total_s:.0f} examples/s")


if __name__ == "__main__":
    main()
