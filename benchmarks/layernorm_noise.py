"""Does the noise scale of the LayerNorm parameters alone track the whole model's, and what
does it save? (Gray et al. 2024, "Normalization layer per-example gradients are sufficient to
predict gradient noise scale in transformers".)

A small byte-level transformer (``example_norms.LM``: vocabulary 256, width 128, 2 blocks of
4-head causal attention, LayerNorm and a 512-wide MLP, 0.47 M parameters) trains with Adam on
sequences of 65 bytes cut from the Python standard library's sources (one sequence = one
example; next-byte cross-entropy over 64 positions). At ``--points`` steps of the run, on a
fixed batch of ``--measure`` held-out sequences, ``gradient_noise_scale(unbiased=True)``
gives B_simple from every parameter and from the LayerNorm parameters alone
(``leaves="LayerNorm"``, 0.27% of the parameters); reported with their ratio. Then the cost
of the per-example norms at B = 32 over ``jax.value_and_grad``: all leaves against the
LayerNorm leaves alone (medians of interleaved calls, 1 device).

The training loop is written here (a ``lax.scan`` of optax Adam steps): jaxsgd's sweeps take
one label per example, and sequence data come with the language-model issue.

    python benchmarks/layernorm_noise.py
    python benchmarks/layernorm_noise.py --steps 200 --points 3   # quick look
"""

from __future__ import annotations

import argparse
import sysconfig
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxsgd
from example_norms import LM, _xent
from jaxsgd.measure.noise import gradient_noise_scale
from jaxsgd.measure.per_example import value_grad_and_example_norms

CONTEXT = 64


def stdlib_sequences(count: int, seed: int) -> np.ndarray:
    """``count`` random windows of CONTEXT + 1 bytes [count, 65] int32 from the standard
    library's ``.py`` files (sorted paths, the first 4 MB)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    text = bytearray()
    for path in sorted(root.glob("*.py")):
        text += path.read_bytes()
        if len(text) > 4_000_000:
            break
    data = np.frombuffer(bytes(text), np.uint8)
    starts = np.random.default_rng(seed).integers(0, len(data) - CONTEXT - 1, count)
    return np.stack([data[s:s + CONTEXT + 1] for s in starts]).astype(np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--points", type=int, default=11, help="measurements over the run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--measure", type=int, default=512, help="sequences per measurement")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    jaxsgd.use_cpu_devices(1)
    model = LM()
    train = jnp.asarray(stdlib_sequences(args.steps * args.batch_size, seed=0))
    held_out = jnp.asarray(stdlib_sequences(args.measure, seed=1))
    params = model.init(jax.random.key(0), train[:1, :-1])["params"]

    def loss_fn(p, b):
        return _xent(model.apply({"params": p}, b[:, :-1]), b[:, 1:])

    size = sum(x.size for x in jax.tree.leaves(params))
    norm_size = sum(x.size for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
                    if "LayerNorm" in jax.tree_util.keystr(path))
    print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device; "
          f"{size} parameters, {norm_size} in LayerNorms; Adam {args.learning_rate}, "
          f"B = {args.batch_size}, {args.steps} steps; B_simple (unbiased) on "
          f"{args.measure} held-out sequences")
    optimizer = optax.adam(args.learning_rate)

    @jax.jit
    def train_span(p, state, batches):
        def step(carry, b):
            p, state = carry
            loss, g = jax.value_and_grad(loss_fn)(p, b)
            updates, state = optimizer.update(g, state, p)
            return (optax.apply_updates(p, updates), state), loss
        (p, state), losses = jax.lax.scan(step, (p, state), batches)
        return p, state, losses

    @jax.jit
    def noise(p):
        full = gradient_noise_scale(loss_fn, p, held_out, unbiased=True, slice_size=64)
        norm = gradient_noise_scale(loss_fn, p, held_out, unbiased=True, slice_size=64,
                                    leaves="LayerNorm")
        return loss_fn(p, held_out), full.b_simple, norm.b_simple

    batches = train.reshape(args.steps, args.batch_size, -1)
    marks = np.unique(np.round(np.geomspace(1, args.steps + 1, args.points) - 1).astype(int))
    state, done, ratios = optimizer.init(params), 0, []
    print(f"\n{'step':>6} {'held-out loss':>14} {'B_simple all':>13} {'LayerNorm':>10} "
          f"{'ratio':>6}")
    for mark in marks:
        if mark > done:
            params, state, _ = train_span(params, state, batches[done:mark])
            done = int(mark)
        loss, full, norm = (float(v) for v in noise(params))
        ratios.append(norm / full)
        print(f"{done:>6} {loss:>14.3f} {full:>13.1f} {norm:>10.1f} {norm / full:>6.2f}")
    print(f"ratio LayerNorm/all over the run: median {np.median(ratios):.2f}, "
          f"range {min(ratios):.2f}-{max(ratios):.2f}")

    batch = train[:args.batch_size]
    fns = {"gradient": jax.jit(jax.value_and_grad(loss_fn)),
           "all leaves": jax.jit(lambda p, b: value_grad_and_example_norms(loss_fn, p, b)),
           "LayerNorm": jax.jit(lambda p, b: value_grad_and_example_norms(
               loss_fn, p, b, leaves="LayerNorm"))}
    times = {k: [] for k in fns}
    for fn in fns.values():
        jax.block_until_ready(fn(params, batch))
    for _ in range(args.repeats):
        for k, fn in fns.items():
            jax.block_until_ready(fn(params, batch))  # untimed
            start = time.perf_counter()
            for _ in range(3):
                jax.block_until_ready(fn(params, batch))
            times[k].append((time.perf_counter() - start) / 3)
    base = float(np.median(times["gradient"]))
    print(f"\nper-example norms at B = {args.batch_size}, context {CONTEXT} (cost over one "
          f"gradient of {1e3 * base:.1f} ms): " + ", ".join(
              f"{k} {np.median(times[k]) / base:.2f}x" for k in ("all leaves", "LayerNorm")))


if __name__ == "__main__":
    main()
