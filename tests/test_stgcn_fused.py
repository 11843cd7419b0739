"""FusedSTGCNBlock against the reference block (SPEC §3) on the CPU backends: the native kernels ("cpu") and the
plain-PyTorch passes ("torch", the contract every backend implements). Triton and CUDA have their own files with
the same checks (test_stgcn_triton.py, test_stgcn_cuda.py)."""
import copy

import pytest
import torch

import ugcn_fast
from ugcn_fast import FusedSTGCNBlock, Graph
from ugcn_fast.backends import torch_stgcn
from ugcn_fast.ops import stgcn_pieces
from ugcn_fast.reference import STGCNBlock

from _stgcn import (A5, A17, CONFIGS, NON_FINITE_CASES, NON_FINITE_CONFIGS, TOL, assert_non_finite_like_reference,
                    config_id as _config_id, dense_graph, give_reference_the_fused_mask, non_finite_step_inputs,
                    output_shape as _out_shape, reference_and_fused as _pair)

BACKENDS = ["torch"] + (["cpu"] if "cpu" in ugcn_fast.available_backends() else [])
# "torch+gemms": the contract through the orchestration of the backends whose own kernels mix channels
# (stgcn_pieces.FUSED_GEMMS: Triton, and the CPU in eval), in training too, so that route is checked at CPU speed
BACKEND_VARIANTS = BACKENDS + ["torch+gemms"]


@pytest.fixture(params=BACKEND_VARIANTS)
def backend(request, monkeypatch):
    if request.param == "torch+gemms":
        monkeypatch.setattr(stgcn_pieces, "FUSED_GEMMS", {**stgcn_pieces.FUSED_GEMMS, "torch": ("training", "eval")})
        return "torch"
    return request.param


def _run(block, x, grad, seed):
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(seed)
    y = block(x)
    y.backward(grad)
    return y.detach(), x.grad, {n: p.grad for n, p in block.named_parameters()}


def _assert_blocks_agree(ref, fused, x, dtype, steps=2):
    for step in range(steps):
        grad = torch.randn(_out_shape(ref, x), dtype=dtype)
        for m in (ref, fused):
            m.zero_grad(set_to_none=True)
        give_reference_the_fused_mask(ref, fused, x, seed=100 + step)
        y_r, gx_r, gp_r = _run(ref, x, grad, seed=100 + step)
        y_f, gx_f, gp_f = _run(fused, x, grad, seed=100 + step)
        torch.testing.assert_close(y_f, y_r, **TOL[dtype])
        torch.testing.assert_close(gx_f, gx_r, **TOL[dtype])
        for name in gp_r:
            torch.testing.assert_close(gp_f[name], gp_r[name], **TOL[dtype], msg=f"grad of {name}")
    for (name, b_r), b_f in zip(ref.named_buffers(), fused.buffers()):
        torch.testing.assert_close(b_f, b_r, **TOL[dtype], msg=f"buffer {name}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_training_matches_reference(backend, dtype, config):
    c_in, c_out, stride, residual, T, A = config
    torch.manual_seed(0)
    ref, fused = _pair(c_in, c_out, stride, residual, A, 0.0, backend, dtype)
    x = torch.randn(3, c_in, T, A.shape[-1], dtype=dtype)
    ref.train(), fused.train()
    _assert_blocks_agree(ref, fused, x, dtype)


@pytest.mark.parametrize("T", [1, 2, 7, 13])
@pytest.mark.parametrize("kernel_size,stride", [(1, 2), (3, 1), (3, 3), (5, 1), (5, 2), (7, 5), (9, 2), (9, 7)])
def test_training_backward_writes_every_slot_it_reads(backend, kernel_size, stride, T, monkeypatch):
    # the temporal convolution's input gradient is written only where the taps read real frames: with its buffer
    # starting as NaN instead of uninitialised memory, any slot read but not written would poison the gradients.
    # (1, 2) and (9, 7) have stored frames that no tap of their phase writes (the zeroed slots)
    from ugcn_fast.ops import stgcn_block
    monkeypatch.setattr(stgcn_block, "_phase_buffer_like", lambda h: torch.full_like(h, float("nan")))
    c_in, c_out, residual, A = 4, 6, True, A5
    torch.manual_seed(0)
    ref, fused = _pair(c_in, c_out, stride, residual, A, 0.0, backend, torch.float64, kernel_size)
    x = torch.randn(2, c_in, T, A.shape[-1], dtype=torch.float64)
    ref.train(), fused.train()
    _assert_blocks_agree(ref, fused, x, torch.float64, steps=1)


@pytest.mark.parametrize("config", CONFIGS[:5], ids=_config_id)
def test_dropout_matches_the_reference_given_the_same_mask(backend, config):
    c_in, c_out, stride, residual, T, A = config
    torch.manual_seed(0)
    ref, fused = _pair(c_in, c_out, stride, residual, A, 0.5, backend, torch.float64)
    x = torch.randn(2, c_in, T, A.shape[-1], dtype=torch.float64)
    _assert_blocks_agree(ref, fused, x, torch.float64, steps=3)
    torch.manual_seed(5)
    a = fused(x)
    b = fused(x)
    assert not torch.equal(a, b), "two draws of the dropout mask should differ"
    torch.manual_seed(5)
    assert torch.equal(fused(x), a), "torch.manual_seed must reproduce the mask"


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_hashed_dropout_keeps_one_minus_p_and_native_equals_torch(p):
    rows, C = 4000, 50
    mult = torch_stgcn.dropout_multipliers(12345, p, rows, C, torch.float64, "cpu")
    kept = (mult > 0).double().mean().item()
    assert abs(kept - (1 - p)) < 4 * (p * (1 - p) / (rows * C)) ** 0.5 + 1e-4
    assert torch.all((mult == 0) | (mult == torch.tensor(1 / (1 - p), dtype=torch.float64)))
    other = torch_stgcn.dropout_multipliers(12346, p, rows, C, torch.float64, "cpu")
    assert not torch.equal(mult, other)
    # neighbouring elements and rows are not correlated (a bad hash would repeat patterns)
    keep = (mult > 0).double()
    corr = torch.corrcoef(torch.stack([keep[:, :-1].flatten(), keep[:, 1:].flatten()]))[0, 1].item()
    assert abs(corr) < 0.02
    if "cpu" in BACKENDS:
        from ugcn_fast.backends import cpu_stgcn
        for dtype in (torch.float32, torch.float64):
            ones, one, zero = torch.ones(rows, C, dtype=dtype), torch.ones(C, dtype=dtype), torch.zeros(C, dtype=dtype)
            native = cpu_stgcn.block_output_hashed(ones, one, zero, 12345, p, None, None, None)
            assert torch.equal(native, torch_stgcn.dropout_multipliers(12345, p, rows, C, dtype, "cpu"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_eval_folds_batchnorm_exactly(backend, dtype, config):
    c_in, c_out, stride, residual, T, A = config
    torch.manual_seed(1)
    ref, fused = _pair(c_in, c_out, stride, residual, A, 0.5, backend, dtype)
    ref.eval(), fused.eval()
    x = torch.randn(2, c_in, T, A.shape[-1], dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x), **TOL[dtype])
    # eval with autograd falls back to the reference and is differentiable
    xg = x.clone().requires_grad_()
    fused(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


# (C_in, C_out, stride, residual): both sides of the graph convolution (aggregate the input first when C_in < C_out,
# the output otherwise) and every residual, small enough for full Jacobians
GRADCHECK_CONFIGS = [(2, 4, 1, False), (3, 4, 2, True), (4, 4, 1, True), (4, 3, 1, True), (4, 2, 2, True),
                     (3, 2, 1, False)]


@pytest.mark.parametrize("config", GRADCHECK_CONFIGS, ids=lambda c: f"{c[0]}-{c[1]}-s{c[2]}-res{int(c[3])}")
def test_gradcheck_float64(backend, config):
    c_in, c_out, stride, residual = config
    torch.manual_seed(2)
    _, fused = _pair(c_in, c_out, stride, residual, A5, 0.0, backend, torch.float64)
    fused.train()
    params = list(fused.parameters())
    names = [n for n, _ in fused.named_parameters()]
    x = torch.randn(2, fused.in_channels, 5, 5, dtype=torch.float64, requires_grad=True)

    def f(x, *ps):
        state = dict(zip(names, ps))
        return torch.func.functional_call(fused, state, (x,))

    # running statistics change every call; gradcheck only looks at outputs, which use batch statistics
    inputs = (x, *[p.detach().requires_grad_() for p in params])
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, fast_mode=True)
    # and the full Jacobian with respect to the input
    assert torch.autograd.gradcheck(lambda x: f(x, *inputs[1:]), (x,), eps=1e-6, atol=1e-6)


def test_momentum_none_and_custom_eps_follow_batchnorm(backend):
    torch.manual_seed(3)
    ref, fused = _pair(4, 6, 2, True, A17, 0.0, backend, torch.float64)
    for block in (ref, fused):
        block.tcn[0].momentum = None  # cumulative average
        block.tcn[3].eps = 1e-3
        block.residual[1].momentum = 0.3
    x = torch.randn(2, 4, 8, 17, dtype=torch.float64)
    _assert_blocks_agree(ref, fused, x, torch.float64, steps=3)
    assert int(fused.tcn[0].num_batches_tracked) == 3


def test_state_dict_round_trip_and_chaining(backend):
    torch.manual_seed(4)
    ref1, fused1 = _pair(3, 8, 1, False, A17, 0.0, backend, torch.float32)
    ref2, fused2 = _pair(8, 8, 2, True, A17, 0.0, backend, torch.float32)
    back = STGCNBlock(8, 8, A17, 5, 2, 0.0, True)
    back.load_state_dict(fused2.state_dict(), strict=True)  # fused -> reference
    assert set(fused2.state_dict()) == set(ref2.state_dict())
    assert "A" not in fused2.state_dict()  # non-persistent, as in the reference
    x = torch.randn(2, 3, 12, 17)
    ref_chain, fused_chain = torch.nn.Sequential(ref1, ref2).eval(), torch.nn.Sequential(fused1, fused2).eval()
    with torch.no_grad():
        y1 = fused1(x)
        assert y1.shape == (2, 8, 12, 17) and not y1.is_contiguous()  # a view of the time-major buffer
        torch.testing.assert_close(fused_chain(x), ref_chain(x), rtol=1e-4, atol=1e-4)


def test_contract_pieces_of_the_native_kernels_match_torch():
    if "cpu" not in BACKENDS:
        pytest.skip("native CPU module not built")
    from ugcn_fast.backends import cpu_stgcn
    torch.manual_seed(5)
    G, V, K, C = 7, 5, 3, 6
    for transpose in (False, True):
        src = torch.randn(G, V, K * C, dtype=torch.float64)
        bias = torch.randn(V, C, dtype=torch.float64)
        torch.testing.assert_close(cpu_stgcn.graph_aggregate(src, A5.double(), True, transpose, bias),
                                   torch_stgcn.graph_aggregate(src, A5.double(), True, transpose, bias))
        src = torch.randn(G, V, C, dtype=torch.float64)
        torch.testing.assert_close(cpu_stgcn.graph_aggregate(src, A5.double(), False, transpose, None),
                                   torch_stgcn.graph_aggregate(src, A5.double(), False, transpose, None))
    z = torch.randn(7, 2 * V, C, dtype=torch.float64)
    scale, shift = torch.rand(C, dtype=torch.float64), torch.randn(V, C, dtype=torch.float64)
    for stride in (1, 2, 3):
        pad, T_out, Tq = torch_stgcn.phase_geometry(7, 5, stride)
        h_ph = cpu_stgcn.bn_relu_phases(z, scale, shift, V, stride, pad, Tq)
        torch.testing.assert_close(h_ph, torch_stgcn.bn_relu_phases(z, scale, shift, V, stride, pad, Tq))
        stats = (torch.randn(C, dtype=torch.float64), torch.rand(C, dtype=torch.float64) + 0.5,
                 torch.randn(C, dtype=torch.float64))
        args = (torch.randn_like(h_ph), h_ph, z, *stats, V, stride, pad)
        for a, b in zip(cpu_stgcn.bn_relu_phases_backward(*args), torch_stgcn.bn_relu_phases_backward(*args)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 2, 5, 17), (2, 33, 7, 5), (64, 16, 3, 17)])
def test_time_major_transpose(shape, dtype):
    """The block's input transposed to (T, N, V, C): native where pieces.NATIVE_TIME_MAJOR says, bit for bit torch's
    permuted copy; views that are already time-major pass through; strided inputs fall back to torch."""
    from ugcn_fast.ops.stgcn_block import to_time_major
    x = torch.randn(shape, dtype=dtype)
    want = x.permute(2, 0, 3, 1).contiguous()
    for backend in ["torch"] + [b for b in BACKENDS if b in stgcn_pieces.NATIVE_TIME_MAJOR]:
        got = to_time_major(x, backend)
        assert got.is_contiguous() and torch.equal(got, want)
        assert to_time_major(x[:, :, ::2], backend).equal(x[:, :, ::2].permute(2, 0, 3, 1))
        view = want.permute(1, 3, 0, 2)  # what a fused block returns
        assert to_time_major(view, backend).data_ptr() == want.data_ptr()
        if backend != "torch":
            xg = x.clone().requires_grad_(True)
            grad = torch.randn_like(want)
            stgcn_pieces.time_major(backend, xg).backward(grad)
            assert torch.equal(xg.grad, grad.permute(1, 3, 0, 2))


def test_deterministic(backend):
    torch.manual_seed(6)
    _, fused = _pair(8, 16, 2, True, A17, 0.3, backend, torch.float32)
    x = torch.randn(4, 8, 20, 17)
    runs = []
    for _ in range(2):
        block = copy.deepcopy(fused)
        runs.append(_run(block, x, torch.ones(4, 16, 10, 17), seed=9))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert all(torch.equal(runs[0][2][n], runs[1][2][n]) for n in runs[0][2])


def test_bad_input_gets_clear_errors():
    block = FusedSTGCNBlock(4, 8, A17)
    with pytest.raises(ValueError, match="x"):
        block(torch.randn(2, 4, 10))  # wrong rank
    with pytest.raises(ValueError, match="V = 5"):
        block(torch.randn(2, 4, 10, 5))  # wrong V for A
    with pytest.raises(ValueError, match="channels"):
        block(torch.randn(2, 3, 10, 17))
    with pytest.raises(TypeError):
        block(torch.randint(0, 3, (2, 4, 10, 17)))
    with pytest.raises(ValueError, match="kernel_size"):
        FusedSTGCNBlock(4, 8, A17, kernel_size=4)
    with pytest.raises(ValueError, match="backend"):
        FusedSTGCNBlock(4, 8, A17, backend="gpu")
    with pytest.raises(RuntimeError, match="cuda"):
        FusedSTGCNBlock(4, 8, A17, backend="cuda")(torch.randn(2, 4, 10, 17)) if not (
            torch.cuda.is_available() or ugcn_fast._native.cuda_emulated) else pytest.skip("backend='cuda' runs here")
    with pytest.raises(ValueError, match="more than 1 value"):
        FusedSTGCNBlock(4, 8, Graph(num_nodes=1, edges=[]).A, residual=False)(torch.randn(1, 4, 1, 1))
    elsewhere = FusedSTGCNBlock(4, 8, A17)
    elsewhere.A = elsewhere.A.to("meta")  # A left on another device than x
    with pytest.raises(ValueError, match="A is on meta"):
        elsewhere(torch.randn(2, 4, 10, 17))


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_batch_of_one(backend, dropout):
    """N = 1: BatchNorm's statistics over T * V rows of one sequence, training (with dropout) and eval."""
    torch.manual_seed(4)
    ref, fused = _pair(4, 6, 2, True, A17, dropout, backend, torch.float64)
    x = torch.randn(1, 4, 11, 17, dtype=torch.float64)
    _assert_blocks_agree(ref, fused, x, torch.float64)
    ref.eval(), fused.eval()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x), **TOL[torch.float64])


def test_compile_traces_the_block_without_graph_breaks():
    torch.manual_seed(7)
    model = torch.nn.Sequential(FusedSTGCNBlock(3, 8, A17), FusedSTGCNBlock(8, 8, A17, stride=2))
    reference = copy.deepcopy(model)
    x = torch.randn(2, 3, 8, 17)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y = compiled(x)
    y.sum().backward()
    y_ref = reference(x)
    y_ref.sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-4, msg=name)
    # eval: the folded block (time-major transpose, gcn_relu_phases, conv_frames) traces in one graph too
    model.eval()
    reference.eval()
    with torch.no_grad():
        torch._dynamo.reset()
        y = torch.compile(model, fullgraph=True, backend="aot_eager")(x)
        torch.testing.assert_close(y, reference(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("residual", [True, False], ids=["conv-residual", "no-residual"])
def test_compiled_training_block_under_autocast_keeps_its_dtype(residual):
    """The usual AMP pattern around a compiled model: the fused passes, backward included, compute in the input's
    dtype as in eager. AOTAutograd traces the backward inside the caller's autocast region: the backward's GEMMs
    ran in bfloat16 (gradients off by ~3e-3) or the trace failed on mixed dtypes (a convolution residual)."""
    torch.manual_seed(8)
    block = FusedSTGCNBlock(4, 8 if residual else 4, A17, residual=residual)
    twin = copy.deepcopy(block)
    x = torch.randn(2, 4, 8, 17)
    grads = []
    for run in (torch.compile(block, fullgraph=True, backend="aot_eager"), twin):
        xg = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = run(xg)
        assert y.dtype == torch.float32
        y.pow(2).sum().backward()
        grads.append([xg.grad] + [p.grad for p in (block if run is not twin else twin).parameters()])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
def test_exported_training_block_is_differentiable(strict):
    """torch.export of a training-mode block records the reference computation: export does not keep the fused
    training block's autograd.Function (non-strict: backward raised "no autograd formula"; strict: the output had
    no grad_fn and the gradients stayed None)."""
    torch.manual_seed(9)
    block = FusedSTGCNBlock(4, 8, A17, stride=2)
    reference = STGCNBlock(4, 8, A17, stride=2)
    reference.load_state_dict(block.state_dict())
    x = torch.randn(2, 4, 9, 17)
    exported = torch.export.export(copy.deepcopy(block), (x,), strict=strict).module()
    results = []
    for run in (exported, reference):
        xg = x.clone().requires_grad_()
        y = run(xg)
        y.pow(2).sum().backward()
        results.append((y, xg.grad, run.get_parameter("gcn.conv.weight").grad))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# ---- the cpu backend's reused eval buffers (ugcn_fast/backends/_scratch.py) ------------------------------------
needs_cpu = pytest.mark.skipif("cpu" not in BACKENDS, reason="the native CPU module is not built")


def _eval_blocks(dtype=torch.float64):
    pairs = [_pair(c_in, c_out, stride, residual, A, 0.3, "cpu", dtype)
             for c_in, c_out, stride, residual, _, A in CONFIGS]
    xs = [torch.randn(3, c[0], c[4] + 4, c[5].shape[-1], dtype=dtype) for c in CONFIGS]
    return [(ref.eval(), fused.eval()) for ref, fused in pairs], xs


@needs_cpu
def test_eval_scratch_buffers_never_alias_results():
    """Eval on the cpu backend writes its time-major input copy, phase buffer and residual into per-thread buffers
    reused from call to call: earlier outputs stay intact while later calls (other shapes, the same shapes) reuse
    them, every output matches the reference, and release() frees them."""
    from ugcn_fast.backends import _scratch
    _scratch.release()
    pairs, xs = _eval_blocks()
    with torch.no_grad():
        first = [fused(x) for (_, fused), x in zip(pairs, xs)]
        kept = [y.clone() for y in first]
        assert _scratch.held_bytes() > 0
        again = [fused(x) for (_, fused), x in reversed(list(zip(pairs, xs)))][::-1]
        want = [ref(x) for (ref, _), x in zip(pairs, xs)]
    for y, k, y2, w in zip(first, kept, again, want):
        assert torch.equal(y, k) and torch.equal(y2, k)
        torch.testing.assert_close(y, w, **TOL[torch.float64])
    ugcn_fast.backends.release_cpu_buffers()
    assert _scratch.held_bytes() == 0


@needs_cpu
def test_training_backward_survives_eval_calls_in_between():
    """A training forward saves its time-major input for backward: eval calls of other blocks between forward and
    backward (which reuse every scratch slot) must not touch it."""
    ref, fused = _pair(16, 32, 2, True, A17, 0.0, "cpu", torch.float64)
    _, other = _pair(16, 32, 2, True, A17, 0.0, "cpu", torch.float64)
    x = torch.randn(2, 16, 9, 17, dtype=torch.float64)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yf = ref(xr), fused(xf)
    with torch.no_grad():
        other.eval()(torch.randn(2, 16, 9, 17, dtype=torch.float64))
        other(torch.randn(3, 16, 12, 17, dtype=torch.float64))
    grad = torch.randn_like(yr)
    yr.backward(grad)
    yf.backward(grad)
    torch.testing.assert_close(xf.grad, xr.grad, **TOL[torch.float64])
    for (name, p), q in zip(fused.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, **TOL[torch.float64], msg=name)


@needs_cpu
def test_eval_from_several_threads():
    """Each Python thread has its own scratch buffers: concurrent eval calls give the sequential results."""
    from concurrent.futures import ThreadPoolExecutor
    pairs, xs = _eval_blocks(torch.float32)
    with torch.no_grad():
        want = [fused(x) for (_, fused), x in zip(pairs, xs)]

    def work(tid):  # -> [(block index, output)]; an exception re-raises in the test thread
        blocks = range(tid % 2, len(xs), 2) if tid < 2 else range(len(xs))
        with torch.no_grad():
            return [(i, pairs[i][1](xs[i])) for _ in range(4) for i in blocks]

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = [r for thread_results in pool.map(work, range(3)) for r in thread_results]
    assert len(results) == 4 * (len(xs) + len(range(0, len(xs), 2)) + len(range(1, len(xs), 2)))
    for i, y in results:
        assert torch.equal(y, want[i])


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_parameters_by_name_is_named_parameters(config):
    """The fused forward reads its parameters from the submodules directly: the same names, order and objects as
    named_parameters()."""
    c_in, c_out, stride, residual, _, A = config
    block = FusedSTGCNBlock(c_in, c_out, A, 5, stride, 0.1, residual)
    want, got = dict(block.named_parameters()), block._parameters_by_name()
    assert list(got) == list(want) and all(got[k] is want[k] for k in want)


@needs_cpu
def test_eval_scratch_across_inference_mode():
    """A buffer first allocated under torch.inference_mode() (an inference tensor) serves later no_grad and
    grad-mode eval calls too (the kernels write it through its pointer, never with a torch in-place op)."""
    ugcn_fast.backends.release_cpu_buffers()
    ref, fused = _pair(16, 32, 2, True, A17, 0.3, "cpu", torch.float64)
    ref.eval(), fused.eval()
    x = torch.randn(2, 16, 12, 17, dtype=torch.float64)
    with torch.inference_mode():
        outs = [fused(x)]
    with torch.no_grad():
        outs.append(fused(x))
    outs.append(fused(x))  # grad mode on, nothing requires grad: the fused eval path
    with torch.inference_mode():
        outs.append(fused(x))
    with torch.no_grad():
        want = ref(x)
    for y in outs:
        torch.testing.assert_close(y, want, **TOL[torch.float64])


@pytest.mark.parametrize("case", NON_FINITE_CASES)
@pytest.mark.parametrize("c_in,c_out,stride,residual", NON_FINITE_CONFIGS)
def test_non_finite_values_propagate_as_in_the_reference(backend, case, c_in, c_out, stride, residual):
    torch.manual_seed(5)
    ref, fused = _pair(c_in, c_out, stride, residual, dense_graph(), 0.0, backend, torch.float64)
    x, dout = non_finite_step_inputs(ref, case, 2, c_in, 8, 5, torch.float64)
    assert_non_finite_like_reference(ref, fused, x, dout)
