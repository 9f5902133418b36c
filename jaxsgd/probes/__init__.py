"""Measurements taken inside the training scan, every k steps, for every run of a sweep.

    base        the Probe protocol (init, measure), StepGradients, gradient_norm
    noise       noise_scale_probe (B_simple every step), hessian_noise_probe (B_noise)
    curvature   lambda_max_probe (warm-started Lanczos every k steps)
    registry    probes by name for configuration files ([probes.NAME])
"""
