"""An exclusive claim on a run folder, so two ``gpconv train`` processes never write one ``--out``.

Without it, two runs started on the same empty folder both pass the folder checks and the second
overwrites the first's ``run.json`` and checkpoints; two ``--resume`` runs interleave their
epochs. The claim is an advisory ``flock`` on ``<out>/.gpconv-train.lock``: the kernel drops it
when the process dies, even by SIGKILL, so a crashed run never leaves the folder locked. On
platforms without ``fcntl`` (Windows) folders are not locked.
"""

from __future__ import annotations

import errno
import os

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".gpconv-train.lock"


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock."""


class OutLock:
    """Holds ``<out>/.gpconv-train.lock`` from ``acquire`` until ``release``.

    ``acquire`` creates the folder when it is missing; ``release`` removes the lock file, and the
    folders ``acquire`` created if they are still empty, so a run that fails before writing
    anything leaves nothing behind.
    """

    def __init__(self, out: str, fd: int | None, created: list[str]) -> None:
        self.out, self._fd, self._created = out, fd, created
        self.path = os.path.join(out, LOCK_NAME)

    @classmethod
    def acquire(cls, out: str) -> OutLock:
        """Lock ``out`` (creating it); ``FolderInUse`` naming the holder's pid if another process
        holds it, ``OSError`` if the folder cannot be created or written."""
        created = _missing_folders(out)
        try:  # any failure, makedirs's own (a name too long for the last level), keeps no folder
            os.makedirs(out, exist_ok=True)
            if fcntl is None:  # pragma: no cover - Windows
                return cls(out, None, created)
            path = os.path.join(out, LOCK_NAME)
            # The holder unlinks the file before unlocking it, so a file we locked may already be
            # gone: lock again until the locked file is the one at the path.
            while True:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read_pid(fd)
                    os.close(fd)
                    raise FolderInUse(in_use_message(out, holder)) from None
                except BaseException:
                    os.close(fd)
                    raise
                if _same_file(fd, path):
                    break
                os.close(fd)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            _remove_empty(created)
            raise
        return cls(out, fd, created)

    @staticmethod
    def holder(out: str) -> str | None:
        """The pid (as text, "" if unreadable) of the process that holds ``out``'s lock, or None
        when none does. Only looks: creates nothing, and holds a shared lock for one call at
        most (a run starting on the folder at that instant would be told it is in use)."""
        if fcntl is None:  # pragma: no cover - Windows
            return None
        try:
            fd = os.open(os.path.join(out, LOCK_NAME), os.O_RDONLY)
        except OSError:  # no lock file (or no folder): no run holds it
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)  # a leftover of a killed run: free
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        """Unlock, remove the lock file and any still-empty folder ``acquire`` created."""
        if self._fd is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None
        _remove_empty(self._created)
        self._created = []


def in_use_message(out: str, holder: str) -> str:
    """What a second run on ``out`` is told; ``holder`` is the pid text ("" if unknown)."""
    return (
        f"--out {out} is in use by another gpconv train"
        + (f" (pid {holder})" if holder else "")
        + "; wait for it to finish or choose another --out"
    )


def _missing_folders(out: str) -> list[str]:
    """The folders ``os.makedirs(out)`` would create, deepest first."""
    missing = []
    path = os.path.abspath(out)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _remove_empty(folders: list[str]) -> None:
    for folder in folders:  # deepest first
        try:
            os.rmdir(folder)
        except OSError as err:
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST):  # the run wrote something: keep it
                return
            # else never made (makedirs failed at or below it: missing, name too long): go up


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
