"""Checkpoint format (contract 2): round trip, atomic writes, clear errors for bad files."""
import os

import pytest
import torch

from ugcn_fast import UGCN
from ugcn_fast.checkpoint import (FORMAT, load_checkpoint, load_model, make_model_config, model_config_diff,
                                  model_from_config, save_checkpoint)

CONFIG = make_model_config(channels=(4, 4, 4, 4, 4), dropout=0.0)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return model_from_config(CONFIG)


def test_round_trip_restores_weights_and_state(tmp_path):
    model = tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [2, 3], gamma=0.1)
    model(torch.randn(2, 16, 17, 2)).square().mean().backward()
    optimizer.step()
    scheduler.step()
    path = tmp_path / "sub" / "last.pt"  # the folder is created
    save_checkpoint(path, model=model, model_config=CONFIG, epoch=1, optimizer=optimizer, scheduler=scheduler,
                    extra={"note": "x", "rng": torch.get_rng_state()})

    loaded, checkpoint = load_model(path)
    assert not loaded.training
    assert checkpoint["format"] == FORMAT and checkpoint["epoch"] == 1 and checkpoint["extra"]["note"] == "x"
    assert checkpoint["model_config"] == CONFIG
    assert set(checkpoint) == {"format", "model_config", "model", "optimizer", "scheduler", "epoch", "extra"}
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.randn(1, 16, 17, 2)
    assert torch.equal(model.eval()(x), loaded(x))

    fresh = tiny_model(seed=1)
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=1e-2)
    fresh_optimizer.load_state_dict(checkpoint["optimizer"])
    fresh_scheduler = torch.optim.lr_scheduler.MultiStepLR(fresh_optimizer, [9], gamma=0.5)
    fresh_scheduler.load_state_dict(checkpoint["scheduler"])
    assert fresh_scheduler.last_epoch == 1 and sorted(fresh_scheduler.milestones) == [2, 3]
    step_state = fresh_optimizer.state_dict()["state"][0]["step"]
    assert float(step_state) == 1.0


def test_wrapped_model_is_saved_without_prefix(tmp_path):
    model = tiny_model()
    wrapped = torch.nn.DataParallel(model)  # same "module." prefix as DistributedDataParallel
    assert next(iter(wrapped.state_dict())).startswith("module.")
    save_checkpoint(tmp_path / "c.pt", model=wrapped, model_config=CONFIG, epoch=0)
    keys = list(load_checkpoint(tmp_path / "c.pt")["model"])
    assert keys == list(model.state_dict()) and not any(k.startswith("module.") for k in keys)


def test_save_is_atomic_and_leaves_no_temporary(tmp_path, monkeypatch):
    model = tiny_model()
    path = tmp_path / "last.pt"
    save_checkpoint(path, model=model, model_config=CONFIG, epoch=3)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies half-way through writing
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model=model, model_config=CONFIG, epoch=4)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]
    assert load_checkpoint(path)["epoch"] == 3


def test_bad_files_raise_value_error_naming_the_path(tmp_path):
    model = tiny_model()
    good = tmp_path / "good.pt"
    save_checkpoint(good, model=model, model_config=CONFIG, epoch=0)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.pt"
    torch.save(model.state_dict(), foreign)  # a bare state dict: a torch file, but not ours
    for path in (truncated, garbage, foreign):
        with pytest.raises(ValueError, match=path.name):
            load_model(path)

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")

    checkpoint = load_checkpoint(good)
    checkpoint["model_config"] = {**CONFIG, "channels": [8, 8, 8, 8, 8]}  # weights no longer fit the config
    mismatched = tmp_path / "mismatched.pt"
    torch.save(checkpoint, mismatched)
    with pytest.raises(ValueError, match="mismatched.pt.*do not match"):
        load_model(mismatched)

    checkpoint["model_config"] = {k: v for k, v in CONFIG.items() if k != "layout"}
    torch.save(checkpoint, mismatched)
    with pytest.raises(ValueError, match="mismatched.pt.*layout"):
        load_checkpoint(mismatched)


def test_model_from_config_and_diff():
    model = model_from_config(CONFIG)
    assert isinstance(model, UGCN)
    assert model.down[0].gcn.conv.out_channels == 4 * 3  # channels[0] times the 3 spatial subsets
    assert model_config_diff(CONFIG, CONFIG) == {}
    diff = model_config_diff(CONFIG, {**CONFIG, "channels": (8, 8, 8, 8, 8), "dropout": 0.5})
    assert diff == {"channels": ([4, 4, 4, 4, 4], (8, 8, 8, 8, 8)), "dropout": (0.0, 0.5)}
    with pytest.raises(ValueError, match="unknown keys"):
        model_from_config({**CONFIG, "width": 3})
    with pytest.raises(ValueError, match="layout"):
        model_from_config({**CONFIG, "layout": "smpl"})


def test_save_refuses_what_load_could_not_read_back(tmp_path):
    """extra and model_config hold plain data only (torch.load(weights_only=True) refuses numpy scalars, paths, other
    objects), and model_config must describe the model: either mistake is refused when saving, not when loading."""
    import pathlib

    import numpy as np
    path = tmp_path / "c.pt"
    for extra, where in (({"best": np.float64(1.0)}, r"extra\['best'\] is a float64"),
                         ({"runs": [1, np.arange(2)]}, r"extra\['runs'\]\[1\] is a ndarray"),
                         ({"out": pathlib.Path("x")}, r"extra\['out'\] is a PosixPath|WindowsPath"),
                         ({1: "a"}, "key 1 is not a str")):
        with pytest.raises(ValueError, match=where):
            save_checkpoint(path, model=tiny_model(), model_config=CONFIG, epoch=0, extra=extra)
    with pytest.raises(ValueError, match="does not describe the model"):
        save_checkpoint(path, model=tiny_model(), model_config=make_model_config(), epoch=0)
    assert not path.exists()
    save_checkpoint(path, model=tiny_model(), model_config=CONFIG, epoch=0,
                    extra={"a": [1, 2.5, "x", None, True, (3, 4)], "t": torch.ones(2)})
    assert load_checkpoint(path)["extra"]["a"] == [1, 2.5, "x", None, True, (3, 4)]


def test_load_says_what_is_wrong_with_the_place(tmp_path):
    with pytest.raises(ValueError, match="is a folder, not a file"):
        load_checkpoint(tmp_path)
    path = tmp_path / "c.pt"
    save_checkpoint(path, model=tiny_model(), model_config=CONFIG, epoch=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            load_model(path, map_location="cuda")
    broken = torch.load(path, weights_only=True)
    broken["model_config"]["layout"] = ["h36m"]
    torch.save(broken, path)
    with pytest.raises(ValueError, match="layout must be one of"):
        load_checkpoint(path)


@pytest.mark.parametrize("graph, layout", [(dict(layout="ntu", center=3), "ntu"), (dict(layout="coco"), "h36m"),
                                           (dict(layout="h36m", strategy="spatial", center=8), "h36m")],
                         ids=["other-centre", "other-layout", "h36m-other-centre"])
def test_a_model_on_another_graph_than_its_config_says_is_refused(tmp_path, graph, layout):
    """A checkpoint records the layout's name only (the adjacency is not in the state dict): a model on another
    graph used to be saved and came back on the layout's default graph, with other outputs."""
    from ugcn_fast import Graph
    g = Graph(**graph)
    model = UGCN(num_joints=g.num_nodes, channels=(4, 4, 4, 4, 4), graph=g)
    config = make_model_config(num_joints=g.num_nodes, channels=(4, 4, 4, 4, 4), layout=layout)
    with pytest.raises(ValueError, match="graph.*is not Graph"):
        save_checkpoint(tmp_path / "x.pt", model=model, model_config=config, epoch=0)
    assert not (tmp_path / "x.pt").exists()
    default = UGCN(num_joints=g.num_nodes, channels=(4, 4, 4, 4, 4), graph=Graph(layout=layout))
    save_checkpoint(tmp_path / "x.pt", model=default, model_config=config, epoch=0)  # its own graph: fine


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_a_half_precision_model_saves(tmp_path, dtype):
    """The adjacency cast with the model (1/3 in bfloat16) is still the layout's graph."""
    model = tiny_model().to(dtype)
    save_checkpoint(tmp_path / "half.pt", model=model, model_config=CONFIG, epoch=0)
    loaded, _ = load_model(tmp_path / "half.pt")
    assert all(torch.equal(a.float(), b.float()) for a, b in zip(loaded.state_dict().values(),
                                                                 model.state_dict().values()))
