"""Bytes of tensor operands per PyTorch op: a machine-independent proxy for memory traffic.

Why this exists: a CPU train step of EfficientNet is largely memory-bound (batch norm, swish,
squeeze-excite, depthwise convs, and 1×1 convs with few channels per group). kEffNet cuts the
MACs 5×, but each kPointwise adds a second grouped conv, a BN, an interleave and a residual add,
so the bytes its ops move, not only its MACs, bound how much faster a step can be.
``benchmarks/bytes_torch_train.py`` counts both models with this module.

What is counted: every ATen op dispatched while the counter is active (after autograd, so the
forward, the backward and the optimizer alike) adds the sizes of its tensor inputs and outputs
(a broadcast ``expand`` counts its stored elements only). Ops that move no data (views,
``empty``, resizes) add nothing. Each operand counts once per op (an in-place op's tensor
twice, read and written; an ``out=`` tensor once, written), which is what an unfused op
must at least read or write; it is not a hardware measurement (a conv re-reads its input from
cache, a small op may never leave it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# Ops that return storage they did not fill from their operands: no traffic to count. (Proper
# views are recognised by ``OpOverload.is_view``; ``_unsafe_view`` is a view that autograd treats
# as a fresh tensor.)
NO_TRAFFIC = frozenset(
    {"_unsafe_view", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}
    | {"resize_", "set_", "lift_fresh"}
)


@dataclass
class OpTraffic:
    """Per ATen op name (``"convolution_backward"``, ``"add_"``, ...): calls and operand bytes."""

    calls: Counter = field(default_factory=Counter)
    bytes: Counter = field(default_factory=Counter)

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


def distinct_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements ``t`` addresses: a broadcast (stride-0) axis counts once."""
    n = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        n *= size if stride else min(size, 1)
    return n * t.element_size()


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _operand_bytes(args: Any, kwargs: dict, out: Any) -> int:
    """Inputs and outputs; an ``out=`` tensor, which the op returns, only as written. (An
    in-place op's ``self`` counts twice: it is read and written.)"""
    written = _tensors(out)
    ids = {id(t) for t in written}
    read = _tensors(args) + [t for t in _tensors(kwargs) if id(t) not in ids]
    return sum(distinct_bytes(t) for t in read + written)


class CountOperandBytes(TorchDispatchMode):
    """``with CountOperandBytes() as c: ...`` then ``c.traffic``: calls and bytes per op name."""

    def __init__(self) -> None:
        super().__init__()
        self.traffic = OpTraffic()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if not func.is_view and name not in NO_TRAFFIC:
            self.traffic.calls[name] += 1
            self.traffic.bytes[name] += _operand_bytes(args, kwargs or {}, out)
        return out


def train_step_traffic(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float = 0.01
) -> OpTraffic:
    """Operand bytes of one steady-state train step: forward, cross-entropy, backward and an SGD
    update with momentum 0.9 (the step ``benchmarks/bench_torch_train.py`` times). A first,
    uncounted step creates the momentum buffers.

    Shapes: x ``(N, C, H, W)`` in the memory format the model expects; y ``(N,)`` class ids."""
    if x.dim() != 4 or y.shape != (x.shape[0],):
        raise ValueError(
            f"Expected x of shape (N, C, H, W) and y of shape (N,), received "
            f"x.shape={tuple(x.shape)}, y.shape={tuple(y.shape)}"
        )
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    with CountOperandBytes() as counter:
        step()
    return counter.traffic
