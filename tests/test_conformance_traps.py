"""Which porting traps ``conformance.traps`` names for a diverging layer or output: each
expectation is worked out by hand from DESIGN.md §1's group counts. (test_conformance.py checks
that a backend with each trap is caught and named.)"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from gpconv.conformance.traps import (
    TRAPS,
    _block_traps,
    kpointwise_traps,
    layer_traps,
    returns_probabilities,
    symptom_trap,
)
from gpconv.core import arch as core_arch
from gpconv.core.arch import without_dropout
from gpconv.core.pointwise import KPointwiseSpec


def test_block_and_top_traps_are_exactly_those_of_their_layers():
    """kEffNet-B0 16ch, no skipped strides. block2a (stride 2): expand 16->96 G=1 and SE convs
    (96->4 G=4, 4->96 G=1) neither interleave; project 96->24 G=6 interleaves with a second
    conv (residual): correct_pad, interleave, residual, squeeze-excite, each named once and no
    epsilon (the stem's BN would diverge first). block6b (stride 1): expand 192->1152 G=12 and
    project 1152->192 G=64 both interleave: interleave named once; in inference its drop-connect
    fits too. top 320->1280 G=20: interleaves, no second conv, its own BN's epsilon."""
    arch = core_arch.kefficientnet("b0", 10, 16)

    def named(*keys: str) -> str:
        return "; ".join(TRAPS[k] for k in keys)

    block2a = named("padding", "interleave", "residual", "squeeze-excite")
    block6b = named("interleave", "residual", "squeeze-excite")
    assert layer_traps(arch, "block2a", training=True) == block2a
    assert layer_traps(arch, "block6b", training=True) == block6b
    assert layer_traps(arch, "block6b", training=False) == named("training only") + "; " + block6b
    assert layer_traps(arch, "top") == named("top", "interleave", "epsilon")
    assert layer_traps(arch, "stem") == TRAPS["stem"]


def test_logits_fit_dropout_in_inference_only_when_the_head_has_dropout():
    arch = core_arch.kefficientnet("b0", 10, 16)
    assert layer_traps(arch, "logits", training=False) == TRAPS["training only"]
    assert layer_traps(without_dropout(arch), "logits", training=False) == ""


def test_a_kpointwise_layer_alone_names_its_activation_and_only_the_traps_it_has():
    """A plain 1x1 conv (G=1) without BN or activation has no trap at all (no bare prefix); one
    with a sigmoid names only the sigmoid's formula; a BN-less grouped layer no epsilon."""
    assert kpointwise_traps(KPointwiseSpec(16, 96, 1, bn=False)) == ""
    sigmoid = KPointwiseSpec(16, 96, 1, bn=False, activation="sigmoid")
    assert kpointwise_traps(sigmoid) == "kPointwise: " + TRAPS["sigmoid"]
    grouped = KPointwiseSpec(32, 8, 2, bn=False)
    assert kpointwise_traps(grouped) == "kPointwise: " + "; ".join(
        [TRAPS["interleave"], TRAPS["residual"]]
    )


def test_returns_probabilities_edge_cases():
    """Softmax rows in which a class underflowed to exactly 0 are still probabilities; empty
    logits, and logits with -inf (whose exp could sum to 1), get no symptom: non-finite
    outputs are reported as such, not blamed on a trap."""
    z = np.array([[0.0, 1.0, -200.0], [2.0, 0.0, 1.0]])
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    p32 = p.astype(np.float32)
    assert p32[0, 2] == 0.0  # e^-200 underflows in float32
    assert returns_probabilities(p32, z).endswith(": softmax probabilities")
    assert returns_probabilities(np.zeros((0, 3)), np.zeros((0, 3))) == ""
    log_p = np.log(p)
    log_p[0, 2] = -np.inf
    assert returns_probabilities(log_p, z) == ""


def test_a_block_without_squeeze_excite_is_not_blamed_on_it():
    """The architecture allows an MBConv block without SE (``se_reduce`` None, as
    ``core.network`` handles): its traps are its kPointwise layers' only."""
    arch = core_arch.kefficientnet("b0", 10, 16)
    block = next(b for b in arch.blocks if b.name == "block6b")
    plain = replace(block, se_reduce=None, se_expand=None)
    assert _block_traps(plain) == "; ".join([TRAPS["interleave"], TRAPS["residual"]])


def test_diverging_logits_that_are_no_probabilities_leave_the_hint_to_layer_traps():
    """``symptom_trap`` names the logits trap only with its symptom: other diverging logits get
    ``("", "")``, so that ``_locate`` names ``layer_traps`` (e.g. dropout in inference)."""
    z = np.random.default_rng(0).standard_normal((4, 10)) * 3
    ref = {"intermediates": {"logits": z}}
    assert symptom_trap("logits", {"logits": z + 0.5}, ref, False) == ("", "")
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    symptom, trap = symptom_trap("logits", {"logits": p}, ref, False)
    assert symptom.endswith(": softmax probabilities") and trap == TRAPS["logits"]
