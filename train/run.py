"""One training run end to end: validate the run folder, load data, build the framework, resume,
train, and write the run's files (main process only).

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

import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, get_type_hints

import numpy as np

from .. import backends
from ..core._validate import require_bool, require_int, require_real
from ..core.arch import MIN_INPUT_SIZE, MODELS, Architecture, by_name, without_dropout
from ..core.params import arch_metadata, read_metadata, save_params
from ..perf import allocator
from ..perf.machine import describe
from . import checkpoint, metrics
from .data import DataError, Dataset, absolute_spec, load
from .device import check_device
from .distributed import Dist
from .frameworks import (
    COMPILABLE,
    FRAMEWORKS,
    Framework,
    OptimConfig,
    check_threads,
    create,
    set_threads,
)
from .loop import Diverged, LoopConfig, fit
from .outlock import LOCK_NAME, FolderInUse, OutLock, in_use_message

DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3}
# Arguments that define a run: a resume must repeat them. --epochs may change (the lr schedule then
# follows the new length) but not below the epochs already completed (checked in train() once the
# checkpoint is read), and process count, progress display and checkpoint retention are free.
IDENTITY = (
    "model",
    "min_channels_per_group",
    "backend",
    "data",
    "image_size",
    "skip_stride",
    "batch_size",
    "lr",
    "optimizer",
    "schedule",
    "seed",
    "augment",
    "no_dropout",
    "limit",
    "compile_step",
)
# Files a run writes once it has completed an epoch.
RESULT_FILES = (
    "metrics.csv",
    "summary.json",
    "params.safetensors",
    "curves.png",
    "best.safetensors",
)
# The parameters of the epoch with the best test accuracy so far.
BEST_PARAMS = "best.safetensors"
# Identity fields added after runs were first written, with the value an older run.json implies.
IDENTITY_DEFAULTS = {"compile_step": False}


class ConfigError(ValueError):
    """Bad arguments or an unusable run folder, found before anything was written (exit 2)."""


class RunWriteError(Exception):
    """Writing the run folder failed (a full disk, a folder gone read-only): exit 1. Checkpoints
    already written are intact, so ``--resume`` continues once the cause is fixed."""


@contextlib.contextmanager
def _writing(what: str, out: str) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        raise RunWriteError(
            f"cannot write {what} in {out}: {err.strerror or err}; the last complete checkpoint "
            "is intact: fix the cause and continue with --resume"
        ) from err


@dataclass
class RunConfig:
    """Everything ``gpconv train`` takes (see ``cli/train.py`` for the meaning of each)."""

    backend: str
    model: str
    out: str
    min_channels_per_group: int = 16
    data: str = "digits"
    image_size: int = 32
    skip_stride: int = 3
    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None
    optimizer: str = "sgd"
    schedule: str = "cosine"
    seed: int = 0
    augment: bool = False
    resume: bool = False
    no_dropout: bool = False
    limit: int | None = None
    sync_bn: bool = True
    keep: int = 2
    progress: bool = True
    threads: int | None = None
    keep_freed_memory: bool = False  # gpconv.perf.allocator; `gpconv train` turns it on
    compile_step: bool = False
    device: str | None = None  # torch only; see train.device

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.optimizer, 0.05)

    def identity(self) -> dict[str, Any]:
        ident = {k: getattr(self, k) for k in IDENTITY}
        ident["data"] = absolute_spec(self.data)
        if not self.model.startswith("kefficientnet"):
            ident["min_channels_per_group"] = None  # meaningless for EfficientNet
        return ident

    def validate(self, world: int = 1) -> None:
        """Raise ``ConfigError`` for any argument outside its domain, ``TypeError`` for one of
        another type (which only a caller building a ``RunConfig`` in Python can give: the CLI
        parses every option to its type)."""
        # Checked first: augment="no" would be taken as True, epochs=2.5 fail inside the loop,
        # and epochs="3" fail the range checks below with "'<' not supported".
        # The types come from the field annotations, so a field added later is checked too.
        for name, hint in get_type_hints(type(self)).items():
            value = getattr(self, name)
            if hint is bool:
                require_bool(name, value)
            elif hint is int or (hint == int | None and value is not None):
                require_int(name, value)
        require_real("lr", self.lr)  # float | None, filled in by __post_init__
        if self.backend not in FRAMEWORKS:
            raise ConfigError(f"Expected --backend in {FRAMEWORKS}, received {self.backend!r}")
        if self.model not in MODELS:
            raise ConfigError(f"Expected --model in {sorted(MODELS)}, received {self.model!r}")
        for name, low in (
            ("epochs", 1),
            ("batch_size", 1),
            ("image_size", MIN_INPUT_SIZE),
            ("min_channels_per_group", 1),
            ("keep", 1),
            ("seed", 0),
        ):
            if getattr(self, name) < low:
                raise ConfigError(
                    f"Expected --{name.replace('_', '-')} >= {low}, received {getattr(self, name)}"
                )
        if self.skip_stride < -1:
            raise ConfigError(f"Expected --skip-stride >= -1, received {self.skip_stride}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"Expected --lr finite and > 0, received {self.lr}")
        try:
            check_threads(self.threads)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if self.compile_step and self.backend not in COMPILABLE:
            raise ConfigError(
                f"Expected --backend in {COMPILABLE} with --compile, received {self.backend!r}"
            )
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"Expected --limit >= 1, received {self.limit}")
        try:
            OptimConfig(self.optimizer, self.lr)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"Expected --schedule cosine or constant, received {self.schedule!r}")
        try:
            from .data import parse_spec

            parse_spec(self.data)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        adapter = backends.get(self.backend)
        if not adapter.is_available():
            raise ConfigError(f"backend {self.backend!r} is not installed: {adapter.install_hint}")
        try:
            check_device(self.device, self.backend, world)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if world > 1:
            if self.backend != "torch":
                raise ConfigError(
                    f"multi-process training (WORLD_SIZE={world}) needs --backend torch, "
                    f"received {self.backend!r}"
                )
            if self.batch_size % world:
                raise ConfigError(
                    f"--batch-size {self.batch_size} (global) must be divisible by the "
                    f"{world} processes"
                )


# --- run folder -------------------------------------------------------------------------------


# The entries of run.json that are JSON objects: "identity" (always written), "data" and
# "input_normalization" (written since later versions, so optional).
_RUN_JSON_OBJECTS = ("identity", "data", "input_normalization")


def _read_json(path: str) -> dict[str, Any]:
    """A ``run.json``; ``ConfigError`` naming it if it cannot be read, is no UTF-8 JSON, or is
    not an object whose ``_RUN_JSON_OBJECTS`` are objects (``identity`` required)."""
    try:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError, bytes that are no UTF-8
        raise ConfigError(f"cannot read {path}: {err}") from err
    if not isinstance(run, dict):
        raise ConfigError(f"cannot read {path}: expected a JSON object, found {type(run).__name__}")
    odd = [k for k in _RUN_JSON_OBJECTS if not isinstance(run.get(k, {}), dict)]
    odd += [] if "identity" in run else ["identity"]
    if odd:
        found = ", ".join(f"{k}={run.get(k)!r}" for k in odd)
        raise ConfigError(
            f"cannot read {path}: expected a JSON object for each of {odd}, found {found}"
        )
    return run


def identity_diff(
    stored: dict[str, Any], wanted: dict[str, Any], data_fingerprinted: bool = False
) -> list[str]:
    """Human-readable differences between a stored run identity and the requested one.

    ``data_fingerprinted``: the run's run.json records its data's fingerprint, which
    ``check_same_data`` compares; then only the data's kind (``digits``, ``cifar10``, ``folder``)
    must match, not its path: a data set moved or copied elsewhere is the run's if its contents
    are. Without a fingerprint (runs of older gpconv) the path is all there is to compare."""
    stored = {**IDENTITY_DEFAULTS, **stored}
    # Older runs stored the path as typed: resolve it the same way before comparing.
    stored["data"] = absolute_spec(stored.get("data", ""))

    def same(key: str) -> bool:
        if key == "data" and data_fingerprinted:
            return _data_kind(stored.get(key)) == _data_kind(wanted.get(key))
        return stored.get(key) == wanted.get(key)

    return [
        f"{k}: run has {stored.get(k)!r}, requested {wanted.get(k)!r}"
        for k in IDENTITY
        if not same(k)
    ]


def _data_kind(spec: Any) -> Any:
    """The kind of a ``--data`` spec (``folder=/x`` -> ``folder``); anything else unchanged."""
    return spec.partition("=")[0] if isinstance(spec, str) else spec


def check_resume_state(ckpt: checkpoint.Checkpoint) -> None:
    """``ConfigError`` if ``ckpt``'s ``state.json`` (not hashed, unlike its arrays) lacks what a
    resume reads: the run's identity, the optimiser's metadata, and a history of one row per
    completed epoch (``epoch`` 1, 2, ...). Resumed from a shorter history, the run trained the
    checkpoint's parameters for those epochs again and wrote a ``metrics.csv`` without them."""
    state, epochs = ckpt.state, ckpt.epoch
    history = state.get("history")
    faults = [f"no {key!r}" for key in ("identity", "optimizer") if key not in state]
    if not isinstance(state.get("identity", {}), dict):
        faults.append("an 'identity' that is no JSON object")
    numbered = isinstance(history, list) and all(isinstance(row, dict) for row in history)
    if not numbered or [row.get("epoch") for row in history] != list(range(1, epochs + 1)):
        shown = [row.get("epoch") for row in history] if numbered else history
        faults.append(f"a history of epochs {shown!r} for epoch {epochs} (expected 1..{epochs})")
    if faults:
        raise ConfigError(
            f"cannot --resume from {ckpt.path}: its state.json has {'; '.join(faults)}. Move "
            "that folder aside to resume from the checkpoint before it"
        )


def check_not_in_use(out: str) -> None:
    """``ConfigError`` if another ``gpconv train`` holds ``out``'s lock. Checked first: for a run
    in progress ``check_out`` would say "already holds a run; pass --resume", advice that only
    leads to the lock's refusal."""
    holder = OutLock.holder(out)
    if holder is not None:
        raise ConfigError(in_use_message(out, holder))


def check_out(cfg: RunConfig) -> None:
    """Make sure ``cfg.out`` can take this run without overwriting another. Reads only; raises
    ``ConfigError`` when the folder holds another run, an unrelated non-empty folder, or cannot
    be written. ``claim_out`` then creates and locks it."""
    out = cfg.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out} exists and is not a folder")
    if not os.path.isdir(out):
        parent = os.path.dirname(os.path.abspath(out))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot create --out {out}: {parent} is not a writable folder")
        return
    run_json = os.path.join(out, "run.json")
    if os.path.isfile(run_json) and trained_something(out):
        stored = _read_json(run_json)
        if not cfg.resume:
            raise ConfigError(
                f"--out {out} already holds a run ({stored['identity'].get('model')}, "
                f"{stored['identity'].get('backend')}); pass --resume to continue it "
                "or choose another --out"
            )
        diff = identity_diff(stored["identity"], cfg.identity(), "data" in stored)
        if diff:
            raise ConfigError(
                f"cannot --resume {out}: it is a different run:\n  " + "\n  ".join(diff)
            )
    elif not os.path.isfile(run_json) and set(os.listdir(out)) - {LOCK_NAME}:
        raise ConfigError(
            f"--out {out} is not empty and holds no gpconv run (no run.json); "
            "refusing to write into it"
        )
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ConfigError(f"cannot write to --out {out}: {err.strerror or err}") from err


def trained_something(out: str) -> bool:
    """Whether the run in ``out`` completed an epoch (has metrics, a summary, final parameters or
    any checkpoint but an interrupted write's leftover). A run killed before that left only its
    run.json, which pins nothing: a new run may take the folder, with or without --resume."""
    if any(os.path.lexists(os.path.join(out, f)) for f in RESULT_FILES):
        return True
    root = os.path.join(out, checkpoint.CHECKPOINTS)
    names = os.listdir(root) if os.path.isdir(root) else []
    return any(not name.startswith(checkpoint.TMP_PREFIX) for name in names)


def _recorded(out: str, key: str) -> Any:
    """``key`` of the run.json of a run in ``out`` that trained something, else None."""
    run_json = os.path.join(out, "run.json")
    if not (os.path.isfile(run_json) and trained_something(out)):
        return None
    return _read_json(run_json).get(key)


def check_same_data(out: str, data: Dataset, spec: str) -> None:
    """``ConfigError`` naming ``--data spec`` unless the data equals the data of the run in
    ``out`` (its run.json's fingerprint; runs written before fingerprints existed are not
    checked)."""
    stored = _recorded(out, "data")
    if stored is None:
        return
    now = data.fingerprint
    diff = [
        f"{k}: run has {stored.get(k)!r}, now {now[k]!r}" for k in now if stored.get(k) != now[k]
    ]
    if diff:
        raise ConfigError(
            f"cannot --resume {out}: the data of --data {spec} changed since the run started:\n  "
            + "\n  ".join(diff)
        )


def moved_data_note(out: str, cfg: RunConfig) -> str | None:
    """For a resume whose ``--data`` names another path than the run's run.json (the contents
    proved the same by ``check_same_data`` first): a note saying so; else None. The run goes on
    with the new path: run.json and the checkpoints written from now on record it."""
    stored, recorded = _recorded(out, "identity"), _recorded(out, "data")
    if stored is None or recorded is None:
        return None
    was, now = absolute_spec(str(stored.get("data", ""))), cfg.identity()["data"]
    if was == now:
        return None
    return (
        f"gpconv train: the run's data moved: it started on --data {was}; --data {now} holds "
        f"the same images and labels (SHA-256 {recorded.get('sha256')}), and the run goes on "
        "with that path"
    )


def keep_normalization(out: str, data: Dataset) -> None:
    """Standardise a resumed run's inputs with the mean and std its run.json recorded, not with
    freshly computed ones: a gpconv update that computes them differently (as when float32 sums
    gave way to float64) must not change a run's inputs halfway. Runs that recorded none keep
    the computed values."""
    stored = _recorded(out, "input_normalization")
    if stored is None:
        return
    mean, std = np.float32(stored["mean"]), np.float32(stored["std"])
    if mean.shape != data.mean.shape or std.shape != data.std.shape:
        raise ConfigError(
            f"cannot --resume {out}: its run.json records input_normalization for "
            f"{mean.shape[0] if mean.ndim else 0} channels, the data has {data.mean.shape[0]}"
        )
    data.mean, data.std = mean, std


def claim_out(cfg: RunConfig) -> OutLock:
    """Lock the run folder (creating it) for this process and check it again under the lock, so
    a run started at the same moment on the same ``--out`` cannot slip in between the check and
    the first write. ``ConfigError`` if the folder is in use, cannot be written, or stopped being
    fit for this run."""
    try:
        lock = OutLock.acquire(cfg.out)
    except FolderInUse as err:
        raise ConfigError(str(err)) from None
    except OSError as err:
        raise ConfigError(f"cannot write to --out {cfg.out}: {err.strerror or err}") from err
    try:
        check_out(cfg)
    except BaseException:
        lock.release()
        raise
    return lock


# --- outputs ----------------------------------------------------------------------------------


def _summary(
    cfg: RunConfig,
    arch: Architecture,
    data: Dataset,
    history: list[dict],
    status: str,
    world: int,
    started: float,
    device: str,
) -> dict[str, Any]:
    trainable, non_trainable = arch.param_count()
    best = best_epoch(history)
    last = history[-1] if history else {}
    return {
        "status": status,
        "model": cfg.model,
        "arch": arch.name,
        "backend": cfg.backend,
        "data": data.name,
        "num_classes": data.num_classes,
        "train_images": int(len(data.y_train)),
        "test_images": int(len(data.y_test)),
        "image_size": cfg.image_size,
        "skip_stride": cfg.skip_stride,
        "params": {"trainable": trainable, "non_trainable": non_trainable},
        "input_normalization": normalization(data),
        "macs_per_image": arch.macs(cfg.image_size),
        "epochs": cfg.epochs,
        "epochs_completed": len(history),
        # null, not NaN, for a diverged run's losses: summary.json is strict JSON
        "final": {
            k: _finite_or_none(last.get(k))
            for k in ("train_loss", "train_acc", "test_loss", "test_acc")
        },
        "best_test_acc": best["test_acc"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "train_images_per_s": last.get("images_per_s"),
        "seconds_total": sum(r["seconds"] for r in history),
        "seconds_this_session": time.perf_counter() - started,
        "processes": world,
        "device": device,  # the main process's (under DDP each process has its own)
        "config": asdict(cfg),
        "machine": describe(),
    }


def best_epoch(history: list[dict]) -> dict | None:
    """The row of the epoch ``best.safetensors`` holds: the top test accuracy among epochs with a
    finite train loss, the first of ties (as Keras's ``ModelCheckpoint(save_best_only=True)``
    keeps the earlier); None without such an epoch."""
    usable = [r for r in history if math.isfinite(r["test_acc"]) and math.isfinite(r["train_loss"])]
    return max(usable, key=lambda r: r["test_acc"]) if usable else None


def _best_key(row: dict) -> dict[str, str]:
    """What ``best.safetensors``'s metadata records of its history row: epoch and test accuracy
    (``repr``: exact). Two rows with the same key are taken for the same epoch of one run."""
    return {"epoch": str(row["epoch"]), "test_acc": repr(row["test_acc"])}


def _holds_epoch(path: str, row: dict | None) -> bool:
    """Whether the parameter file ``path`` is that of history row ``row`` (``_best_key``);
    False for no row, or a file missing or unreadable."""
    if row is None:
        return False
    try:
        meta = read_metadata(path)
    except (OSError, ValueError):
        return False
    return {k: meta.get(k) for k in ("epoch", "test_acc")} == _best_key(row)


def _checkpoint_of(out: str, row: dict) -> checkpoint.Checkpoint | None:
    """The checkpoint after epoch ``row`` in ``out``, if one verifies and the last row of its
    history is ``row`` (the same run, not that epoch as trained before a fallback)."""
    for epoch, path in checkpoint.epochs_on_disk(out):
        if epoch != row["epoch"]:
            continue
        try:
            kept = checkpoint.verify(path)
        except ValueError:
            return None
        history = kept.state.get("history")
        last = history[-1] if isinstance(history, list) and history else None
        return kept if isinstance(last, dict) and _best_key(last) == _best_key(row) else None
    return None


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def normalization(data: Dataset) -> dict[str, Any]:
    """How the trained model's inputs were made, for using ``params.safetensors`` without the
    training data: ``x = (pixels / 255 - mean) / std`` per channel, images ``(N, H, W, 3)``."""
    return {
        "formula": "(x - mean) / std, x = uint8 pixels / 255 (or images already in [0, 1])",
        "mean": [float(v) for v in data.mean],
        "std": [float(v) for v in data.std],
    }


class RunWriter:
    """Writes the run folder after each epoch (main process only)."""

    def __init__(
        self, cfg: RunConfig, fw: Framework, arch: Architecture, data: Dataset, world: int
    ) -> None:
        self.cfg, self.fw, self.arch, self.data, self.world = cfg, fw, arch, data, world
        self.started = time.perf_counter()

    def start(self) -> None:
        run = {
            "format": "gpconv-run/1",
            "identity": self.cfg.identity(),
            "arch": self.arch.name,
            "data": self.data.fingerprint,
            "input_normalization": normalization(self.data),
        }
        with _writing("run.json", self.cfg.out):
            checkpoint.write_json_atomic(os.path.join(self.cfg.out, "run.json"), run)

    def _metadata(self, **extra: str) -> dict[str, str]:
        """The metadata of every parameter file the run writes: the architecture
        (``arch_metadata``: name, ``num_classes``, ``skip_stride_cnt``; loaders check them), the
        training ``image_size``, backend, the input normalisation (``input_mean``/``input_std``,
        JSON lists) and ``extra``."""
        norm = normalization(self.data)
        return {
            **arch_metadata(self.arch),
            "image_size": str(self.cfg.image_size),
            "backend": self.cfg.backend,
            "input_mean": json.dumps(norm["mean"]),
            "input_std": json.dumps(norm["std"]),
            **extra,
        }

    def epoch_end(self, history: list[dict]) -> None:
        opt_arrays, opt_meta = self.fw.optimizer_state()
        state = {
            "identity": self.cfg.identity(),
            "arch": self.arch.name,
            "backend": self.cfg.backend,
            "config": asdict(self.cfg),
            "history": history,
            "optimizer": opt_meta,
            "rng": {
                "scheme": "numpy default_rng([seed, epoch, stream, ...]) per epoch",
                "seed": self.cfg.seed,
                "next_epoch": len(history),
            },
        }
        params = self.fw.export_params()
        with _writing(f"the checkpoint of epoch {len(history)}", self.cfg.out):
            checkpoint.save(
                self.cfg.out,
                len(history),
                params,
                opt_arrays,
                state,
                keep=self.cfg.keep,
                metadata=self._metadata(),
            )
        self.save_best(history, params)
        self.files(history, "running")

    def save_best(self, history: list[dict], params: dict[str, np.ndarray]) -> None:
        """``best.safetensors`` from ``params`` (those after the last epoch of ``history``) if
        that epoch is the best so far (``best_epoch``); otherwise, or for no epochs, nothing."""
        best = best_epoch(history)  # None for an empty history
        if best is not None and best is history[-1]:
            self._write_best(best, params)

    def _write_best(self, row: dict, params: dict[str, np.ndarray]) -> None:
        """``best.safetensors``: ``params``, those after epoch ``row`` (metadata: its epoch and
        test accuracy, which ``resume_best`` compares)."""
        meta = self._metadata(**_best_key(row))
        with _writing(BEST_PARAMS, self.cfg.out):
            save_params(os.path.join(self.cfg.out, BEST_PARAMS), params, metadata=meta)

    def resume_best(self, history: list[dict], params: dict[str, np.ndarray]) -> None:
        """Make ``best.safetensors`` hold the best epoch of ``history``, the history of the
        checkpoint resumed from (``params``: its last epoch's), and rewrite metrics.csv,
        curves.png and summary.json for that history.

        A kill between a checkpoint and its best file left an older epoch's best file (or none).
        A fallback to an older checkpoint (the newest damaged) left the files of epochs the run
        now trains again and need not reproduce (another ``--epochs`` changes the lr schedule):
        kept, best.safetensors could end holding an epoch of no row of metrics.csv. The best
        epoch's parameters come from ``params`` or its checkpoint if one still verifies; where
        none does, the stale file is removed (with a warning) until an epoch beats that one."""
        best, path = best_epoch(history), os.path.join(self.cfg.out, BEST_PARAMS)
        if best is not None and best is history[-1]:
            self._write_best(best, params)
        elif not _holds_epoch(path, best):
            kept = None if best is None else _checkpoint_of(self.cfg.out, best)
            if kept is not None:
                self._write_best(best, kept.params())
            elif os.path.lexists(path):
                with _writing(BEST_PARAMS, self.cfg.out):
                    os.remove(path)
                best_is = f"epoch {best['epoch']}" if best else "no epoch with a finite loss"
                print(
                    f"gpconv train: removed {path}: the best of the history resumed from is "
                    f"{best_is}, which that file did not hold and no checkpoint is left of; "
                    "the next epoch that beats it writes the file again",
                    file=sys.stderr,
                )
        self.files(history, "running")

    def discard_results(self) -> None:
        """Remove ``RESULT_FILES`` of the run's earlier epochs before it starts again from
        scratch (``--resume`` without a checkpoint that verifies). Kept, they described epochs
        the new history lacks until its first epoch overwrote most of them, and some for longer:
        a run stopped before that still said "complete" in summary.json, and one whose first
        epoch diverged kept the old run's best.safetensors and params.safetensors."""
        out = self.cfg.out
        stale = [f for f in RESULT_FILES if os.path.lexists(os.path.join(out, f))]
        with _writing(", ".join(stale), out):
            for name in stale:
                os.remove(os.path.join(out, name))
        if stale:
            print(
                f"gpconv train: removed the earlier epochs' {', '.join(stale)} from {out}",
                file=sys.stderr,
            )

    def files(self, history: list[dict], status: str) -> None:
        """metrics.csv, curves.png and summary.json, with the run's ``status``."""
        out = self.cfg.out
        summary = _summary(
            self.cfg,
            self.arch,
            self.data,
            history,
            status,
            self.world,
            self.started,
            self.fw.device_label,
        )
        title = (
            f"{self.arch.name} ({self.cfg.backend}) on {self.data.name}, "
            f"{self.cfg.image_size}x{self.cfg.image_size}"
        )
        with _writing("metrics.csv, curves.png or summary.json", out):
            metrics.write_csv(os.path.join(out, "metrics.csv"), history)
            if history:
                metrics.plot_curves(os.path.join(out, "curves.png"), history, title)
            checkpoint.write_json_atomic(os.path.join(out, "summary.json"), summary)

    def finish(self, history: list[dict]) -> None:
        with _writing("params.safetensors", self.cfg.out):
            save_params(
                os.path.join(self.cfg.out, "params.safetensors"),
                self.fw.export_params(),
                metadata=self._metadata(epochs=str(len(history))),
            )
        self.files(history, "complete")


# --- the run ----------------------------------------------------------------------------------


def prepare(cfg: RunConfig, dist: Dist) -> OutLock | None:
    """Validate arguments and claim the run folder on the main process (returns its lock; other
    processes get ``None``); every process raises the same ``ConfigError`` if that fails (so no
    rank waits forever at a collective)."""
    error, lock = None, None
    if dist.is_main:
        try:
            cfg.validate(dist.world)
            check_not_in_use(cfg.out)
            check_out(cfg)  # before creating anything, so a bad folder is left as it was
            lock = claim_out(cfg)
        except ConfigError as err:
            error = str(err)
    error = dist.broadcast(error)
    if error:
        if lock is not None:
            lock.release()
        raise ConfigError(error)
    return lock


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
        fingerprinted = _recorded(cfg.out, "data") is not None
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
        return _summary(
            cfg, arch, data, history, "complete", dist.world, writer.started, fw.device_label
        )
    return {}
