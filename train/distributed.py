"""Process-group context for multi-process training (``torchrun``), and its one-process default.

``torchrun --nproc-per-node N -m gpconv.cli train --backend torch ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT``; ``from_env`` then joins the process group
(NCCL when CUDA is available, gloo on CPU). The loop only needs what ``Dist`` offers: who it is,
whether it writes files (rank 0 only), a sum over processes and a broadcast from rank 0.

``TorchDist`` keeps Python references to the tensors of its latest collective, and ``close``
drops them only after torch has dropped its own. gloo's worker thread lets go of a finished
collective's tensors a moment after the caller resumes (later still when a barrier's work
references it); once DDP or a functional collective (the synchronised batch norm) has used a gloo
group, ``destroy_process_group`` leaves that thread running (torch 2.13). If Python's reference
was already gone, the worker needs the GIL to free the tensor's Python object; in a process
that has begun to exit, that aborts it ("terminate called without an active exception",
SIGABRT; gdb: ``take_gil`` from ``~AsyncAllreduceWork`` in ``ProcessGroupGloo::runLoop``). A
two-process script that used DDP and a functional collective, then ``allreduce_sum`` three times
and ``close``, aborted in 8 of 60 runs without this, in 0 of 120 with it.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

# How long ``TorchDist.close`` waits for torch to drop the last collective's tensors (it takes
# milliseconds; the bound is for a machine so loaded that gloo's worker is not scheduled).
RELEASE_WAIT_S = 30.0


@dataclass
class Dist:
    """A single process: rank 0 of 1. ``TorchDist`` overrides the collective operations."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and draws progress bars."""
        return self.rank == 0

    def allreduce_sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum of ``values`` over all processes (float64)."""
        return np.asarray(values, dtype=np.float64)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process (a JSON-able object)."""
        return obj

    def broadcast_tensors_(self, tensors: list[Any]) -> None:
        """Overwrite each of ``tensors`` (framework tensors) with rank 0's, in place."""

    def close(self) -> None:
        """Leave the process group."""


class TorchDist(Dist):
    """``torch.distributed`` with gloo (CPU) or NCCL (CUDA)."""

    def __init__(
        self, rank: int, world: int, local_rank: int, device_type: str | None = None
    ) -> None:
        """``device_type``: ``"cpu"``, ``"cuda"`` (``cuda:local_rank``), or ``None`` for CUDA when
        available, else the CPU."""
        import torch
        import torch.distributed as td

        super().__init__(rank, world, local_rank)
        if device_type is None:
            device_type = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(f"cuda:{local_rank}" if device_type == "cuda" else "cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if not td.is_initialized():
            td.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        # The latest collective's tensors, referenced from Python until ``close`` (docstring).
        self._held: tuple[Any, ...] = ()

    def allreduce_sum(self, values: np.ndarray) -> np.ndarray:
        import torch
        import torch.distributed as td

        t = torch.as_tensor(np.asarray(values, dtype=np.float64), device=self.device)
        td.all_reduce(t)
        self._held = (t,)
        return t.cpu().numpy()

    def broadcast(self, obj: Any) -> Any:
        # JSON bytes in a uint8 tensor rather than broadcast_object_list, which pickles.
        import torch
        import torch.distributed as td

        data = json.dumps(obj).encode() if self.is_main else b""
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        td.broadcast(size, src=0)
        buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.is_main:
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        td.broadcast(buf, src=0)
        self._held = (size, buf)
        return json.loads(bytes(buf.cpu().numpy()).decode())

    def broadcast_tensors_(self, tensors: list[Any]) -> None:
        """Overwrite each of ``tensors`` (torch tensors on ``self.device``) with rank 0's, in
        place. One collective per dtype, on a flat copy that ``close`` waits for torch to drop
        (module docstring): broadcasting the tensors themselves left the worker thread holding
        a model buffer, and a replica aborted at exit in 6 of 20 runs."""
        import torch
        import torch.distributed as td

        held = []
        for dtype in dict.fromkeys(t.dtype for t in tensors):
            group = [t for t in tensors if t.dtype == dtype]
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            td.broadcast(flat, src=0)
            with torch.no_grad():
                for t, part in zip(group, flat.split([t.numel() for t in group])):
                    t.copy_(part.view_as(t))
            held.append(flat)
        self._held = tuple(held)

    def close(self) -> None:
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()
        if not released_by_torch(self._held, RELEASE_WAIT_S):
            warnings.warn(
                f"torch still held the last collective's tensors after {RELEASE_WAIT_S:g} s; "
                "this process may abort as it exits ('terminate called without an active "
                "exception')",
                RuntimeWarning,
                stacklevel=2,
            )
        self._held = ()


def released_by_torch(tensors: tuple[Any, ...], timeout_s: float = RELEASE_WAIT_S) -> bool:
    """Wait (at most ``timeout_s``) until Python holds the only reference to each of ``tensors``,
    i.e. torch's collectives have dropped theirs; whether they did."""
    deadline = time.monotonic() + timeout_s
    while any(t._use_count() > 1 for t in tensors):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)
    return True


def mismatches(dist: Dist, mine: dict[str, Any]) -> tuple[int, list[str]]:
    """Compare each process's ``mine`` (JSON-able) with rank 0's: ``(how many processes differ,
    this process's differences)``. Every process takes part and gets the same count, so all can
    stop together (one that went on alone would wait forever at its next collective)."""
    if dist.world == 1:
        return 0, []
    mine = json.loads(json.dumps(mine))  # as the broadcast returns rank 0's: lists, not tuples
    main = dist.broadcast(mine if dist.is_main else None)
    diff = [
        f"{k}: rank 0 has {main.get(k)!r}, rank {dist.rank} has {mine.get(k)!r}"
        for k in sorted(main.keys() | mine.keys())
        if main.get(k) != mine.get(k)
    ]
    return int(dist.allreduce_sum(np.array([float(bool(diff))]))[0]), diff


def _env_int(name: str, default: int | None, low: int) -> int:
    raw = os.environ.get(name)
    if raw is None and default is not None:
        return default
    if raw is None:
        raise ValueError(
            f"Expected the environment variable {name} (torchrun sets it) for "
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')}, received none"
        )
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < low:
        raise ValueError(
            f"Expected the environment variable {name} to be an integer >= {low}, received {raw!r}"
        )
    return value


def world_size_from_env() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when absent); ``ValueError`` unless a positive int."""
    return _env_int("WORLD_SIZE", 1, low=1)


def from_env(device_type: str | None = None) -> Dist:
    """``TorchDist`` (on ``device_type``, see there) when launched by torchrun with
    ``WORLD_SIZE > 1``, else ``Dist()``. ``ValueError`` for a ``WORLD_SIZE``, ``RANK`` or
    ``LOCAL_RANK`` that is no integer in its range (a missing ``RANK`` included)."""
    world = world_size_from_env()
    if world == 1:
        return Dist()
    rank = _env_int("RANK", None, low=0)
    if rank >= world:
        raise ValueError(
            f"Expected the environment variable RANK below WORLD_SIZE={world}, received {rank}"
        )
    return TorchDist(rank, world, _env_int("LOCAL_RANK", 0, low=0), device_type)
