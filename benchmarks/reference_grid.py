"""Time jaxsgd on the reference grid against baselines measured in the same run.

Reference grid, per batch size B in {16, 64, 256, 1024}: MNIST-1D (5000 samples: 4000 train,
1000 test), MLP 40-256-256-10 with ReLU, softmax cross-entropy, plain SGD at a constant
learning rate, 4 seeds x 4 learning rates (0.01, 0.03, 0.1, 0.3) = 16 runs, 2^17 examples per
run (2^17 / B steps) drawn by per-epoch shuffling without replacement, and 17 evaluations per
run (every 2^13 examples, start and end included) of loss and accuracy on the 4000 training
and 1000 test examples.

What is measured, in this order:

1. The float32 matmul peak of this machine with jax (``baselines.matmul_peak_gflops``).
2. Per batch size, jaxsgd through its public API (``jaxsgd.run_sweep`` of a one-batch-size
   ``SweepConfig``, in memory): end to end = the first call's wall time after
   ``jax.clear_caches()`` (data loading, tracing, compiling, running); steady = a second,
   identical call (the compiled programs are reused); compile = end to end - steady. JAX's
   persistent compilation cache is off, so every first call compiles cold; each batch size is
   timed as a sweep of its own (a sweep over all four would share the initial-parameter program).
3. Per batch size, the baselines of ``baselines.py`` on the same grid and evaluations: plain
   PyTorch, runs one after another (torch's default threads); PyTorch split over 2 spawned
   single-threaded processes (process start included); a per-step jitted JAX loop (compile
   reported apart); and the stronger PyTorch variants of ``torch_variants.py`` that train
   all runs at once — ``torch.func`` (vmap of grad) with and without ``torch.compile``,
   hand-batched ``bmm``, and a per-run loop of oneDNN matmuls with a hand-written backward —
   each in 1 process × 2 threads and in 2 processes × 1 thread. Every PyTorch variant's
   training-loss curves are checked against the sequential loop's (same initialisation and
   minibatches; they agree to float rounding). Inductor's caches are off
   (``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1``), as JAX's persistent cache is, so compiled
   variants compile cold too.
4. How jaxsgd's steady and compile time grow with the number of runs (16, 64, 256 at B=256, by
   adding seeds) and with the number of steps (budget x1, x2, x4 at B=256, 16 runs).

Reported per batch size and in total: examples/s, achieved GFLOP/s (model matmul FLOPs of
training only, 3 x forward = 470,016 per example; evaluations are timed but not counted) and
its fraction of the matmul peak, compile time, microseconds per run-step (steady seconds /
(runs x steps)), best final test accuracy (mean over seeds), and the speed-up of jaxsgd over
each baseline (baseline seconds / jaxsgd seconds), steady and end to end, against the best
PyTorch variant per batch size (the fastest steady and the fastest end to end, each named).

    python benchmarks/reference_grid.py                     # the reference grid (minutes)
    python benchmarks/reference_grid.py --quick             # 2^12 examples/run, smaller scaling
    python benchmarks/reference_grid.py --batch-sizes 16 256 --skip-torch --json out.json

``--quick`` (development) uses a budget of 2^12 examples per run (17 evaluations still, every
2^8 examples) and scales the number of runs over 4, 8, 16 instead of 16, 64, 256. Timings are
wall-clock seconds; on a shared machine they are only as good as its idleness.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import baselines
import torch_variants

# Spawned PyTorch workers re-import this script as __mp_main__; they need neither jax nor
# jaxsgd (3 s of imports each), so they skip them.
if __name__ != "__mp_main__":
    import jax

    import jaxsgd

    jaxsgd.use_cpu_devices()  # before JAX starts: 4 CPU devices per core, compilation cache

LEARNING_RATES = (0.01, 0.03, 0.1, 0.3)
NUM_SEEDS = 4
BATCH_SIZES = (16, 64, 256, 1024)
WIDTHS = (40, 256, 256, 10)
BUDGET, QUICK_BUDGET = 2**17, 2**12  # training examples per run
EVAL_INTERVALS = 16  # evaluation every budget / 16 examples: 17 evaluations with start and end
SCALING_BATCH_SIZE = 256
SCALING_RUNS, QUICK_SCALING_RUNS = (16, 64, 256), (4, 8, 16)
SCALING_BUDGET = 2**13  # examples per run at the first scaling point (x1), full run
SCALING_BUDGET_FACTORS = (1, 2, 4)
BASELINES = {  # name -> function(data, batch_size, learning_rates, seeds, steps, eval_every)
    "torch sequential": baselines.torch_sequential,
    "torch 2 processes": baselines.torch_two_processes,
    "jax per-step loop": baselines.jax_per_step,
    **torch_variants.variant_baselines(),
}
TORCH_BASELINES = tuple(n for n in BASELINES if n != "jax per-step loop")


def sweep_config(batch_size: int, budget: int, num_runs: int = 16) -> "jaxsgd.SweepConfig":
    """The reference grid at one batch size; ``num_runs`` (a multiple of 4) sets the seeds."""
    return jaxsgd.SweepConfig(
        data="mnist1d", data_options={"num_samples": 5000}, model="mlp",
        model_options={"width": WIDTHS[1], "depth": len(WIDTHS) - 2}, optimizer="sgd",
        batch_sizes=(batch_size,), budget=budget, budget_unit="examples",
        eval_every=budget // EVAL_INTERVALS,
        grid=jaxsgd.Grid(learning_rate=LEARNING_RATES,
                         seed=tuple(range(num_runs // len(LEARNING_RATES)))))


def time_call(fn, *args, repeats: int = 5) -> float:
    """Best wall seconds of ``fn(*args)`` (compiled and warmed up first)."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def probe_sweep_costs(batch_size: int, budget: int, repeats: int, data,
                      variants: dict[str, tuple]) -> dict[str, float]:
    """Best steady seconds of the reference sweep at one batch size, per probe variant
    (name -> probes): every variant compiled first, then ``repeats`` interleaved timed calls."""
    config = sweep_config(batch_size, budget)
    options = run_sweep_options()
    for probes in variants.values():
        jaxsgd.run_sweep(config, data=data, probes=probes, **options)
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(repeats):
        for name, probes in variants.items():
            start = time.perf_counter()
            jaxsgd.run_sweep(config, data=data, probes=probes, **options)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def benchmark_arguments(doc: str, budget: int, repeats: int,
                        results: str | None = None) -> argparse.ArgumentParser:
    """The options the component benchmarks share: --budget (examples per run), --repeats,
    --batch-sizes and, given ``results`` (a file name), --out (default
    ``benchmarks/results/<results>``); add script-specific ones to the returned parser."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=budget, help="examples per run")
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    if results is not None:
        parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / results)
    return parser


class Transcript:
    """Lines printed as they come and kept, written to a results file at the end."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def write(self, path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.lines) + "\n")
        print(f"\nwritten to {path}")


def run_sweep_options() -> dict:
    """Keyword arguments for ``jaxsgd.run_sweep``: no progress bar, where it has one."""
    has_progress = "progress" in inspect.signature(jaxsgd.run_sweep).parameters
    return {"progress": False} if has_progress else {}


def time_jaxsgd(config: "jaxsgd.SweepConfig") -> dict:
    """End-to-end (cold) and steady seconds of ``run_sweep(config)``, one batch size.

    Returns the keys of a baseline result (see ``baselines``) plus ``compile_seconds``.
    """
    options = run_sweep_options()
    jax.clear_caches()
    start = time.perf_counter()
    jaxsgd.run_sweep(config, **options)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    result = jaxsgd.run_sweep(config, **options)
    steady = time.perf_counter() - start
    (batch_size,) = config.batch_sizes
    final = result.metrics.test_accuracy.isel(examples=-1, batch_size=0).mean("seed")
    by_lr = {float(lr): float(final.sel(learning_rate=lr)) for lr in final.learning_rate}
    steps = config.num_steps(batch_size)
    return {"seconds": seconds, "steady_seconds": steady, "compile_seconds": seconds - steady,
            "examples": config.grid.num_runs * steps * batch_size,
            "runs": config.grid.num_runs, "steps": steps,
            "final_test_accuracy": by_lr,
            "best_final_test_accuracy": baselines.check_trained(by_lr, WIDTHS[-1])}


def time_whole_grid(batch_sizes, budget: int) -> float:
    """Wall seconds of one cold ``run_sweep`` over every batch size of the grid."""
    config = sweep_config(batch_sizes[0], budget).replace(batch_sizes=tuple(batch_sizes))
    jax.clear_caches()
    start = time.perf_counter()
    jaxsgd.run_sweep(config, **run_sweep_options())
    return time.perf_counter() - start


def eval_every_steps(batch_size: int, budget: int) -> int:
    """The evaluation interval in steps (>= 1; jaxsgd's distinct evaluated steps coincide)."""
    return max(1, budget // EVAL_INTERVALS // batch_size)


def time_baselines(data, batch_size: int, budget: int, names: list[str]) -> dict[str, dict]:
    """{name: baseline result} of the named baselines at one batch size."""
    seeds = tuple(range(NUM_SEEDS))
    steps, every = budget // batch_size, eval_every_steps(batch_size, budget)
    results = {}
    for name in names:
        jax.clear_caches()
        results[name] = BASELINES[name](data, batch_size, LEARNING_RATES, seeds, steps, every)
    return results


def throughput(result: dict, peak_gflops: float) -> dict:
    """examples/s, GFLOP/s (training matmuls), fraction of peak, µs per run-step; steady."""
    steady = result["steady_seconds"]
    gflops = result["examples"] * baselines.mlp_train_flops_per_example(WIDTHS) / steady / 1e9
    return {"examples_per_second": result["examples"] / steady, "gflops": gflops,
            "peak_fraction": gflops / peak_gflops,
            "us_per_run_step": 1e6 * steady / (result["runs"] * result["steps"])}


def speedups(jaxsgd_result: dict, baseline: dict) -> dict:
    """Baseline seconds / jaxsgd seconds, steady and end to end (> 1: jaxsgd is faster)."""
    return {"steady": baseline["steady_seconds"] / jaxsgd_result["steady_seconds"],
            "end_to_end": baseline["seconds"] / jaxsgd_result["seconds"]}


def best_torch(results: dict[str, dict], key: str = "seconds") -> str | None:
    """The PyTorch baseline with the fewest ``key`` seconds (end to end by default, or
    "steady_seconds"), if any ran."""
    torch_names = [n for n in TORCH_BASELINES if n in results]
    return min(torch_names, key=lambda n: results[n][key]) if torch_names else None


def best_torch_total(rows: dict) -> dict:
    """The best PyTorch variant *per batch size*, summed over batch sizes: steady seconds of
    the fastest steady variant at each B, end-to-end seconds of the fastest end to end."""
    out = {"steady_seconds": 0.0, "seconds": 0.0}
    for results in rows.values():
        out["steady_seconds"] += results[best_torch(results, "steady_seconds")]["steady_seconds"]
        out["seconds"] += results[best_torch(results)]["seconds"]
    return out


def total(results: list[dict]) -> dict:
    """Seconds, examples and steps summed over batch sizes; accuracy: the mean of the bests."""
    keys = ("seconds", "steady_seconds", "compile_seconds", "examples")
    out = {k: sum(r.get(k, 0.0) for r in results) for k in keys}
    out["runs"] = results[0]["runs"]
    out["steps"] = sum(r["steps"] for r in results)
    accuracies = [r["best_final_test_accuracy"] for r in results]
    out["best_final_test_accuracy"] = float(np.mean(accuracies))
    return out


def eval_flops_share(batch_size: int, budget: int, data) -> float:
    """Evaluation matmul FLOPs (forward on the train and test sets) over all model FLOPs."""
    forward = baselines.mlp_train_flops_per_example(WIDTHS) / 3
    evals = len(baselines.evaluation_steps(budget // batch_size,
                                           eval_every_steps(batch_size, budget)))
    eval_flops = evals * (len(data.x_train) + len(data.x_test)) * forward
    train_flops = (budget // batch_size) * batch_size * 3 * forward
    return eval_flops / (eval_flops + train_flops)


def print_jaxsgd_table(rows: dict, totals: dict, peak: float) -> None:
    """jaxsgd's throughput per batch size and in total."""
    print(f"\njaxsgd, {totals['jaxsgd']['runs']} runs per batch size "
          f"(steady = second call; compile = end to end - steady; peak {peak:.0f} GFLOP/s)")
    print(f"{'B':>6} {'steps':>6} {'end-to-end s':>12} {'compile s':>9} {'steady s':>8} "
          f"{'examples/s':>10} {'GFLOP/s':>7} {'% peak':>6} {'us/run-step':>11} {'best acc':>8}")
    for label, result in [*((str(b), r["jaxsgd"]) for b, r in rows.items()),
                          ("total", totals["jaxsgd"])]:
        t = throughput(result, peak)
        print(f"{label:>6} {result['steps']:>6} {result['seconds']:>12.2f} "
              f"{result['compile_seconds']:>9.2f} {result['steady_seconds']:>8.2f} "
              f"{t['examples_per_second']:>10.0f} {t['gflops']:>7.1f} "
              f"{100 * t['peak_fraction']:>6.1f} {t['us_per_run_step']:>11.1f} "
              f"{result['best_final_test_accuracy']:>8.3f}")


def print_baseline_table(rows: dict, totals: dict) -> None:
    """Every method's seconds and jaxsgd's speed-up over each baseline."""
    print("\nall methods (one-off = compile or process start; speed-up = baseline seconds / "
          "jaxsgd seconds)")
    print(f"{'B':>6} {'method':<18} {'end-to-end s':>12} {'one-off s':>9} {'steady s':>8} "
          f"{'best acc':>8} {'speed-up steady':>15} {'end-to-end':>10}")
    for label, results in [*((str(b), r) for b, r in rows.items()), ("total", totals)]:
        for name, result in results.items():
            ratio = "" if name == "jaxsgd" else (
                "{steady:>14.2f}x {end_to_end:>9.2f}x".format(**speedups(results["jaxsgd"],
                                                                        result)))
            print(f"{label:>6} {name:<18} {result['seconds']:>12.2f} "
                  f"{result['seconds'] - result['steady_seconds']:>9.2f} "
                  f"{result['steady_seconds']:>8.2f} {result['best_final_test_accuracy']:>8.3f} "
                  f"{ratio}")


def print_best_torch(rows: dict, totals: dict) -> None:
    """jaxsgd's speed-up over the best PyTorch variant at each batch size: the fastest steady
    and the fastest end to end (each named); the total sums the best per batch size against
    jaxsgd's whole grid (end to end: one cold sweep over every batch size)."""
    print("\njaxsgd versus the best PyTorch variant at each batch size")
    print(f"{'B':>6} {'best steady':<18} {'speed-up':>8} {'best end to end':<18} {'speed-up':>8}")
    for b, results in rows.items():
        steady, cold = best_torch(results, "steady_seconds"), best_torch(results)
        print(f"{b:>6} {steady:<18} "
              f"{results[steady]['steady_seconds'] / results['jaxsgd']['steady_seconds']:>7.2f}x"
              f" {cold:<18} {results[cold]['seconds'] / results['jaxsgd']['seconds']:>7.2f}x")
    best = best_torch_total(rows)
    print(f"{'total':>6} {'(best per B)':<18} "
          f"{best['steady_seconds'] / totals['jaxsgd']['steady_seconds']:>7.2f}x "
          f"{'(best per B)':<18} {best['seconds'] / totals['jaxsgd']['seconds']:>7.2f}x")


def check_curves(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """{PyTorch variant: {"first": largest relative difference of its training-loss curves
    from the sequential loop's at the start and the first evaluation, "all": over every
    evaluation}} at one batch size (same initialisation and minibatches: the first is float
    rounding; training amplifies it into the second)."""
    reference = results.get("torch sequential")
    if reference is None:
        return {}
    return {name: {"first": torch_variants.curve_deviation(r, reference, evaluations=2),
                   "all": torch_variants.curve_deviation(r, reference)}
            for name, r in results.items()
            if "train_loss_curves" in r and name != "torch sequential"}


def measure_scaling(budget: int, run_counts: tuple[int, ...]) -> dict[str, list[dict]]:
    """jaxsgd at B=SCALING_BATCH_SIZE: {"runs": [per run count], "budget": [per factor]}.

    Run counts at ``budget``; budget factors at the grid's 16 runs. A shared point is timed once.
    """
    timed: dict[tuple[int, int], dict] = {}

    def point(num_runs: int, factor: int) -> dict:
        if (num_runs, factor) not in timed:
            config = sweep_config(SCALING_BATCH_SIZE, budget * factor, num_runs)
            timed[num_runs, factor] = dict(time_jaxsgd(config), budget_factor=factor)
        return timed[num_runs, factor]

    return {"runs": [point(r, 1) for r in run_counts],
            "budget": [point(len(LEARNING_RATES) * NUM_SEEDS, f)
                       for f in SCALING_BUDGET_FACTORS]}


def print_scaling(scaling: dict[str, list[dict]]) -> None:
    """Steady and compile seconds against runs and budget, with growth over the first row."""
    for axis, title in (("runs", "number of runs"), ("budget", "steps per run (budget)")):
        points = scaling[axis]
        first = points[0]
        print(f"\njaxsgd at B={SCALING_BATCH_SIZE} versus the {title}")
        print(f"{'runs':>6} {'budget':>6} {'steps':>6} {'steady s':>8} {'compile s':>9} "
              f"{'end-to-end s':>12} {'us/run-step':>11} {'steady x':>8} {'compile x':>9}")
        for p in points:
            us = 1e6 * p["steady_seconds"] / (p["runs"] * p["steps"])
            print(f"{p['runs']:>6} {'x' + str(p['budget_factor']):>6} {p['steps']:>6} "
                  f"{p['steady_seconds']:>8.2f} {p['compile_seconds']:>9.2f} "
                  f"{p['seconds']:>12.2f} {us:>11.1f} "
                  f"{p['steady_seconds'] / first['steady_seconds']:>8.2f} "
                  f"{p['compile_seconds'] / first['compile_seconds']:>9.2f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_BUDGET} examples per run, scaling over "
                             f"{QUICK_SCALING_RUNS} runs (development)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES),
                        metavar="B", help="batch sizes of the grid (default: %(default)s)")
    parser.add_argument("--skip-torch", action="store_true", help="no PyTorch baselines")
    parser.add_argument("--skip-jax-loop", action="store_true", help="no per-step JAX baseline")
    parser.add_argument("--only-torch", nargs="+", metavar="NAME", default=None,
                        help="only these PyTorch baselines (names as in the tables)")
    parser.add_argument("--json", metavar="PATH", help="also write every number as JSON here")
    return parser.parse_args()


def torch_version() -> str | None:
    """The installed torch version, without importing it (None if not installed)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(peak: dict) -> dict:
    """Versions, devices and the matmul peak, for the header and the JSON."""
    return {"python": platform.python_version(), "jax": jax.__version__,
            "torch": torch_version(),
            "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "matmul_peak": peak,
            "train_flops_per_example": baselines.mlp_train_flops_per_example(WIDTHS)}


def main() -> None:
    args = parse_args()
    jax.config.update("jax_enable_compilation_cache", False)
    os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"  # compiled variants compile cold
    budget = QUICK_BUDGET if args.quick else BUDGET
    names = [n for n in BASELINES if not (args.skip_torch and n in TORCH_BASELINES)
             and not (args.skip_jax_loop and n == "jax per-step loop")
             and not (args.only_torch and n in TORCH_BASELINES and n not in args.only_torch)]

    peak = baselines.matmul_peak_gflops()
    env = environment(peak)
    print(f"jax {env['jax']} ({len(env['devices'])} CPU devices), torch {env['torch']}, "
          f"{env['cpu_count']} cores; "
          f"float32 matmul peak {peak['gflops']:.1f} GFLOP/s ("
          + ", ".join(f"{case}: {g:.1f}" for case, g in peak["by_case"].items()) + ")")
    print(f"grid: {len(LEARNING_RATES) * NUM_SEEDS} runs x {budget} examples per batch size, "
          f"{EVAL_INTERVALS + 1} evaluations per run, batch sizes {args.batch_sizes}")

    data = jaxsgd.load_dataset("mnist1d", num_samples=5000)
    whole = time_whole_grid(args.batch_sizes, budget)
    print(f"  whole grid as one cold sweep (all batch sizes, compile included): {whole:.1f} s",
          flush=True)
    rows = {}
    for b in args.batch_sizes:
        rows[b] = {"jaxsgd": time_jaxsgd(sweep_config(b, budget)),
                   **time_baselines(data, b, budget, names)}
        print(f"  B={b}: " + ", ".join(f"{n} {r['seconds']:.1f} s" for n, r in rows[b].items()),
              flush=True)
        deviation = check_curves(rows[b])
        if deviation:
            first = max(d["first"] for d in deviation.values())
            last = max(d["all"] for d in deviation.values())
            print(f"  B={b}: PyTorch variants' training-loss curves against the sequential "
                  f"loop's, largest relative difference: {first:.1e} at the first evaluation, "
                  f"{last:.1e} over the whole run (rounding, amplified by training)", flush=True)
        for name, d in deviation.items():
            rows[b][name]["curve_deviation"] = d
    totals = {n: total([rows[b][n] for b in args.batch_sizes]) for n in rows[args.batch_sizes[0]]}
    # End to end, jaxsgd is one sweep over every batch size (initial parameters made once).
    totals["jaxsgd"]["seconds"] = whole
    totals["jaxsgd"]["compile_seconds"] = whole - totals["jaxsgd"]["steady_seconds"]

    print_jaxsgd_table(rows, totals, peak["gflops"])
    shares = ", ".join(f"B={b} {eval_flops_share(b, budget, data):.0%}" for b in args.batch_sizes)
    print(f"evaluation share of all model FLOPs (timed, not in GFLOP/s): {shares}")
    print_baseline_table(rows, totals)
    if best_torch(totals):
        print_best_torch(rows, totals)

    scaling = measure_scaling(min(budget, SCALING_BUDGET),
                              QUICK_SCALING_RUNS if args.quick else SCALING_RUNS)
    print_scaling(scaling)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "budget": budget, "grid": rows, "total": totals,
                       "scaling": scaling}, f, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
