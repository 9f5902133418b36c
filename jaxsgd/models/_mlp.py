"""Multilayer perceptron: `depth` hidden layers of `width` units, then a linear output layer.

Params: `{"Dense_0": ..., ..., "Dense_{depth}": ...}`, each `{"kernel": [in, out], "bias": [out]}`
(LeCun-normal kernels by default, `kernel_init=` to choose; zero biases); `Dense_{depth}` is the output layer. The project's reference
model is `mlp((40,), 10, width=256, depth=2)`, i.e. 40-256-256-10 with ReLU: 78,858 parameters.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax

from jaxsgd.models.model import (DEFAULT_KERNEL_INIT, Model, activation_fn, check_shape,
                                 flatten_example, from_module, kernel_initializer)


class MLP(nn.Module):
    """x [B, *input_shape] -> flatten -> depth x (Dense(width) -> act) -> Dense(num_outputs)."""

    input_shape: tuple[int, ...]
    num_outputs: int
    width: int = 256
    depth: int = 2
    activation: str = "relu"
    kernel_init: Callable = DEFAULT_KERNEL_INIT

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_fn(self.activation)
        h = flatten_example(x, self.input_shape)
        for _ in range(self.depth):
            h = act(nn.Dense(self.width, kernel_init=self.kernel_init)(h))
        return nn.Dense(self.num_outputs, kernel_init=self.kernel_init)(h)


def mlp(
    input_shape: tuple[int, ...],
    num_outputs: int,
    width: int = 256,
    depth: int = 2,
    activation: str = "relu",
    kernel_init: str = "lecun_normal",
    init_scale: float = 0.01,
) -> Model:
    """A fully connected network on the flattened input.

    Args:
        input_shape: shape of one example, e.g. `(40,)` for MNIST-1D.
        num_outputs: number of classes (logits) or regression targets.
        width: units per hidden layer.
        depth: number of hidden layers (0 gives linear regression).
        activation: one of relu, tanh, gelu, silu, sigmoid.
        kernel_init: kernel initializer of every layer (``models.model.INITIALIZERS``:
            lecun_normal, he_normal, glorot_uniform, truncated_normal, …); biases start at 0.
        init_scale: standard deviation of "normal" and "truncated_normal".

    Returns:
        A `Model` whose `apply` maps x [B, *input_shape] to outputs [B, num_outputs].
    """
    input_shape = check_shape(input_shape, num_outputs)
    activation_fn(activation)  # fail here, not at the first init
    if width <= 0 or depth < 0:
        raise ValueError(f"need width > 0 and depth >= 0, got width={width}, depth={depth}")
    module = MLP(
        input_shape=input_shape,
        num_outputs=int(num_outputs),
        width=int(width),
        depth=int(depth),
        activation=activation,
        kernel_init=kernel_initializer(kernel_init, init_scale),
    )
    sizes = [str(math.prod(input_shape))] + [str(width)] * depth + [str(num_outputs)]
    init = "" if kernel_init == "lecun_normal" else f", {kernel_init}"
    return from_module(module, input_shape, name=f"mlp({'-'.join(sizes)}, {activation}{init})")

