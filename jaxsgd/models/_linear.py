"""Linear (softmax / least-squares) regression: `outputs = flatten(x) @ W + b`.

Params: `{"Dense_0": {"kernel": [prod(input_shape), num_outputs], "bias": [num_outputs]}}`,
kernel LeCun-normal, bias zero. With cross-entropy this is multinomial logistic (softmax)
regression; with squared error it is linear least squares.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax

from jaxsgd.models.model import (DEFAULT_KERNEL_INIT, Model, check_shape, flatten_example,
                                 from_module, kernel_initializer)


class Linear(nn.Module):
    """x [B, *input_shape] -> flatten -> Dense -> outputs [B, num_outputs]."""

    input_shape: tuple[int, ...]
    num_outputs: int
    kernel_init: Callable = DEFAULT_KERNEL_INIT

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dense = nn.Dense(self.num_outputs, kernel_init=self.kernel_init)
        return dense(flatten_example(x, self.input_shape))


def linear(input_shape: tuple[int, ...], num_outputs: int, kernel_init: str = "lecun_normal",
           init_scale: float = 0.01) -> Model:
    """Linear regression on the flattened input, e.g. `linear((40,), 10)`: 410 parameters.

    ``kernel_init``/``init_scale``: the kernel initializer, as for ``mlp``."""
    input_shape = check_shape(input_shape, num_outputs)
    module = Linear(input_shape=input_shape, num_outputs=int(num_outputs),
                    kernel_init=kernel_initializer(kernel_init, init_scale))
    size = "x".join(map(str, input_shape))
    return from_module(module, input_shape, name=f"linear({size}->{num_outputs})")
