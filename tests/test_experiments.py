"""The experiment scripts' --quick presets: they run, and what they report is what the library
computes from the saved sweep (and a finished sweep is re-analysed, not retrained)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

import jaxsgd
from jaxsgd.analysis.critical import critical_batch_size
from jaxsgd.targets import sweep_steps_to_target

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_quick(name, tmp_path, *extra):
    """Run an experiment's --quick preset into tmp_path: (module, argv, sweep folder, figure,
    what main returned); ``extra``: more command-line arguments."""
    experiment = _load(name)
    out, figure = tmp_path / "sweep", tmp_path / "figure"
    argv = ["--quick", "--out", str(out), "--figure", str(figure), "--no-progress", *extra]
    return experiment, argv, out, figure, experiment.main(argv)


def test_critical_batch_quick_reports_the_saved_sweeps_numbers(tmp_path):
    experiment, argv, out, figure, rows = _run_quick("critical_batch", tmp_path)
    assert figure.with_suffix(".png").exists() and figure.with_suffix(".pdf").exists()
    assert figure.with_suffix(".json").read_text() == json.dumps(rows, indent=1)
    result = jaxsgd.load_sweep(out)
    fitted = [r for r in rows if "error" not in r]
    assert fitted, rows
    for row in fitted:
        cbs = critical_batch_size(sweep_steps_to_target(result, row["target"], "train_loss"))
        assert row["b_crit"] == pytest.approx(cbs.b_crit)
        assert row["steps"] == pytest.approx(list(cbs.table["steps"].values))
        # B_simple at the target is the probe's value at the step the best runs reached it.
        i = int(np.argmax(np.isfinite(cbs.table["steps"].values)))
        b, lr = int(cbs.table["batch_size"][i]), float(cbs.table["learning_rate"][i])
        steps = sweep_steps_to_target(result, row["target"], "train_loss").sel(
            batch_size=b, learning_rate=lr)
        probe = result.metrics["noise_scale_b_simple"].sel(batch_size=b, learning_rate=lr)
        expected = np.mean([float(probe.sel(seed=s).sel(noise_scale_step=float(steps.sel(seed=s)),
                                                        method="ffill"))
                            for s in steps["seed"].values])
        got = row["b_simple"][i]
        assert (got is None and expected <= 0) or got == pytest.approx(expected)
    # A finished sweep is re-analysed, identically.
    assert json.dumps(experiment.main(argv)) == json.dumps(rows)
    assert all(math.isfinite(r["b_crit"]) for r in fitted)


def test_keskar_quick_compares_solutions_at_the_target_and_interpolates_between_them(tmp_path):
    experiment, argv, out, figure, reports = _run_quick("keskar", tmp_path, "--part",
                                                        "interpolation")
    assert list(reports) == ["interpolation"]  # the other part did not run
    report = reports["interpolation"]
    assert figure.with_suffix(".png").exists()
    assert figure.with_suffix(".json").read_text() == json.dumps(report, indent=1)
    assert not figure.with_name("figure_conditions.png").exists()
    config = experiment.PRESETS["quick"]["config"]
    small, large = str(report["small_batch"]), str(report["large_batch"])
    for b in (small, large):  # every run stopped at the first evaluation meeting the target
        assert all(math.isfinite(s) for s in report["steps_to_target"][b])
        assert max(report["measures"]["train_loss"][b]) <= config.target_value
    for name, ratio in report["ratio_large_to_small"].items():
        m = report["measures"][name]
        assert ratio == pytest.approx(np.mean(m[large]) / np.mean(m[small])), name
    # The interpolation's end points are the two solutions: their training losses (the sweep's
    # last evaluation, on the whole training set) at α = 0 and α = 1.
    alphas = np.array(report["alphas"])
    seed = report["seeds"].index(report["interpolation_seed"])
    curve = report["interpolation"]["train"]["loss"]
    for alpha, b in ((0.0, small), (1.0, large)):
        at = int(np.argmin(np.abs(alphas - alpha)))
        assert alphas[at] == alpha
        assert curve[at] == pytest.approx(report["measures"]["train_loss"][b][seed], rel=1e-4)


def test_keskar_conditions_quick_has_tuned_and_shared_rates_in_every_comparison(tmp_path):
    experiment, argv, out, figure, reports = _run_quick("keskar", tmp_path, "--part",
                                                        "conditions")
    report = reports["conditions"]
    conditions = experiment.PRESETS["quick"]["conditions"]
    small, large = conditions.base.batch_sizes
    folder = tmp_path / "sweep_conditions"
    assert (tmp_path / "figure_conditions.png").exists()
    assert (tmp_path / "figure_conditions.json").read_text() == json.dumps(report, indent=1)
    rows = {(r["condition"], r["lr_choice"], r["batch_size"]): r for r in report["rows"]}
    expected = {("matched_loss", small), ("matched_loss", large), ("matched_budget", small),
                ("matched_budget", large), ("train_longer", large)}
    assert set(rows) == {(c, choice, b) for c, b in expected for choice in ("tuned", "shared")}
    saved = {c: jaxsgd.load_sweep(folder / c).metrics for c, _ in expected}
    for (condition, choice, b), row in rows.items():
        metrics = saved[condition].sel(batch_size=b)
        final = metrics.isel({metrics.train_loss.dims[-1]: -1})
        rates = report["rates"][f"{condition} B={b}"]
        for lr, rate in rates.items():  # eligible: no seed diverged, all reached a stop target
            m = metrics.sel(learning_rate=float(lr))
            ok = not m.diverged.any() and (condition != "matched_loss"
                                           or np.isfinite(m.steps_to_target).all())
            assert rate["eligible"] == ok
            assert rate["test_accuracy"] == pytest.approx(float(
                final.test_accuracy.sel(learning_rate=float(lr)).mean()))
        if choice == "shared":
            assert row["learning_rate"] == conditions.shared_lr
        else:  # the eligible rate with the best mean validation accuracy
            eligible = {float(lr): r["validation_accuracy"] for lr, r in rates.items()
                        if r["eligible"]}
            assert row["learning_rate"] == max(eligible, key=eligible.get)
        runs = final.sel(learning_rate=row["learning_rate"])
        reached = np.isfinite(metrics.steps_to_target.sel(learning_rate=row["learning_rate"]))
        keep = reached.values if condition == "matched_loss" else np.ones(runs.seed.size, bool)
        accuracy = row["measures"]["test_accuracy"]
        assert [a is not None for a in accuracy] == list(keep)
        assert [a for a in accuracy if a is not None] == pytest.approx(
            list(runs.test_accuracy.values[keep]))
        if condition == "matched_loss":  # compared at the matched training loss
            assert all(v <= conditions.base.target_value
                       for v in row["measures"]["train_loss"] if v is not None)
    # Train longer: the large batch takes as many steps as the small one at the matched budget.
    assert rows["train_longer", "tuned", large]["steps"] == rows[
        "matched_budget", "tuned", small]["steps"] == conditions.base.budget // small
    for name, comparison in report["comparisons"].items():
        label, choice = name.rsplit(", ", 1)
        lo = rows[experiment.COMPARISONS[label][0], choice, small]["measures"]
        hi = rows[experiment.COMPARISONS[label][1], choice, large]["measures"]
        assert set(comparison) - {"learning_rates", "examples"} == {
            "test_accuracy", "generalization_gap", "train_loss", "validation_accuracy"}
        for measure, c in ((m, comparison[m]) for m in experiment.CONDITION_MEASURES
                           if m in comparison):
            a = [v for v in lo[measure] if v is not None]
            b = [v for v in hi[measure] if v is not None]
            if min(len(a), len(b)) < 2:
                assert c is None
                continue
            assert c["difference"] == pytest.approx(np.mean(b) - np.mean(a))
            assert c["interval"][0] < c["difference"] < c["interval"][1]
            assert 0 <= c["large_worse"] <= 1
    assert report["comparisons"]["matched budget, tuned"]["test_accuracy"] is not None


def test_edge_of_stability_quick_reports_the_probes_values(tmp_path):
    experiment, argv, out, figure, report = _run_quick("edge_of_stability", tmp_path)
    assert figure.with_suffix(".png").exists()
    metrics = jaxsgd.load_sweep(out).metrics.isel(seed=0)
    assert report["full_batch"] == int(metrics.batch_size.max())
    assert len(report["runs"]) == metrics.batch_size.size * metrics.learning_rate.size
    for run in report["runs"]:
        values = metrics["lambda_max_value"].sel(batch_size=run["batch_size"],
                                                 learning_rate=run["learning_rate"]).values
        assert run["lambda_max"] == pytest.approx(list(values))
        assert np.all(values > 0)  # the top eigenvalue of a squared-error loss
        assert run["max_over_2_lr"] == pytest.approx(values.max() * run["learning_rate"] / 2)


def test_make_figures_runs_each_experiment_and_lists_its_time(tmp_path, capsys):
    make_figures = _load("make_figures")
    seconds = make_figures.main(["--quick", "--only", "nqm", "--into", str(tmp_path)])
    assert list(seconds) == ["nqm"] and seconds["nqm"] > 0
    for part in ("monte_carlo", "learning_rate", "steps_to_target"):
        assert (tmp_path / f"nqm_{part}.png").exists(), part
    assert json.loads((tmp_path / "nqm.json").read_text())
    assert "nqm" in capsys.readouterr().out.split("wall time per experiment")[1]
    assert make_figures.command("keskar", False, None)[-1].endswith("keskar.py")  # full preset


def test_gradient_accuracy_quick_measures_the_finite_population_error(tmp_path):
    """Claim 1: the measured minibatch error follows tr Σ/B·(N − B)/(N − 1) within sampling
    error at every batch size and snapshot, and B_rep is where the error meets |G|²."""
    experiment, argv, out, figure, report = _run_quick("gradient_accuracy", tmp_path)
    assert figure.with_suffix(".png").exists()
    assert figure.with_suffix(".json").read_text() == json.dumps(report, indent=1)
    n, sizes = report["num_train"], np.array(report["batch_sizes"], float)
    assert len(report["snapshots"]) == len(experiment.PRESETS["quick"]["config"].snapshot_points)
    for row in report["snapshots"]:
        predicted = row["trace_cov"] * (n - sizes) / ((n - 1) * sizes)
        assert row["predicted"] == pytest.approx(list(predicted), rel=1e-5)
        assert max(abs(z) for z in row["z"]) < 5, row["z"]
        assert row["b_simple"] == pytest.approx(row["trace_cov"] / row["grad_sq_norm"], rel=1e-5)
        b_rep = row["b_representative"]  # the predicted error equals |G|² there
        assert row["trace_cov"] * (n - b_rep) / ((n - 1) * b_rep) == pytest.approx(
            row["grad_sq_norm"], rel=1e-6)
        # Small batches are inaccurate: at B = 1 the error is many times the signal.
        assert row["error"][0] > 10 * row["grad_sq_norm"]


def test_lr_scaling_quick_reports_best_and_stable_rates(tmp_path):
    """Claim 2: per optimizer, the report's best rates are critical_batch_size's, the largest
    stable rate is the largest at which every seed reaches the target, and below B_crit the
    best rate does not fall as B grows."""
    experiment, argv, out, figure, report = _run_quick("lr_scaling", tmp_path)
    assert figure.with_suffix(".png").exists()
    assert set(report["optimizers"]) == {"momentum", "adam"}
    for name, r in report["optimizers"].items():
        result = jaxsgd.load_sweep(out / name)
        cbs = critical_batch_size(result, report["target_train_loss"], metric="train_loss")
        assert r["best_lr"] == pytest.approx(list(cbs.table["learning_rate"].values))
        assert r["b_crit"] == pytest.approx(cbs.b_crit)
        steps = sweep_steps_to_target(result, report["target_train_loss"], "train_loss")
        reached = np.isfinite(steps).all("seed")
        for b, stable, best in zip(r["batch_sizes"], r["largest_stable_lr"], r["best_lr"]):
            ok = reached.sel(batch_size=b).values
            assert stable == pytest.approx(reached.learning_rate.values[ok].max())
            assert best is None or best <= stable
        below = [lr for b, lr in zip(r["batch_sizes"], r["best_lr"]) if b <= r["b_crit"]]
        assert len(below) >= 2 and all(lr is not None for lr in below)
        assert below == sorted(below), (name, below)


def test_bigger_batch_quick_steps_fall_examples_rise_and_accumulation_matches(tmp_path):
    """Claim 6: steps to target fall with B, examples rise beyond B_crit; the accumulated large
    batch reaches the target in the large batch's steps with less gradient memory."""
    experiment, argv, out, figure, report = _run_quick("bigger_batch", tmp_path)
    assert figure.with_suffix(".png").exists()
    rows = [r for r in report["rows"] if r["steps"] is not None]
    steps = [r["steps"] for r in rows]
    # Steps fall with B (past B_crit ≈ 32 they level off: 56, 15, 14 measured, so allow a
    # step's noise there), examples rise.
    assert steps[-1] < steps[0] / 2
    assert all(later <= earlier * 1.2 for earlier, later in zip(steps, steps[1:])), steps
    assert rows[-1]["examples"] > rows[0]["examples"]
    for r in rows:
        assert r["examples"] == pytest.approx(r["steps"] * r["batch_size"])
        assert r["seconds_to_target"] == pytest.approx(r["steps"] * r["seconds_per_step"])
    acc = [r for r in rows if "accumulated" in r]
    assert acc
    for r in acc:
        a = r["accumulated"]
        assert a["steps_per_seed"] == a["large_batch_steps_per_seed"]
        assert a["gradient_mib"] < r["gradient_mib"]


def test_experiment_command_line_replaces_data_model_and_budget():
    from jaxsgd.experiment_cli import experiment_args

    args = experiment_args("doc", "name", Path("/tmp"), [
        "--data", "mnist", "--data-option", "path=/data/mnist", "--data-option",
        "standardize=global", "--model", "cnn", "--model-option", "width=64",
        "--budget", "1048576"])
    config = args.configure(jaxsgd.SweepConfig())
    assert (config.data, dict(config.data_options)) == (
        "mnist", {"path": "/data/mnist", "standardize": "global"})
    assert (config.model, dict(config.model_options)) == ("cnn", {"width": 64})
    assert config.budget == 2**20
    assert experiment_args("doc", "name", Path("/tmp"), []).configure(
        jaxsgd.SweepConfig()) == jaxsgd.SweepConfig()
    with pytest.raises(SystemExit, match="--data-option: 'path' is not KEY=VALUE"):
        experiment_args("doc", "name", Path("/tmp"), ["--data", "mnist", "--data-option", "path"])
    with pytest.raises(SystemExit, match="--model-option needs --model"):
        experiment_args("doc", "name", Path("/tmp"), ["--model-option", "width=3"])


def test_decay_or_grow_quick_growth_matches_decay_in_fewer_steps(tmp_path):
    """Claim 3: growing the batch where the step schedule decays the rate reaches about the
    decayed run's loss at the same examples, in fewer optimizer steps."""
    experiment, argv, out, figure, report = _run_quick("decay_or_grow", tmp_path)
    assert figure.with_suffix(".png").exists()
    rows = report["schedules"]
    assert set(rows) == {"constant", "step decay", "batch growth"}
    lr = f"{report['shown_learning_rate']:g}"
    decay, grow = rows["step decay"][lr], rows["batch growth"][lr]
    assert grow["batch_sizes"] == [8, 40, 200] and decay["batch_sizes"] == [8]
    assert grow["examples"] == decay["examples"]  # evaluated at the same examples
    assert grow["steps"] < 0.6 * decay["steps"]
    assert abs(np.mean(grow["final_train_loss"]) / np.mean(decay["final_train_loss"]) - 1) < 0.1
    result = jaxsgd.load_sweep(out / "batch_growth")
    assert list(result.metrics.stage_batch_size.values.ravel()) == [
        8 if e < 2048 else 40 if e < 3072 else 200 for e in grow["examples"]]


def test_small_batch_outliers_quick_b1_survives_where_large_batches_diverge(tmp_path):
    """Claim 4: at matched ε/B, B = 1 never diverges while B = 64 does at the high ratio, and
    B = 1 counts at least as many loss spikes (many at the high ratio); the mislabelled sweep
    records its outliers."""
    experiment, argv, out, figure, report = _run_quick("small_batch_outliers", tmp_path)
    assert figure.with_suffix(".png").exists()
    assert set(report["sgd"]) == {"clean", "5% mislabelled"}
    for name, table in report["sgd"].items():
        small, large = table["1"], table["64"]
        assert all(r["diverged"] == 0 for r in small), name
        assert large[-1]["lr_over_b"] == 0.05 and large[-1]["diverged"] == 1, name
        for a, b in zip(small, large):
            assert a["spikes_per_1000_steps"] >= b["spikes_per_1000_steps"], name
        assert small[-1]["spikes_per_1000_steps"] > 5, name  # measured: 14 per 1000 steps
    outliers = jaxsgd.load_sweep(out / "sgd_mislabel").provenance["run"]["data"]["outliers"]
    assert len(outliers["mislabelled"]) == 40  # 5% of the 800 training examples
    result = jaxsgd.load_sweep(out / "sgd_clean")
    np.testing.assert_allclose(result.metrics.learning_rate_used.sel(batch_size=64).values,
                               [0.64, 3.2])
