"""``gpconv.train.data``: contracts of the loaders and of ``Dataset`` that the end-to-end tests
do not pin: standardising uint8 images, ``--limit`` on both splits, labels checked against their
images and classes, the stratified digits split and the digits' pixel scale, the CIFAR-10 binary
record layout and its corrupt-file errors, the folder reader's split and file-name rules (as
torchvision's ``ImageFolder`` and docs/train.md describe them), the chunking of large images,
the fingerprint's parts and ``absolute_spec``.

Each test builds tiny inputs by hand and derives the expected values from the format's own
definition, not from the loader's output.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from gpconv.train import data


def _dataset(x_train: np.ndarray, n_test: int = 4) -> data.Dataset:
    """A ``Dataset`` of the given training images, three classes, and ``n_test`` test images;
    the test labels 1, 0, 2, 1, 0, ... read differently reversed (no palindrome)."""
    rng = np.random.default_rng(1)
    x_test = rng.integers(0, 256, (n_test, *x_train.shape[1:]), dtype=np.uint8)
    if x_train.dtype != np.uint8:
        x_test = x_test.astype(np.float32) / 255
    y_train = np.arange(len(x_train), dtype=np.int64) % 3
    y_test = (np.arange(n_test, dtype=np.int64) * 2 + 1) % 3
    return data.Dataset("t", x_train, y_train, x_test, y_test, ["a", "b", "c"])


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)


def test_normalize_standardises_uint8_images_like_their_unit_float_copies() -> None:
    """CIFAR-10 and image folders load as uint8 in [0, 255]; the training statistics are those
    of the images in [0, 1] (docs/train.md: inputs standardised with the training set's
    per-channel mean and std, in the [0, 1] units of the digits example). So ``normalize`` of a
    uint8 batch must equal ``normalize`` of the same pixels divided by 255, and the normalised
    training set must have per-channel mean 0 and (population) std 1."""
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)
    ds = _dataset(x8)
    z = ds.normalize(x8)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z, ds.normalize(x8.astype(np.float32) / 255), atol=1e-5)
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1.0, atol=1e-4)


def test_limited_keeps_the_first_n_images_of_both_splits_with_their_labels() -> None:
    """docs/train.md: "``--limit N`` keeps the first N train and N test images (smoke tests)";
    the docs' summary note says --limit "also shortens the test set". A smoke test scoring the
    whole test set would take as long as a real evaluation. Each image keeps its label; no limit
    is the data set itself, and a limit above the size keeps everything."""
    ds = _dataset(_images(10), n_test=9)
    small = ds.limited(3)
    for part in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(small, part), getattr(ds, part)[:3])
    assert small.y_test.tolist() == [1, 0, 2]
    assert ds.limited(None) is ds
    assert ds.limited(99).y_test.tolist() == ds.y_test.tolist()


@pytest.mark.parametrize("n", [0, -1, -5])
def test_limited_refuses_a_count_below_one_naming_n(n) -> None:
    """``limited(-1)`` sliced ``[:-1]``: every image but the last, silently; ``limited(0)``
    failed on the statistics of no images, naming no argument. ``--limit`` is checked by the
    run's config, but ``Dataset.limited`` is public: it says what it expects."""
    with pytest.raises(ValueError, match=f"Expected n >= 1, received n={n}"):
        _dataset(_images(6)).limited(n)


@pytest.mark.parametrize(
    "split, labels, exc, message",
    [
        (
            "train",
            np.zeros(5, np.int64),
            ValueError,
            r"Expected y_train of shape \(6,\) \(one label",
        ),
        ("test", np.zeros((4, 1), np.int64), ValueError, r"received y_test.shape=\(4, 1\)"),
        (
            "test",
            np.array([0, 1, 3, 0]),
            ValueError,
            r"Expected y_test in \[0, 3\) \(one per class",
        ),
        ("train", -np.ones(6, np.int64), ValueError, r"received y_train from -1 to -1"),
        ("train", np.zeros(6, np.float32), TypeError, "Expected y_train of integer labels"),
    ],
    ids=["fewer-labels", "column-of-labels", "class-3-of-3", "negative", "float-labels"],
)
def test_labels_must_be_one_valid_class_per_image(split, labels, exc, message) -> None:
    """A ``Dataset`` built by hand (the loaders always agree) with a label missing, an extra
    axis, a class that does not exist or float labels would train on wrong answers, or fail deep
    in the loss: it is refused naming the split's labels."""
    ds = _dataset(_images(6))
    parts = {k: getattr(ds, k) for k in ("x_train", "y_train", "x_test", "y_test")}
    parts[f"y_{split}"] = labels
    with pytest.raises(exc, match=message):
        data.Dataset("t", **parts, classes=ds.classes)


def test_digits_test_split_is_stratified() -> None:
    """``load_digits``' docstring promises a stratified 80/20 split: every class then has
    floor or ceil of 20% of its images in the test set (scikit-learn's stratified shuffle split
    allocates per class, rounding), so no class is under-represented in the test accuracy."""
    ds = data.load_digits(8)
    total = np.bincount(np.concatenate([ds.y_train, ds.y_test]), minlength=10)
    test = np.bincount(ds.y_test, minlength=10)
    assert np.all(np.abs(test - data.TEST_FRACTION * total) < 1.0), (test, total)


def _cifar_record(label: int, image_hwc: np.ndarray) -> bytes:
    """One record of the CIFAR-10 binary version as its documentation defines it: a label byte,
    then 1024 red bytes, 1024 green, 1024 blue, each channel in row-major order."""
    return bytes([label]) + image_hwc.transpose(2, 0, 1).tobytes()


def _write_cifar_files(directory, records: bytes, test_records: bytes | None = None) -> None:
    os.makedirs(directory, exist_ok=True)
    for name in data.CIFAR_TRAIN_FILES:
        (directory / name).write_bytes(records)
    test = records if test_records is None else test_records
    (directory / data.CIFAR_TEST_FILE).write_bytes(test)


def test_cifar10_records_are_read_as_rows_then_columns(tmp_path) -> None:
    """Per the CIFAR-10 page, "the first 32 bytes are the red channel values of the first row of
    the image": byte ``1 + c*1024 + row*32 + col`` is pixel ``[row, col, c]``. The image used is
    not symmetric in row and column (value = 7*row + col + 60*c, mod 256), so reading columns as
    rows is seen."""
    row, col, c = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), indexing="ij")
    img = ((7 * row + col + 60 * c) % 256).astype(np.uint8)
    _write_cifar_files(tmp_path, _cifar_record(3, img))
    x, y = data.read_cifar10_file(str(tmp_path / data.CIFAR_TEST_FILE))
    assert x.shape == (1, 32, 32, 3) and y.tolist() == [3]
    assert x[0, 1, 0].tolist() == [7, 67, 127]  # row 1, column 0
    assert x[0, 0, 1].tolist() == [1, 61, 121]  # row 0, column 1
    np.testing.assert_array_equal(x[0], img)


def test_cifar10_label_10_and_an_empty_file_are_data_errors_naming_the_file(tmp_path) -> None:
    """CIFAR-10's labels are 0..9: a label byte 10 (one past the last class) is corruption and
    must be a ``DataError`` naming the file, as 42 is; so must an empty batch file (0 bytes is no
    record: a truncated download), rather than NumPy's "zero-size array" error."""
    img = np.zeros((32, 32, 3), np.uint8)
    _write_cifar_files(tmp_path, _cifar_record(10, img), test_records=_cifar_record(0, img))
    with pytest.raises(data.DataError, match=r"data_batch_1\.bin.*label 10"):
        data.load_cifar10(str(tmp_path))
    _write_cifar_files(tmp_path, _cifar_record(9, img), test_records=b"")
    with pytest.raises(data.DataError, match=r"test_batch\.bin"):
        data.load_cifar10(str(tmp_path))


def _write_pngs(folder, names: list[str]) -> None:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(len(names))
    for name in names:
        fmt = "JPEG" if name.lower().endswith((".jpg", ".jpeg")) else "PNG"
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(folder / name, fmt)


def test_folder_reads_image_suffixes_in_any_case(tmp_path) -> None:
    """torchvision's ``has_file_allowed_extension`` compares ``filename.lower()``: cameras and
    Windows tools write ``IMG_0001.JPG``, and such a file is an image of its class."""
    _write_pngs(tmp_path / "cat", ["a.PNG", "b.png", "c.JPG", "d.Jpeg", "e.png"])
    _write_pngs(tmp_path / "dog", ["a.png", "b.PNG", "c.png", "d.png", "e.png"])
    ds = data.load_folder(str(tmp_path), 8)
    counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]), minlength=2)
    assert counts.tolist() == [5, 5]


def test_folder_scores_test_over_val_whatever_their_case(tmp_path) -> None:
    """docs/train.md: split folders "are recognised in any case" and "with both test and val,
    test is scored and val left alone". ``Val/`` sorts before ``test/`` in ASCII, so the choice
    must come from the names' meaning, not from sorting."""
    _write_pngs(tmp_path / "train" / "cat", ["0.png", "1.png"])
    _write_pngs(tmp_path / "train" / "dog", ["0.png", "1.png"])
    for cls in ("cat", "dog"):
        _write_pngs(tmp_path / "Val" / cls, ["0.png", "1.png", "2.png"])
        _write_pngs(tmp_path / "test" / cls, ["0.png"])
    ds = data.load_folder(str(tmp_path), 8)
    assert len(ds.y_train) == 4 and len(ds.y_test) == 2


def test_a_test_split_may_lack_a_class(tmp_path) -> None:
    """A class is required to have training images (it could never be learnt otherwise), but a
    test split without one class is still a valid evaluation over the classes it has
    (``_read_tree(..., every_class=False)``); its labels follow the training folder's classes."""
    for cls in ("cat", "dog"):
        _write_pngs(tmp_path / "train" / cls, ["0.png", "1.png"])
    _write_pngs(tmp_path / "test" / "dog", ["0.png", "1.png"])
    ds = data.load_folder(str(tmp_path), 8)
    assert ds.classes == ["cat", "dog"]
    assert ds.y_test.tolist() == [1, 1]


def test_a_data_path_starting_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch) -> None:
    """In ``--data folder=~/pets`` the ``~`` follows ``=``, where POSIX shells (and zsh) do not
    expand it, so gpconv must: a folder literally named ``~`` in the working directory is never
    what was meant."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for cls in ("cat", "dog"):
        _write_pngs(tmp_path / "pets" / cls, [f"{i}.png" for i in range(5)])
    assert data.parse_spec("folder=~/pets") == ("folder", str(tmp_path / "pets"))
    monkeypatch.chdir(tmp_path / "pets")  # no "~" folder here
    assert len(data.load("folder=~/pets", 8).y_train) == 8


def test_cifar10_class_names_are_the_first_ten_lines(tmp_path) -> None:
    """``batches.meta.txt`` lists the class names one a line, label 0 first: with more lines
    than classes (a note appended, say), labels 0..9 are named by the first ten."""
    img = np.zeros((32, 32, 3), np.uint8)
    _write_cifar_files(tmp_path, _cifar_record(1, img))
    names = [f"class{i}" for i in range(10)] + ["extra"]
    (tmp_path / data.CIFAR_META_FILE).write_text("\n".join(names) + "\n", encoding="utf-8")
    assert data.load_cifar10(str(tmp_path)).classes == names[:10]


def _write_solid(folder, value: int, count: int) -> None:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(folder / f"{i}.png")


def test_folder_training_images_are_shuffled_with_their_labels(tmp_path) -> None:
    """docs/train.md: folders are read "in a fixed shuffled order", so that ``--limit N`` (the
    first N images) takes several classes rather than the first class only. Each image must keep
    its own label through the shuffle: cat images are black and dog images white here."""
    _write_solid(tmp_path / "train" / "cat", 0, 6)
    _write_solid(tmp_path / "train" / "dog", 255, 6)
    _write_solid(tmp_path / "test" / "cat", 0, 1)
    _write_solid(tmp_path / "test" / "dog", 255, 1)
    ds = data.load_folder(str(tmp_path), 4)
    y = ds.y_train.tolist()
    assert sorted(y) == [0] * 6 + [1] * 6 and y != sorted(y)
    np.testing.assert_array_equal(ds.x_train[:, 0, 0, 0], np.where(ds.y_train == 1, 255, 0))


def test_images_larger_than_a_chunk_are_still_counted_one_per_chunk(monkeypatch) -> None:
    """``_chunks`` takes "at least one" image per chunk: an image whose temporaries exceed
    ``CHUNK_BYTES`` (a large --image-size) must still be resized and counted, one at a time."""
    monkeypatch.setattr(data, "CHUNK_BYTES", 1)
    x = np.random.default_rng(0).random((3, 4, 5, 3))
    mean, std = data.channel_stats(x)
    unit = x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mean, unit.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, unit.std(axis=(0, 1, 2)), rtol=1e-12)
    assert [(s.start, s.stop) for s in data._chunks(3, 10)] == [(0, 1), (1, 2), (2, 3)]
    out = data.resize_bilinear(x, 4)
    assert out.shape == (3, 4, 4, 3)


@pytest.mark.parametrize("call", [data.channel_stats, lambda x: data.resize_bilinear(x, 4)])
def test_images_without_channels_are_refused_naming_the_shape(call) -> None:
    """``_require_images`` promises (N, H, W, C) "with H, W, C >= 1": zero channels would give
    empty statistics (every normalised image empty) instead of an error naming the shape."""
    with pytest.raises(ValueError, match=r"x\.shape=\(2, 4, 4, 0\)|images\.shape=\(2, 4, 4, 0\)"):
        call(np.zeros((2, 4, 4, 0), np.float32))


def test_digits_at_8_px_are_sklearns_pixels_over_16_with_their_labels() -> None:
    """``load_digits``: scikit-learn's 8x8 digits (levels 0..16) "in [0, 1]", grey replicated to 3
    channels; at ``image_size=8`` the resize is the identity, so the train and test images
    together are exactly ``images / 16`` (not /255: ink must reach 1.0), each with its label."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ds = data.load_digits(8)
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    assert x.shape == (1797, 8, 8, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    assert x.max() == 1.0 and x.min() == 0.0
    expected = sorted(
        (img.astype(np.float32).tobytes(), int(t))
        for img, t in zip(bunch.images / 16.0, bunch.target)
    )
    got = sorted((img.tobytes(), int(t)) for img, t in zip(x[..., 0], y))
    assert got == expected


@pytest.mark.parametrize("part", ["x_train", "y_train", "x_test", "y_test"])
def test_fingerprint_changes_with_any_image_or_label(part) -> None:
    """``Dataset.fingerprint``: "a SHA-256 of every image and label (an added, removed or changed
    image changes it)": a resumed run must notice a relabelled test image as much as a changed
    training image. Its split sizes are the train and test counts, not one for the other."""
    ds = _dataset(_images(6), n_test=5)
    fp = ds.fingerprint
    assert (fp["train"], fp["test"]) == (6, 5)
    assert fp["classes"] == ["a", "b", "c"]
    arrays = {k: getattr(ds, k).copy() for k in ("x_train", "y_train", "x_test", "y_test")}
    if part.startswith("y"):
        arrays[part][-1] = (arrays[part][-1] + 1) % 3  # another valid class
    else:
        arrays[part][-1, 0, 0, 0] ^= 1  # one pixel one level brighter or darker
    changed = data.Dataset(
        "t", *(arrays[k] for k in ("x_train", "y_train", "x_test", "y_test")), ds.classes
    )
    assert changed.fingerprint["sha256"] != fp["sha256"]
    same = data.Dataset(
        "t",
        ds.x_train.copy(),
        ds.y_train.copy(),
        ds.x_test.copy(),
        ds.y_test.copy(),
        list(ds.classes),
    )
    assert same.fingerprint == fp


def test_absolute_spec_makes_the_path_absolute_from_the_working_folder(tmp_path, monkeypatch):
    """``absolute_spec``: ``folder=data/x`` -> ``folder=<cwd>/data/x`` (one folder named from two
    working folders is one data set); ``digits`` and specs that do not parse are unchanged."""
    monkeypatch.chdir(tmp_path)
    here = os.getcwd()
    assert data.absolute_spec("folder=data/x") == "folder=" + os.path.join(here, "data", "x")
    assert data.absolute_spec("cifar10=./c/../c") == "cifar10=" + os.path.join(here, "c")
    assert data.absolute_spec("digits") == "digits"
    assert data.absolute_spec("mnist=x") == "mnist=x"


def test_folder_split_keeps_every_image_with_its_label(tmp_path) -> None:
    """``load_folder`` without train/test folders: a stratified 80/20 split (10 images a class:
    2 test images each); every image keeps its own label in both splits. Classes are solid
    images of distinct grey levels, so an image's level tells its true class."""
    levels = {"ant": 0, "bee": 120, "cat": 250}  # sorted class names: labels 0, 1, 2
    for name, level in levels.items():
        _write_solid(tmp_path / name, level, 10)
    ds = data.load_folder(str(tmp_path), 4)
    assert ds.classes == ["ant", "bee", "cat"]
    lut = np.array(list(levels.values()))
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        np.testing.assert_array_equal(x[:, 0, 0, 0], lut[y])
    assert np.bincount(ds.y_test, minlength=3).tolist() == [2, 2, 2]
    assert np.bincount(ds.y_train, minlength=3).tolist() == [8, 8, 8]
