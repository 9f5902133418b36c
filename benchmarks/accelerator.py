"""Time a 1024-run sweep of the reference model on one accelerator (GPU or TPU).

The sweep: MNIST-1D (5000 samples: 4000 train, 1000 test), MLP 40-256-256-10 with ReLU,
softmax cross-entropy, plain SGD at a constant learning rate, minibatches by per-epoch
shuffling, 2^17 examples per run and 17 evaluations (every 2^13 examples, on the 4000 training
and 1000 test examples) — the reference grid of ``reference_grid.py`` — at batch sizes 16, 64,
256 and 1024, each with 16 learning rates (0.004 … 0.5, log-spaced) × 16 seeds = 256 runs:
1024 runs in one ``jaxsgd.run_sweep``.

What is measured, in one process, in this order:

1. The device and its matmul peak, measured here: a jit'd [n, n] @ [n, n] product (n = 8192 on
   an accelerator) in float32 at JAX's default precision (what the sweep's matmuls use: on
   NVIDIA GPUs since Ampere that is TF32, on TPUs bf16 passes), float32 at
   ``precision="highest"`` and bfloat16; the best of 10 timed calls after a warm-up.
2. The whole 1024-run sweep: end to end (the first call: data transfer, tracing, compiling,
   running) and steady (a second, identical call: compiled programs reused); both wall seconds,
   results on the host.
3. Per batch size, the same grid as a one-batch-size sweep (cold, then steady).
4. Scaling at B = 256: 256, 1024 and 4096 runs (seeds added), steady.

Reported: runs/s and examples/s (steady), training matmul FLOPs (3 × forward = 470,016 per
example; evaluations are timed but not counted) as TFLOP/s and as a fraction of the default-
precision matmul peak measured in step 1, the compile share of the cold call, peak device
memory, and the best final test accuracy (mean over seeds) as a check that it trained.

    python benchmarks/accelerator.py                  # on a GPU or TPU (about 2 minutes)
    python benchmarks/accelerator.py --quick          # a tiny version, any device (CPU check)
    python benchmarks/accelerator.py --json out.json  # also write the numbers

It never calls ``jaxsgd.use_cpu_devices``: on an accelerator JAX's devices are used as they
are; the sweep's runs are spread over all of them (``jax.devices()``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import time

import jax
import numpy as np

import baselines
import jaxsgd

WIDTHS = (40, 256, 256, 10)
FLOPS_PER_EXAMPLE = 3 * sum(2 * a * b for a, b in zip(WIDTHS[:-1], WIDTHS[1:]))  # 470,016
PRESETS = {
    "full": dict(batch_sizes=(16, 64, 256, 1024), learning_rates=16, seeds=16, budget=2**17,
                 matmul_size=8192, scaling_runs=(256, 1024, 4096)),
    "quick": dict(batch_sizes=(16, 256), learning_rates=4, seeds=2, budget=2**12,
                  matmul_size=1024, scaling_runs=(8, 16)),
}
SCALING_BATCH_SIZE = 256


def matmul_peaks(n: int, repeats: int = 10) -> dict[str, float]:
    """TFLOP/s of a jit'd [n, n] @ [n, n] product on the default device, per precision."""
    cases = {"float32 default": ("float32", None), "float32 highest": ("float32", "highest"),
             "bfloat16": ("bfloat16", None)}
    return {name: baselines.matmul_gflops(n, repeats=repeats, dtype=dtype,
                                          precision=precision) / 1e3
            for name, (dtype, precision) in cases.items()}


def sweep_config(batch_sizes, learning_rates: int, seeds: int, budget: int) -> jaxsgd.SweepConfig:
    """The reference model's grid: ``learning_rates`` log-spaced rates × ``seeds`` per B."""
    return jaxsgd.SweepConfig(
        data="mnist1d", data_options={"num_samples": 5000}, model="mlp",
        model_options={"width": WIDTHS[1], "depth": len(WIDTHS) - 2}, optimizer="sgd",
        batch_sizes=tuple(batch_sizes), budget=budget, eval_every=budget // 16,
        grid=jaxsgd.Grid(learning_rate=tuple(float(x) for x in np.geomspace(0.004, 0.5,
                                                                            learning_rates)),
                         seed=tuple(range(seeds))))


def time_sweep(config: jaxsgd.SweepConfig, data, cold: bool = True) -> dict:
    """Wall seconds of ``run_sweep(config)`` (cold: the first call after ``jax.clear_caches``;
    steady: the second), its runs, examples, achieved training TFLOP/s and best final test
    accuracy (mean over seeds)."""
    seconds = {}
    if cold:
        jax.clear_caches()  # compile again: no program of an earlier sweep is reused
    for phase in ("cold", "steady") if cold else ("steady",):
        start = time.perf_counter()
        result = jaxsgd.run_sweep(config, data=data, progress=False)
        seconds[phase] = time.perf_counter() - start
    runs = len(config.grid.learning_rate) * len(config.grid.seed) * len(config.batch_sizes)
    examples = runs * config.budget
    final = result.metrics.test_accuracy.isel({config.eval_dim: -1})
    best = float(final.mean("seed").max())
    steady = seconds["steady"]
    return {"runs": runs, "examples": examples, **{f"{k}_seconds": v for k, v in seconds.items()},
            "runs_per_second": runs / steady, "examples_per_second": examples / steady,
            "train_tflops": examples * FLOPS_PER_EXAMPLE / steady / 1e12,
            "best_final_test_accuracy": best,
            "diverged_runs": int(result.metrics.diverged.sum())}


def peak_memory_gib() -> float | None:
    """Peak bytes in use on the first device so far, GiB (None where JAX does not say)."""
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**30


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny version (any device)")
    parser.add_argument("--json", default=None, help="write the numbers to this file")
    parser.add_argument("--skip-per-batch-size", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args(argv)
    preset = PRESETS["quick" if args.quick else "full"]
    device = jax.devices()[0]
    report = {"device": device.device_kind, "platform": device.platform,
              "devices": jax.device_count(), "jax": jax.__version__,
              "jaxsgd": importlib.metadata.version("jaxsgd")
              if _installed("jaxsgd") else "source tree",
              "python": platform.python_version(), "preset": "quick" if args.quick else "full"}
    print(f"{report['devices']} × {report['device']} ({report['platform']}), jax {jax.__version__}",
          flush=True)
    report["matmul_tflops"] = peaks = matmul_peaks(preset["matmul_size"])
    print("matmul peak, TFLOP/s: " + ", ".join(f"{k} {v:.3g}" for k, v in peaks.items()),
          flush=True)
    peak = peaks["float32 default"]
    data = jaxsgd.load_dataset("mnist1d", num_samples=5000)
    grid = dict(learning_rates=preset["learning_rates"], seeds=preset["seeds"],
                budget=preset["budget"])

    def line(label: str, r: dict) -> str:
        cold = f"{r['cold_seconds']:8.1f}" if "cold_seconds" in r else " " * 8
        return (f"{label:>22} {r['runs']:>6} {cold} {r['steady_seconds']:8.2f} "
                f"{r['runs_per_second']:>8.1f} {r['examples_per_second']:>11.3g} "
                f"{r['train_tflops']:>7.3g} {r['train_tflops'] / peak:>7.1%} "
                f"{r['best_final_test_accuracy']:>6.3f}")

    header = (f"{'sweep':>22} {'runs':>6} {'cold s':>8} {'steady s':>8} {'runs/s':>8} "
              f"{'examples/s':>11} {'TFLOP/s':>7} {'of peak':>7} {'acc':>6}")
    print(header, flush=True)
    whole = time_sweep(sweep_config(preset["batch_sizes"], **grid), data)
    whole["compile_share"] = 1 - whole["steady_seconds"] / whole["cold_seconds"]
    report["whole_sweep"] = whole
    print(line("all batch sizes", whole), flush=True)
    if not args.skip_per_batch_size:
        report["per_batch_size"] = {}
        for b in preset["batch_sizes"]:
            r = time_sweep(sweep_config((b,), **grid), data)
            report["per_batch_size"][str(b)] = r
            print(line(f"B = {b}", r), flush=True)
    if not args.skip_scaling:
        report["scaling"] = {}
        for runs in preset["scaling_runs"]:
            seeds = runs // preset["learning_rates"]
            r = time_sweep(sweep_config((SCALING_BATCH_SIZE,), preset["learning_rates"], seeds,
                                        preset["budget"]), data)
            report["scaling"][str(runs)] = r
            print(line(f"B = {SCALING_BATCH_SIZE}, {runs} runs", r), flush=True)
    report["peak_memory_gib"] = peak_memory_gib()
    print(f"\nwhole sweep: {whole['runs']} runs in {whole['steady_seconds']:.2f} s steady, "
          f"{whole['cold_seconds']:.1f} s end to end ({whole['compile_share']:.0%} compiling and "
          f"starting); {whole['runs_per_second']:.0f} runs/s, "
          f"{whole['examples_per_second']:.3g} examples/s, {whole['train_tflops']:.3g} TFLOP/s "
          f"= {whole['train_tflops'] / peak:.1%} of the float32 default-precision matmul peak "
          f"({peak:.3g} TFLOP/s); peak device memory "
          + (f"{report['peak_memory_gib']:.2f} GiB" if report["peak_memory_gib"] is not None
             else "not reported"), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
