"""The CUDA emulator (tests/cuda_emulator): csrc/cuda built for the CPU, which runs the CUDA backend's kernels
thread by thread where there is no GPU. Checked here: that it is the real module's twin, that the real kernels
give the same bits whichever order their threads and blocks run in (no races), and, on purpose-built broken
kernels (selftest.cu), that each check it claims fails when it should."""
import pytest
import torch

import ugcn_fast
from ugcn_fast import _native

from _cuda_env import EMULATED, built_cuda_module

pytestmark = [pytest.mark.cuda_emulator,
              pytest.mark.skipif(not EMULATED, reason="the CUDA emulator is not running (a GPU, or turned off)")]

ORDER = "UGCN_FAST_CUDA_EMULATOR_ORDER"


@pytest.fixture(scope="module")
def selftest():
    from cuda_emulator import build

    return build.load("_emulator_selftest", (build.HERE / "selftest.cu",), ())


def _both_orders(monkeypatch, run):
    """run() once with threads and blocks in launch order and once reversed."""
    monkeypatch.setenv(ORDER, "forward")
    forward = run()
    monkeypatch.setenv(ORDER, "reverse")
    reverse = run()
    monkeypatch.delenv(ORDER)
    return forward, reverse


def _ptr(t):
    return t.data_ptr()


# ---- the emulated module -------------------------------------------------------------------------------------
@pytest.mark.skipif(built_cuda_module() is None, reason="no nvcc build of ugcn_fast._cuda to compare with")
def test_emulated_module_has_the_real_modules_functions():
    real, emulated = built_cuda_module(), _native.cuda_module
    public = lambda m: {n for n in dir(m) if not n.startswith("_")}  # noqa: E731
    assert public(real) == public(emulated)
    assert real.max_d == emulated.max_d and real.stgcn_max_joints == emulated.stgcn_max_joints
    assert emulated.runtime_problem() == ""


def test_cuda_backend_serves_cpu_tensors_under_the_emulator():
    assert "cuda" in ugcn_fast.available_backends()
    x = torch.randn(2, 12, 5, 3)
    assert torch.isfinite(ugcn_fast.motion_loss(x, x + 0.1, intervals=(1, 4), backend="cuda"))


# ---- the real kernels have no races ----------------------------------------------------------------------------
@pytest.mark.parametrize("operator, D", [("cross", 3), ("inner", 2), ("sub", 5)])
@pytest.mark.parametrize("normalize", ["sample", "joint", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_motion_loss_kernels_give_the_same_bits_in_any_order(monkeypatch, operator, D, normalize, dtype):
    g = torch.Generator().manual_seed(0)
    target = torch.randn(3, 23, 300, D, generator=g).to(dtype)  # J * T > 256 threads; J > 256 lanes
    pred = (target.float() + 0.3 * torch.randn(target.shape, generator=g)).to(dtype)

    def run():
        p, t = pred.clone().requires_grad_(True), target.clone().requires_grad_(True)
        loss = ugcn_fast.motion_loss(p, t, intervals=(1, 5, 22), operator=operator, normalize=normalize,
                                     reduction="none", backend="cuda")
        return (loss, *torch.autograd.grad(loss.sum(), (p, t)))

    for a, b in zip(*_both_orders(monkeypatch, run)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("C_in, C_out, V, stride, dropout", [(3, 20, 17, 2, 0.3), (20, 16, 25, 1, 0.0),
                                                             (40, 300, 5, 2, 0.5)])
def test_block_kernels_give_the_same_bits_in_any_order(monkeypatch, C_in, C_out, V, stride, dropout):
    from ugcn_fast import FusedSTGCNBlock, Graph

    torch.manual_seed(0)
    A = Graph(num_nodes=V, edges=[(i, i + 1) for i in range(V - 1)], strategy="spatial", center=0).A
    block = FusedSTGCNBlock(C_in, C_out, A, stride=stride, dropout=dropout, residual=True, backend="cuda")
    x = torch.randn(4, C_in, 41, V)

    def run():
        block.load_state_dict(state)  # the same running statistics for both runs
        torch.manual_seed(1)
        xr = x.clone().requires_grad_(True)
        block.train()
        out = block(xr)
        grads = torch.autograd.grad(out, [xr] + list(block.parameters()), torch.ones_like(out))
        block.eval()
        with torch.no_grad():
            evaluated = block(x)
        return (out.detach(), *grads, evaluated, *[b.clone() for b in block.buffers()])

    state = {k: v.clone() for k, v in block.state_dict().items()}
    for a, b in zip(*_both_orders(monkeypatch, run)):
        assert torch.equal(a, b)


def test_reductions_over_many_blocks_give_the_same_bits_in_any_order(monkeypatch):
    from ugcn_fast.backends import cuda_stgcn

    x = torch.randn(40000, 20, generator=torch.Generator().manual_seed(2))  # several chunks and tiles
    forward, reverse = _both_orders(monkeypatch, lambda: cuda_stgcn.channel_stats(x))
    assert all(torch.equal(a, b) for a, b in zip(forward, reverse))


# ---- each check of the emulator fails when it should ---------------------------------------------------------
def test_a_missing_barrier_changes_the_bits_with_the_order(monkeypatch, selftest):
    x = torch.randn(3 * selftest.threads, generator=torch.Generator().manual_seed(0))

    def run(barriers):
        out = torch.zeros(3)
        selftest.block_sum(_ptr(x), _ptr(out), 3, barriers)
        return out

    forward, reverse = _both_orders(monkeypatch, lambda: run(True))
    assert torch.equal(forward, reverse)
    torch.testing.assert_close(forward, x.view(3, -1).sum(1))
    forward, reverse = _both_orders(monkeypatch, lambda: run(False))
    assert not torch.equal(forward, reverse)


def test_blocks_writing_one_element_change_the_bits_with_the_order(monkeypatch, selftest):
    def run():
        out = torch.zeros(1)
        selftest.shared_output(_ptr(out), 5)
        return out

    forward, reverse = _both_orders(monkeypatch, run)
    assert not torch.equal(forward, reverse)


def test_a_divergent_barrier_is_an_error(selftest):
    out = torch.zeros(selftest.threads)
    with pytest.raises(RuntimeError, match="divergent barrier"):
        selftest.divergent_barrier(_ptr(out))


def test_unwritten_shared_memory_reads_as_nan(selftest):
    out = torch.zeros(selftest.threads)
    selftest.unwritten_shared(_ptr(out))
    assert torch.isnan(out[0::2]).all() and (out[1::2] == 1).all()


def test_shared_memory_over_the_default_limit_is_an_error(selftest):
    out = torch.zeros(selftest.threads)
    selftest.big_shared(_ptr(out), 1024)
    assert (out == 2).all()
    with pytest.raises(RuntimeError, match="shared memory"):
        selftest.big_shared(_ptr(out), 40 * 1024)  # + 16 KiB static > 48 KiB
    selftest.big_shared(_ptr(out), 1024)  # the emulator recovers from the error


@pytest.mark.parametrize("grid_x, grid_y, block_x, smem, error", [
    (1, 1, 32, 0, "cudaSuccess"), (1, 1, 1024, 48 * 1024, "cudaSuccess"),
    (1, 1, 1025, 0, "cudaErrorInvalidConfiguration"), (1, 65536, 32, 0, "cudaErrorInvalidConfiguration"),
    (0, 1, 32, 0, "cudaErrorInvalidConfiguration"), (1, 1, 32, 48 * 1024 + 1, "cudaErrorInvalidValue"),
])
def test_launch_limits_are_cudas(selftest, grid_x, grid_y, block_x, smem, error):
    assert selftest.launch_config(grid_x, grid_y, block_x, smem) == error


def test_half_types_round_like_torch(selftest):
    specials = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 65504.0, 65520.0, 65519.0,
                             2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11,
                             1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 3.0e38, -1e-40])
    x = torch.cat([specials, torch.randn(5000, generator=torch.Generator().manual_seed(0)) * 10.0 ** torch.randint(
        -8, 8, (5000,), generator=torch.Generator().manual_seed(1))])
    h, b = torch.empty(x.shape, dtype=torch.float16), torch.empty(x.shape, dtype=torch.bfloat16)
    h_back, b_back = torch.empty_like(x), torch.empty_like(x)
    selftest.round_trip(_ptr(x), _ptr(h), _ptr(b), _ptr(h_back), _ptr(b_back), x.numel())
    for ours, theirs in ((h, x.to(torch.float16)), (b, x.to(torch.bfloat16))):
        same = (ours.view(torch.int16) == theirs.view(torch.int16)) | (ours.isnan() & theirs.isnan())
        assert same.all(), x[~same][:5]
    torch.testing.assert_close(h_back, h.float(), equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(b_back, b.float(), equal_nan=True, rtol=0, atol=0)
