"""Train a UGCN with the paper's recipe (SPEC §4): `python -m ugcn_fast.train [flags]`.

Defaults are the paper's: Adam, lr 1e-2 divided by 10 at epochs 80, 90 and 100 of 110, batch 256, weight decay
1e-5 on convolution weights only, L = L_p + 1.0 * L_m with intervals (8, 12, 16, 24), 96-frame windows with
horizontal-flip augmentation. Every epoch writes, under --out: `last.pt` (everything needed to resume), `best.pt`
(lowest validation MPJPE), `log.csv` (one row per epoch) and `curves.png` (+ `val.png` once validated).

Multi-process data parallel: `torchrun --nproc_per_node=N -m ugcn_fast.train ...` (gloo on CPU, nccl on CUDA);
--batch-size is the global batch, split evenly over the processes; only rank 0 writes files and prints.

Reproducibility: the model initialisation, the window tiling and the shuffling derive from --seed and the epoch
number, and the RNG states are saved with every checkpoint, so two runs with the same flags give the same losses
and a resumed run continues bit for bit where the uninterrupted run would have been. The number of loader
workers does not change the result (a window's content does not depend on random numbers); the number of CPU
threads (--threads) does, in the last bits, as it changes the order of floating-point sums. On a GPU, cuDNN
kernels may still differ in the last bits from run to run. On a CPU shared with other work, pass --threads 1:
OpenMP threads that wait for a busy core can slow training down many times.

Memory: the command keeps the memory it frees (glibc's malloc thresholds raised, ugcn_fast/cpu_memory.py), which
spares a CPU training step ~20 % of page faults; UGCN_FAST_KEEP_FREED_MEMORY=0 turns that off.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import random
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import metrics
from ._checks import is_int, is_real
from ._cli import show_defaults
from ._files import check_output_folder, write_atomically
from .checkpoint import (load_checkpoint, make_model_config, model_config_diff, model_from_config, save_checkpoint,
                         unwrap_model)
from .cpu_memory import keep_freed_memory
from .data.loader import make_loader
from .data.sources import LiftingSequence, check_source_layout, load_sequences
from .data.windows import WindowDataset
from .graph import LAYOUTS
from .inference import predict_sequence
from .losses import UGCNLoss, position_loss

CSV_COLUMNS = ("epoch", "lr", "loss", "position_loss", "motion_loss", "val_mpjpe_mm", "val_mpjve_mm",
               "samples_per_s", "seconds")
# Settings that may change between a run and its resumption without changing what is computed. (--eval-step and
# --val-sequences change the validation errors that best.pt is chosen by, so a change of them is noted.)
RESUMABLE_CHANGES = ("epochs", "resume", "out", "workers", "threads", "device", "eval_every", "fused")
# Settings that the checkpoint's optimiser and scheduler state hold (Adam's learning rate and weight decay,
# MultiStepLR's milestones and gamma): a resumed run could not apply other values, so they are refused.
OPTIMIZER_SETTINGS = ("lr", "weight_decay", "milestones", "gamma")


@dataclass
class TrainConfig:
    """Every setting of a training run; field names are the command-line flags with '_' for '-'."""
    # optimisation (SPEC §4)
    epochs: int = 110
    lr: float = 1e-2
    milestones: tuple[int, ...] = (80, 90, 100)
    gamma: float = 0.1
    batch_size: int = 256
    weight_decay: float = 1e-5
    steps_per_epoch: int | None = None  # cap on the optimiser steps of an epoch (smoke tests); None: all windows
    # loss (SPEC §1)
    lambda_motion: float = 1.0
    intervals: tuple[int, ...] = (8, 12, 16, 24)
    operator: str = "cross"
    normalize: str = "sample"
    position: str = "l2sq"
    # data
    data: str = "procedural"
    h36m_2d: str | None = None
    num_sequences: int | None = None
    frames: int | None = None
    val_sequences: int | None = None
    window: int = 96
    flip: bool = True
    workers: int = 2
    # model (SPEC §4)
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    dropout: float = 0.5
    kernel_size: int = 5
    layout: str = "h36m"
    fused: bool | None = None  # None: UGCN's default
    # run
    out: str = "runs/ugcn"
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    eval_every: int = 1
    eval_step: int = 5


# ----------------------------------------------------------------------------------------------- configuration

def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m ugcn_fast.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--milestones", type=int, nargs="*", default=list(d.milestones),
                   help="epochs after which the learning rate is multiplied by --gamma")
    g.add_argument("--gamma", type=float, default=d.gamma)
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch (over all processes)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="on convolution weights only")
    g.add_argument("--steps-per-epoch", type=int, default=None, help="at most this many steps per epoch")
    g = p.add_argument_group("loss")
    g.add_argument("--lambda-motion", type=float, default=d.lambda_motion)
    g.add_argument("--intervals", type=int, nargs="+", default=list(d.intervals))
    g.add_argument("--operator", choices=("cross", "inner", "sub"), default=d.operator)
    g.add_argument("--normalize", choices=("sample", "joint", "none"), default=d.normalize)
    g.add_argument("--position", choices=("l2sq", "mpjpe"), default=d.position)
    g = p.add_argument_group("data")
    g.add_argument("--data", default=d.data,
                   help="'procedural', a motion-capture .npz (shared/data format) or a VideoPose3D data_3d_h36m.npz")
    g.add_argument("--h36m-2d", default=None, help="data_2d_h36m_*.npz for Human3.6M inputs (default: projected GT)")
    g.add_argument("--num-sequences", type=int, default=None, help="training motions to load (default: the source's)")
    g.add_argument("--frames", type=int, default=None, help="crop every sequence to its first frames")
    g.add_argument("--val-sequences", type=int, default=None, help="validation motions (default: the source's)")
    g.add_argument("--window", type=int, default=d.window, help="training window length, a multiple of 16")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="horizontal-flip augmentation (training) and test-time augmentation (validation)")
    g.add_argument("--workers", type=int, default=d.workers, help="data loader worker processes per rank")
    g = p.add_argument_group("model")
    g.add_argument("--channels", type=int, nargs=5, default=list(d.channels))
    g.add_argument("--dropout", type=float, default=d.dropout)
    g.add_argument("--kernel-size", type=int, default=d.kernel_size)
    g.add_argument("--layout", choices=tuple(LAYOUTS), default=d.layout)
    g.add_argument("--fused", action=argparse.BooleanOptionalAction, default=None,
                   help="fused ST-GCN blocks (default: UGCN's default)")
    g = p.add_argument_group("run")
    g.add_argument("--out", default=d.out, help="folder for checkpoints, log.csv and curves.png")
    g.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", default=d.device, help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    g.add_argument("--eval-every", type=int, default=d.eval_every, help="validate every N epochs (0: never)")
    g.add_argument("--eval-step", type=int, default=d.eval_step, help="sliding-window step at validation")
    return show_defaults(p)


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Command-line flags -> a checked TrainConfig (argparse exits on malformed flags; bad values raise
    ValueError naming the flag)."""
    namespace = build_parser().parse_args(argv)
    values = vars(namespace)
    for name in ("milestones", "intervals", "channels"):
        values[name] = tuple(values[name])
    return check_config(TrainConfig(**values))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_config(config: TrainConfig | Mapping) -> TrainConfig:
    """The config as a TrainConfig (a dict is accepted), every value checked; ValueError names the flag."""
    if isinstance(config, Mapping):
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
        config = TrainConfig(**config)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or a dict, got {type(config).__name__}")
    config = replace(config)  # a copy: the values are normalised below (numpy numbers to Python ones, tuples)

    def integer(name, minimum, optional=False):
        value = getattr(config, name)
        if optional and value is None:
            return
        if not is_int(value) or value < minimum:
            raise ValueError(f"{_flag(name)} must be an int >= {minimum}, got {value!r}")
        setattr(config, name, int(value))  # (a checkpoint stores the config: plain Python numbers only)

    def real(name, minimum, strict):
        value = getattr(config, name)
        if not is_real(value) or not math.isfinite(value) or value < minimum or (strict and value == minimum):
            relation = ">" if strict else ">="
            raise ValueError(f"{_flag(name)} must be a finite number {relation} {minimum}, got {value!r}")
        setattr(config, name, float(value))

    for name in ("flip", "resume"):
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{_flag(name)} must be True or False, got {getattr(config, name)!r}")
    for name, optional in (("data", False), ("out", False), ("device", False), ("h36m_2d", True)):
        value = getattr(config, name)
        if optional and value is None:
            continue
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"{_flag(name)} must be a str, got {value!r}")
        setattr(config, name, os.fspath(value))

    for name, minimum in (("epochs", 1), ("batch_size", 1), ("window", 16), ("kernel_size", 1), ("workers", 0),
                          ("seed", 0), ("eval_every", 0), ("eval_step", 1)):
        integer(name, minimum)
    for name in ("steps_per_epoch", "num_sequences", "frames", "val_sequences", "threads"):
        integer(name, 1, optional=True)
    real("lr", 0.0, strict=True)
    real("gamma", 0.0, strict=True)
    real("weight_decay", 0.0, strict=False)
    real("lambda_motion", 0.0, strict=False)
    real("dropout", 0.0, strict=False)
    if config.dropout >= 1:
        raise ValueError(f"--dropout must be in [0, 1), got {config.dropout}")
    if config.window % 16:
        raise ValueError(f"--window must be a multiple of 16 (UGCN's four stride-2 stages), got {config.window}")
    if config.eval_step > config.window:  # refused now, not after the first epoch (predict_sequence refuses it)
        raise ValueError(f"--eval-step must be <= --window, got --eval-step {config.eval_step} > --window "
                         f"{config.window}: the frames between two windows would be predicted by none")
    if config.kernel_size % 2 == 0:
        raise ValueError(f"--kernel-size must be odd, got {config.kernel_size}")
    for name in ("milestones", "intervals", "channels"):
        values = getattr(config, name)
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise ValueError(f"{_flag(name)} must be a sequence of ints, got {values!r}")
        setattr(config, name, tuple(values))
    if any(not is_int(m) or m < 1 for m in config.milestones) \
            or list(config.milestones) != sorted(set(config.milestones)):
        raise ValueError(f"--milestones must be increasing epoch numbers >= 1, got {list(config.milestones)}")
    if not config.intervals or len(set(config.intervals)) != len(config.intervals) or any(
            not is_int(t) or not 1 <= t < config.window for t in config.intervals):
        raise ValueError(f"--intervals must be distinct ints in [1, --window = {config.window}), "
                         f"got {list(config.intervals)}")
    if len(config.channels) != 5 or any(not is_int(c) or c < 1 for c in config.channels):
        raise ValueError(f"--channels must be 5 positive ints, got {list(config.channels)}")
    config.milestones, config.intervals, config.channels = (
        tuple(int(v) for v in getattr(config, name)) for name in ("milestones", "intervals", "channels"))
    for name, choices in (("operator", ("cross", "inner", "sub")), ("normalize", ("sample", "joint", "none")),
                          ("position", ("l2sq", "mpjpe")), ("layout", tuple(LAYOUTS))):
        if getattr(config, name) not in choices:
            raise ValueError(f"{_flag(name)} must be one of {choices}, got {getattr(config, name)!r}")
    if config.fused not in (None, True, False):
        raise ValueError(f"--fused must be True, False or None, got {config.fused!r}")
    return config


def model_config_of(config: TrainConfig) -> dict:
    """The checkpoint's model_config for a training config."""
    return make_model_config(num_joints=LAYOUTS[config.layout]["num_nodes"], channels=config.channels,
                             layout=config.layout, kernel_size=config.kernel_size, dropout=config.dropout)


# ------------------------------------------------------------------------------------------ processes, devices

@dataclass
class Processes:
    """Where this process stands in a (possibly single-process) run."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device: {error}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def check_batch_split(batch_size: int, world_size: int) -> int:
    """The per-process batch of a global --batch-size."""
    if batch_size % world_size:
        raise ValueError(f"--batch-size {batch_size} is the global batch; it must be divisible by the "
                         f"{world_size} processes")
    return batch_size // world_size


def setup_processes(config: TrainConfig) -> Processes:
    """Joins the process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK), or the one
    already initialised. The group is left up for later calls in the same processes (initialising a second
    group after destroying one races in gloo's connection setup); `main` destroys it at exit."""
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        check_batch_split(config.batch_size, world_size)
        return Processes(rank, world_size, local_rank, _resolve_device(config.device, local_rank))
    if not ("RANK" in os.environ and "WORLD_SIZE" in os.environ):
        return Processes(device=_resolve_device(config.device, 0))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    check_batch_split(config.batch_size, world_size)  # before connecting: every process fails alike, at once
    device = _resolve_device(config.device, local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return Processes(rank, world_size, local_rank, device)


# ------------------------------------------------------------------------------------------ optimiser, RNG

def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Adam parameter groups: `weight_decay` on the convolution weights, none on biases and BatchNorm.

    Convolution weights are told apart by their rank (a (C_out, C_in, k...) tensor) rather than by module type, so
    the rule also holds for blocks that keep their weights as plain parameters: in UGCN every parameter with more
    than one dimension is a convolution weight, and biases and BatchNorm scales and shifts are vectors."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.dim() > 1 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def rng_state() -> dict:
    """Every random generator's state, as plain data that `torch.load(weights_only=True)` reads back."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"] = {**numpy_state["state"], "key": numpy_state["state"]["key"].tolist()}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {**numpy_state["state"], "key": np.asarray(numpy_state["state"]["key"], np.uint32)}
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed made of (seed, epoch), for a resumed run whose checkpoint lacks this process's RNG state."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


# ------------------------------------------------------------------------------------------ output

class ProgressBar:
    """One `\\r`-refreshed status line on a terminal; on anything else (a log file, a pipe) only the line that
    closes each epoch, so logs stay readable."""

    def __init__(self, stream=None, enabled: bool = True, min_interval: float = 0.2):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.live = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.min_interval, self.last, self.width = min_interval, 0.0, 0

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.live and (force or now - self.last >= self.min_interval):
            self.stream.write("\r" + text.ljust(self.width))
            self.stream.flush()
            self.width, self.last = len(text), now

    def close_line(self, text: str) -> None:
        if not self.enabled:
            return
        self.stream.write(("\r" + text.ljust(self.width) if self.live else text) + "\n")
        self.stream.flush()
        self.width = 0

    def note(self, text: str) -> None:
        self.close_line(text)


def _format_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_log_csv(path: Path, history: Sequence[Mapping]) -> None:
    """log.csv, rewritten whole from the history each epoch (the history travels in the checkpoint, so a
    resumed run neither loses nor repeats rows)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in history:
        writer.writerow([_format_cell(row.get(column)) for column in CSV_COLUMNS])
    write_atomically(path, lambda handle: handle.write(buffer.getvalue().encode()))


def write_curves(out: Path, history: Sequence[Mapping]) -> None:
    """curves.png (training losses per epoch) and, once validated, val.png (validation errors)."""
    from .viz import plot_curves  # the plotting code is only needed by the process that writes files

    epochs = [row["epoch"] for row in history]
    plot_curves(out / "curves.png", {"loss": [row["loss"] for row in history],
                                     "position loss": [row["position_loss"] for row in history],
                                     "motion loss": [row["motion_loss"] for row in history]},
                x=epochs, title="UGCN training losses", xlabel="epoch")
    validated = [row for row in history if row.get("val_mpjpe_mm") is not None]
    if validated:
        plot_curves(out / "val.png", {"val MPJPE (mm)": [row["val_mpjpe_mm"] for row in validated],
                                      "val MPJVE (mm)": [row["val_mpjve_mm"] for row in validated]},
                    x=[row["epoch"] for row in validated], title="UGCN validation", xlabel="epoch")


# ------------------------------------------------------------------------------------------ evaluation

def _validation_root(layout: str | None) -> int:
    """The root joint of the layout's metric conventions (MPI-INF-3DHP: the pelvis, 14); joint 0 for a layout
    without conventions (COCO-17, NTU-25, a custom graph), whose sequences the user gives root-relative there."""
    try:
        return metrics.layout_conventions(layout)["root"]
    except ValueError:
        return 0


@torch.no_grad()
def evaluate(model: nn.Module, sequences: Sequence[LiftingSequence], *, window: int, step: int = 5,
             flip: bool = True, processes: Processes | None = None) -> dict:
    """Validation errors in millimetres: {"mpjpe": ..., "mpjve": ...}, each averaged over the frames of an action
    first, then over the actions (the Human3.6M convention). Under data parallel the sequences are shared out
    over the processes and the sums gathered, so every process gets the same numbers."""
    processes = processes or Processes()
    model = unwrap_model(model)
    root = _validation_root(getattr(model, "layout", None))
    sums: dict[str, list[float]] = {}  # action -> [position error sum, frames, velocity error sum, velocity frames]
    for sequence in sequences[processes.rank::processes.world_size]:
        prediction = predict_sequence(model, sequence.inputs, window=window, step=step, flip=flip).cpu().double()
        target = torch.from_numpy(sequence.targets).double()
        frames = len(target)
        entry = sums.setdefault(sequence.action, [0.0, 0, 0.0, 0])
        entry[0] += float(metrics.mpjpe(prediction * 1000, target * 1000, root)) * frames
        entry[1] += frames
        if frames > 1:
            entry[2] += float(metrics.mpjve(prediction * 1000, target * 1000, root)) * (frames - 1)
            entry[3] += frames - 1
    if processes.distributed and processes.world_size > 1:
        gathered = [None] * processes.world_size
        dist.all_gather_object(gathered, sums)
        sums = {}
        for part in gathered:
            for action, values in part.items():
                entry = sums.setdefault(action, [0.0, 0, 0.0, 0])
                for k in range(4):
                    entry[k] += values[k]
    if not sums:
        raise ValueError("no validation sequence to evaluate")
    mpjpe = metrics.average_over_actions({a: s[0] / s[1] for a, s in sums.items()})
    velocity = {a: s[2] / s[3] for a, s in sums.items() if s[3] > 0}
    return {"mpjpe": mpjpe, "mpjve": metrics.average_over_actions(velocity) if velocity else float("nan")}


# ------------------------------------------------------------------------------------------ training

def _load_data(config: TrainConfig, train_sequences, val_sequences, evaluate_at_all: bool):
    train_given, val_given = train_sequences is not None, val_sequences is not None
    if train_sequences is None or (val_sequences is None and evaluate_at_all):
        check_source_layout(config.layout, "--layout")
    if train_sequences is None:
        train_sequences = load_sequences(config.data, "train", h36m_2d=config.h36m_2d, seed=config.seed,
                                         num_sequences=config.num_sequences, frames=config.frames)
    if val_sequences is None and evaluate_at_all:
        val_sequences = load_sequences(config.data, "test", h36m_2d=config.h36m_2d, seed=config.seed,
                                       num_sequences=config.val_sequences, frames=config.frames)
    if not train_sequences:
        raise ValueError(f"{'train_sequences' if train_given else f'--data {config.data}'}: no training sequence")
    if evaluate_at_all and not val_sequences:
        raise ValueError(f"{'val_sequences' if val_given else f'--data {config.data}'}: no validation sequence "
                         "(--eval-every 0 trains without validation)")
    for name, sequences in (("train_sequences", train_sequences), ("val_sequences", val_sequences or [])):
        for sequence in sequences:
            if not isinstance(sequence, LiftingSequence):
                raise TypeError(f"{name} must hold ugcn_fast.data.LiftingSequence objects (name, action, inputs, "
                                f"targets), got a {type(sequence).__name__}")
    for sequence in val_sequences or []:  # (the training windows refuse non-finite data themselves)
        if not (np.isfinite(sequence.inputs).all() and np.isfinite(sequence.targets).all()):
            raise ValueError(f"val_sequences: sequence {sequence.name} holds NaN or Inf values; clean or "
                             "interpolate it first")
    num_joints = LAYOUTS[config.layout]["num_nodes"]
    for sequence in list(train_sequences) + list(val_sequences or []):
        if sequence.inputs.shape[1] != num_joints:
            raise ValueError(f"sequence {sequence.name} has {sequence.inputs.shape[1]} joints but --layout "
                             f"{config.layout} has {num_joints}")
    return list(train_sequences), list(val_sequences or [])


def _resume_state(config: TrainConfig, path: Path, model_config: dict, log) -> dict | None:
    """The checkpoint to continue from, checked against this run's settings, or None to start afresh."""
    check_output_folder("--out", path.parent)  # refused now, not by mkdir after the data is loaded
    if not config.resume:
        if path.exists():
            raise ValueError(f"--out {config.out} already holds a checkpoint ({path}); pass --resume to continue "
                             "it or choose another --out")
        return None
    if not path.exists():
        log(f"--resume: {path} does not exist yet; starting from epoch 0")
        return None
    checkpoint = load_checkpoint(path, map_location="cpu")
    missing = [key for key in ("optimizer", "scheduler") if checkpoint.get(key) is None]
    if missing:
        raise ValueError(f"cannot resume {path}: it holds no {' or '.join(missing)} state (a weights-only "
                         "checkpoint, e.g. a copy of best.pt or one saved without them); resume from the run's own "
                         "last.pt, or train afresh into another --out")
    differences = model_config_diff(checkpoint["model_config"], model_config)
    if differences:
        listed = "; ".join(f"{key}: checkpoint {saved!r}, requested {wanted!r}"
                           for key, (saved, wanted) in differences.items())
        raise ValueError(f"cannot resume {path}: it was trained with another model configuration ({listed}); "
                         "use the same model flags or another --out")
    saved = checkpoint["extra"].get("config", {})
    changed = {k: v for k, v in asdict(config).items()
               if k in saved and k not in RESUMABLE_CHANGES and _normal(saved[k]) != _normal(v)}
    fixed = [f"{_flag(k)} {saved[k]!r} -> {v!r}" for k, v in changed.items() if k in OPTIMIZER_SETTINGS]
    if fixed:
        # the restored optimiser and scheduler would keep the checkpoint's values while last.pt recorded these
        raise ValueError(f"cannot resume {path} with other optimiser settings ({', '.join(fixed)}): its optimiser "
                         "and scheduler state hold the checkpoint's values; use them or another --out")
    if changed:
        log("note: resuming with changed settings: "
            + ", ".join(f"{_flag(k)} {saved[k]!r} -> {v!r}" for k, v in changed.items()))
    return checkpoint


def _normal(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def train(config: TrainConfig | Mapping, *, train_sequences: Sequence[LiftingSequence] | None = None,
          val_sequences: Sequence[LiftingSequence] | None = None) -> dict:
    """Run (or resume) a training. Returns {"epochs": completed epochs, "global_step", "history": the log.csv
    rows as dicts (plus each epoch's "steps"), "step_losses": this run's per-step losses, "best_val_mpjpe" (mm),
    "out", "model": the trained UGCN (unwrapped)}.

    `train_sequences` / `val_sequences` replace the data that `config.data` would load (the config's data
    flags are then ignored for that split). Under torchrun every process calls this; rank 0 writes the files, and
    the process group stays up for further calls (`main` takes it down)."""
    config = check_config(config)
    return _train(config, setup_processes(config), train_sequences, val_sequences)


@dataclass
class RunState:
    """What a run has done so far; a checkpoint carries it from one process lifetime to the next."""
    epoch: int = 0  # completed epochs
    global_step: int = 0
    history: list = field(default_factory=list)  # one dict per epoch: the log.csv row plus "steps"
    best_val_mpjpe: float = math.inf


def _set_threads(config: TrainConfig, processes: Processes) -> None:
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    elif processes.world_size > 1 and processes.device.type == "cpu":
        # processes on one machine would otherwise each start one thread per core
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", processes.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))


def _restore(checkpoint: dict, model, optimizer, scheduler, config: TrainConfig, processes: Processes,
             note) -> RunState:
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    extra = checkpoint["extra"]
    states = extra.get("rng")
    if states is not None and len(states) == processes.world_size:
        set_rng_state(states[processes.rank])
    else:
        note(f"note: the checkpoint holds no RNG state for {processes.world_size} process(es); reseeding from "
             "--seed and the epoch")
        seed_everything(epoch_seed(config.seed + processes.rank, checkpoint["epoch"]))
    return RunState(checkpoint["epoch"], extra.get("global_step", 0), list(extra.get("history", [])),
                    extra.get("best_val_mpjpe", math.inf))


def train_step(model: nn.Module, criterion: UGCNLoss, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
               targets: torch.Tensor) -> torch.Tensor:
    """One optimiser step on L = L_p + lambda * L_m (UGCNLoss, computed from its parts so that both can be
    logged); returns the detached (loss, position loss, motion loss)."""
    prediction = model(inputs)
    position = position_loss(prediction, targets, criterion.position, criterion.motion.reduction)
    if criterion.lambda_motion != 0:
        motion = criterion.motion(prediction, targets)
        loss = position + criterion.lambda_motion * motion
    else:
        loss = position
        with torch.no_grad():
            motion = criterion.motion(prediction.detach(), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return torch.stack([loss.detach(), position.detach(), motion.detach()])


def _train_epoch(model, loader, optimizer, criterion, config: TrainConfig, processes: Processes, epoch: int,
                 steps: int, progress: ProgressBar, step_losses: list[float]) -> list[float]:
    """Runs `steps` steps; returns the epoch's mean (loss, position loss, motion loss) over all processes."""
    started = time.perf_counter()
    sums = torch.zeros(3, dtype=torch.float64)
    model.train()
    for step, (inputs, targets) in enumerate(loader):
        if step >= steps:
            break
        values = train_step(model, criterion, optimizer, inputs.to(processes.device, non_blocking=True),
                            targets.to(processes.device, non_blocking=True)).double().cpu()
        if processes.distributed:
            # every process sees the same mean, so they agree on stopping when it is not finite
            dist.all_reduce(values)
            values /= processes.world_size
        loss = float(values[0])
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss} at epoch {epoch + 1}, step {step + 1}; lower --lr "
                                     f"or check the data ({Path(config.out) / 'last.pt'} holds the last "
                                     "completed epoch)")
        sums += values
        step_losses.append(loss)
        rate = (step + 1) * config.batch_size / max(time.perf_counter() - started, 1e-9)
        progress.update(f"epoch {epoch + 1}/{config.epochs} step {step + 1}/{steps} loss {loss:.5f} "
                        f"{rate:.1f} samples/s", force=step + 1 == steps)
    return (sums / steps).tolist()


def _validate(model: nn.Module, val_sequences, config: TrainConfig, processes: Processes) -> dict:
    if processes.distributed:
        # BatchNorm running statistics drift apart between processes; evaluate rank 0's (the saved ones)
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)
    return evaluate(model, val_sequences, window=config.window, step=config.eval_step, flip=config.flip,
                    processes=processes)


def _save_epoch(out: Path, state: RunState, model, model_config: dict, optimizer, scheduler, config: TrainConfig,
                processes: Processes, val: dict | None, improved: bool) -> None:
    """last.pt (+ best.pt), log.csv and the curves, from rank 0; every process's RNG state goes into last.pt."""
    states = [rng_state()]
    if processes.distributed and processes.world_size > 1:
        states = [None] * processes.world_size
        dist.all_gather_object(states, rng_state())
    if not processes.is_main:
        return
    extra = {"config": asdict(config), "global_step": state.global_step, "history": state.history,
             "best_val_mpjpe": state.best_val_mpjpe, "rng": states, "world_size": processes.world_size}
    # best.pt before last.pt: a run stopped between the two writes then repeats this epoch (last.pt still holds
    # the previous one) and writes best.pt again, where the other order would leave last.pt recording an
    # improvement that best.pt never received
    if improved:
        save_checkpoint(out / "best.pt", model=model, model_config=model_config, epoch=state.epoch,
                        extra={**extra, "val": val})
    save_checkpoint(out / "last.pt", model=model, model_config=model_config, epoch=state.epoch,
                    optimizer=optimizer, scheduler=scheduler, extra=extra)
    write_log_csv(out / "log.csv", state.history)
    try:
        write_curves(out, state.history)
    except Exception as error:  # a plotting failure must not end a long run; log.csv has the numbers
        warnings.warn(f"could not write the curves: {type(error).__name__}: {error}")


def _epoch_line(row: Mapping, epochs: int) -> str:
    line = (f"epoch {row['epoch']}/{epochs} lr {row['lr']:.3g} loss {row['loss']:.5f} (position "
            f"{row['position_loss']:.5f}, motion {row['motion_loss']:.5f}) {row['samples_per_s']:.1f} samples/s "
            f"{row['seconds']:.1f} s")
    if row["val_mpjpe_mm"] is not None:
        line += f" | val MPJPE {row['val_mpjpe_mm']:.1f} mm, MPJVE {row['val_mpjve_mm']:.2f} mm"
    return line


def _train(config: TrainConfig, processes: Processes, train_sequences, val_sequences) -> dict:
    local_batch = check_batch_split(config.batch_size, processes.world_size)
    progress = ProgressBar(enabled=processes.is_main)
    _set_threads(config, processes)
    out = Path(config.out)
    model_config = model_config_of(config)
    checkpoint = _resume_state(config, out / "last.pt", model_config, progress.note)
    validating = config.eval_every > 0
    train_sequences, val_sequences = _load_data(config, train_sequences, val_sequences, validating)
    dataset = WindowDataset([s.pair for s in train_sequences], window=config.window, flip=config.flip,
                            seed=config.seed, left=LAYOUTS[config.layout]["left"],
                            right=LAYOUTS[config.layout]["right"])

    seed_everything(config.seed)
    model = model_from_config(model_config, fused=config.fused).to(processes.device)
    optimizer = torch.optim.Adam(weight_decay_groups(model, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), gamma=config.gamma)
    # dropout masks differ between processes; the initial weights do not (DDP broadcasts rank 0's anyway)
    torch.manual_seed(config.seed + processes.rank)
    criterion = UGCNLoss(lambda_motion=config.lambda_motion, position=config.position,
                         intervals=config.intervals, operator=config.operator, normalize=config.normalize)
    state = RunState()
    if checkpoint is not None:
        state = _restore(checkpoint, model, optimizer, scheduler, config, processes, progress.note)
        del checkpoint
    train_model = model
    if processes.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[processes.device.index] if processes.device.type == "cuda" else None)
    # one loader for the whole run (its workers persist); set_epoch picks each epoch's tiling and shuffle
    loader = make_loader(dataset, local_batch, shuffle=True,
                         num_workers=config.workers, seed=config.seed, drop_last=True,
                         distributed=processes.distributed)

    if processes.is_main:
        out.mkdir(parents=True, exist_ok=True)
        progress.note(f"UGCN {sum(p.numel() for p in model.parameters()):,} parameters on {processes.device} x "
                      f"{processes.world_size} process(es); {len(train_sequences)} training sequences, "
                      f"{len(dataset)} windows" + (f", {len(val_sequences)} validation sequences" if validating else "")
                      + (f"; resuming after epoch {state.epoch}" if state.epoch else ""))
    step_losses: list[float] = []
    for epoch in range(state.epoch, config.epochs):
        started = time.perf_counter()
        loader.set_epoch(epoch)
        steps = len(loader) if config.steps_per_epoch is None else min(len(loader), config.steps_per_epoch)
        if steps == 0:
            raise ValueError(f"the training set has {len(dataset)} windows, fewer than --batch-size "
                             f"{config.batch_size} (whole batches only); lower --batch-size or add data")
        lr = optimizer.param_groups[0]["lr"]
        means = _train_epoch(train_model, loader, optimizer, criterion, config, processes, epoch, steps, progress,
                             step_losses)
        train_seconds = time.perf_counter() - started
        scheduler.step()
        val = None
        if validating and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs):
            val = _validate(model, val_sequences, config, processes)
        improved = val is not None and val["mpjpe"] < state.best_val_mpjpe
        state.epoch, state.global_step = epoch + 1, state.global_step + steps
        state.best_val_mpjpe = val["mpjpe"] if improved else state.best_val_mpjpe
        state.history.append({
            "epoch": epoch + 1, "lr": lr, "loss": means[0], "position_loss": means[1], "motion_loss": means[2],
            "val_mpjpe_mm": val["mpjpe"] if val else None, "val_mpjve_mm": val["mpjve"] if val else None,
            "samples_per_s": steps * config.batch_size / train_seconds, "seconds": time.perf_counter() - started,
            "steps": steps})
        _save_epoch(out, state, model, model_config, optimizer, scheduler, config, processes, val, improved)
        progress.close_line(_epoch_line(state.history[-1], config.epochs))
        processes.barrier()  # no process runs ahead of a checkpoint that might still fail to be written

    return {"epochs": state.epoch, "global_step": state.global_step, "history": state.history,
            "step_losses": step_losses, "best_val_mpjpe": state.best_val_mpjpe, "out": str(out), "model": model}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2: bad flags or data, 1: the loss diverged,
    130: interrupted)."""
    out = "OUT"
    group_was_up = dist.is_available() and dist.is_initialized()
    keep_freed_memory()  # ~20 % of a CPU training step was page faults (ugcn_fast/cpu_memory.py)
    try:
        config = parse_args(argv)
        out = config.out
        train(config)
    except SystemExit as exit_:  # argparse: --help, or a malformed flag (its message is already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: {Path(out) / 'last.pt'} holds the last completed epoch; rerun with --resume to "
              "continue", file=sys.stderr)
        return 130
    finally:
        if not group_was_up and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
