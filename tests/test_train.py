"""``gpconv train``: data loading, epoch plans, checkpoints, resume (also after SIGKILL), DDP and
bad-argument handling.

End-to-end runs use tiny configurations: kEffNet-B0 on 8×8 (numpy) or 16×16 (torch) digits, a few
dozen images, batch 16, so that each epoch is a handful of steps.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import importlib.util
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import GLIBC, checkpoint_params, tiny_architecture, tiny_batch

from gpconv.cli.main import main
from gpconv.core.arch import by_name, without_dropout
from gpconv.core.params import init_params, load_params, read_metadata, save_params
from gpconv.train import checkpoint, data, distributed, loop, sampling, writer
from gpconv.train import run as run_module
from gpconv.train.device import check_device
from gpconv.train.frameworks import OptimConfig, create
from gpconv.train.frameworks.base import format_device
from gpconv.train.run import RunConfig, identity_diff

NUMPY_TINY = [
    "--backend",
    "numpy",
    "--model",
    "kefficientnet-b0",
    "--image-size",
    "8",
    "--skip-stride",
    "0",
    "--limit",
    "48",
    "--batch-size",
    "16",
    "--epochs",
    "3",
    # One BLAS thread in every process: in-process commands (bench, train) leave the limit set,
    # and runs compared bit for bit across processes must sum in the same order.
    "--threads",
    "1",
    "--quiet",
]
TORCH_TINY = [
    "--backend",
    "torch",
    "--model",
    "kefficientnet-b0",
    "--image-size",
    "16",
    "--skip-stride",
    "0",
    "--limit",
    "32",
    "--batch-size",
    "16",
    "--lr",
    "0.01",
    "--quiet",
]


def train(*args: str) -> int:
    return main(["train", *args])


def metrics_rows(run: str) -> list[dict[str, str]]:
    """metrics.csv rows without the wall-clock column."""
    with open(os.path.join(run, "metrics.csv")) as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def tree_digest(path: str) -> dict[str, str]:
    """SHA-256 of every file under ``path`` (to prove nothing was overwritten)."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return out


def assert_same_params(a: str, b: str, rtol: float = 0.0, atol: float = 0.0) -> None:
    pa, pb = load_params(a), load_params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_allclose(pa[k], pb[k], rtol=rtol, atol=atol, err_msg=f"{k} [{a} vs {b}]")


@pytest.fixture(scope="module")
def numpy_run(tmp_path_factory) -> str:
    """One uninterrupted 3-epoch numpy run, the reference for the resume tests."""
    out = str(tmp_path_factory.mktemp("runs") / "uninterrupted")
    assert train(*NUMPY_TINY, "--out", out) == 0
    return out


# --- data ----------------------------------------------------------------------------------------


def test_digits_shapes_range_and_fixed_split():
    a, b = data.load_digits(16), data.load_digits(16)
    assert a.x_train.shape == (1437, 16, 16, 3) and a.x_test.shape == (360, 16, 16, 3)
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0 + 1e-6
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert sorted(set(a.y_test)) == list(range(10)), "stratified split keeps every class in test"
    batch = a.normalize(a.x_train)
    np.testing.assert_allclose(batch.mean(axis=(0, 1, 2)), 0, atol=1e-4)


def test_bilinear_resize_matches_torch_half_pixel_upsampling():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    ours = data.resize_bilinear(x, 32)
    ref = (
        torch.nn.functional.interpolate(
            torch.from_numpy(x).permute(0, 3, 1, 2),
            size=(32, 32),
            mode="bilinear",
            align_corners=False,
        )
        .permute(0, 2, 3, 1)
        .numpy()
    )
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(data.resize_bilinear(x, 8), x, atol=1e-6)


def _write_cifar(directory, records_per_file: int = 2) -> None:
    """CIFAR-10 binary files where record r of file f has label (f + r) % 10 and pixel bytes
    encoding channel, row, col: value = (c * 50 + row + col + f) % 256."""
    os.makedirs(directory, exist_ok=True)
    c, h, w = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    for f, name in enumerate([*data.CIFAR_TRAIN_FILES, data.CIFAR_TEST_FILE]):
        recs = []
        for r in range(records_per_file):
            img = ((c * 50 + h + w + f) % 256).astype(np.uint8)
            recs.append(np.concatenate([[np.uint8((f + r) % 10)], img.ravel()]))
        np.concatenate(recs).astype(np.uint8).tofile(os.path.join(directory, name))


def test_cifar10_binary_reader(tmp_path):
    root = tmp_path / "cifar"
    _write_cifar(root / "cifar-10-batches-bin")  # the archive's own sub-folder is found
    ds = data.load(f"cifar10={root}", 32)
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_test.shape == (2, 32, 32, 3)
    assert ds.x_train.dtype == np.uint8
    assert ds.y_train.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5] and ds.y_test.tolist() == [5, 6]
    img = ds.x_train[2]  # file 1: CHW bytes became HWC
    assert img[0, 0].tolist() == [1, 51, 101] and img[3, 4].tolist() == [8, 58, 108]
    assert data.load(f"cifar10={root}", 16).x_train.shape == (10, 16, 16, 3)


def test_cifar10_missing_or_corrupt_names_the_file(tmp_path):
    _write_cifar(tmp_path)
    bad = tmp_path / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-7])
    with pytest.raises(data.DataError, match="data_batch_3.bin"):
        data.load_cifar10(str(tmp_path))
    _write_cifar(tmp_path)
    (tmp_path / "test_batch.bin").unlink()
    with pytest.raises(data.DataError, match="test_batch.bin"):
        data.load_cifar10(str(tmp_path))
    _write_cifar(tmp_path)
    raw = bytearray((tmp_path / "data_batch_1.bin").read_bytes())
    raw[0] = 42  # label byte out of range
    (tmp_path / "data_batch_1.bin").write_bytes(bytes(raw))
    with pytest.raises(data.DataError, match="data_batch_1.bin.*label 42"):
        data.load_cifar10(str(tmp_path))


def test_cifar10_class_names_file_is_read_as_text_or_named_as_corrupt(tmp_path):
    _write_cifar(tmp_path)
    meta = tmp_path / data.CIFAR_META_FILE
    meta.write_text("".join(f"c{i}\n" for i in range(10)) + "\n", encoding="utf-8")
    assert data.load_cifar10(str(tmp_path)).classes == [f"c{i}" for i in range(10)]
    # Bytes that are no text: a DataError naming the file (exit 2), not a UnicodeDecodeError.
    meta.write_bytes(b"\xff\xfe\x00airplane\n" * 10)
    with pytest.raises(data.DataError, match=r"batches\.meta\.txt"):
        data.load_cifar10(str(tmp_path))
    # Ten lines naming one class twice would make two labels print alike.
    meta.write_text("".join(f"c{min(i, 8)}\n" for i in range(10)), encoding="utf-8")
    with pytest.raises(data.DataError, match=r"more than once.*\['c8'\]"):
        data.load_cifar10(str(tmp_path))
    with pytest.raises(data.DataError, match="CIFAR-10 directory to be a folder, received a file"):
        data.load_cifar10(str(meta))


class _TouchOnUnpickle:
    """Unpickling this creates ``path``: proof that a loader ran a pickle."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-py"])
def test_cifar10_python_version_is_refused_unread(tmp_path, sub):
    # torchvision downloads the python version: pickled batches. They must be named as such,
    # not reported as a missing .bin file, and never unpickled.
    batches = tmp_path / sub if sub else tmp_path
    batches.mkdir(exist_ok=True)
    marker = tmp_path / "unpickled"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (batches / name).write_bytes(pickle.dumps(_TouchOnUnpickle(marker)))
    with pytest.raises(data.DataError, match="python version.*binary version"):
        data.load(f"cifar10={tmp_path}", 32)
    assert not marker.exists()


def _write_pngs(root, classes=("cat", "dog"), per_class=5) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in classes:
        os.makedirs(root / cls, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(
                root / cls / f"{i}.png"
            )


def test_folder_reader_split_and_train_test_layout(tmp_path):
    _write_pngs(tmp_path / "flat")
    ds = data.load(f"folder={tmp_path / 'flat'}", 16)
    assert ds.classes == ["cat", "dog"]
    assert ds.x_train.shape == (8, 16, 16, 3) and ds.x_test.shape == (2, 16, 16, 3)
    assert sorted(ds.y_test.tolist()) == [0, 1]
    _write_pngs(tmp_path / "split" / "train")
    _write_pngs(tmp_path / "split" / "test", per_class=2)
    ds = data.load(f"folder={tmp_path / 'split'}", 16)
    assert len(ds.y_train) == 10 and len(ds.y_test) == 4


def test_folder_reader_errors_name_the_file(tmp_path):
    _write_pngs(tmp_path)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(data.DataError, match="broken.png"):
        data.load_folder(str(tmp_path), 16)
    with pytest.raises(data.DataError, match="not found"):
        data.load_folder(str(tmp_path / "nowhere"), 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match="at least 2 class folders.*found 0"):
        data.load_folder(str(tmp_path / "empty"), 16)
    with pytest.raises(data.DataError, match="Image folder to be a folder, received a file"):
        data.load_folder(str(tmp_path / "cat" / "0.png"), 16)


def _split_sizes(root) -> tuple[list[str], int, int]:
    ds = data.load_folder(str(root), 16)
    return ds.classes, len(ds.y_train), len(ds.y_test)


@pytest.mark.parametrize(
    "train_name,test_name",
    [("Train", "Test"), ("training", "validation"), ("TRAIN", "Val"), ("train", "testing")],
)
def test_folder_split_names_are_splits_in_any_case(tmp_path, train_name, test_name):
    """Kaggle-style Train/ + Test/ were read as two classes: the model learnt the split, with
    80% of the test images among its training images."""
    _write_pngs(tmp_path / train_name, per_class=5)
    _write_pngs(tmp_path / test_name, per_class=2)
    assert _split_sizes(tmp_path) == (["cat", "dog"], 10, 4)


def test_folder_layouts_that_would_lose_images_or_learn_nothing_are_refused(tmp_path):
    _write_pngs(tmp_path / "one" / "only")  # folder= one level too high: one class
    with pytest.raises(data.DataError, match=r"at least 2 class folders.*found 1: \['only'\]"):
        data.load_folder(str(tmp_path / "one"), 16)
    (tmp_path / "deep" / "only").mkdir(parents=True)
    _write_pngs(tmp_path / "deep" / "only")
    with pytest.raises(data.DataError, match=r"if .*only holds the classes, name that folder"):
        data.load_folder(str(tmp_path / "deep"), 16)
    _write_pngs(tmp_path / "stray" / "train")
    _write_pngs(tmp_path / "stray" / "test", per_class=1)
    _write_pngs(tmp_path / "stray", classes=("fox",))
    with pytest.raises(data.DataError, match=r"also the folders \['fox'\], which would be ignored"):
        data.load_folder(str(tmp_path / "stray"), 16)
    _write_pngs(tmp_path / "two" / "train")
    _write_pngs(tmp_path / "two" / "Training")
    _write_pngs(tmp_path / "two" / "test")
    with pytest.raises(data.DataError, match="more than one training folder"):
        data.load_folder(str(tmp_path / "two"), 16)


def test_folder_with_train_val_and_test_is_scored_on_test(tmp_path):
    _write_pngs(tmp_path / "train", per_class=5)
    _write_pngs(tmp_path / "val", per_class=3)
    _write_pngs(tmp_path / "test", per_class=1)
    assert _split_sizes(tmp_path) == (["cat", "dog"], 10, 2)


def test_folder_reads_linked_folders_and_other_image_names_and_skips_hidden_entries(tmp_path):
    """torchvision's ImageFolder follows links and reads .pgm; a link loop ends; dot entries
    (.ipynb_checkpoints, macOS's ._x.png forks) and __MACOSX are not data."""
    from PIL import Image

    root = tmp_path / "pets"
    _write_pngs(root, per_class=5)
    _write_pngs(tmp_path / "elsewhere", classes=("more",), per_class=3)
    os.symlink(tmp_path / "elsewhere" / "more", root / "cat" / "more")
    os.symlink(root / "cat", root / "cat" / "loop")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "dog" / "grey.pgm")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "dog" / "photo.jfif", "JPEG")
    for hidden in (".ipynb_checkpoints", "__MACOSX"):
        _write_pngs(root / hidden, classes=("cat",), per_class=1)
        _write_pngs(root / "cat" / hidden, classes=("x",), per_class=1)
    (root / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble, no PNG")
    ds = data.load_folder(str(root), 16)
    assert ds.classes == ["cat", "dog"]
    counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    assert counts.tolist() == [5 + 3, 5 + 2]


def test_folder_reader_layouts_like_image_folder(tmp_path, monkeypatch):
    """Sub-folders are read (ImageFolder does); an empty class, a lone train/ or val/ and an
    oversized image are errors that name the folder or file; --limit takes every class."""
    _write_pngs(tmp_path / "nested", classes=("cat", "dog", "fox"), per_class=4)
    os.rename(tmp_path / "nested" / "fox" / "3.png", tmp_path / "nested" / "fox" / "deep.png")
    (tmp_path / "nested" / "fox" / "deeper").mkdir()
    os.rename(
        tmp_path / "nested" / "fox" / "deep.png", tmp_path / "nested" / "fox" / "deeper" / "3.png"
    )
    ds = data.load(f"folder={tmp_path / 'nested'}", 16)
    assert len(ds.y_train) + len(ds.y_test) == 12, "the image in fox/deeper/ was skipped"
    assert len(set(ds.limited(4).y_train.tolist())) > 1, "--limit kept only the first class"

    _write_pngs(tmp_path / "holey", classes=("cat", "dog"))
    (tmp_path / "holey" / "empty").mkdir()
    with pytest.raises(data.DataError, match=r"Class folder .*empty has no images"):
        data.load_folder(str(tmp_path / "holey"), 16)
    _write_pngs(tmp_path / "trainonly" / "train")
    with pytest.raises(data.DataError, match=r"train needs a test \(or val\) folder"):
        data.load_folder(str(tmp_path / "trainonly"), 16)
    _write_pngs(tmp_path / "valonly" / "val")
    with pytest.raises(data.DataError, match="val needs a train folder"):
        data.load_folder(str(tmp_path / "valonly"), 16)

    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # 12x10 images are now "bombs"
    with pytest.raises(data.DataError, match=r"Cannot read image .*\.png"):
        data.load_folder(str(tmp_path / "nested"), 16)


def test_a_data_folder_named_by_bytes_that_are_no_utf8_trains(tmp_path, capsys):
    """Python decodes such a name to lone surrogates: curves.png's title (matplotlib) and the
    start line on a strict UTF-8 stdout (capsys's) raised after or before the first epoch."""
    root = tmp_path / os.fsdecode(b"pets-\xff")
    _write_pngs(root)
    args = [*NUMPY_TINY, "--data", f"folder={root}", "--batch-size", "4", "--epochs", "1"]
    assert train(*args, "--out", str(tmp_path / os.fsdecode(b"run-\xfe"))) == 0
    out = capsys.readouterr().out
    assert "pets-\\xff" in out and "run-\\xfe" in out
    assert (tmp_path / os.fsdecode(b"run-\xfe") / "curves.png").is_file()


def test_data_too_large_for_memory_is_a_usage_error_naming_the_image_size(
    tmp_path, capsys, monkeypatch
):
    """``--image-size 4096`` on digits asked NumPy for 112 GiB and ended in a traceback."""

    def too_large(spec: str, image_size: int):
        shape = (1797, image_size, image_size, 1)
        raise MemoryError(f"Unable to allocate 112. GiB for an array with shape {shape}")

    monkeypatch.setattr("gpconv.train.run.load", too_large)
    out = tmp_path / "run"
    assert train(*NUMPY_TINY, "--image-size", "4096", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "--image-size 4096" in err and "112. GiB" in err and "Traceback" not in err
    assert not out.exists()


def test_resume_refuses_changed_data(tmp_path, capsys, monkeypatch):
    """A class added to the folder used to crash the resume with a shape traceback; an added
    image went unnoticed."""
    _write_pngs(tmp_path / "pets", classes=("cat", "dog"), per_class=6)
    args = [*NUMPY_TINY, "--data", f"folder={tmp_path / 'pets'}", "--limit", "12"]
    args += ["--batch-size", "4", "--out", str(tmp_path / "run")]
    assert train(*args, "--epochs", "1") == 0
    before = tree_digest(str(tmp_path / "run"))
    _write_pngs(tmp_path / "pets", classes=("fox",), per_class=6)
    assert train(*args, "--epochs", "2", "--resume") == 2
    err = capsys.readouterr().err
    assert f"the data of --data folder={tmp_path / 'pets'} changed" in err and "'fox'" in err
    assert tree_digest(str(tmp_path / "run")) == before
    monkeypatch.chdir(tmp_path)  # the same folder named by a relative path is the same data
    shutil.rmtree(tmp_path / "pets" / "fox")
    relative = [a.replace(str(tmp_path / "pets"), "pets") for a in args]
    assert train(*relative, "--epochs", "2", "--resume") == 0


def test_resume_of_moved_data_goes_on_if_its_contents_are_the_runs(tmp_path, capsys):
    """A folder data set moved elsewhere made the run unresumable ("data: run has
    'folder=/a/pets', requested 'folder=/b/pets'") though run.json's SHA-256 proved it the same.
    Another kind of data, other contents, or a run.json without fingerprint still stop it."""
    _write_pngs(tmp_path / "a" / "pets", classes=("cat", "dog"), per_class=6)
    args = [*NUMPY_TINY, "--limit", "12", "--batch-size", "4", "--out", str(tmp_path / "run")]
    assert train(*args, "--data", f"folder={tmp_path / 'a' / 'pets'}", "--epochs", "1") == 0
    os.rename(tmp_path / "a", tmp_path / "b")
    moved = f"folder={tmp_path / 'b' / 'pets'}"
    old = str(tmp_path / "old")  # as written by a gpconv that recorded no fingerprint
    shutil.copytree(tmp_path / "run", old)
    recorded = json.load(open(os.path.join(old, "run.json")))
    json.dump({k: v for k, v in recorded.items() if k != "data"}, open(f"{old}/run.json", "w"))
    capsys.readouterr()
    refusals = [
        (["--data", f"cifar10={tmp_path / 'b' / 'pets'}"], "data: run has 'folder="),
        (["--data", moved, "--out", old], f"requested '{moved}'"),
    ]
    added = tmp_path / "b" / "pets" / "cat" / "extra"
    added.mkdir()
    shutil.copy(tmp_path / "b" / "pets" / "dog" / "0.png", added)
    refusals.append((["--data", moved], f"the data of --data {moved} changed"))
    for extra, message in refusals:
        assert train(*args, *extra, "--epochs", "2", "--resume") == 2, extra
        assert message in capsys.readouterr().err
    shutil.rmtree(added)
    assert train(*args, "--data", moved, "--epochs", "2", "--resume") == 0
    assert f"it started on --data folder={tmp_path / 'a' / 'pets'}" in capsys.readouterr().err
    # From now on the run names the new path, in run.json and in the new checkpoint alike.
    assert json.load(open(tmp_path / "run" / "run.json"))["identity"]["data"] == moved
    assert checkpoint.latest(str(tmp_path / "run")).state["identity"]["data"] == moved
    assert [r["epoch"] for r in metrics_rows(str(tmp_path / "run"))] == ["1", "2"]


def test_resume_of_a_run_json_without_data_fingerprint_goes_on(numpy_run, tmp_path):
    """Runs written before run.json recorded the data's fingerprint resume unchecked."""
    run = str(tmp_path / "old")
    shutil.copytree(numpy_run, run)
    run_json = os.path.join(run, "run.json")
    recorded = json.load(open(run_json))
    json.dump({k: v for k, v in recorded.items() if k != "data"}, open(run_json, "w"))
    assert train(*NUMPY_TINY, "--out", run, "--resume") == 0
    assert json.load(open(run_json))["data"] == recorded["data"]  # recorded from now on


def test_ctrl_c_exits_130_without_a_traceback(monkeypatch, capsys):
    import gpconv.cli.main as cli_main

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "_dispatch", interrupted)
    try:
        code = cli_main.main(["train"])
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped gpconv's main: a traceback for the user")
    assert code == 130
    assert "interrupted (gpconv train continues with --resume)" in capsys.readouterr().err
    assert cli_main.main(["check"]) == 130  # no advice about training after a check
    assert capsys.readouterr().err.strip() == "gpconv: interrupted"


@pytest.mark.parametrize("spec", ["cifar10", "folder=", "imagenet=/x", "digits=3"])
def test_bad_data_spec(spec):
    with pytest.raises(ValueError, match="--data"):
        data.parse_spec(spec)


# --- epoch plans -------------------------------------------------------------------------------


def test_epoch_plan_is_a_function_of_seed_and_epoch():
    a, b = sampling.plan_epoch(50, 7, 3, augment=True), sampling.plan_epoch(50, 7, 3, augment=True)
    np.testing.assert_array_equal(a.order, b.order)
    np.testing.assert_array_equal(a.crops, b.crops)
    assert not np.array_equal(a.order, sampling.plan_epoch(50, 7, 4).order)
    assert sorted(a.order) == list(range(50))
    assert a.crops.min() >= 0 and a.crops.max() <= 2 * sampling.PAD
    # shifts of -PAD..+PAD pixels, both ends included (a crop offset of 2 PAD was never drawn)
    many = sampling.plan_epoch(2000, 0, 0, augment=True)
    assert set(many.crops.ravel().tolist()) == set(range(2 * sampling.PAD + 1))
    assert 0.45 < many.flips.mean() < 0.55


def test_rank_shards_partition_the_global_batch():
    shards = [sampling.local_positions(3, 8, r, 2) for r in range(2)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(24, 32))
    # interleaved as torch's DistributedSampler splits (the docs say so), not halves
    assert [s.tolist() for s in shards] == [[24, 26, 28, 30], [25, 27, 29, 31]]


def test_crop_flip():
    x = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1) + 1
    same = sampling.crop_flip(x, np.full((2, 2), sampling.PAD), np.array([False, True]))
    np.testing.assert_array_equal(same[0], x[0])
    np.testing.assert_array_equal(same[1], x[1][:, ::-1])
    shifted = sampling.crop_flip(x, np.array([[0, 0], [0, 0]]), np.array([False, False]))
    assert (shifted[:, : sampling.PAD] == 0).all()  # zero padding came into view


# --- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_roundtrip_verify_and_prune(tmp_path):
    run = str(tmp_path)
    for epoch in (1, 2, 3):
        checkpoint.save(
            run,
            epoch,
            checkpoint_params(epoch),
            {"t": np.array(epoch)},
            {"history": [epoch]},
            keep=2,
        )
    assert [e for e, _ in checkpoint.epochs_on_disk(run)] == [2, 3]
    latest = checkpoint.latest(run)
    assert latest.epoch == 3 and latest.state["history"] == [3]
    np.testing.assert_array_equal(latest.params()["a/kernel"], checkpoint_params(3)["a/kernel"])
    assert int(latest.optimizer()["t"]) == 3
    # A flipped byte in the newest params makes it unverifiable: resume falls back one epoch.
    path = os.path.join(latest.path, "params.safetensors")
    raw = bytearray(open(path, "rb").read())
    raw[-1] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    with pytest.raises(ValueError, match="corrupt checkpoint file .*params.safetensors"):
        checkpoint.verify(latest.path)
    assert checkpoint.latest(run, warn=False).epoch == 2


def test_checkpoint_restores_counters_saved_as_shape_1_by_older_versions(tmp_path):
    # Before save_params kept 0-d arrays (c677695) a step counter was written as shape (1,), while
    # state.json recorded its true shape (); checkpoints of that era (same FORMAT) must resume.
    run = str(tmp_path)
    saved = checkpoint.save(run, 1, checkpoint_params(1), {"step": np.array(5.0)}, {})
    assert saved.optimizer()["step"].shape == ()
    path = os.path.join(saved.path, "optimizer.safetensors")
    save_params(path, {"step": np.array([5.0])})
    state_path = os.path.join(saved.path, "state.json")
    state = json.load(open(state_path))
    state["files"]["optimizer.safetensors"] = checkpoint._sha256(path)
    json.dump(state, open(state_path, "w"))
    restored = checkpoint.latest(run).optimizer()
    assert restored["step"].shape == () and float(restored["step"]) == 5.0, (
        f"legacy counter restored with shape {restored['step'].shape}, expected ()"
    )


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    run = str(tmp_path)
    checkpoint.save(run, 1, checkpoint_params(1), {}, {})

    def crash(*args):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(checkpoint.os, "rename", crash)
    with pytest.raises(OSError, match="simulated"):
        checkpoint.save(run, 2, checkpoint_params(2), {}, {})
    monkeypatch.undo()
    assert [e for e, _ in checkpoint.epochs_on_disk(run)] == [1]
    assert checkpoint.latest(run).epoch == 1
    # the next save clears the torn temp folder
    checkpoint.save(run, 2, checkpoint_params(2), {}, {})
    assert not [n for n in os.listdir(os.path.join(run, "checkpoints")) if n.startswith(".tmp")]
    # A folder without state.json (killed mid-write in an older layout) is skipped, not trusted.
    os.makedirs(os.path.join(run, "checkpoints", "epoch-0009"))
    assert checkpoint.latest(run, warn=False).epoch == 2


def _future_format(path: str) -> None:
    """Make the checkpoint at ``path`` unverifiable as a newer gpconv's would be to this one."""
    state_path = os.path.join(path, "state.json")
    state = json.load(open(state_path))
    state["format"] = "gpconv-checkpoint/2"
    json.dump(state, open(state_path, "w"))


def test_prune_counts_only_verified_checkpoints_and_deletes_no_unverifiable_one(tmp_path):
    run = str(tmp_path)
    root = os.path.join(run, "checkpoints")
    checkpoint.save(run, 1, checkpoint_params(1), {}, {}, keep=3)
    checkpoint.save(run, 2, checkpoint_params(2), {}, {}, keep=3)
    # epoch 1 rots on disk; epoch 5 is in a format this version cannot read
    params_1 = os.path.join(root, "epoch-0001", "params.safetensors")
    raw = bytearray(open(params_1, "rb").read())
    raw[-1] ^= 0xFF
    open(params_1, "wb").write(bytes(raw))
    shutil.copytree(os.path.join(root, "epoch-0002"), os.path.join(root, "epoch-0005"))
    _future_format(os.path.join(root, "epoch-0005"))
    unreadable = {p: tree_digest(os.path.join(root, p)) for p in ("epoch-0001", "epoch-0005")}
    checkpoint.save(run, 3, checkpoint_params(3), {}, {}, keep=1)
    assert [e for e, _ in checkpoint.epochs_on_disk(run)] == [1, 3, 5], (
        "keep=1 keeps the one verified checkpoint and leaves both unverifiable folders alone"
    )
    assert {p: tree_digest(os.path.join(root, p)) for p in unreadable} == unreadable
    assert checkpoint.latest(run, warn=False).epoch == 3


def _only_params_hash(state: dict) -> dict:
    """A state.json's 'files' hashing params.safetensors only: verify raised KeyError (not the
    ValueError latest and prune skip) on the missing optimizer.safetensors hash."""
    return {"params.safetensors": state["files"]["params.safetensors"]}


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda state: [state], "expected a JSON object, found list"),
        (lambda state: {**state, "files": "abc"}, "expected 'files' to give the SHA-256"),
        (lambda state: {**state, "files": {}}, "expected 'files' to give the SHA-256"),
        (lambda state: {**state, "files": _only_params_hash(state)}, "expected 'files' to give"),
        (lambda state: {**state, "epoch": "two"}, "expected an integer epoch, found 'two'"),
        (lambda state: {**state, "epoch": True}, "expected an integer epoch, found True"),
        (lambda state: b"\xff\xfe garbage", "'utf-8' codec can't decode"),
    ],
    ids=["list", "files-str", "files-empty", "files-one", "epoch-str", "epoch-bool", "not-utf8"],
)
def test_a_checkpoint_with_an_odd_state_json_is_skipped_by_latest_and_save(
    tmp_path, edit, fragment
):
    """Valid JSON of the wrong form raised AttributeError from verify: latest crashed --resume,
    and prune (in every later save) crashed the run at its next epoch end. An empty 'files'
    verified a folder whose params.safetensors was gone. Bytes that are no UTF-8 were skipped
    with a message that did not name the file."""
    run = str(tmp_path)
    checkpoint.save(run, 1, checkpoint_params(1), {}, {})
    odd = checkpoint.save(run, 2, checkpoint_params(2), {}, {})
    os.remove(os.path.join(odd.path, "params.safetensors"))
    state_path = os.path.join(odd.path, "state.json")
    edited = edit(json.load(open(state_path)))
    with open(state_path, "wb") as f:
        f.write(edited if isinstance(edited, bytes) else json.dumps(edited).encode())
    with pytest.raises(ValueError, match=rf"corrupt {re.escape(state_path)}: {fragment}"):
        checkpoint.verify(odd.path)
    assert checkpoint.latest(run, warn=False).epoch == 1
    # prunes epoch 1, keeps the odd one
    checkpoint.save(run, 3, checkpoint_params(3), {}, {}, keep=1)
    assert [e for e, _ in checkpoint.epochs_on_disk(run)] == [2, 3]


def test_prune_never_deletes_the_checkpoint_just_written(tmp_path):
    run = str(tmp_path)
    checkpoint.save(run, 5, checkpoint_params(5), {}, {}, keep=1)
    written = checkpoint.save(run, 2, checkpoint_params(2), {}, {}, keep=1)
    assert [e for e, _ in checkpoint.epochs_on_disk(run)] == [2, 5]
    assert checkpoint.verify(written.path).epoch == 2


def test_a_crash_while_pruning_leaves_no_torn_checkpoint(tmp_path, monkeypatch):
    run = str(tmp_path)
    checkpoint.save(run, 1, checkpoint_params(1), {}, {}, keep=1)
    real_rmtree = shutil.rmtree

    def killed_half_way(path, *args, **kwargs):
        params = os.path.join(path, "params.safetensors")
        if not os.path.isfile(params):  # not a checkpoint (save clearing its own temp name)
            return real_rmtree(path, *args, **kwargs)
        os.remove(params)
        raise KeyboardInterrupt("simulated kill while deleting")

    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(run, 2, checkpoint_params(2), {}, {}, keep=1)
    monkeypatch.setattr(checkpoint.shutil, "rmtree", real_rmtree)
    for _, path in checkpoint.epochs_on_disk(run):
        checkpoint.verify(path)  # the half-deleted epoch 1 is no longer under an epoch-NNNN name
    assert [e for e, _ in checkpoint.epochs_on_disk(run)] == [2]
    checkpoint.save(run, 3, checkpoint_params(3), {}, {}, keep=1)  # which clears the remains
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["epoch-0003"]


def test_save_moves_aside_whatever_is_at_its_target(tmp_path, capsys):
    run = str(tmp_path)
    root = os.path.join(run, "checkpoints")
    checkpoint.save(run, 1, checkpoint_params(1), {}, {})
    in_the_way = os.path.join(root, "epoch-0002")
    shutil.copytree(os.path.join(root, "epoch-0001"), in_the_way)
    _future_format(in_the_way)
    before = tree_digest(in_the_way)
    checkpoint.save(run, 2, checkpoint_params(2), {}, {})
    aside = in_the_way + ".unverifiable-1"
    assert tree_digest(aside) == before, "the unreadable folder is kept, byte for byte"
    err = capsys.readouterr().err
    assert f"moved {in_the_way} aside to {aside}" in err and "gpconv-checkpoint/2" in err
    assert checkpoint.latest(run, warn=False).epoch == 2
    np.testing.assert_array_equal(
        checkpoint.latest(run).params()["a/kernel"], checkpoint_params(2)["a/kernel"]
    )
    # a verified checkpoint in the way (another writer, or the API called twice) is kept too
    checkpoint.save(run, 2, checkpoint_params(7), {}, {})
    assert checkpoint.verify(in_the_way + ".replaced-1").params()["b/bias"][1] == 2
    assert os.path.isdir(aside) and checkpoint.latest(run).params()["b/bias"][1] == 7
    assert [e for e, _ in checkpoint.epochs_on_disk(run)] == [1, 2]


# --- end-to-end with the numpy reference -------------------------------------------------------


def test_run_folder_contents(numpy_run):
    rows = metrics_rows(numpy_run)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    with open(os.path.join(numpy_run, "metrics.csv")) as f:
        assert f.readline().strip() == "epoch,train_loss,train_acc,test_loss,test_acc,lr,seconds"
    summary = json.load(open(os.path.join(numpy_run, "summary.json")))
    assert summary["status"] == "complete" and summary["epochs_completed"] == 3
    assert summary["params"] == {"trainable": 639702, "non_trainable": 45632}
    assert summary["machine"]["cpus"] >= 1 and summary["final"]["test_acc"] is not None
    assert summary["device"] == "cpu"
    assert summary["config"]["keep_freed_memory"] is True  # the CLI's default
    assert open(os.path.join(numpy_run, "curves.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    load_params(
        os.path.join(numpy_run, "params.safetensors"), by_name("kefficientnet-b0", 10, 16, 0)
    )
    state = checkpoint.latest(numpy_run).state
    assert state["epoch"] == 3 and len(state["history"]) == 3 and state["rng"]["seed"] == 0
    assert [float(r["lr"]) for r in rows][0] == pytest.approx(0.05)


def test_compare_runs_plot_and_table(numpy_run, tmp_path, capsys):
    from gpconv.train import metrics

    png = tmp_path / "both.png"
    assert metrics.main([numpy_run, numpy_run, "-o", str(png), "--table"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 4 and "| kefficientnet-b0-16ch | numpy | 639,702 | 3 |" in table[2]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_resume_from_earlier_checkpoint_equals_uninterrupted(numpy_run, tmp_path):
    run = str(tmp_path / "resumed")
    shutil.copytree(numpy_run, run)
    shutil.rmtree(os.path.join(run, "checkpoints", "epoch-0003"))  # as if killed during epoch 3
    assert train(*NUMPY_TINY, "--out", run, "--resume") == 0
    assert metrics_rows(run) == metrics_rows(numpy_run)
    assert_same_params(
        os.path.join(run, "params.safetensors"), os.path.join(numpy_run, "params.safetensors")
    )


# `gpconv train` that SIGKILLs itself right after epoch 2's second step: a kill at a fixed point
# (the parent reading that step's line and killing raced the rest of the epoch and its checkpoint).
_KILLED_AFTER_EPOCH_2_STEP_2 = """
import os, signal, sys
from gpconv.cli.main import main
from gpconv.train.progress import EpochProgress

update = EpochProgress.update

def update_then_die(self, images, loss, acc):
    update(self, images, loss, acc)
    if self.label.startswith("epoch 2/") and self.done == 2:
        os.kill(os.getpid(), signal.SIGKILL)

EpochProgress.update = update_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_mid_epoch_then_resume(numpy_run, tmp_path):
    run = str(tmp_path / "killed")
    args = ["train", *[a for a in NUMPY_TINY if a != "--quiet"], "--out", run]
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_EPOCH_2_STEP_2, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert "epoch 2/3 step 2/3" in killed.stdout, killed.stdout
    assert checkpoint.latest(run).epoch == 1, "epoch 1 finished before the kill"
    assert [r["epoch"] for r in metrics_rows(run)] == ["1"]
    cmd = [sys.executable, "-m", "gpconv.cli", *args, "--resume"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "resuming after epoch 1" in out.stdout
    assert metrics_rows(run) == metrics_rows(numpy_run)
    assert_same_params(
        os.path.join(run, "params.safetensors"), os.path.join(numpy_run, "params.safetensors")
    )
    for _, path in checkpoint.epochs_on_disk(run):
        checkpoint.verify(path)
    assert not [n for n in os.listdir(os.path.join(run, "checkpoints")) if n.startswith(".tmp")]
    # a real `gpconv train` process keeps freed memory (gpconv.perf.allocator) where it can
    malloc = json.load(open(os.path.join(run, "summary.json")))["machine"]["malloc"]
    assert ("freed memory kept" in malloc) == GLIBC, malloc


def test_a_kill_before_the_best_params_are_written_is_repaired_by_resume(
    numpy_run, tmp_path, monkeypatch
):
    """Interrupted after the best epoch's checkpoint but before its best.safetensors, the resumed
    run kept an older epoch's best file (or none) while summary.json named the best epoch."""
    best = json.load(open(os.path.join(numpy_run, "summary.json")))["best_epoch"]
    real_save = writer.save_params

    def interrupted(path, params, metadata=None):
        if path.endswith(run_module.BEST_PARAMS) and (metadata or {}).get("epoch") == str(best):
            raise KeyboardInterrupt  # Ctrl-C (or SIGKILL) in that instant
        real_save(path, params, metadata=metadata)

    monkeypatch.setattr(writer, "save_params", interrupted)
    out = str(tmp_path / "run")
    assert train(*NUMPY_TINY, "--out", out) == 130
    assert checkpoint.latest(out).epoch == best
    monkeypatch.setattr(writer, "save_params", real_save)
    assert train(*NUMPY_TINY, "--out", out, "--resume") == 0
    name = run_module.BEST_PARAMS
    assert read_metadata(os.path.join(out, name))["epoch"] == str(best)
    assert_same_params(os.path.join(numpy_run, name), os.path.join(out, name))


def _scripted_test_accuracy(monkeypatch, accs: list[float]) -> None:
    """Make the runs' evaluations return ``accs`` in turn (test loss 1.0): which epoch is best,
    and whether a retrained epoch reproduces its accuracy, become the test's choice."""
    it = iter(accs)
    monkeypatch.setattr("gpconv.train.loop.evaluate", lambda *args: (1.0, next(it)))


def _corrupt_checkpoint(run: str, epoch: int) -> None:
    path = os.path.join(run, "checkpoints", f"epoch-{epoch:04d}", "params.safetensors")
    raw = bytearray(open(path, "rb").read())
    raw[-1] ^= 0xFF
    open(path, "wb").write(bytes(raw))


@pytest.mark.slow  # two 3-epoch numpy runs each: 7-12 s on the loaded 2-core machine
@pytest.mark.parametrize("best_checkpoint_kept", [True, False], ids=["restored", "removed"])
def test_a_fallback_resume_leaves_no_best_params_of_an_epoch_it_trains_again(
    tmp_path, monkeypatch, capsys, best_checkpoint_kept
):
    """Epoch 3 was best (best.safetensors) and its checkpoint broke: the resume from epoch 2
    trains epoch 3 again, worse this time (as with another --epochs); best.safetensors still held
    the first epoch 3, which no row of metrics.csv describes, while summary.json named epoch 1."""
    out = str(tmp_path / "run")
    _scripted_test_accuracy(monkeypatch, [0.5, 0.25, 0.75, 0.125])
    args = [*NUMPY_TINY, "--limit", "16", "--keep", "3", "--out", out]  # one step per epoch
    assert train(*args) == 0
    first = load_params(os.path.join(out, "checkpoints", "epoch-0001", "params.safetensors"))
    _corrupt_checkpoint(out, 3)
    if not best_checkpoint_kept:
        shutil.rmtree(os.path.join(out, "checkpoints", "epoch-0001"))
    assert train(*args, "--resume") == 0
    assert [float(r["test_acc"]) for r in metrics_rows(out)] == [0.5, 0.25, 0.125]
    assert json.load(open(os.path.join(out, "summary.json")))["best_epoch"] == 1
    best = os.path.join(out, run_module.BEST_PARAMS)
    if best_checkpoint_kept:
        assert read_metadata(best)["epoch"] == "1" and read_metadata(best)["test_acc"] == "0.5"
        restored = load_params(best)
        assert restored.keys() == first.keys()
        for k in first:
            np.testing.assert_array_equal(restored[k], first[k], err_msg=k)
    else:  # epoch 1's parameters are gone: no file rather than another epoch's
        assert not os.path.exists(best), read_metadata(best)
        assert f"removed {best}" in capsys.readouterr().err


def test_a_restart_from_scratch_keeps_no_file_of_the_earlier_epochs(tmp_path, monkeypatch, capsys):
    """--resume with no checkpoint that verifies starts again from scratch. The earlier epochs'
    files stayed: a restart whose first epoch diverged kept that run's best.safetensors and final
    params.safetensors beside a summary.json saying "diverged", best_epoch null."""
    out = str(tmp_path / "run")
    args = [*NUMPY_TINY, "--limit", "16", "--epochs", "1", "--out", out]  # one step per epoch
    assert train(*args) == 0
    _corrupt_checkpoint(out, 1)
    real_epoch = loop.train_epoch

    def diverging_epoch(*args):
        return {**real_epoch(*args), "train_loss": float("nan")}

    monkeypatch.setattr("gpconv.train.loop.train_epoch", diverging_epoch)
    capsys.readouterr()
    assert train(*args, "--resume") == 1
    assert _strict_json(os.path.join(out, "summary.json"))["best_epoch"] is None
    assert [r["epoch"] for r in metrics_rows(out)] == ["1"]
    assert not os.path.lexists(os.path.join(out, run_module.BEST_PARAMS))
    assert not os.path.lexists(os.path.join(out, "params.safetensors"))
    assert "removed the earlier epochs' metrics.csv" in capsys.readouterr().err


@pytest.mark.parametrize(
    "edit, fault",
    [
        ({"history": []}, r"a history of epochs \[\] for epoch 3 \(expected 1\.\.3\)"),
        ({"history": "x"}, r"a history of epochs 'x' for epoch 3"),
        ({"identity": None}, r"an 'identity' that is no JSON object"),
        ({"optimizer": ...}, r"no 'optimizer'"),
    ],
    ids=["empty-history", "history-no-list", "identity-no-object", "no-optimizer"],
)
def test_resume_refuses_a_checkpoint_whose_state_lacks_what_it_reads(
    numpy_run, tmp_path, capsys, edit, fault
):
    """state.json is not hashed. An empty history (edited by hand, or bit rot) ended with an
    IndexError, and once that was mended, resumed: the last checkpoint's parameters were trained
    for 3 more epochs and metrics.csv restarted at epoch 1. A missing key was a KeyError."""
    run = str(tmp_path / "edited")
    shutil.copytree(numpy_run, run)
    state_file = os.path.join(checkpoint.latest(run).path, "state.json")
    with open(state_file, encoding="utf-8") as f:
        state = json.load(f)
    state = {k: v for k, v in {**state, **edit}.items() if v is not ...}
    checkpoint.write_json_atomic(state_file, state)
    before = open(os.path.join(run, "metrics.csv"), encoding="utf-8").read()
    assert train(*NUMPY_TINY, "--out", run, "--resume") == 2
    err = capsys.readouterr().err
    assert re.search(rf"cannot --resume from .*epoch-0003: its state\.json has {fault}", err), err
    assert "Traceback" not in err
    assert open(os.path.join(run, "metrics.csv"), encoding="utf-8").read() == before


def test_resume_after_completion_changes_nothing(numpy_run, tmp_path):
    run = str(tmp_path / "done")
    shutil.copytree(numpy_run, run)
    before = checkpoint.latest(run).state["history"]
    assert train(*NUMPY_TINY, "--out", run, "--resume") == 0
    assert checkpoint.latest(run).state["history"] == before


def test_resume_refuses_fewer_epochs_than_completed(numpy_run, tmp_path, capsys):
    run = str(tmp_path / "done")
    shutil.copytree(numpy_run, run)
    before = tree_digest(run)
    assert train(*NUMPY_TINY, "--epochs", "2", "--out", run, "--resume") == 2
    assert (
        "Expected --epochs >= 3 (the run has completed 3 epochs; --epochs cannot shrink below "
        "that on --resume), received --epochs 2" in capsys.readouterr().err
    )
    assert tree_digest(run) == before


# --- one process per run folder ------------------------------------------------------------------

HOLD_LOCK = """
import sys
from gpconv.train.outlock import OutLock
lock = OutLock.acquire(sys.argv[1])
print("locked", flush=True)
sys.stdin.readline()
lock.release()
"""


@pytest.fixture
def lock_holder():
    """Start a process that holds the lock of a folder until the test ends."""
    procs = []

    def hold(folder: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, folder],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline() == "locked\n"
        return proc

    yield hold
    for proc in procs:
        proc.communicate("\n", timeout=30)


@pytest.mark.skipif(sys.platform == "win32", reason="folders are locked with fcntl (POSIX)")
def test_second_run_on_a_busy_folder_stops_and_writes_nothing(tmp_path, capsys, lock_holder):
    out = tmp_path / "run"
    holder = lock_holder(str(out))
    assert train(*NUMPY_TINY, "--out", str(out)) == 2
    assert f"--out {out} is in use by another gpconv train (pid {holder.pid})" in (
        capsys.readouterr().err
    )
    assert os.listdir(out) == [".gpconv-train.lock"]  # the holder's; nothing of ours


@pytest.mark.skipif(sys.platform == "win32", reason="folders are locked with fcntl (POSIX)")
def test_resume_of_a_busy_run_stops_and_changes_nothing(numpy_run, tmp_path, capsys, lock_holder):
    run = str(tmp_path / "busy")
    shutil.copytree(numpy_run, run)
    shutil.rmtree(os.path.join(run, "checkpoints", "epoch-0003"))
    lock_holder(run)
    before = tree_digest(run)
    assert train(*NUMPY_TINY, "--out", run, "--resume") == 2
    assert "is in use by another gpconv train" in capsys.readouterr().err
    assert tree_digest(run) == before


def test_a_run_that_appears_while_waiting_for_the_lock_is_not_overwritten(
    numpy_run, tmp_path, monkeypatch, capsys
):
    """The folder is checked again under the lock: here another run writes run.json into it
    after the first (unlocked) check passed."""
    from gpconv.train import run as run_module

    out = tmp_path / "raced"
    real_acquire = run_module.OutLock.acquire

    def acquire_after_another_run(folder):
        shutil.copytree(numpy_run, folder)
        return real_acquire(folder)

    monkeypatch.setattr(run_module.OutLock, "acquire", acquire_after_another_run)
    before = tree_digest(numpy_run)
    assert train(*NUMPY_TINY, "--out", str(out)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert tree_digest(str(out)) == before  # and the lock file is gone again


def test_lock_is_released_and_removed(numpy_run, tmp_path):
    from gpconv.train.outlock import LOCK_NAME, OutLock

    assert LOCK_NAME not in os.listdir(numpy_run)
    folder = tmp_path / "a" / "b"
    lock = OutLock.acquire(str(folder))
    assert open(folder / LOCK_NAME).read() == f"{os.getpid()}\n"
    lock.release()
    assert not (tmp_path / "a").exists()  # it created both folders and wrote nothing else
    OutLock.acquire(str(folder)).release()  # free again


def test_a_lock_that_cannot_make_its_folder_leaves_no_folder_behind(tmp_path):
    """makedirs can fail below folders it already made (a name too long for the last level):
    those are removed too."""
    from gpconv.train.outlock import OutLock

    with pytest.raises(OSError):
        OutLock.acquire(str(tmp_path / "new" / "deeper" / ("a" * 300)))
    assert list(tmp_path.iterdir()) == []


def test_fit_refuses_a_history_longer_than_epochs():
    from gpconv.train.distributed import Dist
    from gpconv.train.loop import LoopConfig, fit

    digits = data.load_digits(8).limited(16)
    fw = create("numpy", tiny_architecture(num_classes=10), OptimConfig())
    history = [{"epoch": e} for e in (1, 2, 3)]
    with pytest.raises(ValueError, match=r"Expected epochs >= 3 .*, received epochs 2"):
        fit(fw, digits, LoopConfig(epochs=2, batch_size=8, lr=0.1), Dist(), history)


# --- bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--backend", "jax", "--model", "efficientnet-b0"],
        ["--backend", "numpy", "--model", "resnet50"],
        ["--backend", "numpy", "--model", "efficientnet-b0", "--optimizer", "rmsprop"],
    ],
)
def test_argparse_rejects_unknown_choices(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train(*args, "--out", str(tmp_path / "x"))
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epochs", "-1"], "--epochs >= 1"),
        (["--batch-size", "0"], "--batch-size >= 1"),
        (["--seed", "-1"], "--seed >= 0"),
        (["--lr", "-0.1"], "--lr finite, > 0"),
        (["--lr", "inf"], "--lr finite, > 0 and <= 3.403e+38 (float32's largest"),
        (["--lr", "1e39"], "received 1e+39"),  # torch's update overflowed with a traceback
        (["--data", "cifar10"], "--data digits, cifar10=DIR or folder=DIR"),
        (["--data", "cifar10=/no/such/dir"], "/no/such/dir"),
        (["--batch-size", "1000"], "exceeds the 48 training images"),
        (["--compile"], "Expected --backend in ('torch', 'tensorflow') with --compile"),
        (["--device", "cuda"], "Expected --device only with --backend torch"),
    ],
)
def test_bad_values_exit_2_and_write_nothing(extra, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(*NUMPY_TINY, "--out", str(out), *extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert train(*NUMPY_TINY, "--out", str(blocker / "run")) == 2
    assert "cannot create --out" in capsys.readouterr().err
    assert train(*NUMPY_TINY, "--out", str(blocker)) == 2
    assert "not a folder" in capsys.readouterr().err


def test_existing_runs_are_never_overwritten(numpy_run, tmp_path, capsys):
    before = tree_digest(numpy_run)
    assert train(*NUMPY_TINY, "--out", numpy_run) == 2  # same run, no --resume
    assert "pass --resume" in capsys.readouterr().err
    other = [a if a != "kefficientnet-b0" else "efficientnet-b0" for a in NUMPY_TINY]
    assert train(*other, "--out", numpy_run, "--resume") == 2  # resume as another model
    err = capsys.readouterr().err
    assert (
        "different run" in err
        and "model: run has 'kefficientnet-b0', requested 'efficientnet-b0'" in err
    )
    seed = [*NUMPY_TINY, "--seed", "1"]
    assert train(*seed, "--out", numpy_run, "--resume") == 2
    assert "seed: run has 0, requested 1" in capsys.readouterr().err
    assert tree_digest(numpy_run) == before
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    assert train(*NUMPY_TINY, "--out", str(stranger)) == 2
    assert "holds no gpconv run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"\xff\xfe", "'utf-8' codec can't decode byte 0xff"),
        (b"[]", "expected a JSON object, found list"),
        (b"{}", r"expected a JSON object for each of \['identity'\], found identity=None"),
        (
            b'{"identity": {}, "data": []}',
            r"expected a JSON object for each of \['data'\], found data=\[\]",
        ),
    ],
    ids=["not-utf8", "list", "no-identity", "data-list"],
)
@pytest.mark.parametrize("resume", [[], ["--resume"]])
def test_a_corrupt_run_json_is_an_error_naming_it(tmp_path, capsys, content, fragment, resume):
    """These were tracebacks (UnicodeDecodeError, TypeError, KeyError, AttributeError) from
    check_out before anything ran; the folder is left as it was."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("epoch\n")  # it trained something: run.json is read
    (out / "run.json").write_bytes(content)
    before = tree_digest(str(out))
    assert train(*NUMPY_TINY, "--out", str(out), *resume) == 2
    assert re.search(
        rf"cannot read {re.escape(str(out / 'run.json'))}: {fragment}", capsys.readouterr().err
    )
    assert tree_digest(str(out)) == before


def test_run_config_identity_ignores_epochs_and_m_for_efficientnet():
    a = RunConfig("torch", "efficientnet-b0", "x", epochs=3, min_channels_per_group=16).identity()
    b = RunConfig("torch", "efficientnet-b0", "x", epochs=9, min_channels_per_group=32).identity()
    assert a == b and a["lr"] == 0.05
    assert RunConfig("torch", "kefficientnet-b0", "x", optimizer="adam").identity()["lr"] == 1e-3


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("augment", "no", "augment to be True or False, received str 'no'"),
        ("sync_bn", 0, "sync_bn to be True or False, received int 0"),
        ("epochs", 2.5, "epochs to be an int, received float 2.5"),
        ("epochs", "3", "epochs to be an int, received str '3'"),
        ("seed", True, "seed to be an int, received bool True"),
        ("limit", 1.5, "limit to be an int, received float 1.5"),
        ("threads", "2", "threads to be an int, received str '2'"),
        ("lr", "0.1", "lr to be a real number, received str '0.1'"),
    ],
)
def test_run_config_refuses_values_of_another_type(field, value, fragment):
    """A RunConfig built in Python used to take augment="no" as True and epochs=2.5 or
    limit=1.5 without a word, and to fail on epochs="3" with "'<' not supported between
    instances of 'str' and 'int'"."""
    cfg = RunConfig("numpy", "kefficientnet-b0", "x", **{field: value})
    with pytest.raises(TypeError, match=re.escape(fragment)):
        cfg.validate()


def test_data_helpers_name_bad_arguments():
    """These used to raise ZeroDivisionError (size 0), 'not enough values to unpack', "'int'
    object has no attribute 'partition'", or return NaN statistics for no images (which would
    normalise every image to NaN), an empty epoch for n=-1 and an augmented one for "no"."""
    images = np.zeros((2, 8, 8, 3), np.float32)
    cases = [
        (lambda: data.resize_bilinear(images, 0), ValueError, "size >= 1, received size=0"),
        (lambda: data.resize_bilinear(images[0], 4), ValueError, "images.shape=(8, 8, 3)"),
        (lambda: data.channel_stats(images[:0]), ValueError, "at least one image"),
        (lambda: data.load("digits", 0), ValueError, "image_size >= 1, received image_size=0"),
        (lambda: data.load(3), TypeError, "spec to be a str, received int 3"),
        (lambda: sampling.plan_epoch(-1, 0, 0), ValueError, "n >= 0, received n=-1"),
        (lambda: sampling.plan_epoch(4, 0, 0, augment="no"), TypeError, "augment to be True"),
        # NumPy's own: 'unrecognized seed string', 'seed must be integer', naming no argument
        (lambda: sampling.plan_epoch(4, "0", 0), TypeError, "seed to be an int, received str"),
        (lambda: sampling.epoch_rng(0, 1.0, 0), TypeError, "epoch to be an int, received float"),
        (lambda: sampling.derived_seed(0, 0, 0, -1), ValueError, "extra[0] >= 0, received"),
    ]
    for call, exc, fragment in cases:
        with pytest.raises(exc) as info:
            call()
        assert fragment in str(info.value), f"{fragment!r} not in {info.value!r}"


def test_numpy_integer_seeds_plan_the_same_epochs_as_ints():
    """The seed check turns NumPy integers into ints: the streams must not change with it."""
    a = sampling.plan_epoch(9, np.int64(7), np.uint32(3), augment=True)
    b = sampling.plan_epoch(9, 7, 3, augment=True)
    for field in ("order", "crops", "flips"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert sampling.derived_seed(np.int32(5), 1, 2, np.int8(3)) == sampling.derived_seed(5, 1, 2, 3)


def test_compiling_is_part_of_a_runs_identity_and_absent_means_eager():
    eager = RunConfig("torch", "efficientnet-b0", "x").identity()
    compiled = RunConfig("torch", "efficientnet-b0", "x", compile_step=True).identity()
    assert identity_diff(eager, compiled) == ["compile_step: run has False, requested True"]
    older = {k: v for k, v in eager.items() if k != "compile_step"}  # run.json before --compile
    assert identity_diff(older, eager) == []
    assert identity_diff(older, compiled) == ["compile_step: run has False, requested True"]


def test_only_frameworks_with_a_compiler_compile():
    arch = by_name("kefficientnet-b0", 10, 16, 3)
    for backend in ("numpy", "cupy"):
        with pytest.raises(ValueError, match=r"compiler \('torch', 'tensorflow'\).*'" + backend):
            create(backend, arch, OptimConfig(), compile_step=True)


def test_device_labels():
    assert format_device("cpu") == "cpu"
    assert format_device("cuda", 1, "NVIDIA H100 80GB HBM3") == "cuda:1 NVIDIA H100 80GB HBM3"
    assert format_device("cuda", 0) == "cuda:0"
    assert create("numpy", tiny_architecture(), OptimConfig()).device_label == "cpu"
    if importlib.util.find_spec("tensorflow") is not None:
        import tensorflow as tf

        from gpconv.train.frameworks.tensorflow_fw import tensorflow_device_label

        expected = "cpu" if not tf.config.list_physical_devices("GPU") else "gpu:0"
        assert tensorflow_device_label().startswith(expected)


@pytest.mark.parametrize("option", [None, "cpu"])
def test_torch_runs_say_which_device_they_train_on(option, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    device = "cpu"
    if option is None and torch.cuda.is_available():  # the default: CUDA when available
        device = f"cuda:0 {torch.cuda.get_device_name(0)}"
    out = str(tmp_path / "run")
    extra = ["--device", option] if option else []
    assert train(*TORCH_TINY, "--epochs", "1", *extra, "--out", out) == 0
    assert f"with torch ({device}) on digits" in capsys.readouterr().out
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["device"] == device and summary["config"]["device"] == option


def test_device_option_is_checked_before_anything_runs():
    check_device(None, "numpy")
    check_device("cpu", "torch", world=2)
    for device, backend, world, message in [
        ("cuda", "numpy", 1, "only with --backend torch"),
        ("cpu", "tensorflow", 1, "only with --backend torch"),
        ("gpu", "torch", 1, "cpu, cuda or cuda:N"),
        ("cuda:", "torch", 1, "cpu, cuda or cuda:N"),
        ("cuda:1", "torch", 2, "under torchrun"),
        ("cuda:99", "torch", 1, "CUDA device"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_device(device, backend, world)
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="one of the 0 CUDA device"):
            check_device("cuda", "torch")


def was_compiled(fw) -> bool:
    if fw.name == "torch":
        import torch

        return isinstance(fw.model, torch._dynamo.eval_frame.OptimizedModule)
    return fw._step._jit_compile  # the train step's tf.function


# Dropout draws from the compiler's own RNG, so compiled and eager steps are compared without it.
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_compiled_train_steps_equal_eager_ones(backend):
    pytest.importorskip(backend)
    arch = without_dropout(tiny_architecture(skip_stride_cnt=1))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 9, 9, 3)).astype(np.float32)
    other_size = rng.standard_normal((2, 12, 12, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 0])
    runs = {}
    for compiled in (False, True):
        fw = create(backend, arch, OptimConfig("sgd", 0.1), seed=0, compile_step=compiled)
        steps = [fw.train_step(x, labels) for _ in range(2)]
        runs[compiled] = steps, fw.export_params(), fw.predict(x)
        assert was_compiled(fw) == compiled
        # Images of another size compile again (with dynamic shapes, torch 2.13 crashed here).
        assert np.isfinite(fw.train_step(other_size, labels[:2])[0])
    (eager_steps, eager_params, eager_pred), (steps, params, pred) = runs[False], runs[True]
    for (loss, logits), (eager_loss, eager_logits) in zip(steps, eager_steps, strict=True):
        assert loss == pytest.approx(eager_loss, rel=1e-4)  # DESIGN.md §4's network bound:
        logit_atol = 1e-3 * max(1.0, np.abs(eager_logits).max())
        np.testing.assert_allclose(logits, eager_logits, rtol=0, atol=logit_atol)
    assert params.keys() == eager_params.keys()
    for name, value in params.items():  # after two updates, moving statistics included
        np.testing.assert_allclose(value, eager_params[name], rtol=1e-3, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(pred, eager_pred, rtol=0, atol=1e-3 * max(1.0, np.abs(pred).max()))


# --- torch ---------------------------------------------------------------------------------------


def test_torch_exports_are_snapshots():
    pytest.importorskip("torch")
    fw = create("torch", without_dropout(tiny_architecture()), OptimConfig("sgd", 0.1), seed=0)
    x, labels = tiny_batch()
    fw.train_step(x, labels)
    params, (slots, _) = fw.export_params(), fw.optimizer_state()
    before = {k: v.copy() for k, v in {**params, **slots}.items()}
    fw.train_step(x, labels)  # updates parameters and momentum buffers in place
    moved = [k for k, v in {**params, **slots}.items() if not np.array_equal(v, before[k])]
    assert not moved, f"exports changed with the model: {moved[:5]}"


def test_torch_resume_equals_uninterrupted(tmp_path):
    pytest.importorskip("torch")
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    assert train(*TORCH_TINY, "--epochs", "2", "--out", full) == 0
    shutil.copytree(full, cut)
    shutil.rmtree(os.path.join(cut, "checkpoints", "epoch-0002"))
    assert train(*TORCH_TINY, "--epochs", "2", "--out", cut, "--resume") == 0
    assert metrics_rows(cut) == metrics_rows(full)
    assert_same_params(
        os.path.join(cut, "params.safetensors"),
        os.path.join(full, "params.safetensors"),
        rtol=1e-6,
        atol=1e-7,
    )
    opt = checkpoint.latest(cut).optimizer()
    assert any(k.endswith("/momentum_buffer") for k in opt), sorted(opt)[:3]


def _torchrun_train(*args: str) -> subprocess.CompletedProcess:
    """``gpconv train *args`` in 2 CPU processes under torchrun; asserts exit 0."""
    pytest.importorskip("torch")
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not on PATH")
    # Should a rank crash, every thread's Python stack (an abort at exit, 3 of 7 full CI runs
    # before train.distributed held the last collective's tensors, showed none: it was in exit).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    command = ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "gpconv.cli", "train"]
    out = subprocess.run([*command, *args], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-8000:]
    return out


_EVALUATION_RANK = """
import torch
from gpconv.core.arch import by_name
from gpconv.train.distributed import from_env
from gpconv.train.frameworks import OptimConfig, create

dist = from_env("cpu")
arch = by_name("kefficientnet-b0", 10, 16, 0)
fw = create("torch", arch, OptimConfig("sgd", 0.01), 0, dist, sync_bn=False, device="cpu")
with torch.no_grad():
    for buffer in fw.net.buffers():
        buffer.add_(dist.rank)  # what each replica's own BN updates do, exaggerated
fw.begin_evaluation()
print("moving statistics", sum(float(b.double().sum()) for b in fw.net.buffers()))
dist.close()
"""


@contextlib.contextmanager
def _rendezvous_store():
    """Environment for processes launched by hand as ranks of one group, with the TCPStore they
    meet at already listening, as torchrun's agent hosts it. (Picking a free port and closing it
    let another process, or rank 1's own retrying connection, take the port before rank 0 bound
    it.) ``TORCHELASTIC_USE_AGENT_STORE`` makes every rank a client of that store."""
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    try:
        yield {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(store.port),
            "TORCHELASTIC_USE_AGENT_STORE": "True",
        }
    finally:
        del store


def test_torch_replicas_score_the_test_set_with_rank_0s_moving_statistics(tmp_path):
    """Without --sync-bn each replica updates its own BN moving statistics from its shard after
    DDP's broadcast at the start of a training forward; each scored its part of the test set with
    them, so the test figures were those of no saved model (rank 0's is saved)."""
    pytest.importorskip("torch")
    procs = []
    with _rendezvous_store() as rendezvous:
        for rank in (0, 1):
            env = {**os.environ, **rendezvous, "WORLD_SIZE": "2", "RANK": str(rank)}
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", _EVALUATION_RANK],
                    env={**env, "OMP_NUM_THREADS": "1"},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        try:
            outs = [p.communicate(timeout=240) for p in procs]
        finally:
            for p in procs:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outs]
    sums = [out.strip().splitlines()[-1] for out, _ in outs]
    assert sums[0] == sums[1], sums
    fresh = create("torch", by_name("kefficientnet-b0", 10, 16, 0), OptimConfig("sgd", 0.01))
    assert (
        sums[0] == f"moving statistics {sum(float(b.double().sum()) for b in fresh.net.buffers())}"
    )


def test_evaluation_scores_every_test_image_in_its_last_partial_batch():
    class LastTwoWrong:
        def begin_evaluation(self):
            pass

        def predict(self, x):  # right for all but the images with a bright first pixel
            logits = np.zeros((len(x), 10), np.float32)
            logits[np.arange(len(x)), np.where(x[:, 0, 0, 0] > 0, 1, 0)] = 5.0
            return logits

    from gpconv.train.data import Dataset
    from gpconv.train.distributed import Dist
    from gpconv.train.loop import evaluate

    x = np.zeros((10, 2, 2, 3), np.uint8)
    x[8:, 0, 0, 0] = 1
    dataset = Dataset("ten", x, np.zeros(10, np.int64), x, np.zeros(10, np.int64), ["a"] * 10)
    dataset.mean, dataset.std = np.zeros(3, np.float32), np.ones(3, np.float32)
    loss, acc = evaluate(LastTwoWrong(), dataset, 4, Dist())  # batches of 4, 4 and 2
    assert acc == pytest.approx(0.8)


def test_the_summary_reports_the_last_epochs_speed_and_totals():
    from gpconv.train.writer import run_summary

    arch = by_name("kefficientnet-b0", 10, 16, 0)
    dataset = data.load("digits", 8).limited(16)
    row = dict(train_loss=1.0, train_acc=0.5, test_loss=1.0, test_acc=0.5, lr=0.1)
    history = [
        {**row, "epoch": 1, "images_per_s": 10.0, "seconds": 5.0},  # the first epoch warms up
        {**row, "epoch": 2, "images_per_s": 99.0, "seconds": 2.0},
    ]
    cfg = RunConfig(backend="numpy", model="kefficientnet-b0", out="unused", epochs=2)
    summary = run_summary(cfg, arch, dataset, history, "complete", 1, time.perf_counter(), "cpu")
    assert summary["train_images_per_s"] == 99.0
    assert summary["seconds_total"] == 7.0 and summary["epochs_completed"] == 2


def test_evaluation_tells_the_framework_before_its_first_prediction():
    calls = []

    class Recorder:
        def begin_evaluation(self):
            calls.append("begin")

        def predict(self, x):
            calls.append("predict")
            return np.zeros((len(x), 10), np.float32)

    from gpconv.train.distributed import Dist
    from gpconv.train.loop import evaluate

    evaluate(Recorder(), data.load("digits", 8).limited(64), 8, Dist())
    assert calls[0] == "begin" and calls.count("begin") == 1 and len(calls) > 2, calls


def test_torch_ddp_two_processes_match_one(tmp_path):
    """2 CPU processes (gloo, sync BN) vs 1 process with the same global batch of 16: the
    parameter updates agree to float32 rounding; per-process BN would not (x1.7 off here)."""
    args = [*TORCH_TINY, "--epochs", "1", "--no-dropout", "--device", "cpu"]  # gloo
    single, multi = str(tmp_path / "single"), str(tmp_path / "ddp")
    assert train(*args, "--out", single) == 0
    out = _torchrun_train(*args, "--out", multi)
    summary = json.load(open(os.path.join(multi, "summary.json")))
    assert summary["processes"] == 2
    a, b = metrics_rows(single), metrics_rows(multi)
    for key in ("train_loss", "test_loss"):
        assert float(b[0][key]) == pytest.approx(float(a[0][key]), rel=1e-3), key
    init = init_params(by_name("kefficientnet-b0", 10, 16, 0), 0)
    pa, pb = (
        load_params(os.path.join(single, "params.safetensors")),
        load_params(os.path.join(multi, "params.safetensors")),
    )
    keys = [k for k in pa if "moving" not in k]
    da = np.concatenate([(pa[k] - init[k]).ravel() for k in keys])
    db = np.concatenate([(pb[k] - init[k]).ravel() for k in keys])
    assert np.linalg.norm(da - db) / np.linalg.norm(da) < 1e-2
    assert out.stdout.count("gpconv train: done") == 1, "only rank 0 reports and writes"


class _OtherRanks(distributed.Dist):
    """Rank ``rank`` of a 2-process group whose other process contributes ``theirs`` to every sum
    and, as rank 0, broadcasts ``main`` (what ``prepare`` does with the run's arguments)."""

    def __init__(self, rank: int, main: dict | None = None, theirs: float = 0.0) -> None:
        super().__init__(rank, 2, 0)
        self.main, self.theirs, self.broadcasts = main, theirs, 0

    def broadcast(self, obj):
        # prepare broadcasts rank 0's error (none here), its arguments, its folder's error
        self.broadcasts += 1
        if self.is_main:
            return obj
        return self.main if self.broadcasts == 2 else None

    def allreduce_sum(self, values):
        return np.asarray(values, dtype=np.float64) + self.theirs


def test_every_process_stops_when_one_was_given_other_arguments(tmp_path):
    """Ranks launched by hand (or on several machines) with another --seed trained on duplicated
    and dropped images, another --lr drifted apart, another --epochs hung at a collective: both
    exit 0 before. Every process now raises, rank 0 included, before anything is written."""
    args = dict(backend="torch", model="kefficientnet-b0", data="digits", epochs=1)
    rank0 = RunConfig(**args, out=str(tmp_path / "run"), seed=0)
    rank1 = RunConfig(**args, out=str(tmp_path / "elsewhere"), seed=1, lr=0.5)
    main_args = run_module._shared_arguments(rank0)
    with pytest.raises(run_module.ConfigError) as err:
        run_module.prepare(rank1, _OtherRanks(1, main=main_args))
    assert "1 of 2 processes have other arguments than rank 0" in str(err.value)
    assert "seed: rank 0 has 0, rank 1 has 1" in str(err.value)
    assert "lr: rank 0 has 0.05, rank 1 has 0.5" in str(err.value)
    with pytest.raises(run_module.ConfigError, match="1 of 2 processes have other arguments"):
        run_module.prepare(rank0, _OtherRanks(0, theirs=1.0))
    assert not os.path.exists(tmp_path / "run"), "rank 0 claimed its folder before the check"
    # The same arguments, --out and --data's path aside (they may differ between machines):
    rank1 = RunConfig(**{**args, "data": "digits"}, out=str(tmp_path / "elsewhere"), seed=0)
    assert run_module.prepare(rank1, _OtherRanks(1, main=main_args)) is None


@pytest.mark.parametrize(
    "env,message",
    [
        ({"WORLD_SIZE": "abc"}, "WORLD_SIZE to be an integer >= 1, received 'abc'"),
        ({"WORLD_SIZE": "-3"}, "WORLD_SIZE to be an integer >= 1, received '-3'"),
        ({"WORLD_SIZE": "2"}, "environment variable RANK (torchrun sets it)"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK below WORLD_SIZE=2, received 2"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "x"}, "LOCAL_RANK to be an integer"),
    ],
)
def test_bad_torchrun_variables_are_usage_errors(tmp_path, monkeypatch, capsys, env, message):
    """WORLD_SIZE=abc gave a traceback, WORLD_SIZE=-3 trained as one process, a missing RANK a
    bare KeyError."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert train(*TORCH_TINY, "--out", str(tmp_path / "run")) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


def test_processes_launched_with_other_seeds_stop_together(tmp_path):
    """Two processes started by hand, as on two machines, rank 1 with another --seed: both exit
    2 naming the difference, and neither hangs."""
    pytest.importorskip("torch")
    args = [*TORCH_TINY, "--epochs", "1", "--device", "cpu"]
    procs = []
    with _rendezvous_store() as rendezvous:
        for rank in (0, 1):
            env = {**os.environ, **rendezvous, "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
            env.update(RANK=str(rank), LOCAL_RANK=str(rank))
            command = [sys.executable, "-m", "gpconv.cli", "train", *args]
            command += ["--seed", str(rank), "--out", str(tmp_path / f"run{rank}")]
            procs.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True))
        try:
            errors = [p.communicate(timeout=240)[1] for p in procs]
        finally:
            for p in procs:
                p.kill()
    assert [p.returncode for p in procs] == [2, 2], errors
    assert all("1 of 2 processes have other arguments than rank 0" in e for e in errors), errors
    assert "seed: rank 0 has 0, rank 1 has 1" in errors[1], errors
    assert not os.path.exists(tmp_path / "run0") and not os.path.exists(tmp_path / "run1")


# Under DDP every batch norm all-reduces. Dynamo must trace that collective: with the deprecated
# torch.distributed.nn.functional.all_reduce it broke the graph at each BN and fell back to
# running most layers eagerly (recompile limit). fullgraph=True fails on any graph break. A group
# of one process keeps this fast; the sync path is forced, so its all-reduces (the identity here)
# are traced and differentiated.
@pytest.mark.slow
def test_synchronised_batch_norm_compiles_to_one_graph(one_rank_group, monkeypatch):
    torch = pytest.importorskip("torch")

    from gpconv.backends.torch.model import EfficientNet
    from gpconv.conformance.results import gradient_errors
    from gpconv.train.frameworks.torch_syncbn import SyncKerasBatchNorm2d, convert_sync_batchnorm

    arch = without_dropout(tiny_architecture())
    plain, synced = (EfficientNet(arch, seed=0).train() for _ in range(2))
    assert convert_sync_batchnorm(synced) > 0
    # The process-group queries that decide whether to synchronise trace without a break...
    bn = next(m for m in synced.modules() if isinstance(m, SyncKerasBatchNorm2d))
    branch = torch._dynamo.explain(lambda x: x + 1 if bn.synchronises() else x - 1)
    assert branch(torch.ones(2)).graph_break_count == 0
    # ...and the synchronised path (forced: a group of one would skip it) is one graph.
    monkeypatch.setattr(SyncKerasBatchNorm2d, "synchronises", lambda self: self.training)
    compiled = torch.compile(synced, fullgraph=True, dynamic=False)
    x = torch.randn(4, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    outputs = []
    for model, module in ((plain, plain), (compiled, synced)):
        logits = model(x)
        logits.square().sum().backward()
        grads = {n: p.grad.numpy() for n, p in module.named_parameters()}
        outputs.append((logits.detach(), grads))
    (ref, ref_grads), (got, grads) = outputs
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-3 * max(1.0, ref.abs().max().item()))
    assert grads.keys() == ref_grads.keys()
    bad = {k: c for k, c in gradient_errors(grads, ref_grads).items() if not c.ok}  # DESIGN §4
    assert not bad, bad
    for name, buf in synced.named_buffers():  # moving statistics updated like the plain BN's
        torch.testing.assert_close(buf, plain.get_buffer(name), rtol=1e-4, atol=1e-5)


# --- tensorflow ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_tensorflow_trains_and_resumes(tmp_path):
    pytest.importorskip("tensorflow")
    args = [a if a != "torch" else "tensorflow" for a in TORCH_TINY]
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    assert train(*args, "--epochs", "2", "--out", full) == 0
    shutil.copytree(full, cut)
    shutil.rmtree(os.path.join(cut, "checkpoints", "epoch-0002"))
    assert train(*args, "--epochs", "2", "--out", cut, "--resume") == 0
    a, b = metrics_rows(full), metrics_rows(cut)
    for key in ("train_loss", "test_loss", "train_acc"):
        assert float(b[1][key]) == pytest.approx(float(a[1][key]), rel=1e-4), key


# --- failures while running: divergence, a full disk, a run killed before its first epoch ----


def _strict_json(path) -> dict:
    """Parse as strict JSON (no NaN/Infinity tokens), as jq or JavaScript would."""

    def refuse(token):
        raise ValueError(f"{path} holds the non-JSON token {token}")

    with open(path) as f:
        return json.load(f, parse_constant=refuse)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_a_diverged_run_stops_with_exit_1_and_strict_json(tmp_path, capsys):
    out = tmp_path / "diverged"
    args = [a if a != "3" else "4" for a in NUMPY_TINY]  # --epochs 4
    assert train(*args, "--lr", "1e9", "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "training diverged: train loss nan" in err and "lower --lr" in err
    assert "Traceback" not in err
    summary = _strict_json(out / "summary.json")
    assert summary["status"] == "diverged"
    assert summary["final"]["train_loss"] is None  # NaN is not JSON
    assert summary["epochs_completed"] < 4  # it stopped instead of training NaNs on
    assert not (out / "params.safetensors").exists()  # no "final" parameters of a broken run


def test_a_full_disk_while_checkpointing_is_a_clear_error_and_leaves_no_partial_copy(
    tmp_path, monkeypatch, capsys
):
    from gpconv.train import checkpoint as ckpt_module

    real_save = ckpt_module.save_params

    def disk_full_after_some_bytes(path, params, metadata=None):
        with open(path, "wb") as f:
            f.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    out = tmp_path / "full"
    monkeypatch.setattr(ckpt_module, "save_params", disk_full_after_some_bytes)
    assert train(*NUMPY_TINY, "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "cannot write the checkpoint of epoch 1" in err and "No space left" in err
    assert "--resume" in err and "Traceback" not in err
    assert os.listdir(out / "checkpoints") == []  # the partial .tmp- folder is gone
    monkeypatch.setattr(ckpt_module, "save_params", real_save)
    assert train(*NUMPY_TINY, "--out", str(out), "--resume") == 0  # space freed: it continues
    assert _strict_json(out / "summary.json")["status"] == "complete"


def test_atomic_writes_remove_their_temp_file_on_failure(tmp_path, monkeypatch):
    from gpconv.train import checkpoint as ckpt_module

    target = tmp_path / "summary.json"
    target.write_text("old\n")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_module.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        ckpt_module.write_json_atomic(str(target), {"a": 1})
    assert os.listdir(tmp_path) == ["summary.json"] and target.read_text() == "old\n"


def test_the_input_normalization_travels_with_the_parameters(numpy_run):
    # params.safetensors is "loadable by any backend", which needs the training set's mean/std.
    from gpconv.train.data import load

    data = load("digits", 8).limited(48)
    summary = _strict_json(os.path.join(numpy_run, "summary.json"))
    norm = summary["input_normalization"]
    np.testing.assert_array_equal(np.float32(norm["mean"]), data.mean)
    np.testing.assert_array_equal(np.float32(norm["std"]), data.std)
    meta = read_metadata(os.path.join(numpy_run, "params.safetensors"))
    assert json.loads(meta["input_mean"]) == norm["mean"]
    assert json.loads(meta["input_std"]) == norm["std"]


def test_the_parameter_files_record_their_architecture(numpy_run):
    """The files said only ``arch=kefficientnet-b0-16ch``: the class count, the skip_stride_cnt
    (which changes no shape, so a wrong one loaded silently) and the image size were not in
    them. NUMPY_TINY: digits (10 classes), --image-size 8, --skip-stride 0."""
    from gpconv.core.arch import kefficientnet

    for name in ("params.safetensors", "best.safetensors"):
        path = os.path.join(numpy_run, name)
        meta = read_metadata(path)
        recorded = {k: meta.get(k) for k in ("arch", "num_classes", "skip_stride_cnt")}
        assert recorded == {
            "arch": "kefficientnet-b0-16ch",
            "num_classes": "10",
            "skip_stride_cnt": "0",
        }, f"{name}: {meta}"
        assert meta.get("image_size") == "8", f"{name}: {meta}"
        load_params(path, kefficientnet("b0", 10, 16, skip_stride_cnt=0))
        with pytest.raises(ValueError, match=r"skip_stride_cnt=0 \(the model: 3\)"):
            load_params(path, kefficientnet("b0", 10, 16, skip_stride_cnt=3))


def test_a_run_killed_before_its_first_epoch_does_not_pin_the_folder(tmp_path, numpy_run, capsys):
    out = tmp_path / "killed"
    out.mkdir()
    shutil.copy(os.path.join(numpy_run, "run.json"), out / "run.json")  # all a kill left
    (out / "checkpoints" / ".tmp-epoch-0001-99999").mkdir(parents=True)
    other = [a if a != "16" else "8" for a in NUMPY_TINY]  # another --batch-size
    assert train(*other, "--out", str(out)) == 0
    assert json.loads((out / "run.json").read_text())["identity"]["batch_size"] == 8
    # A run with a completed epoch stays pinned.
    assert train(*NUMPY_TINY, "--out", str(out)) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_resume_keeps_the_normalization_the_run_started_with(tmp_path):
    # The mean/std computation changed once (float32 -> float64 sums); a run resumed across such
    # a change must go on standardising its inputs as it began.
    out = tmp_path / "resumed"
    one_epoch = [a if a != "3" else "1" for a in NUMPY_TINY]
    assert train(*one_epoch, "--out", str(out)) == 0
    run_json = json.loads((out / "run.json").read_text())
    assert (
        run_json["input_normalization"]["mean"]
        == _strict_json(out / "summary.json")["input_normalization"]["mean"]
    )
    older = {"mean": [0.25, 0.5, 0.75], "std": [0.5, 0.25, 0.125]}  # as an older gpconv computed
    run_json["input_normalization"].update(older)
    (out / "run.json").write_text(json.dumps(run_json))
    assert train(*NUMPY_TINY, "--out", str(out), "--resume") == 0
    for recorded in (
        _strict_json(out / "summary.json")["input_normalization"],
        json.loads((out / "run.json").read_text())["input_normalization"],
    ):
        assert {k: recorded[k] for k in older} == older
    meta = read_metadata(out / "params.safetensors")
    assert json.loads(meta["input_mean"]) == older["mean"]


def test_best_params_are_those_of_the_best_epoch(tmp_path):
    out = tmp_path / "best"
    assert train(*NUMPY_TINY, "--out", str(out), "--keep", "5") == 0
    summary = _strict_json(out / "summary.json")
    rows = metrics_rows(str(out))
    accs = [float(r["test_acc"]) for r in rows]
    best_epoch = accs.index(max(accs)) + 1  # the first epoch with the top accuracy
    assert summary["best_epoch"] == best_epoch
    meta = read_metadata(out / "best.safetensors")
    # metrics.csv rounds to 6 significant digits; the metadata keeps the float
    assert meta["epoch"] == str(best_epoch)
    assert float(meta["test_acc"]) == pytest.approx(max(accs), rel=1e-5)
    kept = load_params(out / "checkpoints" / f"epoch-{best_epoch:04d}" / "params.safetensors")
    best = load_params(out / "best.safetensors")
    assert best.keys() == kept.keys()
    for k in kept:
        np.testing.assert_array_equal(best[k], kept[k])


@pytest.mark.skipif(sys.platform == "win32", reason="folders are locked with fcntl (POSIX)")
def test_a_run_in_progress_is_reported_in_use_without_resume_too(
    numpy_run, tmp_path, capsys, lock_holder
):
    """Once the running run had completed an epoch, a second run without --resume was told
    "already holds a run; pass --resume to continue it": advice that led only to the lock's
    refusal. The folder's lock is checked first, with or without --resume."""
    run = str(tmp_path / "busy")
    shutil.copytree(numpy_run, run)
    holder = lock_holder(run)
    before = tree_digest(run)
    for resume in ([], ["--resume"]):
        assert train(*NUMPY_TINY, "--out", run, *resume) == 2
        err = capsys.readouterr().err
        assert f"--out {run} is in use by another gpconv train (pid {holder.pid})" in err, err
    assert tree_digest(run) == before


@pytest.mark.parametrize("keep", [0, -1, 1.5, True])
def test_prune_refuses_a_keep_that_would_delete_every_checkpoint(tmp_path, keep):
    """keep=0 deleted every checkpoint but the one just written; keep is refused before any
    file is touched."""
    run = str(tmp_path)
    checkpoint.save(run, 1, checkpoint_params(1), {}, {}, keep=3)
    checkpoint.save(run, 2, checkpoint_params(2), {}, {}, keep=3)
    with pytest.raises((ValueError, TypeError), match="keep"):
        checkpoint.prune(run, keep)
    assert [e for e, _ in checkpoint.epochs_on_disk(run)] == [1, 2]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("keep", 0, "--keep >= 1, received 0"),
        ("lr", 0.0, "--lr finite, > 0"),
        ("limit", 0, "--limit >= 1, received 0"),
        ("skip_stride", -2, "--skip-stride >= -1, received -2"),
        ("image_size", 7, "--image-size >= 8, received 7"),
        ("epochs", 0, "--epochs >= 1, received 0"),
        ("batch_size", 0, "--batch-size >= 1, received 0"),
    ],
)
def test_run_config_bounds_are_each_enforced_at_their_edge(field, value, message):
    """Each bound one step outside (a run of 0 epochs, keeping 0 checkpoints, lr 0 that trains
    nothing); the value one step inside is valid."""
    base = dict(backend="numpy", model="kefficientnet-b0", out="unused")
    with pytest.raises(run_module.ConfigError, match=re.escape(message)):
        RunConfig(**base, **{field: value}).validate()
    inside = {"lr": 1e-9, "skip_stride": -1, "image_size": 8}.get(field, 1)
    RunConfig(**base, **{field: inside}).validate()
