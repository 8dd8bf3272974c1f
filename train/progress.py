"""Per-epoch progress: a tqdm bar on a terminal, plain lines when stdout is a file or pipe.

Both show running loss, accuracy, images/s and the time left in the epoch. Only the main process
reports (``enabled=False`` elsewhere).
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO


def is_terminal(stream: TextIO) -> bool:
    """A TTY with a known width (a pseudo-terminal of size 0x0 would hide the tqdm bar)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class EpochProgress:
    """Progress of one epoch of ``total`` steps. ``update`` after each step with the images it
    processed (globally) and the running loss/accuracy; ``close`` prints the epoch line."""

    def __init__(
        self,
        epoch: int,
        epochs: int,
        total: int,
        enabled: bool = True,
        stream: TextIO | None = None,
        lines: int = 10,
    ) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.total, self.done, self.images = total, 0, 0
        self.label = f"epoch {epoch + 1}/{epochs}"
        self.start = time.perf_counter()
        self.bar = None
        # Plain mode prints about `lines` lines per epoch rather than one per step.
        self.every = max(1, total // lines)
        if enabled and is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=self.label,
                unit="step",
                file=self.stream,
                dynamic_ncols=True,
                leave=True,
            )

    def rate(self) -> float:
        """Images per second so far this epoch."""
        return self.images / max(time.perf_counter() - self.start, 1e-9)

    def update(self, images: int, loss: float, acc: float) -> None:
        self.done += 1
        self.images += images
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"loss {loss:.4f} acc {acc:.4f} {self.rate():.1f} img/s", refresh=False
            )
            self.bar.update(1)
        elif self.done % self.every == 0 or self.done == self.total:
            elapsed = time.perf_counter() - self.start
            eta = elapsed / self.done * (self.total - self.done)
            print(
                f"{self.label} step {self.done}/{self.total} loss {loss:.4f} acc {acc:.4f} "
                f"{self.rate():.1f} img/s eta {_clock(eta)}",
                file=self.stream,
                flush=True,
            )

    def close(self, message: str) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.enabled:
            print(f"{self.label} {message}", file=self.stream, flush=True)
