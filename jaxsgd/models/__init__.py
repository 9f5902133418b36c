"""Models as pairs of pure functions: `init(key) -> params`, `apply(params, x) -> outputs`.

    linear   flatten -> Dense                                   (linear.py)
    mlp      flatten -> depth x (Dense(width) -> act) -> Dense   (mlp.py)
    cnn      conv/act/pool blocks -> Dense -> Dense, 1-D or 2-D (cnn.py)

`make_model(name, input_shape, num_outputs, **options)` builds any of them by name (registry.py).
Params are nested dicts of float32 arrays, one entry per layer (`Dense_0`, `Conv_0`, ...), each
with `kernel` and `bias`.
"""

from jaxsgd.models.cnn import cnn
from jaxsgd.models.linear import linear
from jaxsgd.models.mlp import mlp
from jaxsgd.models.model import ACTIVATIONS, Model, PyTree
from jaxsgd.models.registry import MODELS, make_model

__all__ = ["ACTIVATIONS", "MODELS", "Model", "PyTree", "cnn", "linear", "make_model", "mlp"]
