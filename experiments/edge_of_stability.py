"""Does full-batch gradient descent train at the edge of stability? (Cohen et al. 2021)

Claim tested: under full-batch GD at learning rate ε, the top Hessian eigenvalue λ_max of the
training loss rises (progressive sharpening) until it reaches ≈ 2/ε and then hovers there; under
SGD with the same ε it stays below 2/ε, lower for smaller batches.

One sweep: MNIST-1D (1000 training examples), MLP 40-128-128-10 (tanh), trained on the squared
error to one-hot targets as in Cohen et al. (``loss="mse"``; with cross-entropy, λ_max decays once the training
set is fitted: the margins grow and the softmax saturates, which hides the effect), plain SGD at
constant learning rates, batch sizes 32, 128 and 1000 (= the whole training set: full-batch GD)
× 3 learning rates, with ``lambda_max_probe`` measuring λ_max of the full training loss (a fixed
batch: the whole training set) every ``every`` steps, warm-started Lanczos, inside the sweep.

Writes ``figures/edge_of_stability.{pdf,png}`` and ``figures/edge_of_stability.json``; the sweep
is saved to ``--out`` (re-running resumes it, and a finished sweep is only re-analysed).

    python experiments/edge_of_stability.py            # the figure (minutes on 2 cores)
    python experiments/edge_of_stability.py --quick    # seconds: a tiny version (for tests)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import jaxsgd
from jaxsgd.probes.curvature import lambda_max_probe
from jaxsgd.experiment_cli import experiment_args, write_report
from jaxsgd.style import COLUMN_WIDTH, figure, save_figure, tick_at, use_style

ROOT = Path(__file__).resolve().parent.parent

PRESETS = {
    "full": dict(
        config=jaxsgd.SweepConfig(
            data="mnist1d", data_options={"num_samples": 1250}, model="mlp",
            model_options={"width": 128, "depth": 2, "activation": "tanh"}, optimizer="sgd",
            loss="mse", batch_sizes=(32, 128, 1000), budget=4000, budget_unit="steps", eval_every=200,
            grid=jaxsgd.Grid(learning_rate=(0.05, 0.1, 0.2), seed=(0,))),
        every=20, num_iterations=3),
    "quick": dict(
        config=jaxsgd.SweepConfig(
            data="mnist1d", data_options={"num_samples": 250}, model="mlp",
            model_options={"width": 16, "depth": 1, "activation": "tanh"}, optimizer="sgd",
            loss="mse", batch_sizes=(20, 200), budget=200, budget_unit="steps", eval_every=50,
            grid=jaxsgd.Grid(learning_rate=(0.2, 0.5), seed=(0,))),
        every=10, num_iterations=3),
}


def analyse(result) -> dict:
    """Per batch size and learning rate: λ_max over training, and its late level against 2/ε."""
    m = result.metrics.sel(seed=result.metrics.seed.values[0])
    steps = m["lambda_max_step"].values
    late = steps >= steps[-1] / 2  # the second half of training
    runs = []
    for b in m.batch_size.values:
        for lr in m.learning_rate.values:
            values = m["lambda_max_value"].sel(batch_size=b, learning_rate=lr).values
            finite = np.isfinite(values)
            runs.append({
                "batch_size": int(b), "learning_rate": float(lr), "two_over_lr": 2.0 / float(lr),
                "diverged": bool(m["diverged"].sel(batch_size=b, learning_rate=lr)),
                "lambda_max": [float(v) for v in values],
                "residual": [float(v) for v in m["lambda_max_residual"].sel(
                    batch_size=b, learning_rate=lr).values],
                "late_median_over_2_lr": float(np.median(values[late & finite]) * lr / 2.0)
                if (late & finite).any() else float("nan"),
                "max_over_2_lr": float(np.nanmax(values) * lr / 2.0) if finite.any() else
                float("nan"),
                "final_train_loss": float(m["train_loss"].sel(batch_size=b,
                                                              learning_rate=lr)[-1]),
            })
    return {"steps": [int(s) for s in steps], "full_batch": int(max(m.batch_size.values)),
            "runs": runs}


def plot(report: dict, path: Path) -> None:
    steps = np.array(report["steps"])
    full = report["full_batch"]
    lrs = sorted({r["learning_rate"] for r in report["runs"]})
    sizes = sorted({r["batch_size"] for r in report["runs"]})
    with use_style():
        fig = figure(figsize=(COLUMN_WIDTH * 2, 3.0), layout="constrained")
        ax_gd, ax_sgd = fig.subplots(1, 2, sharey=True)
        for k, lr in enumerate(lrs):
            run = next(r for r in report["runs"]
                       if r["batch_size"] == full and r["learning_rate"] == lr)
            ax_gd.plot(steps, run["lambda_max"], color=f"C{k}", label=f"GD, ε = {lr:g}")
            ax_gd.axhline(2 / lr, color=f"C{k}", linestyle="--", linewidth=0.8)
        ax_gd.set(xlabel="step", ylabel="λ_max of the training loss", yscale="log",
                  title="full-batch GD (dashed: 2/ε)")
        tick_at(ax_gd.yaxis, sorted(2 / lr for lr in lrs))  # the 2/ε lines, labelled
        # Legends below the panels: inside, they covered the 2/ε = 40 line.
        ax_gd.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=3)
        lr = lrs[len(lrs) // 2]
        for k, b in enumerate(sizes):
            run = next(r for r in report["runs"]
                       if r["batch_size"] == b and r["learning_rate"] == lr)
            label = f"GD (B = {b})" if b == full else f"SGD, B = {b}"
            ax_sgd.plot(steps, run["lambda_max"], color=f"C{k + 3}", label=label)
        ax_sgd.axhline(2 / lr, color="k", linestyle="--", linewidth=0.8, label="2/ε")
        ax_sgd.set(xlabel="step", title=f"SGD against GD at ε = {lr:g}")
        ax_sgd.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2)
    save_figure(fig, path)


def main(argv=None) -> dict:
    args = experiment_args(__doc__, "edge_of_stability", ROOT, argv)
    preset, out, figure = PRESETS[args.preset], args.out, args.figure
    config = args.configure(preset["config"])
    data = jaxsgd.load_dataset(config.data, **dict(config.data_options))
    if max(config.batch_sizes) != data.num_train:
        raise SystemExit(f"the largest batch size must be the training set "
                         f"({data.num_train} examples) for full-batch GD")
    probe = lambda_max_probe(every=preset["every"], num_iterations=preset["num_iterations"],
                             data=(data.x_train, data.y_train))
    result = jaxsgd.run_sweep(config, out, data=data, probes=(probe,),
                              progress=args.progress)
    report = analyse(result)
    write_report(figure, report)
    plot(report, figure)
    print(f"{'B':>6} {'lr':>6} {'2/lr':>7} {'max λ·lr/2':>11} {'late λ·lr/2':>12} "
          f"{'train loss':>10}")
    for r in report["runs"]:
        print(f"{r['batch_size']:>6} {r['learning_rate']:>6g} {r['two_over_lr']:>7.1f} "
              f"{r['max_over_2_lr']:>11.3f} {r['late_median_over_2_lr']:>12.3f} "
              f"{r['final_train_loss']:>10.4f}" + ("  diverged" if r["diverged"] else ""))
    print(f"figure: {figure}.pdf/.png")
    return report


if __name__ == "__main__":
    main()
