"""``gpconv.train.outlock``: the lock on a run folder, its pid file and what a refusal says."""

from __future__ import annotations

import os
import sys
import types

import pytest

from gpconv.train import outlock
from gpconv.train.outlock import LOCK_NAME, OutLock, in_use_message

posix_only = pytest.mark.skipif(
    sys.platform == "win32", reason="folders are locked with fcntl (POSIX)"
)


@posix_only
def test_a_lock_file_removed_while_locking_is_locked_again_at_its_path(tmp_path, monkeypatch):
    """The holder unlinks the lock file before unlocking it, so the file ``acquire`` opened
    may be gone by the time its flock succeeds. A lock on that unlinked file excludes nobody:
    the next run creates a new file at the path and locks that too. ``acquire`` must notice
    and lock the file at the path."""
    real = outlock.fcntl
    unlinked = []

    def flock(fd: int, op: int) -> None:
        if not unlinked:  # the previous holder's release, between our open and our flock
            os.unlink(tmp_path / LOCK_NAME)
            unlinked.append(True)
        real.flock(fd, op)

    fake = types.SimpleNamespace(
        flock=flock,
        LOCK_EX=real.LOCK_EX,
        LOCK_NB=real.LOCK_NB,
        LOCK_SH=real.LOCK_SH,
        LOCK_UN=real.LOCK_UN,
    )
    monkeypatch.setattr(outlock, "fcntl", fake)
    lock = OutLock.acquire(str(tmp_path))
    monkeypatch.undo()
    try:
        assert unlinked
        # Another process looking at the folder now finds it held, by us.
        assert OutLock.holder(str(tmp_path)) == str(os.getpid())
    finally:
        lock.release()


@posix_only
def test_a_leftover_lock_file_is_overwritten_with_this_pid_only(tmp_path):
    """A killed run leaves its lock file (with its pid) behind; the next run's pid replaces
    it entirely, or a busy-folder message would name a mix of both pids."""
    (tmp_path / LOCK_NAME).write_text("123456789012345\n")
    lock = OutLock.acquire(str(tmp_path))
    try:
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        assert OutLock.holder(str(tmp_path)) == str(os.getpid())
    finally:
        lock.release()


def test_in_use_message_names_the_pid_only_when_known():
    """An unreadable lock file gives holder "": the message then names no pid at all rather
    than an empty "(pid )"."""
    assert in_use_message("/r", "42") == (
        "--out /r is in use by another gpconv train (pid 42); "
        "wait for it to finish or choose another --out"
    )
    assert in_use_message("/r", "") == (
        "--out /r is in use by another gpconv train; wait for it to finish or choose another --out"
    )


@posix_only
def test_acquiring_a_held_folder_names_the_holders_pid(tmp_path):
    """``check_not_in_use`` looks first, but a run that takes the folder after that look is
    met by ``acquire`` itself: its refusal names the holder's pid too, and leaves the holder's
    lock file in place."""
    lock = OutLock.acquire(str(tmp_path / "run"))  # a second open file: flock refuses it too
    try:
        with pytest.raises(outlock.FolderInUse) as err:
            OutLock.acquire(str(tmp_path / "run"))
        assert str(err.value) == in_use_message(str(tmp_path / "run"), str(os.getpid()))
        assert (tmp_path / "run" / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()


@posix_only
def test_release_removes_the_lock_file_before_unlocking_it(tmp_path, monkeypatch):
    """The order acquire's retry loop relies on: the file is unlinked while still locked, so a
    run that locks the old file after the unlock finds it gone from the path and locks again.
    Unlocked first, another run could lock the file at the path that release then deletes."""
    lock = OutLock.acquire(str(tmp_path))
    fd, seen = lock._fd, []
    real_close = os.close

    def close(n):
        if n == fd:
            seen.append(os.path.exists(tmp_path / LOCK_NAME))
        real_close(n)

    monkeypatch.setattr(os, "close", close)
    lock.release()
    monkeypatch.undo()
    assert seen == [False], "the lock file was still at its path when its fd was closed"


@posix_only
def test_a_second_release_closes_nothing(tmp_path):
    """release is idempotent: the second call must not close the fd number again (by then the
    process may have reused it for another file)."""
    lock = OutLock.acquire(str(tmp_path / "run"))
    lock.release()
    other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT)  # likely reuses the fd number
    try:
        lock.release()
        os.fstat(other)  # still open
    finally:
        os.close(other)


@posix_only
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds in /proc/self/fd")
def test_a_refused_acquire_leaves_no_file_descriptor_open(tmp_path):
    """Every refused attempt (a busy folder) closes the lock file it opened: a caller retrying
    would otherwise run out of file descriptors."""
    lock = OutLock.acquire(str(tmp_path))
    try:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            with pytest.raises(outlock.FolderInUse):
                OutLock.acquire(str(tmp_path))
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        lock.release()
