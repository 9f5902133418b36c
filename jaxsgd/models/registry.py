"""Models by name, so a sweep config can say `model="mlp", model_options={"width": 512}`.

The registry names each factory by its import path; a factory's module (and flax, and JAX) is
imported only when that model is built, so listing the models and their options is free.
"""

from __future__ import annotations

import inspect
from typing import Any

from jaxsgd._util import resolve

FACTORIES: dict[str, str] = {
    "linear": "jaxsgd.models._linear:linear",
    "mlp": "jaxsgd.models._mlp:mlp",
    "cnn": "jaxsgd.models._cnn:cnn",
}
MODELS: tuple[str, ...] = tuple(FACTORIES)
SHAPE_ARGUMENTS = ("input_shape", "num_outputs")  # given by the data set, not by options


def make_model(name: str, input_shape: tuple[int, ...], num_outputs: int, **options: Any):
    """Builds the model registered as `name` (one of `MODELS`); returns a `Model`.

    Args:
        name: "linear", "mlp" or "cnn".
        input_shape: shape of one example, e.g. `(40,)`.
        num_outputs: number of classes (logits) or regression targets.
        **options: keyword arguments of that model's factory, e.g. `width=512, depth=3` for "mlp".

    Raises:
        ValueError: for an unknown model name (lists `MODELS`) or an option the factory does not
            take (names the option and lists the accepted ones).
    """
    if name not in FACTORIES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    factory = resolve(FACTORIES[name])
    accepted = [p for p in inspect.signature(factory).parameters if p not in SHAPE_ARGUMENTS]
    unknown = [option for option in options if option not in accepted]
    if unknown:
        raise ValueError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(accepted) or '(none)'}"
        )
    return factory(input_shape, num_outputs, **options)
