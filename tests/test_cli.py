"""Tests for the `jaxsgd` command (jaxsgd.cli) and the sweep summary (jaxsgd.analysis.summary)."""

import contextlib
import io
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

from jaxsgd.cli import main
from jaxsgd.config import SCHEMA, Grid, SweepConfig
from jaxsgd.hyperparams import GRID_FIELDS
from jaxsgd.engine.results import SweepResult
from jaxsgd.analysis.summary import best_hyperparameters, best_learning_rate, summarize

# A sweep small enough to compile and run in a few seconds on CPU: digits (1438 training
# examples), 2 batch sizes x 2 learning rates x 1 seed, 512 examples per run.
TINY = """\
[data]
name = "digits"

[model]
name = "mlp"
width = 32
depth = 1

[training]
batch_sizes = [16, 64]
budget = 512

[evaluation]
every = 256

[target]
metric = "test_error"
value = 0.8

[grid]
learning_rate = [0.1, 0.3]
seed = [0]
"""


def _write(tmp_path, text, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _table_rows(text):
    """Rows of the summary table: lines whose first field is an integer (the batch size)."""
    return [line.split() for line in text.splitlines() if line.split() and
            line.split()[0].isdigit()]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """Runs the tiny sweep once through `main`; returns (folder, exit status, stdout)."""
    root = tmp_path_factory.mktemp("cli")
    config = _write(root, TINY)
    out = root / "results"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["sweep", config, "--out", str(out)])
    return out, status, stdout.getvalue(), config


# ----------------------------------------------------------------------------- sweep / show


def test_sweep_writes_results_figure_and_table(tiny_sweep):
    out, status, stdout, _ = tiny_sweep

    assert status == 0
    for name in ("config.json", "group_bs16.nc", "group_bs64.nc", "params_bs16.npz",
                 "params_bs64.npz"):
        assert (out / name).is_file(), name
    for name in ("summary.pdf", "summary.png"):
        assert (out / name).stat().st_size > 1000, name
    rows = _table_rows(stdout)
    assert [r[0] for r in rows] == ["16", "64"]
    assert [r[1] for r in rows] == ["32", "8"]  # steps per run = 512 // B
    assert all(r[2] in ("0.1", "0.3") for r in rows)  # best learning rate is a grid value
    assert all(r[-1] == "0/2" for r in rows)  # diverged / runs at that batch size
    assert "batch size 16: 2 runs x 32 steps" in stdout  # progress (not --quiet)


def test_show_prints_the_same_table(tiny_sweep, capsys):
    out, _, stdout, _ = tiny_sweep

    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert _table_rows(shown) == _table_rows(stdout)
    assert "incomplete" not in shown


def test_show_says_when_the_sweep_is_incomplete(tiny_sweep, tmp_path, capsys):
    out, *_ = tiny_sweep
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("config.json", "sweep.json", "group_bs16.nc", "params_bs16.npz"):
        (partial / name).write_bytes((out / name).read_bytes())

    assert main(["show", str(partial)]) == 0
    shown = capsys.readouterr().out
    assert [r[0] for r in _table_rows(shown)] == ["16"]
    assert "incomplete" in shown and "64" in shown.splitlines()[-1]


def test_overwrite_replaces_a_results_folder(tiny_sweep, tmp_path, capsys):
    _, _, _, config = tiny_sweep
    out = tmp_path / "again"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "stale.txt").write_text("old")

    status = main(["sweep", config, "--out", str(out), "--overwrite", "--quiet", "--no-figure"])

    assert status == 0
    assert not (out / "stale.txt").exists()
    assert not (out / "summary.png").exists()  # --no-figure
    stdout = capsys.readouterr().out
    assert "runs x" not in stdout  # --quiet: no progress lines
    assert len(_table_rows(stdout)) == 2


# ----------------------------------------------------------------------------- errors


def _error_line(capsys):
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("jaxsgd: error: ")
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def _replace(text, old, new):
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("[training]\n", "[training\n", ["invalid TOML", "line"]),
        ("budget = 512\n", "budget = 512\nbatchsize = 3\n", ["training.batchsize"]),
        ("budget = 512", 'budget = "big"', ["training.budget", "'big'"]),
        ("learning_rate = [0.1, 0.3]", "learning_rate = [0.1, -0.3]",
         ["grid.learning_rate", "-0.3"]),
        ("learning_rate = [0.1, 0.3]", "learning_rate = []", ["grid.learning_rate", "empty"]),
        ("[model]\n", '[optimizer]\nname = "sgdd"\n\n[model]\n', ["optimizer.name", "'sgdd'"]),
        ('name = "digits"', 'name = "mnist2d"', ["unknown dataset", "'mnist2d'"]),
        ("depth = 1", "depht = 1", ["model 'mlp'", "'depht'"]),
        ("batch_sizes = [16, 64]\nbudget = 512", "batch_sizes = [16, 4096]\nbudget = 8192",
         ["training.batch_sizes", "4096", "larger than the training set"]),
        ("[grid]", "[grids]", ["unknown section", "[grids]"]),
        ("[grid]", "[probes.noise]\nevery = 2\n\n[grid]", ["[probes.noise]", "unknown probe",
                                                          "noise_scale"]),
        ("[grid]", "[probes.noise_scale]\nevry = 2\n\n[grid]", ["'evry'", "every"]),
        ("[grid]", "[probes.noise_scale]\nevery = 0\n\n[grid]", ["[probes.noise_scale]",
                                                                "every: 0"]),
    ],
    ids=["toml-syntax", "unknown-key", "wrong-type", "negative-learning-rate",
         "empty-learning-rate", "unknown-optimizer", "unknown-dataset", "unknown-model-option",
         "batch-larger-than-data", "unknown-section", "unknown-probe", "unknown-probe-option",
         "bad-probe-value"],
)
def test_bad_configuration_is_one_error_line(tmp_path, capsys, old, new, expected):
    config = _write(tmp_path, _replace(TINY, old, new))

    status = main(["sweep", config, "--out", str(tmp_path / "out")])

    assert status == 2
    line = _error_line(capsys)
    for text in expected:
        assert text in line, line
    assert config in line  # names the file
    assert not (tmp_path / "out").exists()  # nothing written before the input is checked


def test_probes_from_the_configuration_file(tmp_path, capsys):
    from jaxsgd.engine.folder import load_sweep

    text = _replace(TINY, "[grid]", "[probes.noise_scale]\nevery = 4\n\n"
                    "[probes.lambda_max]\nevery = 8\nnum_iterations = 3\n\n[grid]")
    text = _replace(text, "batch_sizes = [16, 64]", "batch_sizes = [16]")
    out = tmp_path / "out"
    assert main(["sweep", _write(tmp_path, text), "--out", str(out), "--no-figure",
                 "--quiet"]) == 0
    metrics = load_sweep(out).metrics
    assert list(metrics.noise_scale_step.values) == list(range(0, 32, 4))  # 512/16 = 32 steps
    assert np.isfinite(metrics.noise_scale_trace_cov).all()
    assert (metrics.noise_scale_trace_cov > 0).all()  # tr Σ estimates are never negative here
    assert list(metrics.lambda_max_step.values) == list(range(0, 32, 8))
    assert (metrics.lambda_max_value > 0).all()  # a cross-entropy MLP's top eigenvalue


def test_existing_out_folder_is_refused(tmp_path, capsys):
    config = _write(tmp_path, TINY)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")

    assert main(["sweep", config, "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert str(out) in line and "not a jaxsgd results folder" in line
    assert (out / "notes.txt").read_text() == "keep me"


def test_rerunning_the_same_sweep_resumes_and_another_sweep_is_refused(tiny_sweep, tmp_path,
                                                                        capsys):
    out, _, stdout, config = tiny_sweep
    before = {p.name: p.read_bytes() for p in out.glob("*_bs*")}

    assert main(["sweep", config, "--out", str(out), "--no-figure"]) == 0
    again = capsys.readouterr().out
    assert _table_rows(again) == _table_rows(stdout)  # finished groups loaded, not rerun
    assert "runs x" not in again
    assert {p.name: p.read_bytes() for p in out.glob("*_bs*")} == before

    changed = _write(tmp_path, _replace(TINY, "budget = 512", "budget = 256"))
    assert main(["sweep", changed, "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert "different sweep" in line and "training.budget is 256 here but 512" in line
    assert "--overwrite" in line


def test_overwrite_never_deletes_a_folder_that_is_not_a_results_folder(tmp_path, capsys):
    config = _write(tmp_path, TINY)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")

    assert main(["sweep", config, "--out", str(out), "--overwrite"]) == 2
    assert "not a jaxsgd results folder" in _error_line(capsys)
    assert (out / "notes.txt").read_text() == "keep me"


def test_missing_config_file(tmp_path, capsys):
    missing = str(tmp_path / "nope.toml")

    assert main(["sweep", missing, "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert missing in line and "not found" in line


@pytest.mark.parametrize("make", ["empty", "other-files", "missing"])
def test_show_on_a_folder_that_is_not_results(tmp_path, capsys, make):
    folder = tmp_path / "folder"
    if make != "missing":
        folder.mkdir()
    if make == "other-files":
        (folder / "data.csv").write_text("1,2\n")

    assert main(["show", str(folder)]) == 2
    line = _error_line(capsys)
    assert str(folder) in line and "not a jaxsgd results folder" in line


def test_console_script_reports_bad_config_without_traceback(tmp_path):
    config = _write(tmp_path, _replace(TINY, "[training]\n", "[training]\nbatchsize = 3\n"))

    done = subprocess.run(
        [sys.executable, "-m", "jaxsgd.cli", "sweep", config, "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120)

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        line for line in done.stderr.strip().splitlines() if line.startswith("jaxsgd: error:")]
    assert "training.batchsize" in done.stderr


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "config.toml"])  # --out is required
    assert exit_info.value.code == 2
    assert "--out" in capsys.readouterr().err


# ----------------------------------------------------------------------------- help


def _help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--help"], ["sweep", "--help"]])
def test_help_lists_every_section_and_key_of_the_schema(argv, capsys):
    text = _help(argv, capsys)

    for section in ("data", "model", *SCHEMA, "grid"):
        assert f"[{section}]" in text, section
    for keys in SCHEMA.values():
        for key in keys:
            assert f"    {key} " in text, key
    for key in GRID_FIELDS:
        assert f"    {key} " in text, key
    assert "    name " in text
    assert "experiments/configs/" in text
    for option in ("width", "num_samples"):  # model and data-set options
        assert option in text


def test_subcommand_help_describes_every_option(capsys):
    sweep = _help(["sweep", "--help"], capsys)
    for option in ("--out", "--overwrite", "--quiet", "--no-figure", "CONFIG.toml"):
        assert option in sweep
    show = _help(["show", "--help"], capsys)
    assert "DIR" in show and "incomplete" in show


# ----------------------------------------------------------------------------- summary


def synthetic_result(steps, final_accuracy, *, target=True, grid=None, diverged=None):
    """A SweepResult in the layout of jaxsgd.engine.results, from hand-written arrays.

    steps, final_accuracy: [batch_size, *grid dims (seed last)]; evaluation points 0 and 1024.
    """
    batch_sizes = (16, 64, 256)
    grid = grid or Grid(learning_rate=(0.01, 0.1, 1.0), seed=(0, 1))
    config = SweepConfig(
        data="digits", batch_sizes=batch_sizes, budget=1024, eval_every=1024, grid=grid,
        target_metric="test_error" if target else None, target_value=0.5 if target else None)
    dims = ["batch_size", *(n for n in GRID_FIELDS if n in ("learning_rate", "seed")
                           or len(getattr(grid, n)) > 1)]
    final_accuracy = np.asarray(final_accuracy, np.float64)
    diverged = np.isnan(final_accuracy) if diverged is None else np.asarray(diverged)
    accuracy = np.stack([np.full_like(final_accuracy, 0.1), final_accuracy], axis=-1)
    coords = {"batch_size": list(batch_sizes), "examples": [0, 1024],
              "step": (("batch_size", "examples"), [[0, 1024 // b] for b in batch_sizes])}
    coords.update({n: list(getattr(grid, n)) for n in dims[1:]})
    coords.update({n: getattr(grid, n)[0] for n in GRID_FIELDS if n not in dims})
    data = {
        "test_accuracy": ([*dims, "examples"], accuracy),
        "test_loss": ([*dims, "examples"], 1.0 - accuracy),
        "diverged": (dims, diverged),
        "diverged_step": (dims, np.where(diverged, 3, -1).astype(np.int32)),
        "run": (dims, np.zeros(diverged.shape, np.int32)),
    }
    if target:
        steps = np.asarray(steps, np.float64)
        data["steps_to_target"] = (dims, steps)
        data["examples_to_target"] = (dims, steps * np.reshape(batch_sizes, (-1,) + (1,) *
                                                               (steps.ndim - 1)))
    metrics = xr.Dataset(data, coords=coords)
    metrics.attrs["complete"] = 1
    return SweepResult(config=config, metrics=metrics)


INF = math.inf
# [batch_size 16, 64, 256][learning_rate 0.01, 0.1, 1.0][seed 0, 1]
STEPS = [
    [[100, 120], [40, 60], [30, INF]],  # 1.0 is fastest on one seed, never on the other
    [[INF, INF], [20, 20], [10, 12]],   # 1.0 is fastest
    [[INF, INF], [INF, INF], [INF, INF]],  # never reaches the target
]
ACCURACY = [
    [[0.60, 0.62], [0.70, 0.72], [0.80, 0.40]],
    [[0.40, 0.42], [0.60, 0.58], [0.65, 0.63]],
    [[0.30, 0.32], [0.45, 0.43], [np.nan, np.nan]],  # 1.0 diverged on both seeds
]


def test_best_learning_rate_is_fewest_mean_steps_to_target():
    result = synthetic_result(STEPS, ACCURACY)

    best = best_learning_rate(result)

    assert best.dims == ("batch_size",)
    assert list(best["batch_size"].values) == [16, 64, 256]
    # 16: 1.0 has an inf seed, so 0.1 (mean 50) beats 0.01 (mean 110); 64: 1.0 (mean 11);
    # 256: never reached, so the best final accuracy among non-diverged points (0.1).
    np.testing.assert_allclose(best.values, [0.1, 1.0, 0.1])


def test_summary_rows_and_never():
    text = summarize(synthetic_result(STEPS, ACCURACY))

    rows = {r[0]: r for r in _table_rows(text)}
    assert list(rows) == ["16", "64", "256"]
    # batch size, steps/run, lr, steps to target, examples to target, accuracy ± std, diverged
    assert rows["16"][:5] == ["16", "64", "0.1", "50", "800"]
    assert rows["16"][5:8] == ["0.710", "±", "0.014"]
    assert rows["64"][:5] == ["64", "16", "1", "11", "704"]
    assert rows["256"][:5] == ["256", "4", "0.1", "never", "never"]
    assert rows["256"][-1] == "2/6" and rows["16"][-1] == "0/6"
    assert "target test_error <= 0.5" in text


def test_ties_in_steps_are_broken_by_final_accuracy():
    steps = [[[20, 20], [20, 20], [40, 40]]] * 3
    accuracy = [[[0.5, 0.5], [0.6, 0.6], [0.9, 0.9]]] * 3

    best = best_learning_rate(synthetic_result(steps, accuracy))

    np.testing.assert_allclose(best.values, [0.1, 0.1, 0.1])


def test_without_target_best_is_highest_final_accuracy():
    result = synthetic_result(None, ACCURACY, target=False)

    np.testing.assert_allclose(best_learning_rate(result).values, [0.1, 1.0, 0.1])
    text = summarize(result)
    assert "steps to target" not in text and "never" not in text
    assert len(_table_rows(text)) == 3


def test_regression_best_is_lowest_final_test_loss():
    result = synthetic_result(None, ACCURACY, target=False)
    result.metrics = result.metrics.drop_vars("test_accuracy")  # regression records no accuracy

    # test_loss = 1 - accuracy: the lowest loss is the highest accuracy.
    np.testing.assert_allclose(best_learning_rate(result).values, [0.1, 1.0, 0.1])
    assert "final test loss" in summarize(result)


def test_batch_size_where_every_run_diverged_has_no_best_point():
    accuracy = np.array(ACCURACY)
    accuracy[2] = np.nan
    steps = np.array(STEPS)

    result = synthetic_result(steps, accuracy)

    assert np.isnan(best_learning_rate(result).values[2])
    row = _table_rows(summarize(result))[2]
    assert row[2] == "-" and row[-1] == "6/6"


def test_extra_swept_dims_are_searched_and_reported():
    grid = Grid(learning_rate=(0.01, 0.1, 1.0), momentum=(0.0, 0.9), seed=(0, 1))
    # [batch_size][learning_rate][momentum][seed]: momentum 0.9 helps only at lr 0.01.
    steps = np.full((3, 3, 2, 2), 100.0)
    steps[:, 0, 1, :] = 10.0
    steps[2, 2, 0, :] = 5.0  # at B = 256, lr 1.0 without momentum is fastest
    accuracy = np.full((3, 3, 2, 2), 0.5)

    result = synthetic_result(steps, accuracy, grid=grid)

    best = best_hyperparameters(result)
    np.testing.assert_allclose(best["learning_rate"].values, [0.01, 0.01, 1.0])
    np.testing.assert_allclose(best["momentum"].values, [0.9, 0.9, 0.0])
    text = summarize(result)
    assert "momentum" in text.splitlines()[1]
    assert _table_rows(text)[2][2:5] == ["1", "0", "5"]
