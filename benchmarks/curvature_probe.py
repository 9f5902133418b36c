"""What tracking λ_max during training costs, and how accurate the warm-started estimate is.

1. Cost. The reference grid of ``reference_grid.py`` (MNIST-1D, MLP 40-256-256-10, 16 runs
   per batch size, ``--budget`` examples per run): steady seconds of ``run_sweep`` without
   probes and with ``lambda_max_probe(every=16)`` at several ``num_iterations`` (the default
   marked), on the step's own minibatch, and once on a fixed batch of the first 1024 training
   examples (``data=``). Each variant is compiled first, then timed ``--repeats`` times
   interleaved with the others; the minimum is reported, with its ratio to the plain sweep.
2. Accuracy. The same model and learning rates, one seed (4 runs), ``--accuracy-steps``
   optimizer steps at each batch size, the warm-started probes every 16 steps next to a cold
   reference (``lambda_max_probe(every=64, reference_iterations=R)``: full Lanczos from a fresh
   random vector); at the reference's points from step 64 on (after the first four warm
   measurements) the relative error |λ_warm − λ_ref|/λ_ref, median and max over runs and
   points, and the largest relative residual the reference itself reports.

    python benchmarks/curvature_probe.py                    # 2^15 examples per run, 512 steps
    python benchmarks/curvature_probe.py --budget 4096 --repeats 1 --accuracy-steps 128

Prints the tables and writes them to ``benchmarks/results/curvature_probe.txt`` (``--out``).
Timings are wall-clock seconds; on a shared machine they are only as good as its idleness.
"""

from __future__ import annotations

import inspect

import jax
import numpy as np

import jaxsgd
from jaxsgd.probes.curvature import lambda_max_probe
from jaxsgd.data import mnist1d
from reference_grid import (WIDTHS, Transcript, benchmark_arguments, probe_sweep_costs,
                            run_sweep_options, sweep_config)

EVERY = 16
ITERATIONS = (1, 2, 3, 4)
DEFAULT = inspect.signature(lambda_max_probe).parameters["num_iterations"].default
FIXED_EXAMPLES = 1024
REFERENCE_EVERY = 64  # a multiple of EVERY: the reference's points are warm points too
SKIP_STEPS = 64  # accuracy from this step on: the first four warm measurements are skipped


def cost_variants(data) -> dict[str, tuple]:
    fixed = (data.x_train[:FIXED_EXAMPLES], data.y_train[:FIXED_EXAMPLES])
    variants = {"plain": ()}
    for k in ITERATIONS:
        mark = "*" if k == DEFAULT else ""
        variants[f"k={k}{mark}"] = (lambda_max_probe(every=EVERY, num_iterations=k),)
    variants[f"k={DEFAULT}, {FIXED_EXAMPLES} ex."] = (
        lambda_max_probe(every=EVERY, data=fixed),)
    return variants


def accuracy(batch_size: int, steps: int, reference_iterations: int, data) -> dict:
    """Relative errors of the warm estimates against the cold reference at its points."""
    probes = tuple(lambda_max_probe(every=EVERY, num_iterations=k, name=f"k{k}")
                   for k in ITERATIONS)
    probes += (lambda_max_probe(every=REFERENCE_EVERY, num_iterations=1,
                                reference_iterations=reference_iterations, name="ref"),)
    config = sweep_config(batch_size, steps * batch_size, num_runs=4)
    m = jaxsgd.run_sweep(config, data=data, probes=probes, **run_sweep_options()).metrics
    m = m.isel(batch_size=0)
    ref_steps = m.ref_step.values
    points = ref_steps[ref_steps >= SKIP_STEPS]
    ref = m.ref_reference.sel(ref_step=points).values
    out = {"points": ref.size, "lambda_range": (np.nanmin(ref), np.nanmax(ref)),
           "reference_residual": float(np.nanmax(
               m.ref_reference_residual.sel(ref_step=points).values))}
    for k in ITERATIONS:
        warm = m[f"k{k}_value"].sel({f"k{k}_step": points}).values
        err = np.abs(warm - ref) / np.abs(ref)
        out[k] = (float(np.nanmedian(err)), float(np.nanmax(err)))
    return out


def main() -> None:
    parser = benchmark_arguments(__doc__, budget=2**15, repeats=2, results="curvature_probe.txt")
    parser.add_argument("--accuracy-steps", type=int, default=512,
                        help="optimizer steps per run of the accuracy sweep (0: skip it)")
    parser.add_argument("--reference-iterations", type=int, default=32)
    args = parser.parse_args()
    say = Transcript()
    data = mnist1d(num_samples=5000)
    say(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} devices")
    variants = cost_variants(data)
    names = list(variants)
    say(f"\nReference sweep (MLP {'-'.join(map(str, WIDTHS))}), 16 runs, {args.budget} examples "
        f"per run: steady seconds (best of {args.repeats}) and ratio to the plain sweep;")
    say(f"lambda_max_probe(every={EVERY}) with k = num_iterations (* default), on the step's "
        f"minibatch or on the first {FIXED_EXAMPLES} training examples")
    say(f"{'B':>6} " + " ".join(f"{n:>17}" for n in names))
    totals = dict.fromkeys(names, 0.0)
    for b in args.batch_sizes:
        c = probe_sweep_costs(b, args.budget, args.repeats, data, variants)
        for n in names:
            totals[n] += c[n]
        say(f"{b:>6} " + " ".join(f"{c[n]:>9.2f} ({c[n] / c['plain']:.2f})" for n in names))
    say(f"{'total':>6} " + " ".join(
        f"{totals[n]:>9.2f} ({totals[n] / totals['plain']:.2f})" for n in names))

    if args.accuracy_steps:
        say(f"\nAccuracy: 4 runs (learning rates 0.01-0.3, one seed), {args.accuracy_steps} "
            f"steps; warm estimate every {EVERY} steps vs a cold {args.reference_iterations}-step "
            f"Lanczos every {REFERENCE_EVERY}, at its points from step {SKIP_STEPS} on:")
        say("relative error |warm - ref|/ref, median / max (minibatch Hessian of each step)")
        say(f"{'B':>6} {'points':>6} {'lambda_max range':>17} {'ref resid':>9} "
            + " ".join(f"{f'k={k}':>15}" for k in ITERATIONS))
        for b in args.batch_sizes:
            a = accuracy(b, args.accuracy_steps, args.reference_iterations, data)
            lo, hi = a["lambda_range"]
            say(f"{b:>6} {a['points']:>6} {lo:>8.2f}-{hi:<8.2f} {a['reference_residual']:>9.1e} "
                + " ".join(f"{a[k][0]:>7.4f}/{a[k][1]:<7.4f}" for k in ITERATIONS))
    say.write(args.out)


if __name__ == "__main__":
    main()
