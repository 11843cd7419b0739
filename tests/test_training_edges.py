"""Edge cases of the training command found in review: best.pt bookkeeping across an interruption, resuming with
settings the checkpoint's optimiser state fixes, an --out that is a file."""
import pytest

import ugcn_fast.train as train_module
from ugcn_fast.checkpoint import load_checkpoint
from ugcn_fast.train import main, parse_args, train

TINY = ["--channels", "4", "4", "4", "4", "4", "--window", "16", "--intervals", "2", "4", "--batch-size", "8",
        "--workers", "0", "--threads", "1", "--num-sequences", "1", "--frames", "16", "--val-sequences", "1",
        "--steps-per-epoch", "1"]


def tiny_args(out, *extra):
    return TINY + ["--out", str(out)] + [str(e) for e in extra]


def test_best_checkpoint_follows_last_when_stopped_between_their_writes(tmp_path, monkeypatch):
    """A run stopped after one checkpoint write of an epoch and before the other must not leave last.pt recording a
    validation improvement that best.pt does not hold (the resumed run would never write it)."""
    errors = iter([30.0, 20.0])
    monkeypatch.setattr(train_module, "_validate", lambda *a, **k: {"mpjpe": next(errors), "mpjve": 1.0})
    real_save = train_module.save_checkpoint

    def stopped_at_second_best(path, **kwargs):
        if path.name == "best.pt" and kwargs["epoch"] == 2:
            raise KeyboardInterrupt  # between the two writes of epoch 2, in either order
        return real_save(path, **kwargs)
    monkeypatch.setattr(train_module, "save_checkpoint", stopped_at_second_best)
    assert main(tiny_args(tmp_path, "--epochs", 3)) == 130
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    last, best = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(tmp_path / "best.pt")
    assert last["extra"]["best_val_mpjpe"] == best["extra"]["val"]["mpjpe"]

    # resumed: the epoch of the interruption is repeated, its improvement reaches best.pt; epoch 3 is worse
    errors = iter([20.0, 25.0][last["epoch"] - 1:])  # the errors of epochs 2 and 3
    monkeypatch.setattr(train_module, "_validate", lambda *a, **k: {"mpjpe": next(errors), "mpjve": 1.0})
    result = train(parse_args(tiny_args(tmp_path, "--epochs", 3, "--resume")))
    assert [row["val_mpjpe_mm"] for row in result["history"]] == [30.0, 20.0, 25.0]
    best = load_checkpoint(tmp_path / "best.pt")
    assert (best["epoch"], best["extra"]["val"]["mpjpe"], result["best_val_mpjpe"]) == (2, 20.0, 20.0)


@pytest.mark.parametrize("flags, named", [
    (["--lr", "0.5"], "--lr 0.01 -> 0.5"),
    (["--milestones", "3"], "--milestones (10,) -> (3,)"),
    (["--gamma", "0.5"], "--gamma 0.1 -> 0.5"),
    (["--weight-decay", "0.1"], "--weight-decay 1e-05 -> 0.1"),
])
def test_resume_refuses_settings_held_by_the_optimiser_state(tmp_path, flags, named):
    """The restored Adam and MultiStepLR states keep their learning rate, weight decay, milestones and gamma: a
    resumed run with other values would train with the old ones while last.pt recorded the new ones."""
    args = ["--epochs", 1, "--eval-every", 0, "--milestones", 10]
    train(parse_args(tiny_args(tmp_path, *args)))
    with pytest.raises(ValueError, match="other optimiser settings") as error:
        train(parse_args(tiny_args(tmp_path, *args, "--resume", "--epochs", 2, *flags)))
    assert named in str(error.value)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_resume_notes_changed_validation_settings(tmp_path, capsys):
    """--eval-step and --val-sequences change the errors best.pt is chosen by: a change of them is said."""
    assert main(tiny_args(tmp_path, "--epochs", 1)) == 0
    capsys.readouterr()
    assert main(tiny_args(tmp_path, "--epochs", 2, "--resume", "--eval-step", 3)) == 0
    assert "note: resuming with changed settings: --eval-step 5 -> 3" in capsys.readouterr().err
    assert main(tiny_args(tmp_path, "--epochs", 3, "--resume", "--eval-step", 3, "--workers", 1)) == 0
    assert "note" not in capsys.readouterr().err  # --workers changes nothing that is computed


def test_out_that_is_a_file_is_refused_before_training(tmp_path, capsys, monkeypatch):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    monkeypatch.setattr(train_module, "load_sequences", lambda *a, **k: pytest.fail("data loaded"))
    for extra in ([], ["--resume"]):
        assert main(tiny_args(out, "--epochs", 1, *extra)) == 2
        assert "is an existing file, not a folder" in capsys.readouterr().err
    assert out.read_text() == "not a folder"


def test_out_inside_a_file_is_refused_before_training(tmp_path, capsys, monkeypatch):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    monkeypatch.setattr(train_module, "load_sequences", lambda *a, **k: pytest.fail("data loaded"))
    assert main(tiny_args(taken / "run", "--epochs", 1)) == 2
    assert f"would be inside {taken}, which is an existing file" in capsys.readouterr().err


def test_resume_from_a_checkpoint_without_optimiser_state_is_refused(tmp_path, capsys):
    """A weights-only checkpoint (a copy of best.pt, or one saved without optimizer=) cannot continue a run."""
    assert main(tiny_args(tmp_path, "--epochs", 1)) == 0
    (tmp_path / "last.pt").write_bytes((tmp_path / "best.pt").read_bytes())
    capsys.readouterr()
    assert main(tiny_args(tmp_path, "--epochs", 2, "--resume")) == 2
    assert "holds no optimizer or scheduler state" in capsys.readouterr().err
