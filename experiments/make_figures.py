"""Regenerate every figure in ``figures/`` with one command, listing the wall time of each.

Each experiment runs as its own process (``python experiments/NAME.py``), in the order below,
with its full preset: what produced the committed figures, their ``.json`` numbers and the
README's verdicts (sweep folders in ``runs/NAME``, resumed if present). ``--quick`` runs the
tests' presets instead, into a temporary folder (or ``--into``), leaving ``figures/`` alone.

    python experiments/make_figures.py                    # every figure (about 46 minutes on 2 cores)
    python experiments/make_figures.py --quick            # every quick preset (about 2 minutes)
    python experiments/make_figures.py --only keskar nqm  # some of them
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPERIMENTS = ("nqm", "critical_batch", "edge_of_stability", "keskar", "gradient_accuracy",
               "lr_scaling", "bigger_batch", "decay_or_grow", "small_batch_outliers")


def command(name: str, quick: bool, into: Path | None) -> list[str]:
    """The command line of one experiment: its full preset, or quick into ``into``."""
    cmd = [sys.executable, str(HERE / f"{name}.py")]
    if quick:
        cmd += ["--quick", "--figure", str(into / name)]
        if name != "nqm":  # the sweep experiments also keep a sweep folder
            cmd += ["--out", str(into / "runs" / name), "--no-progress"]
    return cmd


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the tests' presets (seconds)")
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, default=EXPERIMENTS,
                        metavar="NAME", help=f"some of: {', '.join(EXPERIMENTS)}")
    parser.add_argument("--into", default=None,
                        help="with --quick: folder for the figures (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        into = Path(args.into or scratch) if args.quick else None
        seconds = {}
        for name in (n for n in EXPERIMENTS if n in args.only):
            print(f"== {name}", flush=True)
            start = time.perf_counter()
            subprocess.run(command(name, args.quick, into), check=True)
            seconds[name] = time.perf_counter() - start
    preset = "quick" if args.quick else "full"
    print(f"\nwall time per experiment ({preset} presets):")
    for name, s in seconds.items():
        print(f"  {name:<20} {s:8.1f} s")
    print(f"  {'total':<20} {sum(seconds.values()):8.1f} s")
    return seconds


if __name__ == "__main__":
    main()
