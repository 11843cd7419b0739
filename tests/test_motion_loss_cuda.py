"""The GPU backends of the motion loss at GPU shapes and dtypes (the grid against the reference is in
test_motion_loss_backends.py). Run on a GPU machine with `pytest -m cuda`. Without a GPU the CUDA kernels'
checks run on the CPU through the CUDA emulator (`cuda_emulator`); the stream and device checks need a GPU."""
import pytest
import torch

import ugcn_fast
from ugcn_fast import reference
from ugcn_fast.ops.motion_loss import motion_loss_op

from _cuda_env import CUDA_DEVICE, CUDA_MARK, HAS_GPU, gpu_test, nan_filled_cpu_allocations  # noqa: F401 (autouse)
from _tolerances import assert_close_scaled

pytestmark = [CUDA_MARK, pytest.mark.skipif(CUDA_DEVICE is None, reason="needs a CUDA GPU or the CUDA emulator")]

# On a GPU: both GPU backends. Under the emulator: the CUDA kernels (Triton's interpreter has its own tests).
GPU_BACKENDS = [b for b in (("cuda", "triton") if HAS_GPU else ("cuda",)) if b in ugcn_fast.available_backends()]


def _inputs(B=4, T=40, J=17, D=3, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(B, T, J, D, generator=g, dtype=torch.float64)
    pred = target + 0.3 * torch.randn(B, T, J, D, generator=g, dtype=torch.float64)
    return pred.to(CUDA_DEVICE, dtype), target.to(CUDA_DEVICE, dtype)


def test_the_native_cuda_module_was_built():
    assert ugcn_fast._native.cuda_module is not None, ugcn_fast._native.cuda_import_error
    assert "cuda" in ugcn_fast.available_backends()


@gpu_test
def test_auto_picks_a_fused_gpu_backend():
    from ugcn_fast import backends

    chosen = backends.select("auto", torch.device("cuda"), torch.float32, 3, 4)
    assert chosen in ("cuda", "triton")


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_default_shape_matches_reference(backend, dtype):
    pred, target = _inputs(B=32, T=96, dtype=dtype)
    pred.requires_grad_(True)
    loss = ugcn_fast.motion_loss(pred, target, backend=backend)
    (grad,) = torch.autograd.grad(loss, pred)
    p64 = pred.detach().double().cpu().requires_grad_(True)
    expected = reference.motion_loss(p64, target.double().cpu())
    (e_grad,) = torch.autograd.grad(expected, p64)
    assert_close_scaled(loss.cpu(), expected, dtype)
    assert_close_scaled(grad.cpu(), e_grad, dtype)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_bitwise_reproducible(backend):
    pred, target = _inputs(B=64, T=96)
    pred.requires_grad_(True)
    runs = []
    for _ in range(3):
        loss = ugcn_fast.motion_loss(pred, target, backend=backend, normalize="joint")
        runs.append((loss, *torch.autograd.grad(loss, pred)))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_compile_fullgraph_on_gpu(backend):
    torch._dynamo.reset()
    pred, target = _inputs()
    pred.requires_grad_(True)
    fn = torch.compile(lambda p, t: ugcn_fast.motion_loss(p, t, backend=backend) * 3, fullgraph=True)
    out = fn(pred, target)
    (grad,) = torch.autograd.grad(out, pred)
    p2 = pred.detach().requires_grad_(True)
    expected = ugcn_fast.motion_loss(p2, target, backend=backend) * 3
    (e_grad,) = torch.autograd.grad(expected, p2)
    assert_close_scaled(out, expected)
    assert_close_scaled(grad, e_grad)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_opcheck_on_gpu(backend):
    pred, target = _inputs(B=2, T=20, J=5, dtype=torch.float64)
    pred.requires_grad_(True)
    args = (pred, target, [1, 3], "cross", "sample", 0.01, "none", backend, True, False)
    torch.library.opcheck(motion_loss_op, args)


@gpu_test
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_non_default_stream_and_second_device(backend):
    pred, target = _inputs()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        loss = ugcn_fast.motion_loss(pred, target, backend=backend)
    stream.synchronize()
    assert_close_scaled(loss.cpu().double(), reference.motion_loss(pred.double().cpu(), target.double().cpu()),
                        torch.float32)
    if torch.cuda.device_count() > 1:
        p1, t1 = pred.to("cuda:1"), target.to("cuda:1")
        assert_close_scaled(ugcn_fast.motion_loss(p1, t1, backend=backend).cpu(), loss.cpu())


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_gradients_survive_a_loss_scale(backend, dtype):
    """Unit gradients (~1 / (B T J C den)) are below float16's normal range; they are kept in float32 until
    grad_output (here a loss scale of 2^15) has multiplied them. 2^15, not AMP's initial 2^16: a loss in float16
    passes its scale on as grad_output in float16, whose largest value is 65504 (2^16 would arrive as inf)."""
    scale = 2.0 ** 15
    pred, target = _inputs(B=64, T=96, dtype=torch.float32)
    pred, target = (pred * 1000).to(dtype).requires_grad_(True), (target * 1000).to(dtype)  # millimetres
    loss = ugcn_fast.motion_loss(pred, target, backend=backend)
    (grad,) = torch.autograd.grad(loss * scale, pred)
    p64 = pred.detach().double().cpu().requires_grad_(True)
    (e_grad,) = torch.autograd.grad(reference.motion_loss(p64, target.double().cpu()) * scale, p64)
    assert grad.dtype == dtype
    assert torch.count_nonzero(grad) > 0.99 * torch.count_nonzero(e_grad)
    assert_close_scaled(grad.cpu(), e_grad, dtype)
