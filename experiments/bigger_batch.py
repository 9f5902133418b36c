"""Without a memory limit, is a bigger batch better? In steps, examples, wall time and memory.

Claim tested: with the learning rate tuned per batch size, the steps to a target fall as the
batch grows — up to the critical batch size, beyond which they stop falling — while the
examples to the target rise; so "bigger is better" holds for steps (and wall time where a
step's cost does not grow with B) but not for examples, and it costs memory. Under a memory
limit, gradient accumulation gives the large batch's result at the small batch's memory.

One sweep: MNIST-1D (4000 training examples), MLP 40-256-256-10, SGD with momentum 0.9,
batch sizes 8 to 2048 × 9 learning rates (0.004 to 1.024) × 2 seeds, 2^17 examples per run;
steps to a training-loss target at the best learning rate of each batch size
(``critical_batch_size``, which also fits S(B) = S_min(1 + B_crit/B)). Then, for one run on
one device of this machine:

* seconds per step (``jaxsgd.engine.cost.step_cost``: the sweep's own step, compiled for one
  run, median of timed spans) × steps to target = wall time to target;
* memory: XLA's temporary bytes of one minibatch gradient;
* the large batches again as accumulated microbatches of ``micro`` examples (same seeds, same
  best learning rate): their steps to target, seconds per step and memory.

Writes ``figures/bigger_batch.{pdf,png}`` and ``.json``; the sweeps are saved to ``--out``
(re-running resumes them, finished ones are only re-analysed; timings are measured anew).

    python experiments/bigger_batch.py            # the figure (about 4 minutes on 2 cores)
    python experiments/bigger_batch.py --quick    # seconds: a tiny version (for tests)
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import numpy as np

import jaxsgd
from jaxsgd.analysis.critical import critical_batch_size
from jaxsgd.engine.cost import step_cost
from jaxsgd.experiment_cli import experiment_args, write_report
from jaxsgd.style import COLUMN_WIDTH, figure, plain_log_labels, save_figure, tick_at, use_style
from jaxsgd.targets import sweep_steps_to_target

ROOT = Path(__file__).resolve().parent.parent

PRESETS = {
    "full": dict(
        config=jaxsgd.SweepConfig(
            data="mnist1d", data_options={"num_samples": 5000}, model="mlp",
            model_options={"width": 256, "depth": 2}, optimizer="momentum",
            batch_sizes=tuple(2**k for k in range(3, 12)), budget=2**17, eval_every=512,
            eval_train_examples=1000,
            grid=jaxsgd.Grid(learning_rate=tuple(0.004 * 2.0**k for k in range(9)),
                             momentum=(0.9,), seed=(0, 1))),
        target=0.5, micro=32, accumulated=(256, 1024), timing_steps=64),
    "quick": dict(
        config=jaxsgd.SweepConfig(
            data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
            model_options={"width": 32, "depth": 1}, optimizer="momentum",
            batch_sizes=(8, 32, 128), budget=2**11, eval_every=64, eval_train_examples=400,
            grid=jaxsgd.Grid(learning_rate=(0.01, 0.03, 0.1), momentum=(0.9,), seed=(0, 1))),
        target=1.9, micro=8, accumulated=(128,), timing_steps=8),
}


def _float(v) -> float | None:
    return float(v) if math.isfinite(float(v)) else None


def accumulated_run(config, batch_size: int, micro: int, learning_rate: float, target: float,
                    out: Path, progress: bool):
    """The group at ``batch_size`` again, as microbatches of ``micro`` examples, at the
    given learning rate: (its steps to target per seed, its config)."""
    acc = config.replace(batch_sizes=(batch_size,), accumulation=batch_size // micro,
                         grid=dataclasses.replace(config.grid, learning_rate=(learning_rate,)))
    result = jaxsgd.run_sweep(acc, out / f"accumulated_bs{batch_size}", progress=progress)
    steps = sweep_steps_to_target(result, target, metric="train_loss")
    return steps.sel(batch_size=batch_size).squeeze(), acc


def analyse(result, preset: dict, out: Path, progress: bool) -> dict:
    config, target, micro = result.config, preset["target"], preset["micro"]
    cbs = critical_batch_size(result, target, metric="train_loss")
    table = cbs.table
    steps_all = sweep_steps_to_target(result, target, metric="train_loss")
    rows = []
    for b in table["batch_size"].values:
        b = int(b)
        lr = float(table["learning_rate"].sel(batch_size=b))
        steps = float(table["steps"].sel(batch_size=b))
        row = {"batch_size": b, "learning_rate": _float(lr), "steps": _float(steps),
               "examples": _float(steps * b)}
        if math.isfinite(lr):
            cost = step_cost(config.replace(grid=dataclasses.replace(
                config.grid, learning_rate=(lr,))), b, steps=preset["timing_steps"])
            row.update(seconds_per_step=cost.seconds, gradient_mib=cost.gradient_bytes / 2**20,
                       seconds_to_target=_float(steps * cost.seconds))
        if b in preset["accumulated"] and math.isfinite(lr):
            acc_steps, acc = accumulated_run(config, b, micro, lr, target, out,
                                            progress)
            large = steps_all.sel(batch_size=b, learning_rate=lr)
            acc_cost = step_cost(acc, b, steps=preset["timing_steps"])  # its grid: lr alone
            mean_steps = float(np.mean(acc_steps.values))
            row["accumulated"] = {
                "microbatch": micro, "microbatches": b // micro,
                "steps_per_seed": [_float(v) for v in acc_steps.values],
                "large_batch_steps_per_seed": [_float(v) for v in large.values],
                "seconds_per_step": acc_cost.seconds,
                "gradient_mib": acc_cost.gradient_bytes / 2**20,
                "seconds_to_target": _float(mean_steps * acc_cost.seconds)}
        rows.append(row)
    return {"target_train_loss": target, "devices_for_timing": 1,
            "device": str(jax.devices()[0].device_kind), "b_crit": cbs.b_crit,
            "b_crit_interval": list(cbs.b_crit_interval), "s_min": cbs.s_min,
            "e_min": cbs.e_min, "rows": rows}


def plot(report: dict, path: Path) -> None:
    rows = [r for r in report["rows"] if r["steps"] is not None]
    b = np.array([r["batch_size"] for r in rows], float)
    acc = [r for r in rows if "accumulated" in r]
    panels = (("steps", "steps to target"), ("examples", "examples to target"),
              ("seconds_to_target", "wall time to target (s)\none run, one CPU device"),
              ("gradient_mib", "memory of one gradient\n(XLA temporaries, MiB)"))
    with use_style():
        fig = figure(figsize=(COLUMN_WIDTH * 2, 4.4), layout="constrained")
        axes = fig.subplots(2, 2, sharex=True).ravel()
        for ax, (key, label) in zip(axes, panels):
            ax.plot(b, [r[key] for r in rows], "o-", color="k", markersize=3,
                    label="batch of B (best learning rate)")
            if key in ("seconds_to_target", "gradient_mib") and acc:
                micro = acc[0]["accumulated"]["microbatch"]
                ax.plot([r["batch_size"] for r in acc], [r["accumulated"][key] for r in acc],
                        "s", color="C3", markersize=5, fillstyle="none",
                        label=f"B as {micro}-example microbatches (accumulation)")
            if key == "steps":
                curve = np.geomspace(b.min(), b.max(), 100)
                ax.plot(curve, report["s_min"] * (1 + report["b_crit"] / curve), "--",
                        color="0.5", linewidth=0.8, label=r"$S_{min}(1 + B_{crit}/B)$")
                acc_steps = [np.mean(r["accumulated"]["steps_per_seed"]) for r in acc]
                ax.plot([r["batch_size"] for r in acc], acc_steps, "s", color="C3",
                        markersize=5, fillstyle="none")
            if key in ("steps", "examples"):
                ax.axvline(report["b_crit"], color="C0", linewidth=0.8, linestyle=":")
                ax.annotate(r"$B_{crit}$ ", (report["b_crit"], 0.95),
                            xycoords=("data", "axes fraction"), fontsize=6, color="C0",
                            ha="right", va="top")
            ax.set(xscale="log", yscale="log", ylabel=label)
            plain_log_labels(ax.yaxis)
            tick_at(ax.xaxis, b)
        for ax in axes[2:]:
            ax.set_xlabel("batch size B (examples)")
        axes[0].legend(fontsize=6)
        axes[3].legend(fontsize=6)
    save_figure(fig, path)


def main(argv=None) -> dict:
    args = experiment_args(__doc__, "bigger_batch", ROOT, argv)
    preset = PRESETS[args.preset]
    result = jaxsgd.run_sweep(args.configure(preset["config"]), args.out / "grid",
                              progress=args.progress)
    report = analyse(result, preset, args.out, args.progress)
    write_report(args.figure, report)
    plot(report, args.figure)
    print(f"target train loss {report['target_train_loss']}: B_crit {report['b_crit']:.0f} "
          f"{[round(v) for v in report['b_crit_interval']]}; timing: one run on one "
          f"{report['device']} device")
    print(f"{'B':>6} {'lr':>8} {'steps':>8} {'examples':>10} {'ms/step':>8} {'time (s)':>9} "
          f"{'MiB':>7}")
    for r in report["rows"]:
        if r["steps"] is None:
            print(f"{r['batch_size']:>6}  target not reached")
            continue
        print(f"{r['batch_size']:>6} {r['learning_rate']:>8.3g} {r['steps']:>8.0f} "
              f"{r['examples']:>10.0f} {1e3 * r['seconds_per_step']:>8.3f} "
              f"{r['seconds_to_target']:>9.2f} {r['gradient_mib']:>7.2f}")
        if "accumulated" in r:
            a = r["accumulated"]
            print(f"{'':>6} as {a['microbatches']} x {a['microbatch']}: steps per seed "
                  f"{a['steps_per_seed']} (batch of B: {a['large_batch_steps_per_seed']}), "
                  f"{1e3 * a['seconds_per_step']:.3f} ms/step, {a['seconds_to_target']:.2f} s, "
                  f"{a['gradient_mib']:.2f} MiB")
    print(f"figure: {args.figure}.pdf/.png")
    return report


if __name__ == "__main__":
    main()
