"""Data sets for ``gpconv train``: scikit-learn digits, CIFAR-10 (binary version), image folders.

Every loader returns a ``Dataset`` of channels-last images ``(N, H, W, 3)`` (``uint8`` in
``[0, 255]`` or ``float32`` in ``[0, 1]``) and ``int64`` labels ``(N,)``; ``Dataset.normalize``
turns a batch into float32 standardised with the *training* set's per-channel mean and std.

Nothing here unpickles: CIFAR-10 is read from its binary release (records of 1 label byte + 3072
bytes CHW) and images with PIL. Missing or corrupt inputs raise ``DataError`` naming the file.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..core._validate import require_positive_int

# The test split of data sets without one is fixed (independent of --seed) so that runs with
# different seeds are scored on the same images.
SPLIT_SEED = 0
TEST_FRACTION = 0.2
# torchvision's IMG_EXTENSIONS, plus PIL-readable names JPEG and PNM files also go by.
IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".pbm", ".pgm", ".ppm", ".webp",
    ".tif", ".tiff",
)  # fmt: skip
# Split folder names of a DIR/train + DIR/test tree, matched ignoring case; where several test
# names are present the first in this order is the test set (train/val/test keeps val unused).
TRAIN_SPLITS = ("train", "training")
TEST_SPLITS = ("test", "testing", "val", "valid", "validation")
CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch.bin"
CIFAR_META_FILE = "batches.meta.txt"
CIFAR_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# Resizing and the training set's statistics go through the images in chunks whose temporaries
# take about this many bytes: a whole data set at once (CIFAR-10 at 224x224) would need ~90 GB.
CHUNK_BYTES = 16 * 2**20


class DataError(ValueError):
    """Missing, unreadable or malformed training data (the message names the file)."""


@dataclass
class Dataset:
    """Train and test images ``(N, H, W, 3)`` with ``int64`` labels ``(N,)`` and class names."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    mean: np.ndarray = field(init=False)
    std: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            self._check_labels(split)
        mean, std = channel_stats(self.x_train)
        self.mean = mean.astype(np.float32)
        # A constant channel (all-black borders, grey digits) must not divide by zero.
        self.std = np.maximum(std, 1e-3).astype(np.float32)

    def _check_labels(self, split: str) -> None:
        """``y_<split>``: integer labels ``(N,)``, one per image of ``x_<split>``, each in
        ``[0, len(classes))``; else a ValueError/TypeError naming it (a label shifted against its
        image or out of range would train on a wrong answer without a word)."""
        x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        name = f"y_{split}"
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"Expected {name} of integer labels, received {name}.dtype={y.dtype}")
        if y.shape != (len(x),):
            raise ValueError(
                f"Expected {name} of shape ({len(x)},) (one label per image of x_{split}), "
                f"received {name}.shape={y.shape}"
            )
        if y.size and (y.min() < 0 or y.max() >= len(self.classes)):
            raise ValueError(
                f"Expected {name} in [0, {len(self.classes)}) (one per class), "
                f"received {name} from {y.min()} to {y.max()}"
            )

    @functools.cached_property
    def fingerprint(self) -> dict:
        """What a resumed run must find again: the class names, the split sizes and a SHA-256
        of every image and label (an added, removed or changed image changes it), as loaded:
        at ``--image-size``. Computed once per start: CIFAR-10 at 32 px hashes 184 MB in 0.1 s;
        at 224 px, 36 GB of float32 in about 21 s, a tenth of the ~210 s its resize and
        ``channel_stats`` take (2-core machine, load 4), so hashing the images before resizing
        was not worth a second fingerprint definition (runs record this one)."""
        digest = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(memoryview(np.ascontiguousarray(a)).cast("B"))
        return {
            "classes": list(self.classes),
            "train": len(self.y_train),
            "test": len(self.y_test),
            "sha256": digest.hexdigest(),
        }

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[1])

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """A batch ``(B, H, W, 3)`` as float32 ``(x - mean) / std`` per channel."""
        return ((_unit(x) - self.mean) / self.std).astype(np.float32, copy=False)

    def limited(self, n: int | None) -> Dataset:
        """The first ``n`` train and ``n`` test images (quick checks); statistics recomputed."""
        if n is None:
            return self
        n = require_positive_int("n", n)  # a slice would take n=-1 as "all but the last"
        return Dataset(
            self.name,
            self.x_train[:n],
            self.y_train[:n],
            self.x_test[:n],
            self.y_test[:n],
            self.classes,
        )


def _unit(x: np.ndarray) -> np.ndarray:
    """Images as float32 in ``[0, 1]``."""
    if x.dtype == np.uint8:
        unit = x.astype(np.float32)
        unit /= 255.0  # in place: the same float32 division without a second float32 copy
        return unit
    return x.astype(np.float32, copy=False)


def _chunks(n: int, bytes_per_image: int) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)``, each of as many images (at least one) as fit
    ``CHUNK_BYTES`` at ``bytes_per_image``."""
    step = max(1, CHUNK_BYTES // max(1, bytes_per_image))
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std ``(C,)`` float64 of images ``(N, H, W, C)`` in the
    units ``normalize`` sees (``_unit``), accumulated in float64 over chunks of images: no
    full-size float copy of ``x`` is made. Two passes (mean, then squared deviations) rather than
    ``E[x^2] - E[x]^2``, which cancels badly for a (nearly) constant channel."""
    _require_images("x", x)
    if not x.shape[0]:  # the mean of no pixels is NaN: every normalised image would be NaN
        raise ValueError(f"Expected at least one image, received x.shape={x.shape}")
    n, h, w, c = x.shape
    per_image = h * w * c * (4 + 8)  # the float32 ``_unit`` copy and its float64 deviations
    count = n * h * w
    total = np.zeros(c)
    for s in _chunks(n, per_image):
        total += _unit(x[s]).sum(axis=(0, 1, 2), dtype=np.float64)
    mean = total / count
    squares = np.zeros(c)
    for s in _chunks(n, per_image):
        squares += _squared_deviations(x[s], mean)
    return mean, np.sqrt(squares / count)


def _squared_deviations(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Per-channel sums ``(C,)`` of ``(_unit(x) - mean) ** 2`` over images ``(N, H, W, C)``, in
    float64; the one float64 temporary is worked on in place (and freed on return, not kept
    alive by a loop variable while the next chunk is made)."""
    dev = _unit(x).astype(np.float64)
    dev -= mean
    return np.square(dev, out=dev).sum(axis=(0, 1, 2))


# --- resizing ---------------------------------------------------------------------------------


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of 1-D linear interpolation with half-pixel centres (the
    convention of PIL, ``torch ... align_corners=False`` and ``tf.image.resize``), edges clamped."""
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def _require_images(name: str, x: np.ndarray) -> None:
    """``TypeError``/``ValueError`` unless ``x`` is an array ``(N, H, W, C)`` with H, W >= 1."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"Expected {name} to be a numpy.ndarray, received {type(x).__name__}")
    if x.ndim != 4 or 0 in x.shape[1:]:
        raise ValueError(
            f"Expected {name} of shape (N, H, W, C) with H, W, C >= 1, "
            f"received {name}.shape={x.shape}"
        )


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(N, H, W, C)`` images to ``(N, size, size, C)`` (separable bilinear), float32:
    ``out[n] = rows @ x[n] @ cols^T`` per channel, rows first, in float64.

    Computed over chunks of images written into the float32 result, so that the temporaries stay
    near ``CHUNK_BYTES`` whatever N. Two matrix products instead of one three-operand
    ``np.einsum`` (which spent H·W multiply-adds on every output value: hours for CIFAR-10 at
    224×224); rounded to float32 the two agree to one float32 ulp, and bit for bit where the
    arithmetic is exact (digits' k/16 grey levels)."""
    _require_images("images", images)
    size = require_positive_int("size", size)  # 0 divided by zero
    n, h, w, c = images.shape
    rows, cols = _bilinear_matrix(h, size), _bilinear_matrix(w, size)
    out = np.empty((n, size, size, c), dtype=np.float32)
    # Per image: the float32 and float64 copies of the input and the two float64 products.
    per_image = h * w * c * (4 + 8) + size * (w + size) * c * 8
    for s in _chunks(n, per_image):
        x = _unit(images[s]).astype(np.float64)
        m = len(x)
        along_h = np.matmul(rows, x.reshape(m, h, w * c)).reshape(m * size, w, c)
        out[s] = np.matmul(cols, along_h).reshape(m, size, size, c)
    return out


# --- data sets --------------------------------------------------------------------------------


def load_digits(image_size: int = 32) -> Dataset:
    """scikit-learn's 1,797 real 8×8 handwritten digits, bilinearly resized to ``image_size``,
    grey replicated to 3 channels, in ``[0, 1]``; stratified 80/20 split with a fixed seed
    (1,437 train / 360 test)."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    grey = (bunch.images / 16.0)[..., None]  # (N, 8, 8, 1), pixel values 0..16
    images = np.repeat(resize_bilinear(grey, image_size), 3, axis=-1)
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    return Dataset("digits", x_tr, y_tr, x_te, y_te, [str(d) for d in range(10)])


def read_cifar10_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: ``(images (N, 32, 32, 3) uint8, labels (N,) int64)``."""
    if not os.path.isfile(path):
        raise DataError(f"CIFAR-10 file not found: {path}")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % CIFAR_RECORD:
        raise DataError(
            f"Corrupt CIFAR-10 file {path}: {raw.size} bytes is not a whole number of "
            f"{CIFAR_RECORD}-byte records (1 label byte + 3072 image bytes)"
        )
    records = raw.reshape(-1, CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"Corrupt CIFAR-10 file {path}: label {int(labels.max())} outside 0..9")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW -> HWC
    return np.ascontiguousarray(images), labels


def _refuse_python_version(directory: str) -> None:
    """CIFAR-10's "python version" (``cifar-10-batches-py``, what torchvision downloads) stores
    its batches as pickles, which gpconv never loads; say so instead of "file not found"."""
    if os.path.isfile(os.path.join(directory, CIFAR_TEST_FILE)):
        return
    python_dir = os.path.join(directory, "cifar-10-batches-py")
    found = python_dir if os.path.isdir(python_dir) else directory
    if os.path.isfile(os.path.join(found, "test_batch")):
        raise DataError(
            f"{found} holds CIFAR-10's python version (pickled batches), which gpconv does not "
            "load: loading a pickle can run arbitrary code. Use the binary version "
            "(cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, unpacked: "
            f"a folder with {CIFAR_TRAIN_FILES[0]} ... {CIFAR_TEST_FILE})"
        )


def _cifar10_class_names(directory: str) -> list[str]:
    """The 10 class names: the first 10 non-blank lines of ``directory/batches.meta.txt`` (ASCII
    in the release), or ``CIFAR_CLASSES`` where that file is absent or has fewer lines."""
    path = os.path.join(directory, CIFAR_META_FILE)
    if not os.path.isfile(path):
        return list(CIFAR_CLASSES)
    try:
        # Explicit UTF-8 (not the locale's codec); a file that is no text is corrupt, like a
        # batch of the wrong size, and must not end the run with a traceback.
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"Cannot read CIFAR-10 class names from {path}: {err}") from err
    if len(names) < 10:
        return list(CIFAR_CLASSES)
    twice = sorted({n for n in names[:10] if names[:10].count(n) > 1})
    if twice:
        raise DataError(f"{path} names a class more than once among its first 10 lines: {twice}")
    return names[:10]


def load_cifar10(directory: str, image_size: int = 32) -> Dataset:
    """CIFAR-10 from ``directory`` holding ``data_batch_{1..5}.bin`` and ``test_batch.bin``
    (or its ``cifar-10-batches-bin`` sub-folder, as the archive unpacks)."""
    nested = os.path.join(directory, "cifar-10-batches-bin")
    if not os.path.isfile(os.path.join(directory, CIFAR_TEST_FILE)) and os.path.isdir(nested):
        directory = nested
    _require_folder(directory, "CIFAR-10 directory")
    _refuse_python_version(directory)
    classes = _cifar10_class_names(directory)  # before the batches: a bad file fails fast
    parts = [read_cifar10_file(os.path.join(directory, f)) for f in CIFAR_TRAIN_FILES]
    x_te, y_te = read_cifar10_file(os.path.join(directory, CIFAR_TEST_FILE))
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    if image_size != 32:
        x_tr, x_te = resize_bilinear(x_tr, image_size), resize_bilinear(x_te, image_size)
    return Dataset("cifar10", x_tr, y_tr, x_te, y_te, classes)


def _require_folder(path: str, what: str) -> None:
    if os.path.isdir(path):
        return
    if os.path.exists(path):
        raise DataError(f"Expected {what} to be a folder, received a file: {path}")
    raise DataError(f"{what} not found: {path}")


def _hidden(name: str) -> bool:
    """Entries no one means as data: dot names (``.ipynb_checkpoints``, macOS's ``._x.png``
    resource forks, ``.DS_Store``) and the ``__MACOSX`` folder of zip files made on a Mac."""
    return name.startswith(".") or name == "__MACOSX"


def _class_dirs(root: str) -> list[str]:
    return sorted(
        d for d in os.listdir(root) if not _hidden(d) and os.path.isdir(os.path.join(root, d))
    )


def _image_files(folder: str) -> list[str]:
    """Every image under ``folder``, sub-folders and links to folders included (as torchvision's
    ImageFolder, which follows links), hidden entries skipped. A folder reached twice (a link
    loop, or a link to a folder also present) is read once."""
    seen, found = set(), []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(parent)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not _hidden(d)]
        found += (
            os.path.join(parent, name)
            for name in names
            if not _hidden(name) and name.lower().endswith(IMAGE_SUFFIXES)
        )
    return sorted(found)


def _read_image(path: str, image_size: int) -> np.ndarray:
    """One image file as ``(image_size, image_size, 3)`` uint8 RGB, resized bilinearly by PIL."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            # PIL's convert("RGB") clips 16-bit, 32-bit integer and float samples to 0..255
            # instead of scaling them (a 16-bit PNG turns almost white): refuse, don't corrupt.
            if img.mode in ("I", "F") or img.mode.startswith("I;"):
                raise DataError(
                    f"Cannot read image {path}: PIL mode {img.mode!r} has 16-bit, 32-bit or "
                    "float samples; only 8-bit images are supported (convert it to 8 bits)"
                )
            rgb = img.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except DataError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"Cannot read image {path}: {err}") from err


def _read_tree(
    root: str, classes: list[str], image_size: int, every_class: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, size, size, 3)`` uint8 and labels of ``root/<class>/**/<image>``, shuffled
    (by ``SPLIT_SEED``, so that ``Dataset.limited`` takes every class, not the first ones). With
    ``every_class``, a class without images is an error (it could never be learned)."""
    images, labels = [], []
    for label, cls in enumerate(classes):
        folder = os.path.join(root, cls)
        files = _image_files(folder) if os.path.isdir(folder) else []
        if every_class and not files:
            raise DataError(f"Class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
        for path in files:
            images.append(_read_image(path, image_size))
            labels.append(label)
    if not images:
        raise DataError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in class folders under {root}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    return np.stack(images)[order], np.asarray(labels, dtype=np.int64)[order]


def _split_dirs(directory: str, dirs: list[str]) -> tuple[str, str] | None:
    """``(train folder, test folder)`` of a ``directory/train`` + ``directory/test`` tree (names
    as ``TRAIN_SPLITS``/``TEST_SPLITS``, any case), or None for a tree of class folders; ``dirs``
    are ``directory``'s folders (``_class_dirs``).

    Split-like names are never taken as classes: ``Train/`` + ``Test/`` read as two classes
    would train a model to tell the splits apart, on 80% of the test images."""
    train = [d for d in dirs if d.lower() in TRAIN_SPLITS]
    test = sorted(
        (d for d in dirs if d.lower() in TEST_SPLITS), key=lambda d: TEST_SPLITS.index(d.lower())
    )
    if not train and not test:
        return None
    # A lone train/ or test/ is a half-made split, not a class named "train" or "test".
    if not test:
        raise DataError(
            f"{os.path.join(directory, train[0])} needs a test (or val) folder beside it"
        )
    if not train:
        raise DataError(f"{os.path.join(directory, test[0])} needs a train folder beside it")
    if len(train) > 1:
        raise DataError(f"{directory} has more than one training folder: {train}; keep one")
    others = [d for d in dirs if d not in train and d not in test]
    if others:
        raise DataError(
            f"{directory} holds the splits {train[0]}/ and {test[0]}/ and also the folders "
            f"{others}, which would be ignored: move them into the splits or out of {directory}"
        )
    return os.path.join(directory, train[0]), os.path.join(directory, test[0])


def _require_classes(root: str, classes: list[str]) -> None:
    """At least two class folders: one class trains a model that is always right (a ``folder=``
    one level too high looks like this)."""
    if len(classes) >= 2:
        return
    hint = ""
    if classes and _class_dirs(os.path.join(root, classes[0])):
        hint = f"; if {os.path.join(root, classes[0])} holds the classes, name that folder"
    raise DataError(
        f"Expected at least 2 class folders in {root}, found {len(classes)}: {classes}{hint}"
    )


def load_folder(directory: str, image_size: int = 32) -> Dataset:
    """An ImageFolder-style tree: ``directory/<class>/<image>``, split 80/20 (stratified, fixed
    seed), or ``directory/train/<class>/...`` with ``directory/test`` (or ``val``; see
    ``TRAIN_SPLITS``, ``TEST_SPLITS``) used as given. Images are converted to RGB and resized
    bilinearly with PIL (no EXIF rotation, alpha dropped, aspect ratio not kept: as
    torchvision's ``ImageFolder`` with ``Resize((size, size))``)."""
    _require_folder(directory, "Image folder")
    folders = _class_dirs(directory)  # the classes, or train/ and test/
    splits = _split_dirs(directory, folders)
    if splits:
        train_dir, test_dir = splits
        classes = _class_dirs(train_dir)
        _require_classes(train_dir, classes)
        extra = sorted(set(_class_dirs(test_dir)) - set(classes))
        if extra:
            raise DataError(f"{test_dir} has classes missing from {train_dir}: {extra}")
        x_tr, y_tr = _read_tree(train_dir, classes, image_size)
        x_te, y_te = _read_tree(test_dir, classes, image_size, every_class=False)
        return Dataset(f"folder:{directory}", x_tr, y_tr, x_te, y_te, classes)
    classes = folders
    _require_classes(directory, classes)
    x, y = _read_tree(directory, classes, image_size)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    test = np.zeros(len(y), dtype=bool)
    for label in range(len(classes)):  # stratified: every class keeps ~20% for testing
        members = order[y[order] == label]
        test[members[: int(round(len(members) * TEST_FRACTION))]] = True
    if not test.any() or test.all():
        raise DataError(f"Too few images under {directory} for a train/test split ({len(y)})")
    return Dataset(f"folder:{directory}", x[~test], y[~test], x[test], y[test], classes)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"digits"``, ``"cifar10=DIR"`` or ``"folder=DIR"`` -> ``(kind, path)``."""
    if not isinstance(spec, str):
        raise TypeError(f"Expected spec to be a str, received {type(spec).__name__} {spec!r}")
    kind, sep, path = spec.partition("=")
    if kind == "digits" and not sep:
        return kind, None
    if kind in ("cifar10", "folder") and sep and path:
        return kind, os.path.expanduser(path)  # the shell does not expand "cifar10=~/..."
    raise ValueError(f"Expected --data digits, cifar10=DIR or folder=DIR, received {spec!r}")


def absolute_spec(spec: str) -> str:
    """``spec`` with its path made absolute (``folder=data/x`` -> ``folder=/home/.../data/x``),
    so one folder named from two working directories is one data set; bad specs unchanged."""
    try:
        kind, path = parse_spec(spec)
    except ValueError:
        return spec
    return spec if path is None else f"{kind}={os.path.abspath(path)}"


def load(spec: str, image_size: int = 32) -> Dataset:
    """Load the data set named by ``spec`` (see ``parse_spec``) at ``image_size``."""
    kind, path = parse_spec(spec)
    # Named here, before any file is read (else resize_bilinear's "size", or PIL's error).
    image_size = require_positive_int("image_size", image_size)
    if kind == "digits":
        return load_digits(image_size)
    if kind == "cifar10":
        return load_cifar10(path, image_size)
    return load_folder(path, image_size)
