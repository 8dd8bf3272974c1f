"""Epoch plans: data order, augmentation draws and dropout seeds as functions of ``(seed, epoch)``.

Nothing random in training carries state from one epoch to the next: every epoch draws from fresh
generators ``np.random.default_rng([seed, epoch, stream])``. So the "RNG state" a checkpoint needs
is just ``(seed, next epoch)``, and ``--resume`` replays exactly what an uninterrupted run does.

Batches are *global* (``batch_size`` images per optimiser step, over all processes); under DDP
process ``rank`` of ``world`` takes positions ``rank::world`` of every global batch (the
interleaved split ``torch.utils.data.DistributedSampler`` makes). The last incomplete batch of an
epoch is dropped so that every step (and every BN batch) has the same size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core._validate import require_bool, require_positive_int
from .data import Dataset

STREAM_ORDER, STREAM_AUGMENT, STREAM_DROPOUT = 0, 1, 2
PAD = 4  # random-crop padding in pixels (the paper's CIFAR recipe: pad 4, crop back, flip)


def epoch_rng(seed: int, epoch: int, stream: int, *extra: int) -> np.random.Generator:
    """The generator for one random stream of one epoch (``extra``: e.g. rank, step).

    Every argument is an int >= 0 (Python or NumPy), what NumPy's ``SeedSequence`` takes; any
    other is a ``TypeError``/``ValueError`` naming it (NumPy's own says 'unrecognized seed
    string' for ``seed="0"``, naming nothing)."""
    named = [("seed", seed), ("epoch", epoch), ("stream", stream)]
    named += [(f"extra[{i}]", e) for i, e in enumerate(extra)]
    return np.random.default_rng([require_positive_int(k, v, minimum=0) for k, v in named])


def derived_seed(seed: int, epoch: int, stream: int, *extra: int) -> int:
    """A 31-bit integer seed for a framework RNG (torch, Keras), derived like ``epoch_rng``."""
    return int(epoch_rng(seed, epoch, stream, *extra).integers(2**31 - 1))


@dataclass(frozen=True)
class EpochPlan:
    """One epoch's sample order ``(n,)`` and, with augmentation, per-position crop offsets
    ``(n, 2)`` in ``[0, 2*PAD]`` and horizontal flips ``(n,)``, indexed by position in ``order``."""

    order: np.ndarray
    crops: np.ndarray | None = None
    flips: np.ndarray | None = None


def plan_epoch(n: int, seed: int, epoch: int, augment: bool = False) -> EpochPlan:
    """Shuffle ``n`` training samples and draw their augmentation for ``epoch``. Augmentation is
    drawn for the whole epoch on every process, so a sample's crop does not depend on the rank."""
    n = require_positive_int("n", n, minimum=0)  # permutation(-1) is an empty order, silently
    augment = require_bool("augment", augment)  # "no" would augment
    order = epoch_rng(seed, epoch, STREAM_ORDER).permutation(n)
    if not augment:
        return EpochPlan(order)
    rng = epoch_rng(seed, epoch, STREAM_AUGMENT)
    return EpochPlan(order, rng.integers(0, 2 * PAD + 1, size=(n, 2)), rng.random(n) < 0.5)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Whole global batches per epoch (the remainder is dropped)."""
    return n // batch_size


def local_positions(step: int, batch_size: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Positions (into ``EpochPlan.order``) of this process's share of global batch ``step``."""
    return np.arange(step * batch_size, (step + 1) * batch_size)[rank::world]


def crop_flip(images: np.ndarray, crops: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Zero-pad ``(B, H, W, C)`` images by ``PAD`` pixels, crop ``(H, W)`` at ``crops[b]``
    (row, col offsets) and mirror horizontally where ``flips[b]``."""
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
    out = np.empty_like(images)
    for i in range(b):
        r, c = crops[i]
        patch = padded[i, r : r + h, c : c + w]
        out[i] = patch[:, ::-1] if flips[i] else patch
    return out


def train_batch(
    data: Dataset, plan: EpochPlan, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised float32 images ``(b, H, W, 3)`` and labels ``(b,)`` at ``positions``."""
    idx = plan.order[positions]
    x = data.x_train[idx]
    if plan.crops is not None:
        x = crop_flip(x, plan.crops[positions], plan.flips[positions])
    return data.normalize(x), data.y_train[idx]
