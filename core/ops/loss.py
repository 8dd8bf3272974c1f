"""Softmax cross-entropy on logits (models return logits; the loss owns the softmax)."""

from __future__ import annotations

from typing import Any

from .._validate import namespace, require_float, require_ndim, require_real_scalar


class SoftmaxCrossEntropy:
    """Mean over the batch of ``-log softmax(logits)[n, labels[n]]``.

    Shapes: logits ``(N, K)`` floating, labels ``(N,)`` integers in ``[0, K)``. Returns a 0-d array.
    Backward: ``dlogits = dloss * (softmax(logits) - onehot(labels)) / N``.
    """

    @staticmethod
    def forward(logits: Any, labels: Any) -> tuple[Any, dict]:
        xp = namespace(logits, labels, names=("logits", "labels"))
        require_ndim("logits", logits, 2, "(N, K)")
        require_float(xp, "logits", logits)
        if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
            raise ValueError(
                f"Expected labels.shape=({logits.shape[0]},), "
                f"received labels.shape={tuple(labels.shape)}"
            )
        if not xp.isdtype(labels.dtype, "integral"):
            raise TypeError(f"Expected integer labels, received labels.dtype={labels.dtype}")
        k = logits.shape[1]
        if labels.shape[0]:
            lo, hi = int(xp.min(labels)), int(xp.max(labels))
            if lo < 0 or hi >= k:
                raise ValueError(f"Expected labels in [0, {k}), received values in [{lo}, {hi}]")
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        log_probs = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        onehot = xp.astype(
            xp.arange(k)[None, :] == xp.astype(labels, xp.int64)[:, None], logits.dtype
        )
        loss = -xp.sum(log_probs * onehot) / logits.shape[0]
        return loss, {"probs": xp.exp(log_probs), "onehot": onehot}

    @staticmethod
    def backward(cache: dict, dloss: Any = 1.0) -> tuple[Any, dict]:
        require_real_scalar("dloss", dloss)
        probs, onehot = cache["probs"], cache["onehot"]
        return dloss * (probs - onehot) / probs.shape[0], {}
