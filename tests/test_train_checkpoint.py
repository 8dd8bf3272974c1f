"""``gpconv.train.checkpoint``: folders moved aside; damaged checkpoints skipped, not a crash."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import checkpoint_params

from gpconv.train import checkpoint


def test_save_moves_each_folder_in_its_way_aside_to_a_name_of_its_own(tmp_path):
    """Every save over an existing epoch-NNNN keeps the folder under the first free
    ``.replaced-N``: the third one in the way must not land on (or fail against) the first
    two, which stay as they were."""
    run = str(tmp_path)
    target = os.path.join(run, "checkpoints", "epoch-0001")
    for v in range(1, 5):  # four writes of epoch 1: three folders moved aside
        checkpoint.save(run, 1, checkpoint_params(v), {}, {})
    for n, v in ((1, 1), (2, 2), (3, 3)):
        kept = checkpoint.verify(f"{target}.replaced-{n}")
        np.testing.assert_array_equal(kept.params()["a/kernel"], checkpoint_params(v)["a/kernel"])
    np.testing.assert_array_equal(
        checkpoint.latest(run).params()["a/kernel"], checkpoint_params(4)["a/kernel"]
    )


def test_a_checkpoint_missing_an_array_file_is_skipped_not_a_crash(tmp_path):
    """An array file gone from a checkpoint (deleted by hand, lost to a disk error) makes it
    unverifiable with a ValueError naming the file, not a FileNotFoundError: latest falls back
    to the previous checkpoint, and save's prune leaves the folder alone."""
    run = str(tmp_path)
    checkpoint.save(run, 1, checkpoint_params(1), {}, {})
    damaged = checkpoint.save(run, 2, checkpoint_params(2), {}, {})
    os.remove(os.path.join(damaged.path, "optimizer.safetensors"))
    with pytest.raises(ValueError, match=r"incomplete checkpoint .*optimizer.safetensors missing"):
        checkpoint.verify(damaged.path)
    assert checkpoint.latest(run, warn=False).epoch == 1
    checkpoint.save(run, 3, checkpoint_params(3), {}, {}, keep=1)
    assert [e for e, _ in checkpoint.epochs_on_disk(run)] == [2, 3]
