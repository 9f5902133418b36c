"""What per-example gradient norms cost over a plain gradient, by model and method.

One process, ratios measured in the same run (machines differ between sessions):

* a pure-JAX MLP 40-256-256-10 (dicts of arrays, ``jnp`` ops) at B = 256;
* the same layers as jaxsgd's flax linen MLP at B = 256;
* a small flax transformer (vocabulary 256, width 128, 2 blocks of 4-head causal attention,
  LayerNorm and a 512-wide MLP) at context 64, B = 32, one sequence per example;

each as ``value_grad_and_example_norms`` with ``method="auto"`` (the taps in the loss's
jaxpr) and ``"vmap"`` (``vmap(grad)``), against ``jax.value_and_grad`` of the mean loss. Each is compiled first, then all of a model's
variants are timed in turn ``--repeats`` times (each time: one untimed call, then three timed;
``vmap`` in its own loop afterwards, as it slows whatever runs next); medians are compared.

    python benchmarks/example_norms.py
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxsgd
import time
from jaxsgd.measure.per_example import example_norms_method, value_grad_and_example_norms


def _xent(logits, labels):
    return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1))


def pure_mlp(rng):
    keys = jax.random.split(jax.random.key(0), 3)
    sizes = [(40, 256), (256, 256), (256, 10)]
    params = {f"w{i}": jax.random.normal(k, s) / np.sqrt(s[0]) for i, (k, s) in
              enumerate(zip(keys, sizes))}
    params.update({f"b{i}": jnp.zeros(s[1]) for i, s in enumerate(sizes)})

    def loss(p, b):
        h = b[0]
        for i in range(3):
            h = h @ p[f"w{i}"] + p[f"b{i}"]
            h = jax.nn.relu(h) if i < 2 else h
        return _xent(h, b[1])

    batch = (jnp.asarray(rng.normal(size=(256, 40)).astype(np.float32)),
             jnp.asarray(rng.integers(0, 10, 256)))
    return params, loss, batch


def linen_mlp(rng):
    model = jaxsgd.make_model("mlp", (40,), 10, width=256, depth=2)
    batch = (jnp.asarray(rng.normal(size=(256, 40)).astype(np.float32)),
             jnp.asarray(rng.integers(0, 10, 256)))
    return model.init(jax.random.key(0)), jaxsgd.make_loss_fn(model, jaxsgd.task_for(10)), batch


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
        x = x + nn.MultiHeadDotProductAttention(num_heads=4)(nn.LayerNorm()(x), mask=mask)
        return x + nn.Dense(128)(nn.gelu(nn.Dense(512)(nn.LayerNorm()(x))))


class LM(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(256, 128)(tokens) + self.param(
            "position", nn.initializers.normal(0.02), (tokens.shape[1], 128))
        for _ in range(2):
            x = Block()(x)
        return nn.Dense(256)(nn.LayerNorm()(x))


def transformer(rng):
    tokens = jnp.asarray(rng.integers(0, 256, (32, 65)))
    model = LM()
    params = model.init(jax.random.key(0), tokens[:1, :-1])["params"]
    return params, lambda p, b: _xent(model.apply({"params": p}, b[:, :-1]), b[:, 1:]), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    jaxsgd.use_cpu_devices(1)  # one program: the ratio of the same work, not of parallelism
    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device")
    columns = ("auto", "vmap")
    cases = {"pure-JAX MLP, B=256": pure_mlp(rng), "flax linen MLP, B=256": linen_mlp(rng),
             "transformer, T=64, B=32": transformer(rng)}
    print(f"\n{'':>26} {'gradient (s)':>13} " + " ".join(f"{m:>8}" for m in columns))
    for name, (params, loss_fn, batch) in cases.items():
        fallback = [m for m in jax.tree.leaves(
            example_norms_method(loss_fn, params, batch)) if m == "vmap"]
        fns = {"gradient": jax.jit(jax.value_and_grad(loss_fn))}
        fns.update({m: jax.jit(lambda p, b, m=m: value_grad_and_example_norms(
            loss_fn, p, b, method=m)) for m in columns})
        for fn in fns.values():
            jax.block_until_ready(fn(params, batch))
        # vmap(grad) runs 10-20x longer and slows whatever runs next: timed on its own
        times = {k: [] for k in fns}
        for group in ([k for k in fns if k != "vmap"], ["vmap"]):
            for _ in range(args.repeats):
                for k in (k for k in group if k in fns):
                    jax.block_until_ready(fns[k](params, batch))  # untimed
                    start = time.perf_counter()
                    for _ in range(3):
                        jax.block_until_ready(fns[k](params, batch))
                    times[k].append((time.perf_counter() - start) / 3)
        median = {k: float(np.median(v)) for k, v in times.items()}
        base = median["gradient"]
        print(f"{name:>26} {base:>13.5f} " + " ".join(
            f"{median[m] / base:>7.2f}x" if m in median else f"{'':>8}" for m in columns)
            + (f"  ({len(fallback)} leaves by vmap)" if fallback else ""))


if __name__ == "__main__":
    main()
