"""Skeleton layouts end to end: each layout's mirrored joints are a symmetry of its graph, a UGCN knows its
layout and flips with its own joints, and the pipelines whose data come in Human3.6M order (training from
--data, evaluate, lift) refuse a model built on another layout's graph instead of training or predicting with
the wrong joints."""
import numpy as np
import pytest
import torch
from torch import nn

import ugcn_fast.train as train_module
from ugcn_fast import UGCN, Graph
from ugcn_fast.data.sources import LiftingSequence
from ugcn_fast.data.windows import flip_pose
from ugcn_fast.evaluate import main as evaluate_main
from ugcn_fast.graph import H36M_LEFT, H36M_RIGHT, LAYOUTS, STRATEGIES
from ugcn_fast.inference import predict_sequence
from ugcn_fast.lift import lift

from _checkpoints import tiny_checkpoint_file

TINY = ["--channels", "4", "4", "4", "4", "4", "--window", "16", "--intervals", "2", "4", "--batch-size", "8",
        "--workers", "0", "--threads", "1", "--epochs", "1", "--steps-per-epoch", "1", "--num-sequences", "1",
        "--frames", "32", "--val-sequences", "1"]


def mirror_order(layout):
    spec = LAYOUTS[layout]
    order = list(range(spec["num_nodes"]))
    for a, b in zip(spec["left"], spec["right"]):
        order[a], order[b] = b, a
    return order


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_mirrored_joints_are_a_symmetry_of_the_graph(layout):
    spec = LAYOUTS[layout]
    left, right = spec["left"], spec["right"]
    assert len(left) == len(right) and not set(left) & set(right)
    assert len(set(left) | set(right)) == 2 * len(left)
    order = mirror_order(layout)
    edges = {frozenset(edge) for edge in spec["edges"]}
    assert {frozenset((order[a], order[b])) for a, b in spec["edges"]} == edges
    for strategy in STRATEGIES:
        A = Graph(layout=layout, strategy=strategy).A
        assert torch.equal(A[:, order][:, :, order], A), strategy


def test_ugcn_carries_its_layout_and_flip_joints():
    coco = UGCN(channels=(4,) * 5, graph=Graph(layout="coco"))
    assert coco.layout == "coco"
    assert coco.flip_joints == (LAYOUTS["coco"]["left"], LAYOUTS["coco"]["right"])
    assert UGCN(channels=(4,) * 5).flip_joints == (H36M_LEFT, H36M_RIGHT)
    custom = UGCN(num_joints=3, channels=(4,) * 5, graph=Graph(num_nodes=3, edges=[(0, 1), (1, 2)]))
    assert custom.layout is None and custom.flip_joints is None


def test_a_custom_graph_needs_its_flip_joints_given():
    """A 20-joint custom skeleton would pass the index check of Human3.6M's pairs and be flipped wrongly."""
    model = UGCN(num_joints=20, channels=(4,) * 5, graph=Graph(num_nodes=20, edges=[(i, i + 1) for i in range(19)]))
    x = torch.randn(16, 20, 2)
    with pytest.raises(ValueError, match="left= and right="):
        predict_sequence(model, x, window=16)
    assert predict_sequence(model, x, window=16, flip=False).shape == (16, 20, 3)
    mirrored = predict_sequence(model, x, window=16, left=(0, 1), right=(19, 18))
    assert mirrored.shape == (16, 20, 3)


class PerJointBias(nn.Module):
    """x -> (x, 0) + a bias per joint: not flip-equivariant, so the flip's joint pairs show in the result."""

    def __init__(self, layout):
        super().__init__()
        self.bias = nn.Parameter(torch.arange(17 * 3, dtype=torch.float32).view(17, 3) / 10)
        self.flip_joints = (LAYOUTS[layout]["left"], LAYOUTS[layout]["right"])

    def forward(self, x):
        return torch.cat([x, torch.zeros_like(x[..., :1])], dim=-1) + self.bias


@pytest.mark.parametrize("layout", ["coco", "mpi_inf_3dhp", "h36m"])
def test_predict_sequence_flips_with_the_models_joints(layout):
    model = PerJointBias(layout)
    x = torch.randn(16, 17, 2)
    left, right = model.flip_joints
    with torch.no_grad():
        expected = (model(x) + flip_pose(model(flip_pose(x, left, right)), left, right)) / 2
    assert torch.allclose(predict_sequence(model, x, window=16, step=16), expected, atol=1e-6)
    if layout != "h36m":  # the Human3.6M pairs give another answer, so the test tells the two apart
        with torch.no_grad():
            h36m = (model(x) + flip_pose(model(flip_pose(x)))) / 2
        assert not torch.allclose(h36m, expected, atol=1e-3)
    explicit = predict_sequence(model, x, window=16, step=16, left=H36M_LEFT, right=H36M_RIGHT)
    assert torch.allclose(explicit, (model(x) + flip_pose(model(flip_pose(x)))).detach() / 2, atol=1e-6)
    with pytest.raises(ValueError, match="both left and right"):
        predict_sequence(model, x, window=16, step=16, left=H36M_LEFT)


def test_training_from_the_sources_refuses_another_layout(tmp_path, capsys):
    assert train_module.main(TINY + ["--layout", "coco", "--out", str(tmp_path)]) == 2
    assert "--layout is 'coco'" in capsys.readouterr().err
    assert not (tmp_path / "last.pt").exists()


def test_training_on_given_sequences_flips_with_the_layouts_joints(tmp_path, monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def recording_dataset(sequences, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(train_module, "WindowDataset", recording_dataset)
    rng = np.random.default_rng(0)
    sequences = [LiftingSequence("coco/0", "coco", rng.normal(size=(32, 17, 2)), rng.normal(size=(32, 17, 3)))]
    config = train_module.parse_args(TINY + ["--layout", "coco", "--out", str(tmp_path)])
    with pytest.raises(Stop):
        train_module.train(config, train_sequences=sequences, val_sequences=sequences)
    assert (seen["left"], seen["right"]) == (LAYOUTS["coco"]["left"], LAYOUTS["coco"]["right"])


def test_evaluate_refuses_a_checkpoint_of_another_layout(tmp_path, capsys):
    checkpoint = tiny_checkpoint_file(tmp_path, layout="coco")
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--checkpoint", str(checkpoint), "--num-sequences", "1", "--frames", "16"])
    assert exit_info.value.code == 2
    assert "'coco'" in capsys.readouterr().err


def test_lift_refuses_a_model_of_another_layout():
    model = UGCN(channels=(4,) * 5, graph=Graph(layout="coco"))
    keypoints = np.random.default_rng(0).uniform(0, 100, (16, 17, 2))
    with pytest.raises(ValueError, match="'coco' graph"):
        lift(keypoints, model, 100, 100, window=16)
