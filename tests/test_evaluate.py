"""ugcn_fast.evaluate: whole-sequence metrics per action and over actions, the command line, and a smoke run of
bench/ablation.py --quick."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ugcn_fast
from ugcn_fast import UGCN, metrics
from ugcn_fast.data.sources import LiftingSequence
from ugcn_fast.evaluate import evaluate, format_table, main
from ugcn_fast.inference import predict_sequence

from _quadratic import Quadratic
from _checkpoints import tiny_checkpoint_file

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ABLATION = Path(__file__).resolve().parents[1] / "bench" / "ablation.py"


def quadratic(inputs):
    out = np.concatenate([inputs, inputs[..., :1] ** 2 + inputs[..., 1:]], axis=-1)
    return out - out[:, :1]


def make_sequences(lengths_by_action, seed=0):
    rng = np.random.default_rng(seed)
    sequences = []
    for action, lengths in lengths_by_action.items():
        for k, T in enumerate(lengths):
            inputs = np.cumsum(rng.normal(0, 0.01, (T, 17, 2)), axis=0) + rng.uniform(-0.5, 0.5, (1, 17, 2))
            targets = quadratic(inputs) + rng.normal(0, 0.05, (T, 17, 3))
            targets -= targets[:, :1]
            sequences.append(LiftingSequence(f"{action}/{k}", action, inputs, targets))
    return sequences


def test_exact_predictions_score_zero_error():
    sequences = make_sequences({"walk": [20, 7], "sit": [1]})
    for seq in sequences:  # targets exactly what the stub predicts from the inputs
        seq.targets = quadratic(seq.inputs.astype(np.float64)).astype(np.float32)
    results = evaluate(Quadratic(), sequences, window=16, step=3)
    for block in [results["average"], results["all_frames"]] + list(results["per_action"].values()):
        assert block["mpjpe"] < 1e-3 and block["p_mpjpe"] < 1e-3 and block["pck150"] == 100.0
        # AUC counts errors strictly below each threshold 0, 5, ..., 150: all but the 0 mm one
        assert block["auc"] == pytest.approx(100 * 30 / 31)
    assert results["per_action"]["sit"]["mpjve"] is None  # one frame: no velocity
    assert results["average"]["mpjve"] < 1e-3
    assert results["num_sequences"] == 3 and results["num_frames"] == 28 and results["num_actions"] == 2


def test_metrics_match_ugcn_fast_metrics_per_action_then_over_actions():
    torch.manual_seed(0)
    model = UGCN(channels=(4, 4, 4, 4, 4)).eval()
    sequences = make_sequences({"walk": [40, 18], "jump": [33]}, seed=1)
    results = evaluate(model, sequences, window=32, step=4)

    per_action = {}
    for action in ("walk", "jump"):
        preds, targets, velocity_errors = [], [], []
        for seq in sequences:
            if seq.action == action:
                pred = predict_sequence(model, seq.inputs, window=32, step=4).double() * 1000
                target = torch.from_numpy(seq.targets).double() * 1000
                preds.append(pred)
                targets.append(target)
                pred_rel, target_rel = pred - pred[:, :1], target - target[:, :1]
                velocity_errors.append(torch.linalg.vector_norm(torch.diff(pred_rel, dim=0)
                                                                - torch.diff(target_rel, dim=0), dim=-1))
        pred, target = torch.cat(preds), torch.cat(targets)  # frames of the action pooled
        per_action[action] = {"mpjpe": float(metrics.mpjpe(pred, target)),
                              "p_mpjpe": float(metrics.p_mpjpe(pred, target)),
                              "mpjve": float(torch.cat(velocity_errors).mean()),
                              "pck150": 100 * float(metrics.pck(pred, target)),
                              "auc": 100 * float(metrics.auc(pred, target))}
    for action, expected in per_action.items():
        for name, value in expected.items():
            assert results["per_action"][action][name] == pytest.approx(value, rel=1e-9), (action, name)
    for name in expected:
        mean_over_actions = (per_action["walk"][name] + per_action["jump"][name]) / 2
        assert results["average"][name] == pytest.approx(mean_over_actions, rel=1e-9), name
    # the frame-weighted mean differs from the mean over actions (40 + 18 walking frames, 33 jumping)
    all_mpjpe = (per_action["walk"]["mpjpe"] * 58 + per_action["jump"]["mpjpe"] * 33) / 91
    assert results["all_frames"]["mpjpe"] == pytest.approx(all_mpjpe, rel=1e-9)
    assert results["per_action"]["walk"]["frames"] == 58 and results["per_action"]["walk"]["sequences"] == 2
    assert results["per_sequence"]["jump/0"]["mpjpe"] == pytest.approx(per_action["jump"]["mpjpe"], rel=1e-9)
    # an untrained model is far off: the numbers are not vacuous
    assert results["average"]["mpjpe"] > 10

    table = format_table(results)
    assert "Average (2 actions)" in table and "All frames" in table
    assert f"{results['average']['mpjpe']:.1f}" in table


def test_flip_and_window_settings_reach_the_predictions():
    torch.manual_seed(1)
    model = UGCN(channels=(4, 4, 4, 4, 4)).eval()
    sequences = make_sequences({"a": [40]}, seed=2)
    plain = evaluate(model, sequences, window=32, step=4, flip=False)
    pred = predict_sequence(model, sequences[0].inputs, window=32, step=4, flip=False).double() * 1000
    expected = float(metrics.mpjpe(pred, torch.from_numpy(sequences[0].targets).double() * 1000))
    assert plain["average"]["mpjpe"] == pytest.approx(expected, rel=1e-9)
    assert evaluate(model, sequences, window=32, step=4)["average"]["mpjpe"] != pytest.approx(expected, rel=1e-6)
    assert plain["settings"] == {"window": 32, "step": 4, "flip": False}


def test_bad_sequences_are_refused():
    with pytest.raises(ValueError, match="non-empty"):
        evaluate(Quadratic(), [])
    with pytest.raises(TypeError, match="LiftingSequence"):
        evaluate(Quadratic(), [(np.zeros((4, 17, 2)), np.zeros((4, 17, 3)))])
    wrong = LiftingSequence("x", "x", np.zeros((4, 16, 2)), np.zeros((4, 16, 3)))
    with pytest.raises(ValueError, match="16 joints but the model takes 17"):
        evaluate(Quadratic(), [wrong])


# ------------------------------------------------------------------------------------------------ command line


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return tiny_checkpoint_file(tmp_path_factory.mktemp("ckpt"), epoch=2)


def test_command_line_table_and_json(tmp_path, tiny_checkpoint, capsys):
    from ugcn_fast.checkpoint import load_model
    from ugcn_fast.data.sources import load_sequences

    out = tmp_path / "eval.json"
    assert main(["--checkpoint", str(tiny_checkpoint), "--num-sequences", "1", "--frames", "40", "--window", "32",
                 "--step", "8", "--json", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "MPJPE mm" in printed and "Average (1 action)" in printed and "(epoch 2)" in printed
    results = json.loads(out.read_text())
    assert results["epoch"] == 2 and results["split"] == "test" and results["model_config"]["channels"] == [4] * 5
    model, _ = load_model(tiny_checkpoint)
    expected = evaluate(model, load_sequences("procedural", "test", num_sequences=1, frames=40), window=32, step=8)
    for name in ("mpjpe", "p_mpjpe", "mpjve", "pck150", "auc"):
        assert results["average"][name] == pytest.approx(expected["average"][name], rel=1e-6), name
    assert results["num_frames"] == expected["num_frames"] == 40 * expected["num_sequences"]


def test_command_line_defaults_to_the_runs_validation_settings(tmp_path):
    """Without --window / --step / --seed, evaluate uses those the training run validated with (its log.csv's
    numbers are reproduced); flags still win."""
    from ugcn_fast.checkpoint import load_model, make_model_config, model_from_config, save_checkpoint
    from ugcn_fast.data.sources import load_sequences

    torch.manual_seed(0)
    config = make_model_config(channels=(4, 4, 4, 4, 4))
    path = tmp_path / "run.pt"
    save_checkpoint(path, model=model_from_config(config), model_config=config, epoch=3,
                    extra={"config": {"window": 32, "eval_step": 8, "seed": 3}})
    out = tmp_path / "eval.json"
    common = ["--checkpoint", str(path), "--num-sequences", "1", "--frames", "40", "--json", str(out)]
    assert main(common) == 0
    results = json.loads(out.read_text())
    assert results["settings"] == {"window": 32, "step": 8, "flip": True} and results["seed"] == 3
    model, _ = load_model(path)
    expected = evaluate(model, load_sequences("procedural", "test", seed=3, num_sequences=1, frames=40), window=32,
                        step=8)
    assert results["average"]["mpjpe"] == pytest.approx(expected["average"]["mpjpe"], rel=1e-6)
    assert main(common + ["--window", "16", "--step", "4", "--seed", "0"]) == 0
    results = json.loads(out.read_text())
    assert results["settings"] == {"window": 16, "step": 4, "flip": True} and results["seed"] == 0
    # a checkpoint without the run's settings falls back to SPEC's 96 / 5 and seed 0 (checked by the step)
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tiny_checkpoint_file(tmp_path)), "--step", "97"])


@pytest.mark.parametrize("flags, message", [
    (["--checkpoint", "missing.pt"], "missing.pt"),
    (["--window", "40"], "--window must be a multiple of 16"),
    (["--json", "."], "--json . is a folder; name a file"),
    (["--data", "nowhere.npz"], "nowhere.npz"),
])
def test_command_line_errors(tiny_checkpoint, capsys, flags, message):
    argv = ["--checkpoint", str(tiny_checkpoint), "--num-sequences", "1", "--frames", "16"] + flags
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED_DATA / "deepmimic_17j_50fps.npz").exists(),
                    reason="shared/data not beside the checkout")
def test_command_line_on_motion_capture(tiny_checkpoint, capsys):
    from ugcn_fast.data.sources import load_sequences

    assert main(["--checkpoint", str(tiny_checkpoint), "--data", str(SHARED_DATA / "deepmimic_17j_50fps.npz"),
                 "--num-sequences", "1", "--frames", "48", "--window", "32", "--step", "16", "--no-flip"]) == 0
    printed = capsys.readouterr().out
    # one held-out motion, seen by the source's virtual cameras, cropped to 48 frames
    cameras = len(load_sequences(SHARED_DATA / "deepmimic_17j_50fps.npz", "test", num_sequences=1, frames=48))
    assert f"{cameras} sequences, {cameras * 48} frames" in printed and "Average (1 action)" in printed


# ------------------------------------------------------------------------------------------------ ablation


@pytest.mark.skipif(not ABLATION.exists(), reason="bench/ablation.py not beside the tests")
def test_ablation_quick_smoke_run(tmp_path):
    out = tmp_path / "ablation.json"
    # the script must import the same ugcn_fast as these tests (installed, or the checkout)
    env = {**os.environ, "PYTHONPATH": str(Path(ugcn_fast.__file__).resolve().parents[1])}
    run = subprocess.run([sys.executable, str(ABLATION), "--quick", "--epochs", "1", "--num-sequences", "1",
                          "--frames", "48", "--batch-size", "8", "--json", str(out)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [r["variant"] for r in rows] == ["L_p only", "L_p + L_m (12)", "L_p + L_m (8,12,16,24)"]
    assert [r["lambda_motion"] for r in rows] == [0.0, 1.0, 1.0]
    assert rows[2]["intervals"] == [8, 12, 16, 24]
    assert all(r["steps"] == rows[0]["steps"] > 0 for r in rows)  # the same budget
    assert all(np.isfinite([r["mpjpe"], r["p_mpjpe"], r["mpjve"]]).all() for r in rows)
    assert result["settings"]["epochs"] == 1 and result["settings"]["frames"] == 48 and result["quick"]
    # the loss changes the training: the variants end at different weights
    assert len({r["mpjve"] for r in rows}) == 3
    assert "MPJVE vs L_p" in run.stdout


def test_command_line_reports_a_model_predicting_nan(tmp_path, capsys):
    """A diverged model's NaN metrics print as nan (not as "-", which means not applicable), with a note, and the
    JSON holds null for them: JSON has no NaN."""
    from ugcn_fast.checkpoint import make_model_config, model_from_config, save_checkpoint

    config = make_model_config(channels=(4, 4, 4, 4, 4))
    model = model_from_config(config)
    with torch.no_grad():
        model.regressor.bias.fill_(float("nan"))
    path = tmp_path / "nan.pt"
    save_checkpoint(path, model=model, model_config=config, epoch=1)
    out = tmp_path / "eval.json"
    assert main(["--checkpoint", str(path), "--num-sequences", "1", "--frames", "32", "--window", "32",
                 "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "nan" in captured.out and "note: some metrics are NaN" in captured.err
    results = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"bare {name} in the JSON"))
    assert results["average"]["mpjpe"] is None and results["average"]["pck150"] == 0.0


def test_metrics_follow_the_model_layout_conventions():
    """An MPI-INF-3DHP model is scored about its pelvis (joint 14) with PCK over MPI's 14 joints (Human3.6M's root
    and joint subset were applied to every 17-joint layout); a layout without conventions is refused; train's
    validation uses the same root."""
    from ugcn_fast import Graph
    from ugcn_fast.train import evaluate as validation
    torch.manual_seed(0)
    model = UGCN(channels=(4, 4, 4, 4, 4), graph=Graph(layout="mpi_inf_3dhp")).eval()
    sequences = make_sequences({"walk": [40]}, seed=2)
    results = evaluate(model, sequences, window=16, step=3, flip=False)
    pred = predict_sequence(model, sequences[0].inputs, window=16, step=3, flip=False).double() * 1000
    target = torch.as_tensor(sequences[0].targets).double() * 1000
    mpi_joints = tuple(range(14))
    assert results["average"]["mpjpe"] == pytest.approx(float(metrics.mpjpe(pred, target, root=14)))
    assert results["average"]["mpjpe"] != pytest.approx(float(metrics.mpjpe(pred, target, root=0)))
    assert results["average"]["pck150"] == pytest.approx(100 * float(metrics.pck(pred, target, 150.0, mpi_joints, 14)))
    assert validation(model, sequences, window=16, step=3, flip=False)["mpjpe"] == pytest.approx(
        results["average"]["mpjpe"])
    with pytest.raises(ValueError, match="no metric conventions.*'coco'"):
        evaluate(UGCN(channels=(4, 4, 4, 4, 4), graph=Graph(layout="coco")), sequences, window=16)
    chain = Graph(num_nodes=17, edges=[(j, j + 1) for j in range(16)])
    with pytest.raises(ValueError, match="no metric conventions.*custom graph"):
        evaluate(UGCN(channels=(4, 4, 4, 4, 4), graph=chain), sequences, window=16)
    assert hasattr(validation, "__wrapped__")  # (torch.no_grad on the validation itself)
