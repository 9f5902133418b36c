"""Which algorithmic choices matter at which batch sizes? The noisy quadratic model
(Zhang et al. 2019), exactly.

Claims tested (SCIENCE.md): the best learning rate grows linearly with the batch size and then
saturates; momentum does not help at small batch sizes and helps at large ones;
preconditioning raises the critical batch size; averaging the iterates (EMA) helps at small
batch sizes, where noise dominates.

The paper's setting: K = 10⁴ coordinates with h_i = 1/i, per-example noise covariance H,
x₀ ~ N(0, I), steps to reach ℓ ≤ 0.01 (the first step below it, from the exact expected-loss
dynamics of ``jaxsgd.theory.nqm``) at the best learning rate per batch size B = 2² … 2²¹, for SGD,
heavy-ball momentum β = 0.9, preconditioning P = H^(−1/2) with and without that momentum, and
SGD with an EMA of the iterates (decay γ = 1 − 10⁻ᵏ, k = 1, 1.5, …, 5: the best per B). The
critical batch size is where steps exceed perfect scaling from B = 4 by 20%. A Monte Carlo
simulation with optax (K = 100, 2000 runs) checks the exact dynamics of every variant first.

Writes ``figures/nqm_steps_to_target``, ``figures/nqm_learning_rate`` and
``figures/nqm_monte_carlo`` (PDF + PNG) and ``figures/nqm.json``; ``--quick`` writes
``figures/nqm_quick_*`` instead, and ``--figure PREFIX`` writes ``PREFIX_*`` and ``PREFIX.json``.

    python experiments/nqm.py            # the paper's settings (7.5 minutes on 2 shared cores)
    python experiments/nqm.py --quick    # seconds: K = 100, every other batch size

Measured (full preset, 379 s; 449 s in an earlier session): critical batch size SGD 407, momentum 8.6·10³, preconditioned
1.4·10⁴, preconditioned + momentum 2.6·10⁴, EMA 117; momentum/SGD steps 0.999 at B = 4 and
0.052 at B = 2²¹; the best SGD learning rate doubles with B up to B ≈ 128, then saturates at
2/h_max = 2; EMA needs 5.8× fewer steps than SGD at B = 4 and about as many (0.997×) at B = 2²¹.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import jax
import numpy as np
from matplotlib import ticker

import jaxsgd
from jaxsgd.theory.nqm import (make_nqm, nqm_critical_batch_size, nqm_expected_loss, nqm_monte_carlo,
                        nqm_steps_to_target)
from jaxsgd.style import COLUMN_WIDTH, figure, plain_log_labels, save_figure, use_style

ROOT = Path(__file__).resolve().parent.parent

PRESETS = {
    "full": dict(dim=10_000, log2_batch=range(2, 22), target=0.01,
                 search=dict(learning_rates_per_decade=4, learning_rate_decades=8, refine=3)),
    "quick": dict(dim=100, log2_batch=range(2, 21, 2), target=0.01,
                  search=dict(learning_rates_per_decade=3, learning_rate_decades=6, refine=2,
                              refine_points=4)),
}
VARIANTS = {  # label: optimizer settings (lists are searched per batch size)
    "SGD": {},
    "momentum 0.9": {"momentum": 0.9},
    "precond. p=0.5": {"precondition": 0.5},
    "precond. + momentum": {"precondition": 0.5, "momentum": 0.9},
    "EMA (SGD)": {"averaging": 1 - 10 ** -np.arange(1, 5.01, 0.5)},
}
# The Monte Carlo check: one learning rate per variant, batch size 2.
CHECK = {"SGD": (1.0, {}), "momentum 0.9": (0.1, {"momentum": 0.9}),
         "precond. p=0.5": (0.5, {"precondition": 0.5}),
         "precond. + momentum": (0.05, {"precondition": 0.5, "momentum": 0.9}),
         "EMA (SGD)": (1.0, {"averaging": 0.9})}
CHECK_STEPS = np.unique(np.geomspace(1, 300, 12).astype(int))


def monte_carlo_check(num_runs: int):
    """Exact ℓ(t) and the optax simulation for every variant (K = 100, B = 2): [variant, T]."""
    nqm = make_nqm(100)
    lr = np.array([v[0] for v in CHECK.values()])
    kw = {k: np.array([v[1].get(k, 0.0) for v in CHECK.values()])
          for k in ("momentum", "averaging", "precondition")}
    exact = nqm_expected_loss(nqm, CHECK_STEPS, lr, 2.0, **kw)
    mc = nqm_monte_carlo(nqm, CHECK_STEPS, lr, 2.0, key=jax.random.key(0), num_runs=num_runs, **kw)
    return exact, mc


def powers_of_two_ticks(axis, batch_sizes) -> None:
    """Ticks 2^k at every other power of four of the batch-size range."""
    exponents = np.log2(batch_sizes).round().astype(int)
    ticks = [k for k in range(exponents.min(), exponents.max() + 1) if k % 4 == 2]
    axis.set_ticks([2.0**k for k in ticks], [f"$2^{{{k}}}$" for k in ticks])
    axis.set_minor_locator(ticker.NullLocator())


def plot_steps(results, dim, target, path):
    with use_style():
        fig = figure(figsize=(COLUMN_WIDTH, 3.4), layout="constrained")
        ax = fig.subplots()
        for i, (label, r) in enumerate(results.items()):
            ax.plot(r.batch_size, r.steps, "o-", ms=2.5, color=f"C{i}", label=label)
            crit = nqm_critical_batch_size(r)
            if math.isfinite(crit):
                ax.plot([crit], [np.interp(np.log(crit), np.log(r.batch_size), r.steps)], "*",
                        ms=7, color=f"C{i}", mec="k", mew=0.4)
        sgd = results["SGD"]
        ax.plot(sgd.batch_size, sgd.steps[0] * sgd.batch_size[0] / sgd.batch_size, "--",
                color="0.5", lw=0.8, label="perfect scaling")
        ax.set(xscale="log", yscale="log", xlabel="batch size (examples)",
               ylabel="steps to target\n(optimizer steps)",
               ylim=(0.5 * min(r.steps.min() for r in results.values()), None))
        powers_of_two_ticks(ax.xaxis, sgd.batch_size)
        ax.set_title(f"NQM, K = {dim:,}: first step with loss ≤ {target:g}; "
                     "★ critical batch size", fontsize=7)
        # Below the axes: in the lower left it covered the preconditioned curves.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncols=2)
    save_figure(fig, path)


def plot_learning_rate(results, path):
    with use_style():
        fig = figure(figsize=(COLUMN_WIDTH, 2.4), layout="constrained")
        ax = fig.subplots()
        for i, (label, r) in enumerate(results.items()):
            effective = r.learning_rate / (1 - r.momentum)
            ax.plot(r.batch_size, effective, "o-", ms=2.5, color=f"C{i}", label=label)
        ax.set(xscale="log", yscale="log", xlabel="batch size (examples)",
               ylabel="best learning rate\n(effective: ε/(1 − β))")
        powers_of_two_ticks(ax.xaxis, next(iter(results.values())).batch_size)
        ax.legend(loc="lower right")
    save_figure(fig, path)


def plot_monte_carlo(exact, mc, path):
    with use_style():
        fig = figure(figsize=(COLUMN_WIDTH, 2.4), layout="constrained")
        ax = fig.subplots()
        for i, label in enumerate(CHECK):
            ax.plot(CHECK_STEPS, exact[i], "-", color=f"C{i}", label=label)
            ax.errorbar(CHECK_STEPS, mc.mean[i], yerr=3 * mc.stderr[i], fmt="o", ms=2,
                        color=f"C{i}", capsize=1)
        ax.set(xscale="log", yscale="log", xlabel="step", ylabel="expected loss")
        plain_log_labels(ax.yaxis)
        ax.set_title("exact (lines) vs optax simulation (±3 s.e.); K = 100, B = 2", fontsize=7)
        ax.legend(ncols=2)
    save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 100, seconds (for tests)")
    parser.add_argument("--figure", default=None,
                        help="path prefix of the figures and the .json (default figures/nqm, "
                             "figures/nqm_quick under --quick)")
    args = parser.parse_args(argv)
    jaxsgd.use_cpu_devices()  # before JAX starts: 4 CPU devices per core, compilation cache
    preset = PRESETS["quick" if args.quick else "full"]
    prefix = Path(args.figure) if args.figure else (
        ROOT / "figures" / ("nqm_quick" if args.quick else "nqm"))
    prefix.parent.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    exact, mc = monte_carlo_check(num_runs=500 if args.quick else 2000)
    z = (mc.mean - exact) / mc.stderr
    print(f"Monte Carlo check (K = 100, B = 2, steps {CHECK_STEPS.min()}–{CHECK_STEPS.max()}): "
          "max |exact − mean| / s.e. = " + ", ".join(
              f"{label} {np.abs(row).max():.2f}" for label, row in zip(CHECK, z)))
    plot_monte_carlo(exact, mc, prefix.with_name(f"{prefix.name}_monte_carlo"))

    nqm = make_nqm(preset["dim"])
    batch_sizes = 2.0 ** np.array(preset["log2_batch"])
    results, seconds = {}, {}
    for label, settings in VARIANTS.items():
        t0 = time.perf_counter()
        results[label] = nqm_steps_to_target(nqm, batch_sizes, preset["target"], **settings,
                                             **preset["search"])
        seconds[label] = time.perf_counter() - t0
        print(f"  {label}: {seconds[label]:.1f} s", flush=True)
    crit = {label: nqm_critical_batch_size(r) for label, r in results.items()}
    total = time.perf_counter() - start

    print(f"\nNQM K = {preset['dim']}, target {preset['target']}: steps to target "
          "(best learning rate)")
    print(f"{'B':>8} " + " ".join(f"{label:>22}" for label in results))
    for i, b in enumerate(batch_sizes):
        print(f"{int(b):>8} " + " ".join(f"{r.steps[i]:>10.0f} ({r.learning_rate[i]:8.3g})  "
                                         for r in results.values()))
    ema = results["EMA (SGD)"]
    print("EMA decay chosen per B: 1 − " + " ".join(f"{1 - g:.2g}" for g in ema.averaging))
    print("critical batch size (steps 20% above perfect scaling from B = 4): " + ", ".join(
        f"{label} {c:.3g}" for label, c in crit.items()))
    ratio = results["momentum 0.9"].steps / results["SGD"].steps
    print(f"momentum / SGD steps: B = {int(batch_sizes[0])} {ratio[0]:.3f}, "
          f"B = {int(batch_sizes[-1])} {ratio[-1]:.3f}")
    print(f"wall time {total:.0f} s")

    plot_steps(results, preset["dim"], preset["target"],
               prefix.with_name(f"{prefix.name}_steps_to_target"))
    plot_learning_rate(results, prefix.with_name(f"{prefix.name}_learning_rate"))
    record = {
        "dim": preset["dim"], "target": preset["target"], "wall_seconds": total,
        "seconds": seconds, "batch_size": batch_sizes.tolist(),
        "monte_carlo_max_abs_z": dict(zip(CHECK, np.abs(z).max(1).round(3).tolist())),
        "critical_batch_size": crit,
        "steps": {k: r.steps.tolist() for k, r in results.items()},
        "learning_rate": {k: r.learning_rate.tolist() for k, r in results.items()},
        "ema_decay": ema.averaging.tolist(),
    }
    prefix.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
