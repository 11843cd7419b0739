"""Sliding-window inference with per-frame averaging and flip test-time augmentation."""
import numpy as np
import pytest
import torch
from torch import nn

from ugcn_fast import UGCN
from ugcn_fast.data import flip_pose
from ugcn_fast.inference import predict_sequence, window_starts


class FrameWise(nn.Module):
    """Maps every frame on its own (so sliding-window averaging must reproduce it exactly)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 3, dtype=torch.float64)

    def forward(self, x):
        return self.linear(x)


class WindowPosition(nn.Module):
    """Outputs each frame's position inside its window: the average reveals which windows covered a frame."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x):
        B, W, J, _ = x.shape
        return torch.arange(W, dtype=torch.float64).view(1, W, 1, 1).expand(B, W, J, 3) + self.dummy


def test_window_starts():
    assert window_starts(100, 96, 5) == [0, 4]
    assert window_starts(96, 96, 5) == [0]
    assert window_starts(50, 96, 5) == [0]
    starts = window_starts(300, 96, 5)
    assert starts[0] == 0 and starts[-1] == 300 - 96 and all(b - a <= 5 for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("T", [1, 50, 96, 97, 300])
def test_framewise_model_is_reproduced_exactly(T):
    model = FrameWise()
    x = torch.randn(T, 17, 2, dtype=torch.float64)
    expected = model(x)
    torch.testing.assert_close(predict_sequence(model, x, flip=False), expected)


def test_average_over_covering_windows():
    x = torch.randn(100, 17, 2, dtype=torch.float64)
    pred = predict_sequence(WindowPosition(), x, window=96, step=5, flip=False)
    # windows start at 0 and 4: frame t < 4 is position t once; 4 <= t < 96 is (t + t - 4) / 2; t >= 96 is t - 4
    expected = torch.tensor([t if t < 4 else (t - 2 if t < 96 else t - 4) for t in range(100)], dtype=torch.float64)
    torch.testing.assert_close(pred[:, 0, 0], expected)


def test_flip_averaging_and_model_mode_restored():
    model = FrameWise()
    x = torch.randn(120, 17, 2, dtype=torch.float64)
    plain = predict_sequence(model, x, flip=False)
    mirrored = flip_pose(model(flip_pose(x)))
    torch.testing.assert_close(predict_sequence(model, x, flip=True), (plain + mirrored) / 2)
    model.train()
    predict_sequence(model, x)
    assert model.training


def test_ugcn_on_a_long_sequence():
    model = UGCN(channels=(8, 8, 16, 16, 32))
    x = np.random.default_rng(0).normal(size=(130, 17, 2)).astype(np.float32)
    out = predict_sequence(model, x, window=32, step=8)
    assert out.shape == (130, 17, 3) and torch.isfinite(out).all()


def test_bad_inputs():
    model = FrameWise()
    with pytest.raises(ValueError, match="shape"):
        predict_sequence(model, torch.randn(10, 17))
    bad = torch.randn(10, 17, 2, dtype=torch.float64)
    bad[3, 4, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        predict_sequence(model, bad)
    with pytest.raises(ValueError, match="step"):
        predict_sequence(model, torch.randn(10, 17, 2), step=0)
