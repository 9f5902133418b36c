"""Tests for jaxsgd.models and jaxsgd.losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxsgd.losses import accuracy, cross_entropy, make_loss_fn, mse, task_for
from jaxsgd.models import MODELS, cnn, linear, make_model, mlp


def _x(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _random_params(model, seed=0):
    """Random params of the model's structure and shapes, made without compiling `model.init`.

    Kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2) (nonzero, so tests see them). Compiling an
    init (threefry + truncated normal) costs ~1 s on CPU; tests of `apply` don't need it.
    """
    rng = np.random.default_rng(seed)

    def fill(s):
        std = 0.1 if len(s.shape) == 1 else 1.0 / np.sqrt(np.prod(s.shape[:-1]))
        return jnp.asarray(std * rng.normal(size=s.shape), s.dtype)

    return jax.tree.map(fill, jax.eval_shape(model.init, jax.random.key(0)))


# ----------------------------------------------------------------------------- models


def test_reference_mlp_structure_and_parameter_count():
    model = mlp((40,), 10, width=256, depth=2)
    params = jax.jit(model.init)(jax.random.key(0))

    assert set(params) == {"Dense_0", "Dense_1", "Dense_2"}
    expected_shapes = {
        "Dense_0": ((40, 256), (256,)),
        "Dense_1": ((256, 256), (256,)),
        "Dense_2": ((256, 10), (10,)),
    }
    for layer, (kernel_shape, bias_shape) in expected_shapes.items():
        assert set(params[layer]) == {"kernel", "bias"}
        assert params[layer]["kernel"].shape == kernel_shape
        assert params[layer]["bias"].shape == bias_shape
        assert params[layer]["kernel"].dtype == jnp.float32
        np.testing.assert_array_equal(params[layer]["bias"], 0.0)

    count = sum(leaf.size for leaf in jax.tree.leaves(params))
    assert count == 40 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10

    out = jax.jit(model.apply)(params, _x((7, 40)))
    assert out.shape == (7, 10)
    assert out.dtype == jnp.float32


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_mlp_depth_is_number_of_hidden_layers(depth):
    params = jax.eval_shape(mlp((6,), 2, width=5, depth=depth).init, jax.random.key(0))
    assert sorted(params) == [f"Dense_{i}" for i in range(depth + 1)]


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "silu", "sigmoid"])
def test_mlp_activation_is_applied_between_layers(activation):
    # one hidden layer: out = act(x W0 + b0) W1 + b1, computed by hand from the params.
    model = mlp((4,), 3, width=8, depth=1, activation=activation)
    params = _random_params(model)
    x = _x((5, 4))
    act = {
        "relu": jax.nn.relu,
        "tanh": jnp.tanh,
        "gelu": jax.nn.gelu,
        "silu": jax.nn.silu,
        "sigmoid": jax.nn.sigmoid,
    }[activation]
    d0, d1 = params["Dense_0"], params["Dense_1"]
    expected = act(x @ d0["kernel"] + d0["bias"]) @ d1["kernel"] + d1["bias"]
    np.testing.assert_allclose(model.apply(params, x), expected, rtol=1e-5, atol=1e-6)


def test_unknown_activation_is_named_with_known_ones():
    with pytest.raises(ValueError, match=r"'swish'.*relu.*tanh.*gelu.*silu.*sigmoid"):
        mlp((40,), 10, activation="swish")
    with pytest.raises(ValueError, match="'swish'"):
        cnn((40,), 10, activation="swish")


def test_init_and_apply_are_pure_functions_vmap_equals_loop():
    model = mlp((40,), 10, width=32, depth=1)
    keys = jax.random.split(jax.random.key(3), 3)
    x = _x((6, 40))

    stacked = jax.jit(jax.vmap(model.init))(keys)
    vmapped = jax.jit(jax.vmap(model.apply, in_axes=(0, None)))(stacked, x)

    init, apply = jax.jit(model.init), jax.jit(model.apply)
    looped_params = [init(k) for k in keys]
    looped = jnp.stack([apply(p, x) for p in looped_params])
    np.testing.assert_allclose(vmapped, looped, rtol=1e-6, atol=1e-6)
    for i, p in enumerate(looped_params):
        kernel = p["Dense_0"]["kernel"]
        np.testing.assert_allclose(stacked["Dense_0"]["kernel"][i], kernel, atol=1e-6)
    # different seeds really give different networks
    assert not np.allclose(looped[0], looped[1])


def test_linear_equals_x_times_w_plus_b():
    model = linear((40,), 10)
    params = jax.jit(model.init)(jax.random.key(0))
    assert set(params) == {"Dense_0"}
    w, b = params["Dense_0"]["kernel"], params["Dense_0"]["bias"]
    assert w.shape == (40, 10) and b.shape == (10,)
    b = b + 0.5  # a nonzero bias so the test sees it
    params = {"Dense_0": {"kernel": w, "bias": b}}
    x = _x((5, 40))
    expected = np.asarray(x, np.float64) @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
    np.testing.assert_allclose(model.apply(params, x), expected, rtol=1e-5, atol=1e-5)


def test_linear_flattens_image_input():
    model = linear((4, 3, 2), 5)
    params = _random_params(model)
    x = _x((6, 4, 3, 2))
    expected = x.reshape(6, 24) @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    np.testing.assert_allclose(model.apply(params, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "input_shape, flat_features",
    [
        ((40,), 10 * 32),  # MNIST-1D: 40 -> 20 -> 10 positions, 32 channels
        ((28, 28, 1), 7 * 7 * 32),  # MNIST
        ((32, 32, 3), 8 * 8 * 32),  # CIFAR
    ],
)
def test_cnn_shapes_and_finite_gradients(input_shape, flat_features):
    model = cnn(input_shape, 10)
    if input_shape == (40,):  # the project's data set: check the real init once
        params = jax.jit(model.init)(jax.random.key(0))
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    else:
        params = _random_params(model)
    assert set(params) == {"Conv_0", "Conv_1", "Dense_0", "Dense_1"}
    window = (3,) * (1 if len(input_shape) == 1 else 2)
    in_channels = 1 if len(input_shape) == 1 else input_shape[-1]
    assert params["Conv_0"]["kernel"].shape == (*window, in_channels, 16)
    assert params["Conv_1"]["kernel"].shape == (*window, 16, 32)
    assert params["Dense_0"]["kernel"].shape == (flat_features, 64)

    loss_fn = make_loss_fn(model, task_for(10))

    def loss_and_outputs(params, batch):
        return loss_fn(params, batch), model.apply(params, batch[0])

    batch = (_x((4, *input_shape)), jnp.array([0, 1, 2, 3]))
    (loss, out), grads = jax.jit(jax.value_and_grad(loss_and_outputs, has_aux=True))(params, batch)
    assert out.shape == (4, 10)
    assert bool(jnp.isfinite(loss))
    for leaf in jax.tree.leaves(grads):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    assert float(jnp.abs(grads["Conv_0"]["kernel"]).sum()) > 0.0


def test_cnn_multichannel_1d_avg_pool_and_odd_sizes():
    # (L, C) is a 1-D signal with C channels; SAME pooling never shrinks a size to zero.
    model = cnn((9, 4), 3, channels=(8, 8, 8, 8), pooling="avg", activation="tanh")
    params = _random_params(model)
    assert params["Conv_0"]["kernel"].shape == (3, 4, 8)
    assert params["Dense_0"]["kernel"].shape == (1 * 8, 64)  # 9 -> 5 -> 3 -> 2 -> 1
    out = jax.jit(model.apply)(params, _x((2, 9, 4)))
    assert out.shape == (2, 3)
    assert bool(jnp.all(jnp.isfinite(out)))


def test_cnn_rejects_unknown_pooling_and_4d_input():
    with pytest.raises(ValueError, match="'median'"):
        cnn((40,), 10, pooling="median")
    with pytest.raises(ValueError, match="input_shape"):
        cnn((4, 4, 4, 1), 10)


def test_make_model_builds_the_named_model():
    assert MODELS == ("linear", "mlp", "cnn")
    a = make_model("mlp", (40,), 10, width=16, depth=1, activation="tanh")
    b = mlp((40,), 10, width=16, depth=1, activation="tanh")
    assert a.name == b.name == "mlp(40-16-10, tanh)"
    params = _random_params(a)
    assert params["Dense_0"]["kernel"].shape == (40, 16)
    x = _x((3, 40))
    np.testing.assert_array_equal(a.apply(params, x), b.apply(params, x))
    assert make_model("cnn", (40,), 4, channels=(8,)).name == cnn((40,), 4, channels=(8,)).name
    assert make_model("linear", (40,), 4).name == linear((40,), 4).name


def test_make_model_errors_name_the_bad_name_or_option():
    with pytest.raises(ValueError, match=r"'transformer'.*linear.*mlp.*cnn"):
        make_model("transformer", (40,), 10)
    with pytest.raises(ValueError, match=r"'widht'.*width"):
        make_model("mlp", (40,), 10, widht=64)
    with pytest.raises(ValueError, match="'width'"):
        make_model("linear", (40,), 10, width=64)


# ----------------------------------------------------------------------------- losses


def test_cross_entropy_equals_numpy_log_softmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, size=6)
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -log_softmax[np.arange(6), labels].mean()
    np.testing.assert_allclose(cross_entropy(jnp.asarray(logits), jnp.asarray(labels)), expected,
                               rtol=1e-5)


def test_mse_is_half_mean_over_examples_of_summed_squares():
    predictions = jnp.array([[1.0, 2.0], [0.0, -1.0], [3.0, 3.0]])
    targets = jnp.array([[0.0, 0.0], [1.0, 1.0], [3.0, 1.0]])
    # per example sums of squares: 1+4=5, 1+4=5, 0+4=4; mean 14/3; half 7/3
    np.testing.assert_allclose(mse(predictions, targets), 7.0 / 3.0, rtol=1e-6)
    # K = 1 with targets [B]: mean of (y_hat - y)^2 / 2, not a [B, B] broadcast
    np.testing.assert_allclose(mse(jnp.array([[1.0], [3.0]]), jnp.array([0.0, 1.0])),
                               0.5 * (1.0 + 4.0) / 2, rtol=1e-6)


def test_accuracy_on_hand_made_logits():
    logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 5.0, 1.0], [0.1, 0.2, 0.3], [1.0, 0.0, 3.0]])
    labels = jnp.array([0, 1, 0, 1])  # right, right, wrong, wrong
    np.testing.assert_allclose(accuracy(logits, labels), 0.5)


def test_task_for():
    classification = task_for(10)
    regression = task_for(0)
    assert classification.name == "classification" and regression.name == "regression"
    logits, labels = jnp.array([[3.0, 0.0], [0.0, 1.0]]), jnp.array([0, 0])
    metrics = classification.metrics(logits, labels)
    assert set(metrics) == {"loss", "accuracy"}
    np.testing.assert_allclose(metrics["accuracy"], 0.5)
    np.testing.assert_allclose(metrics["loss"], cross_entropy(logits, labels))
    assert set(regression.metrics(logits, logits + 1)) == {"loss"}
    np.testing.assert_allclose(regression.loss(logits, logits + 1), 1.0)  # 0.5 * 2 outputs * 1^2
    with pytest.raises(ValueError):
        task_for(-1)


@pytest.mark.parametrize("num_classes", [3, 0])
def test_make_loss_fn_gradient_matches_finite_differences_float64(num_classes):
    num_outputs = num_classes or 2
    rng = np.random.default_rng(0)
    model = linear((4,), num_outputs)
    task = task_for(num_classes)
    with jax.enable_x64(True):
        params = {"Dense_0": {"kernel": jnp.asarray(rng.normal(size=(4, num_outputs))),
                              "bias": jnp.asarray(rng.normal(size=(num_outputs,)))}}
        x = jnp.asarray(rng.normal(size=(5, 4)))
        if num_classes:
            y = jnp.asarray(rng.integers(0, num_classes, size=5))
        else:
            y = jnp.asarray(rng.normal(size=(5, num_outputs)))
        loss_fn = jax.jit(make_loss_fn(model, task))
        assert loss_fn(params, (x, y)).dtype == jnp.float64
        grads = jax.grad(loss_fn)(params, (x, y))

        flat, unravel = ravel_pytree(params)
        eps = 1e-6
        numeric = np.array([
            (loss_fn(unravel(flat.at[i].add(eps)), (x, y))
             - loss_fn(unravel(flat.at[i].add(-eps)), (x, y))) / (2 * eps)
            for i in range(flat.size)
        ])
        analytic = np.asarray(ravel_pytree(grads)[0])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-9)
    assert np.abs(analytic).max() > 1e-3


def test_kernel_initializer_is_an_option_equal_to_a_hand_written_flax_module():
    import flax.linen as nn

    import jaxsgd

    class HandMLP(nn.Module):  # what a protocol's authors would write
        @nn.compact
        def __call__(self, x):
            init = nn.initializers.he_normal()
            h = nn.relu(nn.Dense(64, kernel_init=init)(x))
            return nn.Dense(10, kernel_init=init)(h)

    key = jax.random.key(3)
    ours = make_model("mlp", (40,), 10, width=64, depth=1, kernel_init="he_normal").init(key)
    hand = jaxsgd.from_module(HandMLP(), (40,)).init(key)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(hand)):
        np.testing.assert_array_equal(a, b)
    # the variance follows the rule: He 2/fan_in, Glorot 2/(fan_in + fan_out)
    wide = mlp((400,), 10, width=1000, depth=1, kernel_init="he_normal").init(key)
    assert np.std(wide["Dense_0"]["kernel"]) == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    glorot = linear((400,), 600, kernel_init="glorot_uniform").init(key)["Dense_0"]["kernel"]
    assert np.std(glorot) == pytest.approx(np.sqrt(2 / 1000), rel=0.02)
    small = cnn((40,), 10, kernel_init="truncated_normal", init_scale=1e-3).init(key)
    assert float(np.max(np.abs(small["Conv_0"]["kernel"]))) <= 2e-3  # truncated at 2 std
    # the default is unchanged: LeCun normal
    default = mlp((40,), 10, width=64, depth=1).init(key)
    explicit = mlp((40,), 10, width=64, depth=1, kernel_init="lecun_normal").init(key)
    for a, b in zip(jax.tree.leaves(default), jax.tree.leaves(explicit)):
        np.testing.assert_array_equal(a, b)
    assert jaxsgd.from_module(HandMLP(), (40,)).name == "HandMLP"
    with pytest.raises(ValueError, match="unknown kernel_init 'he'; known: lecun_normal"):
        mlp((40,), 10, kernel_init="he")
    with pytest.raises(ValueError, match="init_scale: -1.0 is not a positive number"):
        mlp((40,), 10, kernel_init="normal", init_scale=-1.0)
