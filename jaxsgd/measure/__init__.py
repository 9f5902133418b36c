"""Measurements of one model at given parameters: any ``loss_fn(params, batch)``.

    per_example  per-example gradient norms and Gram matrix fused into one backward pass
    noise        gradient noise scale: exact, two-batch, EMA tracker, B_noise
    curvature    Hessian-vector products, eigenvalues (Lanczos), trace, spectral density
    sharpness    ε-sharpness, SAM, adaptive, average-case and m-sharpness
    landscape    interpolation, filter-normalised directions, 1-D/2-D loss surfaces
"""
