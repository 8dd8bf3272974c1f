"""``gpconv.train.checkpoint``: folders moved aside; damaged checkpoints skipped, not a crash."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gpconv.train import checkpoint


def _params(v: float) -> dict[str, np.ndarray]:
    return {
        "a/kernel": np.full((2, 3), v, np.float32),
        "b/bias": np.arange(4, dtype=np.float32) * v,
    }


def test_save_moves_each_folder_in_its_way_aside_to_a_name_of_its_own(tmp_path):
    """Every save over an existing epoch-NNNN keeps the folder under the first free
    ``.replaced-N``: the third one in the way must not land on (or fail against) the first
    two, which stay as they were."""
    run = str(tmp_path)
    target = os.path.join(run, "checkpoints", "epoch-0001")
    for v in range(1, 5):  # four writes of epoch 1: three folders moved aside
        checkpoint.save(run, 1, _params(v), {}, {})
    for n, v in ((1, 1), (2, 2), (3, 3)):
        kept = checkpoint.verify(f"{target}.replaced-{n}")
        np.testing.assert_array_equal(kept.params()["a/kernel"], _params(v)["a/kernel"])
    np.testing.assert_array_equal(
        checkpoint.latest(run).params()["a/kernel"], _params(4)["a/kernel"]
    )


def test_a_state_json_hashing_only_one_array_file_is_skipped_not_a_crash(tmp_path):
    """'files' must hash both array files. One listing only params.safetensors raised
    KeyError from verify (not the ValueError latest and prune skip), so --resume and every
    later save would crash on that folder."""
    run = str(tmp_path)
    checkpoint.save(run, 1, _params(1), {}, {})
    odd = checkpoint.save(run, 2, _params(2), {}, {})
    state_path = os.path.join(odd.path, "state.json")
    state = json.load(open(state_path))
    state["files"] = {"params.safetensors": state["files"]["params.safetensors"]}
    json.dump(state, open(state_path, "w"))
    with pytest.raises(ValueError, match="expected 'files' to give the SHA-256"):
        checkpoint.verify(odd.path)
    assert checkpoint.latest(run, warn=False).epoch == 1
    checkpoint.save(run, 3, _params(3), {}, {}, keep=1)  # prunes epoch 1, keeps the odd one
    assert [e for e, _ in checkpoint.epochs_on_disk(run)] == [2, 3]


def test_a_checkpoint_missing_an_array_file_is_skipped_not_a_crash(tmp_path):
    """An array file gone from a checkpoint (deleted by hand, lost to a disk error) makes it
    unverifiable with a ValueError naming the file, not a FileNotFoundError: latest falls back
    to the previous checkpoint, and save's prune leaves the folder alone."""
    run = str(tmp_path)
    checkpoint.save(run, 1, _params(1), {}, {})
    damaged = checkpoint.save(run, 2, _params(2), {}, {})
    os.remove(os.path.join(damaged.path, "optimizer.safetensors"))
    with pytest.raises(ValueError, match=r"incomplete checkpoint .*optimizer.safetensors missing"):
        checkpoint.verify(damaged.path)
    assert checkpoint.latest(run, warn=False).epoch == 1
    checkpoint.save(run, 3, _params(3), {}, {}, keep=1)
    assert [e for e, _ in checkpoint.epochs_on_disk(run)] == [2, 3]
