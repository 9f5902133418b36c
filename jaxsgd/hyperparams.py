"""The sweepable hyperparameters, defined once.

``HYPERPARAMETERS`` is the single definition from which everything else derives: the fields of
``jaxsgd.Grid`` (and their TOML keys under ``[grid]``, with help text), the traced ``HParams``
every run receives, their validation, and the order of the result dimensions. Adding a
hyperparameter is one entry here plus the optimizer or schedule that reads it
(``jaxsgd.optimizers``).

Every value except ``seed`` is a float32 scalar of one run inside the compiled program, so
changing it never recompiles; ``seed`` (int32) fixes a run's initialisation, minibatch order
and probe randomness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from jaxsgd._util import is_user_part

_ADAM = ("adam", "adamw")


@dataclass(frozen=True)
class Hyperparameter:
    """One sweepable value.

    name: grid field, TOML key ``grid.NAME``, ``HParams`` field and result dimension.
    default: the grid's default values (a tuple; one value: not swept).
    doc: meaning and range, one line (help text and docstrings).
    valid: the check of one value; ``requirement`` completes "VALUE is not ..." when it fails.
    role: what reads it: "optimizer" (passed to the optax family by name), "schedule" (the
        learning-rate schedule: peak, warm-up, decay) or "seed".
    used_by: the optimizers (role "optimizer") or schedules (role "schedule") that read it;
        None: all. Sweeping it with another one is refused: the runs would be identical.
    complement: traced as ``one_minus_NAME`` = 1 − value, computed in float64 before the
        float32 cast. For a decay rate near 1 (Adam's β2) float32 keeps 1 − β2 exact only this
        way: 1 − float32(0.999) is 1.3e-5 off 10⁻³, 1 − float32(0.999999) 1.3% off 10⁻⁶.
    """

    name: str
    default: tuple
    doc: str
    valid: Callable[[Any], bool]
    requirement: str
    role: str = "optimizer"
    used_by: tuple[str, ...] | None = None
    complement: bool = False

    @property
    def integer(self) -> bool:
        return self.role == "seed"

    @property
    def traced_name(self) -> str:
        """Its field in ``HParams``: the name, or ``one_minus_NAME`` for a complement."""
        return f"one_minus_{self.name}" if self.complement else self.name

    def traced(self, values: Any) -> np.ndarray:
        """Grid values as the float32 values a run receives (1 − value for a complement)."""
        values = np.asarray(values, np.float64)
        return np.asarray(1.0 - values if self.complement else values, np.float32)


HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter("learning_rate", (0.1,), "peak learning rate (> 0)",
                   lambda v: v > 0, "positive", role="schedule"),
    Hyperparameter("momentum", (0.9,),
                   "momentum ('momentum'/'nesterov') or beta1 ('adam'/'adamw'), in [0, 1)",
                   lambda v: 0 <= v < 1, "in [0, 1)",
                   used_by=("momentum", "nesterov", *_ADAM)),
    Hyperparameter("b2", (0.999,), "Adam's beta2 ('adam'/'adamw'), in [0, 1)",
                   lambda v: 0 <= v < 1, "in [0, 1)", used_by=_ADAM, complement=True),
    Hyperparameter("eps", (1e-8,), "Adam's epsilon ('adam'/'adamw'), > 0",
                   lambda v: v > 0, "positive", used_by=_ADAM),
    Hyperparameter("weight_decay", (0.0,),
                   "L2 coefficient (coupled; decoupled for 'adamw'), >= 0",
                   lambda v: v >= 0, "non-negative"),
    Hyperparameter("warmup", (0.0,), "linear warm-up length as a fraction of each run, in [0, 1)",
                   lambda v: 0 <= v < 1, "a fraction in [0, 1)", role="schedule"),
    Hyperparameter("decay", (0.1,),
                   "final fraction ('cosine') or per-boundary factor ('step'), in (0, 1]",
                   lambda v: 0 < v <= 1, "in (0, 1]", role="schedule", used_by=("cosine", "step")),
    Hyperparameter("seed", (0,), "integer seeds (initialisation and minibatch order)",
                   lambda v: isinstance(v, (int, np.integer)) and 0 <= v < 2**31,
                   "an integer in [0, 2^31)", role="seed"),
)
GRID_FIELDS = tuple(h.name for h in HYPERPARAMETERS)  # result-dimension order (seed last)
TRACED = tuple(h.traced_name for h in HYPERPARAMETERS if not h.integer)
OPTIMIZER_ARGS = tuple(h.traced_name for h in HYPERPARAMETERS if h.role == "optimizer")

# The traced values of one run: float32 scalars ([runs] when vmapped), fields ``TRACED``.
_HParamsFields = NamedTuple("_HParamsFields", [(name, Any) for name in TRACED])


def _complement(name: str) -> property:
    return property(lambda self: 1 - getattr(self, f"one_minus_{name}"),
                    doc=f"{name} = 1 − one_minus_{name} (read-only; traced as its complement)")


HParams = type("HParams", (_HParamsFields,), {
    "__slots__": (), "__module__": __name__,
    "__doc__": ("Traced hyperparameters of one run (float32 scalars; [runs] when vmapped): "
                + "; ".join(f"{h.traced_name}: {h.doc}" + (" (as 1 − value)" if h.complement
                                                           else "")
                            for h in HYPERPARAMETERS if not h.integer)
                + ". A complement is also readable by its name (``hp.b2``). Build with "
                  "``hparams(...)``."),
    **{h.name: _complement(h.name) for h in HYPERPARAMETERS if h.complement}})


def hparams(**values: Any) -> HParams:
    """``HParams`` from keyword values by grid name (scalars or arrays; ``b2``, not its traced
    complement), the grid defaults for the others. Values become float32 arrays.

    Example: ``hparams(learning_rate=0.1, momentum=0.9)``.
    """
    import jax.numpy as jnp

    names = [h.name for h in HYPERPARAMETERS if not h.integer]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise TypeError(f"hparams: unknown hyperparameter {unknown[0]!r}; known: "
                        f"{', '.join(names)}")
    return HParams(**{h.traced_name: jnp.asarray(h.traced(values.get(h.name, h.default[0])))
                      for h in HYPERPARAMETERS if not h.integer})


def traced_values(runs: dict[str, np.ndarray]) -> HParams:
    """``HParams`` of [runs] float32 arrays from a grid's flattened runs (``Grid.runs()``)."""
    return HParams(**{h.traced_name: h.traced(runs[h.name])
                      for h in HYPERPARAMETERS if not h.integer})


def used_optimizer_args(optimizer: str) -> tuple[str, ...]:
    """The optimizer-role hyperparameters that ``optimizer`` reads (passed to it by name)."""
    return tuple(h.traced_name for h in HYPERPARAMETERS
                 if h.role == "optimizer" and (h.used_by is None or optimizer in h.used_by))


def unused_reason(h: Hyperparameter, optimizer: str, schedule: str) -> str | None:
    """Why sweeping ``h`` is pointless with this optimizer and schedule, or None if it is used."""
    chosen = optimizer if h.role == "optimizer" else schedule
    if h.used_by is None or chosen in h.used_by or is_user_part(chosen):  # a user's: reads any
        return None
    return f"{h.role} {chosen!r} does not use {h.name}; it is used by {', '.join(h.used_by)}"
