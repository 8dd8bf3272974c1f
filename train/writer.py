"""What a run writes into its run folder (main process only): ``RunWriter`` writes ``run.json``
when the run starts; after every epoch a checkpoint, ``metrics.csv``, ``curves.png``,
``summary.json`` (``run_summary``) and, for the best epoch so far (``best_epoch``),
``best.safetensors``; and ``params.safetensors`` at the end. The folder's layout: ``train.run``.
``RunWriteError`` when writing fails.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np

from ..core.arch import Architecture
from ..core.params import arch_metadata, read_metadata, save_params
from ..perf.machine import describe
from . import checkpoint, metrics
from .config import RunConfig
from .data import Dataset
from .frameworks import Framework

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


def run_summary(
    cfg: RunConfig,
    arch: Architecture,
    data: Dataset,
    history: list[dict],
    status: str,
    world: int,
    started: float,
    device: str,
) -> dict[str, Any]:
    """The run's ``summary.json``: what ran on what data, its ``status`` (running, complete or
    diverged), the final and best epoch of ``history``, speed, timing since ``started``
    (``time.perf_counter()``), the ``world`` process count, ``device``, config and machine."""
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
        summary = run_summary(
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
