"""``--device``: which torch device trains (``cpu``, ``cuda`` or ``cuda:N``), checked up front.

Only the torch backend takes a device: CuPy runs on its current device and TensorFlow places ops
itself (``CUDA_VISIBLE_DEVICES`` steers both). Under ``torchrun`` each process uses
``cuda:LOCAL_RANK``, so there ``--device`` may name the device type only.
"""

from __future__ import annotations

import re

DEVICE_SYNTAX = re.compile(r"cpu|cuda(:\d+)?")


def check_device(device: str | None, backend: str, world: int = 1) -> None:
    """Raise ``ValueError`` unless ``device`` (``None``: CUDA when available, else the CPU) can
    run ``backend`` in a group of ``world`` processes on this machine."""
    if device is None:
        return
    if backend != "torch":
        raise ValueError(
            f"Expected --device only with --backend torch (numpy runs on the CPU; cupy and "
            f"tensorflow pick their device themselves: use CUDA_VISIBLE_DEVICES), received "
            f"--device {device!r} with --backend {backend!r}"
        )
    if not DEVICE_SYNTAX.fullmatch(device):
        raise ValueError(f"Expected --device cpu, cuda or cuda:N, received {device!r}")
    if world > 1 and ":" in device:
        raise ValueError(
            f"Expected --device cpu or cuda under torchrun (each process uses cuda:LOCAL_RANK), "
            f"received {device!r}"
        )
    if device.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise ValueError(
                f"Expected --device naming one of the {count} CUDA device(s) torch sees, "
                f"received {device!r}"
            )
