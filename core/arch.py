"""EfficientNet and kEffNet as data: one block table, B0–B7 coefficients, and the layer list that
the reference network, every backend, the parameter counts and ``gpconv summary`` are built from.

An ``Architecture`` is ``stem -> blocks -> head``:

* ``StemSpec``: 3×3 conv (stride 2, or 1 with ``skip_stride_cnt >= 0``; Keras ``correct_pad``)
  -> BN -> swish.
* ``MBConvSpec``: [expand kPointwise] -> depthwise k×k -> BN -> swish -> SE (avgpool -> reduce
  kPointwise -> expand kPointwise -> scale) -> project kPointwise -> [drop-connect + identity].
* ``HeadSpec``: top kPointwise -> global average pool -> dropout -> dense (logits).

EfficientNet is the same table with every pointwise conv ungrouped (``groups == 1``); kEffNet picks
each conv's groups with ``group_count(cin, cout, min_channels_per_group)`` and drops the top
conv's activation. Canonical parameter names (Keras layouts) are ``<layer>/<param>``; see
``Architecture.param_shapes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ._validate import (
    require_choice,
    require_positive_int,
    require_positive_real,
    require_rate,
)
from .ops.conv import output_size
from .pointwise import KPointwiseSpec

# (kernel, repeats, filters_in, filters_out, expand_ratio, stride) per stage; SE ratio 0.25.
B0_BLOCKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)
SE_RATIO = 0.25
# The smallest square input (pixels) accepted by Architecture.layers/macs/summary and by the
# --image-size of `gpconv summary`, `gpconv bench` and `gpconv train`: one rule everywhere.
MIN_INPUT_SIZE = 8
DROP_CONNECT_RATE = 0.2
STEM_FILTERS = 32
TOP_FILTERS = 1280

# variant: (width, depth, resolution, dropout), as keras.applications.
COEFFICIENTS: dict[str, tuple[float, float, int, float]] = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}
VARIANTS = tuple(COEFFICIENTS)


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a filter count by ``width`` and round to a multiple of ``divisor`` (Keras's rule).

    ``filters`` and ``divisor`` are ints >= 1 and ``width`` a finite real number > 0: the rule's
    floor of ``divisor`` would otherwise turn ``filters=-1`` or ``width=0`` into 8 filters."""
    filters = require_positive_int("filters", filters)
    divisor = require_positive_int("divisor", divisor)
    width = require_positive_real("width", width)
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * scaled else new


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's repeat count by ``depth``, rounding up (Keras's rule).

    ``repeats`` is an int >= 1 and ``depth`` a finite real number > 0: ``depth=0`` or
    ``repeats=0`` would otherwise give a stage of no blocks, and a negative one a negative count."""
    repeats = require_positive_int("repeats", repeats)
    depth = require_positive_real("depth", depth)
    return int(math.ceil(depth * repeats))


@dataclass(frozen=True)
class StemSpec:
    """3×3 conv (no bias) -> BN -> swish.

    Params ``stem_conv/kernel (3, 3, cin, cout)`` and ``stem_bn/*``."""

    cin: int
    cout: int
    kernel: int
    stride: int
    padding: str = "correct"
    name: str = "stem"

    def param_shapes(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        return {
            "stem_conv/kernel": ((self.kernel, self.kernel, self.cin, self.cout), True),
            **_bn_shapes("stem_bn", self.cout),
        }


@dataclass(frozen=True)
class MBConvSpec:
    """One MBConv block named like Keras (``block2a``); its layers are ``<name>_<part>``."""

    name: str
    cin: int
    cout: int
    kernel: int
    stride: int
    expand: KPointwiseSpec | None
    se_reduce: KPointwiseSpec | None
    se_expand: KPointwiseSpec | None
    project: KPointwiseSpec
    drop_rate: float

    @property
    def channels(self) -> int:
        """Channels of the depthwise stage (``cin * expand_ratio``)."""
        return self.expand.cout if self.expand is not None else self.cin

    @property
    def padding(self) -> str:
        """Depthwise padding: Keras ``correct_pad`` + valid for stride 2, ``"same"`` otherwise."""
        return "correct" if self.stride == 2 else "same"

    @property
    def residual(self) -> bool:
        """Identity shortcut (with drop-connect) when the block keeps shape."""
        return self.stride == 1 and self.cin == self.cout

    def pointwise(self) -> dict[str, KPointwiseSpec]:
        """The block's pointwise layers by full layer name, in execution order."""
        parts = {
            "expand": self.expand,
            "se_reduce": self.se_reduce,
            "se_expand": self.se_expand,
            "project": self.project,
        }
        return {f"{self.name}_{k}": v for k, v in parts.items() if v is not None}

    def param_shapes(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        shapes: dict[str, tuple[tuple[int, ...], bool]] = {}
        pw = self.pointwise()
        if self.expand is not None:
            shapes.update(_prefixed(f"{self.name}_expand", self.expand))
        shapes[f"{self.name}_dwconv/kernel"] = ((self.kernel, self.kernel, self.channels, 1), True)
        shapes.update(_bn_shapes(f"{self.name}_bn", self.channels))
        for layer in (f"{self.name}_se_reduce", f"{self.name}_se_expand", f"{self.name}_project"):
            if layer in pw:
                shapes.update(_prefixed(layer, pw[layer]))
        return shapes


@dataclass(frozen=True)
class HeadSpec:
    """Top kPointwise (``top/*``) -> global average pool -> dropout -> dense (``predictions/*``)."""

    top: KPointwiseSpec
    dropout: float
    num_classes: int

    def param_shapes(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        return {
            **_prefixed("top", self.top),
            "predictions/kernel": ((self.top.cout, self.num_classes), True),
            "predictions/bias": ((self.num_classes,), True),
        }


@dataclass(frozen=True)
class LayerRow:
    """One row of ``Architecture.layers()``: a leaf layer with its output shape ``(H, W, C)``,
    groups, parameters (trainable *and* BN moving statistics, as Keras's summary counts them) and
    MACs."""

    name: str
    op: str
    output_shape: tuple[int, int, int]
    groups: int
    params: int
    macs: int


@dataclass(frozen=True)
class Architecture:
    """A whole network as data. ``family`` is ``"efficientnet"`` or ``"kefficientnet"``."""

    family: str
    variant: str
    num_classes: int
    min_channels_per_group: int | None
    skip_stride_cnt: int
    resolution: int
    stem: StemSpec
    blocks: tuple[MBConvSpec, ...]
    head: HeadSpec

    @property
    def name(self) -> str:
        suffix = f"-{self.min_channels_per_group}ch" if self.family == "kefficientnet" else ""
        return f"{self.family}-{self.variant}{suffix}"

    def param_shapes(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        """``{canonical name: (shape, trainable)}`` in network order (Keras layouts)."""
        shapes = dict(self.stem.param_shapes())
        for block in self.blocks:
            shapes.update(block.param_shapes())
        shapes.update(self.head.param_shapes())
        return shapes

    def pointwise(self) -> dict[str, KPointwiseSpec]:
        """Every pointwise layer by full layer name, in execution order: the blocks', then
        ``top`` (the names of ``layers()``' rows)."""
        specs: dict[str, KPointwiseSpec] = {}
        for block in self.blocks:
            specs.update(block.pointwise())
        specs["top"] = self.head.top
        return specs

    def param_count(self) -> tuple[int, int]:
        """``(trainable, non_trainable)`` parameter counts."""
        trainable = non_trainable = 0
        for shape, is_trainable in self.param_shapes().values():
            n = math.prod(shape)
            trainable += n if is_trainable else 0
            non_trainable += 0 if is_trainable else n
        return trainable, non_trainable

    def _input_size(self, input_size: int | None) -> int:
        """``input_size`` checked to be an int >= ``MIN_INPUT_SIZE``, or the variant's resolution
        for ``None`` (``is None``, not falsiness: 0 is an error, not a request for 224)."""
        if input_size is None:
            return self.resolution
        return require_positive_int("input_size", input_size, MIN_INPUT_SIZE)

    def layers(self, input_size: int | None = None) -> tuple[LayerRow, ...]:
        """Leaf layers in order, with output shapes for a square ``input_size`` (default: the
        variant's resolution)."""
        return _layer_rows(self, self._input_size(input_size))

    def macs(self, input_size: int | None = None) -> int:
        """Conv + dense multiply-accumulates per image: ``Ho*Wo*k*k*(Cin/G)*Cout`` per conv."""
        return sum(row.macs for row in self.layers(input_size))

    def feature_size(self, input_size: int | None = None) -> int:
        """Spatial size of the final feature map (before global pooling)."""
        return self.layers(input_size)[-4].output_shape[0]

    def summary(self, input_size: int | None = None) -> str:
        """A per-layer table like Keras ``model.summary()``, with totals."""
        from .summary import format_summary

        return format_summary(self, self._input_size(input_size))


def _bn_shapes(name: str, channels: int) -> dict[str, tuple[tuple[int, ...], bool]]:
    return {
        f"{name}/gamma": ((channels,), True),
        f"{name}/beta": ((channels,), True),
        f"{name}/moving_mean": ((channels,), False),
        f"{name}/moving_variance": ((channels,), False),
    }


def _prefixed(prefix: str, spec: KPointwiseSpec) -> dict[str, tuple[tuple[int, ...], bool]]:
    return {f"{prefix}/{k}": v for k, v in spec.param_shapes().items()}


def _layer_rows(arch: Architecture, size: int) -> tuple[LayerRow, ...]:
    rows: list[LayerRow] = []

    def count(shapes: dict) -> int:
        return sum(math.prod(s) for s, _ in shapes.values())

    def pointwise(name: str, spec: KPointwiseSpec, hw: int) -> None:
        shapes = _prefixed(name, spec)
        steps = ("+interleave" if spec.interleaves else "") + (
            "+conv2" if spec.has_second_conv else ""
        )
        op = f"kPointwise{steps}"
        rows.append(
            LayerRow(
                name,
                op if spec.groups > 1 else "Conv1x1",
                (hw, hw, spec.cout),
                spec.groups,
                count(shapes),
                spec.macs(hw * hw),
            )
        )

    stem = arch.stem
    size = output_size(size, stem.kernel, stem.stride, stem.padding)
    rows.append(
        LayerRow(
            "stem",
            f"Conv{stem.kernel}x{stem.kernel}/{stem.stride}+BN+swish",
            (size, size, stem.cout),
            1,
            count(stem.param_shapes()),
            size * size * stem.kernel**2 * stem.cin * stem.cout,
        )
    )
    for b in arch.blocks:
        if b.expand is not None:
            pointwise(f"{b.name}_expand", b.expand, size)
        size = output_size(size, b.kernel, b.stride, b.padding)
        dw = {
            f"{b.name}_dwconv/kernel": ((b.kernel, b.kernel, b.channels, 1), True),
            **_bn_shapes(f"{b.name}_bn", b.channels),
        }
        rows.append(
            LayerRow(
                f"{b.name}_dwconv",
                f"DWConv{b.kernel}x{b.kernel}/{b.stride}+BN+swish",
                (size, size, b.channels),
                b.channels,
                count(dw),
                size * size * b.kernel**2 * b.channels,
            )
        )
        if b.se_reduce is not None:
            pointwise(f"{b.name}_se_reduce", b.se_reduce, 1)
            pointwise(f"{b.name}_se_expand", b.se_expand, 1)
        pointwise(f"{b.name}_project", b.project, size)
    head = arch.head
    pointwise("top", head.top, size)
    rows.append(LayerRow("avg_pool", "GlobalAveragePool", (1, 1, head.top.cout), 1, 0, 0))
    rows.append(LayerRow("top_dropout", f"Dropout({head.dropout})", (1, 1, head.top.cout), 1, 0, 0))
    rows.append(
        LayerRow(
            "predictions",
            "Dense",
            (1, 1, head.num_classes),
            1,
            count(head.param_shapes()) - count(_prefixed("top", head.top)),
            head.top.cout * head.num_classes,
        )
    )
    return tuple(rows)


def block_drop_rate(rate: float, block: int, blocks: int) -> float:
    """Keras's drop-connect rate of block ``block`` (0-based) of ``blocks``: it grows linearly
    from 0 at the first block."""
    return rate * block / blocks


def _build(
    family: str,
    variant: str,
    num_classes: int,
    min_channels_per_group: int | None,
    skip_stride_cnt: int,
) -> Architecture:
    require_choice("variant", variant, VARIANTS)
    num_classes = require_positive_int("num_classes", num_classes)
    skip_stride_cnt = require_positive_int("skip_stride_cnt", skip_stride_cnt, minimum=-1)
    width, depth, resolution, dropout = COEFFICIENTS[variant]
    m = min_channels_per_group

    def pw(cin: int, cout: int, **kw: Any) -> KPointwiseSpec:
        return KPointwiseSpec.from_min_channels(cin, cout, m, **kw)

    stem_out = round_filters(STEM_FILTERS, width)
    stem = StemSpec(3, stem_out, 3, 1 if skip_stride_cnt >= 0 else 2)
    stages = [
        (k, round_repeats(r, depth), round_filters(fi, width), round_filters(fo, width), e, s)
        for k, r, fi, fo, e, s in B0_BLOCKS
    ]
    total = sum(r for _, r, *_ in stages)
    blocks = []
    for i, (kernel, repeats, fin, fout, expand_ratio, stride) in enumerate(stages):
        if i < skip_stride_cnt:
            stride = 1
        for j in range(repeats):
            cin, s = (fin, stride) if j == 0 else (fout, 1)
            channels = cin * expand_ratio
            se = max(1, int(cin * SE_RATIO))
            blocks.append(
                MBConvSpec(
                    name=f"block{i + 1}{chr(ord('a') + j)}",
                    cin=cin,
                    cout=fout,
                    kernel=kernel,
                    stride=s,
                    expand=pw(cin, channels, activation="swish") if expand_ratio != 1 else None,
                    se_reduce=pw(channels, se, bn=False, activation="swish", bias=True),
                    se_expand=pw(se, channels, bn=False, activation="sigmoid", bias=True),
                    project=pw(channels, fout),
                    drop_rate=block_drop_rate(DROP_CONNECT_RATE, len(blocks), total),
                )
            )
    top_out = round_filters(TOP_FILTERS, width)
    # kEffNet's top conv has no activation (the paper's code); EfficientNet's has swish.
    top_act = None if family == "kefficientnet" else "swish"
    head = HeadSpec(pw(blocks[-1].cout, top_out, activation=top_act), dropout, num_classes)
    return Architecture(
        family, variant, num_classes, m, skip_stride_cnt, resolution, stem, tuple(blocks), head
    )


def efficientnet(
    variant: str = "b0", num_classes: int = 1000, skip_stride_cnt: int = -1
) -> Architecture:
    """EfficientNet-``variant`` as in ``keras.applications`` (logits head, no input rescaling)."""
    return _build("efficientnet", variant, num_classes, None, skip_stride_cnt)


def kefficientnet(
    variant: str = "b0",
    num_classes: int = 1000,
    min_channels_per_group: int = 16,
    skip_stride_cnt: int = -1,
) -> Architecture:
    """kEffNet-``variant``: EfficientNet with every pointwise conv a kPointwise of at least
    ``min_channels_per_group`` channels per group, and no activation on the top conv."""
    min_channels_per_group = require_positive_int("min_channels_per_group", min_channels_per_group)
    return _build("kefficientnet", variant, num_classes, min_channels_per_group, skip_stride_cnt)


MODELS = {f"{fam}-{v}": (fam, v) for fam in ("efficientnet", "kefficientnet") for v in VARIANTS}


def require_arch(arch: Any) -> Architecture:
    """``arch`` itself if it is an ``Architecture``; ``TypeError`` otherwise (a model name or a
    dict passed where the table belongs would fail later with an unrelated AttributeError)."""
    if not isinstance(arch, Architecture):
        shown = repr(arch)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise TypeError(
            "Expected arch to be a gpconv.core.arch.Architecture (e.g. "
            f"core.arch.by_name('kefficientnet-b0')), received {type(arch).__name__} {shown}"
        )
    return arch


def by_name(
    model: str, num_classes: int = 1000, min_channels_per_group: int = 16, skip_stride_cnt: int = -1
) -> Architecture:
    """Build from a CLI-style name such as ``"kefficientnet-b0"``."""
    require_choice("model", model, sorted(MODELS))
    family, variant = MODELS[model]
    # Checked for both families: a bad value is a caller's bug even where it is not used.
    require_positive_int("min_channels_per_group", min_channels_per_group)
    if family == "efficientnet":
        return efficientnet(variant, num_classes, skip_stride_cnt)
    return kefficientnet(variant, num_classes, min_channels_per_group, skip_stride_cnt)


def with_dropout(
    arch: Architecture, dropout: float | None = None, drop_connect_rate: float | None = None
) -> Architecture:
    """The same architecture with the head's ``dropout`` rate and/or the ``drop_connect_rate``
    (stochastic depth: block ``b`` of ``n`` drops with ``drop_connect_rate * b / n``, as Keras)
    replaced; ``None`` keeps the architecture's (``DROP_CONNECT_RATE``, ``COEFFICIENTS``)."""
    from dataclasses import replace

    blocks, head = require_arch(arch).blocks, arch.head
    if drop_connect_rate is not None:
        rate = require_rate("drop_connect_rate", drop_connect_rate)
        n = len(blocks)
        blocks = tuple(
            replace(b, drop_rate=block_drop_rate(rate, i, n)) for i, b in enumerate(blocks)
        )
    if dropout is not None:
        head = replace(head, dropout=require_rate("dropout", dropout))
    return replace(arch, blocks=blocks, head=head)


def without_dropout(arch: Architecture) -> Architecture:
    """The same architecture with dropout and drop-connect rates set to 0 (for exact comparisons
    of training-mode passes across frameworks)."""
    return with_dropout(arch, dropout=0.0, drop_connect_rate=0.0)
