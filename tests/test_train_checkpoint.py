"""``gpconv.train.checkpoint``: saves atomic and durable, whatever is in the way moved aside;
damaged or mismatched checkpoints skipped, not a crash."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import checkpoint_params

from gpconv.train import checkpoint


def _listing(run: str) -> list[str]:
    """The names in the run's checkpoints/ folder, sorted."""
    return sorted(os.listdir(os.path.join(run, checkpoint.CHECKPOINTS)))


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


def test_write_text_atomic_writes_utf8(tmp_path):
    """write_text_atomic's docstring says UTF-8: text outside ASCII is kept byte for byte (a
    run folder or class name such as 'café' ends up in metrics.csv / summary files)."""
    path = str(tmp_path / "t.txt")
    text = "café, naïve ✓ 日本\n"
    checkpoint.write_text_atomic(path, text)
    with open(path, "rb") as f:
        assert f.read() == text.encode("utf-8")


def test_an_interrupted_save_leaves_no_partial_copy(tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt, no Exception) while the arrays are written: the temporary
    folder is removed like on any other failure, and the previous checkpoint stays the latest."""
    run = str(tmp_path)
    checkpoint.save(run, 1, checkpoint_params(1), {}, {})
    real = checkpoint.save_params

    def interrupted(path, *args, **kwargs):
        if path.endswith("optimizer.safetensors"):
            raise KeyboardInterrupt("simulated Ctrl-C")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_params", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(run, 2, checkpoint_params(2), {}, {})
    monkeypatch.undo()
    assert _listing(run) == ["epoch-0001"]
    assert checkpoint.latest(run, warn=False).epoch == 1


def test_a_state_resaved_under_another_epoch_describes_the_new_files(tmp_path):
    """Passing a loaded checkpoint's state (which has its own 'epoch', 'format', 'files' and
    'optimizer_shapes') to save: what save computes wins, so the new checkpoint verifies, has
    the new epoch and hashes of its own files."""
    run = str(tmp_path)
    first = checkpoint.save(
        run, 1, checkpoint_params(1), {"m": np.zeros((2, 2), np.float32)}, {"x": 1}
    )
    second = checkpoint.save(
        run, 2, checkpoint_params(2), {"m": np.ones(3, np.float32)}, first.state
    )
    again = checkpoint.verify(second.path)
    assert again.epoch == 2 and again.state["x"] == 1
    assert again.state["optimizer_shapes"] == {"m": [3]}
    np.testing.assert_array_equal(again.optimizer()["m"], np.ones(3, np.float32))
    np.testing.assert_array_equal(again.params()["b/bias"], checkpoint_params(2)["b/bias"])


def test_save_fsyncs_the_new_folder_before_its_rename_and_the_parent_after(tmp_path, monkeypatch):
    """The module's crash-safety contract: the checkpoint's folder is fsynced while still under
    its temporary name (complete, with state.json), and checkpoints/ is fsynced after the
    rename, so a power loss cannot leave a renamed folder whose entries were never flushed."""
    run = str(tmp_path)
    root = os.path.join(run, checkpoint.CHECKPOINTS)
    final = os.path.join(root, "epoch-0001")
    calls = []
    real = checkpoint.fsync_folder

    def spy(folder):
        calls.append(
            (
                os.path.abspath(folder),
                os.path.isdir(final),
                os.path.isfile(os.path.join(folder, "state.json")),
            )
        )
        real(folder)

    monkeypatch.setattr(checkpoint, "fsync_folder", spy)
    checkpoint.save(run, 1, checkpoint_params(1), {}, {})
    tmp_syncs = [c for c in calls if os.path.basename(c[0]).startswith(checkpoint.TMP_PREFIX)]
    assert any(not renamed and complete for _, renamed, complete in tmp_syncs), calls
    assert any(p == os.path.abspath(root) and renamed for p, renamed, _ in calls), calls


def test_a_file_at_the_checkpoints_name_is_moved_aside_not_a_crash(tmp_path):
    """Anything at checkpoints/epoch-NNNN is moved aside, a regular file as well as a folder
    (a path that exists and is no checkpoint folder: save must not fail with
    NotADirectoryError at the rename, and must not delete it)."""
    run = str(tmp_path)
    root = os.path.join(run, checkpoint.CHECKPOINTS)
    os.makedirs(root)
    with open(os.path.join(root, "epoch-0002"), "w") as f:
        f.write("not a checkpoint")
    saved = checkpoint.save(run, 2, checkpoint_params(2), {}, {})
    assert checkpoint.verify(saved.path).epoch == 2
    with open(os.path.join(root, "epoch-0002.unverifiable-1")) as f:
        assert f.read() == "not a checkpoint"


def test_a_state_json_that_cannot_be_opened_is_a_value_error(tmp_path, monkeypatch):
    """verify raises ValueError and nothing else (latest and prune skip only that): a
    state.json that exists but cannot be read (permissions, an I/O error) is reported as
    corrupt, and latest falls back to the checkpoint before it."""
    run = str(tmp_path)
    checkpoint.save(run, 1, checkpoint_params(1), {}, {})
    bad = checkpoint.save(run, 2, checkpoint_params(2), {}, {})
    state_file = os.path.join(bad.path, "state.json")

    def refusing_open(path, *args, **kwargs):
        if os.path.abspath(path) == os.path.abspath(state_file):
            raise PermissionError(13, "Permission denied", path)
        return open(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open", refusing_open, raising=False)
    with pytest.raises(ValueError, match="corrupt .*state.json.*Permission denied"):
        checkpoint.verify(bad.path)
    assert checkpoint.latest(run, warn=False).epoch == 1


def test_epochs_on_disk_are_sorted_whatever_order_the_folder_lists(tmp_path, monkeypatch):
    """os.listdir's order is arbitrary (hash order on ext4): epochs_on_disk sorts by epoch
    number, so latest tries the newest first and prune deletes the oldest."""
    run = str(tmp_path)
    for e in (1, 2, 3, 10):
        checkpoint.save(run, e, checkpoint_params(e), {}, {}, keep=10)
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p=".": sorted(real(p), reverse=True))
    assert [e for e, _ in checkpoint.epochs_on_disk(run)] == [1, 2, 3, 10]
    monkeypatch.setattr(os, "listdir", lambda p=".": sorted(real(p)))
    assert checkpoint.latest(run).epoch == 10
    checkpoint.save(run, 11, checkpoint_params(11), {}, {}, keep=2)
    monkeypatch.undo()
    assert _listing(run) == ["epoch-0010", "epoch-0011"]


def test_latest_warns_about_skipped_folders_only_when_asked(tmp_path, capsys):
    """latest(warn=True) names each checkpoint it skips on stderr; warn=False (processes
    other than the main one) prints nothing."""
    run = str(tmp_path)
    checkpoint.save(run, 1, checkpoint_params(1), {}, {})
    os.makedirs(os.path.join(run, checkpoint.CHECKPOINTS, "epoch-0002"))
    capsys.readouterr()
    assert checkpoint.latest(run, warn=False).epoch == 1
    assert capsys.readouterr().err == ""
    assert checkpoint.latest(run, warn=True).epoch == 1
    err = capsys.readouterr().err
    assert "skipping incomplete checkpoint" in err and "epoch-0002" in err


def test_save_clears_the_leftovers_of_other_processes_interrupted_writes(tmp_path):
    """A process killed mid-save leaves checkpoints/.tmp-epoch-NNNN-<its pid>: the next save
    (of another process) removes it, so killed runs do not fill the disk."""
    run = str(tmp_path)
    leftover = os.path.join(run, checkpoint.CHECKPOINTS, f".tmp-epoch-0004-{os.getpid() + 1}")
    os.makedirs(leftover)
    with open(os.path.join(leftover, "params.safetensors"), "wb") as f:
        f.write(b"\0" * 100)
    checkpoint.save(run, 4, checkpoint_params(4), {}, {})
    assert _listing(run) == ["epoch-0004"]


def test_a_folder_whose_state_is_of_another_epoch_does_not_verify(tmp_path):
    """latest() picks checkpoints by their folders' epochs and resume reads state.json's: a
    folder epoch-0003 holding epoch 2's state (copied or renamed by hand) is refused, and
    latest falls back to the checkpoint before it rather than resume from another epoch."""
    run = str(tmp_path)
    checkpoint.save(run, 1, checkpoint_params(1), {}, {})
    second = checkpoint.save(run, 2, checkpoint_params(2), {}, {})
    renamed = os.path.join(os.path.dirname(second.path), "epoch-0003")
    os.rename(second.path, renamed)
    with pytest.raises(ValueError, match=r"epoch-0003: its state.json is of epoch 2"):
        checkpoint.verify(renamed)
    assert checkpoint.latest(run, warn=False).epoch == 1
    elsewhere = str(tmp_path / "kept")  # a folder of another name is not judged by its name
    os.rename(renamed, elsewhere)
    assert checkpoint.verify(elsewhere).epoch == 2
