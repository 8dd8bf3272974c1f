"""Canonical parameters: safetensors and .npz round trips, every bad-load case, the initialisers."""

from __future__ import annotations

import json
import math
import os
import stat
import threading
import zipfile

import numpy as np
import pytest
from helpers import count_file_opens, tiny_architecture

from gpconv import backends
from gpconv.core import arch as core_arch
from gpconv.core import files as core_files
from gpconv.core import network
from gpconv.core.arch import efficientnet, kefficientnet
from gpconv.core.npz import npz_bytes
from gpconv.core.params import (
    arch_metadata,
    init_params,
    load_params,
    read_metadata,
    read_params_file,
    save_params,
    sub_params,
    validate_params,
)


@pytest.fixture(scope="module")
def arch():
    return tiny_architecture()


def _read_safetensors_plainly(path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(path)


# Each format with its first bytes and the format's own reader, which must read our files too.
FORMATS = {
    "p.safetensors": (None, _read_safetensors_plainly),
    "p.npz": (b"PK\x03\x04", lambda path: np.load(path, allow_pickle=False)),
}


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_bit_exact_and_the_formats_own_reader_reads_it(tmp_path, arch, dtype, name):
    magic, read_plainly = FORMATS[name]
    params = init_params(arch, seed=3, dtype=dtype)
    # Not just zeros and ones: a non-trivial statistic must survive the round trip too.
    params["stem_bn/moving_mean"][:] = np.random.default_rng(0).standard_normal(32)
    meta = {"model": arch.name, "seed": 3, "note": "ünïcode ok"}
    path = tmp_path / name
    save_params(path, params, metadata=meta)
    if magic is not None:
        assert path.read_bytes()[: len(magic)] == magic, f"{name} was not written as {magic!r}"
    assert set(load_params(path)) == set(params), f"{name}: the names changed (metadata leaked?)"
    for loaded in (load_params(path, arch), read_plainly(path)):
        for k, v in params.items():
            assert loaded[k].dtype == v.dtype and loaded[k].tobytes() == v.tobytes(), (
                f"{k!r} is not bit-exact after save_params({name!r}) [{dtype.__name__}]"
            )
    assert read_metadata(path) == {k: str(v) for k, v in meta.items()}, (
        f"read_metadata = {read_metadata(path)}"
    )
    assert not list(tmp_path.glob("*.tmp-*")), "save_params left a temporary file behind"


@pytest.mark.parametrize("name", FORMATS)
def test_read_params_file_is_load_params_and_read_metadata_from_one_read(
    tmp_path, arch, name, monkeypatch
):
    path = tmp_path / name
    meta = {"model": arch.name}
    save_params(path, init_params(arch, seed=0), metadata=meta)
    opened = count_file_opens(monkeypatch)
    params, metadata = read_params_file(path)
    assert opened == [str(path)], f"read_params_file({name!r}) read the file {len(opened)} times"
    assert metadata == read_metadata(path) == meta
    expected = load_params(path)
    assert set(params) == set(expected)
    for k, v in expected.items():
        assert params[k].tobytes() == v.tobytes(), f"read_params_file({name!r})[{k!r}]"


def test_read_params_file_gives_the_metadata_of_the_arrays_it_read(tmp_path, monkeypatch):
    """A safetensors file's header (metadata) and its tensors came from two opens of the path:
    a run replacing the file in between (save_params renames over it, each epoch) gave the old
    file's metadata with the new file's arrays."""
    from gpconv.core import params as core_params

    path = str(tmp_path / "params.safetensors")
    save_params(path, {"w": np.full(3, 1.0)}, metadata={"epoch": "1"})
    read_header = core_params.read_header

    def replaced_after_the_header(*args):
        header = read_header(*args)
        save_params(path, {"w": np.full(3, 2.0)}, metadata={"epoch": "2"})
        return header

    monkeypatch.setattr(core_params, "read_header", replaced_after_the_header)
    params, metadata = read_params_file(path)
    assert (metadata["epoch"], params["w"].tolist()) == ("1", [1.0] * 3), (
        f"read_params_file mixed two files: metadata {metadata}, w={params['w'].tolist()}"
    )


def test_save_without_metadata_and_overwrite(tmp_path, arch):
    path = tmp_path / "p.safetensors"
    save_params(path, init_params(arch, seed=0))
    save_params(path, init_params(arch, seed=1))  # atomic replace of an existing file
    loaded = load_params(path, arch)
    assert np.array_equal(loaded["stem_conv/kernel"], init_params(arch, seed=1)["stem_conv/kernel"])
    assert read_metadata(path) == {}


def test_loaded_params_run_the_network(tmp_path, arch):
    params = init_params(arch, seed=0, dtype=np.float64)
    save_params(tmp_path / "p.safetensors", params)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3))
    a, _ = network.forward(arch, params, x)
    b, _ = network.forward(arch, load_params(tmp_path / "p.safetensors", arch), x)
    assert np.array_equal(a, b), "network.forward differs after a save/load round trip"


def test_every_bad_load_case_is_listed_in_one_error(tmp_path, arch):
    params = init_params(arch, seed=0)
    del params["stem_bn/gamma"], params["top/conv/kernel"]
    params["block1a_dwconv/kernel"] = np.zeros((5, 5, 32, 1), np.float32)
    params["predictions/bias"] = np.zeros(7, np.float32)
    params["stray/kernel"] = np.zeros((2, 2), np.float32)
    params["block9z_bn/gamma"] = np.zeros(4, np.float32)
    path = tmp_path / "bad.safetensors"
    save_params(path, params)
    with pytest.raises(ValueError) as info:
        load_params(path, arch)
    msg = str(info.value)
    expected_fragments = [
        "6 problems",
        "missing stem_bn/gamma: expected shape (32,)",
        "missing top/conv/kernel: expected shape " + str(arch.param_shapes()["top/conv/kernel"][0]),
        "unexpected stray/kernel",
        "unexpected block9z_bn/gamma",
        "block1a_dwconv/kernel: expected shape (3, 3, 32, 1), received shape (5, 5, 32, 1)",
        "predictions/bias: expected shape (3,), received shape (7,)",
    ]
    for fragment in expected_fragments:
        assert fragment in msg, f"load_params(bad file) error {msg!r} is missing {fragment!r}"
    assert load_params(path).keys() == params.keys(), "load_params without arch must not validate"


def test_init_params_refuses_an_xp_that_is_no_namespace(arch):
    """``xp="numpy"`` failed after drawing every parameter, with "'str' object has no attribute
    'asarray'"."""
    with pytest.raises(TypeError, match="xp to be None or an array namespace .*received str"):
        init_params(arch, seed=0, xp="numpy")


@pytest.mark.parametrize("dtype", [int, "foo", "int32", "bool"], ids=repr)
def test_validate_params_refuses_a_dtype_no_parameter_may_have(arch, dtype):
    """``dtype=int`` used to list every parameter as 'expected dtype int64', and 'foo' to raise
    NumPy's 'data type 'foo' not understood'."""
    with pytest.raises(TypeError, match=r"dtype to be a real floating dtype .*received dtype="):
        validate_params(arch, init_params(arch, seed=0), dtype=dtype)


def test_unexpected_names_report_their_shape(arch):
    params = init_params(arch, seed=0)
    params["stray/kernel"] = np.zeros((2, 5), np.float32)
    with pytest.raises(ValueError, match=r"unexpected stray/kernel: received shape \(2, 5\)"):
        validate_params(arch, params)


def test_wrong_dtypes_are_listed(tmp_path, arch):
    params = init_params(arch, seed=0)
    params["stem_conv/kernel"] = params["stem_conv/kernel"].astype(np.float16)
    params["stem_bn/gamma"] = params["stem_bn/gamma"].astype(np.int32)
    with pytest.raises(ValueError) as info:
        validate_params(arch, params, dtype=np.float32)
    msg = str(info.value)
    for fragment in (
        "2 problems",
        "stem_conv/kernel: expected dtype float32, received dtype float16",
        "stem_bn/gamma: expected dtype float32, received dtype int32",
    ):
        assert fragment in msg, (
            f"validate_params(dtype=float32) error {msg!r} is missing {fragment!r}"
        )
    # Without an expected dtype, only non-floating parameters are wrong.
    with pytest.raises(
        ValueError, match=r"stem_bn/gamma: expected a floating dtype, received dtype int32"
    ):
        validate_params(arch, params)
    save_params(tmp_path / "p.safetensors", params)
    with pytest.raises(
        ValueError, match=r"stem_conv/kernel: expected dtype float32, received dtype float16"
    ):
        load_params(tmp_path / "p.safetensors", arch, dtype=np.float32)


def test_negative_moving_variances_are_refused_by_every_load_path(tmp_path, arch):
    """A moving variance < 0 (a hand-edited or badly converted file) made inference NaN with only
    NumPy's 'invalid value encountered in sqrt'; loading now names it. NaN still loads, as every
    non-finite value does, and ``network.forward`` does not scan values per call."""
    params = init_params(arch, seed=0)
    params["stem_bn/moving_variance"][:2] = -0.25
    params["block1a_project/bn2/moving_variance"][1] = -1e-4  # above -eps: sqrt stays real
    params["block1a_bn/moving_variance"][0] = np.nan
    c_stem = arch.param_shapes()["stem_bn/moving_variance"][0][0]
    c_bn2 = arch.param_shapes()["block1a_project/bn2/moving_variance"][0][0]
    fragments = (
        "2 problems",
        f"stem_bn/moving_variance: expected variances >= 0, received 2 of {c_stem} negative "
        "(min -0.25)",
        f"block1a_project/bn2/moving_variance: expected variances >= 0, received 1 of {c_bn2} "
        "negative (min -0.0001)",
    )
    save_params(tmp_path / "p.safetensors", params)
    numpy = backends.get("numpy")
    model = numpy.build(arch)
    for what, load in (
        ("validate_params", lambda: validate_params(arch, params)),
        ("load_params", lambda: load_params(tmp_path / "p.safetensors", arch)),
        ("numpy backend load_params", lambda: numpy.load_params(model, params)),
    ):
        with pytest.raises(ValueError) as info:
            load()
        msg = str(info.value)
        for fragment in fragments:
            assert fragment in msg, f"{what}(negative variances) raised {msg!r}, no {fragment!r}"
        assert "block1a_bn/moving_variance" not in msg, f"{what} refused a NaN variance: {msg!r}"
    validate_params(arch, params, values=False)  # what network.forward asks for


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_params(tmp_path / "nope.safetensors")


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage" * 3, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}     "],
    ids=["empty", "garbage", "bad-header"],
)
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"corrupt.safetensors.*is not a valid safetensors file"):
        load_params(path)


def test_truncated_file(tmp_path, arch):
    path = tmp_path / "t.safetensors"
    save_params(path, init_params(arch, seed=0))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="is not a valid safetensors file"):
        load_params(path, arch)


def test_read_metadata_of_corrupt_file(tmp_path):
    path = tmp_path / "c.safetensors"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"c.safetensors.*is not a valid safetensors file"):
        read_metadata(path)


# --- initialisation ---------------------------------------------------------------------------


def test_init_is_deterministic_in_the_seed(arch):
    a, b, c = init_params(arch, 7), init_params(arch, 7), init_params(arch, 8)
    assert list(a) == list(arch.param_shapes()), (
        "init_params keys are not the canonical names in order"
    )
    assert all(np.array_equal(a[k], b[k]) for k in a), "init_params(seed=7) is not deterministic"
    assert not np.array_equal(a["stem_conv/kernel"], c["stem_conv/kernel"]), (
        "seeds 7 and 8 gave the same kernel"
    )
    assert all(a[k].dtype == np.float32 for k in a), "init_params default dtype should be float32"
    assert all(v.dtype == np.float64 for v in init_params(arch, 7, dtype=np.float64).values())


@pytest.mark.parametrize(
    ("seed", "exc", "fragment"),
    [
        (-1, ValueError, "Expected seed >= 0, received seed=-1"),
        (1.5, TypeError, "Expected seed to be a non-negative int, received float 1.5"),
        (True, TypeError, "received bool True"),
        # "Deterministic in seed": None (fresh OS entropy) would make init silently random.
        (None, TypeError, "received NoneType None"),
        (np.random.default_rng(0), TypeError, "received Generator"),
    ],
)
def test_bad_seeds_are_rejected_naming_the_argument(arch, seed, exc, fragment):
    with pytest.raises(exc) as info:
        init_params(arch, seed=seed)
    assert fragment in str(info.value), (
        f"init_params(seed={seed!r}) raised {info.value!r}, which does not mention {fragment!r}"
    )
    a, b = init_params(arch, seed=np.int64(3)), init_params(arch, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a), "a NumPy integer seed differs from the int"


def test_init_constants_follow_keras():
    arch = kefficientnet("b0", 10, 16)
    params = init_params(arch, 0)
    for k, v in params.items():
        p = k.rsplit("/", 1)[1]
        if p in ("gamma", "moving_variance"):
            assert np.all(v == 1), f"init_params[{k!r}] should be ones"
        elif p in ("beta", "moving_mean", "bias"):
            assert np.all(v == 0), f"init_params[{k!r}] should be zeros"


def _fans(shape):
    receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def test_kefficientnet_pointwise_kernels_are_glorot_uniform():
    arch = kefficientnet("b0", 10, 16)
    params = init_params(arch, 0)
    for k, v in params.items():
        if "/conv" in k and k.endswith("kernel"):
            fan_in, fan_out = _fans(v.shape)
            limit = math.sqrt(6 / (fan_in + fan_out))
            assert np.abs(v).max() <= limit, (
                f"init_params[{k!r}] exceeds the glorot limit {limit:.4f}"
            )
            if v.size >= 10_000:
                std = float(v.std())
                assert abs(std - limit / math.sqrt(3)) < 0.05 * limit, (
                    f"{k}: std {std:.4f}, glorot {limit / 3**0.5:.4f}"
                )


def test_variance_scaling_initialisers():
    """EfficientNet convs: VarianceScaling(2, fan_out, truncated normal) — |w| <= 2 sigma and the
    std of the truncated distribution equal to sqrt(2/fan_out); dense: VarianceScaling(1/3,
    fan_out, uniform), limit sqrt(1/fan_out). Stem and depthwise are the same in kEffNet."""
    for arch in (efficientnet("b0", 10), kefficientnet("b0", 10, 16)):
        params = init_params(arch, 0)
        for k, v in params.items():
            fam_conv = arch.family == "efficientnet" and "/conv" in k
            if not (k.endswith("kernel") and (fam_conv or "stem" in k or "dwconv" in k)):
                continue
            target = math.sqrt(2.0 / _fans(v.shape)[1])
            sigma = target / 0.87962566103423978
            assert np.abs(v).max() <= 2 * sigma + 1e-7, (
                f"{arch.name} init_params[{k!r}] beyond 2 sigma"
            )
            if v.size >= 20_000:
                assert abs(float(v.std()) - target) < 0.05 * target, (
                    f"{arch.name} {k}: std {v.std():.4g}, want {target:.4g}"
                )
        dense = params["predictions/kernel"]
        limit = math.sqrt(1.0 / 10)
        assert np.abs(dense).max() <= limit and np.abs(dense).max() > 0.9 * limit, (
            f"{arch.name} predictions/kernel max {np.abs(dense).max():.4f}, limit {limit:.4f}"
        )


def test_init_params_into_another_namespace(arch):
    xp = pytest.importorskip("array_api_strict")
    params = init_params(arch, 0, dtype=np.float64, xp=xp)
    assert all(type(v).__module__.startswith("array_api_strict") for v in params.values())
    validate_params(arch, params, dtype=np.float64)


def test_sub_params():
    params = {"a/conv/kernel": 1, "a/bn/gamma": 2, "ab/conv/kernel": 3, "b/x": 4}
    assert sub_params(params, "a") == {"conv/kernel": 1, "bn/gamma": 2}


def test_save_keeps_zero_dim_arrays_zero_dim(tmp_path):
    # Optimizer step counters are 0-d; np.ascontiguousarray would have saved them as (1,).
    from gpconv.core.params import load_params, save_params

    path = tmp_path / "scalars.safetensors"
    save_params(path, {"step": np.array(7.0), "w": np.ones((2, 3))})
    loaded = load_params(path)
    assert loaded["step"].shape == () and float(loaded["step"]) == 7.0
    assert loaded["w"].shape == (2, 3)


@pytest.mark.parametrize("dtype", [int, bool, complex, object, "foo", np.longdouble])
def test_init_params_refuses_dtypes_that_are_not_real_floats(arch, dtype):
    with pytest.raises(TypeError, match="dtype to be a real floating dtype"):
        init_params(arch, dtype=dtype)


def test_load_params_refuses_a_non_float_dtype(tmp_path, arch):
    path = tmp_path / "p.safetensors"
    save_params(path, init_params(arch))
    with pytest.raises(TypeError, match="dtype to be a real floating dtype"):
        load_params(path, arch, dtype=np.int32)


def test_an_empty_params_file_round_trips(tmp_path):
    # safetensors writes an unreadable header for no tensors with empty metadata.
    path = tmp_path / "empty.safetensors"
    save_params(path, {})
    assert load_params(path) == {}
    save_params(path, {}, {"step": 3})
    assert load_params(path) == {} and read_metadata(path) == {"step": "3"}


def test_saving_onto_a_folder_fails_before_writing_anything(tmp_path):
    target = tmp_path / "weights"
    target.mkdir()
    with pytest.raises(IsADirectoryError, match="folder"):
        save_params(target, {"a": np.zeros(2)})
    assert [p.name for p in tmp_path.iterdir()] == ["weights"], "a temp file was left behind"


@pytest.mark.parametrize("value", [None, "abc", np.array([object()])])
def test_saving_non_numeric_values_names_the_parameter(tmp_path, value):
    with pytest.raises(TypeError, match=r"params\['w'\] to be a numeric array"):
        save_params(tmp_path / "p.safetensors", {"w": value})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda: init_params("kefficientnet-b0"),
        lambda: validate_params(None, {}),
        lambda: network.forward({"name": "b0"}, {}, np.zeros((1, 8, 8, 3), np.float32)),
    ],
)
def test_an_architecture_that_is_not_one_is_a_type_error(call):
    with pytest.raises(TypeError, match="arch to be a gpconv.core.arch.Architecture"):
        call()


@pytest.mark.parametrize("header", [[1], {"__metadata__": [["step", "3"]]}, {"__metadata__": 7}])
def test_read_metadata_refuses_headers_that_are_not_string_maps(tmp_path, header):
    """A list of pairs used to be turned into a dict silently, and a number gave a TypeError."""
    blob = json.dumps(header).encode()
    path = tmp_path / "odd.safetensors"
    path.write_bytes(len(blob).to_bytes(8, "little") + blob)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        read_metadata(path)


def _written_with_arch_metadata(tmp_path, arch) -> str:
    """A file of ``arch``'s fresh parameters whose metadata records ``arch`` as gpconv train's
    do (docs/train.md): by name, class count and skip_stride_cnt."""
    meta = {
        "arch": arch.name,
        "num_classes": arch.num_classes,
        "skip_stride_cnt": arch.skip_stride_cnt,
    }
    path = str(tmp_path / "p.safetensors")
    save_params(path, init_params(arch, seed=0), metadata=meta)
    return path


def test_a_file_for_another_skip_stride_is_refused_though_every_shape_fits(tmp_path):
    """skip_stride_cnt changes strides, not parameter shapes: a file trained at skip 1 loaded
    into a skip -1 model used to load silently and predict from other feature maps."""
    trained = tiny_architecture(skip_stride_cnt=1)
    other = tiny_architecture(skip_stride_cnt=-1)
    assert trained.param_shapes() == other.param_shapes()  # so only the metadata can tell
    path = _written_with_arch_metadata(tmp_path, trained)
    with pytest.raises(ValueError, match=r"skip_stride_cnt=1 \(the model: -1\)"):
        load_params(path, other)
    assert load_params(path, trained).keys() == trained.param_shapes().keys()


def test_a_file_for_another_architecture_names_it_before_the_shapes(tmp_path):
    """16ch vs 32ch-style mismatches listed every mis-shaped kernel (86 lines for B0) without
    saying why; the file's recorded architecture now comes first, in one line."""
    trained = tiny_architecture(min_channels_per_group=4)
    path = _written_with_arch_metadata(tmp_path, trained)
    with pytest.raises(
        ValueError, match=r"arch=kefficientnet-b0-4ch \(the model: kefficientnet-b0-8ch\)"
    ):
        load_params(path, tiny_architecture(min_channels_per_group=8))


def test_a_file_without_architecture_metadata_still_loads(tmp_path, arch):
    """Files written before the metadata was recorded (or by other tools) are checked by shape
    alone."""
    path = tmp_path / "old.safetensors"
    save_params(path, init_params(arch, seed=0), metadata={"arch": arch.name})
    assert load_params(path, arch).keys() == arch.param_shapes().keys()


def _safetensors_blob(entries: dict[str, tuple[str, list[int], bytes]]) -> bytes:
    """A safetensors file written by hand (format: 8-byte little-endian header length, JSON
    header with dtype/shape/data_offsets per tensor, then the data), for dtypes NumPy lacks."""
    header, data = {}, b""
    for name, (dtype, shape, raw) in entries.items():
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


def test_a_bfloat16_file_is_refused_by_dtype_not_called_corrupt(tmp_path, arch):
    """A bfloat16 file (safetensors.torch of a bf16 model) was reported as "not a valid
    safetensors file: 'BF16'": it is valid, NumPy just has no bfloat16."""
    path = tmp_path / "bf16.safetensors"
    one = np.float32(1.0).tobytes()[2:]  # bfloat16 is float32's upper 2 bytes (little-endian)
    path.write_bytes(_safetensors_blob({"stem_conv/kernel": ("BF16", [1], one)}))
    with pytest.raises(TypeError, match=r"dtypes \['BF16'\].*stem_conv/kernel \(BF16\)"):
        load_params(path, arch)


def _header_file(tmp_path, header: bytes, data: bytes = b"") -> str:
    """A file of a hand-written header (``header``: its JSON bytes) and ``data``."""
    path = tmp_path / "h.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return str(path)


_ONE = b'{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'


@pytest.mark.parametrize(
    "header, data, fragment",
    [
        # read_metadata returned the int; load_params refused the file.
        (b'{"__metadata__": {"num_classes": 10}}', b"", r"values must be strings.*num_classes=10"),
        # both took the last entry silently; other parsers take the first or refuse.
        (b'{"w": ' + _ONE + b', "w": ' + _ONE + b"}", b"\0" * 4, "key 'w' twice"),
        (b'{"__metadata__": {"arch": "a", "arch": "b"}}', b"", "key 'arch' twice"),
    ],
    ids=["metadata-int", "tensor-twice", "metadata-twice"],
)
def test_load_params_and_read_metadata_refuse_the_same_headers(tmp_path, header, data, fragment):
    path = _header_file(tmp_path, header, data)
    for read in (load_params, read_metadata):
        with pytest.raises(
            ValueError, match=rf"h.safetensors.*not a valid safetensors.*{fragment}"
        ):
            read(path)


@pytest.mark.parametrize(
    "head, kind",
    [
        (b"\x93NUMPY\x01\x00", "a NumPy .npy file"),
        (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),  # Keras .weights.h5
        (b"\x80\x02\x8a\x0al\xfc\x9cF", "a pickle"),  # torch.save(_use_new_zipfile_...=False)
    ],
    ids=["npy", "hdf5", "pickle"],
)
def test_files_of_other_formats_are_named_not_read(tmp_path, head, kind):
    """These were "header length 578712552184433488 does not fit the file": true, no help."""
    path = tmp_path / "model.pt"
    path.write_bytes(head + b"\0" * 64)
    for read in (load_params, read_metadata):
        with pytest.raises(ValueError, match=rf"model.pt.*is {kind}.*safetensors and .npz files"):
            read(path)


def test_a_truncated_file_whose_length_starts_like_a_pickle_is_not_called_one(tmp_path):
    path = tmp_path / "t.safetensors"
    path.write_bytes((0x180).to_bytes(8, "little") + b"{")  # 0x80 is pickle's first byte
    with pytest.raises(ValueError, match=r"header length 384 does not fit the file \(9 bytes\)"):
        load_params(path)


def _within_seconds(call, fifo, seconds: float = 30.0):
    """``call()`` on a thread; if it still runs after ``seconds`` (blocked opening ``fifo``,
    which waits for a writer), unblock it by opening the FIFO for writing, and fail."""
    outcome = {}

    def target():
        try:
            outcome["value"] = call()
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        try:  # non-blocking: with no reader in open() (merely slow), a blocking open would hang
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # ENXIO: nothing has the FIFO open for reading
            pass
        thread.join(seconds)
        pytest.fail(f"{call} blocked on the FIFO {fifo}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.parametrize("read", [load_params, read_metadata])
def test_a_fifo_is_refused_before_it_is_opened(tmp_path, read):
    """read_metadata (and so torch's load_file, which calls it first) blocked forever."""
    fifo = tmp_path / "p.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"p.safetensors', which is no regular file"):
        _within_seconds(lambda: read(fifo), fifo)


@pytest.mark.parametrize("read", [load_params, read_metadata])
def test_a_folder_is_called_a_folder(tmp_path, read):
    with pytest.raises(IsADirectoryError, match="received the folder"):
        read(tmp_path)


def test_saving_onto_a_fifo_leaves_it_in_place(tmp_path):
    """The rename replaced it with a regular file (as root, even /dev/full)."""
    fifo = tmp_path / "p.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"p.safetensors', which is none.*refusing to replace"):
        save_params(fifo, {"w": np.zeros(2)})
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["p.safetensors"], "a temp file was left"


@pytest.mark.parametrize(
    "kwargs, exc, fragment",
    [
        ({"params": [np.zeros(2)]}, TypeError, r"params to be a dict \{str: ...\}, received list"),
        ({"params": {1: np.zeros(2)}}, TypeError, r"keys of params to be str, received 1 \(int\)"),
        ({"metadata": [("a", "b")]}, TypeError, "metadata to be a dict"),
        ({"path": None}, TypeError, "path to be a str or os.PathLike, received NoneType"),
        ({"path": ""}, ValueError, "path to name a file, received ''"),
    ],
)
def test_save_params_names_its_bad_argument(tmp_path, kwargs, exc, fragment):
    """These were AttributeErrors ('list' object has no attribute 'items'), safetensors's own
    TypeError, or a FileNotFoundError about '.tmp-<pid>' -> ''."""
    args = {"path": tmp_path / "p.safetensors", "params": {"w": np.zeros(2)}, **kwargs}
    with pytest.raises(exc, match=fragment):
        save_params(**args)
    assert list(tmp_path.iterdir()) == []


# --- NumPy .npz files (DESIGN.md §2: "safetensors/npz load & save") ---------------------------


def _zip(path, members: dict[str, bytes]) -> None:
    """A zip archive written by hand: members that np.savez would never write."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize("writer", [np.savez, np.savez_compressed])
def test_files_written_by_numpy_load_and_run(tmp_path, arch, writer):
    params = init_params(arch, seed=0, dtype=np.float64)
    path = tmp_path / "numpy.npz"
    writer(path, **params)
    assert read_metadata(path) == {}
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3))
    a, _ = network.forward(arch, params, x)
    b, _ = network.forward(arch, load_params(path, arch), x)
    assert np.array_equal(a, b), f"network.forward differs after {writer.__name__}/load_params"


def test_npz_keeps_zero_dim_arrays_and_names_that_are_numpys_keywords(tmp_path):
    """np.savez(path, **params) would take params named file/allow_pickle as its own keywords."""
    params = {"file": np.arange(3.0), "allow_pickle": np.ones(2), "step": np.array(7)}
    save_params(tmp_path / "odd.npz", params)
    loaded = load_params(tmp_path / "odd.npz")
    assert {k: (v.shape, v.tolist()) for k, v in loaded.items()} == {
        k: (v.shape, v.tolist()) for k, v in params.items()
    }


def test_npz_file_for_another_architecture_is_refused(tmp_path):
    trained, other = tiny_architecture(skip_stride_cnt=1), tiny_architecture(skip_stride_cnt=-1)
    path = tmp_path / "p.npz"
    save_params(path, init_params(trained, seed=0), metadata=arch_metadata(trained))
    with pytest.raises(ValueError, match=r"p.npz.*skip_stride_cnt=1 \(the model: -1\)"):
        load_params(path, other)


@pytest.mark.parametrize(
    "members, fragment",
    [
        ({"archive/data.pkl": b"\x80\x02", "archive/version": b"3"}, "torch.save's .pt/.pth"),
        ({"config.json": b"{}", "model.weights.h5": b""}, "a Keras .keras file"),
        ({"a.npy": b"", "readme.txt": b""}, "another zip archive"),
    ],
    ids=["torch", "keras", "other"],
)
def test_zips_that_are_no_npz_are_named_not_read(tmp_path, members, fragment):
    """np.load would open these too and return raw bytes for each member."""
    path = tmp_path / "model.pt"
    _zip(path, members)
    for read in (load_params, read_metadata):
        with pytest.raises(ValueError, match=rf"model.pt.*no NumPy .npz.*{fragment}.*unpickles"):
            read(path)


def test_npz_with_object_or_text_arrays_is_refused_by_name(tmp_path):
    np.savez(tmp_path / "obj.npz", w=np.array([{"x": 1}], dtype=object))  # a pickle inside
    with pytest.raises(ValueError, match=r"obj.npz.*array 'w'.*allow_pickle=False"):
        load_params(tmp_path / "obj.npz")
    np.savez(tmp_path / "text.npz", w=np.zeros(2), label=np.array(["cat"]))
    with pytest.raises(ValueError, match=r"text.npz.*numeric arrays.*'label' of dtype <U3"):
        load_params(tmp_path / "text.npz")


@pytest.mark.parametrize(
    "entry, fragment",
    [
        (np.array(["{}"]), r"0-d string array"),
        (np.array("not json"), r"no JSON metadata"),
        (np.array('{"arch": 3}'), r"JSON object of strings"),
    ],
    ids=["not-0d", "not-json", "not-strings"],
)
def test_npz_metadata_that_is_no_string_map_is_refused(tmp_path, entry, fragment):
    path = tmp_path / "m.npz"
    np.savez(path, w=np.zeros(2), __metadata__=entry)
    for read in (load_params, read_metadata):
        with pytest.raises(ValueError, match=rf"m.npz.*__metadata__.*{fragment}"):
            read(path)


def test_truncated_and_duplicated_npz_files_are_refused(tmp_path, arch):
    path = tmp_path / "p.npz"
    save_params(path, init_params(arch, seed=0))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"p.npz.*not a valid .npz file"):
        load_params(path)
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile writes it, and warns
        _write_twice(tmp_path / "twice.npz")
    with pytest.raises(ValueError, match=r"twice.npz.*'w.npy' twice"):
        load_params(tmp_path / "twice.npz")


def test_npz_names_ending_in_npy_keep_their_own_arrays(tmp_path):
    """NumPy's NpzFile looks "w.npy" up as the raw member of parameter "w" first."""
    params = {"w": np.zeros(2, np.float32), "w.npy": np.ones(3, np.float32)}
    save_params(tmp_path / "p.npz", params)
    loaded = load_params(tmp_path / "p.npz")
    assert {k: v.tolist() for k, v in loaded.items()} == {k: v.tolist() for k, v in params.items()}


def test_npz_parameter_name_with_nul_is_refused_before_writing(tmp_path):
    """zipfile cuts a member name at NUL: the file was written, then refused on load."""
    with pytest.raises(ValueError, match=r"without NUL characters, received 'a\\x00b'"):
        save_params(tmp_path / "p.npz", {"a\x00b": np.zeros(2)})
    assert not list(tmp_path.iterdir())


def _write_twice(path) -> None:
    """An archive holding ``w.npy`` twice: readers disagree on which one counts."""
    import io
    import zipfile

    blob = io.BytesIO()
    np.lib.format.write_array(blob, np.zeros(2))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", blob.getvalue())
        archive.writestr("w.npy", blob.getvalue())


@pytest.mark.parametrize("name", ["p.safetensors", "p.npz"])
def test_a_parameter_named_like_the_metadata_is_refused_before_writing(tmp_path, name):
    """safetensors wrote such a file without complaint, and could not read it back."""
    with pytest.raises(ValueError, match=r"names other than '__metadata__'.*metadata="):
        save_params(tmp_path / name, {"__metadata__": np.zeros(2)})
    assert not list(tmp_path.iterdir()), "save_params wrote something"


def test_saving_onto_a_symlink_writes_through_it(tmp_path, arch):
    """The rename used to replace the link itself: the link became a file, its target kept the
    old parameters (``open(path, "wb")``, torch.save and safetensors.save_file write through)."""
    target = tmp_path / "runs" / "params.safetensors"
    target.parent.mkdir()
    save_params(target, init_params(arch, seed=0))
    link = tmp_path / "latest.safetensors"
    link.symlink_to(target)
    save_params(link, init_params(arch, seed=1))
    assert link.is_symlink(), "save_params replaced the symlink with a file"
    expected = init_params(arch, seed=1)["stem_conv/kernel"]
    assert np.array_equal(load_params(target)["stem_conv/kernel"], expected)
    assert not list(tmp_path.rglob("*.tmp-*")), "save_params left a temporary file behind"


def test_two_threads_saving_one_path_each_write_a_whole_file(tmp_path, arch, monkeypatch):
    """Both temp files are written before either is renamed (a barrier in os.replace). With one
    temp name per process the second thread truncated the first's temp file, the first rename
    published it, and the second rename failed with FileNotFoundError."""
    from gpconv.core import files

    path = tmp_path / "p.safetensors"
    both_written = threading.Barrier(2, timeout=30)
    real_replace = os.replace

    def replace_when_both_are_written(src, dst):
        both_written.wait()
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace_when_both_are_written)
    saved = {seed: init_params(arch, seed=seed) for seed in (0, 1)}
    errors: list[BaseException] = []

    def save(seed: int) -> None:
        try:
            save_params(path, saved[seed])
        except BaseException as err:  # reported below, in the test's own thread
            errors.append(err)

    threads = [threading.Thread(target=save, args=(seed,)) for seed in saved]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, f"a concurrent save_params failed: {errors!r}"
    kernel = load_params(path, arch)["stem_conv/kernel"]
    assert any(np.array_equal(kernel, p["stem_conv/kernel"]) for p in saved.values())
    assert not list(tmp_path.glob("*.tmp-*")), "save_params left a temporary file behind"


def test_save_params_fsyncs_the_folder_after_the_rename(tmp_path, arch, monkeypatch):
    """The rename lives in the folder's entries: without an fsync of the folder a crash right
    after save_params may bring back the old file."""
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    save_params(tmp_path / "p.npz", init_params(arch, seed=0))
    assert synced == [False, True], f"fsync calls (is a folder): {synced}"


def test_symlink_loop_is_refused_and_kept(tmp_path):
    """realpath stops inside a loop at a link, which the rename replaced with a regular file."""
    (tmp_path / "a.npz").symlink_to(tmp_path / "b.npz")
    (tmp_path / "b.npz").symlink_to(tmp_path / "a.npz")
    with pytest.raises(ValueError, match=r"a.npz', a loop of symlinks"):
        save_params(tmp_path / "a.npz", {"w": np.zeros(2)})
    assert (tmp_path / "a.npz").is_symlink() and (tmp_path / "b.npz").is_symlink()


def test_symlink_into_a_missing_folder_names_that_folder(tmp_path):
    """The target's folder, not the link's, must exist: the error named a temp file before."""
    (tmp_path / "p.npz").symlink_to(tmp_path / "gone" / "p.npz")
    with pytest.raises(FileNotFoundError, match=r"No folder '.*gone' to write '.*p.npz' in"):
        save_params(tmp_path / "p.npz", {"w": np.zeros(2)})


def test_a_npz_member_without_npy_data_is_refused_by_name(tmp_path):
    """NpzFile hands a member without the .npy magic over as raw bytes."""
    path = tmp_path / "p.npz"
    _zip(path, {"w.npy": b"not an npy"})
    for read in (load_params, read_params_file):
        with pytest.raises(ValueError, match=r"p.npz.*'w'.*holds no .npy data"):
            read(path)


def test_big_endian_parameters_load_and_run(tmp_path, arch):
    """A float32 array in big-endian byte order (np.savez keeps it) is a float32 parameter."""
    params = init_params(arch, seed=0)
    swapped = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in params.items()}
    np.savez(tmp_path / "be.npz", **swapped)
    loaded = load_params(tmp_path / "be.npz", arch, dtype=np.float32)
    assert all(np.array_equal(loaded[k], params[k]) for k in params)
    validate_params(arch, swapped, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
    logits, _ = network.forward(arch, swapped, x)
    np.testing.assert_array_equal(logits, network.forward(arch, params, x)[0])


def test_masked_arrays_are_refused_not_saved_without_their_mask(tmp_path):
    masked = np.ma.masked_array(np.arange(4.0), mask=[0, 1, 0, 0])
    with pytest.raises(TypeError, match=r"params\['w'\].*MaskedArray"):
        save_params(tmp_path / "p.npz", {"w": masked})
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("name", ["p.npz", "p.safetensors"])
def test_overwriting_a_file_keeps_its_permissions(tmp_path, name):
    path = tmp_path / name
    save_params(path, {"w": np.ones(2, np.float32)})
    os.chmod(path, 0o600)
    save_params(path, {"w": np.zeros(2, np.float32)})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert np.array_equal(load_params(path)["w"], np.zeros(2, np.float32))


def test_a_path_ending_in_a_separator_is_called_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match="received the folder"):
        save_params(f"{tmp_path}/nofolder/", {"w": np.ones(2, np.float32)})
    assert list(tmp_path.iterdir()) == []


def test_load_params_checks_dtype_without_an_architecture_too(tmp_path):
    path = tmp_path / "p.npz"
    save_params(path, {"w": np.ones(2, np.float32), "v": np.ones(3, np.float64)})
    with pytest.raises(ValueError, match=r"dtype float32, received \(1 arrays\):\n  v: float64"):
        load_params(path, dtype=np.float32)
    assert load_params(path, dtype=None)["v"].dtype == np.float64


# --- cases a mutation run found untested ------------------------------------------------------


@pytest.mark.parametrize("name", ["p.npz", "p.safetensors"])
def test_scalars_and_empty_sets_round_trip(tmp_path, name):
    """A 0-d array (a step counter) must come back 0-d, not (1,); no parameters, as none."""
    path = tmp_path / name
    save_params(path, {"step": np.array(7, np.int64), "w": np.ones(2, np.float32)})
    loaded = load_params(path)
    assert loaded["step"].shape == () and int(loaded["step"]) == 7
    save_params(path, {})
    assert load_params(path) == {}


def test_complex_arrays_in_an_npz_are_refused_by_name(tmp_path):
    np.savez(tmp_path / "c.npz", w=np.ones(2, np.complex64))
    with pytest.raises(ValueError, match="'w' of dtype complex64"):
        load_params(tmp_path / "c.npz")


def test_a_zero_moving_variance_is_valid_a_negative_one_is_not():
    # Keras loads a variance of 0 (a channel that was constant); below 0 no batch can give.
    arch = core_arch.by_name("kefficientnet-b0", 10, 16, 3)
    params = init_params(arch, 0)
    params["stem_bn/moving_variance"] = np.zeros_like(params["stem_bn/moving_variance"])
    validate_params(arch, params)
    params["stem_bn/moving_variance"][3] = -1e-9
    with pytest.raises(ValueError, match=r"\(1 problem\):\n  stem_bn/moving_variance: .*1 of 32"):
        validate_params(arch, params)


def test_metadata_checks_skip_only_the_keys_they_are_told_to():
    from gpconv.core.params import check_arch_metadata

    metadata = arch_metadata(core_arch.by_name("kefficientnet-b0", 10, 16, 3))
    other_head = core_arch.by_name("kefficientnet-b0", 100, 16, 3)
    with pytest.raises(ValueError, match="num_classes"):
        check_arch_metadata(other_head, metadata, "x.safetensors")
    check_arch_metadata(other_head, metadata, "x.safetensors", ignore=("num_classes",))
    other_stride = core_arch.by_name("kefficientnet-b0", 100, 16, 2)
    with pytest.raises(ValueError, match="skip_stride_cnt"):
        check_arch_metadata(other_stride, metadata, "x.safetensors", ignore=("num_classes",))


def test_exchange_refuses_values_the_cast_makes_inf_not_those_that_were_inf():
    """A float32 NaN or inf parameter loads as it is (validate_params allows it); it was refused
    as 'overflows float32'. A float64 1e300 beside a NaN in the same array slipped through the
    cast to inf: the check looked at whole arrays, not elements."""
    from gpconv.backends.exchange import validated

    arch = core_arch.by_name("kefficientnet-b0", 10, 16, 3)
    params = init_params(arch, 0)
    params["predictions/bias"][:2] = [np.nan, np.inf]
    out = validated(arch, params, np.float32)
    assert np.isnan(out["predictions/bias"][0]) and np.isinf(out["predictions/bias"][1])
    wide = {k: v.astype(np.float64) for k, v in params.items()}
    wide["predictions/bias"][3] = 1e300
    with pytest.raises(ValueError, match=r"predictions/bias: max \|value\| 1e\+300 overflows"):
        validated(arch, wide, np.float32)


def test_validate_params_refuses_a_values_flag_that_is_no_bool(arch) -> None:
    """values=1 (or "no") is a caller's bug: a TypeError naming 'values', not truthiness."""
    params = init_params(arch, 0)
    with pytest.raises(TypeError, match=r"Expected values to be True or False, received int 1"):
        validate_params(arch, params, values=1)


@pytest.mark.parametrize("params", [[np.zeros(2)], "stem_conv/kernel", None], ids=repr)
def test_validate_params_refuses_params_that_are_no_mapping(arch, params) -> None:
    """A list, string or None of parameters is a TypeError naming 'params' and the type received,
    not an AttributeError from inside the shape check."""
    with pytest.raises(TypeError, match=rf"params to be a dict .*received {type(params).__name__}"):
        validate_params(arch, params)


def test_float16_parameters_are_floating_without_a_dtype(arch) -> None:
    """Without ``dtype`` any floating dtype passes: float16 too (not just float32/64)."""
    half = {k: v.astype(np.float16) for k, v in init_params(arch, 0).items()}
    validate_params(arch, half)
    validate_params(arch, half, np.float16)
    with pytest.raises(
        ValueError, match=r"stem_conv/kernel: expected dtype float32, received dtype float16"
    ):
        validate_params(arch, half, np.float32)


def test_torch_bfloat16_parameters_are_floating_without_a_dtype(arch) -> None:
    """A bfloat16 torch model's parameters (validate_params takes any array library) count as
    floating: the check lists non-floating dtypes only."""
    torch = pytest.importorskip("torch")
    params = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in init_params(arch, 0).items()}
    validate_params(arch, params)
    params["stem_bn/gamma"] = params["stem_bn/gamma"].to(torch.int32)
    with pytest.raises(
        ValueError, match=r"stem_bn/gamma: expected a floating dtype, received dtype int32"
    ):
        validate_params(arch, params)


@pytest.mark.parametrize("name", ["p.safetensors", "p.npz"])
def test_non_contiguous_arrays_save_their_values_not_their_memory(tmp_path, name) -> None:
    """A transposed (Fortran-ordered) or strided view saves the values it shows:
    safetensors.numpy writes a non-C-contiguous array's raw buffer in memory order."""
    base = np.arange(12.0).reshape(3, 4)
    params = {"t": base.T, "s": base[:, ::2]}
    assert not params["t"].flags.c_contiguous and not params["s"].flags.c_contiguous
    save_params(tmp_path / name, params)
    loaded = load_params(tmp_path / name)
    np.testing.assert_array_equal(loaded["t"], [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7, 11]])
    np.testing.assert_array_equal(loaded["s"], [[0, 2], [4, 6], [8, 10]])


@pytest.mark.parametrize("name", ["p.NPZ", "p.Npz"])
def test_an_npz_suffix_in_any_case_writes_an_npz(tmp_path, name) -> None:
    """The format follows the suffix case-insensitively: ``p.NPZ`` is a zip NumPy reads."""
    save_params(tmp_path / name, {"w": np.arange(3.0)})
    assert zipfile.is_zipfile(tmp_path / name)
    with np.load(tmp_path / name, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["w"], [0.0, 1.0, 2.0])


def test_non_str_keys_are_counted_in_the_error(tmp_path) -> None:
    """One bad key is named alone; more say how many others there are."""
    with pytest.raises(TypeError, match=r"received 1 \(int\)$"):
        save_params(tmp_path / "p.safetensors", {1: np.zeros(2), "w": np.zeros(2)})
    with pytest.raises(TypeError, match=r"received 1 \(int\) and 2 more$"):
        save_params(tmp_path / "p.safetensors", {1: np.zeros(2), 2: np.zeros(2), (3,): np.zeros(2)})


@pytest.mark.parametrize("dtype", [np.int64, "int32", bool])
def test_load_params_refuses_a_non_float_dtype_without_an_architecture(tmp_path, dtype) -> None:
    """``dtype`` is checked as an argument (TypeError naming it) before the file is read, with or
    without ``arch``: not turned into 'every array has the wrong dtype'."""
    save_params(tmp_path / "p.safetensors", {"w": np.zeros(2, np.float32)})
    with pytest.raises(TypeError, match=r"Expected dtype to be a real floating dtype"):
        load_params(tmp_path / "p.safetensors", dtype=dtype)


@pytest.mark.parametrize("name", ["p.safetensors", "p.npz"])
def test_complex_parameters_are_refused_before_writing(tmp_path, name) -> None:
    """A complex array is no parameter: refused by name on save (an .npz would be written and
    then refused by load_params), leaving no file behind."""
    with pytest.raises(TypeError, match=r"params\['z'\] to be a numeric array.*complex128"):
        save_params(tmp_path / name, {"w": np.zeros(2), "z": np.zeros(2, np.complex128)})
    assert list(tmp_path.iterdir()) == []


def test_torch_tensors_save_as_their_values_bfloat16_as_float32(tmp_path) -> None:
    """save_params takes torch tensors as they are: one that requires grad, and a bfloat16 one
    (which NumPy lacks) as float32 holding the same values."""
    torch = pytest.importorskip("torch")
    params = {
        "bf": torch.tensor([1.0, -2.5, 0.15625], dtype=torch.bfloat16),
        "g": torch.tensor([3.0, 4.0], requires_grad=True),
    }
    save_params(tmp_path / "p.safetensors", params)
    loaded = load_params(tmp_path / "p.safetensors")
    assert loaded["bf"].dtype == np.float32 and loaded["g"].dtype == np.float32
    np.testing.assert_array_equal(loaded["bf"], [1.0, -2.5, 0.15625])
    np.testing.assert_array_equal(loaded["g"], [3.0, 4.0])


def test_a_file_of_many_numpy_less_tensors_names_three_and_counts_the_rest(tmp_path) -> None:
    """Four bfloat16 tensors: the error names the first three and says '1 more'."""
    one = np.float32(1.0).tobytes()[2:]
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(_safetensors_blob({n: ("BF16", [1], one) for n in "abcd"}))
    with pytest.raises(
        TypeError, match=r"received 4 of dtypes.*: a \(BF16\), b \(BF16\), c \(BF16\) and 1 more"
    ):
        load_params(path)


class _BytesPath:
    """An ``os.PathLike`` whose ``__fspath__`` gives bytes."""

    def __init__(self, path: bytes) -> None:
        self.path = path

    def __fspath__(self) -> bytes:
        return self.path


def test_a_pathlike_of_bytes_is_a_type_error(tmp_path) -> None:
    save_params(tmp_path / "p.safetensors", {"w": np.zeros(2)})
    bytes_path = _BytesPath(os.fsencode(tmp_path / "p.safetensors"))
    for call in (load_params, read_metadata):
        with pytest.raises(TypeError, match=r"path to be a str or os.PathLike of str, received b'"):
            call(bytes_path)
    with pytest.raises(TypeError, match=r"os.PathLike of str"):
        save_params(_BytesPath(os.fsencode(tmp_path / "q.safetensors")), {"w": np.zeros(2)})
    assert [p.name for p in tmp_path.iterdir()] == ["p.safetensors"]


@pytest.mark.parametrize("size", [1, 7])
def test_a_file_shorter_than_the_length_field_says_so(tmp_path, size: int) -> None:
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x02" * size)
    for read in (load_params, read_metadata):
        with pytest.raises(
            ValueError, match=rf"holds {size} bytes, fewer than the 8 of a safetensors"
        ):
            read(path)


def test_a_length_past_safetensors_limit_is_named_as_such(tmp_path) -> None:
    """A length field over 100 MB (no foreign format's magic) is refused as over the limit."""
    path = tmp_path / "big.safetensors"
    path.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    for read in (load_params, read_metadata):
        with pytest.raises(
            ValueError, match=r"header length 1099511627776 exceeds safetensors' limit of 100000000"
        ):
            read(path)


@pytest.mark.parametrize("past", [1, 8])
def test_a_header_length_past_the_end_is_refused_even_when_the_rest_parses(
    tmp_path, past: int
) -> None:
    """A length field that overshoots the file by 1-8 bytes (the header itself fits, so a short
    read would parse it) is a truncated or corrupt file: both readers refuse it."""
    header = b'{"__metadata__": {"arch": "x"}}'
    path = tmp_path / "h.safetensors"
    path.write_bytes((len(header) + past).to_bytes(8, "little") + header)
    n, size = len(header) + past, 8 + len(header)
    for read in (load_params, read_metadata):
        with pytest.raises(
            ValueError, match=rf"header length {n} does not fit the file \({size} bytes\)"
        ):
            read(path)


def test_save_never_writes_into_an_existing_temp_file(tmp_path, monkeypatch) -> None:
    """The temp file is created exclusively ('x'): a file (or link) already at its name is never
    truncated or written through, and the target is left as it was."""
    path = tmp_path / "p.safetensors"
    save_params(path, {"w": np.zeros(2)})
    before = path.read_bytes()
    squatter = tmp_path / "squatter"
    squatter.write_bytes(b"keep me")
    monkeypatch.setattr(core_files, "temp_name", lambda p: str(squatter))
    with pytest.raises(FileExistsError):
        save_params(path, {"w": np.ones(2)})
    assert squatter.read_bytes() == b"keep me"
    assert path.read_bytes() == before


def test_a_failed_save_removes_its_temp_file_and_keeps_the_old_one(tmp_path, monkeypatch) -> None:
    """A write that fails after the temp file exists (a full disk, a failed rename) leaves only
    the old file, unchanged."""
    path = tmp_path / "p.npz"
    save_params(path, {"w": np.zeros(2)})
    before = path.read_bytes()

    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(core_files.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_params(path, {"w": np.ones(2)})
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]
    assert path.read_bytes() == before


def test_npz_bytes_refuses_object_arrays() -> None:
    """The .npz writer never pickles, even when called without save_params's checks."""
    with pytest.raises(ValueError, match="allow_pickle=False"):
        npz_bytes({"o": np.array([object()], dtype=object)}, None)


def test_npz_members_are_stored_uncompressed(tmp_path) -> None:
    """As np.savez writes them (ZIP_STORED), so any .npz reader reads them."""
    save_params(tmp_path / "p.npz", {"w": np.zeros(1000)}, metadata={"a": "b"})
    with zipfile.ZipFile(tmp_path / "p.npz") as archive:
        infos = archive.infolist()
    assert sorted(i.filename for i in infos) == ["__metadata__.npy", "w.npy"]
    assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)


def test_npz_with_several_non_numeric_arrays_counts_them(tmp_path) -> None:
    path = tmp_path / "p.npz"
    np.savez(path, w=np.zeros(2), s=np.array(["a"]), t=np.array(["b"]), u=np.array([True]))
    with pytest.raises(ValueError, match=r"received 's' of dtype <U1 and 1 more$"):
        load_params(path)


def test_read_metadata_of_an_npz_reads_only_the_metadata(tmp_path) -> None:
    """read_metadata does not read the other members: one NumPy could only unpickle does not
    stop it (load_params refuses the file)."""
    path = tmp_path / "p.npz"
    np.savez(path, w=np.array([{"x": 1}], dtype=object), __metadata__=np.asarray('{"arch": "a"}'))
    assert read_metadata(path) == {"arch": "a"}
    with pytest.raises(ValueError, match=r"cannot read array 'w'"):
        load_params(path)


@pytest.mark.parametrize("metadata", [b"[]", b"0", b'""', b"false"], ids=repr)
def test_metadata_that_is_falsy_but_no_object_is_refused_by_both_readers(
    tmp_path, metadata
) -> None:
    """read_metadata took ``"__metadata__": []`` (or 0, "", false) for no
    metadata and returned {}, while load_params refused the same file as invalid safetensors."""
    path = _header_file(tmp_path, b'{"__metadata__": ' + metadata + b"}")
    for read in (load_params, read_metadata):
        with pytest.raises(ValueError, match=r"h.safetensors' is not a valid safetensors file"):
            read(path)


def test_null_metadata_is_no_metadata(tmp_path) -> None:
    """``"__metadata__": null`` is what safetensors itself reads as none: both readers agree."""
    path = _header_file(tmp_path, b'{"__metadata__": null}')
    assert read_metadata(path) == {}
    assert load_params(path) == {}
