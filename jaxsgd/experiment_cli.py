"""The command line shared by the sweep experiments in ``experiments/``.

Every such script takes ``--quick`` (a tiny preset, seconds; what the tests run), ``--out``
(the resumable sweep folder; default ``runs/NAME``), ``--figure`` (the figure's path without
suffix; default ``figures/NAME``), and ``--no-progress``; NAME gains ``_quick`` under
``--quick``. Parsing it also calls ``jaxsgd.use_cpu_devices()``, so scripts call it first. The figure's numbers are written beside it as ``.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, NamedTuple, Sequence


class ExperimentArgs(NamedTuple):
    """preset: "quick" or "full"; out: sweep folder; figure: path without suffix."""

    preset: str
    out: Path
    figure: Path
    progress: bool


def experiment_args(doc: str, name: str, root: Path,
                    argv: Sequence[str] | None = None) -> ExperimentArgs:
    """Parse an experiment's command line (module docstring); ``root`` is the project folder."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny preset, seconds")
    parser.add_argument("--out", default=None, help="sweep folder (resumable)")
    parser.add_argument("--figure", default=None, help="figure path without suffix")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from jaxsgd.runtime import use_cpu_devices

    use_cpu_devices()  # before JAX starts: 4 CPU devices per core, the compilation cache
    name = f"{name}_quick" if args.quick else name
    return ExperimentArgs(preset="quick" if args.quick else "full",
                          out=Path(args.out or root / "runs" / name),
                          figure=Path(args.figure or root / "figures" / name),
                          progress=not args.no_progress)


def write_report(figure: Path, report: Any) -> None:
    """The figure's numbers as ``FIGURE.json`` (indented JSON)."""
    figure.parent.mkdir(parents=True, exist_ok=True)
    figure.with_suffix(".json").write_text(json.dumps(report, indent=1))
