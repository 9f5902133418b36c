"""Baselines for the reference-grid benchmark: the same training grid without jaxsgd.

Every training baseline trains, one after another or split over processes, the runs
(learning rate x seed) of one batch size: MLP in-256-256-classes with ReLU, softmax
cross-entropy, plain SGD (no momentum) at a constant learning rate, minibatches of
``batch_size`` by per-epoch shuffling without replacement (the last ``N mod batch_size``
examples of each epoch dropped), ``num_steps`` optimizer steps, and an evaluation (loss and
accuracy on the full training and test sets) at every ``eval_every_steps``-th step and after
the last step (``evaluation_steps``).

Each returns a dict with at least:

  seconds            wall seconds of the whole grid, one-off costs included (end to end)
  steady_seconds     ``seconds`` less the one-off costs (compilation, process start)
  examples           training examples processed by all runs together
  runs, steps, evaluations   runs, optimizer steps per run, evaluations per run
  final_test_accuracy        {learning rate: final test accuracy, mean over seeds}
  best_final_test_accuracy   the best of those

and each checks that it trained (``check_trained``), so no number is timed on a no-op.

torch and jax are imported inside the functions: this module imports with numpy alone, so the
spawned PyTorch workers stay light.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any, NamedTuple, Sequence

import numpy as np

HIDDEN = (256, 256)  # hidden widths of the reference MLP
MIN_ACCURACY_OVER_CHANCE = 0.05  # "trained": best final test accuracy >= chance + this


class Arrays(NamedTuple):
    """The data set as host numpy arrays: x [N, D] float32, y [N] int labels (train and test)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def as_arrays(data: Any) -> Arrays:
    """``Arrays`` from anything with x_train, y_train, x_test, y_test (e.g. a jaxsgd Dataset)."""
    return Arrays(*(np.asarray(getattr(data, f)) for f in Arrays._fields))


def evaluation_steps(num_steps: int, eval_every_steps: int) -> list[int]:
    """Steps before which the parameters are evaluated: 0, every, 2 x every, ..., num_steps."""
    return sorted(set(range(0, num_steps + 1, eval_every_steps)) | {num_steps})


def grid_runs(learning_rates: Sequence[float], seeds: Sequence[int]) -> list[tuple[float, int]]:
    """The runs (learning rate, seed), seed-major."""
    return [(float(lr), int(seed)) for seed in seeds for lr in learning_rates]


def matmul_gflops(n: int, devices: Sequence[Any] | None = None, repeats: int = 10,
                  dtype: str = "float32", precision: str | None = None) -> float:
    """Best GFLOP/s of a jit'd [n, n] @ [n, n] matmul over ``repeats`` timed calls, in
    ``dtype`` at ``precision`` (None: JAX's default for the device).

    With ``devices``, every device multiplies its own pair at once (one jit over a
    device-sharded [devices, n, n] batch) and the FLOPs of all of them count; without, the
    default device does one.
    """
    import jax
    import jax.numpy as jnp

    shape = (n, n) if devices is None else (len(devices), n, n)
    a = jax.random.normal(jax.random.key(0), shape, dtype)
    b = jax.random.normal(jax.random.key(1), shape, dtype)
    if devices is not None:
        mesh = jax.sharding.Mesh(np.asarray(devices), ("d",))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
        a, b = jax.device_put(a, sharding), jax.device_put(b, sharding)
    matmul = jax.jit(lambda x, y: jnp.matmul(x, y, precision=precision))
    matmul(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * (1 if devices is None else len(devices)) / best / 1e9


def matmul_peak_gflops(sizes: Sequence[int] = (1024, 2048), repeats: int = 10) -> dict:
    """Float32 matmul peak of this machine measured with jax, in GFLOP/s.

    Each size is timed on the default device (XLA's intra-op threads, all cores) and, with
    several devices (jaxsgd makes one CPU device per core), on all devices at once.

    Returns {"gflops": the best, "by_case": {"1024 one device": GFLOP/s, ...}}.
    """
    import jax

    by_case = {}
    for n in sizes:
        by_case[f"{n} one device"] = matmul_gflops(n, repeats=repeats)
        if len(jax.devices()) > 1:
            by_case[f"{n} all {len(jax.devices())} devices"] = matmul_gflops(
                n, jax.devices(), repeats)
    return {"gflops": max(by_case.values()), "by_case": by_case}


def mlp_train_flops_per_example(widths: Sequence[int] = (40, 256, 256, 10)) -> int:
    """Matmul FLOPs of one training example: 3 x forward, forward = sum of 2 x in x out."""
    return 3 * sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))


def check_trained(final_test_accuracy: dict[float, float], num_classes: int) -> float:
    """The best finite final test accuracy; AssertionError unless it is well above chance."""
    best = max((a for a in final_test_accuracy.values() if np.isfinite(a)), default=np.nan)
    chance = 1 / num_classes
    assert best >= chance + MIN_ACCURACY_OVER_CHANCE, (
        f"did not train: best final test accuracy {best:.3f}, chance {chance:.3f}")
    return best


def _summary(data: Arrays, runs, finals: dict, seconds: float, one_off: float,
             batch_size: int, num_steps: int, num_evals: int) -> dict:
    """The result dict shared by every training baseline (see the module docstring)."""
    by_lr: dict[float, list[float]] = {}
    for lr, seed in runs:
        by_lr.setdefault(lr, []).append(finals[lr, seed])
    final = {lr: float(np.mean(a)) for lr, a in by_lr.items()}
    return {"seconds": seconds, "steady_seconds": seconds - one_off,
            "examples": len(runs) * num_steps * batch_size, "runs": len(runs),
            "steps": num_steps, "evaluations": num_evals, "final_test_accuracy": final,
            "best_final_test_accuracy": check_trained(final, data.num_classes)}


def _torch_mlp(data: Arrays):
    """torch.nn.Sequential of Linear/ReLU: in -> HIDDEN -> classes (torch's default init)."""
    import torch

    widths = (data.x_train.shape[1], *HIDDEN, data.num_classes)
    layers: list[Any] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def _torch_evaluate(model, x, y) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on the whole set (x, y)."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        logits = model(x)
        return (F.cross_entropy(logits, y).item(),
                (logits.argmax(1) == y).float().mean().item())


def _torch_train_runs(data: Arrays, batch_size: int, runs, num_steps: int,
                      eval_every_steps: int) -> dict[tuple[float, int], list[tuple]]:
    """Train ``runs`` one after another with PyTorch; {run: its evaluations, each (train loss,
    train accuracy, test loss, test accuracy)}."""
    import torch
    import torch.nn.functional as F

    x, xt = torch.from_numpy(data.x_train), torch.from_numpy(data.x_test)
    y, yt = (torch.from_numpy(data.y_train).long(), torch.from_numpy(data.y_test).long())
    n, per_epoch = x.shape[0], x.shape[0] // batch_size
    evals = set(evaluation_steps(num_steps, eval_every_steps))
    finals = {}
    for lr, seed in runs:
        torch.manual_seed(seed)
        model = _torch_mlp(data)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        order = torch.Generator().manual_seed(seed)
        history = []
        for step in range(num_steps + 1):
            if step in evals:
                history.append((*_torch_evaluate(model, x, y), *_torch_evaluate(model, xt, yt)))
            if step == num_steps:
                break
            if step % per_epoch == 0:
                perm = torch.randperm(n, generator=order)
            idx = perm[(step % per_epoch) * batch_size:(step % per_epoch + 1) * batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        finals[(lr, seed)] = history
    return finals


def _with_curves(result: dict, histories: dict) -> dict:
    """``result`` plus ``train_loss_curves`` {"lr,seed": training losses at the evaluations}."""
    return dict(result, train_loss_curves={f"{lr},{seed}": [float(h[0]) for h in history]
                                           for (lr, seed), history in histories.items()})


def torch_sequential(data, batch_size: int, learning_rates: Sequence[float],
                     seeds: Sequence[int], num_steps: int, eval_every_steps: int) -> dict:
    """Plain PyTorch, every run one after another in this process, torch's default threads.

    No one-off cost is separated: ``steady_seconds == seconds`` (torch is imported first,
    untimed).
    """
    import torch  # noqa: F401  (imported before the clock starts)

    data, runs = as_arrays(data), grid_runs(learning_rates, seeds)
    start = time.perf_counter()
    histories = _torch_train_runs(data, batch_size, runs, num_steps, eval_every_steps)
    seconds = time.perf_counter() - start
    finals = {run: h[-1][3] for run, h in histories.items()}
    return _with_curves(_summary(data, runs, finals, seconds, 0.0, batch_size, num_steps,
                                 len(evaluation_steps(num_steps, eval_every_steps))), histories)


def _torch_worker(data: Arrays, batch_size: int, runs, num_steps: int,
                  eval_every_steps: int) -> tuple[float, dict]:
    """One worker process: (wall-clock time.time() when training began, {run: evaluations})."""
    import torch

    torch.set_num_threads(1)
    began = time.time()
    return began, _torch_train_runs(data, batch_size, runs, num_steps, eval_every_steps)


def torch_two_processes(data, batch_size: int, learning_rates: Sequence[float],
                        seeds: Sequence[int], num_steps: int, eval_every_steps: int,
                        processes: int = 2) -> dict:
    """The grid split over ``processes`` spawned PyTorch workers, one thread each.

    ``seconds`` is the whole thing: starting the processes (interpreter, imports of the
    launching script and torch), training, collecting the results and shutting the pool down.
    Extra key ``start_seconds``: from the start until the last worker began training (the
    one-off cost; ``steady_seconds = seconds - start_seconds``).
    """
    data, runs = as_arrays(data), grid_runs(learning_rates, seeds)
    shares = [runs[i::processes] for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    wall_start, start = time.time(), time.perf_counter()
    with context.Pool(processes) as pool:
        outputs = pool.starmap(_torch_worker, [(data, batch_size, share, num_steps,
                                                eval_every_steps) for share in shares])
    seconds = time.perf_counter() - start
    start_seconds = max(began for began, _ in outputs) - wall_start
    histories = {run: h for _, share in outputs for run, h in share.items()}
    finals = {run: h[-1][3] for run, h in histories.items()}
    result = _summary(data, runs, finals, seconds, start_seconds, batch_size, num_steps,
                      len(evaluation_steps(num_steps, eval_every_steps)))
    return _with_curves(dict(result, start_seconds=start_seconds, processes=processes), histories)


def _jax_functions(data: Arrays):
    """(init(key) -> params, train_step(params, x, y, lr) -> params, evaluate(params, x, y)
    -> (loss, accuracy)), all jitted: the reference MLP written as a JAX user would."""
    import jax
    import jax.numpy as jnp
    import optax

    widths = (data.x_train.shape[1], *HIDDEN, data.num_classes)

    def init(key):
        keys = jax.random.split(key, len(widths) - 1)
        return [(jax.nn.initializers.lecun_normal()(k, (a, b)), jnp.zeros((b,)))
                for k, a, b in zip(keys, widths[:-1], widths[1:])]

    def apply(params, x):
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w + b)
        w, b = params[-1]
        return x @ w + b

    def loss_fn(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(apply(params, x), y).mean()

    def train_step(params, x, y, lr):
        grads = jax.grad(loss_fn)(params, x, y)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads)

    def evaluate(params, x, y):
        logits = apply(params, x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, (logits.argmax(-1) == y).mean()

    return jax.jit(init), jax.jit(train_step), jax.jit(evaluate)


def jax_per_step(data, batch_size: int, learning_rates: Sequence[float],
                 seeds: Sequence[int], num_steps: int, eval_every_steps: int) -> dict:
    """The grid as a typical JAX user writes it, runs one after another.

    One jitted train step (params, x, y, lr) -> params (manual SGD update, learning rate
    traced: one compilation for every run), called from a Python loop with numpy minibatches
    (per-epoch ``numpy`` permutations), and a jitted evaluation whose results are read back
    as Python floats. Runs on jax's default device.

    Extra key ``compile_seconds``: the first calls of init, train step and evaluation (on
    both sets), which compile them (the one-off cost; ``steady_seconds`` is the grid itself).
    """
    import jax

    data, runs = as_arrays(data), grid_runs(learning_rates, seeds)
    init, train_step, evaluate = _jax_functions(data)
    x, y = jax.device_put(data.x_train), jax.device_put(data.y_train)
    xt, yt = jax.device_put(data.x_test), jax.device_put(data.y_test)
    n, per_epoch = data.x_train.shape[0], data.x_train.shape[0] // batch_size
    evals = set(evaluation_steps(num_steps, eval_every_steps))

    start = time.perf_counter()
    params = init(jax.random.key(0))
    idx = np.arange(batch_size)
    jax.block_until_ready(train_step(params, data.x_train[idx], data.y_train[idx],
                                     np.float32(0.0)))
    jax.block_until_ready((evaluate(params, x, y), evaluate(params, xt, yt)))
    compile_seconds = time.perf_counter() - start

    finals = {}
    for lr, seed in runs:
        params = init(jax.random.key(seed))
        rng = np.random.default_rng(seed)
        history = []
        for step in range(num_steps + 1):
            if step in evals:
                metrics = (*evaluate(params, x, y), *evaluate(params, xt, yt))
                history.append(tuple(float(m) for m in metrics))
            if step == num_steps:
                break
            if step % per_epoch == 0:
                perm = rng.permutation(n)
            idx = perm[(step % per_epoch) * batch_size:(step % per_epoch + 1) * batch_size]
            params = train_step(params, data.x_train[idx], data.y_train[idx], np.float32(lr))
        finals[(lr, seed)] = history[-1][3]
    seconds = time.perf_counter() - start
    result = _summary(data, runs, finals, seconds, compile_seconds, batch_size, num_steps,
                      len(evals))
    return dict(result, compile_seconds=compile_seconds)
