"""The `Model` pair of pure functions, and the pieces every architecture shares.

A model is `init(key) -> params` and `apply(params, x) -> outputs`, nothing else: no state, no
methods, no mutable collections. Parameters are plain nested dicts of float32 arrays, so a
params pytree can be stacked along a leading axis and `jax.vmap`-ed over seeds.

Example (x [B, 40] -> logits [B, 10]):
    >>> model = mlp((40,), 10)                  # doctest: +SKIP
    >>> params = model.init(jax.random.key(0))  # doctest: +SKIP
    >>> logits = model.apply(params, x)         # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

PyTree = Any


class Model(NamedTuple):
    """A model as a pair of pure functions.

    Attributes:
        init: `init(key) -> params`, any pytree of float arrays.
        apply: `apply(params, x [B, *input_shape]) -> outputs [B, num_outputs]`.
        name: a short human-readable description, e.g. `"mlp(40-256-256-10, relu)"`
            (default "model").

    Example: `Model(init=lambda key: {"w": jnp.zeros((40, 10))}, apply=lambda p, x: x @ p["w"])`.
    """

    init: Callable[[jax.Array], PyTree]
    apply: Callable[[PyTree, jax.Array], jax.Array]
    name: str = "model"


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "sigmoid": nn.sigmoid,
}


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    """The elementwise nonlinearity called `name`; ValueError listing the known ones otherwise."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; known activations: {', '.join(ACTIVATIONS)}"
        ) from None


def check_shape(input_shape: tuple[int, ...], num_outputs: int) -> tuple[int, ...]:
    """`input_shape` as a tuple of positive ints; ValueError on an empty shape or bad sizes."""
    input_shape = tuple(int(d) for d in input_shape)
    if not input_shape or any(d <= 0 for d in input_shape):
        raise ValueError(
            f"input_shape must be a non-empty tuple of positive sizes, got {input_shape}"
        )
    if int(num_outputs) <= 0:
        raise ValueError(f"num_outputs must be positive, got {num_outputs}")
    return input_shape


def flatten_example(x: jax.Array, input_shape: tuple[int, ...]) -> jax.Array:
    """Flattens the trailing `input_shape` dims: x [*batch, *input_shape] -> [*batch, features]."""
    batch_shape = x.shape[: x.ndim - len(input_shape)]
    return x.reshape(batch_shape + (-1,))


def from_module(module: nn.Module, input_shape: tuple[int, ...], name: str) -> Model:
    """Wraps a flax linen module as a `Model`.

    `init(key) = module.init(key, zeros [1, *input_shape])["params"]` and
    `apply(params, x) = module.apply({"params": params}, x)`.
    """

    def init(key: jax.Array) -> PyTree:
        return module.init(key, jnp.zeros((1, *input_shape), jnp.float32))["params"]

    def apply(params: PyTree, x: jax.Array) -> jax.Array:
        return module.apply({"params": params}, x)

    return Model(init=init, apply=apply, name=name)
