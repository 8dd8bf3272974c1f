"""PyTorch training steps: the torch backend's ``nn.Module`` with ``torch.optim``, optionally
wrapped in ``DistributedDataParallel``.

Batches arrive channels-last ``(B, H, W, 3)``; ``permute(0, 3, 1, 2)`` gives the NCHW tensor the
module expects with channels_last memory, without a copy. Under DDP every process holds a
replica, gradients are averaged over processes (so the update equals a one-process step on the
global batch) and, by default, batch norm uses *global* batch statistics (``torch_syncbn``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ... import backends
from ...core.arch import Architecture
from ...core.params import init_params
from ..distributed import Dist
from ..sampling import STREAM_DROPOUT, derived_seed
from .base import OptimConfig, format_device


def make_optimizer(params: Any, cfg: OptimConfig) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` (momentum 0.9) or ``Adam`` with Keras's epsilon."""
    if cfg.kind == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def torch_device_label(device: torch.device) -> str:
    """``"cpu"`` or ``"cuda:<index> <GPU name>"``."""
    if device.type != "cuda":
        return format_device(device.type)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return format_device("cuda", index, torch.cuda.get_device_name(index))


def default_device(dist: Dist, device: str | None = None) -> torch.device:
    """The process group's device under DDP (``train.distributed`` placed each process, on the
    device type asked for), else ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``; checked by
    ``train.device.check_device``), else CUDA when available, else the CPU."""
    group_device = getattr(dist, "device", None)
    if group_device is not None:
        return group_device
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TorchFramework:
    """``gpconv.backends.get("torch").build(arch)`` trained with ``torch.optim``.

    ``sync_bn`` (DDP only): normalise with statistics over the global batch, which makes an
    N-process run match a one-process run with the same global batch. ``device``: default
    CUDA when available (the process group's under DDP), else the CPU. ``compile_step``: the
    train step's forward and backward run through ``torch.compile`` (default mode, static
    shapes: the first step compiles, and a batch of a new shape compiles again); the optimiser
    update and ``predict`` stay eager.
    """

    name = "torch"

    def __init__(
        self,
        arch: Architecture,
        optim: OptimConfig,
        seed: int,
        dist: Dist,
        sync_bn: bool = True,
        device: str | None = None,
        compile_step: bool = False,
    ) -> None:
        self.arch, self.dist = arch, dist
        self.backend = backends.get("torch")
        self.device = default_device(dist, device)
        self.device_label = torch_device_label(self.device)
        net = self.backend.build(arch)
        self.backend.load_params(net, init_params(arch, seed))
        self.net = net.to(self.device)
        self.model: torch.nn.Module = self.net
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            if sync_bn:
                from .torch_syncbn import convert_sync_batchnorm

                convert_sync_batchnorm(self.net)
            if self.net.uses_channels_last(self.device):
                # Gradients come back channels_last; DDP's buckets follow the parameters' strides.
                self.net.to(memory_format=torch.channels_last)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        if compile_step:
            # Static shapes: after a second input shape dynamo would otherwise retrace the model
            # with symbolic sizes, which inductor 2.13 failed to lower ("cannot determine truth
            # value of Relational"). Training sees one batch shape anyway.
            self.model = torch.compile(self.model, dynamic=False)
        self.opt = make_optimizer(self.net.parameters(), optim)

    def _images(self, x: np.ndarray) -> torch.Tensor:
        return (
            torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            .to(self.device)
            .permute(0, 3, 1, 2)
        )

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def begin_epoch(self, seed: int, epoch: int) -> None:
        # Dropout / drop-connect draw from torch's global RNG: seed it per (seed, epoch, rank).
        torch.manual_seed(derived_seed(seed, epoch, STREAM_DROPOUT, self.dist.rank))

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        self.model.train()
        logits = self.model(self._images(x))
        loss = F.cross_entropy(logits, torch.from_numpy(y).to(self.device))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item(), logits.detach().cpu().numpy()

    def begin_evaluation(self) -> None:
        """Every process takes rank 0's BN moving statistics. DDP broadcasts them at the start
        of each training forward, but each replica then updates its own from its shard; without
        ``--sync-bn`` those differ, and the test figures would mix models other than the one
        saved. (With it they agree up to rounding; broadcasting costs a few kB.)"""
        self.dist.broadcast_tensors_(list(self.net.buffers()))

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.net.eval()
        with torch.inference_mode():
            return self.net(self._images(x)).cpu().numpy()

    def export_params(self) -> dict[str, np.ndarray]:
        return self.backend.export_params(self.net)

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        self.backend.load_params(self.net, params)

    def optimizer_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``state/<param index>/<slot>`` arrays (momentum buffers, Adam moments and steps);
        the param groups (hyper-parameters) and non-tensor slots as JSON."""
        sd = self.opt.state_dict()
        arrays, scalars = {}, {}
        for idx, slots in sd["state"].items():
            for key, value in slots.items():
                if torch.is_tensor(value):  # a copy: .numpy() of a CPU tensor shares its memory
                    arrays[f"state/{idx}/{key}"] = value.detach().cpu().numpy().copy()
                else:
                    scalars[f"{idx}/{key}"] = value
        return arrays, {"param_groups": sd["param_groups"], "scalars": scalars}

    def load_optimizer_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        state: dict[int, dict[str, Any]] = {}
        for name, value in arrays.items():
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = torch.from_numpy(np.array(value))
        for name, value in meta.get("scalars", {}).items():
            idx, key = name.split("/", 1)
            state.setdefault(int(idx), {})[key] = value
        self.opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
