"""``gpconv.train.progress``: progress lines, their step counts, speed and time left."""

from __future__ import annotations

import io
import os
import re
import select
import sys
import types

import pytest

from gpconv.train import progress
from gpconv.train.progress import EpochProgress


@pytest.fixture
def clock(monkeypatch):
    """progress's time.perf_counter, advanced by hand (no sleeps, no timing asserts)."""
    now = [100.0]
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    return now


def test_clock_is_hours_minutes_seconds_and_never_negative():
    assert progress._clock(0) == "0:00:00"
    assert progress._clock(59.6) == "0:01:00"  # rounded to the second
    assert progress._clock(3725) == "1:02:05"  # minutes wrap at 60 into hours
    assert progress._clock(-3) == "0:00:00"  # a clock that stepped back shows no "-1:59:57"


def test_plain_lines_every_tenth_step_and_the_last_with_speed_and_eta(clock):
    """On a file or pipe: a line about every total/10 steps and always one for the last step,
    with the images/s so far and the time left for the epoch's remaining steps."""
    out = io.StringIO()
    bar = EpochProgress(1, 3, total=25, stream=out)  # the second of 3 epochs
    for _ in range(25):
        clock[0] += 2.0  # 2 s per step of 16 images
        bar.update(16, loss=0.5, acc=0.25)
    lines = out.getvalue().splitlines()
    steps = [int(line.split()[3].split("/")[0]) for line in lines]
    assert steps == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25]
    assert lines[0] == "epoch 2/3 step 2/25 loss 0.5000 acc 0.2500 8.0 img/s eta 0:00:46"
    assert lines[-1].endswith("eta 0:00:00")
    bar.close("done")
    assert out.getvalue().splitlines()[-1] == "epoch 2/3 done"


def test_an_epoch_shorter_than_its_line_count_prints_every_step(clock):
    out = io.StringIO()
    bar = EpochProgress(0, 1, total=3, stream=out)
    for _ in range(3):
        clock[0] += 1.0
        bar.update(4, loss=1.0, acc=0.0)
    assert [line.split()[3] for line in out.getvalue().splitlines()] == ["1/3", "2/3", "3/3"]


def test_disabled_progress_prints_nothing_but_still_counts(clock):
    """Processes other than the main one (and --quiet) report nothing, not even the epoch
    line; they still count steps and images."""
    out = io.StringIO()
    bar = EpochProgress(0, 2, total=4, enabled=False, stream=out)
    for _ in range(4):
        clock[0] += 1.0
        bar.update(8, loss=1.0, acc=0.0)
    bar.close("done")
    assert out.getvalue() == ""
    assert (bar.done, bar.images) == (4, 32) and bar.rate() == 8.0


def test_is_terminal_only_for_a_tty_with_a_width():
    """A closed stream (ValueError from isatty), a file, or a pseudo-terminal of 0 columns
    (the tqdm bar would be invisible) is no terminal."""
    closed = io.StringIO()
    closed.close()
    assert not progress.is_terminal(closed)
    assert not progress.is_terminal(io.StringIO())
    if sys.platform == "win32":
        return
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    try:
        tty = os.fdopen(slave, "w")
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 0, 0, 0))
        assert not progress.is_terminal(tty)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        assert progress.is_terminal(tty)
        tty.close()
    finally:
        os.close(master)


def test_a_clock_that_has_not_moved_gives_no_division_by_zero(clock):
    """A coarse clock can report no time between the start and a step: the rate is finite and
    the step's line is printed, no ZeroDivisionError ends the epoch."""
    out = io.StringIO()
    bar = EpochProgress(0, 1, total=2, stream=out)
    assert bar.rate() == 0.0
    bar.update(16, loss=1.0, acc=0.5)
    assert out.getvalue().startswith("epoch 1/1 step 1/2 loss 1.0000 acc 0.5000 ")


def _terminal_run(enabled: bool, steps: int, images: int) -> str:
    """What an EpochProgress of ``steps`` steps prints on an 80-column pseudo-terminal."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    chunks = []
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        tty = os.fdopen(slave, "w")
        bar = EpochProgress(0, 1, total=steps, enabled=enabled, stream=tty)
        for _ in range(steps):
            bar.update(images, loss=0.5, acc=0.25)
        bar.close("done")
        tty.flush()
        while select.select([master], [], [], 0.2)[0]:
            data = os.read(master, 65536)
            if not data:
                break
            chunks.append(data)
        tty.close()
    finally:
        os.close(master)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_on_a_terminal_the_bar_counts_steps_and_is_closed_before_the_epoch_line():
    """On a TTY: the tqdm bar advances one step per update (5/5 at the end, not the images),
    and is closed before the epoch line, which starts a line of its own."""
    text = _terminal_run(enabled=True, steps=5, images=16)
    segments = [s for s in re.split(r"[\r\n]+", text) if s.strip()]
    assert segments[-1] == "epoch 1/1 done", segments[-3:]
    assert "5/5" in segments[-2] and "epoch 1/1" in segments[-2], segments[-3:]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_disabled_progress_shows_no_bar_on_a_terminal_either():
    """Processes other than the main one share the main one's terminal: they draw no bar."""
    assert _terminal_run(enabled=False, steps=3, images=16) == ""
