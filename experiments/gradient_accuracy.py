"""Do small batches give inaccurate gradients? And from which batch size is one representative?

Claim tested: a minibatch gradient g_B is a noisy estimate of the full gradient G, with mean
squared error E|g_B − G|² = tr Σ / B · (N − B)/(N − 1) for B examples drawn without replacement
from N (SCIENCE.md): small batches are inaccurate, and a batch becomes "representative" — its
error no larger than the signal |G|² — from B ≈ B_simple = tr Σ / |G|², a point that moves as
training goes on.

One run: MNIST-1D (4000 training examples), MLP 40-256-256-10, SGD with momentum 0.9 at B = 32,
2^17 examples, its state kept at several points (``snapshot_points``). At each snapshot θ:

* exact G, tr Σ and B_simple over all N training examples (``gradient_noise_scale``, from
  per-example gradients);
* the measured error E|g_B − G|² for B = 1, 2, 4, ..., N/2 over random minibatches drawn
  without replacement (``minibatch_gradient_error``: its mean and standard error over draws),
  against the finite-population value above;
* the representative batch size B_rep, where the predicted error equals |G|²:
  B_rep = N·B_simple / (N − 1 + B_simple).

Writes ``figures/gradient_accuracy.{pdf,png}`` and ``.json``; the run is saved to ``--out``
(re-running resumes it, and a finished run is only re-analysed).

    python experiments/gradient_accuracy.py            # the figure (about 2 minutes on 2 cores)
    python experiments/gradient_accuracy.py --quick    # seconds: a tiny version (for tests)
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxsgd
from jaxsgd.engine.sweep import rebuild
from jaxsgd.experiment_cli import experiment_args, write_report
from jaxsgd.losses import make_loss_fn
from jaxsgd.measure.noise import (batch_noise_factor, gradient_noise_scale,
                                  minibatch_gradient_error)
from jaxsgd.style import COLUMN_WIDTH, figure, plain_log_labels, save_figure, tick_at, use_style

ROOT = Path(__file__).resolve().parent.parent

PRESETS = {
    "full": dict(
        config=jaxsgd.SweepConfig(
            data="mnist1d", data_options={"num_samples": 5000}, model="mlp",
            model_options={"width": 256, "depth": 2}, optimizer="momentum", batch_sizes=(32,),
            budget=2**17, eval_every=2**12,
            snapshot_points=(0, 2**10, 2**12, 2**14, 2**15, 2**17),
            grid=jaxsgd.Grid(learning_rate=(0.02,), momentum=(0.9,), seed=(0,))),
        batch_sizes=tuple(2**k for k in range(12)), draws=400, slice_size=500),
    "quick": dict(
        config=jaxsgd.SweepConfig(
            data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
            model_options={"width": 32, "depth": 1}, optimizer="momentum", batch_sizes=(16,),
            budget=2**11, eval_every=2**9, snapshot_points=(0, 2**11),
            grid=jaxsgd.Grid(learning_rate=(0.05,), momentum=(0.9,), seed=(0,))),
        batch_sizes=(1, 4, 16, 64, 256), draws=64, slice_size=None),
}


def analyse(result, batch_sizes, draws: int, slice_size) -> dict:
    """Per snapshot: the exact noise scale, the measured and predicted errors per B."""
    parts = rebuild(result)
    loss_fn = make_loss_fn(parts.model, parts.task)
    data = (jnp.asarray(parts.data.x_train), jnp.asarray(parts.data.y_train))
    n = int(data[0].shape[0])
    (b_train,) = result.config.batch_sizes
    sizes = jnp.asarray(batch_sizes)
    exact = jax.jit(lambda p: gradient_noise_scale(loss_fn, p, data, slice_size=slice_size))
    loss = jax.jit(loss_fn)
    rows = []
    for i, step in enumerate(result.snapshot_steps(b_train)):
        params = result.run_params(b_train, step=step)
        noise = exact(params)
        error = minibatch_gradient_error(loss_fn, params, data, batch_sizes, num_draws=draws,
                                         key=jax.random.key(i))
        predicted = noise.trace_cov * batch_noise_factor(sizes, n)
        b_simple = float(noise.b_simple)
        rows.append({
            "step": int(step), "examples": int(result.config.examples_at(b_train, step)),
            "train_loss": float(loss(params, data)),
            "grad_sq_norm": float(noise.grad_sq_norm), "trace_cov": float(noise.trace_cov),
            "b_simple": b_simple, "b_representative": n * b_simple / (n - 1 + b_simple),
            "error": [float(v) for v in error.mean], "error_se": [float(v) for v in error.se],
            "predicted": [float(v) for v in predicted],
            "z": [float(v) for v in (error.mean - predicted) / error.se],
        })
    return {"num_train": n, "batch_size_trained": b_train, "draws": draws,
            "batch_sizes": [int(b) for b in batch_sizes], "snapshots": rows}


def plot(report: dict, path: Path) -> None:
    sizes = np.array(report["batch_sizes"], float)
    rows = report["snapshots"]
    with use_style():
        fig = figure(figsize=(COLUMN_WIDTH * 2, 2.6), layout="constrained")
        ax_err, ax_b = fig.subplots(1, 2)
        curve = np.geomspace(sizes.min(), sizes.max(), 100)
        n = report["num_train"]
        for k, r in enumerate(rows):
            g2 = r["grad_sq_norm"]
            rel = np.array(r["error"]) / g2
            se = np.array(r["error_se"]) / g2
            color = f"C{k}"
            ax_err.errorbar(sizes, rel, yerr=2 * se, fmt="o", color=color, markersize=3,
                            capsize=1.5,
                            label=f"{r['examples']:,} examples, loss {r['train_loss']:.2f}")
            ax_err.plot(curve, r["trace_cov"] * (n - curve) / ((n - 1) * curve) / g2, "-",
                        color=color, linewidth=0.8)
            ax_err.plot(r["b_representative"], 1.0, "|", color=color, markersize=10)
        ax_err.axhline(1.0, color="0.5", linestyle="--", linewidth=0.8)
        ax_err.set(xscale="log", yscale="log", xlabel="batch size B (examples)",
                   ylabel=r"$E|g_B - G|^2 \,/\, |G|^2$")
        tick_at(ax_err.xaxis, sizes[::2])
        ax_err.set_title("points: measured (±2 s.e.); lines: tr Σ/B·(N−B)/(N−1)", fontsize=7)
        ax_err.legend(fontsize=6, loc="lower left")
        loss = np.array([r["train_loss"] for r in rows])
        ax_b.plot(loss, [r["b_simple"] for r in rows], "s-", color="k",
                  label=r"$B_{simple} = \mathrm{tr}\,\Sigma / |G|^2$")
        ax_b.plot(loss, [r["b_representative"] for r in rows], "o--", color="C3",
                  label=r"$B_{rep}$: error = $|G|^2$")
        for k, r in enumerate(rows):  # labels alternately above and below the points
            ax_b.annotate(f"{r['examples']:,}", (r["train_loss"], r["b_simple"]), fontsize=6,
                          xytext=(-4, 5) if k % 2 else (4, -9), textcoords="offset points",
                          ha="right" if k % 2 else "left")
        ax_b.axhline(report["batch_size_trained"], color="0.5", linewidth=0.8, linestyle=":",
                     label=f"B trained = {report['batch_size_trained']}")
        ax_b.set(xscale="log", yscale="log", xlabel="training loss (nats; labels: examples seen)",
                 ylabel="batch size (examples)")
        ax_b.invert_xaxis()
        plain_log_labels(ax_b.xaxis)
        plain_log_labels(ax_b.yaxis)
        ax_b.legend(fontsize=6, loc="upper left")
    save_figure(fig, path)


def main(argv=None) -> dict:
    args = experiment_args(__doc__, "gradient_accuracy", ROOT, argv)
    preset, out, figure_path = PRESETS[args.preset], args.out, args.figure
    result = jaxsgd.run_sweep(args.configure(preset["config"]), out, progress=args.progress)
    report = analyse(result, preset["batch_sizes"], preset["draws"], preset["slice_size"])
    write_report(figure_path, report)
    plot(report, figure_path)
    for r in report["snapshots"]:
        print(f"after {r['examples']:>7,} examples: loss {r['train_loss']:.3f}, "
              f"B_simple {r['b_simple']:8.1f}, B_rep {r['b_representative']:8.1f}, "
              f"|z| max {max(abs(z) for z in r['z']):.2f}")
        print("   B:        " + " ".join(f"{b:>8d}" for b in report["batch_sizes"]))
        print("   err/|G|²: " + " ".join(f"{e / r['grad_sq_norm']:>8.3g}" for e in r["error"]))
        print("   pred:     " + " ".join(f"{e / r['grad_sq_norm']:>8.3g}"
                                         for e in r["predicted"]))
    print(f"figure: {figure_path}.pdf/.png")
    return report


if __name__ == "__main__":
    main()
