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


# Kernel initialisers by name (flax.linen.initializers); biases always start at zero.
INITIALIZERS: dict[str, Callable[[float], Callable]] = {
    "lecun_normal": lambda scale: nn.initializers.lecun_normal(),
    "lecun_uniform": lambda scale: nn.initializers.lecun_uniform(),
    "he_normal": lambda scale: nn.initializers.he_normal(),
    "he_uniform": lambda scale: nn.initializers.he_uniform(),
    "glorot_normal": lambda scale: nn.initializers.glorot_normal(),
    "glorot_uniform": lambda scale: nn.initializers.glorot_uniform(),
    "normal": lambda scale: nn.initializers.normal(stddev=scale),
    "truncated_normal": lambda scale: nn.initializers.truncated_normal(stddev=scale),
}


DEFAULT_KERNEL_INIT = nn.initializers.lecun_normal()  # flax's own Dense/Conv default


def kernel_initializer(name: str, scale: float = 0.01) -> Callable:
    """The flax initializer called ``name`` (one of ``INITIALIZERS``); ``scale`` is the standard
    deviation of "normal" and "truncated_normal" (the others scale with the fan: LeCun 1/fan_in,
    He 2/fan_in, Glorot 2/(fan_in + fan_out) variance). ValueError naming the known ones."""
    if name not in INITIALIZERS:
        raise ValueError(f"unknown kernel_init {name!r}; known: {', '.join(INITIALIZERS)}")
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0):
        raise ValueError(f"init_scale: {scale!r} is not a positive number")
    return INITIALIZERS[name](float(scale))


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


def from_module(module: nn.Module, input_shape: tuple[int, ...], name: str | None = None) -> Model:
    """Wraps any flax linen module as a `Model` (name: default the module's class name).

    Example: `jaxsgd.from_module(MyNet(), (40,))` for a module taking x [B, 40].

    `init(key) = module.init(key, zeros [1, *input_shape])["params"]` and
    `apply(params, x) = module.apply({"params": params}, x)`.
    """

    def init(key: jax.Array) -> PyTree:
        return module.init(key, jnp.zeros((1, *input_shape), jnp.float32))["params"]

    name = type(module).__name__ if name is None else name

    def apply(params: PyTree, x: jax.Array) -> jax.Array:
        return module.apply({"params": params}, x)

    return Model(init=init, apply=apply, name=name)
