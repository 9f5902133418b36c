"""Decay the learning rate as training converges — or grow the batch instead?

Claim tested: decaying the learning rate late in training lowers the loss (step decay, cosine)
against a constant rate; and multiplying the batch size where a step schedule would divide
the rate (Smith et al. 2018, "Don't decay the learning rate, increase the batch size") gives
the same loss against examples seen — SGD's noise scale εN/B falls the same way — in far
fewer optimizer steps.

Five sweeps, all SGD with momentum 0.9 from B₀ = 32 on MNIST-1D (4000 training examples), MLP
40-256-256-10, 2^18 examples per run, learning rates 0.03 and 0.1 (the same for every
schedule, as in Smith et al.) × 3 seeds each:

* constant: the rate throughout;
* step decay: the rate divided by 5 at 50% and 75% of the examples (``schedule="step"``);
* cosine: cosine decay to 0 (``schedule="cosine"``);
* batch growth: B multiplied by 5 at 50% and 75% (B = 32, 160, 800; ``batch_growth=5``) at a
  constant rate;
* growth + decay: both at once (the rate ÷5 and B ×5 at each boundary).

(The quick preset runs the first, second and fourth only.)

For each schedule and rate: loss against examples and against steps (the figure: ε = 0.1, where
a constant rate leaves SGD at a noise floor), final train loss, test accuracy, and the
optimizer steps each needs.

Writes ``figures/decay_or_grow.{pdf,png}`` and ``.json``; the sweeps are saved to ``--out``
(re-running resumes them, finished ones are only re-analysed).

    python experiments/decay_or_grow.py            # the figure (about 1.5 minutes on 2 cores)
    python experiments/decay_or_grow.py --quick    # seconds: a tiny version (for tests)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import jaxsgd
from jaxsgd.analysis.plotting import plot_loss_curves
from jaxsgd.experiment_cli import experiment_args, write_report
from jaxsgd.style import COLUMN_WIDTH, figure, save_figure, use_style

ROOT = Path(__file__).resolve().parent.parent
BOUNDARIES = (0.5, 0.75)


def schedules(base: jaxsgd.SweepConfig,
              names=("constant", "step decay", "cosine", "batch growth", "growth + decay"),
              ) -> dict[str, jaxsgd.SweepConfig]:
    """The schedules of one base sweep (its grid's ``decay`` is the step factor 1/5)."""
    grow = dict(batch_growth=5, growth_boundaries=BOUNDARIES)
    step = dict(schedule="step", decay_boundaries=BOUNDARIES)
    every = {"constant": base, "step decay": base.replace(**step),
             "cosine": base.replace(schedule="cosine"), "batch growth": base.replace(**grow),
             "growth + decay": base.replace(**grow, **step)}
    return {name: every[name] for name in names}


PRESET_SHOWN = {"full": 0.1, "quick": 0.03}  # the learning rate in the figure
PRESETS = {
    "full": schedules(jaxsgd.SweepConfig(
        data="mnist1d", data_options={"num_samples": 5000}, model="mlp",
        model_options={"width": 256, "depth": 2}, optimizer="momentum", batch_sizes=(32,),
        budget=2**18, eval_every=2**12,
        grid=jaxsgd.Grid(learning_rate=(0.03, 0.1), momentum=(0.9,), decay=(0.2,),
                         seed=(0, 1, 2)))),
    "quick": schedules(jaxsgd.SweepConfig(
        data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
        model_options={"width": 32, "depth": 1}, optimizer="momentum", batch_sizes=(8,),
        budget=2**12, eval_every=2**9, eval_train_examples=400,
        grid=jaxsgd.Grid(learning_rate=(0.03,), momentum=(0.9,), decay=(0.2,),
                         seed=(0, 1))), names=("constant", "step decay", "batch growth")),
}


def analyse(results: dict) -> dict:
    """Per schedule and learning rate: steps, stages, final train loss and test accuracy per
    seed, and the seed-mean curves."""
    rows = {}
    for name, result in results.items():
        b0, dim = result.config.batch_sizes[0], result.config.eval_dim
        rows[name] = {}
        for lr in result.metrics.learning_rate.values:
            m = result.metrics.sel(learning_rate=lr).squeeze("batch_size")
            last = {dim: -1}
            rows[name][f"{lr:g}"] = {
                "steps": int(result.config.num_steps(b0)),
                "batch_sizes": [st.batch_size for st in result.config.stages(b0)],
                "diverged": int(m.diverged.sum()),
                "final_train_loss": [float(v) for v in m.train_loss.isel(last).values],
                "final_test_accuracy": [float(v) for v in m.test_accuracy.isel(last).values],
                "examples": [int(v) for v in np.ravel(m.examples.values)],
                "train_loss": [float(v) for v in m.train_loss.mean("seed").values],
                "test_accuracy": [float(v) for v in m.test_accuracy.mean("seed").values]}
    return rows


def plot(results: dict, rows: dict, lr: float, path: Path) -> None:
    """Train loss against examples and steps at one learning rate, every schedule."""
    with use_style():
        fig = figure(figsize=(COLUMN_WIDTH * 2, 2.6), layout="constrained")
        ax_examples, ax_steps = fig.subplots(1, 2, sharey=True)
        for k, (name, result) in enumerate(results.items()):
            for ax, x in ((ax_examples, "examples"), (ax_steps, "step")):
                plot_loss_curves(result, "train_loss", x, select={"learning_rate": lr}, ax=ax,
                                 label=name, color=f"C{k}")
        ax_steps.get_legend().remove()
        ax_examples.legend(fontsize=5.5)
        ax_examples.set_title(f"SGD + momentum 0.9, ε = {lr:g} (÷5 where decayed)", fontsize=7)
        ends = sorted({r[f"{lr:g}"]["steps"] for r in rows.values()})
        for steps in ends:
            ax_steps.axvline(steps, color="0.6", linewidth=0.6, linestyle=":")
            ax_steps.annotate(f" {steps:,} steps", (steps, 0.5), xycoords=("data", "axes fraction"),
                              fontsize=5.5, rotation=90, ha="left", va="center")  # clear of data
    save_figure(fig, path)


def main(argv=None) -> dict:
    args = experiment_args(__doc__, "decay_or_grow", ROOT, argv)
    results = {name: jaxsgd.run_sweep(args.configure(config),
                                      args.out / name.replace(" ", "_"),
                                      progress=args.progress)
               for name, config in PRESETS[args.preset].items()}
    rows = analyse(results)
    shown = PRESET_SHOWN[args.preset]
    write_report(args.figure, {"shown_learning_rate": shown, "schedules": rows})
    plot(results, rows, shown, args.figure)
    print(f"{'schedule':>15} {'lr':>6} {'B':>14} {'steps':>7} {'train loss':>11} "
          f"{'test acc':>9} {'diverged':>8}")
    for name, by_lr in rows.items():
        for lr, r in by_lr.items():
            print(f"{name:>15} {lr:>6} {'→'.join(map(str, r['batch_sizes'])):>14} "
                  f"{r['steps']:>7} {np.mean(r['final_train_loss']):>11.4f} "
                  f"{np.mean(r['final_test_accuracy']):>9.3f} {r['diverged']:>8}")
    print(f"figure: {args.figure}.pdf/.png")
    return {"shown_learning_rate": shown, "schedules": rows}


if __name__ == "__main__":
    main()
