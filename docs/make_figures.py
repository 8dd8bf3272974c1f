"""Regenerate the figures and the generated sections of ``docs/method.md`` from ``gpconv.core``.

Usage::

    python docs/make_figures.py          # rewrite the generated regions of method.md and the PNGs
    python docs/make_figures.py --check  # exit 1 if method.md disagrees with the code

Everything numeric in the guide comes from here, computed by the code it documents:

* generated regions of ``method.md`` sit between ``<!-- BEGIN generated:NAME -->`` and
  ``<!-- END generated:NAME -->``; only those regions are rewritten (``SECTIONS`` lists the names);
* quoted code is a fenced block preceded by ``<!-- excerpt: core/FILE.py -->``; every line of it
  must still appear, in order, in that file (a line ``...`` marks an elision);
* references written as ``core/FILE.py:Name`` or ``core/FILE.py:Class.method`` must name a
  ``def``/``class`` that exists in that file;
* the figures (``docs/figures/*.png``) are drawn with matplotlib's Agg backend, the interleave
  diagram from ``gpconv.core.interleave`` itself, the bar charts from ``Architecture.layers``.

``--check`` verifies the Markdown only (regions, excerpts, references), not the PNG bytes, so it
needs no matplotlib and runs in a second or two.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from gpconv.core import deinterleave, group_count, interleave
from gpconv.core.arch import Architecture, efficientnet, kefficientnet
from gpconv.core.paper import paper_table
from gpconv.core.pointwise import KPointwiseSpec

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
METHOD = DOCS / "method.md"
FIGURES = DOCS / "figures"

NUM_CLASSES = 10  # the paper's CIFAR-10 setting (its Table of parameter counts, first rows)
SMALL_INPUT, SMALL_SKIP = 32, 3  # the paper's 32x32 CIFAR runs use skip_stride_cnt = 3

#: DESIGN.md §1's group-count examples as inputs ``(cin, cout, m)``; the results are computed.
GROUP_EXAMPLES: tuple[tuple[int, int, int], ...] = (
    (32, 16, 16),
    (16, 96, 16),
    (96, 4, 16),
    (4, 96, 16),
    (192, 320, 16),
    (1152, 192, 16),
    (1152, 48, 32),
    (320, 1280, 16),
)

#: Layer kinds of the per-kind tables and bar charts, in network order.
KINDS: tuple[str, ...] = ("stem", "expand", "depthwise", "SE", "project", "top", "head")

#: The interleave diagram's case: 12 channels in 3 groups.
DIAGRAM_CHANNELS, DIAGRAM_GROUPS = 12, 3


# --- the models -------------------------------------------------------------------------------


def models(skip_stride_cnt: int = -1) -> dict[str, Architecture]:
    """EfficientNet-B0 and kEffNet-B0 16ch/32ch with ``NUM_CLASSES`` outputs, by display name."""
    return {
        "EfficientNet-B0": efficientnet("b0", NUM_CLASSES, skip_stride_cnt),
        "kEffNet-B0 16ch": kefficientnet("b0", NUM_CLASSES, 16, skip_stride_cnt),
        "kEffNet-B0 32ch": kefficientnet("b0", NUM_CLASSES, 32, skip_stride_cnt),
    }


def layer_kind(name: str) -> str | None:
    """The kind of a row of ``Architecture.layers`` by its name, or ``None`` for the
    parameter-free rows (global pooling, dropout)."""
    if name == "stem":
        return "stem"
    if name == "top":
        return "top"
    if name == "predictions":
        return "head"
    # "_se_expand" also ends with "_expand", so the SE suffixes are tested first.
    for suffix, kind in (
        ("_se_reduce", "SE"),
        ("_se_expand", "SE"),
        ("_expand", "expand"),
        ("_dwconv", "depthwise"),
        ("_project", "project"),
    ):
        if name.startswith("block") and name.endswith(suffix):
            return kind
    return None


def per_kind(arch: Architecture, input_size: int | None = None) -> dict[str, tuple[int, int]]:
    """``{kind: (params, macs)}`` summed over ``arch.layers(input_size)``.

    ``params`` counts every parameter of the layer, trainable and not (BN moving statistics
    included), so the column total equals ``sum(arch.param_count())``.
    """
    totals = {kind: [0, 0] for kind in KINDS}
    for row in arch.layers(input_size):
        kind = layer_kind(row.name)
        if kind is None:
            if row.params or row.macs:
                raise ValueError(f"Unclassified layer {row.name!r} has params or MACs: {row}")
            continue
        totals[kind][0] += row.params
        totals[kind][1] += row.macs
    return {kind: (p, m) for kind, (p, m) in totals.items()}


def pointwise_specs(arch: Architecture) -> list[tuple[str, str, KPointwiseSpec]]:
    """``(layer name, kind, spec)`` for every pointwise conv of ``arch``, in network order."""
    out = []
    for block in arch.blocks:
        for name, spec in block.pointwise().items():
            out.append((name, name.removeprefix(f"{block.name}_"), spec))
    out.append(("top", "top", arch.head.top))
    return out


def case_name(spec: KPointwiseSpec) -> str:
    """Which of the four kPointwise cases ``spec`` is (see method.md)."""
    if spec.groups == 1:
        return "plain 1×1"
    steps = ["grouped"]
    if spec.interleaves:
        steps.append("interleave")
    if spec.has_second_conv:
        steps.append("conv2 + residual")
    return " → ".join(steps)


def kernel_weights(spec: KPointwiseSpec) -> int:
    """Number of convolution-kernel weights of a kPointwise layer (no BN, no bias)."""
    return sum(
        int(np.prod(shape))
        for key, (shape, _) in spec.param_shapes().items()
        if key.endswith("kernel")
    )


# --- Markdown helpers -------------------------------------------------------------------------


def _table(header: list[str], align: str, rows: Iterable[list[object]]) -> str:
    """A Markdown table; ``align`` has one of ``l r c`` per column."""
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}×" if b else "—"


def _where(cin: int, cout: int, m: int) -> str:
    """Layers of kEffNet-B0 (``m`` channels per group) whose pointwise conv is ``cin -> cout``."""
    names = [
        n
        for n, _, s in pointwise_specs(kefficientnet("b0", NUM_CLASSES, m))
        if (s.cin, s.cout) == (cin, cout)
    ]
    if not names:
        return "— (not in B0)"
    more = f" (+{len(names) - 1} more)" if len(names) > 1 else ""
    return f"`{names[0]}`{more}"


# --- generated sections -----------------------------------------------------------------------


def section_group_count_examples() -> str:
    """DESIGN.md's group-count examples, each computed with ``group_count``."""
    rows = []
    for cin, cout, m in GROUP_EXAMPLES:
        g = group_count(cin, cout, m)
        spec = KPointwiseSpec(cin, cout, g)
        bound = max(1, min(cin, cout, cin // m))
        rows.append(
            [
                f"{cin} → {cout}",
                m,
                f"max(1, min({cin}, {cout}, {cin // m})) = {bound}",
                f"**{g}**",
                cin // g,
                cout // g,
                case_name(spec),
                f"{kernel_weights(spec):,}",
                f"{cin * cout:,}",
                _where(cin, cout, m),
            ]
        )
    header = [
        "Cin → Cout",
        "m",
        "bound",
        "G",
        "Cin/G",
        "Cout/G",
        "kPointwise steps",
        "kernel weights",
        "dense 1×1 weights",
        "in kEffNet-B0",
    ]
    return _table(header, "lrlrrrlrrl", rows)


def section_kpointwise_cases() -> str:
    """How many pointwise convs of kEffNet-B0 fall in each case, with one example each.

    The last row (grouped, neither step) is listed to show, from the code, that it never occurs.
    """
    order = {
        "plain 1×1": "plain 1×1 (G = 1)",
        "grouped → interleave": "grouped → interleave",
        "grouped → interleave → conv2 + residual": "grouped → interleave → conv2 + residual",
        "grouped → conv2 + residual": "grouped → conv2 + residual (Cout = G)",
        "grouped": "grouped, neither step (impossible)",
    }
    archs = {k: a for k, a in models().items() if k.startswith("kEffNet")}
    found: dict[str, dict[str, list[str]]] = {c: {k: [] for k in archs} for c in order}
    for label, arch in archs.items():
        for name, _, spec in pointwise_specs(arch):
            found[case_name(spec)][label].append(
                f"`{name}` {spec.cin}→{spec.cout}, G={spec.groups}"
            )
    rows = []
    for case, title in order.items():
        cells = [f"{len(v)}" + (f" (e.g. {v[0]})" if v else "") for v in found[case].values()]
        rows.append([title, *cells])
    return _table(["case", *archs], "lll", rows)


def section_interleave_example() -> str:
    """``interleave``/``deinterleave`` applied to channel indices 0..11 with 3 groups."""
    c, g = DIAGRAM_CHANNELS, DIAGRAM_GROUPS
    x = np.arange(c)
    y = np.asarray(interleave(x, g))

    def show(a: np.ndarray) -> str:
        return "[" + ", ".join(str(int(v)) for v in a) + "]"

    rows = [
        ("x", x),
        (f"interleave(x, {g})", y),
        (f"deinterleave(interleave(x, {g}), {g})", np.asarray(deinterleave(y, g))),
        (f"deinterleave(x, {g})", np.asarray(deinterleave(x, g))),
        (f"interleave(x, {c // g})", np.asarray(interleave(x, c // g))),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"C = {c}, G = {g}, S = C // G = {c // g}"]
    lines += [f"{label:<{width}} = {show(a)}" for label, a in rows]
    return "```text\n" + "\n".join(lines) + "\n```"


def section_pointwise_layers() -> str:
    """Every distinct pointwise conv of B0 (kind, Cin, Cout) with its G and case per variant."""
    eff = pointwise_specs(efficientnet("b0", NUM_CLASSES))
    k16 = {n: s for n, _, s in pointwise_specs(kefficientnet("b0", NUM_CLASSES, 16))}
    k32 = {n: s for n, _, s in pointwise_specs(kefficientnet("b0", NUM_CLASSES, 32))}
    seen: dict[tuple[str, int, int], list[str]] = {}
    for name, kind, spec in eff:
        seen.setdefault((kind, spec.cin, spec.cout), []).append(name)
    rows = []
    for (kind, cin, cout), names in seen.items():
        s16, s32 = k16[names[0]], k32[names[0]]
        rows.append(
            [
                kind,
                f"{cin} → {cout}",
                len(names),
                f"{cin * cout:,}",
                s16.groups,
                case_name(s16),
                f"{kernel_weights(s16):,}",
                s32.groups,
                case_name(s32),
                f"{kernel_weights(s32):,}",
            ]
        )
    header = [
        "conv",
        "Cin → Cout",
        "layers",
        "EffNet weights",
        "G (16ch)",
        "case (16ch)",
        "weights (16ch)",
        "G (32ch)",
        "case (32ch)",
        "weights (32ch)",
    ]
    return _table(header, "llrrrlrrlr", rows)


def section_params_per_kind() -> str:
    """Parameters per layer kind for the three models (trainable + non-trainable)."""
    data = {label: per_kind(a) for label, a in models().items()}
    base = data["EfficientNet-B0"]
    labels = list(data)
    rows = []
    for kind in [*KINDS, "total"]:
        vals = {
            lb: (sum(p for p, _ in data[lb].values()) if kind == "total" else data[lb][kind][0])
            for lb in labels
        }
        ref = vals["EfficientNet-B0"] if kind != "total" else sum(p for p, _ in base.values())
        row: list[object] = [f"**{kind}**" if kind == "total" else kind, f"{ref:,}"]
        for lb in labels[1:]:
            row += [f"{vals[lb]:,}", _ratio(vals[lb], ref)]
        rows.append(row)
    header = ["kind", labels[0]]
    for lb in labels[1:]:
        header += [lb, "ratio"]
    return _table(header, "lrrrrr", rows)


def section_macs_per_kind() -> str:
    """Conv + dense MACs per layer kind at 224×224 and at 32×32 with skip_stride_cnt=3."""
    big = {label: per_kind(a, 224) for label, a in models().items()}
    small = {label: per_kind(a, SMALL_INPUT) for label, a in models(SMALL_SKIP).items()}
    labels = list(big)
    rows = []
    for kind in [*KINDS, "total"]:
        row: list[object] = [f"**{kind}**" if kind == "total" else kind]
        for data in (big, small):
            for lb in labels:
                v = sum(m for _, m in data[lb].values()) if kind == "total" else data[lb][kind][1]
                row.append(f"{v:,}")
        rows.append(row)
    short = {"EfficientNet-B0": "EffNet", "kEffNet-B0 16ch": "k 16ch", "kEffNet-B0 32ch": "k 32ch"}
    header = ["kind"] + [f"{short[lb]} 224" for lb in labels]
    header += [f"{short[lb]} {SMALL_INPUT} (skip {SMALL_SKIP})" for lb in labels]
    return _table(header, "lrrrrrr", rows)


def section_paper_table() -> str:
    """The paper's published counts next to the computed ones (``gpconv summary --paper``)."""
    return paper_table()


SECTIONS: dict[str, Callable[[], str]] = {
    "group-count-examples": section_group_count_examples,
    "interleave-example": section_interleave_example,
    "kpointwise-cases": section_kpointwise_cases,
    "pointwise-layers": section_pointwise_layers,
    "params-per-kind": section_params_per_kind,
    "macs-per-kind": section_macs_per_kind,
    "paper-table": section_paper_table,
}

_REGION = re.compile(
    r"(?P<begin><!-- BEGIN generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)"
    r"(?P<end><!-- END generated:(?P=name) -->)",
    re.DOTALL,
)


def generated_sections() -> dict[str, str]:
    """``{name: Markdown}`` for every generated region, computed from the code now."""
    return {name: fn() for name, fn in SECTIONS.items()}


def regions(text: str) -> dict[str, str]:
    """``{name: body}`` of the generated regions in ``text`` (bodies without trailing newline)."""
    return {m["name"]: m["body"].rstrip("\n") for m in _REGION.finditer(text)}


def render(text: str, sections: dict[str, str]) -> str:
    """``text`` with the body of every generated region replaced by ``sections[name]``.

    Raises ``ValueError`` for a region whose name ``sections`` lacks, or for a section that has no
    region in ``text``.
    """
    found = [m["name"] for m in _REGION.finditer(text)]
    unknown = sorted(set(found) - set(sections))
    missing = sorted(set(sections) - set(found))
    if unknown or missing:
        raise ValueError(
            f"method.md regions do not match SECTIONS: unknown={unknown}, missing={missing}"
        )

    def body(m: re.Match) -> str:
        return f"{m['begin']}{sections[m['name']]}\n{m['end']}"

    return _REGION.sub(body, text)


# --- excerpts and references ------------------------------------------------------------------

_EXCERPT = re.compile(
    r"<!-- excerpt: (?P<path>[\w./-]+) -->\n```[\w]*\n(?P<code>.*?)\n```", re.DOTALL
)
_REFERENCE = re.compile(r"`(?P<path>core/[\w/]+\.py):(?P<name>[A-Za-z_][\w.]*)`")


def excerpts(text: str) -> list[tuple[str, str]]:
    """``(path relative to the repository, code)`` for every quoted excerpt in ``text``."""
    return [(m["path"], m["code"]) for m in _EXCERPT.finditer(text)]


def _norm(lines: Iterable[str]) -> list[str]:
    return [ln.strip() for ln in lines if ln.strip()]


def excerpt_problem(path: str, code: str, root: Path = REPO) -> str | None:
    """Why an excerpt no longer matches its source, or ``None`` when it does.

    Lines are compared with surrounding whitespace stripped (excerpts may be dedented); a line
    ``...`` separates chunks that must each appear contiguously, in order.
    """
    src_path = root / path
    if not src_path.is_file():
        return f"excerpt cites {path}, which does not exist"
    source = _norm(src_path.read_text(encoding="utf-8").splitlines())
    chunks: list[list[str]] = [[]]
    for line in _norm(code.splitlines()):
        if line == "...":
            chunks.append([])
        else:
            chunks[-1].append(line)
    start = 0
    for chunk in filter(None, chunks):
        for i in range(start, len(source) - len(chunk) + 1):
            if source[i : i + len(chunk)] == chunk:
                start = i + len(chunk)
                break
        else:
            return f"excerpt from {path} not found (in order) in the source:\n  " + "\n  ".join(
                chunk
            )
    return None


def references(text: str) -> list[tuple[str, str]]:
    """``(path, dotted name)`` for every ``core/FILE.py:Name`` reference in ``text``."""
    return sorted({(m["path"], m["name"]) for m in _REFERENCE.finditer(text)})


def reference_problem(path: str, name: str, root: Path = REPO) -> str | None:
    """Why ``path:name`` does not resolve to a ``def``/``class`` there, or ``None``."""
    src_path = root / path
    if not src_path.is_file():
        return f"reference {path}:{name}: no such file"
    source = src_path.read_text(encoding="utf-8")
    pos = 0
    for part in name.split("."):
        m = re.compile(rf"^\s*(?:def|class)\s+{re.escape(part)}\b", re.MULTILINE).search(
            source, pos
        )
        if m is None:
            return f"reference {path}:{name}: no def/class {part!r} found"
        pos = m.end()
    return None


def check(text: str) -> list[str]:
    """Every disagreement between a method.md text and the code, as readable messages."""
    problems: list[str] = []
    try:
        expected = render(text, generated_sections())
    except ValueError as err:
        return [str(err)]
    if expected != text:
        have, want = regions(text), regions(expected)
        for name in SECTIONS:
            if have.get(name) != want.get(name):
                diff = difflib.unified_diff(
                    have.get(name, "").splitlines(),
                    want[name].splitlines(),
                    f"method.md [{name}]",
                    f"computed [{name}]",
                    lineterm="",
                )
                problems.append(f"generated region {name!r} is stale:\n" + "\n".join(diff))
    for path, code in excerpts(text):
        problem = excerpt_problem(path, code)
        if problem:
            problems.append(problem)
    for path, name in references(text):
        problem = reference_problem(path, name)
        if problem:
            problems.append(problem)
    return problems


# --- figures ----------------------------------------------------------------------------------

GROUP_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
MODEL_COLORS = {
    "EfficientNet-B0": "#7f7f7f",
    "kEffNet-B0 16ch": "#1f77b4",
    "kEffNet-B0 32ch": "#ff7f0e",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    return path


def figure_interleave(
    path: Path, channels: int = DIAGRAM_CHANNELS, groups: int = DIAGRAM_GROUPS
) -> Path:
    """Lines from each input channel to its output position under ``interleave(x, groups)``."""
    plt = _pyplot()
    size = channels // groups
    src = np.asarray(interleave(np.arange(channels), groups))  # out[j] = in[src[j]]
    fig, ax = plt.subplots(figsize=(11, 4.6))
    y_in, y_out, w, h = 3.0, 0.0, 0.8, 0.6
    for i in range(channels):
        g, s = divmod(i, size)
        ax.add_patch(
            plt.Rectangle((i - w / 2, y_in - h / 2), w, h, color=GROUP_COLORS[g], alpha=0.85)
        )
        ax.text(
            i, y_in, str(i), ha="center", va="center", color="white", fontsize=11, weight="bold"
        )
        ax.text(i, y_in + 0.45, f"g={g},s={s}", ha="center", va="bottom", fontsize=7.5)
    for j in range(channels):
        i = int(src[j])
        g = i // size
        ax.add_patch(
            plt.Rectangle((j - w / 2, y_out - h / 2), w, h, color=GROUP_COLORS[g], alpha=0.85)
        )
        ax.text(
            j, y_out, str(i), ha="center", va="center", color="white", fontsize=11, weight="bold"
        )
        ax.text(j, y_out - 0.42, f"pos {j}", ha="center", va="top", fontsize=7.5)
        ax.annotate(
            "",
            xy=(j, y_out + h / 2),
            xytext=(i, y_in - h / 2),
            arrowprops={"arrowstyle": "->", "color": GROUP_COLORS[g], "lw": 1.4},
        )
    for g in range(groups):  # input groups
        lo, hi = g * size - 0.4, (g + 1) * size - 0.6
        ax.plot([lo, lo, hi, hi], [y_in + 1.0, y_in + 1.1, y_in + 1.1, y_in + 1.0], color="k", lw=1)
        ax.text(
            (lo + hi) / 2,
            y_in + 1.18,
            f"input group {g}: channels {g * size}–{(g + 1) * size - 1}",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    for blk in range(groups):  # the next grouped conv's blocks over the interleaved channels
        lo, hi = blk * size - 0.4, (blk + 1) * size - 0.6
        seen = sorted({int(src[j]) // size for j in range(blk * size, (blk + 1) * size)})
        ax.plot(
            [lo, lo, hi, hi], [y_out - 1.0, y_out - 1.1, y_out - 1.1, y_out - 1.0], color="k", lw=1
        )
        ax.text(
            (lo + hi) / 2,
            y_out - 1.18,
            f"next grouped conv, group {blk}:\nreads input groups {seen}",
            ha="center",
            va="top",
            fontsize=9,
        )
    ax.text(-0.9, y_in, "in", ha="right", va="center", fontsize=11)
    ax.text(-0.9, y_out, "out", ha="right", va="center", fontsize=11)
    ax.set_xlim(-1.6, channels - 0.2)
    ax.set_ylim(y_out - 2.2, y_in + 1.7)
    ax.axis("off")
    ax.set_title(
        f"interleave(x, G={groups}) on C={channels} channels (S = C/G = {size}):  "
        "out[..., s·G + g] = in[..., g·S + s]\n"
        "drawn from gpconv.core.interleave(arange(C), G); the backward (deinterleave) follows "
        "the arrows in reverse",
        fontsize=10.5,
    )
    return _save(fig, path)


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _kind_bars(ax, data: dict[str, dict[str, int]], ylabel: str, title: str) -> None:
    """Grouped bars: one group per kind, one bar per model, log scale, values on top."""
    n = len(data)
    width = 0.8 / n
    x = np.arange(len(KINDS))
    for k, (label, values) in enumerate(data.items()):
        ys = [values[kind] for kind in KINDS]
        total = sum(ys)
        bars = ax.bar(
            x + (k - (n - 1) / 2) * width,
            ys,
            width,
            color=MODEL_COLORS[label],
            label=f"{label} (total {_human(total)})",
        )
        for bar, v in zip(bars, ys, strict=True):
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                v * 1.08,
                _human(v),
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
            )
    ax.set_yscale("log")
    ax.set_xticks(x, KINDS)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10.5)
    lo = min(v for values in data.values() for v in values.values() if v > 0)
    hi = max(v for values in data.values() for v in values.values())
    ax.set_ylim(lo / 2, hi * 40)
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend(loc="upper center", ncol=n, fontsize=8.5)


def figure_params(path: Path) -> Path:
    """Parameters per layer kind, EfficientNet-B0 vs kEffNet-B0 16ch/32ch."""
    plt = _pyplot()
    data = {label: {k: p for k, (p, _) in per_kind(a).items()} for label, a in models().items()}
    fig, ax = plt.subplots(figsize=(10, 4.8))
    _kind_bars(
        ax,
        data,
        "parameters (log scale)",
        f"Parameters per layer kind, B0, {NUM_CLASSES} classes "
        "(trainable + BN moving statistics), from core.arch layers()",
    )
    fig.tight_layout()
    return _save(fig, path)


def figure_macs(path: Path) -> Path:
    """Conv + dense MACs per layer kind at 224×224 and at 32×32 (skip_stride_cnt=3)."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(10, 9.2))
    for ax, size, skip in ((axes[0], 224, -1), (axes[1], SMALL_INPUT, SMALL_SKIP)):
        data = {
            label: {k: m for k, (_, m) in per_kind(a, size).items()}
            for label, a in models(skip).items()
        }
        where = f"{size}×{size}" + (f", skip_stride_cnt={skip}" if skip >= 0 else "")
        _kind_bars(
            ax,
            data,
            "multiply-accumulates (log scale)",
            f"Conv + dense MACs per layer kind, {where}",
        )
    fig.tight_layout()
    return _save(fig, path)


FIGURE_FILES: dict[str, Callable[[Path], Path]] = {
    "interleave_12ch_3groups.png": figure_interleave,
    "params_per_kind.png": figure_params,
    "macs_per_kind.png": figure_macs,
}


def make_figures(outdir: Path = FIGURES) -> list[Path]:
    """Draw every figure into ``outdir``; returns the paths written."""
    return [fn(outdir / name) for name, fn in FIGURE_FILES.items()]


# --- entry point ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Rewrite method.md's generated regions and the PNGs, or with ``--check`` only verify."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if docs/method.md disagrees with the code; write nothing",
    )
    parser.add_argument("--no-figures", action="store_true", help="rewrite method.md only")
    args = parser.parse_args(argv)
    text = METHOD.read_text(encoding="utf-8")
    if args.check:
        problems = check(text)
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{METHOD.relative_to(REPO)}: {'out of date' if problems else 'up to date'}")
        return 1 if problems else 0
    new = render(text, generated_sections())
    if new != text:
        METHOD.write_text(new, encoding="utf-8")
        print(f"rewrote generated regions of {METHOD.relative_to(REPO)}")
    if not args.no_figures:
        for path in make_figures():
            print(f"wrote {path.relative_to(REPO)}")
    problems = [p for p in check(new) if not p.startswith("generated region")]
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
