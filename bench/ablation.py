#!/usr/bin/env python
"""Ablation of the motion loss at CPU scale: the same small UGCN, seed, data and budget trained three ways.

    python bench/ablation.py                          # procedural data; 20-30 minutes on 2 CPU cores
    python bench/ablation.py --quick                  # a smoke run: well under a minute
    python bench/ablation.py --data ../shared/data/cmu_17j_50fps.npz --json ablation.json

Variants (the paper's ablation of L = L_p + lambda L_m):
    L_p only                    lambda = 0
    L_p + L_m, tau = (12,)      one interval
    L_p + L_m, tau = (8,12,16,24)  the paper's intervals

Every variant trains with `ugcn_fast.train.train` from the same seed (same initial weights, same windows in the
same order) for the same number of optimiser steps, the learning rate divided by 10 at 8/11, 9/11 and 10/11 of
the epochs as in the paper's 110-epoch schedule. The held-out sequences (the source's "test" split: procedural
motions with seeds disjoint from training, or about one sequence in five of a motion-capture file) are then
predicted whole with `ugcn_fast.evaluate.evaluate` (sliding windows, flip test-time augmentation) and reported
as MPJPE, P-MPJPE and MPJVE in millimetres, averaged per action first. The paper's claim to look for: the motion
loss lowers MPJVE (smoother, more correct motion) without hurting MPJPE. At this scale one seed is noisy; use
--seed to repeat.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import torch

try:
    import ugcn_fast
except ImportError:  # running from a source checkout without an install: put the repo root on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import ugcn_fast

from ugcn_fast.data.sources import load_sequences
from ugcn_fast.evaluate import evaluate
from ugcn_fast._files import check_output_file, write_atomically
from ugcn_fast.train import check_config, train

SCHEMA = "ugcn_fast.bench.ablation/1"
# (name, uses the motion loss, intervals)
VARIANTS = (("L_p only", False, (12,)), ("L_p + L_m (12)", True, (12,)),
            ("L_p + L_m (8,12,16,24)", True, (8, 12, 16, 24)))
# Settings of a full run and of --quick; flags override either. The full run is sized from a measured 30-epoch
# run at 16 motions (about 3.5 s per 7-step epoch on 2 idle cores): 50 epochs of 14 steps per variant, about
# 20 minutes in all on an idle 2-core CPU, under 30 on a busy one.
FULL = {"epochs": 50, "batch_size": 64, "lr": 1e-2, "channels": (8, 16, 32, 64, 128), "dropout": 0.1,
        "window": 96, "num_sequences": 32, "val_sequences": 4, "frames": 256, "eval_step": 5}
QUICK = {"epochs": 3, "batch_size": 32, "lr": 1e-2, "channels": (8, 8, 8, 8, 8), "dropout": 0.1,
         "window": 32, "num_sequences": 3, "val_sequences": 1, "frames": 128, "eval_step": 8}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run (< 1 minute) with the QUICK settings")
    p.add_argument("--data", default="procedural",
                   help="'procedural' (default), a motion-capture .npz split by sequence, or data_3d_h36m.npz")
    p.add_argument("--h36m-2d", default=None, help="data_2d_h36m_*.npz for Human3.6M inputs")
    p.add_argument("--epochs", type=int, default=None, help=f"default {FULL['epochs']} (quick {QUICK['epochs']})")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--channels", type=int, nargs=5, default=None, help=f"default {FULL['channels']}")
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--window", type=int, default=None, help="training and test window, a multiple of 16 > 24")
    p.add_argument("--lambda-motion", type=float, default=1.0, help="lambda of the motion-loss variants")
    p.add_argument("--num-sequences", type=int, default=None, help="training motions (each seen by 4 cameras)")
    p.add_argument("--val-sequences", type=int, default=None, help="held-out motions")
    p.add_argument("--frames", type=int, default=None, help="frames per motion (cropped)")
    p.add_argument("--eval-step", type=int, default=None, help="sliding-window step on the held-out sequences")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="data loader workers (0: in the main process)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="auto")
    p.add_argument("--fused", action=argparse.BooleanOptionalAction, default=None,
                   help="fused ST-GCN blocks (default: UGCN's default)")
    p.add_argument("--out-dir", default=None, help="keep each variant's checkpoints and curves here "
                                                   "(default: a temporary folder, removed)")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the results as JSON")
    return p


def settings_of(args: argparse.Namespace) -> dict:
    """The preset (FULL or QUICK) with every flag that was given applied over it."""
    settings = dict(QUICK if args.quick else FULL)
    for name in settings:
        value = getattr(args, name)
        if value is not None:
            settings[name] = tuple(value) if isinstance(value, list) else value
    if settings["window"] % 16 or settings["window"] <= max(max(v[2]) for v in VARIANTS):
        raise ValueError(f"--window must be a multiple of 16 above the largest interval "
                         f"({max(max(v[2]) for v in VARIANTS)}), got {settings['window']}")
    if not 1 <= settings["eval_step"] <= settings["window"]:
        raise ValueError(f"--eval-step must be in [1, --window = {settings['window']}], got {settings['eval_step']}")
    return settings


def milestones(epochs: int) -> tuple[int, ...]:
    """The paper's decays (epochs 80, 90, 100 of 110) scaled to `epochs`, distinct and >= 1."""
    return tuple(sorted({max(1, round(epochs * m / 110)) for m in (80, 90, 100)}))


def variant_config(motion: bool, intervals: tuple[int, ...], settings: dict, args, out: str) -> dict:
    """The training config of one variant."""
    return {
        "epochs": settings["epochs"], "lr": settings["lr"], "milestones": milestones(settings["epochs"]),
        "batch_size": settings["batch_size"], "lambda_motion": args.lambda_motion if motion else 0.0,
        "intervals": intervals, "window": settings["window"], "channels": settings["channels"],
        "dropout": settings["dropout"], "seed": args.seed, "workers": args.workers, "threads": args.threads,
        "device": args.device, "fused": args.fused, "eval_every": 0, "out": out, "data": args.data,
    }


def run_variant(name: str, motion: bool, intervals: tuple[int, ...], settings: dict, args, train_sequences,
                test_sequences, out: str) -> dict:
    config = variant_config(motion, intervals, settings, args, out)
    started = time.perf_counter()
    result = train(config, train_sequences=train_sequences, val_sequences=[])
    train_seconds = time.perf_counter() - started
    metrics = evaluate(result["model"], test_sequences, window=settings["window"], step=settings["eval_step"])
    last = result["history"][-1]
    return {"variant": name, "lambda_motion": config["lambda_motion"], "intervals": list(intervals),
            "mpjpe": metrics["average"]["mpjpe"], "p_mpjpe": metrics["average"]["p_mpjpe"],
            "mpjve": metrics["average"]["mpjve"], "final_position_loss": last["position_loss"],
            "final_motion_loss": last["motion_loss"], "steps": result["global_step"],
            "train_seconds": train_seconds, "total_seconds": time.perf_counter() - started,
            "history": result["history"], "per_action": metrics["per_action"]}


def _number(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"  # (None: not measured, e.g. MPJVE of one-frame data)


def format_table(rows: list[dict]) -> str:
    header = ("variant", "lambda", "MPJPE mm", "P-MPJPE mm", "MPJVE mm", "MPJVE vs L_p", "steps", "train s")
    base = rows[0]["mpjve"]
    lines = [(r["variant"], f"{r['lambda_motion']:g}", _number(r["mpjpe"], 1), _number(r["p_mpjpe"], 1),
              _number(r["mpjve"], 2),
              "-" if i == 0 or None in (r["mpjve"], base) else f"{100 * (r['mpjve'] / base - 1):+.1f} %",
              str(r["steps"]), f"{r['train_seconds']:.0f}") for i, r in enumerate(rows)]
    widths = [max(len(x[i]) for x in [header] + lines) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), "-" * len(line(header))] + [line(x) for x in lines])


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.json:
            check_output_file("--json", args.json)
        settings = settings_of(args)
        for k, (_, motion, intervals) in enumerate(VARIANTS):  # every variant's settings before any trains
            check_config(variant_config(motion, intervals, settings, args, f"variant{k}"))
        train_sequences = load_sequences(args.data, "train", h36m_2d=args.h36m_2d, seed=args.seed,
                                         num_sequences=settings["num_sequences"], frames=settings["frames"])
        test_sequences = load_sequences(args.data, "test", h36m_2d=args.h36m_2d, seed=args.seed,
                                        num_sequences=settings["val_sequences"], frames=settings["frames"])
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(f"ablation on {args.data}: {len(train_sequences)} training sequences "
          f"({sum(len(s) for s in train_sequences)} frames), {len(test_sequences)} held-out sequences "
          f"({sum(len(s) for s in test_sequences)} frames); {settings}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ugcn-ablation-") as scratch:
        root = args.out_dir or scratch
        for k, (name, motion, intervals) in enumerate(VARIANTS):
            print(f"[{k + 1}/{len(VARIANTS)}] {name}", flush=True)
            out = os.path.join(root, f"variant{k}")
            if os.path.exists(os.path.join(out, "last.pt")):
                parser.error(f"{out} already holds a run; choose another --out-dir")
            try:
                rows.append(run_variant(name, motion, intervals, settings, args, train_sequences, test_sequences,
                                        out))
            except ValueError as error:  # a setting train() refuses (e.g. a batch larger than the data)
                parser.error(str(error))
            row = rows[-1]
            print(f"    MPJPE {_number(row['mpjpe'], 1)} mm, MPJVE {_number(row['mpjve'], 2)} mm "
                  f"({row['train_seconds']:.0f} s)", flush=True)
    print(format_table(rows))
    if args.json:
        result = {"schema": SCHEMA, "data": args.data, "seed": args.seed, "settings": settings,
                  "lambda_motion": args.lambda_motion, "quick": args.quick,
                  "machine": {"platform": platform.platform(), "torch": torch.__version__,
                              "threads": torch.get_num_threads(), "ugcn_fast": ugcn_fast.__version__},
                  "rows": rows}
        text = json.dumps(result, indent=2, default=list) + "\n"
        write_atomically(args.json, lambda f: f.write(text.encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
