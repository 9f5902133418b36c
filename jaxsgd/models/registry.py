"""Models by name, so a sweep config can say `model="mlp", model_options={"width": 512}`."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from jaxsgd.models.cnn import cnn
from jaxsgd.models.linear import linear
from jaxsgd.models.mlp import mlp
from jaxsgd.models.model import Model

_FACTORIES: dict[str, Callable[..., Model]] = {"linear": linear, "mlp": mlp, "cnn": cnn}

MODELS: tuple[str, ...] = tuple(_FACTORIES)


def make_model(name: str, input_shape: tuple[int, ...], num_outputs: int, **options: Any) -> Model:
    """Builds the model registered as `name` (one of `MODELS`).

    Args:
        name: "linear", "mlp" or "cnn".
        input_shape: shape of one example, e.g. `(40,)`.
        num_outputs: number of classes (logits) or regression targets.
        **options: keyword arguments of that model's factory, e.g. `width=512, depth=3` for "mlp".

    Raises:
        ValueError: for an unknown model name (lists `MODELS`) or an option the factory does not
            take (names the option and lists the accepted ones).
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None
    accepted = [
        p for p in inspect.signature(factory).parameters if p not in ("input_shape", "num_outputs")
    ]
    unknown = [option for option in options if option not in accepted]
    if unknown:
        raise ValueError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(accepted) or '(none)'}"
        )
    return factory(input_shape, num_outputs, **options)
