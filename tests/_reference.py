"""Plain, engine-independent training loops used as ground truth by the sweep tests.

They follow the engine's documented key contract — ``split(key(seed), 3)`` gives the
initialisation, data and probe keys; epoch ``e`` uses ``permutation(fold_in(data_key, e), N)``
and drops the last ``N mod B`` examples — and nothing else of it: plain optax, plain Python loop.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax


def plain_sgd_run(model, loss, data, seed, learning_rate, batch_size, num_steps,
                  divergence_factor=10.0, tx=None):
    """Train one run step by step; returns (params, minibatch losses [num_steps], diverged_step).

    ``tx``: the optax optimizer (default ``optax.sgd(learning_rate)``).

    The run stops updating at the first step whose minibatch loss is non-finite or exceeds
    ``divergence_factor`` times the first one (diverged_step = that step, else -1).
    """
    k_init, k_data, _ = jax.random.split(jax.random.key(seed), 3)
    params = model.init(k_init)
    tx = optax.sgd(learning_rate) if tx is None else tx
    opt_state = tx.init(params)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    n = x.shape[0]
    per_epoch = n // batch_size

    @jax.jit
    def step(params, opt_state, idx):
        def loss_fn(p):
            return loss(model.apply(p, x[idx]), y[idx])

        value, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    losses, diverged_step, first, perms = [], -1, None, {}
    for t in range(num_steps):
        epoch, pos = divmod(t, per_epoch)
        if epoch not in perms:  # one permutation per epoch
            perms = {epoch: np.asarray(jax.random.permutation(jax.random.fold_in(k_data, epoch),
                                                              n))}
        idx = perms[epoch][pos * batch_size:(pos + 1) * batch_size]
        new_params, new_state, value = step(params, opt_state, idx)
        value = float(value)
        losses.append(value)
        first = value if first is None else first
        if not np.isfinite(value) or value > divergence_factor * first:
            diverged_step = t
            break
        params, opt_state = new_params, new_state
    return params, np.asarray(losses), diverged_step


def accuracy(model, params, x, y):
    return float(jnp.mean(jnp.argmax(model.apply(params, jnp.asarray(x)), -1) == jnp.asarray(y)))
