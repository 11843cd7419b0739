"""Data-parallel training: two CPU processes (gloo) under torchrun against one process.

Exactness and BatchNorm: in training mode BatchNorm normalises with the statistics of each process's own batch,
so two processes on different halves of a batch do not compute what one process computes on the whole batch.
The equivalence check therefore trains on windows that share one input sequence (and have different targets):
every process then sees the same BatchNorm statistics as a single process does, as functions of the weights,
so the single-process loss is exactly the mean of the per-process losses and DDP's averaged gradient is exactly
the single-process gradient. The targets differ, so the per-process gradients differ and are really averaged;
what remains is float summation order (tolerance 1e-5 relative after two Adam steps, dropout 0), except for the
convolution biases that BatchNorm cancels (see `biases_before_batchnorm`).
"""
import csv
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ugcn_fast
from ugcn_fast.checkpoint import load_checkpoint, model_from_config
from ugcn_fast.data.sources import LiftingSequence

PACKAGE_ROOT = Path(ugcn_fast.__file__).resolve().parents[1]  # the checkout or site-packages that holds ugcn_fast
TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def biases_before_batchnorm(model) -> set[str]:
    """Names of the convolution biases that a BatchNorm follows directly. BatchNorm subtracts the batch mean, so
    their true gradient is zero and what backward returns is rounding noise; Adam divides every gradient by its
    own running magnitude and turns that noise into full learning-rate steps of random sign. These parameters
    (and the running means after them) differ between any two runs that sum in another order, and are left out
    of the exact comparison."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, torch.nn.Sequential):
            children = list(module.named_children())
            for (name, first), (_, second) in zip(children, children[1:]):
                if isinstance(first, torch.nn.Conv2d) and isinstance(second, torch.nn.BatchNorm2d) \
                        and first.bias is not None:
                    names.add(f"{prefix}.{name}.bias")
    return names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, cwd, timeout=240):
    """Runs `torchrun --nproc_per_node=2 ARGS`; on a timeout kills the launcher and both workers (its session)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}"] + [str(a) for a in args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), str(TESTS)]), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def shared_input_sequences(count=8, frames=16):
    """`count` one-window sequences with the same 2D input and different root-relative 3D targets."""
    rng = np.random.default_rng(0)
    inputs = (0.3 * rng.normal(size=(frames, 17, 2))).astype(np.float32)
    sequences = []
    for k in range(count):
        targets = (0.2 * rng.normal(size=(frames, 17, 3))).astype(np.float32)
        sequences.append(LiftingSequence(f"s{k}", "a", inputs, targets - targets[:, :1]))
    return sequences


def train_on_shared_inputs(out):
    """Two epochs, one step each: the global batch is the whole dataset, so both runs use the same batches
    whatever order their samplers draw."""
    from ugcn_fast.train import train
    config = {"channels": (4, 4, 4, 4, 4), "window": 16, "intervals": (2, 4), "dropout": 0.0, "flip": False,
              "epochs": 2, "batch_size": 8, "workers": 0, "threads": 1, "eval_every": 0, "out": str(out)}
    return train(config, train_sequences=shared_input_sequences())


SCRIPT = """
import sys
from test_ddp import train_on_shared_inputs
from ugcn_fast.train import train
try:
    train({"batch_size": 7, "window": 16, "intervals": (2,), "out": sys.argv[1] + "/odd"})
except ValueError as error:
    sys.stdout.write(f"refused: {error}\\n")  # one write per line: the two processes share the pipe
    sys.stdout.flush()
train_on_shared_inputs(sys.argv[1] + "/ddp")
# train() leaves the process group it started to its caller; a process that exits with a gloo group alive can
# abort in gloo's threads at shutdown ("terminate called without an active exception", seen once in CI)
import torch.distributed as dist
dist.barrier()
dist.destroy_process_group()
"""


def test_two_processes_match_one_process(tmp_path):
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT)
    run = torchrun([script, tmp_path], cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    # the global batch of 7 cannot be split over 2 processes: both refuse before training
    assert run.stdout.count("refused: --batch-size 7 is the global batch; it must be divisible by the 2") == 2
    assert not (tmp_path / "odd").exists()

    single = train_on_shared_inputs(tmp_path / "single")
    ddp = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ddp["extra"]["world_size"] == 2
    # the same number of optimiser steps: each process took half of every global batch of 8
    assert ddp["extra"]["global_step"] == single["global_step"] == 2
    model = single["model"]
    assert list(ddp["model"]) == list(model.state_dict())  # saved without DDP's "module." prefix

    cancelled = biases_before_batchnorm(model)
    assert len(cancelled) > 10
    torch.manual_seed(0)  # the run's seed: its initial weights
    initial = dict(model_from_config(ddp["model_config"]).named_parameters())
    for name, value in model.named_parameters():
        if name in cancelled:
            continue
        torch.testing.assert_close(ddp["model"][name], value.detach(), rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.equal(value, initial[name]), name
    # the cancelled biases do not change what the network computes in training mode
    twin = model_from_config(ddp["model_config"])
    twin.load_state_dict(ddp["model"])
    x = torch.randn(4, 16, 17, 2)
    torch.testing.assert_close(twin.train()(x), model.train()(x), rtol=1e-4, atol=1e-5)

    # losses logged by rank 0 are the mean over both processes: the single-process loss
    ddp_rows = list(csv.DictReader(open(tmp_path / "ddp" / "log.csv")))
    assert [float(r["loss"]) for r in ddp_rows] == pytest.approx([h["loss"] for h in single["history"]], rel=1e-5)


def test_command_line_under_torchrun_writes_once(tmp_path):
    out = tmp_path / "run"
    run = torchrun(["-m", "ugcn_fast.train", "--channels", 4, 4, 4, 4, 4, "--window", 16, "--intervals", 2, 4,
                    "--epochs", 1, "--batch-size", 8, "--workers", 0, "--num-sequences", 1, "--frames", 48,
                    "--val-sequences", 1, "--steps-per-epoch", 2, "--out", out], cwd=PACKAGE_ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    output = run.stdout + run.stderr
    assert output.count("epoch 1/1") == 1 and output.count("x 2 process(es)") == 1  # rank 0 prints, alone
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == 1 and float(rows[0]["val_mpjpe_mm"]) > 0
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["extra"]["global_step"] == 2 and len(checkpoint["extra"]["rng"]) == 2
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "curves.png", "last.pt", "log.csv", "val.png"]
