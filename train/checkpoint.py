"""Crash-safe checkpoints: safetensors + JSON, written atomically, verified on load; never pickle.

Layout of one checkpoint, ``<run>/checkpoints/epoch-0003/``:

* ``params.safetensors``: every parameter in canonical names and Keras layouts (the backend's
  ``export_params``), loadable by any backend with ``core.params.load_params``;
* ``optimizer.safetensors``: the optimiser's arrays (momenta, Adam moments, step counts) under
  framework-specific names;
* ``state.json``: epoch, run arguments, RNG scheme, metrics history, optimiser metadata and the
  SHA-256 of both array files. It is written last; a checkpoint without it, or whose hashes do
  not match, is incomplete and skipped.

The folder is assembled under a temporary name (files fsynced) and renamed into place, then the
parent directory is fsynced: a SIGKILL or power loss leaves either the old set of checkpoints or
the new one, never a torn file.

Nothing that might be the only copy of an epoch is deleted: pruning counts and deletes only
checkpoints that verify, and a folder that does not verify (corrupt, or in a format this version
cannot read) stays where it is; ``save`` moves whatever is in its way aside to
``epoch-NNNN.unverifiable-N`` (or ``.replaced-N``) with a warning. Those are left for the user.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core._validate import require_positive_int
from ..core.files import fsync_folder, write_atomic
from ..core.params import load_params, save_params

CHECKPOINTS = "checkpoints"
PREFIX = "epoch-"
TMP_PREFIX = ".tmp-"
# A verified checkpoint being deleted is first renamed to this prefix (atomic), so a kill halfway
# through the deletion leaves a leftover the next prune removes, never a torn epoch-NNNN folder.
PRUNING_PREFIX = f"{TMP_PREFIX}pruning-"
FORMAT = "gpconv-checkpoint/1"
# The array files of a checkpoint, each hashed in state.json's "files".
ARRAY_FILES = ("params.safetensors", "optimizer.safetensors")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` via a temp file, fsync and rename."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (``core.files.write_atomic``)."""
    write_atomic(path, text.encode())


@dataclass
class Checkpoint:
    """A verified checkpoint folder: ``epoch`` is the number of completed epochs."""

    path: str
    state: dict[str, Any]

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])

    def params(self) -> dict[str, np.ndarray]:
        return load_params(os.path.join(self.path, "params.safetensors"))

    def optimizer(self) -> dict[str, np.ndarray]:
        arrays = load_params(os.path.join(self.path, "optimizer.safetensors"))
        # save_params keeps 0-d arrays (step counters) as shape () now, but before c677695 it
        # wrote them as (1,), and checkpoints of that era share FORMAT (runs/ holds some): restore
        # the shapes state.json recorded. A no-op for checkpoints written since.
        shapes = self.state.get("optimizer_shapes", {})
        return {k: v.reshape(shapes[k]) if k in shapes else v for k, v in arrays.items()}


def save(
    run_dir: str,
    epoch: int,
    params: dict[str, np.ndarray],
    optimizer: dict[str, np.ndarray],
    state: dict[str, Any],
    keep: int = 2,
    metadata: dict[str, str] | None = None,
) -> Checkpoint:
    """Write checkpoint ``epoch`` (completed epochs) atomically, then ``prune(run_dir, keep)``.

    Something already at ``checkpoints/epoch-NNNN`` is moved aside, never deleted: to
    ``epoch-NNNN.unverifiable-N`` if it fails ``verify`` (the usual case: resume starts after the
    newest checkpoint that verifies, so a folder at a later epoch is corrupt or in a format this
    version cannot read, and may be the only copy of that epoch), or ``epoch-NNNN.replaced-N`` if
    it verifies (another writer, or this function called twice for one epoch). Either way a
    warning on stderr names both paths; the folder is left for the user to inspect or delete.
    The checkpoint just written is never pruned.
    """
    root = os.path.join(run_dir, CHECKPOINTS)
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"{PREFIX}{epoch:04d}")
    tmp = os.path.join(root, f"{TMP_PREFIX}{PREFIX}{epoch:04d}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        save_params(
            os.path.join(tmp, "params.safetensors"),
            params,
            metadata={"format": FORMAT, "epoch": str(epoch), **(metadata or {})},
        )
        save_params(os.path.join(tmp, "optimizer.safetensors"), optimizer)
        state = {
            **state,
            "format": FORMAT,
            "epoch": epoch,
            "optimizer_shapes": {k: list(np.shape(v)) for k, v in optimizer.items()},
            "files": {f: _sha256(os.path.join(tmp, f)) for f in ARRAY_FILES},
        }
        write_json_atomic(os.path.join(tmp, "state.json"), state)
        fsync_folder(tmp)
    except BaseException:
        # Without this a full disk keeps the partial copy, and every retry fills it further.
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.lexists(final):
        try:
            verify(final)
            why, reason = "replaced", "a verified checkpoint of the same epoch was in the way"
        except ValueError as err:
            why, reason = "unverifiable", str(err)
        _move_aside(final, why, reason)
    # A crash between the two renames leaves the old folder aside and the new one under its
    # temporary name: nothing is lost, and resume falls back to the previous checkpoint.
    os.rename(tmp, final)
    fsync_folder(root)
    prune(run_dir, keep, protect=final)
    return Checkpoint(final, state)


def _move_aside(path: str, why: str, reason: str) -> str:
    """Rename ``path`` to the first free ``<path>.<why>-N`` (not an ``epoch-NNNN`` name, so
    neither ``latest`` nor ``prune`` looks at it again), warn on stderr, return the new path."""
    n = 1
    while os.path.lexists(f"{path}.{why}-{n}"):
        n += 1
    aside = f"{path}.{why}-{n}"
    os.rename(path, aside)
    print(
        f"gpconv train: moved {path} aside to {aside} ({reason}); "
        "it is kept: delete it once you no longer need it",
        file=sys.stderr,
    )
    return aside


def verify(path: str) -> Checkpoint:
    """Load ``path/state.json`` and check both array files against their recorded hashes;
    ``ValueError`` says what is missing or corrupt (never another error: ``latest`` and
    ``prune`` skip what raises it, so one bad folder cannot stop a run's saves)."""
    state_file = os.path.join(path, "state.json")
    if not os.path.isfile(state_file):
        raise ValueError(f"incomplete checkpoint {path}: no state.json")
    try:
        with open(state_file, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError, or bytes that are no UTF-8
        raise ValueError(f"corrupt {state_file}: {err}") from err
    if not isinstance(state, dict):
        raise ValueError(
            f"corrupt {state_file}: expected a JSON object, found {type(state).__name__}"
        )
    if state.get("format") != FORMAT:
        raise ValueError(f"{state_file}: expected format {FORMAT!r}, found {state.get('format')!r}")
    if not isinstance(state.get("epoch"), int) or isinstance(state["epoch"], bool):
        raise ValueError(
            f"corrupt {state_file}: expected an integer epoch, found {state.get('epoch')!r}"
        )
    # latest() and prune() order checkpoints by their folders' names, resume by state.json: a
    # folder copied or renamed by hand would resume another epoch than the one it was chosen as.
    named = folder_epoch(os.path.basename(os.path.normpath(path)))
    if named is not None and named != state["epoch"]:
        raise ValueError(f"corrupt checkpoint {path}: its state.json is of epoch {state['epoch']}")
    files = state.get("files")
    # Both files, always: a state.json listing fewer would verify a checkpoint resume cannot load.
    if not isinstance(files, dict) or any(not isinstance(files.get(f), str) for f in ARRAY_FILES):
        raise ValueError(
            f"corrupt {state_file}: expected 'files' to give the SHA-256 of "
            f"{' and '.join(ARRAY_FILES)}, found {files!r}"
        )
    for name in ARRAY_FILES:
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise ValueError(f"incomplete checkpoint {path}: {name} missing")
        if _sha256(file) != files[name]:
            raise ValueError(f"corrupt checkpoint file {file}: SHA-256 does not match state.json")
    return Checkpoint(path, state)


def folder_epoch(name: str) -> int | None:
    """The epoch a checkpoint folder's name gives (``epoch-0012`` -> 12), else None."""
    digits = name[len(PREFIX) :]
    return int(digits) if name.startswith(PREFIX) and digits.isdigit() else None


def epochs_on_disk(run_dir: str) -> list[tuple[int, str]]:
    """``(epoch, path)`` of every ``epoch-NNNN`` folder, oldest first (verified or not)."""
    root = os.path.join(run_dir, CHECKPOINTS)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        if (epoch := folder_epoch(name)) is not None:
            found.append((epoch, os.path.join(root, name)))
    return sorted(found)


def latest(run_dir: str, warn: bool = True) -> Checkpoint | None:
    """The newest checkpoint that verifies; broken ones are reported on stderr and skipped."""
    for _, path in reversed(epochs_on_disk(run_dir)):
        try:
            return verify(path)
        except ValueError as err:
            if warn:
                print(f"gpconv train: skipping {err}", file=sys.stderr)
    return None


def _verifies(path: str) -> bool:
    try:
        verify(path)
    except ValueError:
        return False
    return True


def prune(run_dir: str, keep: int, protect: str | None = None) -> None:
    """Delete the verified checkpoints older than the newest ``keep`` verified ones, and leftovers
    of interrupted writes and deletions.

    Only checkpoints that verify count towards ``keep`` and are ever deleted: a folder that does
    not verify may be the only copy of its epoch (bit rot, or a newer gpconv's format), so it is
    left in place; ``latest`` skips it with a warning. ``protect`` (the checkpoint ``save`` just
    wrote) is kept even when ``keep`` newer verified checkpoints exist.
    """
    # keep=0 would delete every checkpoint but ``protect``: refused, as RunConfig refuses it.
    keep = require_positive_int("keep", keep)
    root = os.path.join(run_dir, CHECKPOINTS)
    for name in os.listdir(root):
        interrupted_write = name.startswith(TMP_PREFIX) and not name.endswith(f"-{os.getpid()}")
        if interrupted_write or name.startswith(PRUNING_PREFIX):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    protect = os.path.abspath(protect) if protect else None
    verified = [
        path
        for _, path in epochs_on_disk(run_dir)
        # the one save just wrote and hashed is not read back
        if os.path.abspath(path) == protect or _verifies(path)
    ]
    for path in verified[: max(0, len(verified) - keep)]:
        if os.path.abspath(path) == protect:
            continue
        doomed = os.path.join(root, f"{PRUNING_PREFIX}{os.path.basename(path)}-{os.getpid()}")
        os.rename(path, doomed)
        fsync_folder(root)  # the rename is durable before any file in it goes
        shutil.rmtree(doomed, ignore_errors=True)
