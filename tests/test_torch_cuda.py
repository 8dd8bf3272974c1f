"""The torch models on a CUDA device compute what they compute on the CPU (``impl="auto"`` and
``channels_last=None`` pick other kernels and memory formats there). ``gpu``-marked."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from gpconv.backends.torch import efficientnet_b0, kefficientnet_b0  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs torch with a CUDA device"),
]


@pytest.mark.parametrize("make", [kefficientnet_b0, efficientnet_b0])
def test_cuda_logits_and_gradients_equal_cpu(make):
    torch.backends.cudnn.allow_tf32 = False  # compare float32 with float32
    torch.backends.cuda.matmul.allow_tf32 = False
    cpu = make(num_classes=10, skip_stride_cnt=3, seed=0).eval()
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.randn(4, 3, 32, 32)
    outs = {}
    for name, model, xt in (("cpu", cpu, x), ("cuda", gpu, x.cuda())):
        logits = model(xt)
        logits.square().sum().backward()
        grads = {k: p.grad.detach().cpu() for k, p in model.named_parameters()}
        outs[name] = (logits.detach().cpu(), grads)
    (ref, ref_grads), (got, grads) = outs["cpu"], outs["cuda"]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    for k, g in grads.items():
        err = (g - ref_grads[k]).norm() / ref_grads[k].norm().clamp_min(1e-12)
        assert err < 1e-3, f"{k}: relative gradient error {err:.2e}"
    assert gpu.uses_channels_last(torch.device("cuda")) == (make is efficientnet_b0)
