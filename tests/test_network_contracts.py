"""``core.network`` contracts its docstrings state that no test pinned: masks are validated in
inference too, and ``loss_and_grads`` returns the moving statistics of its training forward.

Found missing by a mutation run on core/network.py: each test fails on a mutant that every
other test of tests/test_network.py and tests/test_dropout_sites.py let live."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import drop_masks, random_network_params, tiny_architecture

from gpconv.core import network

LABELS = np.array([0, 2])


def _images(n: int, size: int, seed: int = 0, dtype=np.float64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(dtype)


def test_a_misspelt_mask_is_refused_in_inference_too():
    """``forward``'s masks "may name only the dropout sites of arch ... in either mode": a
    misspelt site in an inference call is an error, not silently ignored (the same call in
    training would draw that site's mask from ``rng`` instead of using it)."""
    arch = tiny_architecture()
    params = random_network_params(arch)
    x = _images(2, 8)
    masks = {**drop_masks(arch, 2), "block2b_dorp": np.ones((2, 1, 1, 1))}
    with pytest.raises(ValueError, match="block2b_dorp"):
        network.forward(arch, params, x, training=False, masks=masks)
    bad_shape = {k: np.ones((3, 1, 1, 1)) for k in drop_masks(arch, 2) if k.endswith("_drop")}
    with pytest.raises(ValueError):
        network.forward(arch, params, x, training=False, masks=bad_shape)


def test_loss_and_grads_returns_the_moving_statistics_of_its_training_forward():
    """``loss_and_grads`` returns ``moving_stats``: in training, one updated value for every
    non-trainable parameter (each BN's moving mean and variance), equal to what ``forward``
    computes from the same batch; in inference none."""
    arch = tiny_architecture()
    params = random_network_params(arch)
    x = _images(2, 8)
    masks = drop_masks(arch, 2)
    out = network.loss_and_grads(arch, params, x, LABELS, training=True, masks=masks)
    _, cache = network.forward(arch, params, x, training=True, masks=masks)
    non_trainable = {k for k, (_, trainable) in arch.param_shapes().items() if not trainable}
    missing = sorted(non_trainable - set(out["moving_stats"]))
    assert set(out["moving_stats"]) == non_trainable, missing
    for k, v in cache["moving_stats"].items():
        np.testing.assert_array_equal(out["moving_stats"][k], v, err_msg=k)
        assert not np.array_equal(v, params[k]), f"{k} was not updated"
    inference = network.loss_and_grads(arch, params, x, LABELS, training=False)
    assert inference["moving_stats"] == {}
