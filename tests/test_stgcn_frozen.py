"""Frozen fused blocks (FusedSTGCNBlock.freeze, ugcn_fast.freeze / unfreeze / frozen): the eval operands folded (and
on the CPU packed) once and reused while nothing changes, folded again when something does. A frozen block's eval
output is bitwise the unfrozen one's."""
import copy
import threading

import pytest
import torch
from torch import nn

import ugcn_fast
from ugcn_fast import UGCN, FusedSTGCNBlock, frozen
from ugcn_fast import fused_stgcn_block as fsb
from ugcn_fast.inference import predict_sequence

from _stgcn import A17, CONFIGS, TOL, config_id, reference_and_fused

BACKENDS = ["torch"] + (["cpu"] if "cpu" in ugcn_fast.available_backends() else [])
needs_cpu = pytest.mark.skipif("cpu" not in BACKENDS, reason="the native CPU module is not built")


def _unfrozen_twin(block: FusedSTGCNBlock) -> FusedSTGCNBlock:
    return copy.deepcopy(block).unfreeze()


def _assert_frozen_is_unfrozen(block: FusedSTGCNBlock, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        y = block(x)
        assert torch.equal(y, _unfrozen_twin(block)(x))
    return y


@pytest.fixture
def fold_count(monkeypatch):
    """How many times the eval operands were folded (and, on the CPU, packed)."""
    calls = []
    fold = fsb.eval_weights
    monkeypatch.setattr(fsb, "eval_weights", lambda *a: calls.append(1) or fold(*a))
    return calls


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_frozen_eval_is_the_unfrozen_eval(config, dtype, backend, fold_count):
    c_in, c_out, stride, residual, T, A = config
    torch.manual_seed(3)
    ref, block = reference_and_fused(c_in, c_out, stride, residual, A, 0.3, backend, dtype)
    ref.eval(), block.eval().freeze()
    assert block.is_frozen
    for N, t in ((2, T), (1, T), (3, T + 5), (2, T)):  # one folding serves every batch and length
        x = torch.randn(N, c_in, t, A.shape[-1], dtype=dtype)
        y = _assert_frozen_is_unfrozen(block, x)
        with torch.no_grad():
            torch.testing.assert_close(y, ref(x), **TOL[dtype])
    assert len(fold_count) == 1 + 4  # the frozen block once, each unfrozen twin once a call


@needs_cpu
def test_frozen_block_refolds_after_updates_it_can_see(fold_count):
    torch.manual_seed(4)
    _, block = reference_and_fused(16, 32, 2, True, A17, 0.0, "cpu", torch.float64)
    other = copy.deepcopy(block)
    for p in other.parameters():
        p.data.add_(0.1)
    x = torch.randn(2, 16, 12, 17, dtype=torch.float64)
    block.eval().freeze()
    outputs = [_assert_frozen_is_unfrozen(block, x)]

    def changed():
        outputs.append(_assert_frozen_is_unfrozen(block, x))
        assert not torch.equal(outputs[-1], outputs[-2])

    optimizer = torch.optim.SGD(block.parameters(), lr=0.1)  # an optimizer step (in place, versions bumped)
    block.train()
    block(x).square().sum().backward()
    optimizer.step()
    block.eval()
    changed()  # (the training forward also moved the running statistics)
    block.load_state_dict(other.state_dict())
    changed()
    block.tcn[3].eps = 0.5
    changed()
    with torch.no_grad():
        block.residual[1].running_var.mul_(2.0)
    changed()
    block.gcn.conv.bias = torch.nn.Parameter(block.gcn.conv.bias.detach() + 1.0)  # a new tensor object
    changed()
    block.double()  # .to(): every tensor swapped (the cache is dropped: a new one may reuse a freed address)
    _assert_frozen_is_unfrozen(block, x)
    with torch.no_grad():
        for _ in range(3):
            block(x)
    assert len(fold_count) == 2 * 7  # each frozen fold is one per change; each twin folds once


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_new_tensor_at_a_freed_ones_address_is_not_the_old_one(backend):
    """functional_call hands the block a temporary weight each call, freed after it: the next one often lands at
    the same address with the same version (0). The frozen block must still fold the new one."""
    from torch.func import functional_call
    torch.manual_seed(12)
    _, block = reference_and_fused(8, 8, 1, True, A17, 0.0, backend, torch.float32)
    block.eval().freeze()
    twin = _unfrozen_twin(block)
    x = torch.randn(2, 8, 9, 17)
    weight = block.tcn[2].weight.detach()
    scales = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    with torch.no_grad():  # (one temporary alive at a time: the next one may take its address)
        got = [functional_call(block, {"tcn.2.weight": weight * scale}, (x,)) for scale in scales]
        want = [functional_call(twin, {"tcn.2.weight": weight * scale}, (x,)) for scale in scales]
    for scale, g, w in zip(scales, got, want):
        assert torch.equal(g, w), scale


@pytest.mark.parametrize("backend", BACKENDS)
def test_parametrized_and_pruned_weights(backend):
    """A parametrization (weight_norm) or pruning keeps the weight outside the module's _parameters: the block
    reads it as an attribute, in training and in eval, frozen (a new tensor on every access: folded every call)
    or not."""
    from torch.nn.utils import parametrizations, prune
    torch.manual_seed(13)
    ref, block = reference_and_fused(16, 32, 2, True, A17, 0.0, backend, torch.float64)
    parametrizations.weight_norm(ref.tcn[2])
    parametrizations.weight_norm(block.tcn[2])
    block.load_state_dict(ref.state_dict())
    for m in (ref, block):
        prune.l1_unstructured(m.gcn.conv, "weight", amount=0.3)
    x = torch.randn(2, 16, 12, 17, dtype=torch.float64)
    ref.train(), block.train()
    torch.testing.assert_close(block(x), ref(x), **TOL[torch.float64])
    ref.eval(), block.eval().freeze()
    with torch.no_grad():
        want = ref(x)
        torch.testing.assert_close(block(x), want, **TOL[torch.float64])
        ref.tcn[2].parametrizations.weight.original0.mul_(1.5)
        block.tcn[2].parametrizations.weight.original0.mul_(1.5)
        torch.testing.assert_close(block(x), ref(x), **TOL[torch.float64])
        assert not torch.equal(block(x), want)


@needs_cpu
def test_cpu_eval_folds_and_packs_in_one_native_call(monkeypatch):
    """Eager CPU eval calls take the packed kernels, with operands folded and packed by one native call: on every
    call unfrozen, once for all calls frozen; neither torch's folding nor the per-call launchers run."""
    from ugcn_fast.backends import cpu_stgcn
    from ugcn_fast.ops import stgcn_block
    calls = {name: 0 for name in ("pack_eval_block", "conv_frames_packed", "gcn_relu_phases_packed", "conv_frames",
                                  "gcn_relu_phases")}
    for name in calls:
        def counted(*a, _name=name, _f=getattr(cpu_stgcn, name), **k):
            calls[_name] += 1
            return _f(*a, **k)
        monkeypatch.setattr(cpu_stgcn, name, counted)
    folds = []
    fold = stgcn_block.fold_eval_weights
    monkeypatch.setattr(stgcn_block, "fold_eval_weights", lambda *a: folds.append(1) or fold(*a))
    torch.manual_seed(14)
    _, block = reference_and_fused(16, 32, 2, True, A17, 0.0, "cpu", torch.float32)
    block.eval()
    x = torch.randn(1, 16, 12, 17)
    with torch.no_grad():
        for _ in range(2):
            block(x)
        assert calls["pack_eval_block"] == calls["conv_frames_packed"] == calls["gcn_relu_phases_packed"] == 2
        block.freeze()
        for _ in range(3):
            block(x)
    assert calls["pack_eval_block"] == 3
    assert calls["conv_frames_packed"] == calls["gcn_relu_phases_packed"] == 5
    assert calls["conv_frames"] == calls["gcn_relu_phases"] == 0 and not folds


# UGCN's widest blocks too: weights large enough to be packed by both threads, several channel blocks per panel
WIDE_CONFIGS = [(128, 256, 2, True, 8, A17), (256, 256, 1, True, 5, A17), (256, 128, 1, True, 6, A17)]


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("config", CONFIGS + WIDE_CONFIGS, ids=config_id)
def test_native_folding_is_torch_folding_bitwise(config, dtype):
    """pack_eval_block folds the BatchNorms as fold_eval_weights does, rounding for rounding: the eval output from
    its packed operands is bitwise the one from torch's folded tensors through the per-call kernels (the path that
    traced code takes), for every block configuration, including eps and statistics away from their defaults."""
    from ugcn_fast.ops import stgcn_block as ops
    c_in, c_out, stride, residual, T, A = config
    torch.manual_seed(15)
    _, block = reference_and_fused(c_in, c_out, stride, residual, A, 0.0, "cpu", dtype)
    block.eval()
    for i, bn in enumerate(block._batch_norms(block._submodules())):
        bn.eps = (1e-5, 0.3, 1e-3)[i]
    parts = block._submodules()
    bns = block._batch_norms(parts)
    params = block._parameters_by_name(parts)
    cfg = ops.BlockConfig(block.kernel_size, block.stride, block.residual_kind,
                          tuple(bn.eps for bn in bns) + (0.0,) * (3 - len(bns)), "cpu")
    states = [{"weight": bn.weight, "bias": bn.bias, "running_mean": bn.running_mean,
               "running_var": bn.running_var} for bn in bns]
    packed = ops.eval_weights(block.A, params, states, cfg, dtype)
    folded = ops.fold_eval_weights(block.A, params, states, cfg, dtype)
    assert isinstance(packed, ops.PackedEvalWeights) and isinstance(folded, ops.EvalWeights)
    x_tm = torch.randn(T, 3, A.shape[-1], c_in, dtype=dtype)
    with torch.no_grad():
        assert torch.equal(ops.eval_forward(x_tm, packed, cfg), ops.eval_forward(x_tm, folded, cfg))


@needs_cpu
def test_native_folding_declines_what_it_cannot_read():
    """A BatchNorm statistic of another dtype than the weights (a float64 buffer assigned by hand) is not read as
    the weights' dtype: the block folds in torch instead, with the result of the same statistic in float32."""
    from ugcn_fast.ops import stgcn_block as ops
    torch.manual_seed(16)
    ref, block = reference_and_fused(16, 32, 2, True, A17, 0.0, "cpu", torch.float32)
    ref.eval(), block.eval()
    block.tcn[3].running_var = block.tcn[3].running_var.double()  # (the same values: float32 ones widened)
    parts = block._submodules()
    bns = block._batch_norms(parts)
    states = [{"weight": bn.weight, "bias": bn.bias, "running_mean": bn.running_mean,
               "running_var": bn.running_var} for bn in bns]
    cfg = ops.BlockConfig(5, 2, "conv", (1e-5,) * 3, "cpu")
    assert isinstance(ops.eval_weights(block.A, block._parameters_by_name(parts), states, cfg, torch.float32),
                      ops.EvalWeights)
    x = torch.randn(2, 16, 12, 17)
    with torch.no_grad():
        torch.testing.assert_close(block(x), ref(x), **TOL[torch.float32])


@needs_cpu
def test_writes_through_data_need_freeze_again():
    """The documented limit: a write through .data bumps no version counter, so the frozen block keeps its operands
    until freeze() is called again."""
    torch.manual_seed(5)
    _, block = reference_and_fused(8, 8, 1, True, A17, 0.0, "cpu", torch.float32)
    x = torch.randn(2, 8, 9, 17)
    block.eval().freeze()
    with torch.no_grad():
        before = block(x)
        block.tcn[2].weight.data.mul_(2.0)
        assert torch.equal(block(x), before)
        block.freeze()
        assert not torch.equal(block(x), before)
    _assert_frozen_is_unfrozen(block, x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_is_not_affected_by_freeze(backend):
    torch.manual_seed(6)
    _, block = reference_and_fused(16, 32, 2, True, A17, 0.3, backend, torch.float64)
    twin = copy.deepcopy(block)
    block.freeze()
    x = torch.randn(2, 16, 12, 17, dtype=torch.float64)
    grads = []
    for m in (block, twin):
        xm = x.clone().requires_grad_()
        torch.manual_seed(9)
        y = m(xm)
        y.square().sum().backward()
        grads.append((y, xm.grad, [p.grad for p in m.parameters()], [b.clone() for b in m.buffers()]))
    (y1, gx1, gp1, b1), (y2, gx2, gp2, b2) = grads
    assert torch.equal(y1, y2) and torch.equal(gx1, gx2)
    assert all(torch.equal(a, b) for a, b in zip(gp1 + b1, gp2 + b2))
    # eval with autograd on (the reference's differentiable path) ignores the frozen operands too
    block.eval()
    xg = x.clone().requires_grad_()
    block(xg).sum().backward()
    assert xg.grad is not None


def test_freeze_functions_and_the_frozen_context():
    torch.manual_seed(7)
    model = UGCN(channels=(8, 8, 8, 8, 8)).eval()
    blocks = [m for m in model.modules() if isinstance(m, FusedSTGCNBlock)]
    assert len(blocks) == 14 and not any(b.is_frozen for b in blocks)
    blocks[3].freeze()
    with frozen(model) as m:
        assert m is model and all(b.is_frozen for b in blocks)
    assert [b.is_frozen for b in blocks] == [i == 3 for i in range(14)]  # as it was
    with pytest.raises(RuntimeError, match="inside"):
        with frozen(model):
            raise RuntimeError("inside")
    assert [b.is_frozen for b in blocks] == [i == 3 for i in range(14)]
    x = torch.randn(1, 16, 17, 2)
    with torch.no_grad():
        model(x)
        kept = blocks[3]._eval_cache["entry"]
        with frozen(model):  # a frozen block keeps its operands, and a nested frozen() changes nothing
            with frozen(model):
                model(x)
            assert all(b.is_frozen for b in blocks)
        assert blocks[3]._eval_cache["entry"] is kept and blocks[3].is_frozen
    assert ugcn_fast.freeze(model) is model and all(b.is_frozen for b in blocks)
    assert ugcn_fast.unfreeze(model) is model and not any(b.is_frozen for b in blocks)
    # the state dict does not see it (strict round trips either way)
    ugcn_fast.freeze(model)
    UGCN(channels=(8, 8, 8, 8, 8), fused=False).load_state_dict(model.state_dict(), strict=True)


def test_predict_sequence_runs_frozen_and_restores(fold_count):
    torch.manual_seed(8)
    model = UGCN(channels=(8, 8, 8, 8, 8)).train()
    twin = copy.deepcopy(model)
    inputs = torch.randn(150, 17, 2)
    got = predict_sequence(model, inputs, window=32, step=8, batch_size=4)
    assert len(fold_count) == 14  # once per block, for all the windows and both flips
    assert model.training and not any(m.is_frozen for m in model.modules() if isinstance(m, FusedSTGCNBlock))
    with torch.no_grad():
        ugcn_fast.unfreeze(twin)
        assert torch.equal(got, predict_sequence(twin, inputs, window=32, step=8, batch_size=4))


def test_overlapping_frozen_contexts_and_a_freeze_inside_one():
    """frozen() contexts that overlap without nesting (two threads' predict_sequence calls) keep the blocks frozen
    until the last one ends; a freeze() made inside a context outlives it, an unfreeze() inside one takes effect."""
    model = UGCN(channels=(8, 8, 8, 8, 8)).eval()
    blocks = [m for m in model.modules() if isinstance(m, FusedSTGCNBlock)]
    first, second = frozen(model), frozen(model)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first ends while the second still runs
    assert all(b.is_frozen for b in blocks)
    second.__exit__(None, None, None)
    assert not any(b.is_frozen for b in blocks)
    with frozen(model):
        ugcn_fast.freeze(model)  # e.g. another thread following the real-time recipe
    assert all(b.is_frozen for b in blocks)
    with frozen(model):
        blocks[0].unfreeze()
        assert not blocks[0].is_frozen and blocks[1].is_frozen
    assert not blocks[0].is_frozen and all(b.is_frozen for b in blocks[1:])
    # a copy made inside a context does not depend on it
    ugcn_fast.unfreeze(model)
    with frozen(model):
        twin = copy.deepcopy(model)
    assert not any(b.is_frozen for b in blocks)
    assert all(b.is_frozen for b in twin.modules() if isinstance(b, FusedSTGCNBlock))


class _Rendezvous(nn.Module):
    """Wraps a model (as DistributedDataParallel does: `.module`) so that two threads' predict_sequence calls
    overlap in the order that used to break them: the first call enters, the second enters and stops at its first
    window, the first runs to its end, then the second finishes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.module = model
        self.first_in, self.second_in, self.first_done = (threading.Event() for _ in range(3))
        self.first_thread = None

    def forward(self, x):
        if threading.current_thread() is self.first_thread:
            if not self.first_in.is_set():
                self.first_in.set()
                assert self.second_in.wait(60)
        elif not self.second_in.is_set():
            self.second_in.set()
            assert self.first_done.wait(60)
        return self.module(x)


def test_overlapping_predict_sequence_calls_on_a_model_in_train_mode():
    """Two threads' predict_sequence on one model in train mode: both predict in eval mode (no batch statistics,
    running statistics untouched) and the model ends in train mode. Each call saving and restoring the modes on its
    own put train mode back under the second call's remaining windows, and left the model in eval mode."""
    torch.manual_seed(11)
    model = UGCN(channels=(8, 8, 8, 8, 8)).train()
    model.layers_in_eval = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)][:3]
    for m in model.layers_in_eval:
        m.eval()  # a submodule's own mode is put back too
    modes = [m.training for m in model.modules()]
    state = copy.deepcopy(model.state_dict())
    inputs = torch.randn(150, 17, 2)
    want = predict_sequence(copy.deepcopy(model), inputs, window=32, step=8, batch_size=2)
    wrapped = _Rendezvous(model)
    results = {}

    def first():
        results["first"] = predict_sequence(wrapped, inputs, window=32, step=8, batch_size=2)
        wrapped.first_done.set()

    def second():
        results["second"] = predict_sequence(wrapped, inputs, window=32, step=8, batch_size=2)

    wrapped.first_thread = threading.Thread(target=first)
    wrapped.first_thread.start()
    assert wrapped.first_in.wait(60)
    other = threading.Thread(target=second)
    other.start()
    wrapped.first_thread.join(120)
    other.join(120)
    assert torch.equal(results["first"], want) and torch.equal(results["second"], want)
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not any(m.is_frozen for m in model.modules() if isinstance(m, FusedSTGCNBlock))


def test_evaluating_overlaps_through_a_wrapper_and_survives_a_failing_eval():
    """evaluating() calls on a wrapper and on the model inside it may overlap (each module gets its flag back when
    the last call holding it ends), and a model whose eval() raises is left as it was, holding nothing."""
    from ugcn_fast.inference import _holds, evaluating
    model = UGCN(channels=(4, 4, 4, 4, 4)).train()
    wrapper = nn.Sequential(model)
    outer, inner = evaluating(wrapper), evaluating(model)
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    assert not model.training and wrapper.training  # the inner call still holds the model in eval
    inner.__exit__(None, None, None)
    assert model.training and wrapper.training and not _holds

    class Refuses(nn.Module):
        def train(self, mode=True):
            if not mode:
                raise KeyboardInterrupt
            return super().train(mode)

    broken = nn.Sequential(model, Refuses())
    with pytest.raises(KeyboardInterrupt):
        with evaluating(broken):
            pass
    assert model.training and not _holds


@needs_cpu
def test_frozen_module_built_under_inference_mode():
    """Inference tensors have no version counter: a block whose weights are inference tensors still freezes (the
    operands are kept until freeze() is called again, as for a write through .data)."""
    torch.manual_seed(9)
    with torch.inference_mode():
        model = UGCN(channels=(8, 16, 16, 16, 16)).eval()
        x = torch.randn(1, 32, 17, 2)
        want = model(x)
        ugcn_fast.freeze(model)
        assert torch.equal(model(x), want) and torch.equal(model(x), want)


@needs_cpu
def test_frozen_eval_from_several_threads():
    """The packed operands are read-only and the scratch buffers per thread: concurrent calls of frozen blocks,
    the first ones folding at the same time, give the unfrozen results."""
    from concurrent.futures import ThreadPoolExecutor
    torch.manual_seed(10)
    pairs = [reference_and_fused(c[0], c[1], c[2], c[3], c[5], 0.0, "cpu", torch.float32) for c in CONFIGS]
    blocks = [fused.eval() for _, fused in pairs]
    xs = [torch.randn(3, c[0], c[4] + 4, c[5].shape[-1]) for c in CONFIGS]
    with torch.no_grad():
        want = [b(x) for b, x in zip(blocks, xs)]
    for b in blocks:
        b.freeze()  # nothing folded yet: the threads fold

    def work(_):
        with torch.no_grad():
            return [(i, blocks[i](xs[i])) for _ in range(4) for i in range(len(xs))]

    with ThreadPoolExecutor(max_workers=3) as pool:
        for results in pool.map(work, range(3)):
            assert all(torch.equal(y, want[i]) for i, y in results)


def test_compiled_frozen_block_folds_in_the_graph():
    """Under torch.compile the cache is not consulted (the folding is traced with the block): the frozen block
    compiles in one graph and gives the eager result."""
    torch.manual_seed(11)
    block = FusedSTGCNBlock(8, 16, A17, stride=2).eval().freeze()
    x = torch.randn(2, 8, 12, 17)
    with torch.no_grad():
        torch._dynamo.reset()
        y = torch.compile(block, fullgraph=True, backend="aot_eager")(x)
        torch.testing.assert_close(y, _unfrozen_twin(block)(x), rtol=1e-5, atol=1e-5)


@needs_cpu
def test_pack_eval_block_checks_what_it_is_given():
    """The native layer refuses a call that would read what it was not given: a convolution residual without its
    BatchNorm, a BatchNorm without its statistics, a null pointer, sizes out of range, an unknown dtype."""
    from ugcn_fast import _native
    C = _native.cpu_module
    A = torch.ones(3, 17, 17, dtype=torch.float64)
    w = torch.ones(4 * 4 * 5, dtype=torch.float32)  # the largest operand: tcn.2's weight (C_out, C_out, taps)
    p = w.data_ptr()
    bn = [p, p, p, p]
    sizes = (17, 3, 4, 4, 5, 0, 1)  # V, K, C_in, C_out, taps, order, threads
    graph, temporal = C.stgcn_pack_eval_block("float32", A.data_ptr(), p, p, p, p, 0, 0, [bn, bn], [1e-5] * 2, *sizes)
    assert list(graph.sizes) == [17, 3, 4, 4] and list(temporal.sizes) == [5, 4, 4, 0]
    with pytest.raises(ValueError, match="one BatchNorm per convolution"):
        C.stgcn_pack_eval_block("float32", A.data_ptr(), p, p, p, p, p, p, [bn, bn], [1e-5] * 2, *sizes)
    with pytest.raises(ValueError, match="weight and bias"):
        C.stgcn_pack_eval_block("float32", A.data_ptr(), p, p, p, p, p, 0, [bn, bn, bn], [1e-5] * 3, *sizes)
    with pytest.raises(ValueError, match="running_var"):
        C.stgcn_pack_eval_block("float32", A.data_ptr(), p, p, p, p, 0, 0, [bn, bn[:3]], [1e-5] * 2, *sizes)
    with pytest.raises(ValueError, match="running_var"):
        C.stgcn_pack_eval_block("float32", A.data_ptr(), p, p, p, p, 0, 0, [bn, [p, p, 0, p]], [1e-5] * 2, *sizes)
    with pytest.raises(ValueError, match="null pointer"):
        C.stgcn_pack_eval_block("float32", 0, p, p, p, p, 0, 0, [bn, bn], [1e-5] * 2, *sizes)
    with pytest.raises(ValueError, match="taps"):
        C.stgcn_pack_eval_block("float32", A.data_ptr(), p, p, p, p, 0, 0, [bn, bn], [1e-5] * 2, 17, 3, 4, 4, 11, 0, 1)
    with pytest.raises(ValueError, match="dtype"):
        C.stgcn_pack_eval_block("float16", A.data_ptr(), p, p, p, p, 0, 0, [bn, bn], [1e-5] * 2, *sizes)
