"""Training checkpoints: one self-describing file holding a UGCN's configuration, weights and training state.

A checkpoint is a dict saved with `torch.save`:

    "format":       FORMAT ("ugcn_fast/1")
    "model_config": num_joints, in_channels, out_channels, channels (list), layout, kernel_size, dropout
    "model":        the model's state dict (never with DistributedDataParallel's "module." prefix)
    "optimizer", "scheduler": their state dicts, or None
    "epoch":        the number of completed epochs
    "extra":        anything else the trainer keeps (arguments, best metrics, RNG states, history)

It is read back with `torch.load(weights_only=True)`, so `extra` must hold plain data (numbers, strings, lists,
tuples, dicts, tensors); loading never runs code from the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ._checks import is_int
from ._files import write_atomically
from .graph import LAYOUTS, Graph
from .model import UGCN

FORMAT = "ugcn_fast/1"
MODEL_CONFIG_KEYS = ("num_joints", "in_channels", "out_channels", "channels", "layout", "kernel_size", "dropout")
CHECKPOINT_KEYS = ("format", "model_config", "model", "optimizer", "scheduler", "epoch", "extra")


def make_model_config(num_joints: int = 17, in_channels: int = 2, out_channels: int = 3,
                      channels=(16, 32, 64, 128, 256), layout: str = "h36m", kernel_size: int = 5,
                      dropout: float = 0.5) -> dict:
    """A model_config dict with UGCN's defaults for every field not given (channels stored as a list)."""
    return {"num_joints": num_joints, "in_channels": in_channels, "out_channels": out_channels,
            "channels": list(channels), "layout": layout, "kernel_size": kernel_size, "dropout": float(dropout)}


def _check_model_config(config: Any, source: str = "model_config") -> dict:
    if not isinstance(config, Mapping):
        raise ValueError(f"{source} must be a dict, got {type(config).__name__}")
    missing = [key for key in MODEL_CONFIG_KEYS if key not in config]
    unknown = [key for key in config if key not in MODEL_CONFIG_KEYS]
    if missing or unknown:
        raise ValueError(f"{source}: missing keys {missing}, unknown keys {unknown}; expected exactly "
                         f"{list(MODEL_CONFIG_KEYS)}")
    if not isinstance(config["layout"], str) or config["layout"] not in LAYOUTS:
        raise ValueError(f"{source}: layout must be one of {tuple(LAYOUTS)}, got {config['layout']!r}")
    if isinstance(config["channels"], (str, bytes)) or not hasattr(config["channels"], "__iter__"):
        raise ValueError(f"{source}: channels must be a list of 5 ints, got {config['channels']!r}")
    return dict(config)


def model_from_config(config: Mapping, fused: bool | None = None) -> UGCN:
    """A freshly initialised UGCN built from a model_config dict. `fused=None` keeps UGCN's default."""
    config = _check_model_config(config)
    kwargs = {} if fused is None else {"fused": fused}
    return UGCN(num_joints=config["num_joints"], in_channels=config["in_channels"],
                out_channels=config["out_channels"], channels=tuple(config["channels"]),
                graph=Graph(layout=config["layout"]), kernel_size=config["kernel_size"],
                dropout=config["dropout"], **kwargs)


def model_config_diff(saved: Mapping, requested: Mapping) -> dict[str, tuple[Any, Any]]:
    """{field: (saved value, requested value)} for every model_config field that differs."""
    def normal(value):
        return list(value) if isinstance(value, (list, tuple)) else value
    return {key: (saved.get(key), requested.get(key)) for key in MODEL_CONFIG_KEYS
            if normal(saved.get(key)) != normal(requested.get(key))}


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _plain_state_dict(model: nn.Module) -> dict:
    state = unwrap_model(model).state_dict()
    # a state dict taken from a wrapper by hand may still carry the prefix; the file never does
    return {(key[len("module."):] if key.startswith("module.") else key): value for key, value in state.items()}


_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str) -> None:
    """`value` holds only what torch.load(weights_only=True) reads back: dicts with str keys, lists, tuples,
    str / int / float / bool / None and tensors (not numpy scalars or arrays, paths or other objects)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a str")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif type(value) not in _PLAIN_SCALARS and not isinstance(value, torch.Tensor):
        raise ValueError(f"{where} is a {type(value).__name__}: a checkpoint holds plain Python data and tensors "
                         "only (torch.load(weights_only=True) reads nothing else back); convert it, e.g. with "
                         "float(), .tolist() or str()")


def _check_config_fits(config: dict, state: dict) -> None:
    """The state dict has the parameters and buffers, of the shapes, that `config`'s UGCN has (built on the meta
    device: no memory, no initialisation)."""
    with torch.device("meta"):
        expected = model_from_config(config, fused=False).state_dict()
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    wanted = {key: tuple(value.shape) for key, value in expected.items()}
    if shapes != wanted:
        differ = sorted(key for key in shapes.keys() | wanted.keys() if shapes.get(key) != wanted.get(key))
        raise ValueError(f"model_config {config} does not describe the model: {len(differ)} entries differ "
                         f"(first: {differ[0]!r}: model {shapes.get(differ[0])}, config {wanted.get(differ[0])})")


def _check_graph_fits(config: dict, model: nn.Module) -> None:
    """The model's blocks aggregate with the adjacency that `config`'s layout builds: the file stores the layout's
    name only (the adjacency is a non-persistent buffer), so a model on another graph (another centre or strategy,
    a custom edge list, an adjacency changed in place) would come back on the layout's default graph."""
    model = unwrap_model(model)
    expected = Graph(layout=config["layout"]).A
    layout = getattr(model, "layout", config["layout"])
    for name, buffer in model.named_buffers():
        if name != "A" and not name.endswith(".A"):
            continue
        if (layout != config["layout"] or tuple(buffer.shape) != tuple(expected.shape)
                or not torch.equal(buffer.detach().cpu(), expected.to(buffer.dtype))):  # (a model cast to half)
            raise ValueError(f"the model's graph ({name}: layout {layout!r}, adjacency {tuple(buffer.shape)}) is not "
                             f"Graph(layout={config['layout']!r}) with its defaults, which is all a checkpoint "
                             "records (model_config's layout); a model on another graph (centre, strategy, custom "
                             "edges) would load back on that one. Save its state_dict with torch.save instead")


def save_checkpoint(path: str | os.PathLike, *, model: nn.Module, model_config: Mapping, epoch: int,
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None,
                    extra: dict | None = None) -> None:
    """Write a checkpoint atomically: a temporary file in the same folder, then `os.replace`, so `path` always
    holds either the previous complete checkpoint or the new one, even if the process dies while writing."""
    config = _check_model_config(model_config)
    if not is_int(epoch) or epoch < 0:
        raise ValueError(f"epoch must be an int >= 0 (completed epochs), got {epoch!r}")
    config = {**config, "channels": list(config["channels"])}
    _check_plain(config, "model_config")
    extra = dict(extra) if extra is not None else {}
    _check_plain(extra, "extra")
    state = _plain_state_dict(model)
    _check_config_fits(config, state)
    _check_graph_fits(config, model)
    checkpoint = {
        "format": FORMAT,
        "model_config": config,
        "model": state,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "extra": extra,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda handle: torch.save(checkpoint, handle), fsync=True)


def training_config(checkpoint: Mapping) -> dict:
    """The settings of the training run that wrote `checkpoint` (ugcn_fast.train's TrainConfig as a dict), or {}
    for a checkpoint written otherwise."""
    extra = checkpoint.get("extra")
    config = extra.get("config") if isinstance(extra, Mapping) else None
    return dict(config) if isinstance(config, Mapping) else {}


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """The checkpoint dict of `path`, checked for the ugcn_fast format. A missing file raises
    FileNotFoundError; a corrupt, truncated or foreign file raises ValueError naming the path."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        device = torch.device(map_location) if isinstance(map_location, (str, torch.device)) else None
    except RuntimeError:
        device = None  # torch.load reports it
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"cannot load checkpoint {path} onto {device}: this machine has no CUDA device; use "
                         "map_location='cpu' (--device cpu)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch.load reports truncation / garbage with many exception types
        raise ValueError(f"checkpoint {path} cannot be read (corrupt, truncated or not a torch file): "
                         f"{type(error).__name__}: {error}") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"checkpoint {path} is not a {FORMAT} checkpoint (format: {found!r})")
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint {path} lacks the keys {missing}")
    try:
        _check_model_config(checkpoint["model_config"], source="model_config")
    except ValueError as error:
        raise ValueError(f"checkpoint {path}: {error}") from None
    if not isinstance(checkpoint["model"], dict):
        raise ValueError(f"checkpoint {path}: 'model' is not a state dict")
    return checkpoint


def load_model(path: str | os.PathLike, map_location="cpu", fused: bool | None = None) -> tuple[UGCN, dict]:
    """(model in eval mode with the checkpoint's weights, the checkpoint dict). `fused=None` keeps UGCN's
    default. A state dict that does not fit its model_config raises ValueError naming the path."""
    checkpoint = load_checkpoint(path, map_location)
    try:
        model = model_from_config(checkpoint["model_config"], fused=fused)
    except (ValueError, TypeError) as error:
        raise ValueError(f"checkpoint {path}: its model_config does not build a UGCN: {error}") from None
    try:
        model.load_state_dict(checkpoint["model"], strict=True)
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path}: the weights do not match its model_config "
                         f"{checkpoint['model_config']}: {error}") from None
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model.eval(), checkpoint
