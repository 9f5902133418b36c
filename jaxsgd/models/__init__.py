"""Models as pairs of pure functions: `init(key) -> params`, `apply(params, x) -> outputs`.

    linear   flatten -> Dense                                   (_linear.py)
    mlp      flatten -> depth x (Dense(width) -> act) -> Dense   (_mlp.py)
    cnn      conv/act/pool blocks -> Dense -> Dense, 1-D or 2-D (_cnn.py)

`make_model(name, input_shape, num_outputs, **options)` builds any of them by name (registry.py).
Params are nested dicts of float32 arrays, one entry per layer (`Dense_0`, `Conv_0`, ...), each
with `kernel` and `bias`.
"""

import importlib

from jaxsgd.models.registry import MODELS, make_model

# Imported on first use (PEP 562), so that listing models does not import flax and JAX.
_LAZY = {"cnn": "_cnn", "linear": "_linear", "mlp": "_mlp", "ACTIVATIONS": "model", "Model": "model",
         "PyTree": "model", "from_module": "model"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"jaxsgd.models.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxsgd.models' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = ["ACTIVATIONS", "MODELS", "Model", "PyTree", "cnn", "from_module", "linear",
           "make_model", "mlp"]
