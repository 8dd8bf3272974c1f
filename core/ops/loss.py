"""Softmax cross-entropy on logits (models return logits; the loss owns the softmax)."""

from __future__ import annotations

import numbers
from typing import Any

from array_api_compat import device

from .._validate import check_cache, namespace, require_float, require_ndim, require_real_scalar


def check_labels(xp: Any, labels: Any, n: int, classes: int) -> None:
    """Raise unless ``labels`` is an integer array of shape ``(n,)`` with values in
    ``[0, classes)``. Also run by ``network.loss_and_grads`` before its forward pass."""
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(
            f"Expected labels.shape=({n},), received labels.shape={tuple(labels.shape)}"
        )
    if not xp.isdtype(labels.dtype, "integral"):
        raise TypeError(f"Expected integer labels, received labels.dtype={labels.dtype}")
    if n:
        lo, hi = int(xp.min(labels)), int(xp.max(labels))
        if lo < 0 or hi >= classes:
            raise ValueError(f"Expected labels in [0, {classes}), received values in [{lo}, {hi}]")


class SoftmaxCrossEntropy:
    """Mean over the batch of ``-log softmax(logits)[n, labels[n]]``.

    Shapes: logits ``(N, K)`` floating, ``K >= 1``; labels ``(N,)`` integers in ``[0, K)``.
    Returns a 0-d array of the logits' dtype (for NumPy logits, a NumPy scalar). An empty batch
    (``N == 0``) gives NaN, the mean of nothing (as ``torch.nn.functional.cross_entropy``).
    Backward: ``dlogits = dloss * (softmax(logits) - onehot(labels)) / N``, in the logits' dtype.
    """

    @staticmethod
    def forward(logits: Any, labels: Any) -> tuple[Any, dict]:
        xp = namespace(logits, labels, names=("logits", "labels"))
        require_ndim("logits", logits, 2, "(N, K)")
        require_float(xp, "logits", logits)
        k = logits.shape[1]
        if k < 1:
            raise ValueError(
                "Expected logits.shape[1] >= 1 (classes), "
                f"received logits.shape={tuple(logits.shape)}"
            )
        check_labels(xp, labels, logits.shape[0], k)
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        log_probs = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        classes = xp.arange(k, device=device(logits))
        # int64 like `classes`: the array API has no common type for int64 and uint64 labels.
        target = classes[None, :] == xp.astype(labels, xp.int64)[:, None]
        # NOTE: select, not multiply by the one-hot: a class with probability 0 has log-prob
        # -inf (a -inf logit, or float16 logits 1e5 apart), and -inf * 0 would be NaN.
        loss = xp.sum(xp.where(target, -log_probs, 0.0)) / logits.shape[0]
        cache = {"op": "SoftmaxCrossEntropy", "probs": xp.exp(log_probs)}
        cache["onehot"] = xp.astype(target, logits.dtype)
        return loss, cache

    @staticmethod
    def backward(cache: dict, dloss: Any = 1.0) -> tuple[Any, dict]:
        require_real_scalar("dloss", dloss)
        check_cache(cache, "SoftmaxCrossEntropy")
        probs, onehot = cache["probs"], cache["onehot"]
        if isinstance(dloss, numbers.Real):
            # A Python float adapts to the logits' dtype; a NumPy float64 or int64 scalar would
            # promote float32 gradients to float64 (NEP 50).
            dloss = float(dloss)
        else:  # a 0-d array: same library as the logits, cast to their dtype
            xp = namespace(probs, dloss, names=("logits", "dloss"))
            dloss = xp.astype(dloss, probs.dtype)
        return dloss * (probs - onehot) / probs.shape[0], {}
