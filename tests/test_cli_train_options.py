"""``gpconv train``: the command line reaches the run configuration (found by mutation testing;
``train`` itself is replaced by a fake, so nothing is trained)."""

from __future__ import annotations

import pytest

from gpconv.cli.main import main

ARGV = ["train", "--backend", "numpy", "--model", "kefficientnet-b0", "--quiet"]


def _done(cfg, dist) -> dict:
    final = {"train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0, "test_acc": 0.5}
    return {"final": final, "epochs_completed": 1, "seconds_total": 1.0}


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], {"sync_bn": True, "keep_freed_memory": True, "no_dropout": False, "progress": False}),
        (
            ["--no-sync-bn", "--no-keep-freed-memory", "--no-dropout"],
            {"sync_bn": False, "keep_freed_memory": False, "no_dropout": True, "progress": False},
        ),
    ],
    ids=["defaults", "turned-off"],
)
def test_train_flags_reach_the_run_config(flags, expected, monkeypatch, tmp_path) -> None:
    """``--no-sync-bn``, ``--no-keep-freed-memory`` and ``--no-dropout`` each change what the run
    does (per-process BN statistics under DDP, the malloc setting, exact comparisons between
    runs); --help states the defaults (sync BN on, freed memory kept, dropout on), and --quiet
    turns the progress output off. A flag parsed but not passed on would be silently ignored."""
    from gpconv.train import run as run_module

    seen = []
    monkeypatch.setattr(run_module, "train", lambda cfg, dist: seen.append(cfg) or _done(cfg, dist))
    assert main([*ARGV, *flags, "--out", str(tmp_path / "run")]) == 0
    (cfg,) = seen
    assert {k: getattr(cfg, k) for k in expected} == expected
