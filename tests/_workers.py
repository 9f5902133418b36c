"""Subprocess entry points for the tests of sweeps at scale (not collected by pytest).

  python tests/_workers.py sweep OUT CHUNK            run SCALE_CONFIG into OUT, chunks of CHUNK
  python tests/_workers.py multihost PORT RANK N OUT  one process of an N-process sweep
  python tests/_workers.py devices OUT                run DEVICES_CONFIG into OUT
"""

import sys

import jaxsgd

jaxsgd.use_cpu_devices()  # first, before JAX starts (the tests' JAX_NUM_CPU_DEVICES is kept)

from jaxsgd import Grid, SweepConfig, run_sweep  # noqa: E402
from jaxsgd.data import mnist1d  # noqa: E402

# Slow enough that a kill lands in the middle of the group (~20 chunks of 30 steps).
SCALE_CONFIG = SweepConfig(
    data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
    model_options={"width": 256, "depth": 2}, batch_sizes=(64,), budget=600,
    budget_unit="steps", eval_every=100, snapshot_points=(45, 300, 555),
    grid=Grid(learning_rate=(0.05, 0.1, 0.2), seed=(0, 1)))

# Sweeps compared between one process and several: 20 steps (parameters), and a quick full run
# (accuracy). Runs: 3 learning rates x 2 seeds = 6, not a multiple of the device count.
PARAMS_CONFIG = SweepConfig(
    data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
    model_options={"width": 32, "depth": 2}, batch_sizes=(16, 64), budget=20,
    budget_unit="steps", eval_every=10, grid=Grid(learning_rate=(0.05, 0.1, 0.2), seed=(0, 1)))
QUICK_CONFIG = PARAMS_CONFIG.replace(budget=2**13, budget_unit="examples", eval_every=2**12,
                                     batch_sizes=(16, 64))

# Compared between CPU device counts (README, "Reproducibility"): a batch of 256, where the
# first layer's weight gradient (40 x 256, summed over the batch) is split over threads.
DEVICES_CONFIG = SweepConfig(
    data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
    model_options={"width": 256, "depth": 2}, batch_sizes=(256,), budget=60,
    budget_unit="steps", eval_every=20, grid=Grid(learning_rate=(0.1, 0.3), seed=(0, 1)))


def main(argv):
    mode = argv[0]
    if mode == "sweep":
        out, chunk = argv[1], int(argv[2])
        run_sweep(SCALE_CONFIG, out, data=mnist1d(num_samples=1000), chunk_steps=chunk,
                  progress=False)
    elif mode == "multihost":
        port, rank, count, out = int(argv[1]), int(argv[2]), int(argv[3]), argv[4]
        import jax

        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                                   num_processes=count, process_id=rank)
        assert jax.process_count() == count and jax.device_count() > jax.local_device_count()
        data = mnist1d(num_samples=1000)
        run_sweep(PARAMS_CONFIG, f"{out}/params", data=data, progress=False)
        run_sweep(QUICK_CONFIG, f"{out}/quick", data=data, progress=False)
        jax.distributed.shutdown()
    elif mode == "devices":
        run_sweep(DEVICES_CONFIG, argv[1], data=mnist1d(num_samples=1000), progress=False)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
