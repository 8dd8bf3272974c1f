"""Parameter files on disk: safetensors headers read and checked before any tensor, paths that
must name regular files, and atomic writes. Nothing here unpickles (``.npz`` files: ``core.npz``).

``core.params`` builds ``save_params``/``load_params``/``read_metadata`` on these; ``write_atomic``
also serves the run, checkpoint and report files.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Mapping
from typing import Any, BinaryIO

# safetensors dtypes that NumPy has; safetensors.numpy fails on the others with a bare KeyError.
_NUMPY_SAFETENSORS_DTYPES = frozenset(
    ("F64", "F32", "F16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL")
)


def refuse_numpy_less_dtypes(path: str, header: Mapping[str, Any]) -> None:
    """``TypeError`` naming the tensors of ``header`` (of file ``path``) whose dtype NumPy lacks,
    such as ``BF16`` from a bfloat16 torch model."""
    odd = {
        k: v.get("dtype")
        for k, v in header.items()
        if k != "__metadata__"
        and isinstance(v, dict)
        and isinstance(v.get("dtype"), str)
        and v["dtype"] not in _NUMPY_SAFETENSORS_DTYPES
    }
    if odd:
        names = ", ".join(f"{k} ({d})" for k, d in list(odd.items())[:3])
        more = f" and {len(odd) - 3} more" if len(odd) > 3 else ""
        raise TypeError(
            f"Expected {path!r} to hold float16, float32 or float64 tensors, received "
            f"{len(odd)} of dtypes {sorted(set(map(str, odd.values())))} that NumPy cannot "
            f"represent: {names}{more}. Save float32 copies instead (with safetensors.torch: "
            "save_file({k: v.float() for k, v in tensors.items()}, path))"
        )


def header_metadata(path: str, header: Mapping[str, Any]) -> dict[str, str]:
    """The ``__metadata__`` of ``header`` (of file ``path``): ``ValueError`` unless it maps
    strings to strings, as the safetensors format says (and ``load_params`` enforces)."""
    meta = header.get("__metadata__")
    meta = {} if meta is None else meta  # null, as safetensors reads it: no metadata ([] is no map)
    if not isinstance(meta, dict):
        raise ValueError(
            f"{path!r} is not a valid safetensors file: its metadata is not a JSON object"
        )
    odd = {k: v for k, v in meta.items() if not isinstance(v, str)}
    if odd:
        k, v = next(iter(odd.items()))
        raise ValueError(
            f"{path!r} is not a valid safetensors file: its metadata values must be strings, "
            f"received {k}={v!r} ({type(v).__name__})"
        )
    return dict(meta)


def readable_file(path: str | os.PathLike) -> str:
    """``path`` as a string if it names a regular file (or a link to one), else
    ``FileNotFoundError``, ``IsADirectoryError`` or ``ValueError`` naming it. Checked before
    opening: opening a FIFO blocks until someone writes to it, and ``/dev/zero`` never ends."""
    path = fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"Expected a parameter file, received the folder {path!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No parameter file at {path!r}")
    if not os.path.isfile(path):
        raise ValueError(
            f"Expected a parameter file, received {path!r}, which is no regular file "
            "(a device, FIFO or socket)"
        )
    return path


def fspath(path: Any) -> str:
    """``path`` (a ``str`` or ``os.PathLike``) as a ``str``, else ``TypeError``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Expected path to be a str or os.PathLike, received {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str):  # a PathLike of bytes
        raise TypeError(f"Expected path to be a str or os.PathLike of str, received {path!r}")
    if not path:
        raise ValueError("Expected path to name a file, received ''")
    return path


# safetensors refuses longer headers (its MAX_HEADER_SIZE): refuse them before reading one.
_MAX_HEADER_BYTES = 100_000_000

# What to do with a file of another format, said after naming that format.
OUR_FORMATS_ONLY = (
    "gpconv reads parameters from safetensors and .npz files only (it never unpickles): write "
    "them with core.params.save_params(path, export_params(model)); Keras .weights.h5 and "
    ".keras files load with keras's model.load_weights"
)

# First bytes of the files most often taken for safetensors ones, to say what a file is instead
# (zip archives, .npz or not, never get here: core.npz reads or names them).
_FOREIGN_FORMATS = (
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (such as Keras's .weights.h5)"),
    (b"\x80", "a pickle (torch.save's legacy format)"),
)


def read_header(path: str, f: BinaryIO | None = None) -> dict[str, Any]:
    """The JSON header of the safetensors file ``path`` (tensor entries and ``__metadata__``);
    ``ValueError`` naming the file and the fault: no 8-byte length, a length past the file's end
    or safetensors' limit (read nothing that long), bytes that are no UTF-8 JSON object, or a
    key given twice. ``f``: ``path`` open in binary mode (or its bytes in a ``BytesIO``), read
    from its start, so that a caller reading the tensors from it too gets the same file's
    (``path`` may be replaced by then); ``f`` is left open."""
    if f is None:
        with open(path, "rb") as opened:
            return read_header(path, opened)
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    blob = f.read(8)
    try:
        if len(blob) < 8:
            raise ValueError(
                f"it holds {size} bytes, fewer than the 8 of a safetensors header length"
            )
        n = int.from_bytes(blob, "little")
        if n > _MAX_HEADER_BYTES:  # so no safetensors file: say what it is, if we can tell
            raise ValueError(
                _foreign_format(blob)
                or f"header length {n} exceeds safetensors' limit of {_MAX_HEADER_BYTES}"
            )
        if n > size - 8:
            raise ValueError(f"header length {n} does not fit the file ({size} bytes)")
        header = json.loads(f.read(n), object_pairs_hook=_no_duplicate_keys)
        if not isinstance(header, dict):
            raise ValueError("its header is not a JSON object")
        return header
    except ValueError as err:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path!r} is not a valid safetensors file: {err}") from err


def _foreign_format(blob: bytes) -> str:
    """What a file whose first 8 bytes are ``blob`` is instead of safetensors, with advice, or
    ``""``. Only for a length field past safetensors' limit: a real header length may begin with
    any byte (0x80, say), so a truncated safetensors file must not be called a pickle."""
    kind = next((what for magic, what in _FOREIGN_FORMATS if blob.startswith(magic)), "")
    if not kind:
        return ""
    return f"it is {kind}. {OUR_FORMATS_ONLY}"


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; ``ValueError`` for a key given twice, which parsers resolve
    differently (Python's json and safetensors keep the last; others the first or refuse)."""
    out = dict(pairs)
    if len(out) < len(pairs):
        twice = next(k for k, count in Counter(k for k, _ in pairs).items() if count > 1)
        raise ValueError(f"its header gives the key {twice!r} twice")
    return out


def writable_path(path: str | os.PathLike) -> str:
    """``path`` as a string, or ``IsADirectoryError``/``FileNotFoundError`` before anything is
    written (a temp file left beside a path that cannot be replaced would be litter)."""
    path = fspath(path)
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        raise IsADirectoryError(f"Expected path to name a file, received the folder {path!r}")
    # realpath: a symlink is written through (write_atomic), so its target's folder must exist.
    folder = os.path.dirname(os.path.realpath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"No folder {folder!r} to write {path!r} in")
    return path


def write_atomic(path: str, blob: bytes) -> None:
    """Write ``blob`` to ``path`` via a temp file, fsync and rename (then fsync the folder, which
    holds the rename): readers see the old file or the new one, never a torn one, and after a
    crash the new one is there. On failure (a full disk) the temp file is removed and ``path``
    is left as it was. A symlink at ``path`` is written through, as ``open(path, "wb")`` would:
    its target is replaced and the link kept. ``ValueError``, before anything is written, if
    ``path`` is a device, FIFO or socket (``/dev/stdout`` too): the rename would replace that
    node with a regular file."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        raise ValueError(
            f"Expected path to name a regular file, received {path!r}, which is none "
            "(a device, FIFO or socket): refusing to replace it"
        )
    if os.path.islink(path):  # os.replace would swap the link itself for a regular file
        path = _link_target(path)
    tmp = temp_name(path)
    f = open(tmp, "xb")  # x: never truncate a file that is not ours
    try:
        with f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        if os.path.isfile(path):  # keep a replaced file's permissions (a private file stays so)
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_folder(os.path.dirname(os.path.abspath(path)))


def temp_name(path: str) -> str:
    """A name beside ``path`` for a file to be renamed onto it: ``<path>.tmp-<pid>-<random>``.
    Unique per call, so that two threads (or two hosts sharing a file system) saving one path
    never write into each other's temporary file; a name per process let one thread's rename
    publish another's half-written bytes."""
    return f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def _link_target(link: str) -> str:
    """The file that the symlink ``link`` ends at (which may not exist yet); ``ValueError`` for a
    loop of links, where ``realpath`` stops at a link that ``os.replace`` would then replace."""
    target = os.path.realpath(link)
    if os.path.islink(target):
        raise ValueError(
            f"Expected path to be a file or a symlink that ends at one, received {link!r}, a "
            f"loop of symlinks (through {target!r})"
        )
    return target


def fsync_folder(folder: str) -> None:
    """Flush ``folder``'s entries (a rename into it) to disk; POSIX only, where folders open."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
