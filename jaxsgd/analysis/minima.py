"""Minima quality: one labelled table of how good and how sharp every run's solution is.

``minima_summary(result)`` takes a finished sweep (``SweepResult``: final parameters of every
run, leading [runs] axis per batch-size group) and returns an ``xarray.Dataset`` with the sweep's
own dimensions (``batch_size``, ``learning_rate``, ``seed``, any other swept field):

* from the sweep's last evaluation: ``train_loss``, ``test_loss``, ``train_accuracy``,
  ``test_accuracy``; ``generalization_gap`` = test loss − train loss (nats) and
  ``accuracy_gap`` = train accuracy − test accuracy (fraction) for classification;
* ``distance_from_init`` ‖θ_T − θ_0‖₂ and ``relative_distance`` ‖θ_T − θ_0‖/‖θ_0‖ (θ_0 is
  recomputed from the run's seed, exactly as the sweep made it);
* curvature of the training loss on a fixed training subset (the first ``num_examples``
  examples): ``lambda_max`` (Lanczos, with ``lambda_max_residual`` ‖Hv − λv‖),
  ``hessian_trace`` (Hutchinson, with ``hessian_trace_stderr``);
* sharpness on the same subset: ``epsilon_sharpness`` (Keskar et al. 2017, percent, box
  ε(|θ|+1), Auto-PGD from two starts, with ``epsilon_sharpness_gap``, its Frank–Wolfe gap:
  near 0 when the ascent converged) and ``adaptive_sharpness`` (worst case in the box
  |e_i| ≤ ρ|θ_i|, invariant to the ReLU rescalings of Dinh et al. 2017; loss units);
* with ``validation=(x, y)``, examples held out from training and test: the task's metrics of
  the final parameters on them (``validation_loss``; ``validation_accuracy`` for
  classification), for choosing hyperparameters without looking at the test set.

Every measure of a group is one compiled program: ``jit(lax.map(vmap(measure)))`` over the runs,
``runs_per_call`` runs at a time (memory holds that many runs' Hessian-vector products). All runs
use the same random probes (common random numbers), so differences between runs are not noise
of the estimators. Diverged runs get NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from jaxsgd.measure.curvature import hessian_trace, top_hessian_eigenvalues
from jaxsgd.data import Dataset
from jaxsgd.losses import make_loss_fn
from jaxsgd.engine.results import SweepResult, to_grid, grid_dims
from jaxsgd.measure.sharpness import adaptive_sharpness, epsilon_sharpness
from jaxsgd.engine.sweep import grid_hparams, rebuild
from jaxsgd.engine.training import initial_params

PyTree = Any
MEASURES = ("lambda_max", "hessian_trace", "epsilon_sharpness", "adaptive_sharpness")


@dataclass(frozen=True)
class MinimaOptions:
    """Settings of the curvature and sharpness measures (static: they shape the program).

    num_examples: training examples the loss is measured on (the first ones; None: all).
    measures: which of ``MEASURES`` to compute (distance and metrics are always there).
    lanczos_iterations: Krylov depth for λ_max. trace_probes: Rademacher probes for tr H.
    epsilon, epsilon_steps: Keskar's box size ε and Auto-PGD steps from each of its two starts.
    adaptive_rho, adaptive_steps: the adaptive box's relative size ρ and ascent steps.
    """

    num_examples: int | None = 1024
    measures: tuple[str, ...] = MEASURES
    lanczos_iterations: int = 30
    trace_probes: int = 32
    epsilon: float = 1e-3
    epsilon_steps: int = 20
    adaptive_rho: float = 1e-3
    adaptive_steps: int = 20

    def __post_init__(self):
        unknown = [m for m in self.measures if m not in MEASURES]
        if unknown:
            raise ValueError(f"measures: unknown {unknown}; known: {', '.join(MEASURES)}")
        if self.num_examples is not None and self.num_examples < 1:
            raise ValueError(f"num_examples must be >= 1 or None, got {self.num_examples}")
        for name in ("lanczos_iterations", "trace_probes", "epsilon_steps", "adaptive_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("epsilon", "adaptive_rho"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def _norm(tree: PyTree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def measure_minimum(loss_fn: Callable, params: PyTree, batch: PyTree, initial: PyTree, *,
                    key: jax.Array, options: MinimaOptions = MinimaOptions()) -> dict:
    """Distance from θ_0 and the chosen curvature/sharpness measures of one run (scalars).

    Pure; vmap it over runs (``params`` and ``initial`` with a leading [runs] axis).
    """
    k_eig, k_trace, k_eps, k_ada = jax.random.split(key, 4)
    distance = _norm(jax.tree.map(jnp.subtract, params, initial))
    out = {"distance_from_init": distance, "relative_distance": distance / _norm(initial)}
    m = options.measures
    if "lambda_max" in m:
        eig = top_hessian_eigenvalues(loss_fn, params, batch, k=1, key=k_eig,
                                      num_iterations=options.lanczos_iterations)
        out["lambda_max"] = eig.eigenvalues[0]
        out["lambda_max_residual"] = eig.residuals[0]
    if "hessian_trace" in m:
        tr = hessian_trace(loss_fn, params, batch, key=k_trace, num_probes=options.trace_probes)
        out["hessian_trace"] = tr.trace
        out["hessian_trace_stderr"] = tr.stderr
    if "epsilon_sharpness" in m:
        eps = epsilon_sharpness(loss_fn, params, batch, key=k_eps, epsilon=options.epsilon,
                                num_steps=options.epsilon_steps)
        out["epsilon_sharpness"] = eps.sharpness
        out["epsilon_sharpness_gap"] = eps.gap
    if "adaptive_sharpness" in m:
        out["adaptive_sharpness"] = adaptive_sharpness(
            loss_fn, params, batch, rho=options.adaptive_rho, norm="linf",
            num_steps=options.adaptive_steps, key=k_ada).sharpness
    return out


def minima_summary(result: SweepResult, data: Dataset | None = None, *, model=None,
                   loss=None, key: int | jax.Array = 0, options: MinimaOptions = MinimaOptions(),
                   runs_per_call: int = 16, batch_sizes=None, validation=None) -> xr.Dataset:
    """Minima-quality table of a finished sweep (module docstring), aligned with its dims.

    Args:
      result: a finished sweep (``run_sweep`` or ``load_sweep``).
      data: its dataset (default: loaded from the configuration, as the sweep did); needed
        when the sweep was trained on the user's own data.
      model: its model, when the sweep was given one instead of a configured name.
      loss: its loss, when the sweep was given the user's own (``run_sweep(loss=...)``).
      Data, model and loss are checked against the sweep's provenance (``rebuild``): another
      data set, model or loss is refused, naming the argument to pass.
      key: seed or key of the estimators' random probes (shared by all runs).
      options: ``MinimaOptions``.
      runs_per_call: runs measured at once inside each compiled call (>= 1).
      batch_sizes: groups to measure (default: all of ``result``).
      validation: ``(x, y)``, held-out examples ([M, features...] inputs and their [M] labels,
        shaped like the training set's and in the same form: the same standardisation): adds
        ``validation_*`` metrics of every run's final parameters (the task's mean metrics over
        all M examples; NaN for diverged runs).

    Returns:
      ``xarray.Dataset`` with dims ``batch_size`` and the sweep's grid dimensions.
    """
    if runs_per_call < 1:
        raise ValueError(f"runs_per_call must be >= 1, got {runs_per_call}")
    config = result.config
    batch_sizes = tuple(sorted(result.params)) if batch_sizes is None else tuple(batch_sizes)
    missing = [b for b in batch_sizes if b not in result.params]
    if missing:
        raise ValueError(f"batch_sizes: {missing} not in the results (have {sorted(result.params)})")
    _, data, model, task, _ = rebuild(result, data, model, loss=loss)
    held = None
    if validation is not None:
        x_val, y_val = (np.asarray(a) for a in validation)
        if (x_val.shape[1:] != data.x_train.shape[1:] or y_val.shape[1:] != data.y_train.shape[1:]
                or len(x_val) != len(y_val) or len(x_val) == 0):
            raise ValueError(f"validation: inputs {x_val.shape} and labels {y_val.shape} do not "
                             f"match the training set's examples {data.x_train.shape[1:]} and "
                             f"labels {data.y_train.shape[1:]}")
        held = (jnp.asarray(x_val, data.x_train.dtype), jnp.asarray(y_val, data.y_train.dtype))
    n = data.num_train if options.num_examples is None else min(options.num_examples,
                                                                data.num_train)
    batch = (jnp.asarray(data.x_train[:n]), jnp.asarray(data.y_train[:n]))
    loss_fn = make_loss_fn(model, task)
    key = jax.random.key(key) if isinstance(key, int) else key
    _, seeds = grid_hparams(config)

    @jax.jit
    def measure_all(params, seeds, held):
        def one(args):
            p, s = args
            return measure_minimum(loss_fn, p, batch, initial_params(model.init, s), key=key,
                                   options=options)
        out = jax.lax.map(one, (params, seeds), batch_size=runs_per_call)
        if held is not None:  # (x, y) held-out examples
            held_out = jax.lax.map(lambda p: task.metrics(model.apply(p, held[0]), held[1]),
                                   params, batch_size=runs_per_call)
            out.update({f"validation_{k}": v for k, v in held_out.items()})
        return out

    dims = grid_dims(config)
    groups = []
    for b in batch_sizes:
        values = jax.device_get(measure_all(result.params[b], jnp.asarray(seeds), held))
        diverged = result.metrics["diverged"].sel(batch_size=b).values
        run = result.metrics["run"].sel(batch_size=b).values
        diverged_runs = np.zeros(len(seeds), bool)
        diverged_runs[run.ravel()] = diverged.ravel()
        data_vars = {name: (dims, to_grid(config, np.where(diverged_runs, np.nan,
                                                              np.asarray(v, np.float64))))
                     for name, v in values.items()}
        groups.append(xr.Dataset(data_vars).expand_dims(batch_size=[b]))
    measured = xr.concat(groups, dim="batch_size")
    final = {}
    for name in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        if name in result.metrics:
            final[name] = result.metrics[name].sel(batch_size=list(batch_sizes)).isel(
                {config.eval_dim: -1}, drop=True)
    if "train_loss" in final and "test_loss" in final:
        final["generalization_gap"] = final["test_loss"] - final["train_loss"]
    if "train_accuracy" in final and "test_accuracy" in final:
        final["accuracy_gap"] = final["train_accuracy"] - final["test_accuracy"]
    out = xr.merge([xr.Dataset(final), measured.assign_coords(
        {d: result.metrics[d] for d in dims})], compat="override", join="override")
    out.attrs.update({f"option_{f.name}": str(getattr(options, f.name))
                      for f in fields(options)})
    out.attrs["num_examples"] = n
    return out
