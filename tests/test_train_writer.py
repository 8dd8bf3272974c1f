"""``gpconv.train.writer``: the best epoch repaired on resume, the epoch counter, final metadata."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from helpers import checkpoint_params

from gpconv.core.arch import by_name
from gpconv.core.params import load_params, read_metadata
from gpconv.train import checkpoint, data, writer
from gpconv.train.config import RunConfig
from gpconv.train.frameworks import OptimConfig, create


def _row(epoch: int, test_acc: float, **overrides: float) -> dict:
    return {
        **dict(
            epoch=epoch,
            train_loss=1.0,
            train_acc=0.5,
            test_loss=1.0,
            test_acc=test_acc,
            lr=0.1,
            images_per_s=10.0,
            seconds=1.0,
        ),
        **overrides,
    }


@pytest.fixture
def run_writer(tmp_path) -> writer.RunWriter:
    """A RunWriter of a tiny numpy run writing into tmp_path/run."""
    arch = by_name("kefficientnet-b0", 10, 8, 0)
    cfg = RunConfig(
        backend="numpy",
        model="kefficientnet-b0",
        out=str(tmp_path / "run"),
        image_size=8,
        skip_stride=0,
        epochs=3,
    )
    os.makedirs(cfg.out)
    fw = create("numpy", arch, OptimConfig("sgd", 0.1))
    return writer.RunWriter(cfg, fw, arch, data.load("digits", 8).limited(16), world=1)


def test_resume_replaces_a_best_file_of_the_same_epoch_number_but_another_accuracy(run_writer):
    """best.safetensors holds epoch 2 as first trained (test acc 0.75); after a fallback the
    run trained epoch 2 again (0.625), still its best. The same epoch number is not the same
    epoch: resume_best restores the retrained epoch 2 from its checkpoint."""
    out = run_writer.cfg.out
    # the epoch 2 of the earlier trajectory
    run_writer._write_best(_row(2, 0.75), checkpoint_params(7))
    history = [_row(1, 0.25), _row(2, 0.625), _row(3, 0.5)]
    checkpoint.save(out, 2, checkpoint_params(2), {}, {"history": history[:2]}, keep=5)
    run_writer.resume_best(history, checkpoint_params(3))
    best = os.path.join(out, writer.BEST_PARAMS)
    assert read_metadata(best)["test_acc"] == repr(0.625)
    np.testing.assert_array_equal(load_params(best)["a/kernel"], checkpoint_params(2)["a/kernel"])


def test_resume_takes_no_best_params_from_a_checkpoint_of_another_trajectory(run_writer, capsys):
    """A verified checkpoint of the best epoch whose own history ends in another row (that
    epoch as trained before a fallback) does not hold the best epoch's parameters: the stale
    best file is removed rather than replaced by those."""
    out = run_writer.cfg.out
    run_writer._write_best(_row(2, 0.75), checkpoint_params(7))
    history = [_row(1, 0.25), _row(2, 0.625), _row(3, 0.5)]
    checkpoint.save(out, 2, checkpoint_params(8), {}, {"history": [_row(1, 0.25), _row(2, 0.875)]})
    run_writer.resume_best(history, checkpoint_params(3))
    best = os.path.join(out, writer.BEST_PARAMS)
    assert not os.path.exists(best)
    assert f"removed {best}" in capsys.readouterr().err


def test_checkpoints_record_the_next_epoch_of_their_rng_scheme(run_writer):
    """state.json's "rng" says which epoch's streams come next: the number of epochs done."""
    history = [_row(1, 0.5), _row(2, 0.25)]
    run_writer.epoch_end(history)
    state = checkpoint.latest(run_writer.cfg.out).state
    assert state["rng"]["next_epoch"] == 2 and state["rng"]["seed"] == run_writer.cfg.seed
    assert state["history"] == history


def test_the_final_params_record_how_many_epochs_trained_them(run_writer):
    """params.safetensors names the epochs behind it in its metadata, beside the
    architecture and normalisation every parameter file records."""
    history = [_row(1, 0.5), _row(2, 0.25)]
    run_writer.finish(history)
    meta = read_metadata(os.path.join(run_writer.cfg.out, "params.safetensors"))
    assert meta["epochs"] == "2" and meta["image_size"] == "8" and meta["backend"] == "numpy"


def _strict_json(path: str):
    def refuse(name):
        raise ValueError(f"{path} holds {name}: not strict JSON")

    with open(path, encoding="utf-8") as f:
        return json.load(f, parse_constant=refuse)


def test_the_summary_stores_infinite_losses_as_null(run_writer):
    """summary.json is strict JSON: an infinite loss (overflow) is written as null, like NaN."""
    history = [_row(1, 0.25, train_loss=math.inf, test_loss=-math.inf)]
    run_writer.files(history, "diverged")
    summary = _strict_json(os.path.join(run_writer.cfg.out, "summary.json"))
    assert summary["final"]["train_loss"] is None and summary["final"]["test_loss"] is None
    assert summary["final"]["test_acc"] == 0.25


def test_a_corrupt_best_file_is_repaired_on_resume(run_writer):
    """best.safetensors damaged (not a safetensors file): resume_best treats it as not holding
    the best epoch and rewrites it from that epoch's checkpoint, rather than crashing."""
    out = run_writer.cfg.out
    history = [_row(1, 0.25), _row(2, 0.75), _row(3, 0.5)]
    checkpoint.save(out, 2, checkpoint_params(2), {}, {"history": history[:2]}, keep=5)
    best = os.path.join(out, writer.BEST_PARAMS)
    with open(best, "wb") as f:
        f.write(b"\x00garbage, not safetensors")
    run_writer.resume_best(history, checkpoint_params(3))
    assert read_metadata(best)["epoch"] == "2"
    np.testing.assert_array_equal(load_params(best)["a/kernel"], checkpoint_params(2)["a/kernel"])


def test_resume_without_a_best_file_or_its_checkpoint_is_quiet(run_writer, capsys):
    """No best.safetensors and no checkpoint of the best epoch (pruned): nothing to repair
    and nothing to remove; resume goes on and rewrites metrics.csv and summary.json for the
    history it resumed from."""
    history = [_row(1, 0.75), _row(2, 0.5)]
    run_writer.resume_best(history, checkpoint_params(2))
    assert not os.path.exists(os.path.join(run_writer.cfg.out, writer.BEST_PARAMS))
    assert "removed" not in capsys.readouterr().err
    summary = _strict_json(os.path.join(run_writer.cfg.out, "summary.json"))
    assert summary["epochs_completed"] == 2 and summary["best_epoch"] == 1
    with open(os.path.join(run_writer.cfg.out, "metrics.csv")) as f:
        assert [line.split(",")[0] for line in f.read().splitlines()] == ["epoch", "1", "2"]
