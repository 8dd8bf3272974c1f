"""The operand-byte counter behind benchmarks/bytes_torch_train.py (gpconv.perf.torch_traffic)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from gpconv.perf.torch_traffic import (  # noqa: E402
    CountOperandBytes,
    distinct_bytes,
    train_step_traffic,
)

F32 = 4


def test_an_add_counts_both_inputs_and_the_output():
    a, b = torch.ones(10, 20), torch.ones(10, 20)
    with CountOperandBytes() as c:
        torch.add(a, b)
    assert dict(c.traffic.calls) == {"add": 1}
    assert c.traffic.bytes["add"] == 3 * 200 * F32


def test_views_and_allocations_move_no_bytes():
    a = torch.ones(6, 4)
    with CountOperandBytes() as c:
        a.view(4, 6)
        a.t()
        a[:, 1:]
        a.expand(2, 6, 4)
        torch.empty(100)
    assert c.traffic.total_bytes == 0, dict(c.traffic.bytes)


def test_a_broadcast_operand_counts_its_stored_elements_once():
    row = torch.ones(1, 20)
    assert distinct_bytes(row.expand(10, 20)) == 20 * F32
    with CountOperandBytes() as c:
        torch.ones(10, 20) * row.expand(10, 20)
    assert c.traffic.bytes["mul"] == (200 + 20 + 200) * F32


def test_a_conv_counts_input_weight_and_output():
    x, w = torch.ones(2, 3, 5, 5), torch.ones(4, 3, 1, 1)
    with CountOperandBytes() as c:
        torch.nn.functional.conv2d(x, w)
    assert c.traffic.bytes["convolution"] == (2 * 3 * 25 + 12 + 2 * 4 * 25) * F32


def test_train_step_traffic_covers_forward_backward_and_the_update():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1), torch.nn.Flatten(), torch.nn.Linear(4 * 2 * 2, 3)
    )
    traffic = train_step_traffic(model, torch.randn(2, 3, 2, 2), torch.tensor([0, 2]))
    assert traffic.calls["convolution"] == 1 and traffic.calls["convolution_backward"] == 1
    # SGD with momentum touches every parameter: at least one read and one write of each.
    param_bytes = sum(p.numel() * F32 for p in model.parameters())
    assert traffic.total_bytes > 2 * param_bytes


def test_train_step_traffic_rejects_mismatched_batches():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"y.shape=\(3,\)"):
        train_step_traffic(model, torch.randn(2, 3, 1, 1), torch.tensor([0, 1, 0]))
