"""Does B_simple at every step cost the same for a model written in plain JAX as for the same
layers in flax linen? The in-sweep noise probe on the reference sweep, both ways.

The reference grid of ``reference_grid.py`` at each batch size (16 runs, ``--budget`` examples
per run, MLP 40-256-256-10): the built-in flax linen MLP, whose per-example norms come from the
flax Dense interception, and the same MLP as a pure-JAX ``jaxsgd.Model`` (dicts of arrays,
``jnp`` ops), whose norms come from the jaxpr taps. Each sweep runs without probes and with
``noise_scale_probe(every=1)``; every variant is compiled first, then timed ``--repeats`` times
interleaved (best). Reported: the probe's cost over the plain sweep for each model, and the
pure-JAX sweep with the probe over the linen one with the probe.

    python benchmarks/noise_probe_models.py
    python benchmarks/noise_probe_models.py --budget 4096 --repeats 1   # quick look
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxsgd
from jaxsgd.data import mnist1d
from reference_grid import WIDTHS, benchmark_arguments, run_sweep_options, sweep_config


def pure_jax_mlp() -> jaxsgd.Model:
    """MLP 40-256-256-10 (ReLU) as plain JAX, with flax's default initialisers' scales."""
    sizes = list(zip(WIDTHS[:-1], WIDTHS[1:]))

    def init(key):
        keys = jax.random.split(key, len(sizes))
        return [{"w": jax.random.truncated_normal(k, -2, 2, s) / np.sqrt(s[0]) / 0.8796,
                 "b": jnp.zeros(s[1])} for k, s in zip(keys, sizes)]

    def apply(params, x):
        for i, layer in enumerate(params):
            x = x @ layer["w"] + layer["b"]
            x = jax.nn.relu(x) if i < len(params) - 1 else x
        return x

    return jaxsgd.Model(init, apply, name="pure-JAX mlp")


def main() -> None:
    args = benchmark_arguments(__doc__, budget=2**15, repeats=2).parse_args()
    jaxsgd.use_cpu_devices()
    data = mnist1d(num_samples=5000)
    options = run_sweep_options()
    probe = (jaxsgd.noise_scale_probe(every=1),)
    print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} devices; "
          f"{args.budget} examples per run, 16 runs, best of {args.repeats}")
    print(f"{'B':>6} {'linen plain':>12} {'+probe':>8} {'pure plain':>11} {'+probe':>8} "
          f"{'pure/linen with probe':>22}")
    for b in args.batch_sizes:
        config = sweep_config(b, args.budget)
        variants = {"linen": dict(), "linen probe": dict(probes=probe),
                    "pure": dict(model=pure_jax_mlp()),
                    "pure probe": dict(model=pure_jax_mlp(), probes=probe)}
        for extra in variants.values():
            jaxsgd.run_sweep(config, data=data, **extra, **options)
        best = dict.fromkeys(variants, float("inf"))
        for _ in range(args.repeats):
            for name, extra in variants.items():
                start = time.perf_counter()
                jaxsgd.run_sweep(config, data=data, **extra, **options)
                best[name] = min(best[name], time.perf_counter() - start)
        print(f"{b:>6} {best['linen']:>12.2f} {best['linen probe'] / best['linen']:>7.3f}x "
              f"{best['pure']:>11.2f} {best['pure probe'] / best['pure']:>7.3f}x "
              f"{best['pure probe'] / best['linen probe']:>21.3f}x")


if __name__ == "__main__":
    main()
