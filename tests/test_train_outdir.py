"""``gpconv.train.outdir``: a resume refuses changed data and a normalisation for other channels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpconv.train import outdir
from gpconv.train.config import ConfigError
from gpconv.train.data import Dataset


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


def test_a_recorded_normalization_of_another_channel_count_is_refused(tmp_path):
    """run.json's input_normalization for 1 channel must not replace the 3-channel data's
    mean and std: NumPy would broadcast it silently, standardising every channel alike."""
    run = _trained_run(tmp_path / "run", input_normalization={"mean": [0.5], "std": [0.25]})
    data = _dataset()
    mean, std = data.mean.copy(), data.std.copy()
    with pytest.raises(ConfigError, match="input_normalization for 1 channels, the data has 3"):
        outdir.keep_normalization(run, data)
    np.testing.assert_array_equal(data.mean, mean)
    np.testing.assert_array_equal(data.std, std)
    # The same channel count is taken as recorded.
    run3 = _trained_run(
        tmp_path / "run3", input_normalization={"mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}
    )
    outdir.keep_normalization(run3, data)
    np.testing.assert_array_equal(data.mean, np.float32([0.1, 0.2, 0.3]))
