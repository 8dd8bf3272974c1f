"""NumPy ``.npz`` parameter files, read without unpickling.

An ``.npz`` is a zip archive of ``<name>.npy`` members (``np.savez``; names may hold ``/``, so
canonical names such as ``stem_conv/kernel`` map one to one). ``np.load(allow_pickle=False)``
reads it safely, but would also open any zip and hand back raw bytes for a member that is no
``.npy``, so a torch ``.pt`` or Keras ``.keras`` archive is refused by its members first. The
string metadata that safetensors keeps in its header lives here in one extra member,
``__metadata__.npy``: a 0-d unicode array holding a JSON object (no pickle needed to read it).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Mapping

import numpy as np

from .files import OUR_FORMATS_ONLY

METADATA_KEY = "__metadata__"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive's end record


def is_zip(path: str) -> bool:
    """Whether the file ``path`` starts like a zip archive (an ``.npz``, or another zip)."""
    with open(path, "rb") as f:
        return f.read(4) in _ZIP_MAGIC


def npz_bytes(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None) -> bytes:
    """``arrays`` (and ``metadata``, if any) as the bytes of an uncompressed ``.npz``, as
    ``np.savez`` writes it. Written member by member rather than by ``np.savez(**arrays)``, whose
    own keywords (``file``, ``allow_pickle``) would collide with parameters of those names."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        members = dict(arrays)
        if metadata:
            members[METADATA_KEY] = np.asarray(json.dumps(dict(metadata)))
        for name, array in members.items():
            _require_zip_name(name)
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return buffer.getvalue()


def read_npz(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(arrays, metadata)`` of the ``.npz`` file ``path``; ``ValueError`` naming the file and
    the fault for a zip that is no ``.npz`` (saying what it likely is), a name given twice, a
    member NumPy cannot read without unpickling (object arrays) or at all, a non-numeric array,
    or metadata that is no JSON object of strings."""
    arrays = _read_members(path, lambda key: True)
    metadata = _metadata(path, arrays.pop(METADATA_KEY, None))
    odd = {k: a.dtype for k, a in arrays.items() if a.dtype.kind not in "biuf"}
    if odd:
        key, dtype = next(iter(odd.items()))
        raise ValueError(
            f"{path!r}: expected numeric arrays in the .npz, received {key!r} of dtype {dtype}"
            + (f" and {len(odd) - 1} more" if len(odd) > 1 else "")
        )
    return arrays, metadata


def read_npz_metadata(path: str) -> dict[str, str]:
    """The metadata of the ``.npz`` file ``path`` (``{}`` if none), its other arrays unread."""
    entry = _read_members(path, lambda key: key == METADATA_KEY).get(METADATA_KEY)
    return _metadata(path, entry)


def _read_members(path: str, wanted: Callable[[str], bool]) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` ``path`` whose names pass ``wanted``, after checking that every
    member is a ``.npy`` (``_check_members``); read errors as ``ValueError`` naming the member."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{path!r} is not a valid .npz file: {err}") from err
    _check_members(path, names)
    arrays = {}
    with np.load(path, allow_pickle=False) as npz:
        for key in filter(wanted, npz.files):
            try:
                # By the member's own name: NpzFile looks a key up among raw member names
                # first, so npz["w.npy"] would read the member of parameter "w", not "w.npy".
                array = npz[f"{key}.npy"]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
                raise ValueError(f"{path!r}: cannot read array {key!r} of the .npz: {err}") from err
            if not isinstance(array, np.ndarray):  # NpzFile hands a non-.npy member over as bytes
                raise ValueError(
                    f"{path!r}: cannot read array {key!r} of the .npz: its member {key}.npy "
                    "holds no .npy data"
                )
            arrays[key] = array
    return arrays


def _require_zip_name(name: str) -> None:
    """``ValueError`` for a parameter name that a zip cannot hold: ``zipfile`` cuts a name at its
    first NUL, so the file would be written but refused (or misread) on load."""
    if "\x00" in name:
        raise ValueError(f"Expected .npz parameter names without NUL characters, received {name!r}")


def _check_members(path: str, names: list[str]) -> None:
    """``ValueError`` unless every member of the zip ``path`` is a ``.npy``, each name once."""
    foreign = [n for n in names if not n.endswith(".npy")]
    if foreign:
        kind = (
            "torch.save's .pt/.pth"
            if any(n.endswith("data.pkl") for n in foreign)
            else "a Keras .keras file"
            if "config.json" in foreign
            else "another zip archive"
        )
        raise ValueError(
            f"{path!r} is a zip archive but no NumPy .npz (it holds {foreign[0]!r}): it looks "
            f"like {kind}. {OUR_FORMATS_ONLY}"
        )
    twice = {n for n in names if names.count(n) > 1}
    if twice:
        raise ValueError(f"{path!r} is not a valid .npz file: it holds {sorted(twice)[0]!r} twice")


def _metadata(path: str, entry: np.ndarray | None) -> dict[str, str]:
    """The metadata stored in ``entry`` (the ``__metadata__`` array of ``path``), ``{}`` if none."""
    if entry is None:
        return {}
    try:
        if entry.shape != () or entry.dtype.kind != "U":
            raise ValueError(f"expected a 0-d string array, received shape {entry.shape}")
        meta = json.loads(str(entry))
    except ValueError as err:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{path!r}: its {METADATA_KEY} entry is no JSON metadata: {err}") from err
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError(
            f"{path!r}: its {METADATA_KEY} entry must be a JSON object of strings, received "
            f"{str(entry)[:80]!r}"
        )
    return meta
