"""What the whole-data noise scale costs: ``gradient_noise_scale`` over 8000 MNIST-1D examples.

The built-in MLP (40-256-256-10 as in the reference grid) at its initialisation, the exact noise
scale over all 8000 training examples of ``mnist1d(num_samples=10000)``:

* ``method="vmap"`` — per-example gradients from ``vmap(grad)`` (jaxsgd's only path before the
  numerics issue), in slices of ``--slice`` examples or all at once;
* ``method="auto"`` — per-example squared norms fused into one backward pass
  (``jaxsgd.measure.per_example``), the default now;
* one plain gradient of the mean loss over the same examples, the unit of cost.

Each is compiled first and timed ``--repeats`` times (best), in one process; the two methods'
values are compared too.

    python benchmarks/noise_scale.py
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import jaxsgd
from reference_grid import WIDTHS, time_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slice", type=int, default=1000, help="vmap slice (examples)")
    args = parser.parse_args()
    jaxsgd.use_cpu_devices()
    data = jaxsgd.load_dataset("mnist1d", num_samples=10000)
    model = jaxsgd.make_model("mlp", (WIDTHS[0],), WIDTHS[-1], width=WIDTHS[1],
                              depth=len(WIDTHS) - 2)
    loss_fn = jaxsgd.make_loss_fn(model, jaxsgd.task_for(data.num_classes))
    params = model.init(jax.random.key(0))
    batch = (jnp.asarray(data.x_train), jnp.asarray(data.y_train))
    n = batch[0].shape[0]
    print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} devices; "
          f"MLP {'-'.join(map(str, WIDTHS))}, {n} examples")

    gradient = time_call(jax.jit(jax.grad(loss_fn)), params, batch, repeats=args.repeats)
    variants = {"vmap, all at once": dict(method="vmap"),
                f"vmap, slices of {args.slice}": dict(method="vmap", slice_size=args.slice),
                "fused (auto)": dict(method="auto"),
                f"fused, slices of {args.slice}": dict(method="auto", slice_size=args.slice)}
    values, times = {}, {}
    for name, options in variants.items():
        fn = jax.jit(lambda p, b, o=options: jaxsgd.gradient_noise_scale(loss_fn, p, b, **o))
        times[name] = time_call(fn, params, batch, repeats=args.repeats)
        values[name] = float(fn(params, batch).b_simple)
    print(f"\n{'':>26} {'seconds':>9} {'gradients':>10} {'B_simple':>10}")
    print(f"{'one gradient':>26} {gradient:>9.4f} {1.0:>10.1f}")
    for name in variants:
        print(f"{name:>26} {times[name]:>9.4f} {times[name] / gradient:>10.1f} "
              f"{values[name]:>10.3f}")
    old = min(times["vmap, all at once"], times[f"vmap, slices of {args.slice}"])
    new = times["fused (auto)"]
    spread = np.ptp(list(values.values())) / abs(values["fused (auto)"])
    print(f"\nspeed-up of the fused default over the best vmap variant: {old / new:.1f}x; "
          f"B_simple agrees to {spread:.1e} relative")


if __name__ == "__main__":
    main()
