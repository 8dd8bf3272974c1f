"""One training run end to end: validate the run folder, load data, build the framework, resume,
train, and write the run's files (main process only). The entry points are ``train`` and
``prepare``; the parts they use have modules of their own: ``train.config`` (``RunConfig``,
``ConfigError``), ``train.outdir`` (whether the run folder may be used or resumed),
``train.writer`` (``RunWriter``, the run's files) and ``train.outlock`` (the folder's lock).

Run folder ``--out``:

* ``run.json``: the run's identity (model, backend, data, hyper-parameters) written when it starts;
  ``--resume`` refuses a folder whose identity differs, and a folder holding a run is never
  reused without ``--resume``;
* ``checkpoints/epoch-NNNN/``: see ``train.checkpoint`` (the newest two that verify are kept);
* ``metrics.csv``, ``curves.png``, ``summary.json`` (rewritten after every epoch; the summary
  holds the input normalisation and the run's status: running, complete or diverged);
* ``params.safetensors``: the final canonical parameters, loadable by any backend (its metadata
  holds the input normalisation too); ``best.safetensors``: those of the epoch with the best test
  accuracy so far (metadata: its epoch and accuracy);
* ``.gpconv-train.lock`` while a run writes the folder (``train.outlock``): a second run on the
  same folder stops with an error instead of overwriting it.
"""

from __future__ import annotations

import sys
from typing import Any

from ..core.arch import by_name, without_dropout
from ..perf import allocator
from . import checkpoint, metrics
from .config import DEFAULT_LR, IDENTITY, IDENTITY_DEFAULTS, ConfigError, RunConfig
from .data import DataError, load
from .distributed import Dist, mismatches
from .frameworks import OptimConfig, create, set_threads
from .loop import Diverged, LoopConfig, fit
from .outdir import (
    check_not_in_use,
    check_out,
    check_resume_state,
    check_same_data,
    claim_out,
    identity_diff,
    keep_normalization,
    moved_data_note,
    recorded_in_run,
    trained_something,
)
from .outlock import OutLock
from .writer import (
    BEST_PARAMS,
    RESULT_FILES,
    RunWriteError,
    RunWriter,
    best_epoch,
    normalization,
    run_summary,
)

# The names train.config, train.outdir and train.writer took over from this module stay importable
# from it.
__all__ = [
    "BEST_PARAMS",
    "DEFAULT_LR",
    "IDENTITY",
    "IDENTITY_DEFAULTS",
    "RESULT_FILES",
    "ConfigError",
    "OutLock",
    "RunConfig",
    "RunWriteError",
    "RunWriter",
    "best_epoch",
    "check_not_in_use",
    "check_out",
    "check_resume_state",
    "check_same_data",
    "claim_out",
    "identity_diff",
    "keep_normalization",
    "moved_data_note",
    "normalization",
    "prepare",
    "train",
    "trained_something",
]


def prepare(cfg: RunConfig, dist: Dist) -> OutLock | None:
    """Validate arguments on the main process, check that every process was given the same
    (``_shared_arguments``), and claim the run folder on the main process (returns its lock;
    other processes get ``None``); every process raises the same ``ConfigError`` if any of that
    fails (so no rank waits forever at a collective)."""
    error, lock = None, None
    if dist.is_main:
        try:
            cfg.validate(dist.world)
            check_not_in_use(cfg.out)
            check_out(cfg)  # before creating anything, so a bad folder is left as it was
        except ConfigError as err:
            error = str(err)
    error = dist.broadcast(error) or _differing_processes(dist, _shared_arguments(cfg), "arguments")
    if error:
        raise ConfigError(error)
    if dist.is_main:
        try:
            lock = claim_out(cfg)
        except ConfigError as err:
            error = str(err)
    error = dist.broadcast(error)
    if error:
        if lock is not None:
            lock.release()
        raise ConfigError(error)
    return lock


def _shared_arguments(cfg: RunConfig) -> dict[str, Any]:
    """What every process of a run must be given alike: its identity (the data by kind: paths
    may differ between machines; the images are compared once loaded) and how it runs."""
    shared = cfg.identity()
    shared["data"] = shared["data"].partition("=")[0]
    return {**shared, **{k: getattr(cfg, k) for k in ("epochs", "resume", "sync_bn", "device")}}


def _differing_processes(dist: Dist, mine: dict[str, Any], what: str) -> str | None:
    """The error every process raises when some were given other ``what`` than rank 0: with
    another seed or --limit they would train on duplicated and dropped images, with another lr
    drift apart, and with another epoch count wait forever at a collective."""
    count, diff = mismatches(dist, mine)
    if not count:
        return None
    detail = "".join(f"\n  {line}" for line in diff)
    return f"{count} of {dist.world} processes have other {what} than rank 0{detail}"


def train(cfg: RunConfig, dist: Dist | None = None) -> dict[str, Any]:
    """Run (or resume) the training described by ``cfg``; returns the summary dict (``{}`` on
    processes other than the main one). The main process holds the run folder's lock throughout
    (``train.outlock``)."""
    dist = dist or Dist()
    lock = prepare(cfg, dist)
    try:
        return _train(cfg, dist)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: RunConfig, dist: Dist) -> dict[str, Any]:
    try:
        data = load(cfg.data, cfg.image_size).limited(cfg.limit)
    except DataError as err:
        raise ConfigError(str(err)) from err
    except MemoryError as err:  # the images at --image-size (float32, all of them) do not fit
        raise ConfigError(
            f"Expected --data {cfg.data} to fit in memory at --image-size {cfg.image_size}, "
            f"received: {str(err) or 'MemoryError'} (choose a smaller --image-size)"
        ) from err
    # Hashing the images costs seconds at large sizes: only where there is something to compare.
    if dist.world > 1 and (
        error := _differing_processes(dist, data.fingerprint, "data (images, labels or classes)")
    ):
        raise ConfigError(error)
    if cfg.resume:
        check_same_data(cfg.out, data, cfg.data)
        note = moved_data_note(cfg.out, cfg) if dist.is_main else None
        if note:
            print(metrics.displayable(note), file=sys.stderr)
        keep_normalization(cfg.out, data)
    if len(data.y_train) < cfg.batch_size:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} exceeds the {len(data.y_train)} training images"
        )
    arch = by_name(cfg.model, data.num_classes, cfg.min_channels_per_group, cfg.skip_stride)
    if cfg.no_dropout:
        arch = without_dropout(arch)
    try:
        set_threads(cfg.backend, cfg.threads)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if cfg.keep_freed_memory:
        allocator.keep_freed_memory()
    fw = create(
        cfg.backend,
        arch,
        OptimConfig(cfg.optimizer, cfg.lr),
        cfg.seed,
        dist,
        cfg.compile_step,
        **({"sync_bn": cfg.sync_bn, "device": cfg.device} if cfg.backend == "torch" else {}),
    )
    history: list[dict] = []
    ckpt = checkpoint.latest(cfg.out, warn=dist.is_main) if cfg.resume else None
    if ckpt is not None:
        check_resume_state(ckpt)
        # The data's path may have changed if run.json's fingerprint, checked above, is its.
        fingerprinted = recorded_in_run(cfg.out, "data") is not None
        diff = identity_diff(ckpt.state["identity"], cfg.identity(), fingerprinted)
        if diff:
            raise ConfigError(
                f"cannot --resume from {ckpt.path}: different run:\n  " + "\n  ".join(diff)
            )
        if cfg.epochs < ckpt.epoch:
            # Training cannot be undone: fit would train nothing and the run would claim to be
            # complete at --epochs with more epochs than that in its history and parameters.
            raise ConfigError(
                f"Expected --epochs >= {ckpt.epoch} (the run has completed {ckpt.epoch} epochs; "
                f"--epochs cannot shrink below that on --resume), received --epochs {cfg.epochs}"
            )
        try:
            fw.load_params(ckpt.params())
        except ValueError as err:  # e.g. a checkpoint of another class count
            raise ConfigError(f"cannot --resume from {ckpt.path}: {err}") from err
        fw.load_optimizer_state(ckpt.optimizer(), ckpt.state["optimizer"])
        history = ckpt.state["history"]
    writer = RunWriter(cfg, fw, arch, data, dist.world)
    if dist.is_main:
        trainable, _ = arch.param_count()
        where = f"resuming after epoch {ckpt.epoch}" if ckpt else "from scratch"
        # displayable: a folder name that is no UTF-8 must not stop the run at a strict stdout
        line = (
            f"gpconv train: {arch.name} ({trainable:,} trainable params) with {cfg.backend} "
            f"({fw.device_label}) on {data.name} ({len(data.y_train)} train / "
            f"{len(data.y_test)} test, {cfg.image_size}px), "
            f"{dist.world} process(es), {where} -> {cfg.out}"
        )
        print(metrics.displayable(line), flush=True)
        if cfg.resume and ckpt is None:
            print(
                "gpconv train: no complete checkpoint to resume; starting from scratch",
                file=sys.stderr,
            )
            writer.discard_results()
        writer.start()
        if ckpt is not None:
            writer.resume_best(history, fw.export_params())
    loop_cfg = LoopConfig(
        cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed, cfg.augment, cfg.schedule, cfg.progress
    )
    try:
        history = fit(fw, data, loop_cfg, dist, history, writer.epoch_end if dist.is_main else None)
    except Diverged as err:
        if dist.is_main:
            writer.files(err.history, "diverged")
        raise
    if dist.is_main:
        writer.finish(history)
        return run_summary(
            cfg, arch, data, history, "complete", dist.world, writer.started, fw.device_label
        )
    return {}
