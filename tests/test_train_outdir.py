"""``gpconv.train.outdir``: what a run folder must be before a run or a resume writes to it
(writable, not in use) and what a resume must find the same (identity, data, normalisation)."""

from __future__ import annotations

import errno
import json
import os
import sys

import numpy as np
import pytest

from gpconv.train import outdir
from gpconv.train.config import ConfigError, RunConfig
from gpconv.train.data import Dataset
from gpconv.train.outlock import LOCK_NAME

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="folders are locked with fcntl")


def _cfg(out, **kw) -> RunConfig:
    return RunConfig(backend="numpy", model="kefficientnet-b0", out=str(out), **kw)


def _dataset(seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    images = rng.random((10, 4, 4, 3), dtype=np.float32)
    labels = np.arange(10, dtype=np.int64) % 2
    return Dataset("tiny", images[:8], labels[:8], images[8:], labels[8:], ["a", "b"])


def _trained_run(folder, **run_json) -> str:
    """A run folder as a run that completed an epoch leaves it: run.json and metrics.csv."""
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"identity": {}, **run_json}))
    (folder / "metrics.csv").write_text("epoch\n1\n")
    return str(folder)


def test_resume_refuses_data_whose_images_changed_but_not_their_number(tmp_path):
    """An image edited in place keeps the class names and split sizes: only the SHA-256 of
    the images tells the data apart, and it alone must stop the resume."""
    before = _dataset()
    run = _trained_run(tmp_path / "run", data=before.fingerprint)
    outdir.check_same_data(run, _dataset(), "folder=/pets")  # the same data: goes on
    after = _dataset()
    after.x_train[3, 0, 0, 0] += 0.5  # one pixel of one image
    with pytest.raises(ConfigError, match="the data of --data folder=/pets changed") as err:
        outdir.check_same_data(run, after, "folder=/pets")
    assert "sha256: run has" in str(err.value)


@pytest.mark.parametrize(
    ("norm", "message"),
    [
        ({"mean": [0.5], "std": [0.25]}, "input_normalization for 1 channels, the data has 3"),
        (  # the std was reported as "for 3 channels, the data has 3"
            {"mean": [0.1, 0.2, 0.3], "std": [0.5]},
            "input_normalization std for 1 channels, the data has 3",
        ),
    ],
    ids=["mean-and-std", "std"],
)
def test_a_recorded_normalization_of_another_channel_count_is_refused(tmp_path, norm, message):
    """run.json's input_normalization for 1 channel (both statistics, or only the std) must
    not replace the 3-channel data's mean and std: NumPy would broadcast it silently,
    standardising every channel alike."""
    run = _trained_run(tmp_path / "run", input_normalization=norm)
    data = _dataset()
    mean, std = data.mean.copy(), data.std.copy()
    with pytest.raises(ConfigError, match=message):
        outdir.keep_normalization(run, data)
    np.testing.assert_array_equal(data.mean, mean)
    np.testing.assert_array_equal(data.std, std)
    # The same channel count is taken as recorded.
    run3 = _trained_run(
        tmp_path / "run3", input_normalization={"mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}
    )
    outdir.keep_normalization(run3, data)
    np.testing.assert_array_equal(data.mean, np.float32([0.1, 0.2, 0.3]))


@posix_only
def test_a_held_lock_whose_pid_cannot_be_read_still_means_in_use(tmp_path):
    """OutLock.holder gives "" (not None) for a held lock whose file names no pid (the holder
    has not written it yet, or it is unreadable): the folder is in use all the same."""
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)  # empty: no pid written
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="is in use by another gpconv train; wait"):
            outdir.check_not_in_use(str(out))
    finally:
        os.close(fd)
    outdir.check_not_in_use(str(out))  # released: free again


def test_check_out_refuses_a_folder_it_cannot_write(tmp_path, monkeypatch):
    """A folder that exists but takes no file (read-only file system, no permission; root
    passes every os.access check) is refused before the run starts, naming the cause."""
    out = tmp_path / "run"
    out.mkdir()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(outdir.tempfile, "TemporaryFile", read_only)
    with pytest.raises(ConfigError, match=r"cannot write to --out .*Read-only file system"):
        outdir.check_out(_cfg(out))


def test_identity_diff_resolves_a_relative_stored_path(tmp_path, monkeypatch):
    """Older runs stored --data as typed (folder=pets): resolved against the working
    directory it is the same folder as the absolute path a resume now gives."""
    monkeypatch.chdir(tmp_path)
    wanted = _cfg(tmp_path / "r", data="folder=pets").identity()
    assert wanted["data"] == f"folder={tmp_path / 'pets'}"
    stored = {**wanted, "data": "folder=pets"}
    assert outdir.identity_diff(stored, wanted) == []


@pytest.mark.parametrize(
    "norm, fragment",
    [
        ({}, "should give a mean and a std per channel"),
        ({"mean": "abc", "std": [1, 1, 1]}, "should give a mean and a std per channel"),
    ],
    ids=["no-mean", "mean-no-numbers"],
)
def test_a_malformed_recorded_normalization_is_a_config_error_saying_what_is_wrong(
    tmp_path, norm, fragment
):
    """outdir's checks raise ConfigError (exit 2, a message) before anything is written: a
    hand-edited run.json whose input_normalization lacks a mean or holds no numbers was a
    KeyError / ValueError traceback."""
    run = _trained_run(tmp_path / "run", input_normalization=norm)
    with pytest.raises(ConfigError, match=fragment):
        outdir.keep_normalization(run, _dataset())


def test_identity_diff_fills_in_defaults_only_for_keys_the_run_did_not_store(tmp_path):
    """IDENTITY_DEFAULTS stand in for keys older runs lack (compile_step: absent means eager);
    a value the run did store wins over the default: a compiled run resumes compiled only."""
    compiled = _cfg(tmp_path / "r", compile_step=True).identity()
    eager = _cfg(tmp_path / "r").identity()
    assert outdir.identity_diff(compiled, compiled) == []
    diff = outdir.identity_diff(compiled, eager)
    assert diff == ["compile_step: run has True, requested False"]
    old = {k: v for k, v in eager.items() if k != "compile_step"}  # written before the option
    assert outdir.identity_diff(old, eager) == []


def test_a_run_json_without_a_trained_epoch_records_nothing_a_new_run_must_match(tmp_path):
    """A run killed before its first epoch left only run.json, which pins nothing: its data
    fingerprint and normalisation are not imposed on the run that takes the folder."""
    out = tmp_path / "run"
    out.mkdir()
    other = {"classes": ["x"], "train": 1, "test": 1, "sha256": "0" * 64}
    norm = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    (out / "run.json").write_text(
        json.dumps({"identity": {}, "data": other, "input_normalization": norm})
    )
    assert outdir.recorded_in_run(str(out), "data") is None
    data = _dataset()
    mean = data.mean.copy()
    outdir.check_same_data(str(out), data, "digits")  # no ConfigError
    outdir.keep_normalization(str(out), data)
    np.testing.assert_array_equal(data.mean, mean)


def test_the_moved_data_note_appears_only_when_the_path_changed(tmp_path):
    """moved_data_note says the run's data moved only when --data names another path than
    run.json's identity; the same folder (typed as recorded) gives no note."""
    data = _dataset()
    spec = f"folder={tmp_path / 'a'}"
    identity = _cfg(tmp_path / "run", data=spec).identity()
    run = _trained_run(tmp_path / "run", identity=identity, data=data.fingerprint)
    assert outdir.moved_data_note(run, _cfg(run, data=spec)) is None
    note = outdir.moved_data_note(run, _cfg(run, data=f"folder={tmp_path / 'b'}"))
    assert note is not None and f"it started on --data {spec}" in note


def test_a_recorded_fingerprint_missing_a_field_does_not_prove_the_data_the_same(tmp_path):
    """check_same_data lets a resume go on only when every field of the data's fingerprint
    equals run.json's: a record without the SHA-256 (truncated or hand-edited) proves nothing
    about the images and is refused, naming the field."""
    data = _dataset()
    partial = {k: v for k, v in data.fingerprint.items() if k != "sha256"}
    run = _trained_run(tmp_path / "run", data=partial)
    with pytest.raises(ConfigError, match="sha256: run has None"):
        outdir.check_same_data(run, data, "folder=/pets")
