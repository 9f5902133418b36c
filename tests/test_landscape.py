"""Loss landscapes against ground truth: explicit Python loops of loss_fn, the closed form of a
quadratic along a line, per-filter norms computed in NumPy, and the ReLU rescaling symmetry of
Dinh et al. (2017) under which filter-normalised slices must not change.

Compilation dominates this file's runtime, so params are built in NumPy from the model's shapes
(no flax init to compile), the reference loops call a jitted loss, and float64 tests share
shapes so their programs are compiled once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure

from jaxsgd.measure import landscape
from jaxsgd.measure.landscape import filter_normalize, plot_interpolation, plot_surface_2d
from jaxsgd.losses import classification_metrics, make_loss_fn, task_for
from jaxsgd.models import make_model

MODEL = make_model("mlp", (6,), 3, width=12, depth=2)  # 6-12-12-3 ReLU: 279 parameters
LOSS = jax.jit(make_loss_fn(MODEL, task_for(3)))
ALPHAS = np.linspace(-1.0, 2.0, 7)  # contains 0 and 1 exactly
GRID_A, GRID_B = np.array([-0.5, 0.0, 0.25, 1.0]), np.array([-1.0, 0.3, 0.6])  # 2-D slices


@jax.jit
def metrics(params, batch):
    return classification_metrics(MODEL.apply(params, batch[0]), batch[1])


# The functions under test, jitted as a caller would (fn and chunk_size static).
_jit = lambda f: jax.jit(f, static_argnums=0, static_argnames="chunk_size")
interpolate = _jit(landscape.interpolate)
loss_surface_1d = _jit(landscape.loss_surface_1d)
loss_surface_2d = _jit(landscape.loss_surface_2d)
filter_normalized_direction = jax.jit(landscape.filter_normalized_direction)


def _params(seed, model=MODEL):
    """Float64 NumPy params in the model's layout: kernels N(0, 1/fan_in), biases N(0, 0.3²)
    (non-zero, as in a trained network)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    return jax.tree_util.tree_map_with_path(
        lambda path, s: (0.3 * rng.normal(size=s.shape) if path[-1].key == "bias" else
                         rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))), shapes)


def _batch(seed=0, n=32):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)), rng.integers(0, 3, n)


def _combine(params, *terms):
    """θ + Σ c·d leaf by leaf in NumPy float64: the point a reference loop evaluates."""
    out = jax.tree.map(lambda p: np.asarray(p, np.float64), params)
    for c, d in terms:
        out = jax.tree.map(lambda p, v: p + c * np.asarray(v, np.float64), out, d)
    return out


def test_interpolate_matches_a_loop_of_loss_fn_and_hits_both_endpoints():
    a, b, batch = _params(0), _params(1), _batch(0)
    with jax.enable_x64(True):
        losses = interpolate(LOSS, a, b, batch, ALPHAS)
        points = [jax.tree.map(lambda p, q: (1 - t) * p + t * q, a, b) for t in ALPHAS]
        loop = [float(LOSS(p, batch)) for p in points]
        assert losses.shape == (7,)
        np.testing.assert_allclose(losses, loop, rtol=1e-12)
        assert float(losses[2]) == float(LOSS(a, batch))  # α = 0: θ_a exactly
        assert float(losses[4]) == float(LOSS(b, batch))  # α = 1: θ_b exactly
        # Several metrics at once: a dict of [A] arrays; chunks of 3 (7 = 3 + 3 + 1) agree.
        chunked = interpolate(metrics, a, b, batch, ALPHAS, chunk_size=3)
        assert set(chunked) == {"loss", "accuracy"}
        np.testing.assert_allclose(chunked["loss"], loop, rtol=1e-12)
        np.testing.assert_array_equal(chunked["accuracy"],
                                      [float(metrics(p, batch)["accuracy"]) for p in points])


def test_interpolation_of_a_quadratic_equals_its_closed_form():
    """L(θ) = ½(θ − c)ᵀA(θ − c) on a two-leaf pytree: along the line, a parabola in α."""
    rng = np.random.default_rng(3)
    m = rng.normal(size=(11, 11))
    hess, centre = m @ m.T / 11 + np.eye(11), rng.normal(size=11)

    def loss(params, batch):
        del batch
        flat = jnp.concatenate([params["w"], params["m"].ravel()]) - centre
        return 0.5 * flat @ (hess @ flat)

    flat_a, flat_b = rng.normal(size=11), rng.normal(size=11)
    tree = lambda f: {"w": f[:5], "m": f[5:].reshape(2, 3)}
    alphas = np.linspace(-1.0, 2.0, 13)
    da, step = flat_a - centre, flat_b - flat_a
    closed = (0.5 * da @ hess @ da + alphas * (da @ hess @ step)
              + 0.5 * alphas**2 * (step @ hess @ step))
    with jax.enable_x64(True):
        curve = interpolate(loss, tree(flat_a), tree(flat_b), None, alphas)
    np.testing.assert_allclose(curve, closed, rtol=1e-12)


def _filters(leaf):
    """Filters of a kernel as rows: slices along the last (output) axis, flattened."""
    leaf = np.asarray(leaf, np.float64)
    return np.moveaxis(leaf, -1, 0).reshape(leaf.shape[-1], -1)


def test_filter_normalized_direction_matches_filter_norms_and_zeroes_biases():
    cnn = make_model("cnn", (8,), 3, channels=(4,), dense_width=6)
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), _params(0, cnn))
    assert params["Conv_0"]["kernel"].shape == (3, 1, 4)  # [k, in, out]: 4 filters of [3, 1]
    params["LayerNorm_0"] = {"scale": jnp.ones((6,)), "bias": jnp.zeros((6,))}
    params["Dense_1"]["bias"] = jnp.ones((2, 3))  # a 2-D leaf named "bias" is still zeroed
    direction = filter_normalized_direction(params, key=jax.random.key(1))
    assert jax.tree.structure(direction) == jax.tree.structure(params)
    checked = 0
    for (path, p), d in zip(jax.tree_util.tree_leaves_with_path(params),
                            jax.tree.leaves(direction)):
        assert d.shape == p.shape and d.dtype == p.dtype == jnp.float32
        if path[-1].key in ("bias", "scale"):
            assert not np.any(np.asarray(d)), jax.tree_util.keystr(path)
            continue
        want, got = _filters(p), _filters(d)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(want, axis=1),
                                   rtol=1e-5)
        cosines = np.sum(got * want, 1) / np.linalg.norm(got, axis=1) ** 2
        assert np.all(np.abs(cosines) < 0.99)  # a random direction, not ±θ itself
        checked += 1
    assert checked == 3  # Conv_0, Dense_0, Dense_1 kernels
    other = filter_normalized_direction(params, key=jax.random.key(2))
    assert not np.allclose(other["Dense_0"]["kernel"], direction["Dense_0"]["kernel"])


def test_loss_surfaces_match_loops_with_alpha_along_rows():
    params, batch = _params(0), _batch(1)
    alphas, betas = GRID_A, GRID_B
    with jax.enable_x64(True):
        d1 = filter_normalized_direction(params, key=jax.random.key(1))
        d2 = filter_normalized_direction(params, key=jax.random.key(2))
        curve = loss_surface_1d(LOSS, params, d1, batch, ALPHAS)
        np.testing.assert_allclose(
            curve, [float(LOSS(_combine(params, (a, d1)), batch)) for a in ALPHAS], rtol=1e-12)
        surface = loss_surface_2d(LOSS, params, d1, d2, batch, alphas, betas)
        assert surface.shape == (4, 3)
        loop = np.array([[float(LOSS(_combine(params, (a, d1), (b, d2)), batch)) for b in betas]
                         for a in alphas])
        np.testing.assert_allclose(surface, loop, rtol=1e-12)
        # Orientation: row 1 is α = 0, i.e. L along d₂ alone; the two axes are not symmetric.
        np.testing.assert_allclose(
            surface[1], [float(LOSS(_combine(params, (b, d2)), batch)) for b in betas],
            rtol=1e-12)
        assert abs(float(surface[3, 0] - surface[0, 2])) > 1e-3
        # Chunks of 5 of the 12 points, and a dict of metrics, give the same [A, B] values.
        chunked = loss_surface_2d(metrics, params, d1, d2, batch, alphas, betas, chunk_size=5)
        assert chunked["accuracy"].shape == (4, 3)
        np.testing.assert_allclose(chunked["loss"], loop, rtol=1e-12)


def _rescale(params, c):
    """Dinh et al.'s θ' = (cW₁, cb₁, W₂/c, b₂): the same ReLU network function for c > 0."""
    out = dict(params)
    out["Dense_0"] = {k: c * v for k, v in params["Dense_0"].items()}
    out["Dense_1"] = {"kernel": params["Dense_1"]["kernel"] / c,
                      "bias": params["Dense_1"]["bias"]}
    return out


def _globally_normalized(params, seed):
    """The un-normalised baseline: Gaussian d (same draw for the same seed) with ‖d‖ = ‖θ‖."""
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    d = [rng.normal(size=np.shape(p)) for p in leaves]
    scale = np.sqrt(sum(np.sum(np.square(p)) for p in leaves) / sum(np.sum(x**2) for x in d))
    return jax.tree.unflatten(treedef, [scale * x for x in d])


def test_filter_normalisation_makes_1d_slices_invariant_to_relu_rescaling():
    params, batch = _params(4), _batch(2)
    rescaled = _rescale(params, 5.0)
    with jax.enable_x64(True):
        np.testing.assert_allclose(metrics(rescaled, batch)["loss"], LOSS(params, batch),
                                   rtol=1e-12)  # ground truth: the same function
        key = jax.random.key(7)
        filtered = [loss_surface_1d(LOSS, p, filter_normalized_direction(p, key=key), batch, ALPHAS)
                    for p in (params, rescaled)]
        np.testing.assert_allclose(filtered[0], filtered[1], rtol=1e-10)
        plain = [np.asarray(loss_surface_1d(LOSS, p, _globally_normalized(p, 7), batch, ALPHAS))
                 for p in (params, rescaled)]
    np.testing.assert_allclose(plain[0][2], plain[1][2], rtol=1e-12)  # α = 0: the same θ
    relative = np.abs(plain[0] - plain[1]) / plain[0]
    assert relative.max() > 0.2, relative


def test_vmapped_over_runs_equals_each_run_alone():
    runs = 3
    stack = lambda trees: jax.tree.map(lambda *xs: np.stack(xs), *trees)
    pick = lambda tree, r: jax.tree.map(lambda x: x[r], tree)
    starts, ends = stack([_params(s) for s in range(runs)]), stack([_params(10 + s)
                                                                     for s in range(runs)])
    batch, keys = _batch(0), (jax.random.key(1), jax.random.key(2))

    @jax.jit
    def sweep(a, b):
        d1, d2 = (jax.vmap(lambda p, k=k: filter_normalized_direction(p, key=k))(b) for k in keys)
        line = jax.vmap(lambda p, q: interpolate(metrics, p, q, batch, ALPHAS,
                                                 chunk_size=3))(a, b)
        surface = jax.vmap(lambda p, u, v: loss_surface_2d(LOSS, p, u, v, batch, GRID_A,
                                                           GRID_B))(b, d1, d2)
        return d1, line, surface

    with jax.enable_x64(True):
        d1, line, surface = sweep(starts, ends)
        assert line["loss"].shape == (runs, 7) and surface.shape == (runs, 4, 3)
        for r in range(runs):
            a, b = pick(starts, r), pick(ends, r)
            alone = [filter_normalized_direction(b, key=k) for k in keys]
            for x, y in zip(jax.tree.leaves(pick(d1, r)), jax.tree.leaves(alone[0])):
                np.testing.assert_allclose(x, y, rtol=1e-12)
            np.testing.assert_allclose(line["loss"][r], interpolate(LOSS, a, b, batch, ALPHAS),
                                       rtol=1e-12)
            np.testing.assert_allclose(surface[r], loss_surface_2d(LOSS, b, *alone, batch,
                                                                   GRID_A, GRID_B), rtol=1e-12)


def test_plot_helpers_draw_lines_and_contours_and_save_png(tmp_path):
    alphas = ALPHAS
    curves = {split: {"loss": 1.0 + alphas**2 + k, "accuracy": 0.9 - 0.1 * alphas**2}
              for k, split in enumerate(("train", "test"))}
    fig = plot_interpolation(alphas, curves)
    assert isinstance(fig, Figure)
    left, right = fig.axes
    assert len(left.lines) == 2 + 2  # train and test loss, plus the θ_a and θ_b markers
    assert len(right.lines) == 2  # train and test accuracy, dashed on the right axis
    assert [line.get_label() for line in left.lines[:2]] == ["train loss", "test loss"]
    np.testing.assert_array_equal(left.lines[1].get_ydata(), curves["test"]["loss"])
    assert sorted(line.get_xdata()[0] for line in left.lines[2:]) == [0.0, 1.0]
    fig.savefig(tmp_path / "interpolation.png")
    assert (tmp_path / "interpolation.png").stat().st_size > 0

    single = plot_interpolation(alphas, np.stack([alphas**2, alphas**2 + 1]),
                                labels=["small batch", "large batch"])
    assert len(single.axes) == 1 and len(single.axes[0].lines) == 4

    betas = np.linspace(-1.0, 1.0, 5)
    values = 1.0 + alphas[:, None] ** 2 + 3 * betas[None, :] ** 2  # [A, B]
    surface = plot_surface_2d(alphas, betas, values, levels=8, log=True,
                              path=tmp_path / "surface")
    ax = surface.axes[0]
    assert any(isinstance(c, ContourSet) for c in ax.collections)
    assert ax.get_xlim() == (-1.0, 2.0) and ax.get_ylim() == (-1.0, 1.0)  # α on x, β on y
    assert (tmp_path / "surface.png").stat().st_size > 0


def test_bad_input_raises_a_clear_value_error():
    a, b, batch = _params(0), _params(1), _batch(0)
    d = a  # any tree shaped like the params
    missing = {"Dense_0": a["Dense_0"], "Dense_1": a["Dense_1"]}
    with pytest.raises(ValueError, match=r"params_b lacks \['Dense_2'\]\['bias'\]"):
        landscape.interpolate(LOSS, a, missing, batch, [0.0, 1.0])
    wrong = {**b, "Dense_1": {"kernel": np.zeros((12, 5)), "bias": b["Dense_1"]["bias"]}}
    with pytest.raises(ValueError, match=r"params_b\['Dense_1'\]\['kernel'\] has shape \(12, 5\)"):
        landscape.interpolate(LOSS, a, wrong, batch, [0.0, 1.0])
    with pytest.raises(ValueError, match=r"alphas must be a non-empty 1-D array.*\(0,\)"):
        landscape.interpolate(LOSS, a, b, batch, [])
    with pytest.raises(ValueError, match=r"alphas must be a 1-D sequence.*scalar 0.5"):
        landscape.interpolate(LOSS, a, b, batch, 0.5)
    with pytest.raises(ValueError, match=r"betas must be a non-empty 1-D array.*\(2, 2\)"):
        landscape.loss_surface_2d(LOSS, a, d, d, batch, [0.0], np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"direction\['Dense_1'\]\['kernel'\] has shape"):
        landscape.loss_surface_1d(LOSS, a, wrong, batch, [0.0, 1.0])
    with pytest.raises(ValueError, match=r"direction2\['Dense_1'\]\['kernel'\] has shape"):
        landscape.loss_surface_2d(LOSS, a, d, wrong, batch, [0.0], [0.0])
    with pytest.raises(ValueError, match="chunk_size: 0 is not an integer >= 1"):
        landscape.loss_surface_1d(LOSS, a, d, batch, [0.0, 1.0], chunk_size=0)
    with pytest.raises(ValueError, match=r"direction\['Dense_0'\]\['kernel'\] has shape"):
        filter_normalize(jax.tree.map(lambda p: p.T, a), a)
    with pytest.raises(ValueError, match=r"params\['w'\] must be floating point"):
        landscape.filter_normalized_direction({"w": np.arange(3)}, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"curve 'loss' has shape \(3,\), but alphas has \(2,\)"):
        plot_interpolation([0.0, 1.0], {"loss": np.zeros(3)})
    with pytest.raises(ValueError, match=r"values has shape \(3, 2\), expected .* = \(2, 3\)"):
        plot_surface_2d([0.0, 1.0], [0.0, 1.0, 2.0], np.zeros((3, 2)))
