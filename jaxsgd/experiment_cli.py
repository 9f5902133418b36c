"""The command line shared by the sweep experiments in ``experiments/``.

Every such script takes ``--quick`` (a tiny preset, seconds; what the tests run), ``--out``
(the resumable sweep folder; default ``runs/NAME``), ``--figure`` (the figure's path without
suffix; default ``figures/NAME``), and ``--no-progress``; NAME gains ``_quick`` under
``--quick``. Parsing it also calls ``jaxsgd.use_cpu_devices()``, so scripts call it first. The
figure's numbers are written beside it as ``.json``.

The same scripts run on other data and models (e.g. MNIST or CIFAR-10 files on an
accelerator): ``--data mnist --data-option path=/data/mnist`` replaces the preset's data set,
``--model cnn --model-option width=64`` its model, ``--budget 1048576`` its examples per run;
each script passes every sweep configuration through ``ExperimentArgs.configure``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, NamedTuple, Sequence


class ExperimentArgs(NamedTuple):
    """preset: "quick" or "full"; out: sweep folder; figure: path without suffix; changes:
    the configuration fields given on the command line (data, model, budget); parts: the
    parts of a several-part experiment to run (``--part``; all of them by default)."""

    preset: str
    out: Path
    figure: Path
    progress: bool
    changes: dict | None = None
    parts: tuple[str, ...] = ()

    def configure(self, config):
        """A preset's ``SweepConfig`` with the command line's data, model and budget."""
        return config.replace(**self.changes) if self.changes else config


def _options(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a dict, values read as JSON where they parse (numbers, true,
    lists), else kept as strings (paths)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag}: {pair!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def experiment_args(doc: str, name: str, root: Path, argv: Sequence[str] | None = None,
                    parts: Sequence[str] = ()) -> ExperimentArgs:
    """Parse an experiment's command line (module docstring); ``root`` is the project folder;
    ``parts``: the names of an experiment's separable parts (adds ``--part``)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny preset, seconds")
    parser.add_argument("--out", default=None, help="sweep folder (resumable)")
    parser.add_argument("--figure", default=None, help="figure path without suffix")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--data", default=None, help="data set instead of the preset's "
                        "(jaxsgd.DATASETS: mnist, cifar10, digits, ...)")
    parser.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                        help="data option (path=/data/mnist, standardize=global); repeatable")
    parser.add_argument("--model", default=None, help="model instead of the preset's")
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                        help="model option (width=64); repeatable")
    parser.add_argument("--budget", type=int, default=None, help="examples per run")
    if parts:
        parser.add_argument("--part", nargs="+", choices=parts, default=list(parts),
                            help=f"run only these parts (default: all of {', '.join(parts)})")
    args = parser.parse_args(argv)
    changes: dict[str, Any] = {}
    if args.data is not None or args.data_option:
        if args.data is None:
            raise SystemExit("--data-option needs --data (the data set they are options of)")
        changes.update(data=args.data, data_options=_options(args.data_option, "--data-option"))
    if args.model is not None or args.model_option:
        if args.model is None:
            raise SystemExit("--model-option needs --model (the model they are options of)")
        changes.update(model=args.model,
                       model_options=_options(args.model_option, "--model-option"))
    if args.budget is not None:
        changes.update(budget=args.budget)
    from jaxsgd.runtime import use_cpu_devices

    use_cpu_devices()  # before JAX starts: 4 CPU devices per core, the compilation cache
    name = f"{name}_quick" if args.quick else name
    return ExperimentArgs(preset="quick" if args.quick else "full",
                          out=Path(args.out or root / "runs" / name),
                          figure=Path(args.figure or root / "figures" / name),
                          progress=not args.no_progress, changes=changes,
                          parts=tuple(p for p in parts if p in getattr(args, "part", ())))


def write_report(figure: Path, report: Any) -> None:
    """The figure's numbers as ``FIGURE.json`` (indented JSON)."""
    figure.parent.mkdir(parents=True, exist_ok=True)
    figure.with_suffix(".json").write_text(json.dumps(report, indent=1))
