"""The ``jaxsgd`` command: run a sweep from a TOML file, and summarise a results folder.

  jaxsgd sweep CONFIG.toml --out DIR [--overwrite] [--quiet] [--no-progress] [--no-figure]
               [--chunk-steps N]
  jaxsgd show DIR

Bad input (a TOML syntax error, an unknown key, a wrong type or value, an unknown data set or
model option, a missing file, a results folder holding another sweep, a damaged checkpoint) is
reported as one line
``jaxsgd: error: <message>`` on stderr with exit status 2, never a traceback. The help text of
the TOML schema is generated from ``jaxsgd.config`` and the data/model registries, so it lists
exactly the keys that ``SweepConfig.from_dict`` accepts.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any, Sequence

from jaxsgd._util import signature_text
from jaxsgd.config import (BUDGET_UNITS, LOSSES, LR_SCALINGS, OPTIMIZERS, SAMPLINGS, SCHEDULES,
                           SCHEMA, ConfigError,
                           SweepConfig)
from jaxsgd.hyperparams import HYPERPARAMETERS
from jaxsgd.models.registry import FACTORIES, SHAPE_ARGUMENTS
from jaxsgd.probes.registry import PROBES, PYTHON_ONLY, make_probe
from jaxsgd.targets import TARGET_METRICS

# Nothing above imports JAX, so `jaxsgd --help` is instant (the data registry is NumPy only).

HELP_WIDTH = 96
EXIT_ERROR = 2  # the same status argparse uses for usage errors
FIGURE_NAME = "summary"

# --------------------------------------------------------------------------- TOML schema help

# One-line meaning of each key; the key lists themselves come from jaxsgd.config.
_KEY_HELP = {
    "optimizer.name": "optimizer family",
    "optimizer.schedule": "learning-rate schedule (after warm-up)",
    "optimizer.decay_boundaries": "'step' schedule: fractions of the run where the rate is "
                                  "multiplied by grid.decay",
    "training.batch_sizes": "batch sizes (examples); each is one compiled program",
    "training.budget": "training length of every run, in budget_unit",
    "training.budget_unit": "'examples' (a run at batch size B takes budget // B steps) or "
                            "'steps' (optimizer steps)",
    "training.sampling": "'epoch' (shuffle each epoch) or 'replacement'",
    "training.loss": "training loss; 'mse' on a classification set uses one-hot targets "
                     "(default: cross_entropy for labels, mse for regression targets)",
    "optimizer.horizon_batch_size": "Adam's grid.b2 is given at this batch size and rescaled "
                                    "at the others to keep its half-life in examples",
    "optimizer.horizon_b1": "rescale beta1 (grid.momentum) the same way",
    "optimizer.lr_scaling": "per-batch-size rates: grid.learning_rate is given at "
                            "lr_batch_size and scaled by B/B_ref (linear) or its square root",
    "optimizer.lr_batch_size": "the batch size at which grid.learning_rate applies "
                               "(1: the grid holds learning rate / B)",
    "training.divergence_factor": "a run diverges when its minibatch loss is non-finite or its "
                                  "running average exceeds this multiple of its first loss",
    "training.divergence_horizon": "examples the divergence rule's running average spans "
                                   "(the same at every batch size)",
    "training.spike_factor": "a minibatch loss above this multiple of the running average is "
                             "a spike (counted per evaluation interval)",
    "training.accumulation": "microbatches per step (memory for batch_size / accumulation "
                             "examples; same gradient)",
    "training.batch_growth": "grow every run's batch by this factor at each growth boundary "
                             "(B, g·B, g²·B, ...: Smith et al. 2018)",
    "training.growth_boundaries": "fractions of the budget where the batch grows",
    "evaluation.every": "evaluate every this many budget units (default: 16 evaluations)",
    "evaluation.log_points": "and/or this many log-spaced evaluations",
    "evaluation.points": "and/or evaluations at exactly these points (budget units)",
    "evaluation.train_examples": "training examples used for train loss/accuracy (default: all)",
    "target.metric": "metric for steps-to-target",
    "target.value": "reached at metric <= value (losses, errors) or >= value (accuracies)",
    "target.stop": "stop each run (freeze its parameters) when it reaches the target",
    "snapshots.points": "keep every run's full state at these points (budget units)",
    "snapshots.log_points": "and/or at this many log-spaced points",
    "snapshots.evaluations": "and/or at every evaluation point",
    **{f"grid.{h.name}": h.doc for h in HYPERPARAMETERS},
}
_CHOICES = {
    "optimizer.name": OPTIMIZERS,
    "optimizer.schedule": SCHEDULES,
    "training.sampling": SAMPLINGS,
    "training.loss": LOSSES,
    "optimizer.lr_scaling": LR_SCALINGS,
    "training.budget_unit": BUDGET_UNITS,
    "target.metric": tuple(TARGET_METRICS),
}
_KIND_NAMES = {"bool": "true/false", "str": "string", "int": "integer", "float": "number",
               "int_list": "list of integers", "float_list": "list of numbers"}


_NO_BREAK = "\x00"  # a space that _wrap never breaks at


def _wrap(line: str, indent: int) -> str:
    """Wrap one help line to HELP_WIDTH, continuation lines indented by ``indent``."""
    text = textwrap.fill(line, HELP_WIDTH, subsequent_indent=" " * indent,
                         break_on_hyphens=False)
    return text.replace(_NO_BREAK, " ")


def _key_line(section: str, key: str, kind: str, default: Any) -> str:
    where = f"{section}.{key}"
    text = f"{_KIND_NAMES[kind]}; {_KEY_HELP.get(where, '')}".rstrip("; ")
    if where in _CHOICES:
        text += f"; one of: {', '.join(_CHOICES[where])}"
    if default is not None:
        if isinstance(default, tuple):
            default = list(default)
        text += f" [default {default!r}]".replace(" ", _NO_BREAK).replace(_NO_BREAK, " ", 1)
    return _wrap(f"    {key:<18} {text}", indent=23)


def schema_help() -> str:
    """The TOML schema accepted by ``SweepConfig.from_dict``, as help text."""
    from jaxsgd.data.registry import LOADERS
    from jaxsgd.data.transforms import STANDARDIZATIONS

    defaults = SweepConfig()
    lines = [
        "configuration file (TOML); every section and key is optional, unknown ones are errors:",
        "",
        "  [data]",
        _wrap(f"    name               string; data set, one of: {', '.join(LOADERS)} "
              f"[default {defaults.data!r}]", indent=23),
        _wrap(f"    standardize        string; inputs standardised with training-set statistics, "
              f"one of: {', '.join(STANDARDIZATIONS)} [default 'none': as loaded]", indent=23),
        "    <option> = value   keyword arguments of that data set's loader:",
    ]
    lines += [_wrap(f"                         {name}: {signature_text(f)}", indent=27)
              for name, f in LOADERS.items()]
    lines += [
        "",
        "  [model]",
        _wrap(f"    name               string; model, one of: {', '.join(FACTORIES)} "
              f"[default {defaults.model!r}]", indent=23),
        "    <option> = value   keyword arguments of that model's factory:",
    ]
    lines += [_wrap(f"                         {name}: "
                    f"{signature_text(f, skip=SHAPE_ARGUMENTS)}", indent=27)
              for name, f in FACTORIES.items()]
    for section, keys in SCHEMA.items():
        lines += ["", f"  [{section}]"]
        for key, (attr, kind) in keys.items():
            lines.append(_key_line(section, key, kind, getattr(defaults, attr)))
    lines += ["", "  [grid]   swept values: the runs are their Cartesian product; the values are "
                  "traced,", "           so changing them never recompiles"]
    for h in HYPERPARAMETERS:
        lines.append(_key_line("grid", h.name, "int_list" if h.integer else "float_list",
                               h.default))
    lines += ["", "  [probes.NAME]   measurements inside the training scan; options are the "
                  "factory's keywords:"]
    lines += [_wrap(f"                         {name}: {signature_text(f, skip=PYTHON_ONLY)}",
                    indent=27) for name, f in PROBES.items()]
    lines += ["", "  A scalar where a list is expected is a one-element list.",
              "  Examples: experiments/configs/mnist1d_quick.toml (quick start), "
              "mnist1d_reference.toml."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="jaxsgd",
        formatter_class=formatter,
        description="Batch-size and learning-rate sweeps of SGD as one compiled, vmapped JAX "
                    "program per batch size.",
        epilog="commands:\n"
               "  jaxsgd sweep CONFIG.toml --out DIR   run a sweep, print its summary, write "
               "DIR/summary.{pdf,png}\n"
               "  jaxsgd show DIR                      print the summary of a results folder\n"
               "\nRun 'jaxsgd COMMAND --help' for each command's options.\n"
               "Errors in the input print one line 'jaxsgd: error: ...' and exit with status 2."
               "\n\n" + schema_help(),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sweep = commands.add_parser(
        "sweep",
        formatter_class=formatter,
        help="run a sweep from a TOML configuration file",
        description=textwrap.fill(
            "Run every (batch size x grid point) of a sweep, write the results to DIR "
            "(config.json, group_bs{B}.nc, params_bs{B}.npz), print the summary table and write "
            "the figure DIR/summary.pdf and DIR/summary.png.", HELP_WIDTH),
        epilog=schema_help(),
    )
    sweep.add_argument("config", metavar="CONFIG.toml", type=Path,
                       help="sweep configuration (TOML; schema below)")
    sweep.add_argument("--out", metavar="DIR", type=Path, required=True,
                       help="results folder. If DIR holds this same sweep (interrupted or "
                            "finished), the sweep resumes from it: finished batch sizes are "
                            "kept, a checkpointed one continues from its last chunk. A "
                            "different sweep there is refused, unless --overwrite")
    sweep.add_argument("--overwrite", action="store_true",
                       help="replace an existing jaxsgd results folder DIR (one holding "
                            "config.json) instead of resuming; other folders are never deleted")
    sweep.add_argument("--quiet", action="store_true",
                       help="do not print the progress bar, one line per finished batch size "
                            "or the figure paths; the summary table is still printed")
    sweep.add_argument("--no-progress", action="store_true",
                       help="no progress bar (for logs); the other lines are still printed")
    sweep.add_argument("--chunk-steps", metavar="N", type=_positive_int, default=None,
                       help="optimizer steps per chunk: the progress bar moves and a "
                            "checkpoint is written after each chunk (default: each batch size "
                            "in at most 16 equal chunks)")
    sweep.add_argument("--no-figure", action="store_true",
                       help="do not write DIR/summary.pdf and DIR/summary.png")

    show = commands.add_parser(
        "show",
        formatter_class=formatter,
        help="print the summary table of a results folder",
        description=textwrap.fill(
            "Load a results folder written by 'jaxsgd sweep' (or run_sweep) and print its "
            "summary table: per batch size, the best learning rate (and other swept values), "
            "steps and examples to target, final test accuracy and diverged runs. A folder "
            "whose sweep is still running or was interrupted is summarised over its finished "
            "batch sizes, and said to be incomplete.", HELP_WIDTH),
    )
    show.add_argument("results", metavar="DIR", type=Path, help="results folder")
    return parser


# --------------------------------------------------------------------------- commands


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


class _InputError(Exception):
    """Bad input to report as one line; the message is complete."""


def read_probes(table: Any, where: str) -> tuple:
    """Probes from the ``[probes.NAME]`` tables of a configuration (options as keywords)."""
    if not isinstance(table, dict):
        raise _InputError(f"{where}: [probes] must be a table of [probes.NAME] tables")
    try:
        return tuple(make_probe(name, options) for name, options in table.items())
    except ValueError as e:
        raise _InputError(f"{where}: {e}") from None


def read_config_and_probes(path: Path) -> tuple[SweepConfig, tuple]:
    """Read a TOML sweep configuration and its ``[probes]``; problems become ``_InputError``."""
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        raise _InputError(f"configuration file {str(path)!r} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise _InputError(f"{path}: invalid TOML: {e}") from None
    except OSError as e:
        raise _InputError(f"{path}: cannot read: {e.strerror or e}") from None
    probes = read_probes(table.pop("probes", {}), str(path))
    try:
        return SweepConfig.from_dict(table), probes
    except ConfigError as e:
        raise _InputError(f"{path}: {e}") from None


def _sweep(args: argparse.Namespace) -> int:
    # Imported here so that `jaxsgd --help` does not start JAX.
    from jaxsgd.analysis.summary import summarize
    from jaxsgd.data import DataError
    from jaxsgd.engine.folder import CheckpointError
    from jaxsgd.engine.sweep import prepare, run_sweep
    from jaxsgd.runtime import use_cpu_devices

    use_cpu_devices()  # before JAX starts: 4 CPU devices per core, the compilation cache

    config, probes = read_config_and_probes(args.config)
    # Everything that can be wrong with the input is checked before compiling: validation,
    # data set, model (ValueError from make_model). Errors later on are bugs and keep their
    # traceback, except those of the results folder.
    try:
        prepare(config)
    except ValueError as e:  # ConfigError, DataError, model errors
        raise _InputError(f"{args.config}: {e}") from None
    try:
        result = run_sweep(config, args.out, probes=probes, overwrite=args.overwrite,
                           verbose=not args.quiet,
                           progress=not (args.quiet or args.no_progress),
                           chunk_steps=args.chunk_steps)
    except CheckpointError as e:
        raise _InputError(str(e)) from None
    except (ConfigError, DataError) as e:
        raise _InputError(f"{args.config}: {e}") from None
    except FileExistsError as e:
        raise _InputError(str(e).replace("overwrite=True (--overwrite)", "--overwrite")) from None
    except OSError as e:
        raise _InputError(f"{args.out}: {e}") from None
    print(summarize(result), flush=True)
    if not args.no_figure:
        from jaxsgd.analysis.plotting import plot_sweep

        plot_sweep(result, args.out / FIGURE_NAME)
        if not args.quiet:
            print(f"figure: {args.out / FIGURE_NAME}.pdf, {args.out / FIGURE_NAME}.png")
    return 0


def _show(args: argparse.Namespace) -> int:
    from jaxsgd.analysis.summary import summarize
    from jaxsgd.engine.folder import load_sweep

    try:
        result = load_sweep(args.results)
    except (OSError, ValueError) as e:  # not a results folder, unreadable or malformed files
        raise _InputError(str(e)) from None
    print(summarize(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxsgd`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = {"sweep": _sweep, "show": _show}[args.command]
    try:
        return command(args)
    except _InputError as e:
        message = " ".join(str(e).split())  # one line, whatever the message holds
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted (finished batch sizes and the last checkpoint are "
              "saved; run the same command again to resume, 'jaxsgd show DIR' summarises the "
              "finished ones)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
