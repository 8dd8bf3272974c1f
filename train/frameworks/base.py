"""What each framework supplies to the shared training loop, and nothing more.

A ``Framework`` owns a native model and optimiser and exposes NumPy-in/NumPy-out steps on
channels-last batches; data order, augmentation, metrics, progress, checkpoints and resume live
once in ``train.loop``. Implementations: ``numpy_fw`` (the reference), ``torch_fw``,
``tensorflow_fw``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ...core.arch import Architecture
from ..distributed import Dist


@dataclass(frozen=True)
class OptimConfig:
    """``sgd``: momentum 0.9; ``adam``: beta1 0.9, beta2 0.999, eps 1e-7 (Keras's defaults, also
    passed to torch so the frameworks agree). ``lr`` is the base rate, scheduled by the loop."""

    kind: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7

    def __post_init__(self) -> None:
        if self.kind not in ("sgd", "adam"):
            raise ValueError(f"Expected optimizer 'sgd' or 'adam', received {self.kind!r}")


class Framework(Protocol):
    """One framework's model + optimiser behind NumPy batches ``x (B, H, W, 3)`` float32 and
    labels ``(B,)`` int64. Under DDP each process holds a replica and sees its shard."""

    name: str
    arch: Architecture
    dist: Dist
    # Where the steps run, for people: "cpu" or e.g. "cuda:0 NVIDIA H100 80GB HBM3"
    # (``format_device``).
    device_label: str

    def set_lr(self, lr: float) -> None:
        """Learning rate for the following steps."""

    def begin_epoch(self, seed: int, epoch: int) -> None:
        """Re-seed the framework's own RNG (dropout, drop-connect) from ``(seed, epoch, rank)``."""

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """One optimiser step on the (local shard of the) batch: ``(mean loss, logits (B, K))``
        as computed in training mode before the update."""

    def begin_evaluation(self) -> None:
        """Called by every process before it scores its share of the test set: replicas must
        score with the model that is saved (rank 0's)."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Inference-mode logits ``(B, K)`` (moving BN statistics, no dropout)."""

    def export_params(self) -> dict[str, np.ndarray]:
        """All parameters in canonical names and Keras layouts."""

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        """Set all parameters from canonical ones."""

    def optimizer_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The optimiser's arrays and its JSON-able metadata."""

    def load_optimizer_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what ``optimizer_state`` returned (same framework, same model)."""


def format_device(kind: str, index: int | None = None, name: str | None = None) -> str:
    """``"cpu"``, or an accelerator as ``"<kind>:<index> <name>"`` (``"cuda:0 NVIDIA H100"``):
    what ``Framework.device_label`` reports, so run summaries and bench results say where a
    step ran rather than only which host."""
    if index is None:
        return kind
    return f"{kind}:{index}" + (f" {name}" if name else "")


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample ``-log softmax(logits)[n, labels[n]]``, ``(B,)`` float64 (for evaluation)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels]
