"""``gpconv.train.sampling``: the seed scheme, crops, and which image gets which augmentation."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gpconv.train import sampling


def test_epoch_plans_follow_the_scheme_checkpoints_record():
    """state.json records the RNG as "numpy default_rng([seed, epoch, stream, ...]) per
    epoch": a checkpoint resumed by another gpconv version replays the same epochs only if
    the order and the augmentation come from exactly those streams (order from stream 0,
    crops and flips from stream 1), not merely from some function of (seed, epoch)."""
    seed, epoch, n = 11, 4, 40
    plan = sampling.plan_epoch(n, seed, epoch, augment=True)
    order = np.random.default_rng([seed, epoch, sampling.STREAM_ORDER]).permutation(n)
    np.testing.assert_array_equal(plan.order, order)
    aug = np.random.default_rng([seed, epoch, sampling.STREAM_AUGMENT])
    np.testing.assert_array_equal(plan.crops, aug.integers(0, 2 * sampling.PAD + 1, size=(n, 2)))
    np.testing.assert_array_equal(plan.flips, aug.random(n) < 0.5)
    # the order does not depend on whether the epoch is augmented
    np.testing.assert_array_equal(sampling.plan_epoch(n, seed, epoch).order, order)


def test_crop_offsets_are_row_then_column():
    """``crops[b]`` is (row, col): an offset of 0 rows and 2*PAD columns shifts the image down
    by PAD and left by PAD. test_crop_flip's offsets are equal in both axes, so a swap of the
    two went unnoticed."""
    pad = sampling.PAD
    x = np.arange(1 * 6 * 7 * 1, dtype=np.float32).reshape(1, 6, 7, 1) + 1
    out = sampling.crop_flip(x, np.array([[0, 2 * pad]]), np.array([False]))
    assert out.shape == x.shape
    assert (out[0, :pad] == 0).all()  # padding above came into view
    assert (out[0, :, -pad:] == 0).all()  # padding on the right came into view
    np.testing.assert_array_equal(out[0, pad:, : 7 - pad], x[0, : 6 - pad, pad:])
    flipped = sampling.crop_flip(x, np.array([[0, 2 * pad]]), np.array([True]))
    np.testing.assert_array_equal(flipped[0], out[0, :, ::-1])


def test_a_batch_is_augmented_with_the_draws_of_its_positions():
    """EpochPlan's crops and flips are indexed by position in the epoch's order, not by
    sample index: the image at position p gets ``crops[p]``, ``flips[p]``. (Indexed by sample,
    every epoch would still look random, yet draws would follow the samples, not the plan.)"""
    from gpconv.train.data import Dataset

    rng = np.random.default_rng(0)
    images = rng.random((12, 6, 6, 3), dtype=np.float32)
    labels = np.arange(12, dtype=np.int64) % 3
    data = Dataset("tiny", images, labels, images[:2], labels[:2], ["a", "b", "c"])
    plan = sampling.plan_epoch(12, seed=3, epoch=1, augment=True)
    assert not np.array_equal(plan.order, np.arange(12))  # positions and samples differ
    positions = sampling.local_positions(1, 4)  # positions 4..7
    x, y = sampling.train_batch(data, plan, positions)
    idx = plan.order[positions]
    expected = sampling.crop_flip(images[idx], plan.crops[positions], plan.flips[positions])
    np.testing.assert_array_equal(x, data.normalize(expected))
    np.testing.assert_array_equal(y, labels[idx])


def test_derived_seeds_are_31_bit():
    """derived_seed's docstring: a 31-bit integer (what every framework RNG accepts as a seed).
    Over 64 (seed, epoch, stream, rank) draws, each is in [0, 2**31 - 1); an upper bound of 2**32
    would put about half of them above it."""
    values = [
        sampling.derived_seed(seed, epoch, sampling.STREAM_DROPOUT, rank)
        for seed in range(4)
        for epoch in range(4)
        for rank in range(4)
    ]
    assert all(isinstance(v, int) and 0 <= v < 2**31 - 1 for v in values), max(values)
    assert len(set(values)) == len(values)  # distinct streams give distinct seeds


@settings(max_examples=10, deadline=None)
@given(
    crops=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_crop_flip_keeps_the_dtype_and_crops_the_zero_padded_image(crops, seed):
    """For uint8 pixels (as images are stored) crop_flip returns uint8 holding
    ``pad(x)[r:r+H, c:c+W]`` (mirrored where flipped), as np.pad keeps the dtype."""
    b, h, w = len(crops), 5, 6
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 256, size=(b, h, w, 3), dtype=np.uint8)
    flips = rng.random(b) < 0.5
    out = sampling.crop_flip(x, np.array(crops), flips)
    assert out.dtype == np.uint8 and out.shape == x.shape
    p = sampling.PAD
    for i, (r, c) in enumerate(crops):
        padded = np.zeros((h + 2 * p, w + 2 * p, 3), np.uint8)
        padded[p : p + h, p : p + w] = x[i]
        expected = padded[r : r + h, c : c + w]
        np.testing.assert_array_equal(out[i], expected[:, ::-1] if flips[i] else expected)
