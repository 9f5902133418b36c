"""Is batch size 1 with a high learning rate thrown off by unusual examples?

Claims tested:

* "Small batches with a high learning rate are thrown off by unusual examples": at matched
  ε/B (the same SGD noise temperature at every batch size), small batches see more loss
  spikes and diverge more often, the more so with mislabelled examples or a few extreme
  inputs in the training set.
* The opposite claim of Marek et al. (2025): very small batches, down to B = 1, train stably
  and efficiently with Adam when β2's half-life is kept fixed in examples (β2 = β2_ref^(B/B_ref))
  — not with a fixed β2 — so gradient accumulation to reach a large batch is wasteful.

Part 1, SGD: MNIST-1D (4000 training examples), MLP 40-256-256-10, batch sizes 1 to 256 at
ε/B = 0.0025, 0.005, 0.01, 0.02 (``lr_scaling="linear"``, ``lr_batch_size=1``), 4 seeds,
2^15 examples per run; three training sets: clean, 5% of the labels wrong (``mislabel``), and
10 inputs multiplied by 10 (``extreme_inputs``). Per batch size and ε/B: the fraction of runs
that diverged, minibatch-loss spikes (above 3× the running average) per 1000 steps, and the
final test accuracy of the runs that did not diverge.

Part 2, Adam: batch sizes 1 to 64 × 4 learning rates × 3 seeds on the clean set, with β2 =
0.999 at every batch size and with β2 = 0.999 at B = 64 rescaled to a fixed half-life in
examples (``horizon_batch_size=64``: 0.99998 at B = 1); the best learning rate's final training
loss and test accuracy per batch size. (B = 64 reached by accumulating 64 single examples
equals B = 64 exactly — ``experiments/bigger_batch.py`` — at B = 1's memory.)

Writes ``figures/small_batch_outliers.{pdf,png}`` and ``.json``; the sweeps are saved to
``--out`` (re-running resumes them, finished ones are only re-analysed).

    python experiments/small_batch_outliers.py            # the figure (about 3 minutes on 2 cores)
    python experiments/small_batch_outliers.py --quick    # seconds: a tiny version (for tests)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import jaxsgd
from jaxsgd.experiment_cli import experiment_args, write_report
from jaxsgd.style import COLUMN_WIDTH, figure, plain_log_labels, save_figure, tick_at, use_style

ROOT = Path(__file__).resolve().parent.parent
# name: (folder, data options)
CONDITIONS = {"clean": ("sgd_clean", {}),
              "5% mislabelled": ("sgd_mislabel", {"mislabel": 0.05}),
              "10 extreme inputs (×10)": ("sgd_extreme",
                                          {"extreme_inputs": 10, "extreme_scale": 10.0})}

_FULL = jaxsgd.SweepConfig(
    data="mnist1d", data_options={"num_samples": 5000}, model="mlp",
    model_options={"width": 256, "depth": 2}, budget=2**15, eval_every=2**12,
    eval_train_examples=1000)
_QUICK = jaxsgd.SweepConfig(
    data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
    model_options={"width": 64, "depth": 1}, budget=2**12, eval_every=2**10,
    eval_train_examples=400)

PRESETS = {
    "full": dict(
        sgd=_FULL.replace(optimizer="sgd", batch_sizes=(1, 4, 16, 64, 256), lr_scaling="linear",
                          lr_batch_size=1, grid=jaxsgd.Grid(
                              learning_rate=(0.0025, 0.005, 0.01, 0.02), seed=(0, 1, 2, 3))),
        conditions=tuple(CONDITIONS),
        adam=_FULL.replace(optimizer="adam", batch_sizes=(1, 4, 16, 64), grid=jaxsgd.Grid(
            learning_rate=(1e-4, 3e-4, 1e-3, 3e-3), b2=(0.999,), seed=(0, 1, 2))),
        horizon=64),
    "quick": dict(
        sgd=_QUICK.replace(optimizer="sgd", batch_sizes=(1, 64), lr_scaling="linear",
                           lr_batch_size=1, grid=jaxsgd.Grid(learning_rate=(0.01, 0.05),
                                                             seed=(0, 1))),
        conditions=("clean", "5% mislabelled"), adam=None, horizon=None),
}


def _float(v) -> float | None:
    return float(v) if math.isfinite(float(v)) else None


def sgd_table(result) -> dict:
    """Per batch size and ε/B: diverged fraction, spikes per 1000 steps, final test accuracy
    of the runs that did not diverge (seed mean)."""
    m, dim = result.metrics, result.config.eval_dim
    out = {}
    for b in m.batch_size.values:
        b = int(b)
        steps = result.config.num_steps(b)
        rows = []
        for lr in m.learning_rate.values:
            run = m.sel(batch_size=b, learning_rate=lr)
            diverged = run.diverged.values.astype(bool)
            spikes = run.batch_loss_spikes.sum(dim, skipna=True).values  # per seed
            final = run.test_accuracy.isel({dim: -1}).values
            rows.append({"lr_over_b": float(lr), "diverged": float(diverged.mean()),
                         "spikes_per_1000_steps": float(np.mean(spikes) / steps * 1000),
                         "test_accuracy": _float(np.mean(final[~diverged]))
                         if (~diverged).any() else None})
        out[str(b)] = rows
    return out


def adam_table(result) -> dict:
    """Per batch size: the best learning rate (lowest final train loss, seed mean) and its
    final train loss and test accuracy."""
    m, dim = result.metrics, result.config.eval_dim
    out = {}
    for b in m.batch_size.values:
        final = m.sel(batch_size=b).isel({dim: -1})
        loss = final.train_loss.mean("seed").squeeze().values
        i = int(np.nanargmin(np.where(np.isfinite(loss), loss, np.inf)))
        out[str(int(b))] = {
            "learning_rate": float(m.learning_rate.values[i]),
            "train_loss": _float(loss[i]),
            "test_accuracy": _float(final.test_accuracy.mean("seed").squeeze().values[i]),
            "diverged": float(m.diverged.sel(batch_size=b).mean().values)}
    return out


def _column(table: dict, ratio: float, key: str) -> np.ndarray:
    """``key`` at ε/B = ``ratio`` for every batch size of a condition's table (NaN: none)."""
    values = [next(r[key] for r in rows if r["lr_over_b"] == ratio) for rows in table.values()]
    return np.array([np.nan if v is None else v for v in values], float)


def plot(report: dict, path: Path) -> None:
    sgd, ratio = report["sgd"], report["highlight_lr_over_b"]
    ratios = sorted({r["lr_over_b"] for t in sgd.values() for rows in t.values() for r in rows})
    with use_style():
        fig = figure(figsize=(COLUMN_WIDTH * 2, 4.6), layout="constrained")
        (ax_spikes, ax_div), (ax_acc, ax_adam) = fig.subplots(2, 2)
        for k, (name, table) in enumerate(sgd.items()):
            sizes = np.array([int(b) for b in table], float)
            color = f"C{k}"
            ax_spikes.plot(sizes, _column(table, ratio, "spikes_per_1000_steps"), "o-",
                           color=color, markersize=3, label=name)
            ax_acc.plot(sizes, 100 * _column(table, ratio, "test_accuracy"), "o-", color=color,
                        markersize=3, label=name)
            for j, (r, style) in enumerate(zip(ratios[-2:], ("--", "-"))):
                shift = 1.0 + 0.06 * (k - 1)  # side by side where the conditions agree
                ax_div.plot(sizes * shift, _column(table, r, "diverged"), "o" + style,
                            color=color, markersize=3, alpha=0.8,
                            label=f"{name}, ε/B = {r:g}" if k == 0 or j == 1 else None)
        ax_spikes.set(xscale="log", yscale="symlog", xlabel="batch size B",
                      ylabel="loss spikes per 1000 steps", title=f"SGD at ε/B = {ratio:g}")
        ax_spikes.set_yscale("symlog", linthresh=0.1)
        ax_spikes.set_ylim(bottom=0)
        ax_div.set(xscale="log", xlabel="batch size B", ylabel="runs diverged (fraction)",
                   title=f"SGD at ε/B = {ratios[-2]:g} (dashed), {ratios[-1]:g} (solid)",
                   ylim=(-0.05, 1.05))
        ax_acc.set(xscale="log", xlabel="batch size B", ylabel="test accuracy (%)",
                   title=f"SGD at ε/B = {ratio:g}, runs that did not diverge")
        for ax in (ax_spikes, ax_div, ax_acc):
            tick_at(ax.xaxis, sizes)
        ax_spikes.legend(fontsize=6)
        if report.get("adam"):
            for k, (name, table) in enumerate(report["adam"].items()):
                sizes = np.array([int(b) for b in table], float)
                ax_adam.plot(sizes, [r["train_loss"] for r in table.values()], "o-",
                             color=f"C{k + 3}", markersize=3, label=name)
            ax_adam.set(xscale="log", yscale="log", xlabel="batch size B",
                        ylabel="final train loss (best ε)",
                        title="Adam, clean data, the same examples")
            tick_at(ax_adam.xaxis, sizes)
            plain_log_labels(ax_adam.yaxis)
            ax_adam.legend(fontsize=6, loc="upper left")
        else:
            ax_adam.set_axis_off()
    save_figure(fig, path)


def main(argv=None) -> dict:
    args = experiment_args(__doc__, "small_batch_outliers", ROOT, argv)
    preset = PRESETS[args.preset]
    base = args.configure(preset["sgd"])
    report = {"sgd": {}, "adam": {}}
    for name in preset["conditions"]:
        folder, options = CONDITIONS[name]
        config = base.replace(data_options={**dict(base.data_options), **options})
        report["sgd"][name] = sgd_table(jaxsgd.run_sweep(config, args.out / folder,
                                                         progress=args.progress))
    ratios = sorted({r["lr_over_b"] for t in report["sgd"].values() for rows in t.values()
                     for r in rows})
    report["highlight_lr_over_b"] = ratios[len(ratios) // 2]
    if preset["adam"] is not None:
        adam = args.configure(preset["adam"])
        for name, config in (("β2 = 0.999 at every B", adam),
                             (f"β2 half-life fixed (0.999 at B = {preset['horizon']})",
                              adam.replace(horizon_batch_size=preset["horizon"]))):
            folder = args.out / ("adam_horizon" if config.horizon_batch_size else "adam_fixed")
            report["adam"][name] = adam_table(jaxsgd.run_sweep(config, folder,
                                                               progress=args.progress))
    write_report(args.figure, report)
    plot(report, args.figure)
    for name, table in report["sgd"].items():
        print(f"SGD, {name}:")
        for b, rows in table.items():
            print(f"  B = {b:>4}: " + "  ".join(
                f"ε/B {r['lr_over_b']:g}: div {r['diverged']:.2f}, spikes/1k "
                f"{r['spikes_per_1000_steps']:.1f}, acc "
                f"{r['test_accuracy'] if r['test_accuracy'] is None else round(r['test_accuracy'], 3)}"
                for r in rows))
    for name, table in report["adam"].items():
        print(f"Adam, {name}:")
        for b, r in table.items():
            print(f"  B = {b:>3}: ε {r['learning_rate']:g}, train loss {r['train_loss']}, "
                  f"test acc {r['test_accuracy']}, diverged {r['diverged']:.2f}")
    print(f"figure: {args.figure}.pdf/.png")
    return report


if __name__ == "__main__":
    main()
