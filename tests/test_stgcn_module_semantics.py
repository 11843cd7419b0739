"""FusedSTGCNBlock follows what its modules say, as the reference block does: submodules in another train/eval mode
than the block, hooks on submodules, a learned adjacency, a dropout probability set after construction, inputs of
another dtype than the weights, empty batches, kernels longer than the fused kernels take, autocast. Where the fused
passes cannot honour it, the block runs the reference computation; either way the result is the reference's."""
import pytest
import torch

import ugcn_fast
from ugcn_fast import FusedSTGCNBlock, Graph
from ugcn_fast.reference import STGCNBlock

from _stgcn import A17, TOL, give_reference_the_fused_mask, output_shape, reference_and_fused

BACKENDS = ["torch"] + (["cpu"] if "cpu" in ugcn_fast.available_backends() else [])
DT = torch.float64


def _pair(backend, stride=2, c_in=4, c_out=6, dropout=0.0, kernel_size=5):
    torch.manual_seed(0)
    return reference_and_fused(c_in, c_out, stride, True, A17, dropout, backend, DT, kernel_size)


def _x(N=2, C=4, T=9):
    return torch.randn(N, C, T, 17, dtype=DT)


def _assert_same_step(ref, fused, x):
    """One forward (+ backward in training) of each; outputs, gradients and running statistics agree."""
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yf = ref(xr), fused(xf)
    torch.testing.assert_close(yf, yr, **TOL[DT])
    if ref.training or torch.is_grad_enabled():
        w = torch.randn_like(yr)
        (yr * w).sum().backward()
        (yf * w).sum().backward()
        torch.testing.assert_close(xf.grad, xr.grad, **TOL[DT])
        for (name, pr), pf in zip(ref.named_parameters(), fused.parameters()):
            if pr.grad is not None or pf.grad is not None:
                torch.testing.assert_close(pf.grad, pr.grad, **TOL[DT], msg=name)
    for (name, br), bf in zip(ref.named_buffers(), fused.buffers()):
        torch.testing.assert_close(bf, br, **TOL[DT], msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["bn_eval_in_training", "bn1_training_in_eval", "dropout_eval_in_training"])
def test_submodule_modes_are_followed(backend, case):
    ref, fused = _pair(backend, dropout=0.5)
    for m in (ref, fused):
        if case == "bn_eval_in_training":  # the usual "freeze BatchNorm" fine-tuning
            m.train()
            for bn in m.modules():
                if isinstance(bn, torch.nn.BatchNorm2d):
                    bn.eval()
            m.tcn[4].eval()  # (dropout off too: the reference's bernoulli draws are not the fused masks)
        elif case == "bn1_training_in_eval":
            m.eval()
            m.tcn[0].train()
        else:
            m.train()
            m.tcn[4].eval()
    x = _x()
    with torch.no_grad():  # (an eval block with gradients to compute runs the reference anyway)
        torch.testing.assert_close(fused(x), ref(x), **TOL[DT])
    _assert_same_step(ref, fused, x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_old_style_weight_norm_pre_hook_runs(backend):
    ref, fused = _pair(backend)
    for m in (ref, fused):
        torch.nn.utils.weight_norm(m.tcn[2])
        m.eval()
    with torch.no_grad():
        for m in (ref, fused):
            m.tcn[2].weight_g.mul_(0.3)
        x = _x()
        torch.testing.assert_close(fused(x), ref(x), **TOL[DT])
    for m in (ref, fused):
        m.train()
    _assert_same_step(ref, fused, _x())
    _assert_same_step(ref, fused, _x())  # a second training step: the recomputed weight is a fresh one


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_hooks_on_submodules_fire(backend):
    _, fused = _pair(backend)
    seen = []
    fused.gcn.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    for mode in (True, False):
        fused.train(mode)
        with torch.no_grad():
            fused(_x())
    assert seen == [torch.Size([2, 6, 9, 17])] * 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_learned_adjacency_gets_its_gradient(backend):
    ref, fused = _pair(backend)
    for m in (ref, fused):
        m.A = torch.nn.Parameter(m.A.clone().to(DT))
    for mode in (True, False):
        for m in (ref, fused):
            m.train(mode)
            m.A.grad = None
        _assert_same_step(ref, fused, _x())
        assert fused.A.grad is not None
        torch.testing.assert_close(fused.A.grad, ref.A.grad, **TOL[DT])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [-0.2, 1.0, 1.5])
def test_dropout_probability_set_after_construction(backend, p):
    ref, fused = _pair(backend, dropout=0.5)
    for m in (ref, fused):
        m.train()
        m.tcn[4].p = p
    x = _x()
    if p == 1.0:  # nn.Dropout(1.0) zeroes everything: the residual alone, through the final ReLU
        torch.testing.assert_close(fused(x), ref(x), **TOL[DT])
    else:
        with pytest.raises(ValueError, match="dropout probability"):
            ref(x)
        with pytest.raises(ValueError, match="dropout probability"):
            fused(x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("training", [True, False])
def test_input_dtype_other_than_the_weights_is_refused_as_the_reference_does(backend, training):
    ref = STGCNBlock(4, 6, A17, 5, 2).train(training)
    fused = FusedSTGCNBlock(4, 6, A17, 5, 2, backend=backend).train(training)
    x = _x()  # float64 into float32 weights
    with torch.no_grad():
        with pytest.raises(RuntimeError) as expected:
            ref(x)
        with pytest.raises(type(expected.value)):
            fused(x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_in_eval_gives_an_empty_result(backend):
    ref, fused = _pair(backend)
    for frozen in (False, True):
        if frozen:
            fused.freeze()
        with torch.no_grad():
            y = fused.eval()(_x(N=0))
        assert y.shape == ref.eval()(_x(N=0)).shape == (0, 6, 5, 17)


def test_kernel_longer_than_the_fused_kernels_take():
    ref, fused = _pair("auto", kernel_size=11)
    x = _x(T=12)
    _assert_same_step(ref.train(), fused.train(), x)
    ref.eval(), fused.eval()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x), **TOL[DT])
    if "cpu" in BACKENDS:
        explicit = FusedSTGCNBlock(4, 6, A17, 11, 2, backend="cpu").double()
        with pytest.raises(RuntimeError, match="kernel_size = 11"):
            explicit(x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_leaves_the_fused_block_in_its_input_dtype(backend):
    ref = STGCNBlock(4, 6, A17, 5, 2)
    fused = FusedSTGCNBlock(4, 6, A17, 5, 2, backend=backend)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 9, 17)
    for mode in (True, False):
        ref.train(mode), fused.train(mode)
        with torch.no_grad():
            expected = ref(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = fused(x)
        assert y.dtype == torch.float32
        torch.testing.assert_close(y, expected, **TOL[torch.float32])


def test_adjacency_without_subsets_is_refused():
    A = Graph(layout="h36m").A
    for cls in (STGCNBlock, FusedSTGCNBlock):
        with pytest.raises(ValueError, match="at least one subset"):
            cls(4, 6, A[:0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("residual, c_in, stride, dropout", [(True, 4, 2, 0.0), (True, 6, 1, 0.3), (False, 6, 1, 0.0)],
                         ids=["conv-residual", "identity-residual-dropout", "no-residual"])
def test_second_order_gradients_match_the_reference(backend, residual, c_in, stride, dropout):
    """A gradient penalty through the block in training: first-order gradients with create_graph=True, then the
    gradient of a function of them, for the input and every parameter. A loss linear in the output is the case
    whose second derivative comes only from the block's own curvature (BatchNorm statistics, ReLU masks)."""
    torch.manual_seed(0)
    ref, fused = reference_and_fused(c_in, 6, stride, residual, A17, dropout, backend, DT)
    ref.train(), fused.train()
    x = _x(C=c_in)
    give_reference_the_fused_mask(ref, fused, x, seed=7)
    w = torch.randn(output_shape(fused, x), dtype=DT)
    results = []
    for block, seed in ((ref, None), (fused, 7)):
        xi = x.clone().requires_grad_()
        if seed is not None:
            torch.manual_seed(seed)
        params = list(block.parameters())
        first = torch.autograd.grad((block(xi) * w).sum(), [xi] + params, create_graph=True)
        penalty = sum(g.square().sum() for g in first)
        second = torch.autograd.grad(penalty, [xi] + params, allow_unused=True)
        results.append((first, second))
    (first_r, second_r), (first_f, second_f) = results
    names = ["x"] + [name for name, _ in ref.named_parameters()]
    for name, gf, gr in zip(names, first_f, first_r):
        torch.testing.assert_close(gf, gr, **TOL[DT], msg=f"first order, {name}")
    for name, gf, gr in zip(names, second_f, second_r):
        gr = torch.zeros_like(gf) if gr is None else gr  # (a bias the penalty does not depend on)
        gf = torch.zeros_like(gr) if gf is None else gf
        torch.testing.assert_close(gf, gr, **TOL[DT], msg=f"second order, {name}")
    assert second_f[0].abs().max() > 0  # the block's curvature reaches x


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_order_gradients_with_create_graph_are_the_fused_ones(backend):
    """create_graph=True recomputes the gradients differentiably; they must be the values a plain backward gives
    (same dropout multipliers, same batch statistics)."""
    _, fused = _pair(backend, dropout=0.4)
    fused.train()
    x = _x().requires_grad_()
    w = torch.randn(output_shape(fused, x), dtype=DT)
    grads = []
    for create_graph in (False, True):
        torch.manual_seed(3)
        grads.append(torch.autograd.grad((fused(x) * w).sum(), [x] + list(fused.parameters()),
                                         create_graph=create_graph))
    for gf, gd in zip(*grads):
        torch.testing.assert_close(gd, gf, **TOL[DT])


class _FakeQuantConv(torch.nn.Conv2d):
    """A convolution subclass with a forward of its own (fake quantisation, a low-rank adapter...)."""

    def forward(self, x):
        return super().forward(x) + 0.25


class _ShiftedBatchNorm(torch.nn.BatchNorm2d):
    def forward(self, x):
        return super().forward(x) * 1.5


def _replace(m, case):
    if case == "leaky_relu_in_tcn":
        m.tcn[1] = torch.nn.LeakyReLU(0.2)
    elif case == "elu_at_the_end":
        m.relu = torch.nn.ELU()
    elif case == "conv_subclass":
        conv = _FakeQuantConv(6, 6, (5, 1), (2, 1), (2, 0)).to(DT)
        conv.load_state_dict(m.tcn[2].state_dict())
        m.tcn[2] = conv
    elif case == "batch_norm_subclass":
        bn = _ShiftedBatchNorm(6).to(DT)
        bn.load_state_dict(m.tcn[3].state_dict())
        m.tcn[3] = bn
    elif case == "dropout_removed":
        m.tcn[4] = torch.nn.Identity()
    elif case == "bias_removed":
        m.gcn.conv.bias = None
    elif case == "dilated_temporal_conv":
        m.tcn[2].dilation, m.tcn[2].padding = (2, 1), (4, 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("case", ["leaky_relu_in_tcn", "elu_at_the_end", "conv_subclass", "batch_norm_subclass",
                                  "dropout_removed", "bias_removed", "dilated_temporal_conv"])
def test_replaced_or_reconfigured_submodules_are_followed(backend, training, case):
    """The fused passes compute the modules the constructor built; a submodule replaced by another class (or a
    subclass with its own forward), a removed bias or a reconfigured convolution makes the block run the reference
    computation, which calls whatever the modules now are."""
    ref, fused = _pair(backend)
    for m in (ref, fused):
        _replace(m, case)
        m.train(training)
    _assert_same_step(ref, fused, _x())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("training", [True, False])
def test_a_parametrized_weight_is_computed_once_a_call(backend, training):
    """A stateful parametrization (spectral_norm's power iteration) must run as often as in the reference."""
    calls = []

    class Scaled(torch.nn.Module):
        def forward(self, w):
            calls.append(1)
            return w * 1.25

    ref, fused = _pair(backend)
    for m in (ref, fused):
        torch.nn.utils.parametrize.register_parametrization(m.gcn.conv, "weight", Scaled())
        m.train(training)
    counts, x = [], _x()
    for m in (ref, fused):
        calls.clear()
        with torch.no_grad():
            m(x)
        counts.append(len(calls))
    assert counts[1] == counts[0] == 1, counts
    _assert_same_step(ref, fused, _x())


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_grad_outputs_match_the_reference(backend):
    """autograd.grad(..., is_grads_batched=True) (and vectorized Jacobians) hand the backward a batched tensor,
    which has no storage for the native passes: the block's VJP is recomputed in plain torch."""
    ref, fused = _pair(backend)
    x = _x()
    grads = []
    for m in (ref, fused):
        xi = x.clone().requires_grad_()
        y = m(xi)
        v = torch.randn(3, *y.shape, dtype=DT, generator=torch.Generator().manual_seed(1))
        grads.append(torch.autograd.grad(y, (xi, m.tcn[2].weight), v, is_grads_batched=True))
    for gf, gr in zip(grads[1], grads[0]):
        torch.testing.assert_close(gf, gr, **TOL[DT])


@pytest.mark.parametrize("backend", BACKENDS)
def test_jit_trace_records_the_reference_computation(backend):
    """The JIT tracer cannot record the fused ops (it fails inside torch on their optional int-list arguments):
    a traced block records the reference computation, which gives the same numbers."""
    ref, fused = _pair(backend)
    for m in (ref, fused):
        m.eval()
    with torch.no_grad():
        traced = torch.jit.trace(fused, _x())
        x = _x()
        torch.testing.assert_close(traced(x), ref(x), **TOL[DT])


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_mode_derivatives_match_the_reference(backend, training):
    """Forward-mode AD (dual tensors, torch.func.jvp / jacfwd) carries tangents the fused ops have no formula for:
    the block computes the reference then. An input with a tangent and no requires_grad used to take the fused
    passes, which dropped the tangent (zeros, or none at all) without an error."""
    import torch.autograd.forward_ad as fwAD
    ref, fused = _pair(backend)
    ref.train(training), fused.train(training)
    x, v = _x(), _x()
    results = []
    for block in (ref, fused):
        torch.manual_seed(5)  # the same dropout draw (dropout is 0 here) and the same state afterwards
        with torch.no_grad(), fwAD.dual_level():
            out = fwAD.unpack_dual(block(fwAD.make_dual(x, v)))
        results.append(out)
    assert results[0].tangent is not None and results[0].tangent.abs().max() > 0
    torch.testing.assert_close(results[1].primal, results[0].primal, **TOL[DT])
    torch.testing.assert_close(results[1].tangent, results[0].tangent, **TOL[DT])
    if not training:
        params = {k: p.detach() for k, p in ref.named_parameters()}
        (_, want), (_, got) = (torch.func.jvp(lambda x: torch.func.functional_call(m, params, (x,)), (x,), (v,))
                               for m in (ref, fused))
        torch.testing.assert_close(got, want, **TOL[DT])


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_func_grad_of_a_training_block(backend):
    """torch.func.grad through a training-mode block (functional_call with its parameters and buffers, as for
    per-sample gradients or meta-learning): the reference's gradients. The fused training op's autograd.Function
    cannot serve functorch transforms (it raised torch's setup_context error)."""
    ref, fused = _pair(backend)
    x = _x()
    grads = []
    for block in (ref.train(), fused.train()):
        params = {k: p.detach() for k, p in block.named_parameters()}
        buffers = {k: b.clone() for k, b in block.named_buffers()}

        def loss(params, x, buffers):  # (buffers an input: the running statistics' update mutates them)
            return torch.func.functional_call(block, (params, buffers), (x,)).pow(2).sum()

        grads.append(torch.func.grad(loss, argnums=(0, 1))(params, x, buffers))
        if block is fused:  # compiled too (the transform's body traced by dynamo)
            torch._dynamo.reset()
            buffers = {k: b.clone() for k, b in block.named_buffers()}
            compiled = torch.compile(torch.func.grad(loss, argnums=(0, 1)), fullgraph=True, backend="aot_eager")
            grads.append(compiled(params, x, buffers))
    (ref_params, ref_x), *fused = grads
    for fused_params, fused_x in fused:
        torch.testing.assert_close(fused_x, ref_x, **TOL[DT])
        for name, g in ref_params.items():
            torch.testing.assert_close(fused_params[name], g, **TOL[DT], msg=name)
