"""jaxsgd: the science of batch size and learning rate, as compiled, vmapped JAX sweeps.

Importing jaxsgd changes no JAX setting and imports JAX only when a name that needs it is first
used (PEP 562). Scripts call ``jaxsgd.use_cpu_devices()`` first, before any JAX computation,
for jaxsgd's measured CPU defaults (4 devices per core, a persistent compilation cache).

The layers, each importing only from those above it in this list:

  _util, runtime        shared helpers; use_cpu_devices
  config, hyperparams, targets, losses, optimizers, style, data/, models/
                        what a sweep is: configuration, the sweepable values, targets, data,
                        models, losses, optimizers, the figure style
  measure/              measurements of one model: per-example norms, noise scale, curvature,
                        sharpness, landscapes
  probes/               measurements inside the training scan
  engine/               the sweep engine: sampling, evaluation, training, sharding, folder
  analysis/             analyses of finished sweeps: best points, summary, critical batch size,
                        minima, intervals, figures
  theory/               the noisy quadratic model
  cli, experiment_cli   the command line
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {}
for _module, _names in {
    "jaxsgd.runtime": "use_cpu_devices",
    "jaxsgd.config": "OPTIMIZERS SCHEDULES ConfigError Grid SweepConfig validate",
    "jaxsgd.hyperparams": "GRID_FIELDS HYPERPARAMETERS HParams Hyperparameter hparams",
    "jaxsgd.targets": "TARGET_METRICS steps_to_target sweep_steps_to_target",
    "jaxsgd.data": "DATASETS DataError Dataset from_arrays load_dataset",
    "jaxsgd.models": "MODELS Model from_module make_model",
    "jaxsgd.losses": "Task accuracy cross_entropy make_loss_fn mse task_for",
    "jaxsgd.optimizers": "learning_rate_multiplier make_optimizer",
    "jaxsgd.measure.noise": "GradientError HessianNoiseScale NoiseScale gradient_noise_scale "
                            "hessian_noise_scale minibatch_gradient_error noise_scale_ema "
                            "two_batch_noise_scale",
    "jaxsgd.measure.per_example": "example_gradient_gram example_norms_method "
                                  "value_grad_and_example_norms",
    "jaxsgd.measure.curvature": "FlatHessian HessianEigenpairs HessianSpectrum HessianTrace "
                                "block_top_hessian_eigenvalues hessian_blocks hessian_matvec "
                                "hessian_spectrum hessian_trace hvp spectral_moment "
                                "top_hessian_eigenvalues",
    "jaxsgd.measure.sharpness": "AverageSharpness EpsilonSharpness WorstCaseSharpness "
                                "adaptive_sharpness average_sharpness epsilon_sharpness "
                                "epsilon_sharpness_lbfgsb sam_sharpness",
    "jaxsgd.measure.landscape": "filter_normalize filter_normalized_direction interpolate "
                                "loss_surface_1d loss_surface_2d plot_interpolation "
                                "plot_surface_2d",
    "jaxsgd.probes.base": "Probe StepGradients gradient_norm",
    "jaxsgd.probes.noise": "hessian_noise_probe noise_scale_probe",
    "jaxsgd.probes.curvature": "lambda_max_probe",
    "jaxsgd.engine.training": "make_trainer",
    "jaxsgd.engine.results": "SweepResult",
    "jaxsgd.engine.folder": "CheckpointError load_sweep",
    "jaxsgd.engine.sweep": "continue_from run_sweep",
    "jaxsgd.analysis.best": "best_points",
    "jaxsgd.analysis.summary": "best_hyperparameters best_learning_rate summarize",
    "jaxsgd.analysis.critical": "CriticalBatchSize critical_batch_size plot_critical_batch_size",
    "jaxsgd.analysis.intervals": "Interval NoiseScaleInterval noise_scale_interval "
                                 "ratio_interval seed_interval",
    "jaxsgd.analysis.minima": "MinimaOptions measure_minimum minima_summary",
    "jaxsgd.analysis.plotting": "plot_sweep plot_loss_curves",
    "jaxsgd.theory.nqm": "NQM NQMMonteCarlo NQMSteps make_nqm nqm_critical_batch_size "
                         "nqm_expected_loss nqm_first_crossing nqm_monte_carlo "
                         "nqm_steps_to_target",
}.items():
    _EXPORTS.update(dict.fromkeys(_names.split(), _module))
del _module, _names

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxsgd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
