"""Run the tests' kinds of sweeps with two versions of jaxsgd and compare the results bitwise.

  PYTHONPATH=OLD_CHECKOUT python tests/_compare_versions.py run old.npz
  PYTHONPATH=NEW_CHECKOUT python tests/_compare_versions.py run new.npz
  python tests/_compare_versions.py compare old.npz new.npz

Each sweep's metrics (every data variable) and final parameters are saved; ``compare`` prints,
per sweep, whether they are bitwise equal, and otherwise the largest relative difference
|a − b| / |a| (Euclidean norms over an array's finite entries) among its arrays. Uses
only the public API both versions share; run with ``JAX_NUM_CPU_DEVICES=4`` (as the tests).
Not collected by pytest (a refactor's check, run once against the parent commit).
"""

import sys

import numpy as np


def sweeps():
    import jaxsgd
    from jaxsgd import Grid, SweepConfig

    base = dict(data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
                model_options={"width": 32, "depth": 2}, batch_sizes=(16, 64), budget=2**11,
                eval_every=2**9, target_metric="test_error", target_value=0.6)
    lrs = (0.05, 0.2, 30.0)  # the last one diverges
    yield "quick_start", SweepConfig.from_dict(__import__("tomllib").load(
        open("experiments/configs/mnist1d_quick.toml", "rb"))), ()
    yield "sgd", SweepConfig(**base, grid=Grid(learning_rate=lrs, seed=(0, 1))), ()
    yield "momentum_cosine", SweepConfig(**base, optimizer="momentum", schedule="cosine",
                                         grid=Grid(learning_rate=lrs, momentum=(0.0, 0.9),
                                                   warmup=(0.0, 0.1), seed=(0,))), ()
    yield "nesterov_step_wd", SweepConfig(**base, optimizer="nesterov", schedule="step",
                                          grid=Grid(learning_rate=lrs[:2], decay=(0.1, 0.5),
                                                    weight_decay=(0.0, 1e-3))), ()
    yield "adam", SweepConfig(**base, optimizer="adam",
                              grid=Grid(learning_rate=(1e-3, 1e-2), seed=(0, 1))), ()
    yield "adamw_cosine", SweepConfig(**base, optimizer="adamw", schedule="cosine",
                                      grid=Grid(learning_rate=(1e-3, 1e-2),
                                                weight_decay=(0.0, 0.01))), ()
    yield "steps_log_replacement_stop", SweepConfig(
        **{**base, "budget": 200, "eval_every": None}, budget_unit="steps", eval_log_points=6,
        sampling="replacement", stop_at_target=True, grid=Grid(learning_rate=lrs)), ()
    yield "regression", SweepConfig(
        data="linear_regression", data_options={}, model="linear", batch_sizes=(8, 32),
        budget=512, grid=Grid(learning_rate=(0.01, 0.05))), ()
    # the tests' own Adam sweeps: test_every_optimizer_family_trains, keskar.py --quick
    small = dict(data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
                 model_options={"width": 32, "depth": 2}, batch_sizes=(32,), budget=100,
                 budget_unit="steps", eval_every=50)
    for optimizer in ("adam", "adamw"):
        yield f"test_{optimizer}_family", SweepConfig(
            **small, optimizer=optimizer,
            grid=Grid(learning_rate=(1e-3,), weight_decay=(0.0, 1e-2), seed=(0,))), ()
    yield "keskar_quick", SweepConfig(
        data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
        model_options={"width": 32, "depth": 1}, optimizer="adam", batch_sizes=(8, 256),
        budget=2**14, eval_every=2**9, target_metric="train_loss", target_value=1.2,
        stop_at_target=True, grid=Grid(learning_rate=(1e-2,), seed=(0, 1))), ()
    yield "probes", SweepConfig(**base, grid=Grid(learning_rate=lrs, seed=(0,))), (
        jaxsgd.gradient_norm(every=4), jaxsgd.noise_scale_probe(every=1),
        jaxsgd.hessian_noise_probe(every=32, num_examples=4),
        jaxsgd.lambda_max_probe(every=16))


def run(path):
    import jax

    import jaxsgd

    if hasattr(jaxsgd, "use_cpu_devices"):
        jaxsgd.use_cpu_devices()
    out = {}
    for name, config, probes in sweeps():
        result = jaxsgd.run_sweep(config, probes=probes, progress=False)
        for var in result.metrics.data_vars:
            out[f"{name}/metrics/{var}"] = result.metrics[var].values
        for b, params in result.params.items():
            for i, leaf in enumerate(jax.tree.leaves(params)):
                out[f"{name}/params/{b}/{i}"] = np.asarray(leaf)
    np.savez(path, **out)


def compare(old_path, new_path):
    old, new = np.load(old_path), np.load(new_path)
    names = sorted({k.split("/")[0] for k in old.files})
    for name in names:
        keys = [k for k in old.files if k.startswith(name + "/")]
        missing = [k for k in keys if k not in new.files]
        worst, unequal = 0.0, 0
        for k in keys:
            if k in missing:
                continue
            a, b = old[k], new[k]
            if a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                unequal += 1
                a, b = a.astype(float), b.astype(float)
                ok = np.isfinite(a) & np.isfinite(b)
                if not np.array_equal(np.isfinite(a), np.isfinite(b)):
                    worst = np.inf  # a run diverged in one version only
                elif ok.any():
                    worst = max(worst, float(np.linalg.norm(a[ok] - b[ok])
                                             / max(np.linalg.norm(a[ok]), 1e-30)))
        verdict = "bitwise identical" if not unequal and not missing else (
            f"{unequal} of {len(keys)} arrays differ, max relative difference {worst:.2e}")
        print(f"{name:28s} {len(keys):4d} arrays: {verdict}"
              + (f"; missing {missing}" if missing else ""))


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2])
    else:
        compare(sys.argv[2], sys.argv[3])
