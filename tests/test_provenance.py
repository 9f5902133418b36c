"""Provenance: resumed sweeps and rebuilt analyses refuse other data, models, losses and
optimizers, naming the difference (issue 13)."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsgd
from jaxsgd import Grid, SweepConfig, run_sweep
from jaxsgd.engine.provenance import differences, provenance
from jaxsgd.engine.sweep import prepare


def net(activation=nn.relu, kernel_init=nn.initializers.lecun_normal()):
    """The same name and parameter shapes whatever the activation and initialiser."""

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            hidden = activation(nn.Dense(16, kernel_init=kernel_init)(x))
            return nn.Dense(10, kernel_init=kernel_init)(hidden)

    return jaxsgd.from_module(Net(), (40,), name="net")


def make_loss(smoothing):
    def loss(outputs, labels):  # the same qualified name for every smoothing
        targets = optax.smooth_labels(jax.nn.one_hot(labels, 10), smoothing)
        return optax.softmax_cross_entropy(outputs, targets)

    return loss


LION = lambda hp: optax.lion(hp.learning_rate, b1=hp.momentum)  # noqa: E731
ADAMW = lambda hp: optax.adamw(hp.learning_rate, b1=hp.momentum)  # noqa: E731
CONFIG = SweepConfig(batch_sizes=(16,), budget=4, budget_unit="steps", eval_every=2,
                     grid=Grid(learning_rate=(1e-3, 3e-3), momentum=0.9, seed=(0, 1)))


@pytest.fixture(scope="module")
def arrays(mnist1d_small):
    d = mnist1d_small
    return jaxsgd.from_arrays(d.x_train, d.y_train, d.x_test, d.y_test, name="mine")


@pytest.fixture(scope="module")
def model():
    return net()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, arrays, model):
    out = tmp_path_factory.mktemp("provenance") / "sweep"
    result = run_sweep(CONFIG, out, data=arrays, model=model, optimizer=LION,
                       loss=make_loss(0.1), progress=False)
    return out, result


@pytest.mark.parametrize("change, message", [
    ({"model": net(kernel_init=nn.initializers.he_normal())},
     "model: its initial parameters differ"),
    ({"model": net(activation=nn.tanh)}, "model: its outputs on the same inputs differ"),
    ({"loss": make_loss(0.3)}, "loss: its values on the same outputs differ"),
    ({"optimizer": ADAMW}, "optimizer: its updates from the same gradient differ"),
])
def test_resuming_with_another_part_is_refused_naming_it(folder, arrays, model, change, message):
    parts = dict(data=arrays, model=model, optimizer=LION, loss=make_loss(0.1)) | change
    with pytest.raises(FileExistsError, match=f"holds a different sweep \\({message}"):
        run_sweep(CONFIG, folder[0], progress=False, **parts)


def test_the_same_parts_resume_and_a_model_built_twice_has_one_fingerprint(folder, arrays,
                                                                         model):
    out, first = folder
    again = run_sweep(CONFIG, out, data=arrays, model=model, optimizer=LION,
                      loss=make_loss(0.1), progress=False)  # loads the finished group
    np.testing.assert_array_equal(again.metrics.test_loss, first.metrics.test_loss)
    built = [prepare(CONFIG, arrays, net(), loss=make_loss(0.1), optimizer=LION)
             for _ in range(2)]
    records = [provenance(*p, probes=()) for p in built]
    assert differences(*records) == []
    assert differences(first.provenance, records[0]) == []  # a rebuilt model: the same sweep


def test_saved_results_name_the_user_parts(folder, capsys):
    out, _ = folder
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == {"name": "user:mine"}
    assert config["model"] == {"name": "user:net"}
    assert config["optimizer"]["name"] == "user:<lambda>"
    assert config["training"]["loss"] == "user:make_loss.<locals>.loss"
    assert jaxsgd.load_sweep(out).config.model == "user:net"
    from jaxsgd.cli import main

    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "data mine (800 train, 200 test, inputs (40,), 10 classes)" in shown
    assert "model net (826 parameters)" in shown


def test_analyses_refuse_to_rebuild_other_data_or_models(folder, arrays, model):
    out, _ = folder
    result = jaxsgd.load_sweep(out, model=model)
    loss = make_loss(0.1)
    with pytest.raises(jaxsgd.ConfigError, match="user's own data 'user:mine'; pass it as data="):
        jaxsgd.minima_summary(result, model=model, loss=loss)
    with pytest.raises(jaxsgd.ConfigError, match="user's own model 'user:net'; pass it as "
                                                 "model="):
        jaxsgd.minima_summary(result, arrays, loss=loss)
    other = jaxsgd.from_arrays(arrays.x_train[::-1], arrays.y_train[::-1], arrays.x_test,
                               arrays.y_test, name="mine")
    with pytest.raises(jaxsgd.ConfigError, match=r"data: the data here differs from the "
                                                 r"sweep's \(its arrays differ\); pass the "
                                                 r"sweep's own as data="):
        jaxsgd.minima_summary(result, other, model=model, loss=loss)
    with pytest.raises(jaxsgd.ConfigError, match=r"model: .*\(its outputs on the same inputs "
                                                 r"differ"):
        jaxsgd.minima_summary(result, arrays, model=net(activation=nn.tanh), loss=loss)
    with pytest.raises(jaxsgd.ConfigError, match=r"loss: .*\(its values"):
        jaxsgd.minima_summary(result, arrays, model=model, loss=make_loss(0.3))

    # With every part: the per-run functions' values.
    options = jaxsgd.MinimaOptions(num_examples=64, measures=("lambda_max",))
    table = jaxsgd.minima_summary(result, arrays, model=model, loss=loss, options=options)
    params = result.run_params(16, learning_rate=3e-3, seed=1)
    initial = model.init(jax.random.split(jax.random.key(1), 3)[0])
    batch = (jnp.asarray(arrays.x_train[:64]), jnp.asarray(arrays.y_train[:64]))
    loss_fn = jaxsgd.make_loss_fn(model, jaxsgd.task_for(10, loss))
    alone = jax.jit(lambda p, p0: jaxsgd.measure_minimum(loss_fn, p, batch, p0,
                                                         key=jax.random.key(0),
                                                         options=options))(params, initial)
    row = table.sel(batch_size=16, learning_rate=3e-3, seed=1)
    for name in ("lambda_max", "distance_from_init"):
        assert float(row[name]) == pytest.approx(float(alone[name]), rel=1e-5), name


def test_probe_options_given_as_lists(mnist1d_small, model, tmp_path):
    """A list in a probe's options is a tuple before anything compiles (API); a list where the
    TOML option takes one value is refused in one line naming it."""
    from jaxsgd.cli import read_config_and_probes

    base = jaxsgd.gradient_norm(every=2)
    listed = base._replace(name="listed", options=(("sizes", [1, 2]), ("scale", np.float32(2))))
    result = run_sweep(CONFIG.replace(budget=2, grid=Grid(learning_rate=0.1)),
                       data=mnist1d_small, model=model, probes=(listed,), progress=False)
    assert result.provenance["run"]["probes"] == [["listed", 2, {"sizes": [1, 2], "scale": 2.0}]]
    with pytest.raises(jaxsgd.ConfigError, match=r"option 'bad'.*is not a JSON value"):
        run_sweep(CONFIG, data=mnist1d_small, probes=(base._replace(options=(("bad", {1}),)),))
    with pytest.raises(jaxsgd.ConfigError, match="two probes are named 'gradient_norm'"):
        run_sweep(CONFIG, data=mnist1d_small, probes=(base, base))
    toml = tmp_path / "sweep.toml"
    toml.write_text("[probes.noise_scale]\ndecay = [0.9]\n")
    with pytest.raises(Exception, match=r"sweep.toml: \[probes.noise_scale\]: option 'decay' = "
                                        r"\[0.9\] must be a single value, not a list$"):
        read_config_and_probes(toml)
    with pytest.raises(ValueError, match=r"decay: \[0.9\] must be a number in \[0, 1\)"):
        jaxsgd.noise_scale_probe(decay=[0.9])
