"""jaxsgd: the science of batch size and learning rate, as compiled, vmapped JAX sweeps.

Where things live (one concept per module):

  config        SweepConfig (static) and Grid (traced values); validate; ConfigError
  data          data sets: MNIST-1D, digits, synthetic problems, IDX/CIFAR readers, arrays
  models        Model = (init, apply) pairs: linear, mlp, cnn
  losses        cross_entropy, mse, accuracy; Task; make_loss_fn
  optimizers    optax optimizers and schedules with traced hyperparameters
  sampling      minibatch sampling inside the scan
  evaluation    evaluation schedule and full-set evaluation
  probes        measurements inside the training scan (the Probe protocol)
  noise         gradient noise scale: exact per-example, two-batch, EMA tracker, B_noise
  per_example   per-example gradient norms fused into backprop (flax Dense/Conv layers)
  noise_probes  B_simple every step and B_noise every k steps, inside the sweep
  intervals     bootstrap and across-seed confidence intervals
  critical      critical_batch_size: S_min, E_min, B_crit and ε_opt(B) from steps-to-target
  nqm           the noisy quadratic model: exact dynamics, steps to target, Monte Carlo check
  curvature     Hessian-vector products, top/smallest/per-layer eigenvalues, trace, spectral density
  sharpness     ε-sharpness (Keskar), SAM worst-case, adaptive, average-case and m-sharpness
  landscape     loss landscapes: interpolation, filter-normalised directions, 1-D/2-D surfaces
  curvature_probes  λ_max every k steps inside the sweep (warm-started Lanczos)
  minima        minima_summary: losses, gap, distance, λ_max, trace, sharpness per run of a sweep
  training      one run as pure functions (init / advance / finish)
  devices       CPU devices (4 per core); the mesh over runs; run-sharded global arrays
  programs      a group's programs: jit(shard_map(vmap(...))) over the runs
  checkpoint    group checkpoints and the sweep fingerprint that guards resuming
  progress      the progress bar
  sweep         run_sweep: groups by batch size, chunks, checkpoints, results
  targets       steps_to_target
  results       labelled xarray results; save / load_sweep
  summary       summarize: the per-batch-size table of a sweep
  plotting      figures in one shared style
  cli           the `jaxsgd` command
  experiment_cli  the command line shared by the scripts in experiments/
"""

# Before anything starts JAX: 4 CPU devices per core, and the persistent compilation cache.
from jaxsgd.devices import configure_cpu_devices

configure_cpu_devices()

from jaxsgd.checkpoint import CheckpointError  # noqa: E402
from jaxsgd.config import GRID_FIELDS, OPTIMIZERS, SCHEDULES, ConfigError, Grid, SweepConfig, validate
from jaxsgd.data import DATASETS, DataError, Dataset, from_arrays, load_dataset
from jaxsgd.losses import Task, accuracy, cross_entropy, make_loss_fn, mse, task_for
from jaxsgd.models import MODELS, Model, make_model
from jaxsgd.optimizers import HParams, learning_rate_multiplier, make_optimizer
from jaxsgd.noise import (HessianNoiseScale, NoiseScale, gradient_noise_scale, hessian_noise_scale,
                          noise_scale_ema, two_batch_noise_scale)
from jaxsgd.critical import (CriticalBatchSize, critical_batch_size, plot_critical_batch_size,
                             sweep_steps_to_target)
from jaxsgd.intervals import (Interval, NoiseScaleInterval, noise_scale_interval, ratio_interval,
                              seed_interval)
from jaxsgd.noise_probes import hessian_noise_probe, noise_scale_probe
from jaxsgd.nqm import (NQM, NQMMonteCarlo, NQMSteps, make_nqm, nqm_critical_batch_size,
                        nqm_expected_loss, nqm_first_crossing, nqm_monte_carlo, nqm_steps_to_target)
from jaxsgd.landscape import (filter_normalize, filter_normalized_direction, interpolate,
                               loss_surface_1d, loss_surface_2d, plot_interpolation,
                               plot_surface_2d)
from jaxsgd.curvature import (FlatHessian, HessianEigenpairs, HessianSpectrum, HessianTrace,
                              block_top_hessian_eigenvalues, hessian_blocks, hessian_matvec,
                              hessian_spectrum, hessian_trace, hvp, spectral_moment,
                              top_hessian_eigenvalues)
from jaxsgd.sharpness import (AverageSharpness, EpsilonSharpness, WorstCaseSharpness,
                              adaptive_sharpness, average_sharpness, epsilon_sharpness,
                              epsilon_sharpness_lbfgsb, sam_sharpness)
from jaxsgd.curvature_probes import lambda_max_probe
from jaxsgd.per_example import example_gradient_gram, value_grad_and_example_norms
from jaxsgd.probes import Probe, StepGradients, gradient_norm
from jaxsgd.results import SweepResult, load_sweep
from jaxsgd.plotting import plot_sweep
from jaxsgd.summary import best_learning_rate, summarize
from jaxsgd.sweep import run_sweep
from jaxsgd.minima import MinimaOptions, measure_minimum, minima_summary
from jaxsgd.targets import steps_to_target
from jaxsgd.training import make_trainer

__version__ = "0.1.0"

__all__ = [
    "DATASETS", "GRID_FIELDS", "MODELS", "NQM", "OPTIMIZERS", "SCHEDULES", "AverageSharpness",
    "CheckpointError", "ConfigError", "CriticalBatchSize", "DataError", "Dataset",
    "EpsilonSharpness", "FlatHessian", "Grid", "HParams", "HessianEigenpairs", "HessianNoiseScale",
    "HessianSpectrum", "HessianTrace", "Interval", "MinimaOptions", "Model", "NQMMonteCarlo",
    "NQMSteps", "NoiseScale", "NoiseScaleInterval", "Probe", "StepGradients", "SweepConfig",
    "SweepResult", "Task", "WorstCaseSharpness", "accuracy", "adaptive_sharpness",
    "average_sharpness", "best_learning_rate", "block_top_hessian_eigenvalues",
    "critical_batch_size", "cross_entropy", "epsilon_sharpness", "epsilon_sharpness_lbfgsb",
    "example_gradient_gram", "filter_normalize", "filter_normalized_direction", "from_arrays",
    "gradient_noise_scale", "gradient_norm", "hessian_blocks", "hessian_matvec",
    "hessian_noise_probe", "hessian_noise_scale", "hessian_spectrum", "hessian_trace", "hvp",
    "interpolate", "lambda_max_probe", "learning_rate_multiplier", "load_dataset", "load_sweep",
    "loss_surface_1d", "loss_surface_2d", "make_loss_fn", "make_model", "make_nqm",
    "make_optimizer", "make_trainer", "measure_minimum", "minima_summary", "mse",
    "noise_scale_ema", "noise_scale_interval", "noise_scale_probe", "nqm_critical_batch_size",
    "nqm_expected_loss", "nqm_first_crossing", "nqm_monte_carlo", "nqm_steps_to_target",
    "plot_critical_batch_size", "plot_interpolation", "plot_surface_2d", "plot_sweep",
    "ratio_interval", "run_sweep", "sam_sharpness", "seed_interval", "spectral_moment",
    "steps_to_target", "summarize", "sweep_steps_to_target", "task_for", "top_hessian_eigenvalues",
    "two_batch_noise_scale", "validate", "value_grad_and_example_norms",
]
