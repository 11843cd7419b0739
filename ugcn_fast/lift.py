"""Lift the 2D keypoints of a video to 3D poses with a trained UGCN.

    python -m ugcn_fast.lift keypoints.npz --checkpoint best.pt --out poses.npz
    python -m ugcn_fast.lift detections.npz --checkpoint best.pt --out poses.npz --layout coco --render poses.gif

KEYPOINTS.npz holds `keypoints` (T, 17, 2) in pixels, optionally `scores` (T, 17) (detector confidences) and the
image size `width`, `height` (or give --width / --height). `--layout coco` converts COCO-17 keypoints (Detectron2,
HRNet, MMPose order) to the 17 Human3.6M joints with `ugcn_fast.data.coco_to_h36m` (approximations: hip =
mid-hips, thorax = mid-shoulders, spine = midway, neck/nose = nose, head = mid-eyes). Missing (NaN) keypoints and
keypoints whose score is below --score-threshold are filled by temporal interpolation. OUT.npz gets `poses_3d`
(T, 17, 3): metres, camera frame (x right, y down, z forward), relative to the hip; `inputs_2d` (T, 17, 2): the
normalised screen coordinates the network saw; `keypoints_2d` (T, 17, 2): the filled Human3.6M-order pixels.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import zipfile
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ._checks import is_real
from ._cli import show_defaults
from ._files import check_output_file, write_atomically
from .cpu_memory import keep_freed_memory
from .data import coco_to_h36m, fill_missing, normalize_screen
from .graph import H36M_PARENTS
from .inference import (add_inference_arguments, check_inference_arguments, predict_sequence, resolve_device,
                        trained_inference_arguments)

LAYOUTS = ("h36m", "coco")
NUM_JOINTS = 17
RENDER_PNG_FRAMES = 6


def _check_size(name: str, value) -> float:
    if value is None:
        raise ValueError(f"{name} is missing: the image size in pixels (width and height) is needed to normalise "
                         "the keypoints; store `width` and `height` in the keypoints file or pass --width/--height")
    if not is_real(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of pixels, got {value!r}")
    return float(value)


def check_keypoints(keypoints, scores=None) -> tuple[np.ndarray, np.ndarray | None]:
    """(keypoints (T, 17, 2) float64, scores (T, 17) float64 or None), or a ValueError/TypeError that says what
    was expected."""
    array = np.asarray(keypoints)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"keypoints must be numbers (pixels), got dtype {array.dtype}")
    if array.ndim != 3:
        raise ValueError(f"keypoints must have shape (T, {NUM_JOINTS}, 2): frames, joints, (x, y) pixels; got shape "
                         f"{array.shape}")
    T, J, D = array.shape
    if J != NUM_JOINTS:
        raise ValueError(f"keypoints have {J} joints per frame; expected {NUM_JOINTS} (Human3.6M order, or COCO-17 "
                         f"with --layout coco); shape (T, {NUM_JOINTS}, 2), got {array.shape}")
    if D != 2:
        hint = " (if the third column is a confidence, store it as `scores` (T, 17))" if D == 3 else ""
        raise ValueError(f"keypoints must have a last dimension of 2 (x, y pixels), got {D}{hint}")
    if T == 0:
        raise ValueError(f"keypoints hold no frame (shape {array.shape}); expected T >= 1 frames")
    array = array.astype(np.float64)
    if not np.isfinite(array).any():
        raise ValueError("keypoints are all NaN / missing: there is nothing to lift")
    if scores is not None:
        scores = np.asarray(scores)
        if not (np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)):
            raise TypeError(f"scores must be numbers (confidences), got dtype {scores.dtype}")
        if scores.shape != (T, J):
            raise ValueError(f"scores must have shape (T, {NUM_JOINTS}) = {(T, J)}, one confidence per keypoint; "
                             f"got {scores.shape}")
        scores = scores.astype(np.float64)
    return array, scores


def prepare_keypoints(keypoints, width: float, height: float, layout: str = "h36m", scores=None,
                      score_threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """(filled Human3.6M-order pixels (T, 17, 2), normalised screen coordinates (T, 17, 2) float32): converts
    COCO-17 when `layout` is "coco", fills NaN and low-confidence keypoints, applies VideoPose3D's normalisation
    `X / w * 2 - [1, h / w]`."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    keypoints, scores = check_keypoints(keypoints, scores)
    width, height = _check_size("width", width), _check_size("height", height)
    if not is_real(score_threshold) or not math.isfinite(score_threshold):
        raise ValueError(f"score_threshold must be a number, got {score_threshold!r}")
    if layout == "coco":
        keypoints, scores = coco_to_h36m(keypoints, scores)
    pixels = fill_missing(keypoints, scores, threshold=score_threshold)
    return pixels, normalize_screen(pixels, width, height).astype(np.float32)


def lift(keypoints, model: nn.Module, width: float, height: float, layout: str = "h36m", scores=None, *,
         score_threshold: float = 0.3, window: int = 96, step: int = 5, flip: bool = True,
         batch_size: int = 64) -> np.ndarray:
    """(T, 17, 2) pixel keypoints of a video (any T >= 1) -> (T, 17, 3) float32 3D poses: metres, camera frame,
    relative to the hip (joint 0 is exactly 0). See `prepare_keypoints` for `layout`, `scores` and
    `score_threshold`; the whole sequence is predicted with sliding windows (`window`, `step`) and flip test-time
    augmentation (`flip`)."""
    num_joints = getattr(model, "num_joints", NUM_JOINTS)
    if num_joints != NUM_JOINTS:
        raise ValueError(f"the model takes {num_joints} joints; lifting needs a {NUM_JOINTS}-joint Human3.6M model")
    model_layout = getattr(model, "layout", None)
    if model_layout not in (None, "h36m"):
        raise ValueError(f"the model is built on the {model_layout!r} graph, but lifting gives it joints in "
                         "Human3.6M order (COCO keypoints are converted); it needs an 'h36m' model")
    _, inputs = prepare_keypoints(keypoints, width, height, layout, scores, score_threshold)
    poses = predict_sequence(model, inputs, window=window, step=step, flip=flip, batch_size=batch_size)
    poses = poses.detach().to("cpu", torch.float32).numpy()
    # a trained model predicts the hip near the origin; subtracting it makes the promise exact
    return poses - poses[:, :1]


def read_keypoints_file(path: str | os.PathLike, width: float | None = None, height: float | None = None) -> dict:
    """{"keypoints", "scores" (or None), "width", "height" (or None)} from a keypoints .npz; a `width` / `height`
    given here overrides (and skips reading) the file's."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"keypoints file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array (a .npy file); save the keypoints with "
                             "np.savez(path, keypoints=..., width=..., height=...)")
        with data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, AttributeError) as err:
        raise ValueError(f"{path} is not a readable .npz file: {err}") from err
    if "keypoints" not in arrays:
        raise ValueError(f"{path} has no 'keypoints' array (found {sorted(arrays) or 'nothing'}); expected "
                         "keypoints (T, 17, 2) in pixels, optional scores (T, 17), width and height")
    out = {"keypoints": arrays["keypoints"], "scores": arrays.get("scores")}
    for name, given in (("width", width), ("height", height)):
        value = given if given is not None else arrays.get(name)
        if given is None and value is not None:
            if value.size != 1 or not np.issubdtype(value.dtype, np.number):
                raise ValueError(f"{path}: {name} must be one number (pixels), got {value!r}")
            value = value.item()
        out[name] = value
    return out


def _save_npz(path: str, **arrays) -> None:
    """np.savez to exactly `path` (no ".npz" appended), atomically."""
    write_atomically(path, lambda f: np.savez(f, **arrays))


def render(path: str, poses: np.ndarray, size: int = 256, fps: float = 25, stride: int = 1) -> None:
    """Draws lifted poses: a PNG of a few frames side by side, or a GIF of every `stride`-th frame."""
    from . import viz

    if path.lower().endswith(".png"):
        frames = sorted(set(np.linspace(0, len(poses) - 1, min(RENDER_PNG_FRAMES, len(poses))).round().astype(int)))
        images = viz.render_skeleton(poses[frames], H36M_PARENTS, size=size, labels=[f"frame {t}" for t in frames])
        viz.write_png(path, viz.tile_frames(images))
    else:
        frames = list(range(0, len(poses), stride))
        images = viz.render_skeleton(poses[frames], H36M_PARENTS, size=size, labels=[str(t) for t in frames])
        viz.write_gif(path, images, fps=fps / stride)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ugcn_fast.lift", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("keypoints", help="KEYPOINTS.npz: keypoints (T, 17, 2) pixels [, scores, width, height]")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by ugcn_fast.train")
    parser.add_argument("--out", required=True, help="OUT.npz for poses_3d, inputs_2d, keypoints_2d")
    parser.add_argument("--layout", choices=LAYOUTS, default="h36m",
                        help="joint order of the keypoints: Human3.6M (default) or COCO-17")
    parser.add_argument("--width", type=float, default=None, help="image width in pixels (overrides the file)")
    parser.add_argument("--height", type=float, default=None, help="image height in pixels (overrides the file)")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="keypoints with a lower score are filled by interpolation (default 0.3)")
    parser.add_argument("--render", default=None, metavar="OUT.png|OUT.gif",
                        help="draw the 3D skeleton: a PNG of a few frames or a GIF of the sequence")
    parser.add_argument("--render-size", type=int, default=256, help="pixels per rendered frame (default 256)")
    parser.add_argument("--render-stride", type=int, default=1, help="GIF: draw every N-th frame (default 1)")
    parser.add_argument("--fps", type=float, default=None, help="GIF frame rate (default: the file's fps, else 25)")
    add_inference_arguments(parser)
    return show_defaults(parser)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (bad input exits with status 2 and a message)."""
    from .checkpoint import load_model, training_config

    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()  # the command owns its process (ugcn_fast/cpu_memory.py)
    if args.render is not None and not args.render.lower().endswith((".png", ".gif")):
        parser.error(f"--render must name a .png or .gif file, got {args.render}")
    if args.render_stride < 1:
        parser.error(f"--render-stride must be >= 1, got {args.render_stride}")
    if args.render_size < 16:
        parser.error(f"--render-size must be >= 16 pixels, got {args.render_size}")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        parser.error(f"--fps must be a positive number, got {args.fps}")
    try:  # before anything is read or computed: a bad flag is reported as such, not as a bad file
        check_inference_arguments(args.window, args.step, ugcn=True)
        check_output_file("--out", args.out)
        if args.render is not None:
            check_output_file("--render", args.render)
        device = resolve_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    try:
        data = read_keypoints_file(args.keypoints, args.width, args.height)
        width, height = data["width"], data["height"]
        pixels, inputs = prepare_keypoints(data["keypoints"], width, height, args.layout, data["scores"],
                                           args.score_threshold)
        fps = args.fps if args.fps is not None else _file_fps(args.keypoints)
        if args.render is not None and args.render.lower().endswith(".gif"):  # checked before anything is written
            from .viz import check_gif_fps
            check_gif_fps(fps / args.render_stride, "--fps / --render-stride" if args.fps is not None
                          else f"the frame rate of {args.keypoints} / --render-stride")
        model, checkpoint = load_model(args.checkpoint, map_location=device, fused=args.fused)
        args.window, args.step = trained_inference_arguments(args.window, args.step, training_config(checkpoint))
        model.check_length(args.window)
        poses = lift(pixels, model, width, height, "h36m", window=args.window, step=args.step, flip=args.flip,
                     batch_size=args.batch_size)
        _save_npz(args.out, poses_3d=poses, inputs_2d=inputs, keypoints_2d=pixels.astype(np.float32),
                  width=np.float64(width), height=np.float64(height), layout=np.str_(args.layout),
                  parents=np.array(H36M_PARENTS))
        if args.render:
            render(args.render, poses, size=args.render_size, fps=fps, stride=args.render_stride)
    except (FileNotFoundError, ValueError, TypeError, NotImplementedError) as error:
        parser.error(str(error))
    print(f"lifted {len(poses)} frames -> {args.out} (poses_3d {poses.shape}, metres, camera frame, root-relative)"
          + (f"; drawn to {args.render}" if args.render else ""))
    return 0


def _file_fps(path: str) -> float:
    with np.load(path, allow_pickle=False) as data:
        if "fps" in data.files and data["fps"].size == 1:
            fps = float(data["fps"].item())
            if math.isfinite(fps) and fps > 0:
                return fps
    return 25.0


if __name__ == "__main__":
    sys.exit(main())
