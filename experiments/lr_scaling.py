"""Can larger batches safely use larger learning rates? Linearly, as a square root, and how far?

Claim tested: the best learning rate grows with the batch size — linearly for SGD (Goyal et
al. 2017), as a square root for Adam (Malladi et al. 2022) — up to a point related to the
critical batch size and the noise scale, beyond which it stops growing; for Adam it may even
fall again at large batches (the "surge" of Li et al. 2024).

Two sweeps, SGD with momentum 0.9 and Adam: MNIST-1D (4000 training examples), MLP
40-256-256-10, batch sizes 8 to 2048 × 11–12 learning rates (factors of 2) × 2 seeds, 2^17
examples per run. For each batch size (at the training-loss target 0.5; the best rates at
other targets are reported too):

* the best learning rate: fewest steps to the training-loss target (seed mean; the grid's,
  and refined between grid points: ``critical_batch_size``'s ``learning_rate_opt``);
* the largest stable learning rate: the largest at which every seed reaches the target (above
  it runs diverge, or — more often here — stall near the initial loss: dead units);
* the scaling exponent: the slope of log ε_best against log B over B ≤ B_crit, against 1
  (linear) and 1/2 (square root); where scaling stops: B_noise of the fit
  ε_opt(B) = ε_max/(1 + B_noise/B) and B_crit of S(B) = S_min(1 + B_crit/B).

Writes ``figures/lr_scaling.{pdf,png}`` and ``.json``; the sweeps are saved to ``--out``
(``OUT/momentum``, ``OUT/adam``; re-running resumes them, finished ones are only re-analysed).

    python experiments/lr_scaling.py            # the figure (about 8 minutes on 2 cores)
    python experiments/lr_scaling.py --quick    # seconds: a tiny version (for tests)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import jaxsgd
from jaxsgd.analysis.critical import critical_batch_size
from jaxsgd.experiment_cli import experiment_args, write_report
from jaxsgd.targets import sweep_steps_to_target
from jaxsgd.style import COLUMN_WIDTH, figure, plain_log_labels, save_figure, tick_at, use_style

ROOT = Path(__file__).resolve().parent.parent

_FULL = jaxsgd.SweepConfig(
    data="mnist1d", data_options={"num_samples": 5000}, model="mlp",
    model_options={"width": 256, "depth": 2}, batch_sizes=tuple(2**k for k in range(3, 12)),
    budget=2**17, eval_every=512, eval_train_examples=1000)
_QUICK = jaxsgd.SweepConfig(
    data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
    model_options={"width": 32, "depth": 1}, batch_sizes=(8, 32, 128),
    budget=2**11, eval_every=128, eval_train_examples=400)

PRESETS = {
    "full": dict(target=0.5, other_targets=(1.0, 0.2), sweeps={
        "momentum": _FULL.replace(optimizer="momentum", grid=jaxsgd.Grid(
            learning_rate=tuple(0.001 * 2.0**k for k in range(12)), momentum=(0.9,),
            seed=(0, 1))),
        "adam": _FULL.replace(optimizer="adam", grid=jaxsgd.Grid(
            learning_rate=tuple(1e-4 * 2.0**k for k in range(11)), seed=(0, 1)))}),
    "quick": dict(target=1.9, other_targets=(), sweeps={
        "momentum": _QUICK.replace(optimizer="momentum", grid=jaxsgd.Grid(
            learning_rate=(0.01, 0.03, 0.1, 0.3), momentum=(0.9,), seed=(0, 1))),
        "adam": _QUICK.replace(optimizer="adam", grid=jaxsgd.Grid(
            learning_rate=(0.003, 0.01, 0.03, 0.1), seed=(0, 1)))}),
}


def _floats(values) -> list:
    return [float(v) if math.isfinite(float(v)) else None for v in values]


def scaling_exponent(batch_sizes: np.ndarray, lrs: np.ndarray, upto: float) -> float:
    """Least-squares slope of log ε against log B over the feasible B ≤ ``upto`` (NaN with
    fewer than two)."""
    keep = np.isfinite(lrs) & (batch_sizes <= upto)
    if keep.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(batch_sizes[keep]), np.log(lrs[keep]), 1)[0])


def analyse_one(result, target: float, other_targets=()) -> dict:
    """Best and largest stable learning rates per batch size, and where scaling stops."""
    cbs = critical_batch_size(result, target, metric="train_loss")
    sizes = cbs.table["batch_size"].values.astype(float)
    best = cbs.table["learning_rate"].values
    refined = cbs.table["learning_rate_opt"].values
    steps = sweep_steps_to_target(result, target, metric="train_loss")
    reached = np.isfinite(steps).all("seed").transpose("batch_size", "learning_rate")
    lrs = reached["learning_rate"].values
    stable = np.array([lrs[row].max() if row.any() else np.nan for row in reached.values])
    upto = cbs.b_crit if math.isfinite(cbs.b_crit) else sizes.max()
    peak = int(np.nanargmax(refined)) if np.isfinite(refined).any() else 0
    others = {}
    for other in other_targets:
        c = critical_batch_size(result, other, metric="train_loss")
        others[str(other)] = {"b_crit": c.b_crit, "b_noise": c.b_noise,
                              "best_lr_refined": _floats(c.table["learning_rate_opt"].values)}
    return {
        "batch_sizes": [int(b) for b in sizes], "best_lr": _floats(best),
        "best_lr_refined": _floats(refined), "largest_stable_lr": _floats(stable),
        "steps": _floats(cbs.table["steps"].values),
        "at_grid_edge": [bool(v) for v in cbs.table["learning_rate_at_edge"].values],
        "diverged_runs": int(result.metrics.diverged.sum()),
        "b_crit": cbs.b_crit, "b_crit_interval": list(cbs.b_crit_interval),
        "b_noise": cbs.b_noise, "eps_max": cbs.eps_max,
        "exponent_below_b_crit": scaling_exponent(sizes, refined, upto),
        "exponent_stable": scaling_exponent(sizes, stable, sizes.max()),
        "peak_batch_size": int(sizes[peak]),
        "largest_to_peak": float(refined[-1] / refined[peak]) if np.isfinite(refined[-1])
        else None,
        "lr_grid": [float(v) for v in lrs], "other_targets": others,
    }


def plot(report: dict, path: Path) -> None:
    with use_style():
        fig = figure(figsize=(COLUMN_WIDTH * 2, 2.9), layout="constrained")
        axes = fig.subplots(1, len(report["optimizers"]), sharex=True)
        for ax, (name, r) in zip(np.atleast_1d(axes), report["optimizers"].items()):
            b = np.array(r["batch_sizes"], float)
            best = np.array([np.nan if v is None else v for v in r["best_lr_refined"]])
            grid = np.array([np.nan if v is None else v for v in r["best_lr"]])
            stable = np.array([np.nan if v is None else v for v in r["largest_stable_lr"]])
            ax.plot(b, grid, "o", color="C0", markersize=3, label="best (grid)")
            ax.plot(b, best, "-", color="C0", linewidth=1, label="best (refined)")
            ax.plot(b, stable, "v--", color="C3", markersize=3, linewidth=0.8,
                    label="largest stable (all seeds reach the target)")
            first = int(np.argmax(np.isfinite(best)))
            ax.plot(b, best[first] * b / b[first], ":", color="0.4", linewidth=0.8,
                    label=r"linear $\propto B$")
            ax.plot(b, best[first] * np.sqrt(b / b[first]), "-.", color="0.6", linewidth=0.8,
                    label=r"square root $\propto \sqrt{B}$")
            marks = [(r["b_crit"], "-", r"$B_{crit}$"),
                     (r["b_noise"], "--", r"$B_{noise}$ ($\epsilon_{opt}$ fit)")]
            marks = [m for m in marks if m[0] is not None and math.isfinite(m[0])]
            if len(marks) == 2 and abs(math.log(marks[0][0] / marks[1][0])) < 0.1:
                marks = [(marks[0][0], "-", r"$B_{crit} \approx B_{noise}$")]  # one line
            for value, style, label in marks:
                ax.axvline(value, color="k", linestyle=style, linewidth=0.6, alpha=0.6)
                ax.annotate(label, (value, 0.02), xycoords=("data", "axes fraction"),
                            rotation=90, fontsize=6, ha="right", va="bottom")
            shown = np.concatenate([best, grid, stable])
            shown = shown[np.isfinite(shown)]
            ax.set(xscale="log", yscale="log", xlabel="batch size (examples)",
                   ylabel="learning rate", ylim=(shown.min() / 3, shown.max() * 3),
                   title=f"{name}: slope {r['exponent_below_b_crit']:.2f} below $B_{{crit}}$")
            tick_at(ax.xaxis, b)
            plain_log_labels(ax.yaxis)
        handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=5, fontsize=6)
    save_figure(fig, path)


def main(argv=None) -> dict:
    args = experiment_args(__doc__, "lr_scaling", ROOT, argv)
    preset = PRESETS[args.preset]
    report = {"target_train_loss": preset["target"], "optimizers": {}}
    for name, config in preset["sweeps"].items():
        result = jaxsgd.run_sweep(args.configure(config), args.out / name,
                                  progress=args.progress)
        report["optimizers"][name] = analyse_one(result, preset["target"],
                                                 preset["other_targets"])
    write_report(args.figure, report)
    plot(report, args.figure)
    for name, r in report["optimizers"].items():
        print(f"{name}: B_crit {r['b_crit']:.0f}, B_noise {r['b_noise']:.0f}, slope below "
              f"B_crit {r['exponent_below_b_crit']:.2f}, peak best rate at B = "
              f"{r['peak_batch_size']}")
        print("   B:            " + " ".join(f"{b:>8d}" for b in r["batch_sizes"]))
        for key in ("best_lr", "best_lr_refined", "largest_stable_lr", "steps"):
            print(f"   {key:<14}" + " ".join(f"{v:>8.3g}" if v is not None else f"{'-':>8}"
                                             for v in r[key]))
    print(f"figure: {args.figure}.pdf/.png")
    return report


if __name__ == "__main__":
    main()
