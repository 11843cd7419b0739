"""Whole-sequence inference (SPEC §4): sliding windows with a step, every frame's prediction averaged over the
windows that cover it, and horizontal-flip test-time augmentation."""
from __future__ import annotations

import argparse
import threading
from contextlib import contextmanager
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ._checks import is_int
from .data.windows import edge_pad, flip_order, flip_pose, window_starts
from .fused_stgcn_block import frozen
from .graph import H36M_LEFT, H36M_RIGHT
from .model import UGCN


# The commands' sliding windows when neither the flags nor the checkpoint say (SPEC §4: 96 frames, step 5).
DEFAULT_WINDOW, DEFAULT_STEP = 96, 5


@torch.no_grad()
def predict_sequence(model: nn.Module, inputs: Tensor | np.ndarray, window: int = 96, step: int = 5,
                     flip: bool = True, batch_size: int = 64, left: Sequence[int] | None = None,
                     right: Sequence[int] | None = None) -> Tensor:
    """(T, J, C_in) inputs of any length T >= 1 -> (T, J, C_out) predictions.

    Windows of `window` frames every `step` frames (the last one flush with the end) run in batches of
    `batch_size`; each frame's prediction is the mean over the windows that cover it. A sequence shorter than a
    window is edge-padded to one window and cropped back. With `flip`, the flipped input is predicted too and its
    flipped-back prediction averaged in. The model runs in eval mode, its fused blocks frozen
    (ugcn_fast.frozen: BatchNorm folded into the weights once for all the windows); both are restored afterwards,
    the train/eval flag of every submodule as it was (a model in train mode may hold submodules in eval mode).
    `step` must not exceed `window` (frames between two windows would be covered by none). `left` / `right` are
    the joints the flip swaps: by default the model's (`UGCN.flip_joints`, from its graph's layout), or
    Human3.6M's for a model without that attribute; a UGCN on a custom graph (flip_joints None) needs them given,
    or flip=False.
    """
    _check_positive_ints(("batch_size", batch_size))
    check_inference_arguments(window, step, prefix="")
    x = torch.as_tensor(inputs)
    if x.dim() != 3:
        raise ValueError(f"inputs must have shape (T, J, C), got {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError("inputs must hold at least one frame")
    if not torch.isfinite(x).all():
        raise ValueError("inputs hold NaN or Inf: fill missing keypoints (e.g. by temporal interpolation) first")
    ugcn = getattr(model, "module", model)  # (under DistributedDataParallel)
    if isinstance(ugcn, UGCN) and tuple(x.shape[1:]) != (ugcn.num_joints, ugcn.in_channels):
        raise ValueError(f"inputs have {x.shape[1]} joints of {x.shape[2]} channels, but the model takes "
                         f"{ugcn.num_joints} joints of {ugcn.in_channels} channels (inputs (T, J, C))")
    if flip:
        left, right = _flip_joints(model, left, right)
        left, right = _check_flip_joints(x.shape[1], left, right)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else x.device
    dtype = parameter.dtype if parameter is not None else torch.float32
    x = x.to(device=device, dtype=dtype)
    T = x.shape[0]
    x, before = edge_pad(x, window)  # a short sequence is padded to one window, then cropped back
    starts = window_starts(x.shape[0], window, step)
    with evaluating(model):  # eval mode, blocks frozen: no weight changes during the call, each block folds once
        total, count = None, torch.zeros(x.shape[0], device=device, dtype=dtype)
        for variant in ((False, True) if flip else (False,)):
            source = flip_pose(x, left, right) if variant else x
            for b in range(0, len(starts), batch_size):
                chunk = starts[b:b + batch_size]
                out = model(torch.stack([source[s:s + window] for s in chunk]))
                if variant:
                    out = flip_pose(out, left, right)
                if total is None:
                    total = torch.zeros((x.shape[0],) + tuple(out.shape[2:]), device=device, dtype=out.dtype)
                for s, o in zip(chunk, out):
                    total[s:s + window] += o
                    count[s:s + window] += 1
    prediction = total / count.view(-1, *([1] * (total.dim() - 1)))
    return prediction[before:before + T]


# Calls of evaluating() may overlap (predict_sequence from several threads, on one model or on a wrapper of it):
# every module counts the calls that hold it in eval mode; the first saves its train/eval flag, the last puts it
# back. Each call saving and restoring its own flags had a call that began while another ran save "eval", and the
# first to end put train mode back under the other's remaining windows (batch statistics, running-statistic
# updates, dropout). A re-entrant lock: a call's cleanup may run on a thread that holds it (a generator closed by
# the garbage collector while model.eval() runs user code).
_SESSIONS_LOCK = threading.RLock()
_holds: dict[int, list] = {}  # id(module) -> [calls holding it, module, its flag before the first]


def _hold_in_eval(model: nn.Module) -> list[nn.Module]:
    modules = list(model.modules())
    with _SESSIONS_LOCK:
        fresh = [(module, module.training) for module in modules if id(module) not in _holds]
        try:
            model.eval()
        except BaseException:
            for module, training in fresh:
                module.training = training
            raise
        for module, training in fresh:
            _holds[id(module)] = [0, module, training]
        for module in modules:
            _holds[id(module)][0] += 1
    return modules


def _release(modules: list[nn.Module]) -> None:
    with _SESSIONS_LOCK:
        for module in modules:
            hold = _holds[id(module)]
            hold[0] -= 1
            if not hold[0]:
                del _holds[id(module)]
                module.training = hold[2]


@contextmanager
def evaluating(model: nn.Module):
    """`model` in eval mode with its fused blocks frozen (ugcn_fast.frozen) for the duration; afterwards every
    submodule's train/eval flag as it was (model.train(flag) would force one flag on all; a model in train mode
    may hold submodules in eval mode). Calls may overlap, on one model or on wrappers of it (also from several
    threads): a module gets its flag back when the last call holding it ends."""
    modules = _hold_in_eval(model)
    try:
        with frozen(model):
            yield model
    finally:
        _release(modules)


def _flip_joints(model: nn.Module, left: Sequence[int] | None, right: Sequence[int] | None):
    if (left is None) != (right is None):
        raise ValueError("flip: give both left and right, or neither (the model's own mirrored joints)")
    if left is not None:
        return left, right
    model = getattr(model, "module", model)  # under DistributedDataParallel
    if not hasattr(model, "flip_joints"):  # a model that does not say: Human3.6M's, the package's data order
        return H36M_LEFT, H36M_RIGHT
    if model.flip_joints is None:
        raise ValueError("flip: the model's graph has no known layout, so its mirrored joints are unknown; pass "
                         "left= and right= (its mirrored joint pairs) or flip=False")
    return model.flip_joints


def _check_flip_joints(num_joints: int, left: Sequence[int], right: Sequence[int]) -> tuple[list[int], list[int]]:
    """Flip test-time augmentation swaps the `left` and `right` joints; the Human3.6M defaults index up to joint
    16, so a model of another skeleton would otherwise fail with a bare IndexError deep in flip_pose. The swap must
    be its own inverse (the flipped-back prediction is averaged in). -> the lists as ints (sequences, numpy arrays
    or tensors of ints are accepted)."""
    lists = []
    for name, joints in (("left", left), ("right", right)):
        joints = joints.tolist() if isinstance(joints, (torch.Tensor, np.ndarray)) else list(joints)
        bad = [j for j in joints if not is_int(j) or not 0 <= j < num_joints]
        if bad:
            raise ValueError(f"flip: {name} joint indices {bad} are out of range for {num_joints} joints (the "
                             "defaults are Human3.6M's 17); for another skeleton pass left= and right= (its mirrored "
                             "joint pairs) or flip=False")
        lists.append([int(j) for j in joints])
    left, right = lists
    if len(left) != len(right):
        raise ValueError(f"flip: left and right must list the same number of joints, got {len(left)} and "
                         f"{len(right)}")
    order = flip_order(num_joints, left, right)
    if any(order[order[j]] != j for j in range(num_joints)):
        raise ValueError(f"flip: left {left} and right {right} do not pair each joint with one mirror joint (a "
                         "joint is listed in two pairs), so flipping twice would not give the input back")
    return left, right


def check_inference_arguments(window: int | None, step: int | None, prefix: str = "--", ugcn: bool = False) -> None:
    """The sliding windows' sizes (SPEC §4: step <= window, else frames between two windows are predicted by none;
    with `ugcn`, a window UGCN takes: a multiple of 16); the commands check their flags (prefix "--") before they
    load anything, where None (not given) passes."""
    _check_positive_ints(*[(prefix + name, value) for name, value in (("window", window), ("step", step))
                           if value is not None])
    if window is not None and step is not None and step > window:
        raise ValueError(f"{prefix}step must be <= {prefix}window, got {prefix}step = {step} > {prefix}window = "
                         f"{window}: the frames between two windows would be predicted by none")
    if ugcn and window is not None and (window < 16 or window % 16):
        raise ValueError(f"{prefix}window must be a multiple of 16 (UGCN's four stride-2 stages), got {window}")


def trained_inference_arguments(window: int | None, step: int | None, trained: Mapping) -> tuple[int, int]:
    """The commands' --window and --step: where not given, those the training run validated with (`trained`: its
    settings, ugcn_fast.checkpoint.training_config; train's --window and --eval-step, so that `evaluate`
    reproduces the run's validation by default), else 96 and 5."""
    window = window if window is not None else trained.get("window", DEFAULT_WINDOW)
    step = step if step is not None else trained.get("eval_step", DEFAULT_STEP)
    check_inference_arguments(window, step)
    return window, step


def _check_positive_ints(*named_values) -> None:
    for name, value in named_values:
        if not is_int(value) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def resolve_device(name: str | None) -> torch.device:
    """The --device of `evaluate` / `lift` (default: cuda when available), checked before the checkpoint is
    loaded onto it: otherwise torch.load's failure reads as a corrupt checkpoint."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"--device: unknown device {name!r} (expected cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device: device {name!r} is not available (CUDA is not available on this machine)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device: device {name!r} is not available (this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s))")
    elif device.type != "cpu":
        try:
            torch.empty(0, device=device)
        except (RuntimeError, ValueError, TypeError, AssertionError) as err:
            raise ValueError(f"--device: device {name!r} is not available: {err}") from None
    return device


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of predict_sequence and of the model it runs, shared by `evaluate` and `lift`."""
    parser.add_argument("--window", type=int, default=None,
                        help=f"sliding-window length, a multiple of 16 (default: the checkpoint's training window, "
                             f"else {DEFAULT_WINDOW})")
    parser.add_argument("--step", type=int, default=None,
                        help=f"sliding-window step (default: the checkpoint's --eval-step, else {DEFAULT_STEP})")
    parser.add_argument("--no-flip", dest="flip", action="store_false", help="no flip test-time augmentation")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--fused", action=argparse.BooleanOptionalAction, default=None,
                        help="fused ST-GCN blocks (default: UGCN's default)")
