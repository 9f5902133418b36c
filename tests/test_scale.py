"""Sweeps at scale (issue 3): sharding over devices and processes, chunks, progress,
checkpoint and resume, sliced evaluation, and the CPU device count."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsgd import CheckpointError, load_sweep, run_sweep
from jaxsgd.data import mnist1d
from jaxsgd.engine.evaluation import EvalData, evaluate
from jaxsgd.losses import task_for
from jaxsgd.models import make_model

from _workers import PARAMS_CONFIG, QUICK_CONFIG, SCALE_CONFIG
from conftest import NUM_DEVICES

WORKERS = str(Path(__file__).with_name("_workers.py"))


def rel_diff(a, b):
    return float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b)))


def assert_params_close(a, b, tol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.shape == y.shape
        for run in range(x.shape[0]):  # per run and per leaf
            assert rel_diff(x[run], y[run]) < tol


def final_accuracy(result):
    m = result.metrics
    return m.test_accuracy.isel({"examples" if "examples" in m.dims else "step": -1}).values


@pytest.fixture(scope="module")
def data():
    return mnist1d(num_samples=1000)


# ----------------------------------------------------------------------------- sharding


def test_suite_runs_on_several_devices():
    assert jax.device_count() == NUM_DEVICES >= 2
    assert PARAMS_CONFIG.grid.num_runs % NUM_DEVICES != 0  # padding is exercised


def test_sharded_over_devices_equals_one_device(data):
    many = run_sweep(PARAMS_CONFIG, data=data, progress=False)
    one = run_sweep(PARAMS_CONFIG, data=data, progress=False, devices=jax.devices()[:1])
    for b in PARAMS_CONFIG.batch_sizes:
        assert_params_close(many.params[b], one.params[b])
        # No padding run in the results: exactly the grid's runs.
        assert jax.tree.leaves(many.params[b])[0].shape[0] == PARAMS_CONFIG.grid.num_runs
    assert many.metrics.sizes["learning_rate"] * many.metrics.sizes["seed"] == 6
    assert sorted(np.unique(many.metrics.run.values)) == list(range(6))

    many = run_sweep(QUICK_CONFIG, data=data, progress=False)
    one = run_sweep(QUICK_CONFIG, data=data, progress=False, devices=jax.devices()[:1])
    assert np.abs(final_accuracy(many) - final_accuracy(one)).max() <= 0.01
    assert final_accuracy(many).max() > 0.3  # it trained


def test_chunked_equals_unchunked(data):
    config = PARAMS_CONFIG.replace(batch_sizes=(16,))
    whole = run_sweep(config, data=data, progress=False, chunk_steps=20)
    for chunk in (1, 7):  # 7: chunks of 7, 7 and 6 steps
        chunked = run_sweep(config, data=data, progress=False, chunk_steps=chunk)
        assert_params_close(chunked.params[16], whole.params[16])
        np.testing.assert_allclose(chunked.metrics.test_loss, whole.metrics.test_loss,
                                   rtol=1e-5)


def test_progress_bar_shows_group_runs_and_speed(data, capsys):
    run_sweep(PARAMS_CONFIG, data=data, chunk_steps=5)
    err = capsys.readouterr().err
    assert "B=64 x 6 runs" in err and "examples/s" in err and "40/40" in err
    run_sweep(PARAMS_CONFIG, data=data, progress=False)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- multi-process


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(data, tmp_path):
    port = _free_port()
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="2")
    procs = [subprocess.Popen([sys.executable, WORKERS, "multihost", str(port), str(rank), "2",
                               str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for rank in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]

    together = load_sweep(tmp_path / "params")
    alone = run_sweep(PARAMS_CONFIG, data=data, progress=False)
    for b in PARAMS_CONFIG.batch_sizes:
        assert_params_close(together.params[b], alone.params[b])
    together = load_sweep(tmp_path / "quick")
    alone = run_sweep(QUICK_CONFIG, data=data, progress=False)
    assert np.abs(final_accuracy(together) - final_accuracy(alone)).max() <= 0.01


# ----------------------------------------------------------------------------- checkpoints


CHUNK = 30


def test_killed_sweep_resumes_bitwise(data, tmp_path):
    out = tmp_path / "killed"
    checkpoint = out / "checkpoint_bs64.npz"
    log = tmp_path / "worker.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, WORKERS, "sweep", str(out), str(CHUNK)],
                                stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        first_snapshot = out / "snapshot_bs64_step000000045.npz"
        while not (checkpoint.exists() and first_snapshot.exists()):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with np.load(checkpoint, allow_pickle=False) as npz:
        done = json.loads(str(npz["meta"]))["next_step"]
    assert 0 < done < SCALE_CONFIG.budget and not (out / "group_bs64.nc").exists()
    assert first_snapshot.exists()  # written before the kill, kept through the resume

    resumed = run_sweep(SCALE_CONFIG, out, data=data, chunk_steps=CHUNK, progress=False)
    assert not checkpoint.exists()  # removed once the group's results are written
    straight = run_sweep(SCALE_CONFIG, data=data, chunk_steps=CHUNK, progress=False)
    for x, y in zip(jax.tree.leaves(resumed.params[64]), jax.tree.leaves(straight.params[64])):
        np.testing.assert_array_equal(x, y)
    for name in ("train_loss", "test_accuracy", "batch_loss"):
        np.testing.assert_array_equal(resumed.metrics[name], straight.metrics[name])
    np.testing.assert_array_equal(load_sweep(out).metrics.test_loss, straight.metrics.test_loss)
    # The snapshots written before the kill and after the resume are the uninterrupted ones.
    assert resumed.snapshot_steps(64) == straight.snapshot_steps(64) == [45, 300, 555]
    for t in (45, 300, 555):
        for x, y in zip(jax.tree.leaves(resumed.run_params(64, step=t, learning_rate=0.1,
                                                           seed=1)),
                        jax.tree.leaves(straight.run_params(64, step=t, learning_rate=0.1,
                                                            seed=1))):
            np.testing.assert_array_equal(x, y)


def _interrupted_folder(data, tmp_path, monkeypatch):
    """A results folder whose group stopped (KeyboardInterrupt) after its first checkpoint."""
    import jaxsgd.engine.sweep as sweep

    real = sweep.save_checkpoint

    def save_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "save_checkpoint", save_then_stop)
    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(PARAMS_CONFIG, out, data=data, chunk_steps=5, progress=False)
    monkeypatch.setattr(sweep, "save_checkpoint", real)
    assert (out / "checkpoint_bs16.npz").is_file()
    return out


def test_resumed_in_process_equals_uninterrupted(data, tmp_path, monkeypatch):
    out = _interrupted_folder(data, tmp_path, monkeypatch)
    resumed = run_sweep(PARAMS_CONFIG, out, data=data, chunk_steps=5, progress=False)
    straight = run_sweep(PARAMS_CONFIG, data=data, chunk_steps=5, progress=False)
    for b in PARAMS_CONFIG.batch_sizes:
        for x, y in zip(jax.tree.leaves(resumed.params[b]), jax.tree.leaves(straight.params[b])):
            np.testing.assert_array_equal(x, y)


def test_corrupted_checkpoint_is_a_clear_error(data, tmp_path, monkeypatch):
    out = _interrupted_folder(data, tmp_path, monkeypatch)
    path = out / "checkpoint_bs16.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint_bs16.npz.*unreadable.*delete it"):
        run_sweep(PARAMS_CONFIG, out, data=data, chunk_steps=5, progress=False)


def test_mismatched_checkpoint_is_a_clear_error(data, tmp_path, monkeypatch):
    out = _interrupted_folder(data, tmp_path, monkeypatch)
    # A checkpoint of another group put in this group's place.
    (out / "checkpoint_bs64.npz").write_bytes((out / "checkpoint_bs16.npz").read_bytes())
    (out / "checkpoint_bs16.npz").unlink()
    with pytest.raises(CheckpointError, match="batch_size is 64 here but 16 in the checkpoint"):
        run_sweep(PARAMS_CONFIG, out, data=data, chunk_steps=5, progress=False)


def test_checkpoint_loading_never_unpickles(data, tmp_path, monkeypatch):
    import pickle

    out = _interrupted_folder(data, tmp_path, monkeypatch)

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    run_sweep(PARAMS_CONFIG, out, data=data, chunk_steps=5, progress=False)


# ----------------------------------------------------------------------------- memory, devices


def test_sliced_evaluation_equals_whole(data):
    model = make_model("mlp", (40,), 10, width=32, depth=2)
    params = model.init(jax.random.key(0))
    task = task_for(10)
    sets = EvalData(jnp.asarray(data.x_train), jnp.asarray(data.y_train),
                    jnp.asarray(data.x_test), jnp.asarray(data.y_test))
    run = jax.jit(partial(evaluate, model.apply, task.metrics), static_argnums=2)
    whole = run(params, sets, None)
    for size in (64, 300, 799):  # 800 train / 200 test examples: remainders and none
        sliced = run(params, sets, size)
        for k in whole:
            np.testing.assert_allclose(sliced[k], whole[k], rtol=2e-6, err_msg=k)


