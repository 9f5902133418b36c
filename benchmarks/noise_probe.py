"""What tracking the gradient noise scale costs: probes in the reference sweep, and the
per-example gradient norms alone.

1. Per-example squared gradient norms of the reference MLP (40-256-256-10), 16 runs vmapped,
   at each batch size, timed against one plain gradient (``jax.value_and_grad``) of the same
   runs: the fused path (``value_grad_and_example_norms(..., method="auto")``) and the
   exact ``vmap(grad)`` over examples (``"vmap"``).
2. The reference grid of ``reference_grid.py`` (16 runs per batch size, ``--budget`` examples
   per run), steady seconds of ``run_sweep`` without probes and with
   ``noise_scale_probe(every=1)`` (B_simple every step), ``noise_scale_probe(every=1,
   microbatches=4)`` and ``hessian_noise_probe(every=16, num_examples=16)``. Each variant is
   compiled first, then timed ``--repeats`` times interleaved with the others; the minimum
   is reported, with its ratio to the plain sweep.

    python benchmarks/noise_probe.py                 # 2^15 examples per run
    python benchmarks/noise_probe.py --budget 4096 --repeats 1   # quick look
"""

from __future__ import annotations


import jax
import jax.numpy as jnp

import jaxsgd
from jaxsgd.data import mnist1d
from jaxsgd.losses import cross_entropy
from jaxsgd.measure.per_example import value_grad_and_example_norms
from reference_grid import WIDTHS, benchmark_arguments, probe_sweep_costs, time_call

NUM_RUNS = 16


def per_example_costs(batch_size: int, data) -> dict[str, float]:
    """Seconds of a plain gradient and of the two per-example-norm paths, 16 runs vmapped."""
    model = jaxsgd.make_model("mlp", (WIDTHS[0],), WIDTHS[-1], width=WIDTHS[1],
                              depth=len(WIDTHS) - 2)
    params = jax.vmap(model.init)(jax.random.split(jax.random.key(0), NUM_RUNS))
    batch = (jnp.asarray(data.x_train[:batch_size]), jnp.asarray(data.y_train[:batch_size]))

    def loss_fn(p, b):
        return cross_entropy(model.apply(p, b[0]), b[1])

    plain = jax.jit(jax.vmap(jax.value_and_grad(loss_fn), in_axes=(0, None)))
    out = {"gradient": time_call(plain, params, batch)}
    for method in ("auto", "vmap"):
        fn = jax.jit(jax.vmap(lambda p, b, m=method: value_grad_and_example_norms(loss_fn, p, b, method=m),
                              in_axes=(0, None)))
        out[method] = time_call(fn, params, batch)
    return out


PROBES = {
    "plain": (),
    "B_simple every step": (jaxsgd.noise_scale_probe(every=1),),
    "+ microbatches=4": (jaxsgd.noise_scale_probe(every=1, microbatches=4),),
    "B_noise every 16 (16 ex.)": (jaxsgd.hessian_noise_probe(every=16, num_examples=16),),
}



def main() -> None:
    args = benchmark_arguments(__doc__, budget=2**15, repeats=2).parse_args()
    data = mnist1d(num_samples=5000)
    print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} devices")

    print(f"\nPer-example squared gradient norms, MLP {'-'.join(map(str, WIDTHS))}, "
          f"{NUM_RUNS} runs vmapped (ms; ratio to one gradient)")
    print(f"{'B':>6} {'gradient':>10} {'fused':>10} {'ratio':>7} {'vmap(grad)':>11} {'ratio':>7}")
    for b in args.batch_sizes:
        c = per_example_costs(b, data)
        print(f"{b:>6} {1e3 * c['gradient']:>10.2f} {1e3 * c['auto']:>10.2f} "
              f"{c['auto'] / c['gradient']:>7.2f} {1e3 * c['vmap']:>11.2f} "
              f"{c['vmap'] / c['gradient']:>7.1f}")

    print(f"\nReference sweep, {NUM_RUNS} runs, {args.budget} examples per run: steady seconds "
          f"(best of {args.repeats}) and ratio to the plain sweep")
    names = list(PROBES)
    print(f"{'B':>6} " + " ".join(f"{n:>26}" for n in names))
    totals = dict.fromkeys(names, 0.0)
    for b in args.batch_sizes:
        c = probe_sweep_costs(b, args.budget, args.repeats, data, PROBES)
        for n in names:
            totals[n] += c[n]
        print(f"{b:>6} " + " ".join(f"{c[n]:>18.2f} ({c[n] / c['plain']:.3f})" for n in names))
    print(f"{'total':>6} " + " ".join(
        f"{totals[n]:>18.2f} ({totals[n] / totals['plain']:.3f})" for n in names))


if __name__ == "__main__":
    main()
