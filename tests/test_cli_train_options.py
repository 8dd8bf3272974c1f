"""``gpconv train``: every option reaches the run configuration, with the defaults its --help and
docs/train.md state, the run is checked for the torchrun world before joining it, and the process
group is left however the run ends (``train`` itself is replaced by a fake: nothing is
trained)."""

from __future__ import annotations

import pytest

from gpconv.cli.main import main
from gpconv.train import distributed
from gpconv.train import run as run_module

ARGV = ["train", "--backend", "numpy", "--model", "kefficientnet-b0", "--quiet"]


def _done(cfg, dist) -> dict:
    """A finished run's summary, its train figures unlike its test ones."""
    final = {"train_loss": 1.0, "train_acc": 0.25, "test_loss": 2.0, "test_acc": 0.5}
    return {"final": final, "epochs_completed": 3, "seconds_total": 1.0}


@pytest.fixture
def configs(monkeypatch):
    """The RunConfig each ``gpconv train`` would train (recorded, not trained)."""
    seen = []
    monkeypatch.setattr(run_module, "train", lambda cfg, dist: seen.append(cfg) or _done(cfg, dist))
    return seen


# Every option with a value other than its default, and the RunConfig field it must set.
GIVEN = [
    ("--min-channels-per-group", "32", "min_channels_per_group", 32),
    ("--image-size", "48", "image_size", 48),
    ("--skip-stride", "1", "skip_stride", 1),
    ("--epochs", "7", "epochs", 7),
    ("--batch-size", "12", "batch_size", 12),
    ("--lr", "0.125", "lr", 0.125),
    ("--optimizer", "adam", "optimizer", "adam"),
    ("--schedule", "constant", "schedule", "constant"),
    ("--seed", "5", "seed", 5),
    ("--limit", "40", "limit", 40),
    ("--keep", "4", "keep", 4),
    ("--threads", "1", "threads", 1),
]
SWITCHES = [
    ("--augment", "augment", True),
    ("--quiet", "progress", False),
    ("--no-sync-bn", "sync_bn", False),  # per-process BN statistics under DDP
    ("--no-keep-freed-memory", "keep_freed_memory", False),  # the malloc setting
    ("--no-dropout", "no_dropout", True),  # exact comparisons between runs
]


def test_every_train_option_reaches_the_run_config(configs, tmp_path):
    """A flag parsed but not passed on (or passed to another field) would be silently ignored:
    the run would train another setting than the command line says, and record it as asked."""
    argv = ["train", "--backend", "numpy", "--model", "kefficientnet-b1", "--out", str(tmp_path)]
    argv += ["--data", f"folder={tmp_path / 'pets'}"]
    for flag, value, _, _ in GIVEN:
        argv += [flag, value]
    argv += [flag for flag, _, _ in SWITCHES]
    assert main(argv) == 0
    (cfg,) = configs
    assert (cfg.backend, cfg.model, cfg.out) == ("numpy", "kefficientnet-b1", str(tmp_path))
    assert cfg.data == f"folder={tmp_path / 'pets'}"
    assert {field: getattr(cfg, field) for _, _, field, _ in GIVEN} == {
        field: value for _, _, field, value in GIVEN
    }
    assert {field: getattr(cfg, field) for _, field, _ in SWITCHES} == {
        field: value for _, field, value in SWITCHES
    }


def test_torch_only_options_reach_the_run_config(configs, tmp_path):
    """--compile and --device (refused with the numpy backend) reach the config too."""
    pytest.importorskip("torch")
    argv = ["train", "--backend", "torch", "--model", "kefficientnet-b0", "--quiet"]
    assert main([*argv, "--compile", "--device", "cpu", "--out", str(tmp_path / "run")]) == 0
    (cfg,) = configs
    assert (cfg.compile_step, cfg.device) == (True, "cpu")


def test_resume_reaches_the_run_config(configs, tmp_path):
    assert main([*ARGV, "--out", str(tmp_path / "a")]) == 0
    assert main([*ARGV, "--out", str(tmp_path / "b"), "--resume"]) == 0
    assert [cfg.resume for cfg in configs] == [False, True]


def test_train_defaults_are_the_documented_ones(configs, tmp_path):
    """--help / docs/train.md: digits (default), 32 px, skip_stride_cnt 3, 10 epochs, batch 64,
    sgd at lr 0.05 (the --lr help), cosine schedule (--schedule constant to disable), seed 0,
    kEffNet group minimum 16, --keep N (default 2), no limit, the framework's threads, progress
    shown, sync BN on, freed memory kept, dropout on; no --compile, no --augment, no
    --resume."""
    argv = ["train", "--backend", "numpy", "--model", "kefficientnet-b0"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    (cfg,) = configs
    expected = {
        "data": "digits",
        "image_size": 32,
        "skip_stride": 3,
        "epochs": 10,
        "batch_size": 64,
        "optimizer": "sgd",
        "lr": 0.05,
        "schedule": "cosine",
        "seed": 0,
        "min_channels_per_group": 16,
        "keep": 2,
        "limit": None,
        "threads": None,
        "progress": True,
        "sync_bn": True,
        "keep_freed_memory": True,
        "no_dropout": False,
        "compile_step": False,
        "augment": False,
        "resume": False,
        "device": None,
    }
    assert {k: getattr(cfg, k) for k in expected} == expected


def test_adam_without_lr_gets_adams_default_rate(configs, tmp_path):
    """--lr's help: "default: sgd 0.05, adam 1e-3"."""
    argv = ["train", "--backend", "numpy", "--model", "kefficientnet-b0", "--optimizer", "adam"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert configs[0].lr == pytest.approx(1e-3)


def test_the_closing_line_states_the_runs_final_test_figures(configs, tmp_path, capsys):
    """``gpconv train: done: test acc A, test loss L after N epochs``: the summary's *test*
    figures (not the train ones, 0.25 and 1.0 here) and the epochs the run completed (3, not
    --epochs 10), on stdout."""
    assert main([*ARGV, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "gpconv train: done: test acc 0.5000, test loss 2.0000 after 3 epochs (1s)" in out


@pytest.mark.parametrize(
    "backend, batch, message",
    [
        ("numpy", "64", "multi-process training (WORLD_SIZE=2) needs --backend torch"),
        ("torch", "15", "--batch-size 15 (global) must be divisible by the 2 processes"),
    ],
)
def test_the_config_is_checked_for_the_torchrun_world_before_joining(
    backend, batch, message, configs, monkeypatch, tmp_path, capsys
):
    """Under torchrun (WORLD_SIZE=2) the arguments are validated for that world *before* the
    process group is joined (cli/train.py), so a bad command fails fast in every process with
    its own message. RANK is left unset: a process that went on to join would stop there on
    "RANK (torchrun sets it)" instead."""
    if backend == "torch":
        pytest.importorskip("torch")
    for name in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = ["train", "--backend", backend, "--model", "kefficientnet-b0", "--batch-size", batch]
    assert main([*argv, "--quiet", "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert configs == [] and not (tmp_path / "run").exists()


@pytest.mark.parametrize("outcome", ["done", "config-error", "interrupted"])
def test_the_process_group_is_left_however_the_run_ends(outcome, monkeypatch, tmp_path, capsys):
    """``dist.close()`` (leave the process group) runs after a completed run, a ConfigError and
    a Ctrl-C alike: a DDP process that skipped it left its peers waiting in a collective."""
    closed = []

    class Recorded(distributed.Dist):
        def close(self) -> None:
            closed.append(True)

    def train(cfg, dist):
        if outcome == "config-error":
            raise run_module.ConfigError("Expected something else, received this")
        if outcome == "interrupted":
            raise KeyboardInterrupt
        return _done(cfg, dist)

    monkeypatch.setattr(distributed, "from_env", lambda device=None: Recorded())
    monkeypatch.setattr(run_module, "train", train)
    code = main([*ARGV, "--out", str(tmp_path / "run")])
    assert code == {"done": 0, "config-error": 2, "interrupted": 130}[outcome]
    assert closed == [True]
