"""Analyses of finished sweeps (``SweepResult``).

    best        the one rule that picks the best grid point per batch size
    summary     the per-batch-size table of a sweep
    critical    critical_batch_size: S(B) fit, B_crit, E_min crossing, ε_opt(B) fit
    minima      minima_summary: losses, gap, distance, λ_max, trace, sharpness per run
    intervals   bootstrap and across-seed confidence intervals
    plotting    the summary figure of a sweep
"""
