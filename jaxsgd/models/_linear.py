"""Linear (softmax / least-squares) regression: `outputs = flatten(x) @ W + b`.

Params: `{"Dense_0": {"kernel": [prod(input_shape), num_outputs], "bias": [num_outputs]}}`,
kernel LeCun-normal, bias zero. With cross-entropy this is multinomial logistic (softmax)
regression; with squared error it is linear least squares.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxsgd.models.model import Model, check_shape, flatten_example, from_module


class Linear(nn.Module):
    """x [B, *input_shape] -> flatten -> Dense -> outputs [B, num_outputs]."""

    input_shape: tuple[int, ...]
    num_outputs: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.num_outputs)(flatten_example(x, self.input_shape))


def linear(input_shape: tuple[int, ...], num_outputs: int) -> Model:
    """Linear regression on the flattened input, e.g. `linear((40,), 10)`: 410 parameters."""
    input_shape = check_shape(input_shape, num_outputs)
    module = Linear(input_shape=input_shape, num_outputs=int(num_outputs))
    size = "x".join(map(str, input_shape))
    return from_module(module, input_shape, name=f"linear({size}->{num_outputs})")
