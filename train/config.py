"""A training run's configuration: ``RunConfig`` (everything ``gpconv train`` takes) and its
checks, the arguments that make up a run's identity (``IDENTITY``), and ``ConfigError``, the error
for bad arguments or an unusable run folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, get_type_hints

import numpy as np

from .. import backends
from ..core._validate import require_bool, require_int, require_real
from ..core.arch import MIN_INPUT_SIZE, MODELS
from .data import absolute_spec
from .device import check_device
from .frameworks import COMPILABLE, FRAMEWORKS, OptimConfig, check_threads
from .loop import SCHEDULES

FLOAT32_MAX = float(np.finfo(np.float32).max)

DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3}
# Arguments that define a run: a resume must repeat them. --epochs may change (the lr schedule then
# follows the new length) but not below the epochs already completed (checked in train.run's
# train() once the checkpoint is read), and process count, progress display and checkpoint
# retention are free.
IDENTITY = (
    "model",
    "min_channels_per_group",
    "backend",
    "data",
    "image_size",
    "skip_stride",
    "batch_size",
    "lr",
    "optimizer",
    "schedule",
    "seed",
    "augment",
    "no_dropout",
    "limit",
    "compile_step",
)
# Identity fields added after runs were first written, with the value an older run.json implies.
IDENTITY_DEFAULTS = {"compile_step": False}


class ConfigError(ValueError):
    """Bad arguments or an unusable run folder, found before anything was written (exit 2)."""


@dataclass
class RunConfig:
    """Everything ``gpconv train`` takes (see ``cli/train.py`` for the meaning of each)."""

    backend: str
    model: str
    out: str
    min_channels_per_group: int = 16
    data: str = "digits"
    image_size: int = 32
    skip_stride: int = 3
    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None
    optimizer: str = "sgd"
    schedule: str = "cosine"
    seed: int = 0
    augment: bool = False
    resume: bool = False
    no_dropout: bool = False
    limit: int | None = None
    sync_bn: bool = True
    keep: int = 2
    progress: bool = True
    threads: int | None = None
    keep_freed_memory: bool = False  # gpconv.perf.allocator; `gpconv train` turns it on
    compile_step: bool = False
    device: str | None = None  # torch only; see train.device

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.optimizer, 0.05)

    def identity(self) -> dict[str, Any]:
        ident = {k: getattr(self, k) for k in IDENTITY}
        ident["data"] = absolute_spec(self.data)
        if not self.model.startswith("kefficientnet"):
            ident["min_channels_per_group"] = None  # meaningless for EfficientNet
        return ident

    def validate(self, world: int = 1) -> None:
        """Raise ``ConfigError`` for any argument outside its domain, ``TypeError`` for one of
        another type (which only a caller building a ``RunConfig`` in Python can give: the CLI
        parses every option to its type)."""
        # Checked first: augment="no" would be taken as True, epochs=2.5 fail inside the loop,
        # and epochs="3" fail the range checks below with "'<' not supported".
        # The types come from the field annotations, so a field added later is checked too.
        for name, hint in get_type_hints(type(self)).items():
            value = getattr(self, name)
            if hint is bool:
                require_bool(name, value)
            elif hint is int or (hint == int | None and value is not None):
                require_int(name, value)
        require_real("lr", self.lr)  # float | None, filled in by __post_init__
        if self.backend not in FRAMEWORKS:
            raise ConfigError(f"Expected --backend in {FRAMEWORKS}, received {self.backend!r}")
        if self.model not in MODELS:
            raise ConfigError(f"Expected --model in {sorted(MODELS)}, received {self.model!r}")
        for name, low in (
            ("epochs", 1),
            ("batch_size", 1),
            ("image_size", MIN_INPUT_SIZE),
            ("min_channels_per_group", 1),
            ("keep", 1),
            ("seed", 0),
        ):
            if getattr(self, name) < low:
                raise ConfigError(
                    f"Expected --{name.replace('_', '-')} >= {low}, received {getattr(self, name)}"
                )
        if self.skip_stride < -1:
            raise ConfigError(f"Expected --skip-stride >= -1, received {self.skip_stride}")
        if not (math.isfinite(self.lr) and 0 < self.lr <= FLOAT32_MAX):
            raise ConfigError(
                f"Expected --lr finite, > 0 and <= {FLOAT32_MAX:.4g} (float32's largest: torch "
                f"and TensorFlow apply it in float32), received {self.lr}"
            )
        try:
            check_threads(self.threads)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if self.compile_step and self.backend not in COMPILABLE:
            raise ConfigError(
                f"Expected --backend in {COMPILABLE} with --compile, received {self.backend!r}"
            )
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"Expected --limit >= 1, received {self.limit}")
        try:
            OptimConfig(self.optimizer, self.lr)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if self.schedule not in SCHEDULES:
            expected = " or ".join(SCHEDULES)
            raise ConfigError(f"Expected --schedule {expected}, received {self.schedule!r}")
        try:
            from .data import parse_spec

            parse_spec(self.data)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        adapter = backends.get(self.backend)
        if not adapter.is_available():
            raise ConfigError(f"backend {self.backend!r} is not installed: {adapter.install_hint}")
        try:
            check_device(self.device, self.backend, world)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if world > 1:
            if self.backend != "torch":
                raise ConfigError(
                    f"multi-process training (WORLD_SIZE={world}) needs --backend torch, "
                    f"received {self.backend!r}"
                )
            if self.batch_size % world:
                raise ConfigError(
                    f"--batch-size {self.batch_size} (global) must be divisible by the "
                    f"{world} processes"
                )
