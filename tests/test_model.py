"""UGCN (SPEC §4), fused (the default) and built from the reference ST-GCN blocks."""
import pytest
import torch
import torch.nn.functional as F

import numpy as np

from ugcn_fast import FusedSTGCNBlock, Graph, UGCN, UGCNLoss

from _cuda_env import CUDA_DEVICE, CUDA_MARK


@pytest.mark.parametrize("T", [16, 32, 96])
def test_shapes_and_eval_determinism(T):
    model = UGCN().eval()
    x = torch.randn(2, T, 17, 2)
    y = model(x)
    assert y.shape == (2, T, 17, 3) and torch.isfinite(y).all()
    assert torch.equal(model(x), y)


def test_down_and_up_resolutions():
    model = UGCN()
    strides = [blk.stride for blk in model.down]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 2, 1]
    assert [blk.out_channels for blk in model.down] == [16, 32, 32, 64, 64, 128, 128, 256, 256]
    assert [blk.out_channels for blk in model.up] == [128, 64, 32, 16]
    assert model.down[0].residual_kind == "none"


def test_nearest_upsampling_repeats_frames():
    f = torch.arange(3.0).view(1, 1, 3, 1)
    up = F.interpolate(f, scale_factor=(2, 1), mode="nearest")
    assert up.flatten().tolist() == [0, 0, 1, 1, 2, 2]  # f_up(t) = f(floor(t / 2))


def test_training_step_reduces_the_loss():
    torch.manual_seed(0)
    model = UGCN(channels=(8, 8, 16, 16, 32), dropout=0.0)
    x, target = torch.randn(4, 32, 17, 2), torch.randn(4, 32, 17, 3) * 0.2
    criterion = UGCNLoss(intervals=(2, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = criterion(model(x), target)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("x, match", [
    (torch.randn(2, 90, 17, 2), "multiple of 16"),
    (torch.randn(2, 8, 17, 2), "multiple of 16"),
    (torch.randn(2, 96, 16, 2), "shape"),
    (torch.randn(2, 96, 17, 3), "shape"),
])
def test_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        UGCN()(x)


def test_bad_configuration():
    with pytest.raises(ValueError, match="channels"):
        UGCN(channels=(16, 32, 64))
    with pytest.raises(ValueError, match="joints"):
        UGCN(num_joints=25, graph=Graph(layout="h36m"))
    assert UGCN(num_joints=25, graph=Graph(layout="ntu"))(torch.randn(1, 16, 25, 2)).shape == (1, 16, 25, 3)


# The fused network on the CPU backend, and on the CUDA backend where its kernels run (a GPU, or the emulator).
MODEL_BACKENDS = [("auto", "cpu")] + ([pytest.param("cuda", CUDA_DEVICE, marks=CUDA_MARK)] if CUDA_DEVICE else [])


@pytest.mark.parametrize("backend, device", MODEL_BACKENDS)
@pytest.mark.parametrize("training", [True, False])
def test_fused_and_reference_models_agree_and_share_state_dicts(training, backend, device):
    torch.manual_seed(1)
    # dropout 0: the fused blocks draw their masks differently (test_stgcn_fused.py checks them given the same mask)
    fused = UGCN(channels=(8, 8, 16, 16, 32), dropout=0.0, backend=backend).double().to(device)
    reference = UGCN(channels=(8, 8, 16, 16, 32), dropout=0.0, fused=False).double().to(device)
    reference.load_state_dict(fused.state_dict(), strict=True)
    fused.train(training), reference.train(training)
    x = torch.randn(3, 32, 17, 2, dtype=torch.float64).to(device)
    outputs = []
    for model in (fused, reference):
        y = model(x)
        y.pow(2).sum().backward()
        outputs.append((y.detach(), {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(outputs[0][0], outputs[1][0])
    for name, grad in outputs[1][1].items():
        torch.testing.assert_close(outputs[0][1][name], grad, msg=name)
    for (name, a), b in zip(fused.named_buffers(), reference.buffers()):
        torch.testing.assert_close(a, b, msg=name)
    back = UGCN(channels=(8, 8, 16, 16, 32))
    back.load_state_dict(reference.state_dict(), strict=True)


def test_fused_model_runs_what_its_merge_and_regressor_modules_say():
    """The fused network computes the merge and regressor 1x1 convolutions as linear maps over its time-major
    buffers only while they are the constructor's plain nn.Conv2d without hooks; hooks run (feature extraction) and
    a replaced module (another head) is called, as in the reference network."""
    torch.manual_seed(2)
    fused = UGCN(channels=(4, 8, 8, 16, 16), dropout=0.0).double().eval()
    reference = UGCN(channels=(4, 8, 8, 16, 16), dropout=0.0, fused=False).double().eval()
    reference.load_state_dict(fused.state_dict(), strict=True)
    x = torch.randn(2, 16, 17, 2, dtype=torch.float64)
    seen = {}
    for name, model in (("fused", fused), ("reference", reference)):
        seen[name] = []
        model.regressor.register_forward_hook(lambda m, i, o, s=seen[name]: s.append(("regressor", o.shape)))
        model.merge[0].register_forward_hook(lambda m, i, o, s=seen[name]: s.append(("merge0", o.shape)))
    with torch.no_grad():
        torch.testing.assert_close(fused(x), reference(x))
    assert seen["fused"] == seen["reference"] == [("merge0", (2, 4, 2, 17)), ("regressor", (2, 3, 16, 17))]
    head = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 1), torch.nn.Tanh(), torch.nn.Conv2d(8, 3, 1)).double()
    fused.regressor, reference.regressor = head, head
    fused.merge[1] = reference.merge[1] = torch.nn.Conv2d(8, 4, 3, padding=1).double()
    with torch.no_grad():
        y = fused(x)
        torch.testing.assert_close(y, reference(x))
    assert y.shape == (2, 16, 17, 3)


def test_numpy_numbers_configure_blocks_models_and_graphs():
    """Sizes and rates read from numpy (configs, arrays) are accepted and stored as Python numbers."""
    block = FusedSTGCNBlock(np.int64(4), np.int64(8), Graph().A, kernel_size=np.int32(3), stride=np.int64(2),
                            dropout=np.float32(0.25))
    sizes = (block.in_channels, block.out_channels, block.kernel_size, block.stride)
    assert sizes == (4, 8, 3, 2) and all(type(v) is int for v in sizes) and block.tcn[4].p == 0.25
    model = UGCN(num_joints=np.int64(17), channels=np.array([4, 8, 8, 16, 16]), dropout=np.float64(0.1)).eval()
    assert model(torch.randn(1, 16, 17, 2)).shape == (1, 16, 17, 3)
    graph = Graph(layout=None, num_nodes=np.int64(3), edges=np.array([[0, 1], [1, 2]]), center=np.int64(1))
    assert graph.A.shape == (3, 3, 3) and type(graph.num_nodes) is int and type(graph.center) is int
    with pytest.raises(ValueError, match="dropout must be a number"):
        FusedSTGCNBlock(4, 8, Graph().A, dropout="0.1")
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        FusedSTGCNBlock(np.float64(4), 8, Graph().A)
    with pytest.raises(ValueError, match="out_channels must be a positive int"):
        UGCN(out_channels=0)
    with pytest.raises(TypeError, match="edges must be a sequence of"):
        Graph(num_nodes=3, edges=[0, 1])


def test_model_input_dtype_is_checked():
    model = UGCN(channels=(4, 8, 8, 16, 16))
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        model(torch.zeros(1, 16, 17, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="x is torch.float64 but the model's parameters are torch.float32"):
        model(torch.zeros(1, 16, 17, 2, dtype=torch.float64))
