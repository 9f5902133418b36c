"""Noise-scale probes: B_simple at every step and B_noise every k steps, for every run of a sweep.

``noise_scale_probe(every=1)`` reads the training step's own backward pass
(``Probe.step_gradients``): the minibatch gradient G_B and, fused into the same pass, every
example's squared gradient norm |g_i|² (``jaxsgd.measure.per_example``). These are the two batch
sizes of the two-batch estimator (``jaxsgd.measure.noise.two_batch_noise_scale``) with B_small = 1 and
B_big = B:

    |G_small|² = mean_i |g_i|²,  |G_big|² = |G_B|²
    tr Σ_est   = (|G_small|² − |G_big|²) / (c(1) − c(B)),   |G|²_est = |G_B|² − c(B)·tr Σ_est

with c(B) = 1/B, or (N − B)/((N − 1)·B) under epoch sampling (batches drawn without
replacement from the N training examples). Both are unbiased for the full training set's tr Σ
and |G|² at the current parameters; their single-step values are noisy (|G|²_est is often
negative), so ``b_simple`` is the ratio of their debiased EMAs (``noise_scale_ema``), never an
average of ratios. The raw per-step estimates are recorded too, for windowed averages offline.

With ``microbatches=k`` the probe also records the estimator as McCandlish et al. ran it on
data-parallel workers: B_small = B/k from the k microbatch gradients of the minibatch (one
extra batched gradient per measurement).

``hessian_noise_probe(every=k)`` measures B_noise = tr(HΣ)/(GᵀHG) on the step's minibatch with
Hessian-vector products (``jaxsgd.measure.noise.hessian_noise_scale``, unbiased for the training set),
from ``num_examples`` of the minibatch's examples; its ``b_noise`` is likewise a ratio of EMAs.

Costs (reference MLP, benchmarks/noise_probe.py): see the README's measurements.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsgd._util import batch_size as _batch_size
from jaxsgd._util import check_int
from jaxsgd.measure.noise import hessian_noise_scale, noise_scale_ema, two_batch_noise_scale
from jaxsgd.measure.per_example import (leaves_pattern, selected_leaves,
                                        value_grad_and_example_norms)
from jaxsgd.probes.base import Probe, StepGradients


def _check(every: int, decay: float) -> None:
    check_int("every", every, unit="optimizer steps")
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
        raise ValueError(f"decay: {decay!r} must be a number in [0, 1)")


def noise_scale_probe(every: int = 1, decay: float = 0.95, microbatches: int | None = None,
                      name: str = "noise_scale", leaves: str | None = None) -> Probe:
    """B_simple of every run while it trains (see module docstring).

    Args:
      every: measure at optimizer steps 0, every, 2·every, …
      decay: EMA decay per measurement (0.95: about the last 20 measurements).
      microbatches: also the two-batch estimator with B_small = B/microbatches (must divide B).
      name: the probe's name (prefix of its result variables).
      leaves: a regular expression on the parameter paths ("LayerNorm_0/scale"): the noise scale
        of the leaves it matches alone — ``leaves="LayerNorm"`` is the proxy of Gray et al.
        2024, whose per-example norms cost less than all leaves' (``benchmarks/
        layernorm_noise.py``). None: every leaf.

    Outputs per measurement (float32 scalars; results ``{name}_{output}``):
      batch_grad_sq_norm |G_B|²; example_sq_norm mean_i |g_i|²; grad_sq_norm and trace_cov,
      the single-measurement unbiased |G|² and tr Σ; b_simple = EMA(tr Σ)/EMA(|G|²) in
      examples; with microbatches also micro_sq_norm, micro_grad_sq_norm, micro_trace_cov and
      micro_b_simple.
    """
    _check(every, decay)
    if microbatches is not None and (isinstance(microbatches, bool)
                                     or not isinstance(microbatches, int) or microbatches < 2):
        raise ValueError(f"microbatches: {microbatches!r} must be an integer >= 2")
    if leaves is not None:
        leaves_pattern(leaves)  # a bad pattern fails here, before anything compiles

    def init(params, key):
        del params, key
        ema = noise_scale_ema(decay)
        return (ema.init(), ema.init()) if microbatches else (ema.init(),)

    def measure(loss_fn, params, opt_state, batch, key, step, state, *,
                gradients: StepGradients):
        del opt_state, key, step
        b = _batch_size(batch)
        keep = selected_leaves(params, leaves)
        norms = gradients.example_sq_norms
        if norms is None:  # some leaf needs vmap(grad): per-example norms only when due
            _, _, norms = value_grad_and_example_norms(loss_fn, params, batch, leaves=leaves)

        def chosen(tree):
            return [x for x, k in zip(jax.tree.leaves(tree), keep) if k]

        big = sum(jnp.sum(jnp.square(g)) for g in chosen(gradients.grads))
        small = jnp.mean(sum(chosen(norms)))
        n = gradients.num_train
        ema = noise_scale_ema(decay, n)  # the finite-data correction needs N, known only here
        g_sq, trace = two_batch_noise_scale(small, big, 1, b, n)
        first, averaged = ema.update(state[0], small, big, 1, b)
        out = {"batch_grad_sq_norm": big, "example_sq_norm": small, "grad_sq_norm": g_sq,
               "trace_cov": trace, "b_simple": averaged.b_simple}
        new_state = (first,)
        if microbatches:
            if b % microbatches:
                raise ValueError(f"microbatches: {microbatches} does not divide the batch "
                                 f"size {b}")
            size = b // microbatches
            micro = jax.tree.map(lambda a: a.reshape(microbatches, size, *a.shape[1:]), batch)
            grads = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, micro)
            micro_sq = jnp.mean(sum(jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim)))
                                    for g in chosen(grads)))
            mg, mt = two_batch_noise_scale(micro_sq, big, size, b, n)
            second, mavg = ema.update(state[1], micro_sq, big, size, b)
            out.update(micro_sq_norm=micro_sq, micro_grad_sq_norm=mg, micro_trace_cov=mt,
                       micro_b_simple=mavg.b_simple)
            new_state = (first, second)
        return new_state, out

    options = (("decay", decay), ("microbatches", microbatches))
    if leaves is not None:  # (absent otherwise: folders written before it still resume)
        options += (("leaves", leaves),)
    return Probe(name=name, every=every, init=init, measure=measure, step_gradients=True,
                 options=options, example_leaves=leaves)


def hessian_noise_probe(every: int = 16, num_examples: int | None = 16, decay: float = 0.9,
                        name: str = "hessian_noise") -> Probe:
    """B_noise = tr(HΣ)/(GᵀHG) of every run every ``every`` steps (see module docstring).

    Args:
      every: measure at optimizer steps 0, every, 2·every, …
      num_examples: minibatch examples used for tr(HΣ) (one full-minibatch HVP each; None: all
        B, capped at B). One measurement costs about 3·(num_examples + 1) minibatch gradients.
      decay: EMA decay per measurement for ``b_noise``.
      name: the probe's name.

    Outputs per measurement: grad_hessian_grad and trace_hessian_cov (unbiased single
    estimates of GᵀHG and tr(HΣ) for the training set), max_learning_rate ε_max = |G|²/GᵀHG
    with the same unbiased |G|², and b_noise = EMA(tr HΣ)/EMA(GᵀHG) in examples.
    """
    _check(every, decay)
    if num_examples is not None and (isinstance(num_examples, bool)
                                     or not isinstance(num_examples, int) or num_examples < 2):
        raise ValueError(f"num_examples: {num_examples!r} must be an integer >= 2")

    def init(params, key):
        del params, key
        zero = jnp.zeros((), jnp.float32)
        return (zero, zero)  # EMAs of GᵀHG and tr(HΣ)

    def measure(loss_fn, params, opt_state, batch, key, step, state):
        del opt_state, step
        b = _batch_size(batch)
        used = None if num_examples is None else min(num_examples, b)
        h = hessian_noise_scale(loss_fn, params, batch, key=key, num_examples=used, unbiased=True)
        ghg_ema, thc_ema = state
        ghg_ema = decay * ghg_ema + (1 - decay) * h.grad_hessian_grad
        thc_ema = decay * thc_ema + (1 - decay) * h.trace_hessian_cov
        out = {"grad_hessian_grad": h.grad_hessian_grad,
               "trace_hessian_cov": h.trace_hessian_cov,
               "max_learning_rate": h.max_learning_rate,
               "b_noise": thc_ema / ghg_ema}  # the EMA debias factors cancel in the ratio
        return (ghg_ema, thc_ema), out

    options = (("decay", decay), ("num_examples", num_examples))
    return Probe(name=name, every=every, init=init, measure=measure, options=options)
