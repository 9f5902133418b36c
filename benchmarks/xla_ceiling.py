"""How fast can XLA:CPU train the reference MLP at all? The ceiling under jaxsgd's speed.

The reference grid's steady-state target (issue 3) is 75% of the machine's float32 matmul peak.
This script measures, in one run, what the *least* a training step can be achieves on the same
shapes — a floor on the work and so a ceiling on the speed any engine built on XLA:CPU reaches:

* ``peak``: the float32 matmul peak, as ``reference_grid.py`` measures it (``baselines``);
* ``bare step``: 16 runs of MLP 40-256-256-10 (ReLU, softmax cross-entropy, plain SGD), vmapped
  and sharded over the devices exactly like jaxsgd (``jit(shard_map(vmap(...)))``, 2 runs per
  device on 8 devices), a ``lax.scan`` over steps on one fixed minibatch per run: no sampling,
  no evaluation, no divergence check, no optax — only the model's forward, backward and update;
* ``matmuls only``: the same step's six matmuls (3 forward, 3 backward weight/input products of
  the same shapes) with no elementwise work at all;
* ``bare + evals``: the bare step's time plus the reference grid's 17 evaluations (loss and
  accuracy of every run on the 4000 + 1000 examples, one jitted forward each, timed the same
  way): the least work the reference grid asks for, and so the ceiling for jaxsgd's number;
* ``jaxsgd``: ``run_sweep`` of the reference configuration at the same batch size (training
  plus its 17 evaluations, which are timed but not counted, as in ``reference_grid.py``).

GFLOP/s count training matmuls only (3 × forward = 470,016 FLOPs per example), so the columns
are comparable. Each is the best of ``--repeats`` steady calls after a compiling one.

    python benchmarks/xla_ceiling.py                 # 2^17 examples per run, B = 16..1024
    python benchmarks/xla_ceiling.py --budget 8192   # quicker (evaluations weigh more)

Writes the table to ``benchmarks/results/xla_ceiling.txt`` (``--out``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

import baselines
import jaxsgd
from jaxsgd.data import mnist1d
from reference_grid import (WIDTHS, Transcript, benchmark_arguments, run_sweep_options,
                            sweep_config, time_call)

RUNS = 16


def init(key):
    keys = jax.random.split(key, len(WIDTHS) - 1)
    return [(jax.random.normal(k, (a, b)) / np.sqrt(a), jnp.zeros(b))
            for k, a, b in zip(keys, WIDTHS[:-1], WIDTHS[1:])]


def loss(params, x, y):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    logits = x @ w + b
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


def bare_step(params, x, y):
    grads = jax.grad(loss)(params, x, y)
    return jax.tree.map(lambda p, g: p - 0.01 * g, params, grads)


def matmuls_only(params, x, y):
    """The six training matmuls per layer pair, chained so none is dead code."""
    del y
    acts = [x]
    for w, _ in params:
        acts.append(acts[-1] @ w)
    delta = acts[-1]
    new = []
    for (w, b), a in zip(reversed(params), reversed(acts[:-1])):
        grad_w = a.T @ delta
        delta = delta @ w.T
        new.append((w - 1e-6 * grad_w, b))
    return new[::-1]


def evaluate(params, x, y):
    """Mean loss and accuracy of one run on [n, 40] examples (what an evaluation computes)."""
    h = x
    for w, b in params[:-1]:
        h = jax.nn.relu(h @ w + b)
    w, b = params[-1]
    logits = h @ w + b
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)
    return jnp.mean(nll), jnp.mean(jnp.argmax(logits, -1) == y)


def sharded_scan(step_fn, steps: int, mesh):
    """jit(shard_map(vmap(scan of step_fn))) over the runs axis, like jaxsgd's programs."""
    def one_run(params, x, y):
        return jax.lax.scan(lambda p, _: (step_fn(p, x, y), None), params, None, steps)[0]

    spec = P("runs")
    return jax.jit(jax.shard_map(jax.vmap(one_run), mesh=mesh, in_specs=(spec, spec, spec),
                                 out_specs=spec))


def bare_arguments(batch_size: int, data, mesh):
    """The bare step's arguments split over runs on ``mesh``: ``RUNS`` runs' initial parameters
    and one fixed minibatch per run (x [RUNS, B, 40] float32, y [RUNS, B] int32)."""
    params = jax.vmap(init)(jax.random.split(jax.random.key(0), RUNS))
    pick = np.random.default_rng(batch_size).integers(0, data.num_train, (RUNS, batch_size))
    x, y = data.x_train[pick].astype(np.float32), data.y_train[pick].astype(np.int32)
    return jax.device_put((params, x, y), NamedSharding(mesh, P("runs")))


def main() -> None:
    args = benchmark_arguments(__doc__, budget=2**17, repeats=3,
                               results="xla_ceiling.txt").parse_args()
    say = Transcript()
    devices = jax.devices()
    mesh = jax.make_mesh((len(devices),), ("runs",),
                         axis_types=(jax.sharding.AxisType.Auto,))
    peak = baselines.matmul_peak_gflops()["gflops"]
    flops = baselines.mlp_train_flops_per_example(WIDTHS)
    data = mnist1d(num_samples=5000)
    say(f"jax {jax.__version__}, {len(devices)} {devices[0].platform} devices, {RUNS} runs, "
        f"{args.budget} examples per run; float32 matmul peak {peak:.1f} GFLOP/s")
    say("GFLOP/s of training matmuls (% of peak); best of "
        f"{args.repeats} steady calls")
    say(f"{'B':>6} {'matmuls only':>16} {'bare step':>16} {'bare + evals':>16} {'jaxsgd':>16} "
        f"{'jaxsgd/(bare + evals)':>21}")
    x_eval = np.concatenate([data.x_train, data.x_test]).astype(np.float32)
    y_eval = np.concatenate([data.y_train, data.y_test]).astype(np.int32)
    replicated = NamedSharding(mesh, P())
    eval_all = jax.jit(jax.shard_map(jax.vmap(evaluate, in_axes=(0, None, None)), mesh=mesh,
                                     in_specs=(P("runs"), P(), P()), out_specs=P("runs")))
    eval_args = (jax.device_put(x_eval, replicated), jax.device_put(y_eval, replicated))
    num_evals = 17  # reference_grid.py: every budget / 16 examples, start and end included
    columns = ("matmuls only", "bare step", "bare + evals", "jaxsgd")
    totals = dict.fromkeys(columns, 0.0)  # seconds over the batch sizes
    total_work = 0.0

    def row(label, rates):
        say(f"{label:>6} " + " ".join(f"{rates[c]:>7.1f} ({100 * rates[c] / peak:>4.1f}%)"
                                      for c in columns)
            + f" {rates['jaxsgd'] / rates['bare + evals']:>21.2f}")
    for b in args.batch_sizes:
        steps = args.budget // b
        args_ = bare_arguments(b, data, mesh)
        work = RUNS * steps * b * flops / 1e9
        rates, seconds = {}, {}
        for name, fn in (("matmuls only", matmuls_only), ("bare step", bare_step)):
            seconds[name] = time_call(sharded_scan(fn, steps, mesh), *args_, repeats=args.repeats)
            rates[name] = work / seconds[name]
        one_eval = time_call(eval_all, args_[0], *eval_args, repeats=args.repeats)
        seconds["bare + evals"] = seconds["bare step"] + num_evals * one_eval
        rates["bare + evals"] = work / seconds["bare + evals"]
        config = sweep_config(b, args.budget)
        run = partial(jaxsgd.run_sweep, config, data=data, **run_sweep_options())
        seconds["jaxsgd"] = time_call(run, repeats=args.repeats)
        rates["jaxsgd"] = work / seconds["jaxsgd"]
        row(str(b), rates)
        total_work += work
        for c in columns:
            totals[c] += seconds[c]
    row("total", {c: total_work / totals[c] for c in columns})
    say("seconds over the batch sizes: " + ", ".join(f"{c} {totals[c]:.2f}" for c in columns))
    say.write(args.out)


if __name__ == "__main__":
    main()
