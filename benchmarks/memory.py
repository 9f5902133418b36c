"""Peak resident memory of a sweep as the number of runs grows (issue 3, "Memory").

Each point is a fresh process (``ru_maxrss`` of the child) running the reference model
(MNIST-1D, MLP 40-256-256-10, SGD) at B = 256 for ``--steps`` steps with the given number of
runs (seeds x 4 learning rates), evaluated at the start and the end on the full training and
test sets (4000 + 1000 examples, in slices of 1024). The baseline is the same process importing
jaxsgd and loading the data without running anything. It prints the peak per run count, the
slope (MiB per run, least squares over the measured points) and the largest run count that the
fit keeps under the limit, then checks that prediction by running it (and, if it is over, steps
back along the secant of the last two measurements and checks again).

    python benchmarks/memory.py                     # 16 .. 1024 runs, limit 8 GiB
    python benchmarks/memory.py --runs 16 64 --no-check
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import jaxsgd
jaxsgd.use_cpu_devices()
from jaxsgd import Grid, SweepConfig, run_sweep
runs, steps = int(sys.argv[1]), int(sys.argv[2])
data = jaxsgd.load_dataset("mnist1d", num_samples=5000)
config = SweepConfig(data="mnist1d", data_options={"num_samples": 5000}, model="mlp",
                     model_options={"width": 256, "depth": 2}, optimizer="sgd",
                     batch_sizes=(256,), budget=steps, budget_unit="steps", eval_every=steps,
                     grid=Grid(learning_rate=(0.01, 0.03, 0.1, 0.3),
                               seed=tuple(range(max(1, runs // 4)))))
start = time.perf_counter()
if runs:
    run_sweep(config, data=data, progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
print(json.dumps({"runs": runs, "peak_mib": peak, "seconds": time.perf_counter() - start}))
"""


def measure(runs: int, steps: int) -> dict:
    """Peak RSS (MiB) of a fresh process running ``runs`` runs (0: imports and data only)."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(runs), str(steps)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    parser.add_argument("--limit-gib", type=float, default=8.0)
    parser.add_argument("--no-check", action="store_true",
                        help="do not run the predicted largest sweep")
    args = parser.parse_args()

    base = measure(0, args.steps)
    print(f"baseline (imports + data, no sweep): {base['peak_mib']:.0f} MiB")
    print(f"{'runs':>6} {'peak MiB':>9} {'above base':>11} {'MiB/run':>8} {'seconds':>8}")
    points = []
    for runs in args.runs:
        m = measure(runs, args.steps)
        above = m["peak_mib"] - base["peak_mib"]
        points.append((runs, m["peak_mib"]))
        print(f"{runs:>6} {m['peak_mib']:>9.0f} {above:>11.0f} {above / runs:>8.2f} "
              f"{m['seconds']:>8.1f}", flush=True)
    n = len(points)
    mean_r = sum(r for r, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    slope = (sum((r - mean_r) * (m - mean_m) for r, m in points)
             / sum((r - mean_r) ** 2 for r, _ in points))
    intercept = mean_m - slope * mean_r
    limit = args.limit_gib * 1024
    largest = int((limit - intercept) / slope) // 4 * 4
    print(f"fit: peak = {intercept:.0f} MiB + {slope:.2f} MiB x runs; "
          f"largest sweep under {args.limit_gib:g} GiB: {largest} runs (predicted)")
    for _ in range(0 if args.no_check else 3):  # check, and step along the secant if over
        m = measure(largest, args.steps)
        verdict = "under" if m["peak_mib"] < limit else "OVER"
        print(f"check: {largest} runs peaked at {m['peak_mib']:.0f} MiB ({verdict} the limit)",
              flush=True)
        if verdict == "under":
            break
        previous = max((p for p in points if p[0] < largest), key=lambda p: p[0])
        points.append((largest, m["peak_mib"]))
        local = (m["peak_mib"] - previous[1]) / (largest - previous[0])
        largest = int(previous[0] + 0.99 * (limit - previous[1]) / local) // 4 * 4
    print(f"this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
