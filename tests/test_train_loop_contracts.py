"""``gpconv.train.loop``: the numbers ``fit`` reports and when it stops, with a scripted stand-in
for a framework (no model is trained), so that every expected value is hand arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpconv.train.data import Dataset
from gpconv.train.distributed import Dist
from gpconv.train.frameworks.base import softmax_cross_entropy
from gpconv.train.loop import Diverged, LoopConfig, evaluate, fit


def _dataset(n_train: int = 12, n_test: int = 10) -> Dataset:
    """Tiny 2x2 images, all-zero, 10 classes; labels 0 for every image."""
    ds = Dataset(
        "tiny",
        np.zeros((n_train, 2, 2, 3), np.uint8),
        np.zeros(n_train, np.int64),
        np.zeros((n_test, 2, 2, 3), np.uint8),
        np.zeros(n_test, np.int64),
        [str(i) for i in range(10)],
    )
    return ds


class Scripted:
    """A framework whose training step returns ``loss`` for every batch, with logits right for
    the first ``right`` images of each batch; predictions are all-zero logits (uniform over the
    10 classes: cross-entropy ln 10 per image, argmax class 0)."""

    device_label = "cpu"

    def __init__(self, loss: float = 2.0, right: int = 4) -> None:
        self.loss, self.right, self.lrs = loss, right, []

    def set_lr(self, lr: float) -> None:
        self.lrs.append(lr)

    def begin_epoch(self, seed: int, epoch: int) -> None:
        pass

    def train_step(self, x: np.ndarray, y: np.ndarray):
        logits = np.zeros((len(y), 10), np.float32)
        logits[:, 1] = 1.0  # class 1: wrong (labels are 0) ...
        logits[: self.right, 0] = 2.0  # ... except for the first `right` images
        return self.loss, logits

    def begin_evaluation(self) -> None:
        pass

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.zeros((len(x), 10), np.float32)


def test_train_loss_and_accuracy_are_means_over_the_epochs_images() -> None:
    """Keras logs an epoch's training loss as the mean of its per-batch losses (each batch's
    mean loss, weighted by its size): a framework reporting 2.0 for every batch trains an epoch
    of mean loss 2.0, whatever the batch size. 12 images in batches of 6, 4 of each 6 right:
    accuracy 8/12."""
    cfg = LoopConfig(epochs=1, batch_size=6, lr=0.1, progress=False)
    (row,) = fit(Scripted(loss=2.0, right=4), _dataset(12), cfg, Dist())
    assert row["train_loss"] == pytest.approx(2.0)
    assert row["train_acc"] == pytest.approx(8 / 12)


def test_test_loss_is_the_mean_cross_entropy_over_every_test_image() -> None:
    """Uniform logits over 10 classes give each image cross-entropy ln 10; the mean over the 10
    test images scored in batches of 4, 4 and 2 is ln 10 too (a mean of per-batch means, or a
    sum divided by the image count, would not be). Every prediction is class 0: accuracy 1."""
    loss, acc = evaluate(Scripted(), _dataset(12, 10), 4, Dist())
    assert loss == pytest.approx(math.log(10))
    assert acc == 1.0


def test_an_infinite_train_loss_stops_the_run_as_diverged() -> None:
    """``Diverged`` is for a train loss that "is not finite": an overflow to +inf is as
    unrecoverable as NaN (SGD on inf loss gives inf/NaN gradients), so the run must stop after
    that epoch, with it in the history, instead of training further epochs."""
    fw = Scripted(loss=math.inf)
    cfg = LoopConfig(epochs=3, batch_size=6, lr=0.1, progress=False)
    with pytest.raises(Diverged) as info:
        fit(fw, _dataset(12), cfg, Dist())
    assert len(info.value.history) == 1 and fw.lrs == [0.1]


def test_fit_refuses_a_batch_larger_than_the_training_set() -> None:
    """Whole batches only (the remainder is dropped): 12 images in batches of 13 is no step at
    all. ``fit`` must say so up front (a ``ValueError`` naming the batch size), not train an
    epoch of 0 images and report its 0/0 loss as a diverged run."""
    cfg = LoopConfig(epochs=1, batch_size=13, lr=0.1, progress=False)
    with pytest.raises(ValueError, match="batch size 13"):
        fit(Scripted(), _dataset(12), cfg, Dist())


def test_the_history_records_the_learning_rate_each_epoch_trained_with() -> None:
    """Cosine decay per epoch (docs/train.md; ``lr * (1 + cos(pi * epoch / epochs)) / 2`` for
    0-based ``epoch``): with lr 0.1 over 4 epochs, 0.1, 0.1 * (1 + cos(pi/4)) / 2 = 0.085355...,
    0.05 and 0.014645...; each is both set on the framework and written to the epoch's row."""
    fw = Scripted()
    cfg = LoopConfig(epochs=4, batch_size=6, lr=0.1, progress=False)
    history = fit(fw, _dataset(12), cfg, Dist())
    expected = [0.1, 0.05 * (1 + math.sqrt(0.5)), 0.05, 0.05 * (1 - math.sqrt(0.5))]
    assert fw.lrs == pytest.approx(expected)
    assert [row["lr"] for row in history] == pytest.approx(expected)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]


def test_cross_entropy_of_large_and_small_logits_in_the_same_batch_is_finite_and_exact():
    """``-log softmax`` of ``[1000, 0]`` at class 0 is ``log(1 + e^-1000)`` (0 in float64) and
    at class 1 is 1000; ``[0, 1]`` at class 1 is ``log(1 + e^-1)``: no overflow of exp(1000),
    and no row shifted by another row's maximum (exp(-999) underflows to 0)."""
    logits = np.array([[1000.0, 0.0], [1000.0, 0.0], [0.0, 1.0]], np.float32)
    got = softmax_cross_entropy(logits, np.array([0, 1, 1]))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, [0.0, 1000.0, math.log1p(math.exp(-1.0))], rtol=1e-12, atol=0)


def test_cross_entropy_is_computed_in_float64_from_float32_logits():
    """float32 logits ``[0, 20]`` at class 1: ``log(1 + e^-20) = 2.06e-9``, which float32
    arithmetic rounds to 0 (or to its 1.2e-7 spacing near 1)."""
    got = softmax_cross_entropy(np.array([[0.0, 20.0]], np.float32), np.array([1]))
    assert got[0] == pytest.approx(math.log1p(math.exp(-20.0)), rel=1e-9)
