"""``gpconv.train.config`` and ``gpconv.train.run``: defaults, bounds and multi-process checks of
``RunConfig``, the fields of a run's identity, the arguments processes must share (one differing
process is enough to stop), and options that must reach the training loop and the data
(``--schedule``, ``--no-dropout``, --seed, --augment, --limit, a batch as large as the training
set). End-to-end runs use
the numpy backend on 8×8 digits, 16 images, one step per epoch."""

from __future__ import annotations

import csv
import json
import os
import re

import numpy as np
import pytest

from gpconv.cli.main import main
from gpconv.train import run as run_module
from gpconv.train.config import IDENTITY, ConfigError, RunConfig
from gpconv.train.distributed import Dist
from gpconv.train.loop import LoopConfig

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


def test_the_largest_float32_is_a_valid_learning_rate() -> None:
    """--lr must be "<= float32's largest" (the message says so): exactly
    ``np.finfo(np.float32).max`` is valid; the next float64 above it is not."""
    top = float(np.finfo(np.float32).max)
    _config(lr=top).validate()
    with pytest.raises(ConfigError, match="--lr finite"):
        _config(lr=float(np.nextafter(top, np.inf))).validate()


def test_seed_0_is_valid_and_a_negative_seed_is_refused_naming_it() -> None:
    """Seeds feed ``np.random.default_rng([seed, ...])``, which takes integers >= 0."""
    _config(seed=0).validate()
    with pytest.raises(ConfigError, match=re.escape("--seed >= 0, received -1")):
        _config(seed=-1).validate()


def test_compile_on_a_backend_without_a_compiler_is_refused() -> None:
    """--compile is for torch and tensorflow only; numpy has nothing to compile, and ignoring the
    option silently would record compile_step=True in a run that ran eagerly."""
    with pytest.raises(ConfigError, match="with --compile, received 'numpy'"):
        _config(compile_step=True).validate()


@pytest.mark.parametrize("schedule", ["linear", "Cosine", ""])
def test_only_the_two_documented_schedules_are_accepted(schedule) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"received {schedule!r}")):
        _config(schedule=schedule).validate()


def test_limit_none_means_all_images_and_limit_0_is_refused() -> None:
    _config(limit=None).validate()
    _config(limit=1).validate()
    with pytest.raises(ConfigError, match=re.escape("--limit >= 1, received 0")):
        _config(limit=0).validate()


def test_an_optional_int_field_is_type_checked_when_set() -> None:
    """``limit: int | None``: None is valid, an int-valued float is a TypeError naming it."""
    with pytest.raises(TypeError, match="limit to be an int"):
        _config(limit=2.0).validate()
    with pytest.raises(TypeError, match="threads to be an int"):
        _config(threads=1.0).validate()


@pytest.mark.parametrize(
    "field, a, b",
    [("schedule", "cosine", "constant"), ("augment", False, True), ("seed", 0, 1),
     ("lr", 0.05, 0.1), ("batch_size", 64, 32), ("optimizer", "sgd", "adam")],
)  # fmt: skip
def test_what_changes_the_training_is_part_of_the_runs_identity(field, a, b) -> None:
    """A resume must repeat the hyper-parameters that change what is trained: a run resumed
    with another schedule, augmentation, seed, lr, batch or optimiser is a different run."""
    assert field in IDENTITY
    assert _config(**{field: a}).identity() != _config(**{field: b}).identity()


@pytest.mark.slow
def test_every_training_option_reaches_the_loop_and_limit_the_data(tmp_path, monkeypatch) -> None:
    """--epochs, --batch-size, --lr, --seed, --augment, --schedule and --quiet each end up in
    the ``LoopConfig`` that ``fit`` trains with (none silently replaced by its default), and
    --limit 16 trains and scores 16 images each (digits has 1797), as summary.json says."""
    seen = []
    real_fit = run_module.fit

    def recording_fit(fw, data, cfg, *args, **kwargs):
        seen.append((cfg, len(data.y_train), len(data.y_test)))
        return real_fit(fw, data, cfg, *args, **kwargs)

    monkeypatch.setattr(run_module, "fit", recording_fit)
    out = str(tmp_path / "run")
    extra = ["--epochs", "1", "--lr", "0.02", "--seed", "5", "--augment", "--schedule", "constant"]
    assert main(["train", *TINY, *extra, "--out", out]) == 0
    assert seen == [(LoopConfig(1, 16, 0.02, 5, True, "constant", False), 16, 16)]
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert (summary["train_images"], summary["test_images"]) == (16, 16)


def test_processes_must_share_the_epoch_count() -> None:
    """Processes with other --epochs would wait forever at a collective: the count is one of
    the shared arguments even though a resume may change it."""
    a = run_module._shared_arguments(_config(epochs=3))
    b = run_module._shared_arguments(_config(epochs=4))
    assert a != b and a["epochs"] == 3


class _OtherRank(Dist):
    """Rank 1 of 2 whose rank 0 was given seed 0; the sum over processes is this one's value
    (rank 0 agrees with itself)."""

    def broadcast(self, obj):
        return {"seed": 0}


def test_a_single_differing_process_stops_the_run() -> None:
    """One process of two with another seed is enough: "1 of 2 processes", naming the field."""
    error = run_module._differing_processes(_OtherRank(rank=1, world=2), {"seed": 1}, "arguments")
    assert error is not None and error.startswith("1 of 2 processes have other arguments")
    assert "seed: rank 0 has 0, rank 1 has 1" in error
    assert run_module._differing_processes(_OtherRank(rank=1, world=2), {"seed": 0}, "x") is None
