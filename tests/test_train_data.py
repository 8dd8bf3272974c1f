"""``gpconv.train.data``: bounded memory and time when resizing and computing the training set's
statistics (the values of whole-array computations), and the refusal of images with more than 8
bits per sample.

Sizes are tiny; ``CHUNK_BYTES`` is lowered so that a few dozen images already take many chunks.
"""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest

from gpconv.train import data


def _old_unit(x: np.ndarray) -> np.ndarray:
    """Images as float32 in ``[0, 1]``, as computed before (two float32 copies of a uint8 set)."""
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def _one_einsum(images: np.ndarray, size: int) -> np.ndarray:
    """The resize as one three-operand ``np.einsum`` over all images (the formula before the
    separable, chunked computation)."""
    _, h, w, _ = images.shape
    rows, cols = data._bilinear_matrix(h, size), data._bilinear_matrix(w, size)
    unit = _old_unit(images).astype(np.float64)
    return np.einsum("ih,nhwc,jw->nijc", rows, unit, cols).astype(np.float32)


def _traced_peak(fn, *args):
    """``(fn(*args), peak bytes traced while it ran)``."""
    tracemalloc.start()
    try:
        result = fn(*args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.parametrize(
    "dtype, shape, size",
    [
        (np.uint8, (7, 8, 8, 3), 20),  # upsampling CIFAR-like bytes
        (np.uint8, (5, 12, 9, 3), 5),  # downsampling a non-square image
        (np.float64, (7, 8, 8, 1), 32),  # digits: grey levels k/16, 8x8 -> 32x32
    ],
)
def test_chunked_resize_equals_the_einsum_formula(monkeypatch, dtype, shape, size):
    rng = np.random.default_rng(0)
    if dtype == np.uint8:
        x = rng.integers(0, 256, shape).astype(dtype)
    else:
        x = rng.integers(0, 17, shape) / 16.0
    expected = _one_einsum(x, size)
    n, h, w, c = shape
    per_image = h * w * c * 12 + size * (w + size) * c * 8
    first = None
    for images_per_chunk in (1, 3, n):  # 3 does not divide 7 or 5: a shorter last chunk
        monkeypatch.setattr(data, "CHUNK_BYTES", images_per_chunk * per_image)
        out = data.resize_bilinear(x, size)
        assert out.dtype == np.float32 and out.shape == (n, size, size, c)
        first = out if first is None else first
        np.testing.assert_array_equal(out, first)  # the chunking changes no bit
        if dtype == np.uint8:  # other summation order: the same value to one float32 ulp
            np.testing.assert_array_max_ulp(out, expected, maxulp=1)
        else:  # exact arithmetic (weights in 1/8ths, levels in 1/16ths): the digits' bits stay
            np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(data._unit(x), _old_unit(x))  # what normalize() sees, too


def test_resize_peak_memory_is_about_the_result(monkeypatch):
    # One einsum over everything held the float64 result, its float32 copy and float copies of the
    # input at once (> 3x the result: ~90 GB for CIFAR-10 at 224x224); chunked, the result plus
    # CHUNK_BYTES of temporaries.
    monkeypatch.setattr(data, "CHUNK_BYTES", 2**19)
    x = np.random.default_rng(0).integers(0, 256, (60, 16, 16, 3), dtype=np.uint8)
    out, peak = _traced_peak(data.resize_bilinear, x, 64)
    assert out.shape == (60, 64, 64, 3)
    assert peak < 1.5 * out.nbytes, (
        f"peak {peak / 1e6:.2f} MB for a {out.nbytes / 1e6:.2f} MB result"
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_channel_stats_equal_the_float32_ones(monkeypatch, dtype):
    monkeypatch.setattr(data, "CHUNK_BYTES", 4 * 5 * 6 * 3 * 12)  # 4 images a chunk: 13 = 4+4+4+1
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (13, 5, 6, 3), dtype=np.uint8)
    x[..., 2] = 77  # a constant channel: std exactly 0 (no NaN from rounding), floored to 1e-3
    if dtype == np.float32:
        x = x.astype(np.float32) / 255
    unit = _old_unit(x)  # what normalize() sees
    mean, std = data.channel_stats(x)
    # Exactly (to float64 rounding) the statistics of the float32 values ...
    exact = unit.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, exact.std(axis=(0, 1, 2)), rtol=1e-12, atol=1e-15)
    assert std[2] == 0
    # ... so the float32 results of the whole-array computation, to the error of its float32
    # accumulation (not pairwise over these axes): 3.6e-6 relative for the 390 equal values of
    # the constant channel, ~4e-6 on 10^5 random values per channel.
    ds = data.Dataset("t", x, np.zeros(13, np.int64), x[:2], np.zeros(2, np.int64), ["a"])
    assert ds.mean.dtype == np.float32 and ds.std.dtype == np.float32
    np.testing.assert_allclose(ds.mean, unit.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(ds.std[:2], unit.std(axis=(0, 1, 2))[:2], rtol=1e-5)
    assert ds.std[2] == np.float32(1e-3)
    batch = ds.normalize(x)
    np.testing.assert_allclose(batch[..., :2].mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(batch[..., :2].std(axis=(0, 1, 2)), 1, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_training_statistics_make_no_full_size_copy(monkeypatch, dtype):
    # The statistics were taken on a float32 copy of every training image plus a same-size
    # temporary inside ``std``: 8x the bytes of a uint8 set, 1x+ of a float32 (resized) one.
    monkeypatch.setattr(data, "CHUNK_BYTES", 2**16)
    x = np.random.default_rng(2).integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    x = x if dtype == np.uint8 else x.astype(np.float32) / 255
    y = np.zeros(200, np.int64)
    ds, peak = _traced_peak(data.Dataset, "t", x, y, x[:2], y[:2], ["a"])
    assert peak < x.nbytes / 4, f"peak {peak / 1e6:.2f} MB for {x.nbytes / 1e6:.2f} MB of images"
    exact = _old_unit(x).astype(np.float64)
    np.testing.assert_allclose(ds.mean, exact.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(ds.std, exact.std(axis=(0, 1, 2)), rtol=1e-6)


def test_channel_stats_stay_exact_on_millions_of_values():
    # 3,000 copies of one 32x32 image (9 MB): 3M values per channel, whose statistics are the
    # image's own. The whole-array float32 mean/std summed them one by one in float32: 1e-3 off
    # here, and stalled past 2^23 (34% off on 50,000 random CIFAR-like images).
    image = np.random.default_rng(5).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    many = np.ascontiguousarray(np.broadcast_to(image, (3000, 32, 32, 3)))
    y = np.zeros(3000, np.int64)
    ds, (mean, std) = data.Dataset("t", many, y, image, y[:1], ["a"]), data.channel_stats(image)
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(ds.std, std, rtol=1e-6)


def _write_class_folders(root) -> None:
    """``root/{a,b}/`` with three 8-bit images each: RGB, grey ("L") and palette ("P")."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for cls in ("a", "b"):
        os.makedirs(root / cls)
        rgb = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
        rgb.save(root / cls / "rgb.png")
        rgb.convert("L").save(root / cls / "grey.png")
        rgb.convert("P").save(root / cls / "palette.png")


@pytest.mark.parametrize(
    "array_dtype, name, mode",
    [
        (np.uint16, "deep.png", "I;16"),  # a 16-bit grey PNG
        (">u2", "deep.tif", "I;16B"),
        (np.int32, "deep.tif", "I"),
        (np.float32, "deep.tif", "F"),
    ],
)
def test_folder_refuses_images_wider_than_8_bits(tmp_path, array_dtype, name, mode):
    # PIL's convert("RGB") clipped such samples to 255 (a 16-bit PNG came out ~99% white).
    from PIL import Image

    _write_class_folders(tmp_path)
    ds = data.load_folder(str(tmp_path), 4)  # 8-bit grey and palette images are fine
    assert len(ds.y_train) + len(ds.y_test) == 6
    deep = (np.arange(30).reshape(6, 5) * 2000).astype(array_dtype)
    Image.fromarray(deep).save(tmp_path / "b" / name)
    with Image.open(tmp_path / "b" / name) as img:
        assert img.mode == mode
    message = rf"Cannot read image .*{name}: PIL mode '{mode}' .*only 8-bit images are supported"
    with pytest.raises(data.DataError, match=message):
        data.load_folder(str(tmp_path), 4)
