"""The training script: optimisation, outputs, resumption, determinism, errors (tiny models and data)."""
import csv
import io
import math
import os
import pathlib

import numpy as np
import pytest
import torch
from torch import nn

import ugcn_fast.train as train_module
from ugcn_fast import UGCNLoss
from ugcn_fast.checkpoint import load_checkpoint, load_model, model_from_config
from ugcn_fast.data.sources import LiftingSequence, load_sequences
from ugcn_fast.train import (CSV_COLUMNS, ProgressBar, TrainConfig, evaluate, main, parse_args, train,
                             weight_decay_groups)

TINY = ["--channels", "4", "4", "4", "4", "4", "--window", "16", "--intervals", "2", "4", "--dropout", "0.1",
        "--batch-size", "8", "--workers", "0", "--threads", "1"]
DATA = ["--num-sequences", "1", "--frames", "48", "--val-sequences", "1"]


def tiny_args(out, *extra):
    return TINY + DATA + ["--out", str(out)] + [str(e) for e in extra]


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_defaults_are_the_paper_recipe():
    config = parse_args([])
    assert (config.epochs, config.lr, config.milestones, config.gamma) == (110, 1e-2, (80, 90, 100), 0.1)
    assert (config.batch_size, config.weight_decay, config.window, config.flip) == (256, 1e-5, 96, True)
    assert (config.lambda_motion, config.intervals, config.operator, config.normalize, config.position) == (
        1.0, (8, 12, 16, 24), "cross", "sample", "l2sq")
    assert config.fused is None and config.workers == 2 and config.data == "procedural"
    assert parse_args(["--no-flip", "--fused"]).flip is False and parse_args(["--fused"]).fused is True
    assert parse_args(["--no-fused"]).fused is False


@pytest.mark.parametrize("flag, fused", [("--fused", True), ("--no-fused", False)])
def test_fused_flag_reaches_the_model(tmp_path, flag, fused):
    from ugcn_fast.reference import STGCNBlock
    result = train(parse_args(tiny_args(tmp_path, flag, "--epochs", 1, "--eval-every", 0, "--steps-per-epoch", 1)))
    assert (type(result["model"].down[0]) is STGCNBlock) is not fused  # the fused block subclasses it
    assert result["global_step"] == 1


def test_weight_decay_applies_to_convolution_weights_only():
    torch.manual_seed(0)
    model = model_from_config({"num_joints": 17, "in_channels": 2, "out_channels": 3, "channels": [4] * 5,
                               "layout": "h36m", "kernel_size": 5, "dropout": 0.0})
    decay, no_decay = weight_decay_groups(model, 1e-2)
    conv_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert {id(p) for p in decay["params"]} == conv_weights and decay["weight_decay"] == 1e-2
    assert no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert any(isinstance(m, nn.BatchNorm2d) and any(m.weight is p for p in no_decay["params"])
               for m in model.modules())

    # with zero loss gradients only the decay moves parameters: conv weights shrink, nothing else changes
    optimizer = torch.optim.Adam([decay, no_decay], lr=1e-3)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        if id(p) in conv_weights:
            assert p.abs().sum() < before[name].abs().sum(), name
        else:
            assert torch.equal(p, before[name]), name


def fixed_batch_sequences():
    sequences = load_sequences("procedural", "train", num_sequences=1, frames=16)  # 4 cameras, one window each
    return sequences


def test_loss_decreases_on_a_fixed_batch(tmp_path):
    # 4 windows, batch 4, no flip: every step sees the same batch
    config = parse_args(tiny_args(tmp_path, "--batch-size", 4, "--no-flip", "--epochs", 12, "--lr", 1e-2,
                                  "--eval-every", 0, "--dropout", 0))
    result = train(config, train_sequences=fixed_batch_sequences())
    losses = result["step_losses"]
    assert len(losses) == 12 and result["global_step"] == 12
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(math.isfinite(v) for v in losses)


def test_outputs_checkpoints_csv_and_curves(tmp_path, capsys):
    assert main(tiny_args(tmp_path, "--epochs", 2, "--milestones", 1, "--gamma", 0.5)) == 0
    rows = read_csv(tmp_path / "log.csv")
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert [float(r["lr"]) for r in rows] == [1e-2, 5e-3]
    for r in rows:
        # the loss is exactly UGCNLoss: position + lambda_motion (1) * motion
        assert float(r["loss"]) == pytest.approx(float(r["position_loss"]) + float(r["motion_loss"]), rel=1e-4)
        assert float(r["val_mpjpe_mm"]) > 0 and float(r["val_mpjve_mm"]) > 0 and float(r["samples_per_s"]) > 0
    for name in ("curves.png", "val.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    model, checkpoint = load_model(tmp_path / "last.pt")
    assert checkpoint["epoch"] == 2 and checkpoint["model_config"]["channels"] == [4] * 5
    assert checkpoint["scheduler"]["last_epoch"] == 2 and checkpoint["extra"]["config"]["epochs"] == 2
    best = load_checkpoint(tmp_path / "best.pt")
    best_epoch = min(rows, key=lambda r: float(r["val_mpjpe_mm"]))["epoch"]
    assert best["epoch"] == int(best_epoch)
    assert best["extra"]["val"]["mpjpe"] == pytest.approx(min(float(r["val_mpjpe_mm"]) for r in rows), rel=1e-5)

    # the stored weights give the validation error that was logged
    config = parse_args(tiny_args(tmp_path))
    val = load_sequences("procedural", "test", num_sequences=1, frames=48)
    last = evaluate(model, val, window=16, step=config.eval_step, flip=True)
    assert last["mpjpe"] == pytest.approx(float(rows[-1]["val_mpjpe_mm"]), rel=1e-5)

    # not a TTY: one line per epoch, no carriage returns
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("epoch 1/2") == 1 and err.count("epoch 2/2") == 1


def test_same_seed_same_losses_and_resume_continues_exactly(tmp_path, monkeypatch):
    args = ["--epochs", 3, "--eval-every", 0, "--seed", 3]
    uninterrupted = train(parse_args(tiny_args(tmp_path / "a", *args)))

    # a run that dies in the middle of its second epoch ...
    steps_per_epoch = uninterrupted["history"][0]["steps"]  # the window tiling, so the step count, varies
    assert sum(row["steps"] for row in uninterrupted["history"]) == len(uninterrupted["step_losses"])
    calls = {"n": 0}
    real_position_loss = train_module.position_loss

    def dying_position_loss(*a, **k):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 2:
            raise KeyboardInterrupt
        return real_position_loss(*a, **k)
    monkeypatch.setattr(train_module, "position_loss", dying_position_loss)
    assert main(tiny_args(tmp_path / "b", *args)) == 130
    monkeypatch.setattr(train_module, "position_loss", real_position_loss)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1  # ... has lost only the current epoch
    assert len(read_csv(tmp_path / "b" / "log.csv")) == 1

    # ... and, resumed with a loader worker process, continues as if it had never stopped
    resumed = train(parse_args(tiny_args(tmp_path / "b", *args, "--resume", "--workers", 1)))
    assert resumed["step_losses"] == uninterrupted["step_losses"][steps_per_epoch:]
    assert resumed["global_step"] == uninterrupted["global_step"]
    rows_a, rows_b = read_csv(tmp_path / "a" / "log.csv"), read_csv(tmp_path / "b" / "log.csv")
    assert [r["epoch"] for r in rows_b] == ["1", "2", "3"]
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    for (name, a), b in zip(uninterrupted["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.equal(a, b), name

    # resuming a finished run does nothing; another seed gives other losses
    again = train(parse_args(tiny_args(tmp_path / "b", *args, "--resume")))
    assert again["step_losses"] == [] and again["epochs"] == 3
    other = train(parse_args(tiny_args(tmp_path / "c", "--epochs", 1, "--eval-every", 0, "--seed", 4)))
    assert other["step_losses"] != uninterrupted["step_losses"][:len(other["step_losses"])]


def test_mismatched_checkpoint_and_existing_output_are_refused(tmp_path, capsys):
    assert main(tiny_args(tmp_path, "--epochs", 1, "--eval-every", 0)) == 0
    # another model configuration: named field by field
    with pytest.raises(ValueError, match=r"channels: checkpoint \[4, 4, 4, 4, 4\], requested \[8, 8, 8, 8, 8\]"):
        train(parse_args(tiny_args(tmp_path, "--epochs", 2, "--resume", "--channels", 8, 8, 8, 8, 8)))
    capsys.readouterr()
    assert main(tiny_args(tmp_path, "--epochs", 2, "--resume", "--kernel-size", 3)) == 2
    err = capsys.readouterr().err
    assert "kernel_size: checkpoint 5, requested 3" in err and "channels" not in err
    # an existing run is not overwritten by accident
    assert main(tiny_args(tmp_path, "--epochs", 1)) == 2
    assert "--resume" in capsys.readouterr().err
    # a corrupt last.pt
    (tmp_path / "last.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="last.pt"):
        train(parse_args(tiny_args(tmp_path, "--resume")))


@pytest.mark.parametrize("flags, message", [
    (["--window", "20"], "--window"),
    (["--window", "16", "--intervals", "8", "16"], "--intervals"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "-1"], "--lr"),
    (["--dropout", "1"], "--dropout"),
    (["--milestones", "90", "80"], "--milestones"),
    (["--kernel-size", "4"], "--kernel-size"),
    (["--epochs", "0"], "--epochs"),
    (["--channels", "4", "4"], "--channels"),      # argparse: expected 5 arguments
    (["--operator", "dot"], "--operator"),          # argparse: invalid choice
    (["--no-such-flag"], "--no-such-flag"),         # argparse: unrecognised
])
def test_bad_flags_give_clear_errors(flags, message, capsys, tmp_path):
    assert main(flags + ["--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "last.pt").exists()


def test_config_errors():
    with pytest.raises(ValueError, match="unknown training settings"):
        train({"epochs": 1, "learning_rate": 0.1})
    with pytest.raises(ValueError, match="--intervals"):
        train_module.check_config(TrainConfig(window=16))  # the paper's intervals need longer windows
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        train({"data": "nowhere.npz", "window": 16, "intervals": (2,), "eval_every": 0, "out": "/nonexistent/x"})


def test_config_values_are_normalised_or_refused_by_field():
    """numpy numbers (configs read from arrays) become Python numbers, since the checkpoint stores the config as
    plain data; values of the wrong kind are refused naming the flag, not misread (flip="no" was truthy)."""
    given = TrainConfig(window=np.int64(32), batch_size=np.int64(4), lr=np.float32(0.5), intervals=np.array([8, 12]),
                        channels=[np.int64(4)] * 5, out=pathlib.Path("runs/x"))
    config = train_module.check_config(given)
    assert (config.window, config.batch_size, config.lr, config.intervals, config.channels, config.out) == (
        32, 4, 0.5, (8, 12), (4,) * 5, os.fspath(pathlib.Path("runs/x")))
    assert type(config.window) is int and type(config.lr) is float and type(config.intervals[0]) is int
    assert type(given.window) is np.int64  # the caller's config is not changed
    for field, value in (("flip", "no"), ("resume", "yes"), ("out", 123), ("device", None), ("intervals", 8)):
        with pytest.raises(ValueError, match=f"--{field.replace('_', '-')} must be"):
            train_module.check_config(TrainConfig(**{"window": 32, "intervals": (8,), field: value}))


def test_given_sequences_are_checked_before_training(tmp_path):
    sequences = load_sequences("procedural", "train", num_sequences=1, frames=40)
    config = {"epochs": 1, "batch_size": 2, "window": 32, "channels": (4, 4, 4, 4, 4), "workers": 0, "threads": 1,
              "intervals": (8,), "eval_step": 16, "out": str(tmp_path / "run")}
    cases = [([], sequences, ValueError, "train_sequences: no training sequence"),
             (sequences, [], ValueError, r"val_sequences: no validation sequence \(--eval-every 0"),
             ([(s.inputs, s.targets) for s in sequences], sequences, TypeError, "LiftingSequence"),
             (sequences, [type(s)(s.name, s.action, s.inputs, s.targets * np.nan) for s in sequences[:1]], ValueError,
              "val_sequences: sequence .* holds NaN or Inf")]
    for train_sequences, val_sequences, error, message in cases:
        with pytest.raises(error, match=message):
            train(config, train_sequences=train_sequences, val_sequences=val_sequences)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_batch_must_divide_over_processes(tmp_path):
    config = parse_args(tiny_args(tmp_path, "--batch-size", 7))
    with pytest.raises(ValueError, match="divisible by the 2 processes"):
        train_module._train(config, train_module.Processes(world_size=2), None, None)


class Zeros(nn.Module):
    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x.new_zeros(x.shape[:-1] + (3,))


def test_evaluate_averages_over_actions_first():
    rng = np.random.default_rng(0)

    def sequence(name, action, T):
        targets = rng.normal(size=(T, 17, 3)).astype(np.float32)
        targets -= targets[:, :1]
        return LiftingSequence(name, action, rng.normal(size=(T, 17, 2)), targets)
    sequences = [sequence("a1", "A", 20), sequence("a2", "A", 40), sequence("b1", "B", 10)]
    result = evaluate(Zeros(), sequences, window=16, step=5)
    # a zero prediction: the error of a frame is its mean joint distance from the root
    per_action = {}
    for s in sequences:
        per_action.setdefault(s.action, []).append(np.linalg.norm(s.targets * 1000, axis=-1).mean(axis=-1))
    expected = np.mean([np.concatenate(v).mean() for v in per_action.values()])
    assert result["mpjpe"] == pytest.approx(expected, rel=1e-6)
    velocity = {a: [] for a in per_action}
    for s in sequences:
        velocity[s.action].append(np.linalg.norm(np.diff(s.targets * 1000, axis=0), axis=-1).mean(axis=-1))
    assert result["mpjve"] == pytest.approx(np.mean([np.concatenate(v).mean() for v in velocity.values()]),
                                            rel=1e-6)


class FakeStream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_bar_redraws_on_a_terminal_and_is_quiet_otherwise():
    terminal, log = FakeStream(True), FakeStream(False)
    for stream in (terminal, log):
        bar = ProgressBar(stream, min_interval=0.0)
        bar.update("epoch 1/2 step 1/3")
        bar.update("epoch 1/2 step 2/3")
        bar.close_line("epoch 1/2 done")
    assert terminal.getvalue() == ("\repoch 1/2 step 1/3\repoch 1/2 step 2/3"
                                   "\repoch 1/2 done    \n")  # padded over the longer status line
    assert log.getvalue() == "epoch 1/2 done\n"
    silent = FakeStream(True)
    ProgressBar(silent, enabled=False).close_line("x")
    assert silent.getvalue() == ""


def test_train_step_is_one_adam_step_on_ugcn_loss():
    """The trainer computes UGCNLoss from its parts (to log them); the step must be the one UGCNLoss gives."""
    torch.manual_seed(0)
    config = {"num_joints": 17, "in_channels": 2, "out_channels": 3, "channels": [4] * 5, "layout": "h36m",
              "kernel_size": 5, "dropout": 0.0}
    model, reference = model_from_config(config), model_from_config(config)
    reference.load_state_dict(model.state_dict())
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    x, y = torch.randn(2, 16, 17, 2), 0.3 * torch.randn(2, 16, 17, 3)
    criterion = UGCNLoss(lambda_motion=0.7, position="l2sq", intervals=(2, 4), operator="cross", normalize="sample")

    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2)
    prediction = reference(x)
    expected = criterion(prediction, y)
    expected.backward()
    optimizer.step()
    values = train_module.train_step(model, criterion, torch.optim.Adam(model.parameters(), lr=1e-2), x, y)
    assert values[0] == expected.detach()
    assert values[1] == train_module.position_loss(prediction, y) and values[2] == criterion.motion(prediction, y)
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(a, b), name
    assert not torch.equal(model.regressor.weight, initial["regressor.weight"])
