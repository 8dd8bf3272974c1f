"""``gpconv.train.config`` and ``gpconv.train.run``: defaults and multi-process checks of
``RunConfig``, the arguments processes must share, and options that must reach the training
(``--schedule``, ``--no-dropout``, a batch as large as the training set). End-to-end runs use
the numpy backend on 8×8 digits, 16 images, one step per epoch."""

from __future__ import annotations

import csv
import os

import pytest

from gpconv.cli.main import main
from gpconv.train import run as run_module
from gpconv.train.config import ConfigError, RunConfig

TINY = [
    "--backend", "numpy", "--model", "kefficientnet-b0", "--image-size", "8",
    "--skip-stride", "0", "--limit", "16", "--batch-size", "16", "--threads", "1", "--quiet",
]  # fmt: skip


def _config(**changes) -> RunConfig:
    defaults = {"backend": "numpy", "model": "kefficientnet-b0", "out": "unused"}
    return RunConfig(**{**defaults, **changes})


def test_default_learning_rates_are_sgd_005_and_adams_own() -> None:
    """``gpconv train --help``: "default: sgd 0.05, adam 1e-3"; 1e-3 is Adam's own default
    (Kingma & Ba; ``torch.optim.Adam``, ``keras.optimizers.Adam``). An explicit --lr wins."""
    assert _config().lr == 0.05
    assert _config(optimizer="adam").lr == 1e-3
    assert _config(optimizer="adam", lr=0.01).lr == 0.01


def test_a_relative_data_path_is_recorded_absolute(tmp_path, monkeypatch) -> None:
    """A run's identity names its data by absolute path: ``folder=pets`` started in one folder
    and resumed from another must be told apart from a different ``pets`` (and one folder named
    from two working directories is one data set)."""
    monkeypatch.chdir(tmp_path)
    ident = _config(data="folder=pets").identity()
    assert ident["data"] == f"folder={tmp_path / 'pets'}"
    assert _config(data="digits").identity()["data"] == "digits"


def test_multi_process_runs_need_torch_and_a_divisible_batch() -> None:
    """Under torchrun (``world`` > 1) only the torch backend has collectives, and the global
    ``--batch-size`` is split evenly over the processes (``local_positions`` takes every
    ``world``-th image): 15 images cannot go to 2 processes alike."""
    with pytest.raises(ConfigError, match="needs --backend torch"):
        _config().validate(world=2)
    pytest.importorskip("torch")
    with pytest.raises(ConfigError, match="divisible by the 2 processes"):
        _config(backend="torch", batch_size=15).validate(world=2)
    _config(backend="torch", batch_size=16).validate(world=2)


def test_processes_compare_the_data_by_kind_not_path() -> None:
    """``_shared_arguments``: the data's path may differ between machines (the images are
    compared once loaded), so two processes given ``folder=`` at different paths share their
    arguments; another kind of data does not."""
    a = run_module._shared_arguments(_config(data="folder=/mnt/a/pets"))
    b = run_module._shared_arguments(_config(data="folder=/data/pets"))
    c = run_module._shared_arguments(_config(data="cifar10=/data/pets"))
    assert a == b and a["data"] == "folder"
    assert c["data"] == "cifar10" and a != c


def _lrs(out: str) -> list[float]:
    with open(os.path.join(out, "metrics.csv")) as f:
        return [float(row["lr"]) for row in csv.DictReader(f)]


def test_a_batch_of_every_training_image_trains(tmp_path) -> None:
    """Whole batches per epoch are ``n // batch_size``: 16 training images in batches of 16 is
    one step, a valid run (only a batch *larger* than the training set gives no step)."""
    out = str(tmp_path / "run")
    assert main(["train", *TINY, "--epochs", "1", "--out", out]) == 0
    assert len(_lrs(out)) == 1


def test_schedule_constant_keeps_the_learning_rate(tmp_path) -> None:
    """``--schedule constant`` disables the cosine decay (docs/train.md): every epoch's lr in
    metrics.csv is ``--lr``; cosine would give 0.1 * (1 + cos(pi / 2)) / 2 = 0.05 in epoch 2."""
    out = str(tmp_path / "run")
    args = ["--epochs", "2", "--lr", "0.1", "--schedule", "constant", "--out", out]
    assert main(["train", *TINY, *args]) == 0
    assert _lrs(out) == [0.1, 0.1]


def test_no_dropout_reaches_the_framework(tmp_path, monkeypatch) -> None:
    """``--no-dropout`` trains the architecture with its head dropout and every block's
    drop-connect rate set to 0 (``core.arch.without_dropout``)."""
    built = []
    create = run_module.create

    def recording_create(backend, arch, *args, **kwargs):
        built.append(arch)
        return create(backend, arch, *args, **kwargs)

    monkeypatch.setattr(run_module, "create", recording_create)
    out = str(tmp_path / "run")
    assert main(["train", *TINY, "--epochs", "1", "--no-dropout", "--out", out]) == 0
    (arch,) = built
    assert arch.head.dropout == 0.0
    assert all(block.drop_rate == 0.0 for block in arch.blocks)


def test_cuda_without_an_index_is_device_0(monkeypatch) -> None:
    """torch's ``cuda`` is the current CUDA device, ``cuda:0`` unless set otherwise: on a machine
    with one GPU ``--device cuda`` and ``cuda:0`` are valid and ``cuda:1`` (indices count from
    0) is not."""
    torch = pytest.importorskip("torch")
    from gpconv.train.device import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_device("cuda", "torch")
    check_device("cuda:0", "torch")
    with pytest.raises(ValueError, match="one of the 1 CUDA device"):
        check_device("cuda:1", "torch")
