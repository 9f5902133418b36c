"""A small convolutional network for 1-D signals (MNIST-1D) and 2-D images (MNIST, CIFAR).

For each entry `c` of `channels`: Conv(c, kernel_size, stride 1, SAME) -> activation -> 2x pool
(window 2, stride 2, SAME padding, so each spatial size becomes ceil(size / 2)). Then flatten,
Dense(dense_width) -> activation, Dense(num_outputs).

The number of spatial dims is read off `input_shape`:
    (L,)       1-D signal with one channel (MNIST-1D: (40,)); x [B, L] is treated as [B, L, 1]
    (L, C)     1-D signal with C channels
    (H, W, C)  2-D image, channels last (MNIST: (28, 28, 1); CIFAR: (32, 32, 3))

Params: `{"Conv_0": {"kernel": [*window, C_in, C_out], "bias": [C_out]}, ..., "Dense_0": ...,
"Dense_1": ...}`, LeCun-normal kernels, zero biases.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax

from jaxsgd.models.model import (DEFAULT_KERNEL_INIT, Model, activation_fn, check_shape,
                                 flatten_example, from_module, kernel_initializer)

POOLINGS = ("max", "avg")


class CNN(nn.Module):
    """x [B, *input_shape] -> conv blocks -> flatten -> Dense(dense_width) -> Dense(num_outputs)."""

    input_shape: tuple[int, ...]
    num_outputs: int
    channels: tuple[int, ...] = (16, 32)
    kernel_size: int = 3
    dense_width: int = 64
    activation: str = "relu"
    pooling: str = "max"
    kernel_init: Callable = DEFAULT_KERNEL_INIT

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act, init = activation_fn(self.activation), self.kernel_init
        if len(self.input_shape) == 1:
            x = x[..., None]  # [B, L] -> [B, L, 1]
        num_spatial = 1 if len(self.input_shape) <= 2 else 2
        window = (2,) * num_spatial
        for c in self.channels:
            x = act(nn.Conv(c, (self.kernel_size,) * num_spatial, strides=1, padding="SAME",
                            kernel_init=init)(x))
            if self.pooling == "max":
                x = nn.max_pool(x, window, strides=window, padding="SAME")
            else:
                x = nn.avg_pool(x, window, strides=window, padding="SAME", count_include_pad=False)
        x = flatten_example(x, x.shape[x.ndim - num_spatial - 1 :])
        x = act(nn.Dense(self.dense_width, kernel_init=init)(x))
        return nn.Dense(self.num_outputs, kernel_init=init)(x)


def cnn(
    input_shape: tuple[int, ...],
    num_outputs: int,
    channels: tuple[int, ...] = (16, 32),
    kernel_size: int = 3,
    dense_width: int = 64,
    activation: str = "relu",
    pooling: str = "max",
    kernel_init: str = "lecun_normal",
    init_scale: float = 0.01,
) -> Model:
    """A small CNN; see the module docstring for the architecture and accepted input shapes.

    Args:
        input_shape: `(L,)`, `(L, C)` or `(H, W, C)`.
        num_outputs: number of classes (logits) or regression targets.
        channels: output channels of each conv block; each block halves every spatial size.
        kernel_size: conv window length per spatial dim.
        dense_width: units of the hidden dense layer after flattening.
        activation: one of relu, tanh, gelu, silu, sigmoid.
        pooling: "max" or "avg".
        kernel_init, init_scale: the kernel initializer of every layer, as for ``mlp``.

    Returns:
        A `Model` whose `apply` maps x [B, *input_shape] to outputs [B, num_outputs].
    """
    input_shape = check_shape(input_shape, num_outputs)
    if len(input_shape) > 3:
        raise ValueError(f"cnn takes input_shape (L,), (L, C) or (H, W, C), got {input_shape}")
    activation_fn(activation)  # fail here, not at the first init
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; known poolings: {', '.join(POOLINGS)}")
    channels = tuple(int(c) for c in channels)
    module = CNN(
        input_shape=input_shape,
        num_outputs=int(num_outputs),
        channels=channels,
        kernel_size=int(kernel_size),
        dense_width=int(dense_width),
        activation=activation,
        pooling=pooling,
        kernel_init=kernel_initializer(kernel_init, init_scale),
    )
    size = "x".join(map(str, input_shape))
    conv = "-".join(map(str, channels))
    return from_module(
        module,
        input_shape,
        name=f"cnn({size}, conv {conv}, k{kernel_size}, {pooling}pool, dense {dense_width}, "
        f"{num_outputs} out, {activation})",
    )
