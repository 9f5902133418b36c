"""Where a cold sweep's seconds go: tracing, lowering, XLA compilation, and the rest.

For the reference grid's configuration (``reference_grid.sweep_config``: 16 runs, MLP
40-256-256-10, SGD, 2^17 examples and 17 evaluations per run) at each batch size, as a
one-group sweep: a cold call (``jax.clear_caches()``, JAX's persistent cache off) and a steady
one. JAX reports, through ``jax.monitoring``, the seconds of each phase of every program it
builds — tracing to a jaxpr, lowering to StableHLO, XLA's compilation — and the name of the
function; this script sums them per phase and per program. The rest of the cold call
(wall − those phases) is running the programs, moving data and Python, and the steady call
measures the running part alone.

    python benchmarks/cold_start.py                     # B = 16, 64, 256, 1024
    python benchmarks/cold_start.py --batch-sizes 256   # one

Writes the tables to ``benchmarks/results/cold_start.txt`` (``--out``).
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import jax

import jaxsgd
from reference_grid import BATCH_SIZES, BUDGET, Transcript, run_sweep_options, sweep_config

jaxsgd.use_cpu_devices()  # before JAX starts: 4 CPU devices per core

PHASES = {"/jax/core/compile/jaxpr_trace_duration": "trace",
          "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
          "/jax/core/compile/backend_compile_duration": "compile"}


class PhaseClock:
    """Seconds per (phase, program) from JAX's monitoring events while it is listening."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = collections.defaultdict(float)
        self.listening = False
        jax.monitoring.register_event_duration_secs_listener(self._record)

    def _record(self, event: str, duration: float, **metadata) -> None:
        if self.listening and event in PHASES:
            name = str(metadata.get("fun_name", "?"))
            self.seconds[PHASES[event], name] += duration

    def measure(self, fn) -> tuple[float, dict]:
        """(wall seconds of ``fn()``, {(phase, program): seconds} during it)."""
        self.seconds.clear()
        self.listening = True
        start = time.perf_counter()
        try:
            fn()
        finally:
            self.listening = False
        return time.perf_counter() - start, dict(self.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--budget", type=int, default=BUDGET, help="examples per run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cold_start.txt"))
    args = parser.parse_args()
    jax.config.update("jax_enable_compilation_cache", False)
    say = Transcript()
    clock = PhaseClock()
    data = jaxsgd.load_dataset("mnist1d", num_samples=5000)
    options = run_sweep_options()
    say(f"jax {jax.__version__}, {len(jax.devices())} CPU devices; one-group cold sweeps of the "
        f"reference grid (16 runs, {args.budget} examples per run)")
    say(f"{'B':>6} {'cold s':>7} {'trace':>6} {'lower':>6} {'compile':>7} {'rest':>6} "
        f"{'steady s':>8} {'rest - steady':>13}")
    programs: dict[str, collections.Counter] = {}
    for b in args.batch_sizes:
        config = sweep_config(b, args.budget)
        jax.clear_caches()
        cold, phases = clock.measure(lambda: jaxsgd.run_sweep(config, data=data, **options))
        steady, _ = clock.measure(lambda: jaxsgd.run_sweep(config, data=data, **options))
        per_phase = collections.Counter()
        for (phase, name), s in phases.items():
            per_phase[phase] += s
            programs.setdefault(name, collections.Counter())[phase] += s / len(args.batch_sizes)
        built = sum(per_phase.values())
        say(f"{b:>6} {cold:>7.2f} {per_phase['trace']:>6.2f} {per_phase['lower']:>6.2f} "
            f"{per_phase['compile']:>7.2f} {cold - built:>6.2f} {steady:>8.2f} "
            f"{cold - built - steady:>13.2f}")
    say("\nper program, seconds per cold sweep (mean over batch sizes)")
    say(f"{'program':<40} {'trace':>6} {'lower':>6} {'compile':>7}")
    for name, c in sorted(programs.items(), key=lambda kv: -sum(kv[1].values())):
        if sum(c.values()) >= 0.01:
            say(f"{name[:40]:<40} {c['trace']:>6.2f} {c['lower']:>6.2f} {c['compile']:>7.2f}")
    say.write(Path(args.out))


if __name__ == "__main__":
    main()
