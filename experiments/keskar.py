"""Do large batches find sharper minima that generalise worse? (Keskar et al. 2017)

Claim tested: trained to the same training loss, a large-batch solution is sharper than a
small-batch one (ε-sharpness, λ_max, tr H), generalises worse (larger test − train gap), and the
loss along the line between the two rises more steeply on the large-batch side.

One sweep: MNIST-1D, MLP 40-256-256-10 (ReLU), Adam at one learning rate, a small and a large
batch size × 3 seeds; every run stops at the first evaluation where its training loss is at or
below the target (``stop_at_target``), so the solutions are compared at the same training loss.
Then ``minima_summary`` measures every solution at once on the training set, and
``interpolate`` evaluates L((1 − α)θ_small + αθ_large) on the training and test sets.

Writes ``figures/keskar.{pdf,png}`` and ``figures/keskar.json``; the sweep is saved to ``--out``
(re-running resumes it, and a finished sweep is only re-analysed).

    python experiments/keskar.py            # the figure (a few minutes on 2 cores)
    python experiments/keskar.py --quick    # seconds: a tiny version (for tests)
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxsgd
from jaxsgd.engine.sweep import rebuild
from jaxsgd.experiment_cli import experiment_args, write_report
from jaxsgd.measure.landscape import interpolate, plot_interpolation
from jaxsgd.analysis.minima import MinimaOptions, minima_summary
from jaxsgd.style import COLUMN_WIDTH, figure, plain_log_labels, save_figure, use_style

ROOT = Path(__file__).resolve().parent.parent
MEASURES = ("epsilon_sharpness", "lambda_max", "hessian_trace", "adaptive_sharpness",
            "generalization_gap", "test_accuracy", "train_loss")

PRESETS = {
    "full": dict(
        config=jaxsgd.SweepConfig(
            data="mnist1d", data_options={"num_samples": 5000}, model="mlp",
            model_options={"width": 256, "depth": 2}, optimizer="adam", batch_sizes=(32, 1024),
            budget=2**19, eval_every=2**11, target_metric="train_loss", target_value=0.01,
            stop_at_target=True, grid=jaxsgd.Grid(learning_rate=(3e-3,), seed=(0, 1, 2))),
        options=MinimaOptions(num_examples=None, lanczos_iterations=40, trace_probes=64,
                              epsilon=1e-3, adaptive_rho=1e-3,
                              adaptive_steps=40),
        alphas=np.linspace(-1.0, 2.0, 61)),
    "quick": dict(
        config=jaxsgd.SweepConfig(
            data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
            model_options={"width": 32, "depth": 1}, optimizer="adam", batch_sizes=(8, 256),
            budget=2**14, eval_every=2**9, target_metric="train_loss", target_value=1.2,
            stop_at_target=True, grid=jaxsgd.Grid(learning_rate=(1e-2,), seed=(0, 1))),
        options=MinimaOptions(num_examples=512, lanczos_iterations=10, trace_probes=8,
                              epsilon_steps=8, adaptive_steps=8),
        alphas=np.linspace(-1.0, 2.0, 13)),
}


def interpolation_curves(result, small: int, large: int, alphas, seed: int) -> dict:
    """Loss and accuracy on the training and test sets along θ_small → θ_large (one seed)."""
    _, data, model, task, _ = rebuild(result)
    lr = float(result.metrics.learning_rate[0])
    theta_small = result.run_params(small, learning_rate=lr, seed=seed)
    theta_large = result.run_params(large, learning_rate=lr, seed=seed)

    def metrics(params, batch):  # {"loss", "accuracy"}
        return task.metrics(model.apply(params, batch[0]), batch[1])

    run = jax.jit(lambda a, b, batch: interpolate(metrics, a, b, batch, alphas))
    return {split: jax.tree.map(np.asarray, run(theta_small, theta_large, (jnp.asarray(x),
                                                                           jnp.asarray(y))))
            for split, (x, y) in {"train": (data.x_train, data.y_train),
                                  "test": (data.x_test, data.y_test)}.items()}


def analyse(result, options: MinimaOptions, alphas) -> dict:
    summary = minima_summary(result, options=options)
    small, large = (int(b) for b in summary.batch_size.values)
    table = {name: {str(b): [float(v) for v in summary[name].sel(batch_size=b).values.ravel()]
                    for b in (small, large)} for name in MEASURES}
    ratios = {name: float(np.mean(table[name][str(large)]) / np.mean(table[name][str(small)]))
              for name in MEASURES}
    seed = int(summary.seed.values[0])
    curves = interpolation_curves(result, small, large, alphas, seed)
    return {"small_batch": small, "large_batch": large, "seeds": [int(s) for s in summary.seed],
            "steps_to_target": {str(b): [float(v) for v in result.metrics.steps_to_target.sel(
                batch_size=b).values.ravel()] for b in (small, large)},
            "measures": table, "ratio_large_to_small": ratios,
            "epsilon_sharpness_gap_max": float(np.nanmax(summary.epsilon_sharpness_gap)),
            "interpolation_seed": seed, "alphas": [float(a) for a in alphas],
            "interpolation": {split: {k: [float(x) for x in v] for k, v in c.items()}
                              for split, c in curves.items()}}


def plot(report: dict, path: Path) -> None:
    small, large = report["small_batch"], report["large_batch"]
    alphas = np.array(report["alphas"])
    with use_style():
        fig = figure(figsize=(COLUMN_WIDTH * 2, 2.6), layout="constrained")
        ax_line, ax_bar = fig.subplots(1, 2, width_ratios=(1.4, 1))
        plot_interpolation(alphas, {split: {k: np.array(v) for k, v in c.items()}
                                    for split, c in report["interpolation"].items()},
                           ax=ax_line, endpoints=(f"B={small}", f"B={large}"))
        ax_line.legend(handles=ax_line.get_legend().legend_handles, loc="upper center",
                       bbox_to_anchor=(0.5, -0.22), ncols=4)
        ax_line.set_xlabel(f"α in (1 − α) θ(B={small}) + α θ(B={large})")
        names = [n for n in MEASURES if n not in ("test_accuracy", "train_loss")]
        labels = {"epsilon_sharpness": "ε-sharp.", "lambda_max": "λ_max",
                  "hessian_trace": "tr H", "adaptive_sharpness": "adaptive",
                  "generalization_gap": "test −\ntrain loss"}
        for i, name in enumerate(names):
            lo = np.array(report["measures"][name][str(small)])
            hi = np.array(report["measures"][name][str(large)])
            ratio = hi / lo
            ax_bar.plot(np.full(ratio.shape, i), ratio, "o", color="k", markersize=3)
            ax_bar.bar(i, np.mean(hi) / np.mean(lo), color="C0", alpha=0.5)
        ax_bar.axhline(1.0, color="gray", linewidth=0.8)
        ax_bar.set_xticks(range(len(names)), [labels[n] for n in names])
        ax_bar.set(yscale="log", ylabel=f"large / small batch (B={large} / B={small})")
        plain_log_labels(ax_bar.yaxis)  # 0.5, 1, 2, 5, 10 rather than 10⁰, 10¹
    save_figure(fig, path)


def main(argv=None) -> dict:
    args = experiment_args(__doc__, "keskar", ROOT, argv)
    preset, out, figure = PRESETS[args.preset], args.out, args.figure
    result = jaxsgd.run_sweep(args.configure(preset["config"]), out, progress=args.progress)
    report = analyse(result, preset["options"], preset["alphas"])
    write_report(figure, report)
    plot(report, figure)
    small, large = report["small_batch"], report["large_batch"]
    print(f"{'measure':>20} {f'B={small}':>12} {f'B={large}':>12} {'large/small':>12}")
    for name in MEASURES:
        a = np.mean(report["measures"][name][str(small)])
        b = np.mean(report["measures"][name][str(large)])
        print(f"{name:>20} {a:>12.4g} {b:>12.4g} {report['ratio_large_to_small'][name]:>12.3g}")
    print(f"figure: {figure}.pdf/.png")
    return report


if __name__ == "__main__":
    main()
