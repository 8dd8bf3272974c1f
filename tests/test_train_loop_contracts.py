"""``gpconv.train.loop``: the numbers ``fit`` reports and when it stops, which images each step
and each evaluation sees (the documented sampling rule: ``default_rng([seed, epoch, 0])``
permutations, whole batches, ``rank::world`` shares, the augmentation's crop), with scripted or
recording stand-ins for a framework (no model is trained), so that every expected value is hand
arithmetic or that rule."""

from __future__ import annotations

import math
import re

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


def _positional_dataset(n_train: int, n_test: int, test_label: int = 0) -> Dataset:
    """Train image ``i`` is all ``0`` (even ``i``) or all ``255`` (odd ``i``): per-channel mean
    0.5 and std 0.5 in [0, 1] units, so a normalised 255 pixel is exactly +1 and a 0 pixel -1.
    Train labels are ``i % 10`` (so a label names its image's position mod 10); every test
    image is all ``255`` with label ``test_label``."""
    x_train = np.zeros((n_train, 2, 2, 3), np.uint8)
    x_train[1::2] = 255
    return Dataset(
        "tiny",
        x_train,
        np.arange(n_train, dtype=np.int64) % 10,
        np.full((n_test, 2, 2, 3), 255, np.uint8),
        np.full(n_test, test_label, np.int64),
        [str(i) for i in range(10)],
    )


class Recorder:
    """A framework stand-in that records every training batch's images and labels and every
    prediction input; predicts class
    ``predict_class`` for every image and reports training loss 1.0."""

    device_label = "cpu"

    def __init__(self, predict_class: int = 0) -> None:
        self.predict_class = predict_class
        self.steps: list[tuple[int, np.ndarray]] = []  # (epoch, labels)
        self.xs: list[np.ndarray] = []  # the images of each step
        self.predicted: list[np.ndarray] = []
        self.epoch = -1
        self.begun: list[tuple[int, int]] = []

    def set_lr(self, lr: float) -> None:
        pass

    def begin_epoch(self, seed: int, epoch: int) -> None:
        self.epoch = epoch
        self.begun.append((seed, epoch))

    def train_step(self, x, y):
        self.steps.append((self.epoch, np.array(y)))
        self.xs.append(np.array(x))
        logits = np.zeros((len(y), 10), np.float32)
        return 1.0, logits

    def begin_evaluation(self) -> None:
        pass

    def predict(self, x):
        self.predicted.append(np.array(x))
        logits = np.zeros((len(x), 10), np.float32)
        logits[:, self.predict_class] = 5.0
        return logits


def _order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The documented epoch order (train/sampling.py: ``default_rng([seed, epoch, stream 0])``)."""
    return np.random.default_rng([seed, epoch, 0]).permutation(n)


@pytest.mark.parametrize("seed", [0, 7])
def test_each_epoch_trains_in_its_own_seeded_order_in_whole_batches(seed) -> None:
    """10 images (labels = positions), batches of 3: three steps per epoch (the last image of
    each epoch's order is dropped), in the order ``default_rng([seed, epoch, 0])`` permutes;
    epoch 1's order is not epoch 0's, and the framework is told ``(seed, epoch)``."""
    fw = Recorder()
    cfg = LoopConfig(epochs=3, batch_size=3, lr=0.1, seed=seed, progress=False)
    fit(fw, _positional_dataset(10, 4), cfg, Dist())
    assert [e for e, _ in fw.steps] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for epoch in range(3):
        got = np.concatenate([y for e, y in fw.steps if e == epoch])
        np.testing.assert_array_equal(got, _order(seed, epoch, 10)[:9])
    assert fw.begun == [(seed, 0), (seed, 1), (seed, 2)]


def test_a_process_trains_on_its_rank_share_of_every_global_batch() -> None:
    """Rank 1 of 2 with global batches of 4 takes positions 1 and 3 of each batch
    (``rank::world``, as ``DistributedSampler`` interleaves); 8 images: two steps."""
    fw = Recorder()
    cfg = LoopConfig(epochs=1, batch_size=4, lr=0.1, seed=3, progress=False)
    fit(fw, _positional_dataset(8, 4), cfg, Dist(rank=1, world=2))
    order = _order(3, 0, 8)
    got = [list(y) for _, y in fw.steps]
    assert got == [list(order[[1, 3]]), list(order[[5, 7]])]


def test_evaluation_scores_the_normalised_test_split() -> None:
    """The test loss/accuracy come from the test images (all 255 -> +1 after normalising with
    the training mean 0.5 and std 0.5) and the test labels (3): predicting class 3 scores
    accuracy 1.0 on all 5 test images; the train split (labels 0..7, pixels -1 and +1) would
    not."""
    fw = Recorder(predict_class=3)
    cfg = LoopConfig(epochs=1, batch_size=2, lr=0.1, progress=False)
    (row,) = fit(fw, _positional_dataset(8, 5, test_label=3), cfg, Dist())
    seen = np.concatenate(fw.predicted)
    assert seen.shape == (5, 2, 2, 3)
    np.testing.assert_allclose(seen, 1.0, rtol=0, atol=1e-6)
    assert row["test_acc"] == 1.0
    # logits 5 at the right class, 0 elsewhere: -log(e^5 / (e^5 + 9))
    assert row["test_loss"] == pytest.approx(math.log1p(9 * math.exp(-5.0)))
    assert row["train_loss"] == pytest.approx(1.0)


def test_fit_leaves_the_callers_history_list_alone() -> None:
    """``fit`` returns the full history as a new list; the list passed in (a checkpoint's
    history) keeps its length, so a caller can still tell what was resumed."""
    fw = Recorder()
    cfg = LoopConfig(epochs=2, batch_size=4, lr=0.1, progress=False)
    first = fit(fw, _positional_dataset(8, 4), cfg, Dist())[:1]
    full = fit(fw, _positional_dataset(8, 4), cfg, Dist(), history=first)
    assert len(first) == 1 and len(full) == 2 and full[1]["epoch"] == 2


class _Diverging(Recorder):
    def train_step(self, x, y):
        super().train_step(x, y)
        return math.nan, np.zeros((len(y), 10), np.float32)


def test_the_diverged_epoch_reaches_on_epoch_end_before_the_run_stops() -> None:
    """``fit``'s docstring: ``Diverged`` is raised *after* ``on_epoch_end`` of the epoch whose
    train loss is not finite, so the run folder logic sees (and records) that epoch."""
    seen = []
    cfg = LoopConfig(epochs=3, batch_size=4, lr=0.1, progress=False)
    with pytest.raises(Diverged):
        fit(
            _Diverging(),
            _positional_dataset(8, 4),
            cfg,
            Dist(),
            on_epoch_end=lambda h: seen.append(len(h)),
        )
    assert seen == [1]


@pytest.mark.parametrize("augment", [False, True])
def test_augment_crops_training_images_into_their_zero_padding(augment) -> None:
    """Without augmentation a training image reaches the step whole (all-255 images of odd label
    are all +1 after normalising); with ``augment`` each is cropped from a 4-pixel zero padding
    at an offset in [0, 8]^2, so a 2x2 image keeps all of its own pixels only at offset (4, 4)
    (odds 1/81 each): some odd-label images then hold padding pixels (0 -> -1)."""
    fw = Recorder()
    cfg = LoopConfig(epochs=1, batch_size=10, lr=0.1, seed=1, augment=augment, progress=False)
    fit(fw, _positional_dataset(10, 4), cfg, Dist())
    ((x,), ((_, y),)) = fw.xs, fw.steps
    odd = x[y % 2 == 1]
    assert len(odd) == 5
    padded = [bool(np.any(np.isclose(img, -1.0))) for img in odd]
    assert any(padded) == augment


@pytest.mark.parametrize("schedule", ["linear", "Cosine", ""])
def test_a_loop_config_refuses_a_schedule_it_would_read_as_cosine(schedule) -> None:
    """``lr_at`` takes anything but "constant" as the cosine: ``fit`` called from Python with
    ``schedule="linear"`` decayed by the cosine without a word. LoopConfig names it."""
    with pytest.raises(ValueError, match=re.escape(f"received schedule={schedule!r}")):
        LoopConfig(epochs=1, batch_size=2, lr=0.1, schedule=schedule)
