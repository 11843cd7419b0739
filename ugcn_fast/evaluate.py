"""Evaluate a trained UGCN on held-out sequences with the metrics of SPEC §5.

    python -m ugcn_fast.evaluate --checkpoint runs/ugcn/best.pt                      # procedural test split
    python -m ugcn_fast.evaluate --checkpoint best.pt --data ../shared/data/cmu_17j_50fps.npz --json eval.json
    python -m ugcn_fast.evaluate --checkpoint best.pt --data data_3d_h36m.npz --h36m-2d data_2d_h36m_cpn_ft_h36m_dbb.npz

Every sequence is predicted whole (`ugcn_fast.inference.predict_sequence`: sliding windows, per-frame averaging,
flip test-time augmentation). Errors are in millimetres, PCK and AUC in percent. Human3.6M's convention is kept:
each metric is averaged over the frames of an action first (all its sequences and cameras together), then over
the actions, so a long action does not outweigh a short one. The frame-weighted mean over every frame is
reported too ("all frames").
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Sequence

import torch
from torch import nn

from . import metrics
from ._cli import show_defaults
from ._files import check_output_file, write_atomically
from .checkpoint import unwrap_model
from .cpu_memory import keep_freed_memory
from .inference import (add_inference_arguments, check_inference_arguments, predict_sequence, resolve_device,
                        trained_inference_arguments)

METRICS = ("mpjpe", "p_mpjpe", "mpjve", "pck150", "auc")
METRIC_TITLES = {"mpjpe": "MPJPE mm", "p_mpjpe": "P-MPJPE mm", "mpjve": "MPJVE mm", "pck150": "PCK@150 %",
                 "auc": "AUC %"}
# The metrics that average over frames, and MPJVE over frame-to-frame differences (one fewer per sequence).
FRAME_METRICS = ("mpjpe", "p_mpjpe", "pck150", "auc")


def sequence_sums(pred_mm: torch.Tensor, target_mm: torch.Tensor, root: int = 0,
                  joints: Sequence[int] = metrics.PCK_JOINTS_H36M) -> dict[str, float]:
    """Per-frame metric sums of one (T, J, 3) sequence in millimetres, so that sequences of different lengths
    can be pooled by frame: {"frames", "velocity_frames", metric: sum over its frames}; `root` and the PCK
    `joints` by the layout's conventions (metrics.layout_conventions)."""
    T = pred_mm.shape[0]
    sums = {"frames": T, "velocity_frames": T - 1,
            "mpjpe": float(metrics.mpjpe(pred_mm, target_mm, root)) * T,
            "p_mpjpe": float(metrics.p_mpjpe(pred_mm, target_mm, root)) * T,
            "pck150": 100.0 * float(metrics.pck(pred_mm, target_mm, 150.0, joints, root)) * T,
            "auc": 100.0 * float(metrics.auc(pred_mm, target_mm, joints=joints, root=root)) * T,
            "mpjve": float(metrics.mpjve(pred_mm, target_mm, root)) * (T - 1) if T >= 2 else 0.0}
    return sums


def _means(sums: dict[str, float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {name: sums[name] / sums["frames"] for name in FRAME_METRICS}
    out["mpjve"] = sums["mpjve"] / sums["velocity_frames"] if sums["velocity_frames"] > 0 else None
    return {name: out[name] for name in METRICS}


def _add(total: dict[str, float], sums: dict[str, float]) -> None:
    for key, value in sums.items():
        total[key] = total.get(key, 0) + value


def _check_sequences(sequences, num_joints: int | None) -> None:
    if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__len__") or len(sequences) == 0:
        raise ValueError("sequences must be a non-empty list of LiftingSequence (from "
                         "ugcn_fast.data.sources.load_sequences)")
    for k, seq in enumerate(sequences):
        if not all(hasattr(seq, attribute) for attribute in ("name", "action", "inputs", "targets")):
            raise TypeError(f"sequences[{k}] must have name, action, inputs and targets (a LiftingSequence), "
                            f"got {type(seq).__name__}")
        if num_joints is not None and seq.inputs.shape[1] != num_joints:
            raise ValueError(f"sequence {seq.name!r} has {seq.inputs.shape[1]} joints but the model takes "
                             f"{num_joints}")


def evaluate(model: nn.Module, sequences: Sequence, *, window: int = 96, step: int = 5, flip: bool = True,
             batch_size: int = 64) -> dict:
    """Metrics of `model` on `sequences` (LiftingSequence: inputs (T, J, 2), targets (T, J, 3) in metres).

    Returns {"average": {metric: mean over actions}, "all_frames": {metric: mean over every frame},
    "per_action": {action: {metric: ..., "frames": n, "sequences": k}}, "per_sequence": {name: {...}},
    "num_sequences", "num_frames", "num_actions", "settings"}. Metrics: "mpjpe", "p_mpjpe", "mpjve" (mm),
    "pck150", "auc" (% over the 14 joints of the MPI-INF-3DHP convention), relative to the root joint, both by the
    model's layout (metrics.layout_conventions; a model without a `layout` attribute: Human3.6M's; other layouts
    and custom graphs are refused). MPJVE is None where no sequence has
    two frames. The model runs in eval mode on its own device; its mode is restored.
    """
    _check_sequences(sequences, getattr(model, "num_joints", None))
    # before any prediction: a layout without conventions is refused; a model that does not say: the data's order
    conventions = metrics.layout_conventions(getattr(unwrap_model(model), "layout", "h36m"))
    per_action_sums: dict[str, dict[str, float]] = {}
    per_sequence: dict[str, dict] = {}
    total: dict[str, float] = {}
    for seq in sequences:
        pred = predict_sequence(model, seq.inputs, window=window, step=step, flip=flip, batch_size=batch_size)
        # metrics in float64 on the CPU: sums over long sequences would lose digits in float32
        pred_mm = pred.detach().to("cpu", torch.float64) * 1000.0
        target_mm = torch.as_tensor(seq.targets).to(torch.float64) * 1000.0
        sums = sequence_sums(pred_mm, target_mm, conventions["root"], conventions["pck_joints"])
        per_sequence[seq.name] = {**_means(sums), "action": seq.action, "frames": sums["frames"]}
        action = per_action_sums.setdefault(seq.action, {"sequences": 0})
        action["sequences"] += 1
        _add(action, sums)
        _add(total, sums)
    per_action = {name: {**_means(sums), "frames": int(sums["frames"]), "sequences": int(sums["sequences"])}
                  for name, sums in sorted(per_action_sums.items())}
    average = {}
    for name in METRICS:
        values = {action: row[name] for action, row in per_action.items() if row[name] is not None}
        average[name] = metrics.average_over_actions(values) if values else None
    return {"average": average, "all_frames": _means(total), "per_action": per_action, "per_sequence": per_sequence,
            "num_sequences": len(sequences), "num_frames": int(total["frames"]), "num_actions": len(per_action),
            "settings": {"window": window, "step": step, "flip": flip}}


def format_table(results: dict) -> str:
    """The per-action rows, the average over actions and the all-frames mean as a text table."""
    header = ["action", "seqs", "frames"] + [METRIC_TITLES[m] for m in METRICS]
    rows = [[action, str(row["sequences"]), str(row["frames"])] + [_cell(row[m]) for m in METRICS]
            for action, row in results["per_action"].items()]
    actions = results["num_actions"]
    rows.append([f"Average ({actions} action{'' if actions == 1 else 's'})", str(results["num_sequences"]),
                 str(results["num_frames"])] + [_cell(results["average"][m]) for m in METRICS])
    rows.append(["All frames", "", ""] + [_cell(results["all_frames"][m]) for m in METRICS])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule] + [line(r) for r in rows[:-2]] + [rule] + [line(r) for r in rows[-2:]])


def _cell(value) -> str:
    return "-" if value is None else f"{value:.1f}"  # (None: not applicable; NaN prints as nan)


def _strict_json(value):
    """value with every NaN / +-Inf float replaced by None: JSON has no such numbers (Python's json would write
    bare NaN, which other readers refuse)."""
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ugcn_fast.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by ugcn_fast.train")
    parser.add_argument("--data", default="procedural",
                        help="'procedural', a motion-capture .npz (shared/data format) or a VideoPose3D "
                             "data_3d_h36m.npz (default: procedural)")
    parser.add_argument("--h36m-2d", default=None,
                        help="with a data_3d_h36m.npz: the matching data_2d_h36m_*.npz (default: project the 3D "
                             "ground truth with the published cameras)")
    parser.add_argument("--split", default="test", choices=("train", "test", "all"))
    parser.add_argument("--seed", type=int, default=None,
                        help="data seed: procedural motion, virtual cameras (default: the checkpoint's training "
                             "seed, else 0)")
    parser.add_argument("--num-sequences", type=int, default=None, help="motions to take (default: the source's)")
    parser.add_argument("--frames", type=int, default=None, help="crop every motion to its first FRAMES frames")
    add_inference_arguments(parser)
    parser.add_argument("--json", default=None, metavar="OUT.json", help="also write every number as JSON")
    return show_defaults(parser)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (argument and data errors exit with status 2 and a message)."""
    from .checkpoint import load_model, training_config
    from .data.sources import check_source_layout, load_sequences

    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()  # the command owns its process (ugcn_fast/cpu_memory.py)
    try:  # before anything is read: a bad flag is reported as such, not as a bad file
        check_inference_arguments(args.window, args.step, ugcn=True)
        if args.json:
            check_output_file("--json", args.json)
        device = resolve_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    try:
        model, checkpoint = load_model(args.checkpoint, map_location=device, fused=args.fused)
        check_source_layout(checkpoint["model_config"]["layout"], f"the model layout of {args.checkpoint}")
        # by default, the windows and data seed the run validated with: its log.csv's numbers are reproduced
        trained = training_config(checkpoint)
        args.window, args.step = trained_inference_arguments(args.window, args.step, trained)
        if args.seed is None:
            args.seed = trained.get("seed", 0)
        sequences = load_sequences(args.data, args.split, h36m_2d=args.h36m_2d, seed=args.seed,
                                   num_sequences=args.num_sequences, frames=args.frames)
        model.check_length(args.window)
        results = evaluate(model, sequences, window=args.window, step=args.step, flip=args.flip,
                           batch_size=args.batch_size)
    except (FileNotFoundError, ValueError, TypeError, NotImplementedError) as error:
        parser.error(str(error))
    results = {"checkpoint": os.fspath(args.checkpoint), "epoch": checkpoint.get("epoch"),
               "model_config": checkpoint.get("model_config"), "data": os.fspath(args.data), "split": args.split,
               "seed": args.seed, "device": str(device), **results}
    print(f"{args.checkpoint} (epoch {results['epoch']}) on {args.data} [{args.split}, seed {args.seed}]: "
          f"{results['num_sequences']} "
          f"sequences, {results['num_frames']} frames, window {args.window} step {args.step}"
          f"{' + flip' if args.flip else ''}")
    print(format_table(results))
    if any(isinstance(v, float) and math.isnan(v) for v in results["average"].values()):
        print("note: some metrics are NaN: the model predicted NaN or Inf poses"
              + (f" ({args.json} holds null for them)" if args.json else ""), file=sys.stderr)
    if args.json:
        text = json.dumps(_strict_json(results), indent=2, allow_nan=False) + "\n"
        write_atomically(args.json, lambda handle: handle.write(text.encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
