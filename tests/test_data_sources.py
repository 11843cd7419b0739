"""load_sequences (procedural and motion-capture sources) and make_loader."""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from ugcn_fast.data import WindowDataset, procedural_motion
from ugcn_fast.data.loader import make_loader
from ugcn_fast.data.sources import LiftingSequence, load_sequences, mocap_split

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Bone lengths of procedural_motion's rest pose (mm): thigh, shin, upper arm.
BONES_MM = {(1, 2): 450.0, (2, 3): 440.0, (11, 12): 280.0}


def test_procedural_shapes_dtypes_units_and_root():
    sequences = load_sequences("procedural", "train", num_sequences=2, frames=40)
    assert len(sequences) == 2 * 4                       # every motion from four cameras
    assert len({s.name for s in sequences}) == 8
    for s in sequences:
        assert isinstance(s, LiftingSequence)
        assert s.inputs.shape == (40, 17, 2) and s.inputs.dtype == np.float32
        assert s.targets.shape == (40, 17, 3) and s.targets.dtype == np.float32
        np.testing.assert_array_equal(s.targets[:, 0], 0.0)
        for (child, parent), length in BONES_MM.items():   # metres: bone lengths survive the camera transform
            np.testing.assert_allclose(np.linalg.norm(s.targets[:, child] - s.targets[:, parent], axis=-1),
                                       length / 1000, rtol=1e-4)
        # the whole motion stays inside the 1000 x 1002 image: x in [-1, 1], y in [-1.002, 1.002]
        assert np.abs(s.inputs[..., 0]).max() <= 1.0 and np.abs(s.inputs[..., 1]).max() <= 1.002
        assert s.action == s.name.split("/")[0]
    x, y = sequences[0].pair
    assert x is sequences[0].inputs and y is sequences[0].targets


def test_procedural_is_deterministic_and_train_test_are_disjoint():
    a = load_sequences("procedural", "train", seed=3, num_sequences=2, frames=20)
    b = load_sequences("procedural", "train", seed=3, num_sequences=2, frames=20)
    for s, t in zip(a, b):
        assert s.name == t.name
        np.testing.assert_array_equal(s.inputs, t.inputs)
        np.testing.assert_array_equal(s.targets, t.targets)
    other_seed = load_sequences("procedural", "train", seed=4, num_sequences=2, frames=20)
    assert not np.allclose(other_seed[0].targets, a[0].targets)
    test = load_sequences("procedural", "test", seed=3, num_sequences=2, frames=20)
    assert not {s.name for s in test} & {s.name for s in a}
    train_poses = np.stack([s.targets for s in a])
    for s in test:                                       # no test motion appears among the training motions
        assert np.abs(train_poses - s.targets).max(axis=(1, 2, 3)).min() > 0.05
    everything = load_sequences("procedural", "all", seed=3, num_sequences=2, frames=20)
    assert [s.name for s in everything] == [s.name for s in a + test]
    # more sequences keep the first ones
    more = load_sequences("procedural", "train", seed=3, num_sequences=3, frames=20)
    np.testing.assert_array_equal(more[0].inputs, a[0].inputs)


def test_procedural_defaults_are_small():
    train = load_sequences()
    assert len(train) == 16 * 4 and all(len(s) == 256 for s in train)
    assert len(load_sequences(split="test")) == 4 * 4


def _mocap_file(path, names, frames=30):
    sequences = {name: procedural_motion(frames, seed=k) for k, name in enumerate(names)}
    np.savez(path, **sequences, fps=np.array(50), joint_names=np.array(["j"] * 17))
    return sequences


def test_mocap_split_by_name_is_deterministic():
    names = [f"clip_{k:02d}" for k in range(11)]
    test = mocap_split(names, "test")
    train = mocap_split(reversed(names), "train")
    assert len(test) == 2 and not set(test) & set(train) and sorted(test + train) == names
    assert mocap_split(names, "all") == names
    assert mocap_split(names[:3], "test") and len(mocap_split(names[:3], "train")) == 2   # at least one test
    with pytest.raises(ValueError, match="split"):
        mocap_split(names, "valid")


def test_mocap_file_gives_filmed_sequences(tmp_path):
    path = tmp_path / "mocap.npz"
    motions = _mocap_file(path, ["walk", "run", "jump", "kick", "wave", "sit"])
    test = load_sequences(path, "test")
    train = load_sequences(str(path), "train")
    test_motions = {s.action for s in test}
    train_motions = {s.action for s in train}
    assert len(test_motions) == 1 and len(train_motions) == 5 and not test_motions & train_motions
    assert [s.name for s in test] == [f"{next(iter(test_motions))}/cam{k}" for k in range(4)]
    for s in train:
        motion = motions[s.action] / 1000.0
        np.testing.assert_array_equal(s.targets[:, 0], 0.0)
        # the camera-frame target is a rotation of the motion: distances from the root are preserved
        np.testing.assert_allclose(np.linalg.norm(s.targets, axis=-1),
                                   np.linalg.norm(motion - motion[:, :1], axis=-1), rtol=1e-4, atol=1e-6)
    # the same cameras film a sequence in every split
    everything = {s.name: s for s in load_sequences(path, "all")}
    np.testing.assert_array_equal(everything[train[0].name].inputs, train[0].inputs)
    few = load_sequences(path, "train", num_sequences=2, frames=10)
    assert len(few) == 8 and all(len(s) == 10 for s in few)
    assert [s.action for s in few][::4] == sorted(train_motions)[:2]


def test_bad_arguments_and_files(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_sequences("procedural", "validation")
    with pytest.raises(ValueError, match="num_sequences"):
        load_sequences("procedural", num_sequences=0)
    with pytest.raises(ValueError, match="frames"):
        load_sequences("procedural", frames=2.5)
    with pytest.raises(ValueError, match="h36m_2d"):
        load_sequences("procedural", h36m_2d="data_2d_h36m_gt.npz")
    with pytest.raises(FileNotFoundError, match="no_such_file.npz"):
        load_sequences(tmp_path / "no_such_file.npz")
    with pytest.raises(TypeError, match="source"):
        load_sequences(3)
    text = tmp_path / "garbage.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="garbage.npz"):
        load_sequences(text)
    single = tmp_path / "single.npz"
    _mocap_file(single, ["only"])
    with pytest.raises(ValueError, match="too few for a 'train' split"):
        load_sequences(single, "train")
    assert len(load_sequences(single, "test")) == 4
    with pytest.raises(ValueError, match="h36m_2d"):
        load_sequences(single, "test", h36m_2d=str(single))
    with_nan = tmp_path / "with_nan.npz"
    np.savez(with_nan, a=np.full((5, 17, 3), np.nan, np.float32), b=np.zeros((5, 17, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        load_sequences(with_nan, "all")
    with pytest.raises(ValueError, match="targets must have shape"):
        LiftingSequence("x", "x", np.zeros((5, 17, 2)), np.zeros((5, 16, 3)))


@pytest.mark.skipif(not (SHARED_DATA / "cmu_17j_50fps.npz").exists(), reason="shared/data not beside the checkout")
def test_real_motion_capture_files():
    for file, count in (("cmu_17j_50fps.npz", 5), ("deepmimic_17j_50fps.npz", 6)):
        path = SHARED_DATA / file
        test, train = load_sequences(path, "test"), load_sequences(path, "train")
        assert len(test) == 4 and len(train) == 4 * (count - 1)
        for s in test + train:
            np.testing.assert_array_equal(s.targets[:, 0], 0.0)
            assert np.isfinite(s.inputs).all() and np.abs(s.inputs).max() <= 1.002
            assert 0.3 < np.linalg.norm(s.targets, axis=-1).max() < 1.5      # metres, a human body
    again = load_sequences(SHARED_DATA / "cmu_17j_50fps.npz", "test")
    np.testing.assert_array_equal(again[0].inputs, load_sequences(SHARED_DATA / "cmu_17j_50fps.npz", "test")[0].inputs)


# --- make_loader ------------------------------------------------------------------------------------------------

def _windows(num_sequences=2, frames=70, window=16):
    pairs = [s.pair for s in load_sequences("procedural", num_sequences=num_sequences, frames=frames)][::3]
    return WindowDataset(pairs, window=window, flip=True, seed=1)


def _epochs(loader, epochs):
    out = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        out.append([(x.clone(), y.clone()) for x, y in loader])
    return out


def _key(x):
    return x.numpy().tobytes()


def test_workers_give_the_same_batches_as_the_main_process():
    dataset = _windows()
    serial = _epochs(make_loader(dataset, 4, num_workers=0, seed=7, drop_last=False), 3)
    parallel = _epochs(make_loader(dataset, 4, num_workers=2, seed=7, drop_last=False), 3)
    assert [len(e) for e in serial] == [len(e) for e in parallel]
    for a, b in zip(serial, parallel):
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # the epochs differ: another shuffle and another tiling of the sequences
    first = {_key(x) for batch, _ in serial[0] for x in batch}
    second = {_key(x) for batch, _ in serial[1] for x in batch}
    assert first != second
    other_seed = _epochs(make_loader(dataset, 4, num_workers=0, seed=8, drop_last=False), 1)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(serial[0], other_seed[0]))


def test_every_window_once_per_epoch_and_drop_last():
    dataset = _windows()
    loader = make_loader(dataset, 5, num_workers=2, seed=0, drop_last=False)
    for epoch in (0, 1, 2):
        loader.set_epoch(epoch)
        seen = Counter(_key(x) for batch, _ in loader for x in batch)
        dataset.set_epoch(epoch)
        expected = Counter(_key(dataset[i][0]) for i in range(len(dataset)))
        assert seen == expected and sum(seen.values()) == len(dataset)
    dropping = make_loader(dataset, 5, num_workers=0, seed=0)     # drop_last by default
    dropping.set_epoch(1)
    dataset.set_epoch(1)
    batches = list(dropping)
    assert len(batches) == len(dropping) == len(dataset) // 5 and all(len(x) == 5 for x, _ in batches)


def test_loader_epoch_wins_over_a_direct_dataset_epoch():
    dataset = _windows()
    loader = make_loader(dataset, 4, num_workers=0, shuffle=False, drop_last=False)
    loader.set_epoch(2)
    dataset.set_epoch(5)                      # set behind the loader's back: the loader re-applies its epoch
    got = torch.cat([x for x, _ in loader])
    reference = _windows()
    reference.set_epoch(2)
    assert torch.equal(got, torch.stack([reference[i][0] for i in range(len(reference))]))


def test_distributed_shares_cover_the_epoch():
    dataset = _windows()
    shares = []
    for rank in (0, 1):
        loader = make_loader(dataset, 3, num_workers=0, seed=4, drop_last=False, distributed=True,
                             num_replicas=2, rank=rank)
        loader.sampler.set_epoch(1)
        shares.append([_key(x) for batch, _ in loader for x in batch])
    dataset.set_epoch(1)
    expected = {_key(dataset[i][0]) for i in range(len(dataset))}
    assert len(shares[0]) == len(shares[1]) == (len(dataset) + 1) // 2
    assert set(shares[0]) | set(shares[1]) == expected
    with pytest.raises(ValueError, match="distributed"):
        make_loader(dataset, 3, distributed=True)          # no process group and no num_replicas / rank
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(dataset, 0)
    with pytest.raises(ValueError, match="num_workers"):
        make_loader(dataset, 2, num_workers=-1)


def test_loader_arguments_are_checked():
    """Replica counts and flags of the wrong kind are refused, not misread (num_replicas=0 gave every rank the whole
    dataset; shuffle="no" shuffled)."""
    dataset = WindowDataset([(np.zeros((64, 17, 2), np.float32), np.zeros((64, 17, 3), np.float32))], window=16)
    for kwargs, message in ((dict(num_replicas=0, rank=0), "num_replicas must be an int >= 1"),
                            (dict(num_replicas=2.0, rank=1), "num_replicas must be an int >= 1"),
                            (dict(num_replicas=2, rank=2), r"rank must be an int in \[0, num_replicas = 2\)"),
                            (dict(num_replicas=2, rank=1.0), "rank must be an int")):
        with pytest.raises(ValueError, match=message):
            make_loader(dataset, 2, num_workers=0, distributed=True, **kwargs)
    with pytest.raises(ValueError, match="shuffle must be True or False"):
        make_loader(dataset, 2, num_workers=0, shuffle="no")
    loader = make_loader(dataset, 2, num_workers=0, distributed=True, num_replicas=np.int64(2), rank=np.int64(1))
    assert len(list(loader)) > 0
