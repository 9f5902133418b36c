"""The strongest PyTorch a user training many runs at once would write, for the reference grid.

Every variant trains the runs (learning rate × seed) of one batch size with exactly the
protocol of ``baselines.torch_sequential``: each run's parameters from ``torch.manual_seed(seed)``
and torch's default ``Linear`` initialisation, minibatches by per-epoch shuffling from
``torch.Generator().manual_seed(seed)`` (the last ``N mod B`` examples of an epoch dropped),
plain SGD at the run's rate, and the same evaluations (loss and accuracy on the whole training
and test sets before the listed steps). So every variant computes the same loss curves as the
sequential loop, up to float rounding, which training amplifies (``curve_deviation``).

Variants (``VARIANTS``):

* ``func``: ``torch.func`` — ``stack_module_state`` + ``functional_call`` + ``vmap(grad)`` over
  the runs, then an SGD update of the stacked tensors (each run's rate broadcast);
* ``func compiled``: the same step under ``torch.compile`` (its compilation is the one-off);
* ``bmm``: hand-batched parameters [runs, in, out] and [runs, 1, out], ``torch.baddbmm``
  forward, autograd backward, in-place SGD;
* ``onednn loop``: runs one after another, every matmul of the forward and of a hand-written
  backward through oneDNN (``torch.ops.mkldnn._linear_pointwise``). On AMD CPUs PyTorch's
  default fp32 matmul (MKL sgemm) takes an AVX2 path while oneDNN's uses AVX-512.

Each runs in one process with ``threads`` threads (``processes=1``) or split over spawned
single-thread processes (``processes=2``: the runs dealt out alternately); ``run_variant``
returns the result dict of ``baselines`` (seconds end to end, steady seconds = less the
one-offs: process start and compilation) plus ``train_loss_curves`` {"lr,seed": [losses]}.

torch is imported inside the functions: the module imports with numpy alone.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any, Callable, Sequence

import numpy as np

from baselines import Arrays, _summary, _torch_mlp, as_arrays, evaluation_steps, grid_runs

VARIANTS = ("func", "func compiled", "bmm", "onednn loop")


def _tensors(data: Arrays):
    import torch

    return (torch.from_numpy(data.x_train), torch.from_numpy(data.y_train).long(),
            torch.from_numpy(data.x_test), torch.from_numpy(data.y_test).long())


def _models(data: Arrays, runs) -> list:
    """Each run's ``torch.nn.Sequential``, initialised as ``baselines._torch_train_runs`` does."""
    import torch

    models = []
    for _, seed in runs:
        torch.manual_seed(seed)
        models.append(_torch_mlp(data))
    return models


class _Minibatches:
    """Every run's minibatch indices [runs, B] per step, drawn as the sequential loop draws
    them (a per-run generator; a new permutation at each epoch's first step)."""

    def __init__(self, n: int, batch_size: int, seeds: Sequence[int]):
        import torch

        self.n, self.batch_size, self.per_epoch = n, batch_size, n // batch_size
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __call__(self, step: int):
        import torch

        if step % self.per_epoch == 0:
            self.perm = torch.stack([torch.randperm(self.n, generator=g)
                                     for g in self.generators])
        j = step % self.per_epoch
        return self.perm[:, j * self.batch_size:(j + 1) * self.batch_size]


def _bmm_forward(layers, x):
    """Logits [runs, M, classes] of hand-batched layers [(W [runs, in, out], b [runs, 1, out])]
    on x [runs, M, in] (or an expanded shared x)."""
    import torch

    for i, (w, b) in enumerate(layers):
        x = torch.baddbmm(b, x, w)
        if i < len(layers) - 1:
            x = torch.relu(x)
    return x


def _per_run_metrics(logits, y) -> np.ndarray:
    """[runs, 2]: mean cross-entropy and accuracy of logits [runs, M, C] against y [M]."""
    import torch.nn.functional as F

    runs, m, c = logits.shape
    loss = F.cross_entropy(logits.reshape(runs * m, c), y.repeat(runs), reduction="none")
    accuracy = (logits.argmax(-1) == y).float().mean(1)
    return np.stack([loss.view(runs, m).mean(1).numpy(), accuracy.numpy()], 1)


def _batched(data: Arrays, runs, batch_size: int, num_steps: int, eval_every: int,
             variant: str) -> tuple[np.ndarray, float]:
    """Train ``runs`` at once with a batched variant: (history [runs, evals, 4], compile s)."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, stack_module_state, vmap

    x, y, xt, yt = _tensors(data)
    models = _models(data, runs)
    lrs = torch.tensor([lr for lr, _ in runs], dtype=torch.float32)
    batches = _Minibatches(len(x), batch_size, [s for _, s in runs])
    evals = set(evaluation_steps(num_steps, eval_every))
    compile_seconds = 0.0

    if variant == "bmm":
        layers = [(torch.stack([m[i].weight.detach().t() for m in models]).contiguous(),
                   torch.stack([m[i].bias.detach()[None] for m in models]))
                  for i in range(0, len(models[0]), 2)]
        leaves = [t.requires_grad_() for layer in layers for t in layer]
        scale = lrs.view(-1, 1, 1)

        def evaluate(xs, ys):
            with torch.no_grad():
                return _per_run_metrics(_bmm_forward(layers, xs.expand(len(runs), *xs.shape)), ys)

        def step(xb, yb):
            logits = _bmm_forward(layers, xb)
            # Σ_runs (mean loss of the run): each run's gradient is its own mean's.
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                                   reduction="sum") / batch_size
            loss.backward()
            with torch.no_grad():
                for p in leaves:
                    p.sub_(scale * p.grad)
                    p.grad = None
    else:
        params, _ = stack_module_state(models)
        params = {k: v.detach() for k, v in params.items()}
        base = _torch_mlp(data).to("meta")

        def loss_one(p, xb, yb):
            return F.cross_entropy(functional_call(base, p, (xb,)), yb)

        run_grads = vmap(grad(loss_one))
        shapes = {k: (-1,) + (1,) * (v.dim() - 1) for k, v in params.items()}

        def sgd(p, xb, yb, lr):
            g = run_grads(p, xb, yb)
            return {k: v - lr.view(shapes[k]) * g[k] for k, v in p.items()}

        update = torch.compile(sgd) if variant == "func compiled" else sgd
        logits_all = vmap(lambda p, xs: functional_call(base, p, (xs,)), in_dims=(0, None))

        def evaluate(xs, ys):
            with torch.no_grad():
                return _per_run_metrics(logits_all(params, xs), ys)

        def step(xb, yb):
            nonlocal params
            params = update(params, xb, yb, lrs)

        if variant == "func compiled":  # compile on the first minibatch, on copies
            idx = batches(0)
            start = time.perf_counter()
            update({k: v.clone() for k, v in params.items()}, x[idx], y[idx], lrs)
            compile_seconds = time.perf_counter() - start
            batches = _Minibatches(len(x), batch_size, [s for _, s in runs])  # from the start

    history = []
    for s in range(num_steps + 1):
        if s in evals:
            history.append(np.concatenate([evaluate(x, y), evaluate(xt, yt)], 1))
        if s == num_steps:
            break
        idx = batches(s)
        step(x[idx], y[idx])
    return np.stack(history, 1), compile_seconds


def _onednn_loop(data: Arrays, runs, batch_size: int, num_steps: int,
                 eval_every: int) -> tuple[np.ndarray, float]:
    """Runs one after another; every matmul through oneDNN, backward by hand."""
    import torch

    linear = torch.ops.mkldnn._linear_pointwise  # out = input @ weightᵀ + bias

    def mm_t(a, b):  # a @ bᵀ through oneDNN
        return linear(a, b, None, "none", [], "")

    x, y, xt, yt = _tensors(data)
    evals = set(evaluation_steps(num_steps, eval_every))
    histories = []
    for model, (lr, seed) in zip(_models(data, runs), runs):
        layers = [(model[i].weight.detach().clone(), model[i].bias.detach().clone())
                  for i in range(0, len(model), 2)]
        batches = _Minibatches(len(x), batch_size, [seed])

        def forward(xs):
            acts, h = [xs], xs
            for i, (w, b) in enumerate(layers):
                h = linear(h, w, b, "none", [], "")
                if i < len(layers) - 1:
                    h = torch.relu(h)
                    acts.append(h)
            return acts, h

        def evaluate(xs, ys):
            logits = forward(xs)[1]
            loss = torch.nn.functional.cross_entropy(logits, ys)
            return [loss.item(), (logits.argmax(1) == ys).float().mean().item()]

        history = []
        with torch.no_grad():
            for s in range(num_steps + 1):
                if s in evals:
                    history.append(evaluate(x, y) + evaluate(xt, yt))
                if s == num_steps:
                    break
                idx = batches(s)[0]
                acts, logits = forward(x[idx])
                delta = torch.softmax(logits, 1)
                delta[torch.arange(batch_size), y[idx]] -= 1.0
                delta /= batch_size  # ∂(mean cross-entropy)/∂logits
                for i in reversed(range(len(layers))):
                    w, b = layers[i]
                    a = acts[i]
                    grad_w = mm_t(delta.t().contiguous(), a.t().contiguous())  # δᵀ a
                    grad_b = delta.sum(0)
                    if i > 0:  # δ W, through the ReLU
                        delta = mm_t(delta, w.t().contiguous()) * (a > 0)
                    w.sub_(lr * grad_w)
                    b.sub_(lr * grad_b)
        histories.append(np.array(history))
    return np.stack(histories), 0.0


def _train(data: Arrays, runs, batch_size: int, num_steps: int, eval_every: int,
           variant: str) -> tuple[np.ndarray, float]:
    if variant == "onednn loop":
        return _onednn_loop(data, runs, batch_size, num_steps, eval_every)
    return _batched(data, runs, batch_size, num_steps, eval_every, variant)


def _worker(data: Arrays, runs, batch_size: int, num_steps: int, eval_every: int,
            variant: str, threads: int) -> tuple[float, np.ndarray, float]:
    """One process: (time.time() when it began, history, compile seconds)."""
    import torch

    torch.set_num_threads(threads)
    began = time.time()
    history, compile_seconds = _train(data, runs, batch_size, num_steps, eval_every, variant)
    return began, history, compile_seconds


def run_variant(variant: str, data, batch_size: int, learning_rates: Sequence[float],
                seeds: Sequence[int], num_steps: int, eval_every_steps: int, *,
                processes: int = 1, threads: int = 2) -> dict:
    """Time one variant on one batch size's runs (module docstring); a ``baselines`` result
    plus ``one_off_seconds`` (process start and compilation) and ``train_loss_curves``."""
    import torch  # imported before the clock starts

    if variant not in VARIANTS:
        raise ValueError(f"variant: {variant!r} is not one of {VARIANTS}")
    data, runs = as_arrays(data), grid_runs(learning_rates, seeds)
    start, wall_start = time.perf_counter(), time.time()
    if processes == 1:
        torch.set_num_threads(threads)
        history, compile_seconds = _train(data, runs, batch_size, num_steps, eval_every_steps,
                                          variant)
        start_seconds = 0.0
        by_run = dict(zip(runs, history))
    else:
        shares = [runs[i::processes] for i in range(processes)]
        context = multiprocessing.get_context("spawn")
        with context.Pool(processes) as pool:
            outputs = pool.starmap(_worker, [(data, share, batch_size, num_steps,
                                              eval_every_steps, variant, 1) for share in shares])
        start_seconds = max(began for began, _, _ in outputs) - wall_start
        compile_seconds = max(c for _, _, c in outputs)
        by_run = {run: h for share, (_, history, _) in zip(shares, outputs)
                  for run, h in zip(share, history)}
    seconds = time.perf_counter() - start
    one_off = start_seconds + compile_seconds
    finals = {run: float(h[-1, 3]) for run, h in by_run.items()}
    result = _summary(data, runs, finals, seconds, one_off, batch_size, num_steps,
                      len(evaluation_steps(num_steps, eval_every_steps)))
    return dict(result, one_off_seconds=one_off, processes=processes,
                threads=threads if processes == 1 else 1,
                train_loss_curves={f"{lr},{seed}": [float(v) for v in by_run[lr, seed][:, 0]]
                                   for lr, seed in runs})


def curve_deviation(result: dict, reference: dict, evaluations: int | None = None) -> float:
    """The largest relative difference between two results' training-loss curves (same runs),
    over their first ``evaluations`` evaluations (all by default). Different float rounding
    (thread counts, batched matmuls) starts at ~1e-7 and grows with training, fastest at high
    learning rates, so early evaluations check the computation and late ones its chaos."""
    worst = 0.0
    for run, curve in reference["train_loss_curves"].items():
        a = np.asarray(result["train_loss_curves"][run])[:evaluations]
        b = np.asarray(curve)[:evaluations]
        if not np.array_equal(np.isfinite(a), np.isfinite(b)):
            return float("inf")
        both = np.isfinite(a) & np.isfinite(b)
        if both.any():
            worst = max(worst, float(np.max(np.abs(a[both] - b[both]) / np.abs(b[both]))))
    return worst


def variant_baselines() -> dict[str, Callable[..., dict]]:
    """{name: baseline function} for every variant in 1 process × 2 threads and in
    2 processes × 1 thread, named like "bmm 1×2"."""
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        for processes, threads in ((1, 2), (2, 1)):
            def baseline(data, batch_size, learning_rates, seeds, num_steps, eval_every_steps,
                         variant=variant, processes=processes, threads=threads):
                return run_variant(variant, data, batch_size, learning_rates, seeds,
                                   num_steps, eval_every_steps, processes=processes,
                                   threads=threads)
            out[f"{variant} {processes}×{threads}"] = baseline
    return out
