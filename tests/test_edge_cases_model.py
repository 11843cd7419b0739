"""Edge cases of whole-sequence inference, Procrustes-aligned metrics, the motion-capture loader and the
`lift` / `evaluate` command lines: each refused with a clear ValueError (exit status 2 on the command line) or
given a defined value, never a NaN frame, a LinAlgError, a zlib.error or a traceback."""
import numpy as np
import pytest
import torch
from torch import nn

from ugcn_fast import UGCN, metrics
from ugcn_fast.data import load_mocap
from ugcn_fast.graph import Graph
from ugcn_fast.inference import predict_sequence

from _checkpoints import tiny_checkpoint_file

TINY = (4, 8, 8, 16, 16)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return UGCN(channels=TINY)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return tiny_checkpoint_file(tmp_path_factory.mktemp("ckpt"), epoch=1)


# --------------------------------------------------------------------------------------------- predict_sequence


@pytest.mark.parametrize("step", [97, 200])
def test_step_larger_than_window_is_refused(tiny_model, step):
    with pytest.raises(ValueError, match=r"step.*window"):
        predict_sequence(tiny_model, torch.randn(300, 17, 2), window=96, step=step)


def test_step_equal_to_window_covers_every_frame(tiny_model):
    out = predict_sequence(tiny_model, torch.randn(300, 17, 2), window=96, step=96)
    assert out.shape == (300, 17, 3) and torch.isfinite(out).all()


def test_every_submodule_mode_is_restored(tiny_model):
    model = UGCN(channels=TINY)
    model.train()
    model.down[0].eval()
    modes = {name: m.training for name, m in model.named_modules()}
    predict_sequence(model, torch.randn(40, 17, 2), window=32)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert model.training and not model.down[0].training and model.down[1].training


def test_submodule_modes_are_restored_after_an_exception():
    class Failing(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(2, 3)
            self.other = nn.Linear(2, 3)

        def forward(self, x):
            raise RuntimeError("boom")

    model = Failing().train()
    model.inner.eval()
    with pytest.raises(RuntimeError, match="boom"):
        predict_sequence(model, torch.randn(10, 17, 2), window=16)
    assert model.training and not model.inner.training and model.other.training


def five_joint_model():
    graph = Graph(num_nodes=5, edges=[(0, 1), (1, 2), (2, 3), (3, 4)])
    return UGCN(num_joints=5, graph=graph, channels=TINY)


def test_default_flip_joints_on_another_skeleton_are_refused():
    with pytest.raises(ValueError, match=r"left=.*right=.*flip=False"):
        predict_sequence(five_joint_model(), torch.randn(40, 5, 2), window=32)


def test_another_skeleton_runs_with_its_own_flip_joints_or_without_flip():
    model = five_joint_model()
    x = torch.randn(40, 5, 2)
    assert predict_sequence(model, x, window=32, flip=False).shape == (40, 5, 3)
    assert predict_sequence(model, x, window=32, left=[1], right=[3]).shape == (40, 5, 3)


def test_inputs_of_another_skeleton_than_the_model_are_refused_as_such(tiny_model):
    with pytest.raises(ValueError, match="inputs have 16 joints of 2 channels, but the model takes 17 joints"):
        predict_sequence(tiny_model, torch.randn(40, 16, 2))


def test_flip_joints_as_arrays_and_tensors(tiny_model):
    x = torch.randn(40, 17, 2)
    want = predict_sequence(tiny_model, x, left=[1, 2], right=[4, 5])
    for kind in (np.array, torch.tensor):
        torch.testing.assert_close(predict_sequence(tiny_model, x, left=kind([1, 2]), right=kind([4, 5])), want)


def test_flip_joints_that_are_not_a_mirror_pairing_are_refused(tiny_model):
    """The flipped input's prediction is flipped back and averaged in: the swap must be its own inverse."""
    x = torch.randn(40, 17, 2)
    with pytest.raises(ValueError, match="listed in two pairs"):
        predict_sequence(tiny_model, x, left=[1, 1], right=[2, 3])
    with pytest.raises(ValueError, match="listed in two pairs"):
        predict_sequence(tiny_model, x, left=[1, 2], right=[2, 3])
    # a pair given in both directions is the same swap
    torch.testing.assert_close(predict_sequence(tiny_model, x, left=[1, 4], right=[4, 1]),
                               predict_sequence(tiny_model, x, left=[1], right=[4]))


# ----------------------------------------------------------------------------------------------------- metrics


def spread(x):
    """Mean distance of the joints from their centroid, per pose, after making the pose root-relative."""
    x = x - x[..., :1, :]
    return torch.linalg.vector_norm(x - x.mean(dim=-2, keepdim=True), dim=-1).mean()


def test_p_mpjpe_of_a_collapsed_prediction_is_the_target_spread():
    target = torch.randn(4, 17, 3, dtype=torch.float64)
    pred = torch.zeros(4, 17, 3, dtype=torch.float64)
    assert metrics.p_mpjpe(pred, target).item() == pytest.approx(spread(target).item(), rel=1e-12)
    aligned = metrics.procrustes_align(pred, target)
    assert torch.allclose(aligned, target.mean(dim=-2, keepdim=True).expand_as(target))
    # all joints equal but not at the origin: the same
    assert metrics.p_mpjpe(pred + 7.0, target).item() == pytest.approx(spread(target).item(), rel=1e-12)


def test_p_mpjpe_of_a_collapsed_target_is_zero():
    pred = torch.randn(4, 17, 3, dtype=torch.float64)
    target = torch.full((4, 17, 3), 2.5, dtype=torch.float64)
    assert metrics.p_mpjpe(pred, target).item() == 0.0
    assert torch.equal(metrics.procrustes_align(pred, target), target)
    zeros = torch.zeros(4, 17, 3, dtype=torch.float64)
    assert metrics.p_mpjpe(zeros, zeros).item() == 0.0


def test_one_degenerate_frame_leaves_the_others_as_they_were():
    torch.manual_seed(1)
    pred, target = torch.randn(5, 17, 3, dtype=torch.float64), torch.randn(5, 17, 3, dtype=torch.float64)
    pred[2] = 3.0
    per_frame = [metrics.p_mpjpe(pred[t:t + 1], target[t:t + 1]).item() for t in range(5)]
    assert per_frame[2] == pytest.approx(spread(target[2]).item(), rel=1e-12)
    assert metrics.p_mpjpe(pred, target).item() == pytest.approx(np.mean(per_frame), rel=1e-12)
    clean = [metrics.p_mpjpe(pred[t:t + 1], target[t:t + 1]).item() for t in (0, 1, 3, 4)]
    assert all(np.isfinite(clean)) and all(c > 0 for c in clean)


@pytest.mark.parametrize("where", ["pred", "target"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_pose_gives_nan_not_an_exception(where, value):
    pred, target = torch.randn(3, 17, 3, dtype=torch.float64), torch.randn(3, 17, 3, dtype=torch.float64)
    (pred if where == "pred" else target)[1, 4, 0] = value
    assert torch.isnan(metrics.p_mpjpe(pred, target))
    aligned = metrics.procrustes_align(pred, target)
    assert torch.isnan(aligned[1]).all() and torch.isfinite(aligned[[0, 2]]).all()


def test_tiny_and_huge_poses_align_like_unit_ones():
    torch.manual_seed(2)
    pred, target = torch.randn(3, 17, 3, dtype=torch.float64), torch.randn(3, 17, 3, dtype=torch.float64)
    reference = metrics.p_mpjpe(pred, target).item()
    for factor in (1e-200, 1e200):
        assert metrics.p_mpjpe(pred * factor, target).item() == pytest.approx(reference, rel=1e-9)


def test_evaluate_scores_a_model_predicting_collapsed_poses():
    from ugcn_fast.data.sources import LiftingSequence
    from ugcn_fast.evaluate import evaluate

    class Collapsed(nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return x.new_zeros(x.shape[:-1] + (3,)) + self.dummy

    rng = np.random.default_rng(0)
    targets = rng.normal(size=(20, 17, 3)).astype(np.float32)
    targets -= targets[:, :1]
    sequences = [LiftingSequence("s", "A", rng.normal(size=(20, 17, 2)).astype(np.float32), targets)]
    result = evaluate(Collapsed(), sequences, window=16, step=5)
    expected = spread(torch.as_tensor(targets, dtype=torch.float64) * 1000).item()
    assert result["average"]["p_mpjpe"] == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------------------------------- load_mocap


def test_damaged_compressed_archive_is_a_value_error_naming_file_and_sequence(tmp_path):
    good, bad = tmp_path / "seq.npz", tmp_path / "seq_bad.npz"
    np.savez_compressed(good, walk=np.random.default_rng(0).random((500, 17, 3), dtype=np.float32))
    data = bytearray(good.read_bytes())
    for i in range(100, 150):
        data[i] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"seq_bad\.npz.*'walk'"):
        load_mocap(bad)


def test_truncated_archive_is_a_value_error(tmp_path):
    good, bad = tmp_path / "seq.npz", tmp_path / "cut.npz"
    np.savez_compressed(good, walk=np.random.default_rng(0).random((500, 17, 3), dtype=np.float32))
    bad.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    with pytest.raises(ValueError, match=r"cut\.npz"):
        load_mocap(bad)


def test_plain_npy_file_is_refused_clearly(tmp_path):
    path = tmp_path / "walk.npy"
    np.save(path, np.zeros((5, 17, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"walk\.npy.*not an \.npz archive"):
        load_mocap(path)


def test_empty_sequence_is_refused_naming_file_and_sequence(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path, walk=np.zeros((10, 17, 3), dtype=np.float32), idle=np.zeros((0, 17, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"empty\.npz.*'idle'.*no frame"):
        load_mocap(path)


# ---------------------------------------------------------------------------------------------- command lines


def lift_argv(tmp_path, checkpoint, *flags):
    source = tmp_path / "keypoints.npz"
    rng = np.random.default_rng(0)
    np.savez(source, keypoints=rng.uniform(100, 900, (40, 17, 2)), width=1000, height=1000)
    return [str(source), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out.npz"), *flags]


def evaluate_argv(tmp_path, checkpoint, *flags):
    return ["--checkpoint", str(checkpoint), "--num-sequences", "1", "--frames", "40", *flags]


@pytest.mark.parametrize("command", ["lift", "evaluate"])
@pytest.mark.parametrize("flags, message", [
    (["--window", "16", "--step", "200"], "--step"),
    (["--device", "bogus"], "unknown device 'bogus'"),
    (["--device", "cuda"], "device 'cuda' is not available"),
])
def test_command_line_reports_bad_flags_with_status_2(tmp_path, tiny_checkpoint, capsys, monkeypatch, command,
                                                      flags, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine
    if command == "lift":
        from ugcn_fast.lift import main
        argv = lift_argv(tmp_path, tiny_checkpoint, *flags)
    else:
        from ugcn_fast.evaluate import main
        argv = evaluate_argv(tmp_path, tiny_checkpoint, *flags)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "cannot be read" not in err and "Traceback" not in err
    if "--step" in flags:
        assert "--window" in err


def test_evaluate_command_line_survives_a_checkpoint_predicting_collapsed_poses(tmp_path, capsys):
    from ugcn_fast.checkpoint import make_model_config, model_from_config, save_checkpoint
    from ugcn_fast.evaluate import main

    config = make_model_config(channels=(4, 4, 4, 4, 4))
    model = model_from_config(config)
    with torch.no_grad():
        model.regressor.weight.zero_()
        model.regressor.bias.zero_()
    path = tmp_path / "collapsed.pt"
    save_checkpoint(path, model=model, model_config=config, epoch=1)
    assert main(["--checkpoint", str(path), "--num-sequences", "1", "--frames", "32", "--window", "32",
                 "--device", "cpu"]) == 0
    assert "P-MPJPE" in capsys.readouterr().out


def test_train_refuses_an_eval_step_larger_than_the_window_before_training(tmp_path):
    from ugcn_fast.train import parse_args

    with pytest.raises(ValueError, match=r"--eval-step.*--window"):
        parse_args(["--window", "16", "--eval-step", "20", "--out", str(tmp_path / "run")])


def _mocap_file(tmp_path, walk, **metadata):
    path = tmp_path / "meta.npz"
    np.savez(path, walk=walk, **metadata)
    return path


def test_mocap_metadata_units_and_up_axis_are_converted(tmp_path):
    """A file that says metres or y-up is converted to the format's millimetres, z-up (its targets were 1000x too
    small, with metrics to match, and the poses lay on their side)."""
    from ugcn_fast.graph import H36M_PARENTS
    walk = np.random.default_rng(0).random((5, 17, 3), dtype=np.float32)
    meta = dict(parents=np.array(H36M_PARENTS), fps=50.0)
    as_is = load_mocap(_mocap_file(tmp_path, walk * 1000, units="mm", up_axis="z", **meta))["walk"]
    np.testing.assert_allclose(load_mocap(_mocap_file(tmp_path, walk, units="m", up_axis="z", **meta))["walk"],
                               as_is, rtol=1e-6)
    y_up = np.stack([walk[..., 0], walk[..., 2], -walk[..., 1]], axis=-1) * 1000  # z-up seen with y up
    np.testing.assert_allclose(load_mocap(_mocap_file(tmp_path, y_up, units="mm", up_axis="y", **meta))["walk"],
                               as_is, rtol=1e-6)
    np.testing.assert_array_equal(load_mocap(_mocap_file(tmp_path, walk * 1000))["walk"], as_is)  # no metadata
    other_spellings = dict(units=np.bytes_(b"m"), up_axis=np.array(["Z"]), fps=np.array([50], np.int16),
                           parents=np.array(H36M_PARENTS, dtype=np.float32))
    np.testing.assert_allclose(load_mocap(_mocap_file(tmp_path, walk, **other_spellings))["walk"], as_is, rtol=1e-6)


@pytest.mark.parametrize("metadata, message", [
    (dict(units="furlong"), "units 'furlong'"), (dict(up_axis="x"), "up_axis 'x'"),
    (dict(fps=120.0), "fps 120.0.*resample"), (dict(parents=np.arange(-1, 16)), "parents.*SPEC"),
])
def test_mocap_metadata_the_loader_cannot_honour_is_refused(tmp_path, metadata, message):
    walk = np.zeros((5, 17, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        load_mocap(_mocap_file(tmp_path, walk, **metadata))
