"""A tiny UGCN checkpoint for the command-line tests (evaluate, lift, their argument checks)."""
import torch

from ugcn_fast.checkpoint import make_model_config, model_from_config, save_checkpoint


def tiny_checkpoint_file(directory, epoch: int = 1, layout: str = "h36m"):
    """Writes a checkpoint of a 4-channel UGCN (seed 0) on `layout`'s graph to directory / "tiny.pt" and returns
    its path."""
    torch.manual_seed(0)
    config = make_model_config(channels=(4, 4, 4, 4, 4), layout=layout)
    path = directory / "tiny.pt"
    save_checkpoint(path, model=model_from_config(config), model_config=config, epoch=epoch)
    return path
