"""Losses, metrics, and the `Task` that pairs them: what the sweep engine minimises and reports.

    cross_entropy(logits [B, C], labels [B] int) = mean_i -log softmax(logits_i)[labels_i]
    mse(predictions [B, K], targets [B, K])      = mean_i 1/2 sum_k (predictions_ik - targets_ik)^2
    accuracy(logits [B, C], labels [B] int)      = mean_i [argmax_c logits_ic == labels_i]

The loss of a sweep is named in its configuration (``SweepConfig.loss``, TOML ``[training]
loss``): "cross_entropy" (classification), or "mse" — on one-hot targets for classification
(Cohen et al. 2021's squared error; accuracy is still reported), on the targets for regression.
None chooses by the data set: cross-entropy for labels, mse for targets.

A user's own loss is a function ``loss(outputs [B, K], targets [B, ...]) -> [B]`` of
per-example losses (``run_sweep(loss=...)``, ``task_for(num_classes, loss)``); the sweep
minimises their mean and reports it as "loss" (with accuracy for classification).

`make_loss_fn(model, task)` gives the pure `loss_fn(params, (x, y)) -> scalar` that the
measurement utilities (gradient noise scale, Hessian eigenvalues, ...) take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from jaxsgd._util import is_user_part
from jaxsgd.config import LOSSES
from jaxsgd.models import Model, PyTree

Batch = tuple[jax.Array, jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy (nats per example); logits [B, C], integer labels [B] -> []."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def mse(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean over examples of half the summed squared error: [B, K], [B, K] -> [].

    For K = 1 this is the mean of (y_hat - y)^2 / 2. Targets [B] are accepted for predictions
    [B, 1] (reshaped, never broadcast to [B, B]); any other shape mismatch is an error.
    """
    targets = jnp.reshape(targets, predictions.shape)
    return 0.5 * jnp.mean(jnp.sum(jnp.square(predictions - targets), axis=-1))


def mse_one_hot(outputs: jax.Array, labels: jax.Array) -> jax.Array:
    """``mse`` of outputs [B, C] against one-hot encoded integer labels [B]: [] (per example
    ½ Σ_c (o_c − [c = y])²)."""
    return mse(outputs, jax.nn.one_hot(labels, outputs.shape[-1], dtype=outputs.dtype))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of examples whose argmax logit is the label; logits [B, C], labels [B] -> []."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


class Task(NamedTuple):
    """What the sweep engine evaluates.

    Attributes:
        loss: `loss(outputs [B, K], targets) -> scalar`, the training objective.
        metrics: `metrics(outputs, targets) -> {"loss", "accuracy"}` for classification,
            `{"loss"}` for regression; every value a scalar.
        name: "classification" or "regression".
    """

    loss: Callable[[jax.Array, jax.Array], jax.Array]
    metrics: Callable[[jax.Array, jax.Array], dict[str, jax.Array]]
    name: str


def classification_metrics(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """{"loss": mean cross-entropy, "accuracy": fraction correct}; logits [B, C], labels [B]."""
    return {"loss": cross_entropy(logits, labels), "accuracy": accuracy(logits, labels)}


def regression_metrics(predictions: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
    """{"loss": mse}; predictions [B, K], targets [B, K]."""
    return {"loss": mse(predictions, targets)}


def squared_error_classification_metrics(outputs: jax.Array,
                                         labels: jax.Array) -> dict[str, jax.Array]:
    """{"loss": mse on one-hot targets, "accuracy"}; outputs [B, C], labels [B]."""
    return {"loss": mse_one_hot(outputs, labels), "accuracy": accuracy(outputs, labels)}


CLASSIFICATION = Task(loss=cross_entropy, metrics=classification_metrics, name="classification")
SQUARED_ERROR_CLASSIFICATION = Task(loss=mse_one_hot, metrics=squared_error_classification_metrics,
                                    name="classification")
REGRESSION = Task(loss=mse, metrics=regression_metrics, name="regression")


# A user's own loss: outputs [B, K], targets [B, ...] -> per-example losses [B].
PerExampleLoss = Callable[[jax.Array, jax.Array], jax.Array]


@dataclass(frozen=True)
class _MeanOf:
    """The mean over examples of a user's per-example loss (hashable by the loss, so sweeps
    with the same loss share compiled programs)."""

    loss: PerExampleLoss

    def __call__(self, outputs: jax.Array, targets: jax.Array) -> jax.Array:
        return jnp.mean(self.loss(outputs, targets))


@dataclass(frozen=True)
class _UserMetrics:
    """{"loss": mean user loss} (+ "accuracy" for classification)."""

    loss: _MeanOf
    classification: bool

    def __call__(self, outputs: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
        out = {"loss": self.loss(outputs, targets)}
        if self.classification:
            out["accuracy"] = accuracy(outputs, targets)
        return out


def task_for(num_classes: int, loss: Union[str, PerExampleLoss, None] = None) -> Task:
    """The task of a data set with ``num_classes`` (0: regression) trained with ``loss``.

    None: cross-entropy for classification, mse for regression. "mse" on a classification set
    is the squared error to one-hot targets (accuracy still reported); "cross_entropy" needs
    class labels. A callable is the user's own per-example loss ``loss(outputs, targets) ->
    [B]``: the task minimises its mean (accuracy reported for classification).
    """
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 means regression), got {num_classes}")
    if callable(loss):
        mean = _MeanOf(loss)
        return Task(loss=mean, metrics=_UserMetrics(mean, num_classes > 0),
                    name="classification" if num_classes else "regression")
    if is_user_part(loss):
        raise ValueError(f"loss: {loss!r} was the user's own loss; pass the function itself "
                         f"(loss=...)")
    if loss not in (None, *LOSSES):
        raise ValueError(f"loss: unknown loss {loss!r}; known: {', '.join(LOSSES)}")
    if num_classes == 0:
        if loss == "cross_entropy":
            raise ValueError("loss: 'cross_entropy' needs class labels, but the data set holds "
                             "regression targets; use 'mse', or give from_arrays integer labels "
                             "or num_classes")
        return REGRESSION
    return SQUARED_ERROR_CLASSIFICATION if loss == "mse" else CLASSIFICATION


def make_loss_fn(model: Model, task: Task) -> Callable[[PyTree, Batch], jax.Array]:
    """The pure loss of a params pytree: `loss_fn(params, (x, y))`, a scalar.

    `loss_fn(params, (x, y)) = task.loss(model.apply(params, x), y)` with x [B, *input_shape].

    Example:
        >>> loss_fn = make_loss_fn(mlp((40,), 10), task_for(10))   # doctest: +SKIP
        >>> grads = jax.grad(loss_fn)(params, (x, y))               # doctest: +SKIP
    """

    def loss_fn(params: PyTree, batch: Batch) -> jax.Array:
        x, y = batch
        return task.loss(model.apply(params, x), y)

    return loss_fn
