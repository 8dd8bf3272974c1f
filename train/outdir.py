"""The checks that decide whether a run folder (``--out``) may take a run or be resumed: its
``run.json`` and identity, the lock of another run (``train.outlock``), a checkpoint's state, the
data it was trained on and its input normalisation; ``claim_out`` then locks the folder. Each
raises ``ConfigError`` before anything is written.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

from . import checkpoint
from .config import IDENTITY, IDENTITY_DEFAULTS, ConfigError, RunConfig
from .data import Dataset, absolute_spec
from .outlock import LOCK_NAME, FolderInUse, OutLock, in_use_message
from .writer import RESULT_FILES

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


def recorded_in_run(out: str, key: str) -> Any:
    """``key`` of the run.json of a run in ``out`` that trained something, else None."""
    run_json = os.path.join(out, "run.json")
    if not (os.path.isfile(run_json) and trained_something(out)):
        return None
    return _read_json(run_json).get(key)


def check_same_data(out: str, data: Dataset, spec: str) -> None:
    """``ConfigError`` naming ``--data spec`` unless the data equals the data of the run in
    ``out`` (its run.json's fingerprint; runs written before fingerprints existed are not
    checked)."""
    stored = recorded_in_run(out, "data")
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
    stored, recorded = recorded_in_run(out, "identity"), recorded_in_run(out, "data")
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
    stored = recorded_in_run(out, "input_normalization")
    if stored is None:
        return
    try:
        mean, std = np.float32(stored["mean"]), np.float32(stored["std"])
    except (KeyError, TypeError, ValueError) as err:  # hand-edited: no list of numbers
        raise ConfigError(
            f"cannot --resume {out}: its run.json's input_normalization should give a mean and "
            f"a std per channel, found {stored!r}"
        ) from err
    for name, value in (("", mean), (" std", std)):
        if value.shape != data.mean.shape:
            raise ConfigError(
                f"cannot --resume {out}: its run.json records input_normalization{name} for "
                f"{value.shape[0] if value.ndim else 0} channels, the data has "
                f"{data.mean.shape[0]}"
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
