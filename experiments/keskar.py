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

The second part, ``conditions``, asks whether gradient noise leads to a better minimum or a
worse one, and under which comparison (claim 5): published large-batch gaps depend heavily on
whether the two batch sizes are compared at a matched training loss or a matched budget, and
with the learning rate tuned per batch size or one shared rate. Three sweeps (Adam, a small and
a large batch size, four learning rates × 8 seeds each in the full preset):

* matched training loss: every run stops at the first evaluation with training loss ≤ the
  target (``stop_at_target``); runs that never reach it are left out of this comparison;
* matched budget: every run sees the same number of examples (epochs);
* train longer (Hoffer et al. 2017): the large batch for (large/small) × the budget, as many
  optimizer steps as the small batch takes in the matched budget.

Each comparison is made twice: with the learning rate tuned per batch size — the rate with the
best mean accuracy on held-out validation examples (MNIST-1D drawn from its generator with
another seed; never the test set), among rates no seed diverged with (and, at a matched loss,
every seed reached the target with) — and with one shared rate fixed in advance.
``minima_summary`` measures every solution (test accuracy, test − train loss, λ_max,
ε-sharpness, adaptive sharpness); the table gives, per comparison, the large-batch minus
small-batch mean with its 95% interval and how often a large-batch run is worse than a
small-batch one (over all seed pairs). Writes
``figures/keskar_conditions.{pdf,png,json}``; its sweeps go beside ``--out`` (``OUT_conditions/``).

    python experiments/keskar.py            # both figures (about 16 minutes on 2 cores)
    python experiments/keskar.py --quick    # seconds: tiny versions (for tests)
    python experiments/keskar.py --quick --part conditions   # one part
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import jaxsgd
from jaxsgd.engine.sweep import rebuild
from jaxsgd.experiment_cli import experiment_args, write_report
from jaxsgd.measure.landscape import interpolate, plot_interpolation
from jaxsgd.analysis.minima import MinimaOptions, minima_summary
from jaxsgd.style import COLUMN_WIDTH, figure, plain_log_labels, save_figure, use_style

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("interpolation", "conditions")
MEASURES = ("epsilon_sharpness", "lambda_max", "hessian_trace", "adaptive_sharpness",
            "generalization_gap", "test_accuracy", "train_loss")



class Conditions(NamedTuple):
    """Claim 5's three sweeps (module docstring). base: the batch sizes (small, large), the
    learning rates × seeds, the stopping target and the examples per run at a matched budget
    (the matched-loss sweep gets ``loss_budget`` to reach the target); shared_lr: the
    one rate of the shared-rate comparisons (a value of the grid)."""

    base: jaxsgd.SweepConfig
    loss_budget: int
    shared_lr: float
    options: MinimaOptions
    evaluations: int = 16  # per sweep
    validation: dict = {"seed": 1}  # data options of the held-out set (another generator seed)

    def sweeps(self) -> dict[str, jaxsgd.SweepConfig]:
        small, large = self.base.batch_sizes
        budget = self.base.budget
        longer = budget * large // small
        return {
            "matched_loss": self.base.replace(budget=self.loss_budget, stop_at_target=True,
                                              eval_every=self.loss_budget // 64),
            "matched_budget": self.base.replace(eval_every=budget // self.evaluations),
            "train_longer": self.base.replace(batch_sizes=(large,), budget=longer,
                                              eval_every=longer // self.evaluations)}


CONDITION_MEASURES = ("test_accuracy", "generalization_gap", "lambda_max", "epsilon_sharpness",
                      "adaptive_sharpness", "train_loss", "validation_accuracy")  # where measured
_SHARP = ("lambda_max", "epsilon_sharpness", "adaptive_sharpness")


# The Keskar comparison of each preset; claim 5's sweeps change only the batch sizes, budget,
# stopping and grid of the same data, model, optimizer and target.
_FULL = jaxsgd.SweepConfig(
    data="mnist1d", data_options={"num_samples": 5000}, model="mlp",
    model_options={"width": 256, "depth": 2}, optimizer="adam", batch_sizes=(32, 1024),
    budget=2**19, eval_every=2**11, target_metric="train_loss", target_value=0.01,
    stop_at_target=True, grid=jaxsgd.Grid(learning_rate=(3e-3,), seed=(0, 1, 2)))
_QUICK = jaxsgd.SweepConfig(
    data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
    model_options={"width": 32, "depth": 1}, optimizer="adam", batch_sizes=(8, 256),
    budget=2**14, eval_every=2**9, target_metric="train_loss", target_value=1.2,
    stop_at_target=True, grid=jaxsgd.Grid(learning_rate=(1e-2,), seed=(0, 1)))

PRESETS = {
    "full": dict(
        config=_FULL,
        options=MinimaOptions(num_examples=None, lanczos_iterations=40, trace_probes=64,
                              epsilon=1e-3, adaptive_rho=1e-3,
                              adaptive_steps=40),
        alphas=np.linspace(-1.0, 2.0, 61),
        conditions=Conditions(
            base=_FULL.replace(
                batch_sizes=(32, 512), budget=2**17, eval_every=None, stop_at_target=False,
                grid=jaxsgd.Grid(learning_rate=(1e-3, 3e-3, 1e-2, 3e-2), seed=tuple(range(8)))),
            loss_budget=2**19, shared_lr=3e-3,
            options=MinimaOptions(num_examples=2048, measures=_SHARP, lanczos_iterations=30,
                                  epsilon_steps=20, adaptive_steps=20))),
    "quick": dict(
        config=_QUICK,
        options=MinimaOptions(num_examples=512, lanczos_iterations=10, trace_probes=8,
                              epsilon_steps=8, adaptive_steps=8),
        alphas=np.linspace(-1.0, 2.0, 13),
        conditions=Conditions(
            base=_QUICK.replace(batch_sizes=(8, 64), budget=2**12, eval_every=None,
                                stop_at_target=False,
                                grid=jaxsgd.Grid(learning_rate=(3e-3, 1e-2), seed=(0, 1))),
            loss_budget=2**14, shared_lr=3e-3, evaluations=2,
            options=MinimaOptions(num_examples=256, measures=())),  # accuracies alone
    ),
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


def rate_table(result, summary, batch_size: int) -> dict:
    """Per learning rate of one batch size: mean validation and test accuracy over seeds, and
    whether the rate is eligible for tuning (no seed diverged; with ``stop_at_target``, every
    seed reached the target)."""
    metrics = result.metrics.sel(batch_size=batch_size)
    ok = ~metrics.diverged.any("seed")
    if result.config.stop_at_target:
        ok = ok & np.isfinite(metrics.steps_to_target).all("seed")
    runs = summary.sel(batch_size=batch_size)
    return {str(float(lr)): {"eligible": bool(ok.sel(learning_rate=lr)),
                             **{m: float(runs[m].sel(learning_rate=lr).mean("seed"))
                                for m in ("validation_accuracy", "test_accuracy")}}
            for lr in runs.learning_rate.values}


def tuned_rate(table: dict) -> float | None:
    """The eligible learning rate with the best mean validation accuracy (None: none is)."""
    eligible = {lr: row["validation_accuracy"] for lr, row in table.items() if row["eligible"]}
    return float(max(eligible, key=eligible.get)) if eligible else None


def _values(x) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(x, float).ravel()]


def _compare(small: list, large: list, measure: str) -> dict | None:
    """Large − small: difference of means with a 95% Welch interval, ratio of means, and the
    fraction of (small run, large run) pairs in which the large-batch run is worse (lower
    accuracy; higher loss, gap or sharpness)."""
    a = np.array([v for v in small if v is not None])
    b = np.array([v for v in large if v is not None])
    if len(a) < 2 or len(b) < 2:
        return None
    interval = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    pairs = b[None, :] - a[:, None]
    worse = pairs < 0 if measure.endswith("accuracy") else pairs > 0
    return {"difference": float(b.mean() - a.mean()),
            "interval": [float(interval.low), float(interval.high)],
            "ratio": float(b.mean() / a.mean()), "large_worse": float(worse.mean()),
            "runs": [len(a), len(b)]}


COMPARISONS = {"matched loss": ("matched_loss", "matched_loss"),
               "matched budget": ("matched_budget", "matched_budget"),
               "train longer": ("matched_budget", "train_longer")}  # (small's, large's) sweep


def validation_set(conditions: Conditions):
    """Held-out examples for tuning: the whole of a data set drawn from the same generator as
    the sweeps' with another seed (``conditions.validation``), never their test set."""
    data = jaxsgd.load_dataset(conditions.base.data, **{**conditions.base.data_options,
                                                        **conditions.validation})
    return (np.concatenate([data.x_train, data.x_test]),
            np.concatenate([data.y_train, data.y_test]))


def conditions_report(results: dict, conditions: Conditions, validation) -> dict:
    """Claim 5's table (module docstring) from the three finished sweeps; ``validation``:
    the held-out examples ``(x, y)`` the rates are tuned on."""
    small, large = conditions.base.batch_sizes
    rows, rates = [], {}
    for name, result in results.items():
        summary = minima_summary(result, options=conditions.options, validation=validation)
        stopped = result.config.stop_at_target
        for b in (int(b) for b in summary.batch_size.values):
            rates[f"{name} B={b}"] = table = rate_table(result, summary, b)
            for choice, lr in (("tuned", tuned_rate(table)), ("shared", conditions.shared_lr)):
                row = {"condition": name, "lr_choice": choice, "batch_size": b,
                       "learning_rate": lr, "examples": result.config.budget,
                       # a rate tuned to the grid's end may be short of the best one
                       "at_grid_edge": choice == "tuned" and lr is not None
                       and str(lr) in (min(table, key=float), max(table, key=float))}
                if lr is None:
                    rows.append({**row, "measures": {m: [] for m in CONDITION_MEASURES
                                                     if m in summary}})
                    continue
                runs = summary.sel(batch_size=b, learning_rate=lr)
                keep = np.ones(runs.seed.size, bool)
                steps = result.metrics.steps_to_target.sel(batch_size=b, learning_rate=lr)
                if stopped:  # a run that never reached the target is not at the matched loss
                    keep = np.isfinite(steps.values)
                    row["steps"] = _values(steps)
                else:
                    row["steps"] = result.config.budget // b
                row["measures"] = {m: _values(np.where(keep, runs[m].values, np.nan))
                                   for m in CONDITION_MEASURES if m in runs}
                rows.append(row)
    comparisons = {}
    for label, (small_sweep, large_sweep) in COMPARISONS.items():
        for choice in ("tuned", "shared"):
            pick = lambda sweep, b: next(r for r in rows if r["condition"] == sweep and
                                         r["lr_choice"] == choice and r["batch_size"] == b)
            lo, hi = pick(small_sweep, small), pick(large_sweep, large)
            comparisons[f"{label}, {choice}"] = {
                "learning_rates": [lo["learning_rate"], hi["learning_rate"]],
                "examples": [lo["examples"], hi["examples"]],
                **{m: _compare(lo["measures"][m], hi["measures"][m], m)
                   for m in CONDITION_MEASURES if m in lo["measures"]}}
    return {"small_batch": small, "large_batch": large, "shared_lr": conditions.shared_lr,
            "seeds": len(conditions.base.grid.seed), "validation_examples": len(validation[0]),
            "rates": rates, "rows": rows, "comparisons": comparisons}


def plot_conditions(report: dict, path: Path) -> None:
    """Five measures per comparison (each run a dot, the mean a bar; filled: the rate tuned per
    batch size, open: the shared rate), and the test-accuracy difference with its 95% interval."""
    small, large = report["small_batch"], report["large_batch"]
    panels = {"test_accuracy": "test accuracy (%)", "generalization_gap": "test − train loss",
              "lambda_max": "λ_max", "epsilon_sharpness": "ε-sharpness (%)",
              "adaptive_sharpness": "adaptive sharpness"}
    choices = {"tuned": (-0.2, "o"), "shared": (0.2, "o")}  # offset in the group; open if shared

    def values(label, choice, b, measure):
        sweep = COMPARISONS[label][0 if b == small else 1]
        row = next(r for r in report["rows"] if r["condition"] == sweep
                   and r["lr_choice"] == choice and r["batch_size"] == b)
        v = np.array([x for x in row["measures"][measure] if x is not None], float)
        return 100 * v if measure == "test_accuracy" else v

    ticks = [label.replace(" ", "\n") for label in COMPARISONS]
    with use_style():
        fig = figure(figsize=(COLUMN_WIDTH * 2, 4.4), layout="constrained")
        axes = fig.subplots(2, 3).ravel()
        for ax, (measure, title) in zip(axes, panels.items()):
            if measure not in report["rows"][0]["measures"]:  # not measured by this preset
                ax.set_axis_off()
                continue
            for g, label in enumerate(COMPARISONS):
                for choice, (offset, marker) in choices.items():
                    for b, dx, color in ((small, -0.07, "C0"), (large, 0.07, "C1")):
                        x = g + offset + dx
                        v = values(label, choice, b, measure)
                        ax.plot(np.full(v.shape, x), v, marker, color=color, markersize=2.5,
                                markerfacecolor=color if choice == "tuned" else "none",
                                markeredgewidth=0.6)
                        if v.size:
                            ax.hlines(v.mean(), x - 0.06, x + 0.06, color=color)
            ax.set_title(title)
            ax.set_xticks(range(len(COMPARISONS)), ticks)
            if measure in _SHARP:
                ax.set_yscale("log")
                plain_log_labels(ax.yaxis)
        handles = [axes[0].plot([], [], "o", color=c, markersize=3, label=f"B = {b}")[0]
                   for b, c in ((small, "C0"), (large, "C1"))]
        handles += [axes[0].plot([], [], "o", color="gray", markersize=3, label=text,
                                 markerfacecolor="gray" if choice == "tuned" else "none")[0]
                    for choice, text in (("tuned", "rate tuned per B"),
                                         ("shared", f"shared rate {report['shared_lr']:g}"))]
        fig.legend(handles=handles, loc="outside lower center", ncols=4)
        ax = axes[-1]
        for g, label in enumerate(COMPARISONS):
            for choice, (offset, marker) in choices.items():
                c = report["comparisons"][f"{label}, {choice}"]["test_accuracy"]
                if c is None:
                    continue
                d, (lo, hi) = 100 * c["difference"], (100 * x for x in c["interval"])
                ax.errorbar(g + offset, d, yerr=[[d - lo], [hi - d]], fmt=marker, color="k",
                            markersize=3, capsize=2,
                            markerfacecolor="k" if choice == "tuned" else "none")
        ax.axhline(0.0, color="gray", linewidth=0.8)
        ax.set_xticks(range(len(COMPARISONS)), ticks)
        ax.set(title=f"test accuracy, B = {large} − B = {small}",
               ylabel="points (mean, 95% interval)")
    save_figure(fig, path)


def run_conditions(args, conditions: Conditions) -> dict:
    conditions = conditions._replace(base=args.configure(conditions.base))
    try:  # before any sweep: another data set may not take the held-out set's options
        validation = validation_set(conditions)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"the conditions part draws its validation examples with data options "
                         f"{conditions.validation}: {error}") from None
    folder = args.out.with_name(args.out.name + "_conditions")
    results = {name: jaxsgd.run_sweep(config, folder / name, progress=args.progress)
               for name, config in conditions.sweeps().items()}
    report = conditions_report(results, conditions, validation)
    figure = args.figure.with_name(args.figure.name + "_conditions")
    write_report(figure, report)
    plot_conditions(report, figure)
    print(f"{'comparison':>24} {'lr (small, large)':>20} {'Δ test acc (pts)':>18} "
          f"{'P(large worse)':>15} {'ε-sharp ratio':>14} {'λ_max ratio':>12}")
    for name, c in report["comparisons"].items():
        acc = c["test_accuracy"]
        if acc is None:
            print(f"{name:>24}  (too few runs)")
            continue
        ratio = lambda m: f"{c[m]['ratio']:.3g}" if c.get(m) else "-"
        print(f"{name:>24} {str(c['learning_rates']):>20} "
              f"{100 * acc['difference']:>+8.2f} [{100 * acc['interval'][0]:+.1f}, "
              f"{100 * acc['interval'][1]:+.1f}] {acc['large_worse']:>8.2f} "
              f"{ratio('epsilon_sharpness'):>14} {ratio('lambda_max'):>12}")
    print(f"figure: {figure}.pdf/.png")
    return report


def run_interpolation(args, preset: dict) -> dict:
    result = jaxsgd.run_sweep(args.configure(preset["config"]), args.out, progress=args.progress)
    report = analyse(result, preset["options"], preset["alphas"])
    write_report(args.figure, report)
    plot(report, args.figure)
    small, large = report["small_batch"], report["large_batch"]
    print(f"{'measure':>20} {f'B={small}':>12} {f'B={large}':>12} {'large/small':>12}")
    for name in MEASURES:
        a = np.mean(report["measures"][name][str(small)])
        b = np.mean(report["measures"][name][str(large)])
        print(f"{name:>20} {a:>12.4g} {b:>12.4g} {report['ratio_large_to_small'][name]:>12.3g}")
    print(f"figure: {args.figure}.pdf/.png")
    return report


def main(argv=None) -> dict:
    """Run the chosen parts; returns {part: its report}."""
    args = experiment_args(__doc__, "keskar", ROOT, argv, parts=PARTS)
    preset = PRESETS[args.preset]
    reports = {}
    if "interpolation" in args.parts:
        reports["interpolation"] = run_interpolation(args, preset)
    if "conditions" in args.parts:
        reports["conditions"] = run_conditions(args, preset["conditions"])
    return reports


if __name__ == "__main__":
    main()
