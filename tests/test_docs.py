"""docs/method.md must agree with the code it explains.

These tests fail when a generated region of the guide is stale (rerun
``python docs/make_figures.py``), when a quoted code excerpt no longer appears in its core/
source, when a ``core/FILE.py:Name`` reference dangles, or when a fact the guide states about
interleaving or kPointwise stops being true of the code. They run the generator's check mode;
they never draw the figures, so they need no matplotlib.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from gpconv.core import KPointwise, KPointwiseSpec, deinterleave, group_count, interleave
from gpconv.core.arch import efficientnet, kefficientnet
from gpconv.core.paper import paper_table

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "docs" / "make_figures.py"
METHOD = REPO / "docs" / "method.md"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpconv_docs_make_figures", SCRIPT)
    assert spec is not None and spec.loader is not None, f"cannot load {SCRIPT}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mf() -> ModuleType:
    """The docs/make_figures.py module."""
    return _load_script()


@pytest.fixture(scope="module")
def text() -> str:
    """The committed docs/method.md."""
    return METHOD.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def computed(mf: ModuleType) -> dict[str, str]:
    """Every generated section, computed from the code now."""
    return mf.generated_sections()


# --- generated regions -----------------------------------------------------------------------


def test_every_section_has_a_region(mf: ModuleType, text: str) -> None:
    found = mf.regions(text)
    assert set(found) == set(mf.SECTIONS), (
        f"method.md regions {sorted(found)} != make_figures.SECTIONS {sorted(mf.SECTIONS)}"
    )


@pytest.mark.parametrize(
    "name",
    [
        "group-count-examples",
        "interleave-example",
        "kpointwise-cases",
        "pointwise-layers",
        "params-per-kind",
        "macs-per-kind",
        "paper-table",
    ],
)
def test_generated_region_is_current(
    mf: ModuleType, text: str, computed: dict[str, str], name: str
) -> None:
    have = mf.regions(text).get(name)
    assert have == computed[name], (
        f"docs/method.md region {name!r} differs from the code; run `python docs/make_figures.py`"
    )


def test_paper_table_in_docs_equals_paper_table(mf: ModuleType, text: str) -> None:
    assert mf.regions(text)["paper-table"] == paper_table(), (
        "docs/method.md paper table != gpconv.core.paper.paper_table() (`gpconv summary --paper`)"
    )


def test_check_mode_passes(mf: ModuleType, text: str) -> None:
    problems = mf.check(text)
    assert not problems, "make_figures.check(method.md) found:\n" + "\n".join(problems)
    assert mf.main(["--check"]) == 0


def test_check_mode_detects_a_stale_table(mf: ModuleType, text: str) -> None:
    stale = text.replace("| 4,020,358 | 4,020,358 |", "| 4,020,358 | 4,020,359 |", 1)
    assert stale != text, "fixture: the paper table row to corrupt was not found"
    problems = mf.check(stale)
    assert any("paper-table" in p for p in problems), problems


def test_check_mode_detects_a_changed_excerpt(mf: ModuleType, text: str) -> None:
    line = "dy1 = dz if dy1 is None else dy1 + dz"
    assert line in text, "fixture: the excerpt line to corrupt was not found"
    problems = mf.check(text.replace(line, "dy1 = dz if dy1 is None else dy1 - dz"))
    assert any("excerpt from core/pointwise.py" in p for p in problems), problems


def test_render_rewrites_only_the_regions(
    mf: ModuleType, text: str, computed: dict[str, str]
) -> None:
    emptied = re.sub(
        r"(<!-- BEGIN generated:([\w-]+) -->\n).*?(<!-- END generated:\2 -->)",
        r"\1\3",
        text,
        flags=re.DOTALL,
    )
    assert mf.render(emptied, computed) == text


# --- excerpts and references -----------------------------------------------------------------


def test_guide_quotes_the_core(mf: ModuleType, text: str) -> None:
    paths = {path for path, _ in mf.excerpts(text)}
    assert len(mf.excerpts(text)) >= 10 and "core/pointwise.py" in paths, paths


def test_quoted_excerpts_exist_in_source(mf: ModuleType, text: str) -> None:
    problems = [p for path, code in mf.excerpts(text) if (p := mf.excerpt_problem(path, code))]
    assert not problems, "\n".join(problems)


def test_code_references_resolve(mf: ModuleType, text: str) -> None:
    refs = mf.references(text)
    assert ("core/pointwise.py", "KPointwise.backward") in refs
    problems = [p for path, name in refs if (p := mf.reference_problem(path, name))]
    assert not problems, "\n".join(problems)


def test_figures_are_linked_and_present(mf: ModuleType, text: str) -> None:
    for name in mf.FIGURE_FILES:
        assert f"](figures/{name})" in text, f"method.md does not show figures/{name}"
        assert (REPO / "docs" / "figures" / name).is_file(), (
            f"docs/figures/{name} missing; run the script"
        )


# --- facts the guide states ------------------------------------------------------------------


@pytest.mark.parametrize("c,g", [(12, 3), (12, 4), (8, 2), (6, 6), (6, 1), (1152, 64)])
def test_interleave_index_formula(c: int, g: int) -> None:
    s = c // g
    x = np.arange(c)
    out = interleave(x, g)
    for gi in range(g):
        for si in range(s):
            assert out[si * g + gi] == x[gi * s + si], (
                f"interleave(arange({c}), {g})[{si * g + gi}]"
            )
    np.testing.assert_array_equal(
        deinterleave(out, g), x, err_msg=f"deinterleave(interleave(x, {g}), {g})"
    )
    np.testing.assert_array_equal(
        deinterleave(x, g),
        interleave(x, s),
        err_msg=f"deinterleave(x, {g}) != interleave(x, {s}) [C={c}]",
    )
    if g == 1 or s == 1:
        np.testing.assert_array_equal(
            out, x, err_msg=f"interleave(x, {g}) should be the identity [C={c}]"
        )


def test_no_grouped_layer_skips_both_steps() -> None:
    """Method §5: with G = group_count(...), G > 1 always interleaves or has a second conv."""
    for m in (1, 2, 4, 16):
        for cin in range(1, 49):
            for cout in range(1, 49):
                spec = KPointwiseSpec(cin, cout, group_count(cin, cout, m))
                if spec.groups > 1:
                    assert spec.interleaves or spec.has_second_conv, f"{spec} [m={m}]"


def test_per_kind_totals_cover_every_layer(mf: ModuleType) -> None:
    for arch in (
        efficientnet("b0", 10),
        kefficientnet("b0", 10, 16),
        kefficientnet("b0", 10, 32, 3),
    ):
        kinds = mf.per_kind(arch, 32)
        assert sum(p for p, _ in kinds.values()) == sum(arch.param_count()), arch.name
        assert sum(m for _, m in kinds.values()) == arch.macs(32), arch.name


def _block_diag(blocks: np.ndarray) -> np.ndarray:
    g, ci, co = blocks.shape
    out = np.zeros((g * ci, g * co))
    for k in range(g):
        out[k * ci : (k + 1) * ci, k * co : (k + 1) * co] = blocks[k]
    return out


def test_kpointwise_residual_and_two_path_gradient_as_documented() -> None:
    """Method §5/§6 with a linear layer (no BN, no activation), written as dense matrices:
    ``out = x W1 + x W1 P W2`` (residual onto the non-interleaved y1) and
    ``dx = dout (I + P W2)^T W1^T`` (the two paths to y1 add)."""
    rng = np.random.default_rng(0)
    cin, cout, g = 8, 4, 2
    spec = KPointwiseSpec(cin, cout, g, bn=False)
    assert spec.interleaves and spec.has_second_conv
    k1 = rng.standard_normal((1, 1, cin // g, cout))
    k2 = rng.standard_normal((1, 1, cout // g, cout))
    x = rng.standard_normal((5, cin))
    dout = rng.standard_normal((5, cout))
    out, cache = KPointwise.forward(spec, {"conv/kernel": k1, "conv2/kernel": k2}, x)
    dx, grads = KPointwise.backward(cache, dout)

    def dense(kernel: np.ndarray) -> np.ndarray:  # Keras (1, 1, Ci, Cout) -> block-diagonal
        ci, co = kernel.shape[2], kernel.shape[3] // g
        return _block_diag(np.transpose(kernel[0, 0].reshape(ci, g, co), (1, 0, 2)))

    w1, w2 = dense(k1), dense(k2)
    perm = interleave(np.eye(cout), g)  # y @ perm == interleave(y, g)
    np.testing.assert_allclose(np.arange(cout) @ perm, interleave(np.arange(cout), g))
    np.testing.assert_allclose(out, x @ w1 + x @ w1 @ perm @ w2, err_msg="KPointwise.forward")
    np.testing.assert_allclose(
        dx, dout @ (np.eye(cout) + perm @ w2).T @ w1.T, err_msg="KPointwise.backward dx"
    )
    assert set(grads) == {"conv/kernel", "conv2/kernel"}


README_PYTHON = re.compile(r"```python\n(.*?)```", re.S)


@pytest.mark.parametrize("index", range(2))
def test_readme_python_examples_run(index: int) -> None:
    """The README's model examples, run as written (each needs its framework)."""
    blocks = README_PYTHON.findall((REPO / "README.md").read_text())
    assert len(blocks) == 2, "README has a new python example: add it here"
    pytest.importorskip(("torch", "tensorflow")[index])
    exec(compile(blocks[index], f"README.md python example {index + 1}", "exec"), {})


def _adding_a_backend_pytest_snippet() -> str:
    text = (REPO / "docs" / "adding-a-backend.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    found = [b for b in blocks if "compare_kpointwise" in b]
    assert len(found) == 1, "docs/adding-a-backend.md: expected one pytest example"
    return found[0]


def test_adding_a_backend_pytest_example_runs_as_written(monkeypatch) -> None:
    """The example failed with hypothesis's DeadlineExceeded on a torch adapter (its first call
    took 1.6 s; the default deadline is 200 ms): outside this repository there is no conftest
    that lifts the deadline, so the example must. Run against a float32 adapter, importable as
    the guide's ``mypackage.adapter:BACKEND`` (the example once used BACKEND without importing
    it: a NameError when copied into a test file)."""
    from hypothesis import settings

    from gpconv.backends.numpy_reference import NumpyBackend

    class Float32(NumpyBackend):
        name, dtype = "float32-numpy", np.float32

    package, adapter = ModuleType("mypackage"), ModuleType("mypackage.adapter")
    adapter.BACKEND, package.adapter = Float32(), adapter
    monkeypatch.setitem(sys.modules, "mypackage", package)
    monkeypatch.setitem(sys.modules, "mypackage.adapter", adapter)
    namespace: dict = {}
    ours = settings.get_current_profile_name()  # tests/conftest.py lifts the deadline here
    # As in a user's repository (hypothesis's defaults: 200 ms deadline, 100 examples), but
    # derandomized: the same examples in every run, so that the suite does not flake.
    settings.register_profile(
        "user-derandomized", parent=settings.get_profile("default"), derandomize=True
    )
    settings.load_profile("user-derandomized")
    try:
        exec(compile(_adding_a_backend_pytest_snippet(), "adding-a-backend.md", "exec"), namespace)
    finally:
        settings.load_profile(ours)
    kpointwise_test = namespace["test_my_kpointwise"]
    own = kpointwise_test._hypothesis_internal_use_settings  # what @settings gave the test
    assert own.deadline is None, f"the example keeps hypothesis's deadline {own.deadline}"
    assert own.derandomize and own.max_examples == 100
    kpointwise_test()  # and the example passes a correct float32 adapter, on 100 examples


@pytest.mark.parametrize(
    "m,layers,cout_sum,sentence",
    [
        # B0's project layers output 16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192 x 4, 320
        # channels (DESIGN.md §1's stage table): 16 layers, sum 1,808; with m = 32 block1a's
        # 32 -> 16 gets G = 1 (bound max(1, min(32, 16, 1)) = 1), leaving 15 layers, sum 1,792.
        (16, 16, 1808, "2 × 1,808 = 3,616 = 45,632 − 42,016"),
        (32, 15, 1792, "2 × 1,792 = 3,584 = 45,600 − 42,016"),
    ],
)
def test_extra_non_trainable_are_the_project_bn2(
    text: str, m: int, layers: int, cout_sum: int, sentence: str
) -> None:
    """Method §9: kEffNet's extra non-trainable parameters are the moving statistics of the
    project layers' second BN, and the guide's arithmetic for them holds."""
    assert " ".join(sentence.split()) in " ".join(text.split()), f"§9 no longer says {sentence!r}"
    shapes = kefficientnet("b0", 10, m).param_shapes()
    bn2 = {k: s for k, (s, trainable) in shapes.items() if "/bn2/moving_" in k}
    owners = {k.split("/")[0] for k in bn2}
    assert all(o.endswith("_project") for o in owners), sorted(owners)
    assert len(owners) == layers, sorted(owners)
    assert sum(int(np.prod(s)) for s in bn2.values()) == 2 * cout_sum
    extra = kefficientnet("b0", 10, m).param_count()[1] - efficientnet("b0", 10).param_count()[1]
    assert extra == 2 * cout_sum, f"kEffNet-B0 {m}ch non-trainable - EfficientNet-B0's = {extra}"


def _github_slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_section_links_resolve(text: str) -> None:
    """Every ``](#anchor)`` link of the guide (the contents line, the cross references) names
    a heading of the guide."""
    slugs = {_github_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    assert _github_slug("9. The paper's parameter table") == "9-the-papers-parameter-table"
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert len(links) >= 10, links
    dangling = sorted(set(links) - slugs)
    assert not dangling, f"method.md links to missing headings {dangling}; have {sorted(slugs)}"


def test_conv2_only_case_is_se_reduce_without_bn(mf: ModuleType) -> None:
    """Method §5: in kEffNet-B0 the conv2-only case (G = Cout > 1) occurs only in SE reduce
    layers, which have a bias and no BN (16ch: 96->4, 144->6, 240->10, 480->20, 672->28 and
    1152->48, in 1 + 2 + 2 + 3 + 3 + 4 = 15 layers; none in 32ch)."""
    for m, expected in ((16, 15), (32, 0)):
        found = [
            (layer, kind, spec)
            for layer, kind, spec in mf.pointwise_specs(kefficientnet("b0", 10, m))
            if spec.groups > 1 and spec.groups == spec.cout
        ]
        assert len(found) == expected, [(layer, kind) for layer, kind, _ in found]
        for layer, kind, spec in found:
            assert kind == "se_reduce" and spec.bias and not spec.bn, (layer, kind, spec)


def test_train_md_cross_framework_example_runs_on_a_run_folder(tmp_path, monkeypatch) -> None:
    """docs/train.md's way from a run folder to predictions in torch, Keras and the NumPy
    reference, run as written on a tiny numpy-trained run (its path substituted). The run
    evaluated its first 48 test images (--limit 48): the example's predictions there must give
    the accuracy summary.json reports, which checks the documented normalisation and layouts.
    The reference keeps every activation (~75 MB per 32x32 image): the example once passed all
    360 test images at once, which needs 27 GB and was killed on the 24 GB machine, so it must
    feed the reference in small batches."""
    import json

    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    from gpconv.cli.main import main
    from gpconv.core import network

    batches = []
    real_forward = network.forward

    def recording_forward(arch, params, x, *args, **kwargs):
        batches.append(len(x))
        return real_forward(arch, params, x, *args, **kwargs)

    blocks = README_PYTHON.findall((REPO / "docs" / "train.md").read_text())
    found = [b for b in blocks if "read_metadata" in b]
    assert len(found) == 1, "docs/train.md: expected one cross-framework example"
    out = tmp_path / "run"
    args = "--backend numpy --model kefficientnet-b0 --image-size 8 --skip-stride 0 --limit 48"
    args += " --batch-size 16 --epochs 2 --lr 0.05 --threads 1 --quiet"
    assert main(["train", *args.split(), "--out", str(out)]) == 0
    code = found[0].replace("runs/digits-k16", str(out))
    assert code != found[0], "the example no longer names runs/digits-k16"
    namespace: dict = {}
    monkeypatch.setattr(network, "forward", recording_forward)  # after training
    exec(compile(code, "docs/train.md cross-framework example", "exec"), namespace)
    assert sum(batches) == len(namespace["data"].y_test), batches  # every test image once
    assert max(batches) <= 64, f"the example runs the reference on {max(batches)} images at once"
    summary = json.loads((out / "summary.json").read_text())
    predicted = namespace["keras_logits"][:48].argmax(1)
    accuracy = float((predicted == namespace["data"].y_test[:48]).mean())
    assert accuracy == pytest.approx(summary["best_test_acc"]), (accuracy, summary)


# --- commands the docs show ------------------------------------------------------------------
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A command starts at `gpconv SUB` or `python -m gpconv.cli SUB` (also after torchrun's `-m`).
GPCONV_COMMAND = re.compile(r"(?:\bgpconv|-m gpconv\.cli) ([a-z]+)\b([^`\n]*)")


def _doc_command_lines(text: str) -> list[str]:
    """Every line of a ```bash block (continuation lines joined, comments dropped) and every
    inline code span (joined across the line breaks that wrap it)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            lines.append(re.sub(r"\s#.*", "", line))
    lines += [span.replace("\n", " ") for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", text)]
    return lines


def _documented_gpconv_flags() -> list[tuple[str, str, str]]:
    """(file, subcommand, --flag) for each flag of each `gpconv SUB ...` command in the docs."""
    found = []
    for path in DOC_FILES:
        for line in _doc_command_lines(path.read_text(encoding="utf-8")):
            for sub, rest in GPCONV_COMMAND.findall(line):
                found += [
                    (path.name, sub, flag) for flag in re.findall(r"(?<!\S)--?[a-z][\w-]*", rest)
                ]
    return found


def test_documented_gpconv_commands_use_existing_flags() -> None:
    """Every option that README.md or docs/*.md passes to a `gpconv` subcommand is one that
    subcommand's parser knows: a renamed or dropped flag must take the docs with it."""
    import argparse

    from gpconv.cli.main import build_parser

    (sub_action,) = [
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ]
    documented = _documented_gpconv_flags()
    subs = {sub for _, sub, _ in documented}
    assert {"check", "summary", "train", "bench"} <= subs, subs  # the extraction finds them all
    unknown = [
        (name, sub, flag)
        for name, sub, flag in documented
        if sub not in sub_action.choices
        or flag not in sub_action.choices[sub]._option_string_actions
    ]
    assert not unknown, unknown


def test_train_md_names_the_columns_of_the_metrics_table() -> None:
    """docs/train.md said the metrics command reproduces its result tables, whose columns (a
    train acc, no run) it does not print; it now lists the command's columns: they must stay
    those of ``summary_table``."""
    from gpconv.train.metrics import summary_table

    text = " ".join((REPO / "docs" / "train.md").read_text(encoding="utf-8").split())
    found = re.search(r"Its table has the columns `([^`]+)`", text)
    assert found, "docs/train.md no longer lists the metrics table's columns"
    header = summary_table([]).splitlines()[0]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert [c.strip() for c in found.group(1).split("|")] == columns, header


def test_relative_links_of_every_doc_resolve() -> None:
    """Every relative ``](path)`` / ``](path#anchor)`` link of README.md and docs/*.md (outside
    code blocks) names an existing file, and its anchor a heading of that file; only method.md's
    own anchors were checked before."""
    broken = []
    for path in DOC_FILES:
        prose = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
        for link in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", link):  # https:, mailto:
                continue
            file, _, anchor = link.partition("#")
            target = (path.parent / file).resolve() if file else path
            if not target.exists():
                broken.append(f"{path.name}: {link} (no such file)")
            elif anchor:
                headings = re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), re.M)
                if anchor not in {_github_slug(h) for h in headings}:
                    broken.append(f"{path.name}: {link} (no such heading)")
    assert not broken, broken


# --- measured figures the docs quote from docs/figures/*.json --------------------------------
FIGURES = REPO / "docs" / "figures"
MODEL_NAMES = {"EfficientNet-B0": "efficientnet-b0", "kEffNet-B0 16ch": "kefficientnet-b0"}


def _table_after(text: str, marker: str) -> list[list[str]]:
    """The body rows (cells stripped) of the first Markdown table after ``marker`` in ``text``."""
    start = text.index(marker)
    table = re.search(r"^\|.*\|\n\|[-:| ]+\|\n((?:\|.*\|\n)+)", text[start:], flags=re.M)
    assert table, f"no table after {marker!r}"
    return [[c.strip() for c in row.strip().strip("|").split("|")] for row in table[1].splitlines()]


def _json_figure(name: str) -> dict:
    import json

    return json.loads((FIGURES / name).read_text(encoding="utf-8"))


def _bench_results(name: str) -> dict[tuple[str, str], dict]:
    """``gpconv bench`` results of a figure file, keyed by (backend, model)."""
    return {(r["backend"], r["model"]): r for r in _json_figure(name)["results"]}


@pytest.mark.parametrize(
    "figure,columns",
    [
        # docs/train.md "Latest run" and the older VM's: backend | model | train step (ms) |
        # forward img/s
        ("bench_cpu_1thread_v857.json", ("train_step_ms", "forward_images_per_s")),
        ("bench_cpu_1thread.json", ("train_step_ms", "forward_images_per_s")),
        # the 03:51 run: backend | model | params | MMACs/img | forward img/s | train step (ms)
        (
            "bench.json",
            ("params_trainable", "macs_per_image", "forward_images_per_s", "train_step_ms"),
        ),
    ],
)
def test_train_md_bench_tables_are_their_json(figure: str, columns: tuple[str, ...]) -> None:
    """The `gpconv bench` tables of docs/train.md show the figure file they link, rounded as
    printed (a kEffNet step of 1,519.5 ms was once quoted as 1,520)."""
    shown = {
        "train_step_ms": lambda v: f"{round(v):,}",
        "forward_images_per_s": lambda v: f"{v:.1f}",
        "params_trainable": lambda v: f"{v:,}",
        "macs_per_image": lambda v: f"{v / 1e6:.1f}",
    }
    text = (REPO / "docs" / "train.md").read_text(encoding="utf-8")
    rows = _table_after(text, f"(figures/{figure})")
    results = _bench_results(figure)
    assert len(rows) == len(results) == 4, rows
    for backend, model, *cells in rows:
        r = results[(backend, MODEL_NAMES[model])]
        expected = [shown[c](r[c]) for c in columns]
        assert cells == expected, f"docs/train.md {backend} {model}: {cells} != {figure} {expected}"


def test_train_md_operand_bytes_are_their_json() -> None:
    """docs/train.md's bytes-not-MACs table and its per-op differences are
    figures/bytes_torch_train.json's (the forward BN difference was once quoted as the
    forward + backward total)."""
    data = _json_figure("bytes_torch_train.json")
    eff, keff = data["bytes"]["EfficientNet-B0"], data["bytes"]["kEffNet-B0 16ch"]
    raw = (REPO / "docs" / "train.md").read_text(encoding="utf-8")
    rows = {r[0]: r[1:] for r in _table_after(raw, "(figures/bytes_torch_train.json)")}
    text = " ".join(raw.split())  # sentences wrap across lines

    def gb(n: float) -> str:
        return f"{n / 1e9:.2f} GB"

    assert rows["operand bytes per step (batch 32)"] == [
        gb(sum(eff.values())),
        gb(sum(keff.values())),
        f"×{data['ratios']['operand_bytes']:.3f}",
    ], rows
    assert rows["MACs per image"][2] == f"×{data['ratios']['macs']:.3f}", rows

    def more(op: str) -> str:
        return f"{(keff.get(op, 0) - eff.get(op, 0)) / 1e9:.2f} GB"

    for sentence in (
        f"({more('channel_shuffle')} per step in `channel_shuffle`",
        f"+{more('native_batch_norm')} forward, +{more('native_batch_norm_backward')} backward",
        f"(+{more('add')} in `add`)",
    ):
        assert sentence in text, f"docs/train.md no longer says {sentence!r}"


def _sig3(v: float) -> str:
    """Three significant digits, as docs/gpu.md prints cuBLAS times (2.70, 11.0)."""
    return f"{v:.{max(0, 2 - int(np.floor(np.log10(abs(v)))))}f}"


def test_gpu_md_fused_kernel_table_is_its_json() -> None:
    """docs/gpu.md's H200 table of the fused kernel is figures/bench_cupy_h200.json's, cell by
    cell, and so are the device peaks quoted above it."""
    data = _json_figure("bench_cupy_h200.json")
    ms = {(r["case"], r["impl"]): r["fwd_bwd_ms"] for r in data["layers"]}
    overhead = {o["case"]: o for o in data["overhead"]}
    raw = (REPO / "docs" / "gpu.md").read_text(encoding="utf-8")
    rows = _table_after(raw, "Grouped 1×1 conv, forward + backward (dx, dW), batch 256")
    assert len(rows) == len(overhead) == 6, rows

    def pct(v: float) -> str:
        text = f"{100 * v:.1f}"
        return ("0.0" if text == "-0.0" else text.replace("-", "−")) + "%"

    for layer, *cells in rows:
        case = layer.replace("→", "->").replace(", ", " ").replace("×", "x")
        o = overhead[case]
        expected = [
            f"{ms[(case, 'fused il-out')]:.3f}",
            f"{ms[(case, 'fused')]:.3f}",
            f"{pct(o['overhead_il_out'])} / {pct(o['overhead_il_in'])}",
            _sig3(ms[(case, "core+il-out")]),
            f"{ms[(case, 'dense')]:.3f}",
        ]
        assert cells == expected, f"docs/gpu.md {layer}: {cells} != bench_cupy_h200.json {expected}"
    peaks = data["peaks"]
    sentence = (
        f"copy {peaks['copy_gb_s'] / 1000:.1f} TB/s, "
        f"float32 cuBLAS matmul {peaks['matmul_f32_gflop_s'] / 1000:.0f} TFLOP/s"
    )
    assert sentence in " ".join(raw.split()), f"docs/gpu.md no longer says {sentence!r}"


def test_readme_counts_the_batch_norms_inside_kpointwise() -> None:
    """README: Keras's ``model.layers`` misses the batch norms that kEffNet's KPointwise layers
    hold; the count it gives ("48 of kEffNet-B0 16ch's 65") is that of ``core.arch``: every BN
    with moving statistics, and those named ``<kPointwise layer>/bn`` or ``/bn2``."""
    text = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    found = re.search(r"\((\d+) of kEffNet-B0 16ch's (\d+)\)", text)
    assert found, "README no longer counts the batch norms inside KPointwise"
    means = [k for k in kefficientnet("b0", 10, 16).param_shapes() if k.endswith("/moving_mean")]
    inside = [k for k in means if re.search(r"/bn2?/moving_mean$", k)]
    assert (int(found[1]), int(found[2])) == (len(inside), len(means)), (len(inside), len(means))


def test_gpu_md_torch_sweep_ranges_are_their_json() -> None:
    """docs/gpu.md sums up the torch sweep of runs 2 and 3 (bench_cupy_h200.json and its _run3,
    both image sizes) as ranges of kEffNet's step over EfficientNet's; they once covered only
    the 32×32 rows."""
    rows = [r for f in ("", "_run3") for r in _json_figure(f"bench_cupy_h200{f}.json")["torch"]]

    def span(keep) -> str:
        ratios = [r["ratio_to_best_effnet"] for r in rows if keep(r)]
        assert ratios, "the sweep has no such rows"
        return f"{min(ratios):.1f}–{max(ratios):.1f}×"

    cudnn = span(lambda r: r["impl"] in ("conv", "channels_last"))
    matmul = span(lambda r: r["impl"] == "matmul" and r["channels_last"] is False)
    text = " ".join((REPO / "docs" / "gpu.md").read_text(encoding="utf-8").split())
    sentence = f"grouped conv costs {cudnn} EfficientNet's step, one batched matmul over groups "
    sentence += f"on NCHW tensors {matmul};"
    assert sentence in text, f"docs/gpu.md no longer says {sentence!r}"


# --- the digits accuracies of README.md and docs/train.md: the runs under docs/figures/runs ---
RUNS = FIGURES / "runs"


def _digits_runs(prefix: str) -> list:
    """The committed runs ``docs/figures/runs/<prefix>-*``, in the shell glob's order."""
    from gpconv.train.metrics import load_runs

    folders = sorted(str(f) for f in RUNS.glob(f"{prefix}-*"))
    assert len(folders) == 4, f"expected 4 runs {prefix}-* under {RUNS}, found {folders}"
    return load_runs(folders)


@pytest.mark.parametrize("prefix", ["digits12", "digits6"])
def test_train_md_digits_table_is_what_metrics_prints_of_the_committed_runs(prefix: str) -> None:
    """docs/train.md's accuracy table is ``python -m gpconv.train.metrics
    docs/figures/runs/<prefix>-* --table`` of the committed run files. Before, its figures were
    one run's whose files were not kept, and a rerun did not give them back."""
    from gpconv.train.metrics import summary_table

    table = summary_table(_digits_runs(prefix))
    text = (REPO / "docs" / "train.md").read_text(encoding="utf-8")
    assert table in text, f"docs/train.md does not show the table of runs/{prefix}-*:\n{table}"
    assert f"docs/figures/runs/{prefix}-* --table" in " ".join(text.split())


def test_readme_digits_accuracies_are_the_committed_runs() -> None:
    """README's 12-epoch accuracies and kEffNet's gap to EfficientNet, from the run files."""
    acc = {
        (r.summary["backend"], r.summary["model"]): 100 * r.summary["final"]["test_acc"]
        for r in _digits_runs("digits12")
    }
    text = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())

    def both(model: str) -> tuple[str, str]:
        return tuple(f"{acc[(b, model)]:.2f} %" for b in ("torch", "tensorflow"))

    eff, keff = both("efficientnet-b0"), both("kefficientnet-b0")
    assert f"EfficientNet-B0 {eff[0]} (torch) / {eff[1]} (tensorflow) test accuracy" in text
    assert f"kEffNet-B0 16ch {keff[0]} / {keff[1]} with 639,702" in text
    for backend in ("torch", "tensorflow"):
        gap = acc[(backend, "efficientnet-b0")] - acc[(backend, "kefficientnet-b0")]
        said = "level" if abs(gap) < 1e-9 else rf"{gap:.2f} points( \([^)]*\))? behind"
        assert re.search(rf"\b{said} in {backend}\b", text), (
            f"README does not say kEffNet's gap in {backend}: {said!r}"
        )


def test_six_epoch_gaps_in_readme_and_train_md_are_the_committed_runs() -> None:
    """How far kEffNet trails after 6 epochs, in test accuracy (README and docs/train.md) and in
    training accuracy at epochs 2 and 6 (docs/train.md), from the digits6 runs' files."""
    runs = {(r.summary["backend"], r.summary["model"]): r for r in _digits_runs("digits6")}

    def gap(backend: str, key: str, epoch: int) -> float:
        eff, keff = (
            runs[(backend, m)].history[epoch - 1][key]
            for m in ("efficientnet-b0", "kefficientnet-b0")
        )
        return 100 * (eff - keff)

    test = [f"{gap(b, 'test_acc', 6):.1f}" for b in ("torch", "tensorflow")]
    behind = f"{test[0]} (torch) and {test[1]} (tensorflow) points"
    train_md = " ".join((REPO / "docs" / "train.md").read_text(encoding="utf-8").split())
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert f"6 epochs kEffNet is {behind} behind" in train_md
    assert f"6 epochs kEffNet trailed by {behind}" in readme

    def span(epoch: int) -> str:
        gaps = [gap(b, "train_acc", epoch) for b in ("torch", "tensorflow")]
        return f"{min(gaps):.1f}–{max(gaps):.1f} points"

    assert f"training accuracy {span(2)} behind at epoch 2, {span(6)} at epoch 6" in train_md
