"""Does the gradient noise scale predict the critical batch size? (McCandlish et al. 2018)

Claim tested: the critical batch size B_crit measured from steps-to-target equals the simple
noise scale B_simple to within an order of magnitude, and both grow as the loss falls.

One sweep: MNIST-1D, MLP 40-256-256-10, plain SGD at constant learning rates, batch sizes 8 to
1024 × 8 learning rates × 3 seeds, 2^17 examples per run, with ``noise_scale_probe`` recording
B_simple (ratio of EMAs of the unbiased per-step |G|² and tr Σ) at every step of every run. For
each training-loss target:

* ``critical_batch_size(result, target, metric="train_loss")``: best learning rate per batch
  size, fit S(B) = S_min(1 + B_crit/B) with a seed-bootstrap interval, and B_noise from the fit
  of the best learning rate ε_opt(B) = ε_max/(1 + B_noise/B);
* B_simple at the target: for every feasible batch size, the probe's b_simple of its best runs
  at the step each seed reached the target (seed mean; a non-positive value, |G|² not
  resolved, counts as infinite); the median over batch sizes is reported, with quartiles.

Writes ``figures/critical_batch.{pdf,png}`` and ``figures/critical_batch.json``; the sweep is
saved to ``--out`` (re-running resumes it, and a finished sweep is only re-analysed).

    python experiments/critical_batch.py            # the figure (about 10 minutes on 2 cores)
    python experiments/critical_batch.py --quick    # seconds: a tiny version (for tests)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import jaxsgd
from jaxsgd.analysis.critical import critical_batch_size
from jaxsgd.targets import sweep_steps_to_target
from jaxsgd.experiment_cli import experiment_args, write_report
from jaxsgd.style import COLUMN_WIDTH, figure, plain_log_labels, save_figure, tick_at, use_style

ROOT = Path(__file__).resolve().parent.parent

PRESETS = {
    "full": dict(
        config=jaxsgd.SweepConfig(
            data="mnist1d", data_options={"num_samples": 5000}, model="mlp",
            model_options={"width": 256, "depth": 2}, batch_sizes=(8, 16, 32, 64, 128, 256, 512, 1024),
            budget=2**17, eval_every=512, eval_train_examples=1000,
            grid=jaxsgd.Grid(learning_rate=tuple(0.02 * 2.0**k for k in range(8)),
                             seed=(0, 1, 2))),
        targets=(1.0, 0.7, 0.5, 0.35), every=1),
    "quick": dict(
        config=jaxsgd.SweepConfig(
            data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
            model_options={"width": 32, "depth": 1}, batch_sizes=(8, 16, 32),
            budget=2**11, eval_every=64, eval_train_examples=400,
            grid=jaxsgd.Grid(learning_rate=(0.05, 0.1, 0.2, 0.4), seed=(0, 1))),
        targets=(1.9, 1.6), every=1),
}


def b_simple_at_target(result, steps, best_lr) -> np.ndarray:
    """Seed mean of the probe's b_simple at the step each best run reached the target: [B]."""
    probe = result.metrics["noise_scale_b_simple"]
    out = np.full(len(best_lr), np.nan)
    for i, (b, lr) in enumerate(zip(best_lr["batch_size"].values, best_lr.values)):
        if not math.isfinite(lr):
            continue
        runs = probe.sel(batch_size=b, learning_rate=lr)
        reached = steps.sel(batch_size=b, learning_rate=lr)
        values = [float(runs.sel(seed=s).sel(noise_scale_step=float(reached.sel(seed=s)),
                                             method="ffill"))
                  for s in runs["seed"].values if math.isfinite(float(reached.sel(seed=s)))]
        out[i] = np.mean(values) if values else np.nan
    # A non-positive ratio of EMAs means |G|² is not resolved from the noise: B_simple = inf.
    return np.where(out <= 0, np.inf, out)


def analyse(result, targets) -> list[dict]:
    """Per target: B_crit (fit and interval), B_noise (ε_opt fit), B_simple at the target."""
    rows = []
    for target in targets:
        steps = sweep_steps_to_target(result, target, metric="train_loss")
        try:
            cbs = critical_batch_size(result, target, metric="train_loss")
        except ValueError as error:  # fewer than 3 batch sizes reach this target
            rows.append({"target": target, "error": str(error)})
            continue
        simple = b_simple_at_target(result, steps, cbs.table["learning_rate"])
        rows.append({
            "target": target, "s_min": cbs.s_min, "e_min": cbs.e_min, "b_crit": cbs.b_crit,
            "b_crit_interval": list(cbs.b_crit_interval), "b_crit_measured": cbs.b_crit_measured,
            "b_noise_lr": cbs.b_noise, "b_noise_lr_interval": list(cbs.b_noise_interval),
            "fit_rms": cbs.fit_rms,
            "b_simple_median": float(np.nanmedian(simple)),
            "b_simple_quartiles": [float(q) for q in np.nanpercentile(simple, [25, 75])],
            "batch_sizes": [int(b) for b in cbs.table["batch_size"].values],
            "steps": [float(s) for s in cbs.table["steps"].values],
            "steps_fit": [float(s) for s in cbs.table["steps_fit"].values],
            "b_simple": [float(v) if math.isfinite(v) else None for v in simple],
        })
    return rows


def plot(rows: list[dict], path: Path) -> None:
    ok = [r for r in rows if "error" not in r]
    with use_style():
        fig = figure(figsize=(COLUMN_WIDTH, 5.2), layout="constrained")
        ax_s, ax_b = fig.subplots(2, 1)
        for k, r in enumerate(ok):
            b, s = np.array(r["batch_sizes"], float), np.array(r["steps"])
            curve = np.geomspace(b.min(), b.max(), 100)
            ax_s.plot(b, s, "o", color=f"C{k}", markersize=3, label=f"train loss {r['target']:g}")
            ax_s.plot(curve, r["s_min"] * (1 + r["b_crit"] / curve), "-", color=f"C{k}",
                      linewidth=0.8)
        ax_s.set(xscale="log", yscale="log", xlabel="batch size (examples)",
                 ylabel="steps to target")
        tick_at(ax_s.xaxis, np.array(ok[0]["batch_sizes"]) if ok else np.array([1]))
        plain_log_labels(ax_s.yaxis)
        ax_s.legend()
        loss = np.array([r["target"] for r in ok])
        crit = np.array([r["b_crit"] for r in ok])
        lo, hi = np.array([r["b_crit_interval"] for r in ok]).T
        ax_b.errorbar(loss, crit, yerr=[np.maximum(crit - lo, 0), np.maximum(hi - crit, 0)],
                      fmt="o-", color="k", capsize=2, label=r"$B_{crit}$ (steps-to-target fit)")
        simple = np.array([r["b_simple_median"] for r in ok])
        s_lo, s_hi = np.array([r["b_simple_quartiles"] for r in ok]).T
        ax_b.plot(loss, simple, "s-", color="C0",
                  label=r"$B_{simple}$ at the target (median, quartiles over $B$)")
        ax_b.fill_between(loss, s_lo, s_hi, color="C0", alpha=0.2, linewidth=0)
        noise = np.array([r["b_noise_lr"] for r in ok])
        n_lo, n_hi = np.array([r["b_noise_lr_interval"] for r in ok]).T
        ax_b.errorbar(loss, noise, yerr=[np.maximum(noise - n_lo, 0), np.maximum(n_hi - noise, 0)],
                      fmt="^--", color="C3", capsize=2,
                      label=r"$B_{noise}$ from $\epsilon_{opt}(B)$")
        ax_b.set(xscale="log", yscale="log", xlabel="target training loss (nats)",
                 ylabel="batch size (examples)")
        ax_b.invert_xaxis()
        tick_at(ax_b.xaxis, loss)
        plain_log_labels(ax_b.yaxis)
        ax_b.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2))
    save_figure(fig, path)


def main(argv=None) -> list[dict]:
    args = experiment_args(__doc__, "critical_batch", ROOT, argv)
    preset, out, figure = PRESETS[args.preset], args.out, args.figure
    result = jaxsgd.run_sweep(args.configure(preset["config"]), out,
                              probes=(jaxsgd.noise_scale_probe(every=preset["every"]),),
                              progress=args.progress)
    rows = analyse(result, preset["targets"])
    write_report(figure, rows)
    plot(rows, figure)
    print(f"{'train loss':>10} {'B_crit':>8} {'90% interval':>17} {'B_simple':>9} "
          f"{'quartiles':>17} {'B_noise(lr)':>11} {'crit/simple':>11}")
    for r in rows:
        if "error" in r:
            print(f"{r['target']:>10g}  {r['error']}")
            continue
        lo, hi = r["b_crit_interval"]
        s_lo, s_hi = r["b_simple_quartiles"]
        print(f"{r['target']:>10g} {r['b_crit']:>8.1f} {f'[{lo:.1f}, {hi:.1f}]':>17} "
              f"{r['b_simple_median']:>9.1f} {f'[{s_lo:.1f}, {s_hi:.1f}]':>17} "
              f"{r['b_noise_lr']:>11.1f} {r['b_crit'] / r['b_simple_median']:>11.2f}")
    print(f"figure: {figure}.pdf/.png")
    return rows


if __name__ == "__main__":
    main()
