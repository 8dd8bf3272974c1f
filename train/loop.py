"""The training loop, written once for every framework (see ``frameworks.base.Framework``).

Per epoch: learning rate from the schedule, the epoch plan (order, augmentation) from
``(seed, epoch)``, one optimiser step per global batch (this process's shard under DDP), then an
evaluation on the test set (sharded, summed over processes). ``on_epoch_end`` receives the
history after each epoch; the run folder logic (checkpoints, files) hangs there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core._validate import require_choice
from .data import Dataset
from .distributed import Dist
from .frameworks.base import Framework, softmax_cross_entropy
from .progress import EpochProgress
from .sampling import local_positions, plan_epoch, steps_per_epoch, train_batch

History = list[dict[str, Any]]


SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class LoopConfig:
    """``batch_size`` is global (all processes together); ``schedule`` is ``"cosine"`` (per-epoch
    cosine decay from ``lr``, never reaching 0) or ``"constant"``."""

    epochs: int
    batch_size: int
    lr: float
    seed: int = 0
    augment: bool = False
    schedule: str = "cosine"
    progress: bool = True

    def __post_init__(self) -> None:
        # lr_at reads any other name as cosine: a fit(...) called from Python with "linear"
        # would decay by the cosine without a word (gpconv train checks --schedule itself).
        require_choice("schedule", self.schedule, SCHEDULES)


def lr_at(cfg: LoopConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``: cosine ``lr * (1 + cos(pi * epoch / epochs)) / 2``."""
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))


def evaluate(fw: Framework, data: Dataset, batch_size: int, dist: Dist) -> tuple[float, float]:
    """Mean test loss and accuracy over the whole test set (each process scores every
    ``world``-th image; sums are reduced over processes)."""
    idx = np.arange(len(data.y_test))[dist.rank :: dist.world]
    fw.begin_evaluation()
    sums = np.zeros(3)  # loss sum, correct, count
    for start in range(0, len(idx), batch_size):
        batch = idx[start : start + batch_size]
        y = data.y_test[batch]
        logits = fw.predict(data.normalize(data.x_test[batch]))
        sums += (softmax_cross_entropy(logits, y).sum(), (logits.argmax(1) == y).sum(), len(y))
    loss_sum, correct, count = dist.allreduce_sum(sums)
    return float(loss_sum / count), float(correct / count)


def train_epoch(
    fw: Framework, data: Dataset, cfg: LoopConfig, epoch: int, dist: Dist
) -> dict[str, float]:
    """One epoch of optimiser steps; returns mean train loss/accuracy (training mode, as logged
    by Keras: each batch scored before its update), images/s and seconds."""
    n = len(data.y_train)
    steps = steps_per_epoch(n, cfg.batch_size)
    plan = plan_epoch(n, cfg.seed, epoch, cfg.augment)
    fw.begin_epoch(cfg.seed, epoch)
    progress = EpochProgress(epoch, cfg.epochs, steps, enabled=cfg.progress and dist.is_main)
    sums = np.zeros(3)  # loss sum, correct, count (this process)
    start = time.perf_counter()
    for step in range(steps):
        x, y = train_batch(data, plan, local_positions(step, cfg.batch_size, dist.rank, dist.world))
        loss, logits = fw.train_step(x, y)
        sums += (loss * len(y), (np.asarray(logits).argmax(1) == y).sum(), len(y))
        progress.update(cfg.batch_size, sums[0] / sums[2], sums[1] / sums[2])
    seconds = time.perf_counter() - start
    loss_sum, correct, count = dist.allreduce_sum(sums)
    progress.close(
        f"train loss {loss_sum / count:.4f} acc {correct / count:.4f} "
        f"{count / seconds:.1f} img/s {seconds:.1f}s"
    )
    return {
        "train_loss": float(loss_sum / count),
        "train_acc": float(correct / count),
        "images_per_s": float(count / seconds),
        "train_seconds": seconds,
    }


class Diverged(RuntimeError):
    """The training loss of a completed epoch is not finite: the parameters are NaN or
    overflowing, and no later epoch recovers. ``history`` holds every completed epoch."""

    def __init__(self, history: History) -> None:
        self.history = history
        row = history[-1]
        super().__init__(
            f"training diverged: train loss {row['train_loss']} in epoch {row['epoch']} "
            "(try a lower --lr)"
        )


def fit(
    fw: Framework,
    data: Dataset,
    cfg: LoopConfig,
    dist: Dist,
    history: History | None = None,
    on_epoch_end: Callable[[History], None] | None = None,
) -> History:
    """Train from epoch ``len(history)`` to ``cfg.epochs``; returns the full history.
    ``ValueError`` if ``history`` already holds more than ``cfg.epochs`` epochs; ``Diverged``
    after ``on_epoch_end`` of an epoch whose train loss is not finite (every process sees the
    same all-reduced loss, so all stop together)."""
    if history is not None and len(history) > cfg.epochs:
        # Nothing would be trained and the caller would get back more epochs than it asked for.
        raise ValueError(
            f"Expected epochs >= {len(history)} (the history already holds {len(history)} "
            f"epochs), received epochs {cfg.epochs}"
        )
    if steps_per_epoch(len(data.y_train), cfg.batch_size) == 0:
        raise ValueError(
            f"batch size {cfg.batch_size} exceeds the {len(data.y_train)} training images"
        )
    history = list(history or [])
    for epoch in range(len(history), cfg.epochs):
        start = time.perf_counter()
        lr = lr_at(cfg, epoch)
        fw.set_lr(lr)
        row = train_epoch(fw, data, cfg, epoch, dist)
        test_loss, test_acc = evaluate(fw, data, cfg.batch_size, dist)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": row["train_loss"],
                "train_acc": row["train_acc"],
                "test_loss": test_loss,
                "test_acc": test_acc,
                "lr": lr,
                "seconds": time.perf_counter() - start,
                "images_per_s": row["images_per_s"],
            }
        )
        if dist.is_main and cfg.progress:
            print(
                f"epoch {epoch + 1}/{cfg.epochs} test loss {test_loss:.4f} acc {test_acc:.4f}",
                flush=True,
            )
        if on_epoch_end is not None:
            on_epoch_end(history)
        if not math.isfinite(row["train_loss"]):
            raise Diverged(history)
    return history
