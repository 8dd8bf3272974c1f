"""Per-framework model + optimiser behind the shared loop; ``create`` picks one by backend name."""

from __future__ import annotations

from typing import Any

from ...core.arch import Architecture
from ...perf.machine import cpu_count
from ..distributed import Dist
from .base import Framework, OptimConfig, softmax_cross_entropy

FRAMEWORKS = ("numpy", "torch", "tensorflow", "cupy")
# Frameworks with a graph compiler for the train step (torch.compile; XLA via jit_compile).
COMPILABLE = ("torch", "tensorflow")


def create(
    backend: str,
    arch: Architecture,
    optim: OptimConfig,
    seed: int = 0,
    dist: Dist | None = None,
    compile_step: bool = False,
    **options: Any,
) -> Framework:
    """A ``Framework`` for ``backend`` with a fresh model (``core.params.init_params(arch, seed)``:
    the same initial weights in every framework). ``compile_step``: run the train step through
    the framework's compiler (only for ``COMPILABLE`` backends). ``options`` go to the framework
    (torch: ``sync_bn``, ``device``)."""
    dist = dist or Dist()
    if compile_step and backend not in COMPILABLE:
        raise ValueError(
            f"Expected a backend with a compiler {COMPILABLE} for compile_step=True, "
            f"received backend={backend!r}"
        )
    if backend == "numpy":
        from .numpy_fw import NumpyFramework

        return NumpyFramework(arch, optim, seed, dist)
    if backend == "cupy":
        from .numpy_fw import CupyFramework

        return CupyFramework(arch, optim, seed, dist)
    if backend == "torch":
        from .torch_fw import TorchFramework

        return TorchFramework(arch, optim, seed, dist, compile_step=compile_step, **options)
    if backend == "tensorflow":
        from .tensorflow_fw import TensorflowFramework

        return TensorflowFramework(arch, optim, seed, dist, compile_step=compile_step)
    raise ValueError(f"Expected backend in {FRAMEWORKS}, received backend={backend!r}")


def check_threads(threads: int | None) -> None:
    """``ValueError`` naming ``--threads`` unless ``threads`` is None (the framework's default)
    or 1 .. the CPUs this process may use (``perf.machine.cpu_count``). More threads than CPUs
    only fight for them: with ``--threads 4096`` on 2 CPUs, a one-step torch run had not
    finished after 2 minutes (16 s in all with 1 thread)."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"Expected --threads >= 1, received {threads}")
    cpus = cpu_count()
    if threads > cpus:
        raise ValueError(
            f"Expected --threads <= {cpus} (the CPUs this process may use), received {threads}"
        )


def set_threads(backend: str, threads: int | None) -> None:
    """Limit the framework's CPU threads (``None``: its default). On a CPU shared with other
    jobs one thread per process can beat two: idle-spinning thread pools fight for the cores."""
    if threads is None:
        return
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
    elif backend == "tensorflow":
        import tensorflow as tf

        try:  # only possible before TensorFlow's runtime starts
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError as err:
            raise ValueError(f"cannot set TensorFlow threads now: {err}") from err
    elif backend in ("numpy", "cupy"):  # the reference's BLAS (for cupy: its host-side work)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError as err:
            raise ValueError(
                "cannot limit NumPy's BLAS threads without threadpoolctl: pip install threadpoolctl"
            ) from err
        threadpool_limits(threads)


__all__ = [
    "COMPILABLE",
    "FRAMEWORKS",
    "Framework",
    "OptimConfig",
    "check_threads",
    "create",
    "set_threads",
    "softmax_cross_entropy",
]
