"""Benchmark cases of the UGCN network for bench/speed.py: every ST-GCN block shape of the default UGCN (SPEC §4),
their sum, the full training step and sliding-window inference.

Block cases time one block on its own input, N = 64, T = 96 on the CPU (N = 256 on a GPU; --quick: N = 8):
"fwd (no_grad)" is the eval forward (BatchNorm folded in the fused block), "fwd (grad)" the training forward,
"bwd only" the training backward alone (on a prebuilt graph, retain_graph=True), "fwd+bwd" training forward +
backward. The reference rows are ugcn_fast.reference.STGCNBlock eager and
torch.compile'd; the fused rows are FusedSTGCNBlock with the same weights. "ugcn_blocks" runs all 14 blocks
one after the other (each on its own input): its times are the sum over UGCN's blocks.
"""
from __future__ import annotations

import copy

import torch

from ugcn_fast import FusedSTGCNBlock, Graph, UGCN, UGCNLoss, freeze
from ugcn_fast import backends as ugcn_backends
from ugcn_fast.data.windows import window_starts
from ugcn_fast.inference import predict_sequence
from ugcn_fast.reference import STGCNBlock

# (name, C_in, C_out, stride, T_in, residual) of the default UGCN at T = 96
UGCN_BLOCKS = [
    ("down1", 2, 16, 1, 96, False), ("down2", 16, 32, 2, 96, True), ("down3", 32, 32, 1, 48, True),
    ("down4", 32, 64, 2, 48, True), ("down5", 64, 64, 1, 24, True), ("down6", 64, 128, 2, 24, True),
    ("down7", 128, 128, 1, 12, True), ("down8", 128, 256, 2, 12, True), ("down9", 256, 256, 1, 6, True),
    ("up1", 256, 128, 1, 6, True), ("up2", 128, 64, 1, 12, True), ("up3", 64, 32, 1, 24, True),
    ("up4", 32, 16, 1, 48, True), ("head", 16, 16, 1, 96, True),
]
FUSED_BACKENDS = {"cpu": ("cpu",), "cuda": ("cuda", "triton")}


def block_forward_flops(blocks, N: int, V: int = 17, K: int = 3, kernel_size: int = 5) -> int:
    """FLOPs of the dense convolutions of a forward through `blocks` (UGCN_BLOCKS rows) at batch N: the graph
    convolution's 1x1 (C_in -> K * C_out), the temporal convolution (kernel_size taps, C_out -> C_out) and the 1x1
    residual where the channels or the stride change. Every implementation does these (aggregating first moves
    the same products); the sparse aggregation and the elementwise passes are not counted."""
    total = 0
    for _, c_in, c_out, stride, T, residual in blocks:
        T_out = (T - 1) // stride + 1
        total += 2 * N * T * V * c_in * K * c_out + 2 * N * T_out * V * kernel_size * c_out * c_out
        if residual and (c_in != c_out or stride != 1):
            total += 2 * N * T_out * V * c_in * c_out
    return total


# a training step's backward does two GEMMs (input and weight gradients) per forward GEMM
_FLOPS_PER_MODE = {"forward": 1, "forward_grad": 1, "backward": 2, "forward_backward": 3}
_FLOPS_DOC = ("compute floor: FLOPs of the blocks' dense convolutions (1x1 graph, 5-tap temporal, 1x1 residual), "
              "x3 with backward")


def _fused_reason(name: str, device: torch.device, dtype: torch.dtype) -> str | None:
    if name == "triton" and ugcn_backends.triton_interpreted():
        return "TRITON_INTERPRET=1 is set: triton would run in its interpreter, not benchmarked"
    return ugcn_backends.block_unsupported_reason(name, device, dtype)


def _batch(shape: dict, device: torch.device) -> int:
    return shape["N"] if device.type == "cpu" else shape.get("N_gpu", 4 * shape["N"])


class _ModuleCase:
    """Shared plumbing: modules built in make_inputs, rows = eager / compile / each fused backend."""
    modes = ("forward", "forward_grad", "forward_backward")
    sweep_dim = None
    sweep_arg_dims: dict = {}

    def params(self) -> dict:
        return {}

    def scalar(self, out):
        return out if out.dim() == 0 else out.sum()

    def check_value(self, out) -> float | None:
        return float(self.scalar(out).detach().double().cpu())

    def traffic_bytes(self, shape, dtype, mode):
        return None

    def traffic_doc(self) -> str:
        return ""

    def flops(self, shape, mode, device) -> int | None:
        return None

    def flops_doc(self) -> str:
        return _FLOPS_DOC

    def describe(self, shape: dict) -> str:
        return " ".join(f"{k}={v}" for k, v in shape.items())


class BlocksCase(_ModuleCase):
    """One or several ST-GCN blocks, each on its own input; the call returns the sum of their outputs' sums."""
    modes = ("forward", "forward_grad", "backward", "forward_backward")

    def __init__(self, name: str, blocks: list):
        self.name = name
        self.blocks = blocks
        self.description = ("FusedSTGCNBlock vs reference STGCNBlock: " + ", ".join(
            f"{b[0]} {b[1]}->{b[2]} s{b[3]} T{b[4]}" for b in blocks))
        self._built: dict = {}

    def default_shape(self, quick: bool) -> dict:
        return {"N": 8 if quick else 64, "N_gpu": 32 if quick else 256, "V": 17}

    def flops(self, shape, mode, device) -> int | None:
        return _FLOPS_PER_MODE[mode] * block_forward_flops(self.blocks, _batch(shape, device), shape["V"])

    def describe(self, shape: dict) -> str:
        return (f"N={shape['N']} (GPU {shape['N_gpu']}), V={shape['V']}, kernel 5, dropout 0.5, blocks: "
                + ", ".join(f"{b[0]} {b[1]}->{b[2]}/s{b[3]}/T{b[4]}" for b in self.blocks))

    def make_inputs(self, shape, device, dtype):
        torch.manual_seed(0)
        A = Graph(layout="h36m").A
        N = _batch(shape, device)
        refs, xs = [], []
        for _, c_in, c_out, stride, T, residual in self.blocks:
            refs.append(STGCNBlock(c_in, c_out, A, 5, stride, 0.5, residual).to(device, dtype))
            xs.append(torch.randn(N, c_in, T, shape["V"], device=device, dtype=dtype, requires_grad=True))
        fused = {}
        for name in FUSED_BACKENDS.get(device.type, ()):
            blocks = []
            for ref, (_, c_in, c_out, stride, T, residual) in zip(refs, self.blocks):
                blk = FusedSTGCNBlock(c_in, c_out, A, 5, stride, 0.5, residual, backend=name).to(device, dtype)
                blk.load_state_dict(ref.state_dict(), strict=True)
                blocks.append(blk)
            fused[name] = blocks
        self._built = {"ref": refs, "fused": fused}
        modules = refs + [b for blocks in fused.values() for b in blocks]
        return _inputs(tuple(xs), list(xs), modules)

    def implementations(self, device, dtype, shape, compile_opts):
        refs = self._built["ref"]

        def run_all(blocks):
            def call(*xs):
                return sum(blk(x).sum() for blk, x in zip(blocks, xs))
            return call

        impls = [Impl("eager", "eager", make=lambda: run_all(refs)),
                 Impl("compile", "compile",
                      make=lambda: run_all([compiled(r, compile_opts) for r in refs]))]
        auto = ugcn_backends.select_block("auto", device, dtype)
        for name in FUSED_BACKENDS.get(device.type, ()):
            label = f"fused:{name}" + (" [auto]" if name == auto else "")
            reason = _fused_reason(name, device, dtype)
            if reason is not None:
                impls.append(Impl(label, "fused", backend=name, skip=reason))
                continue
            impls.append(Impl(label, "fused", make=lambda name=name: run_all(self._built["fused"][name]),
                              backend=name))
        return impls


def _models(device, dtype, eval_mode: bool) -> dict:
    """The reference UGCN and, per fused backend of the device, a fused UGCN with the same weights."""
    ref = UGCN(fused=False).to(device, dtype).train(not eval_mode)
    models = {"ref": ref}
    for name in FUSED_BACKENDS.get(device.type, ()):
        model = UGCN(fused=True, backend=name).to(device, dtype).train(not eval_mode)
        model.load_state_dict(ref.state_dict(), strict=True)
        models[name] = model
    return models


def _fused_impls(device, dtype, make_for_model, models: dict) -> list:
    impls = []
    for name in FUSED_BACKENDS.get(device.type, ()):
        reason = _fused_reason(name, device, dtype)
        if reason is not None:
            impls.append(Impl(f"fused:{name}", "fused", backend=name, skip=reason))
        else:
            impls.append(Impl(f"fused:{name}", "fused", backend=name,
                              make=lambda name=name: make_for_model(models[name])))
    return impls


class TrainStepCase(_ModuleCase):
    """One training step of the default UGCN: forward, UGCNLoss, backward, Adam step."""
    name = "ugcn_train_step"
    description = "UGCN training step (forward, UGCNLoss, backward, Adam): fused model vs reference model"
    modes = ("forward_grad",)  # the step itself runs backward and the optimizer; see implementations()

    def default_shape(self, quick: bool) -> dict:
        return {"B": 8 if quick else 64, "B_gpu": 32 if quick else 256, "T": 96, "J": 17}

    def flops(self, shape, mode, device) -> int | None:
        B = shape["B"] if device.type == "cpu" else shape["B_gpu"]
        # forward + backward; the merge's and the regressor's 1x1 convolutions are not counted
        return 3 * block_forward_flops(UGCN_BLOCKS, B, shape["J"])

    def make_inputs(self, shape, device, dtype):
        torch.manual_seed(0)
        B = shape["B"] if device.type == "cpu" else shape["B_gpu"]
        x = torch.randn(B, shape["T"], shape["J"], 2, device=device, dtype=dtype)
        target = torch.randn(B, shape["T"], shape["J"], 3, device=device, dtype=dtype) * 0.2
        self._models = _models(device, dtype, eval_mode=False)
        return _inputs((x, target), [], list(self._models.values()))

    def implementations(self, device, dtype, shape, compile_opts):
        criterion = UGCNLoss()

        def step_of(model, forward):
            # lr = 0: every timed step does the full Adam update, but the weights stay put, so repeated steps on one
            # batch cannot drift into denormal activations that would slow one implementation and not the other
            optimizer = torch.optim.Adam(model.parameters(), lr=0.0)

            def step(x, target):
                optimizer.zero_grad(set_to_none=True)
                loss = criterion(forward(x), target)
                loss.backward()
                optimizer.step()
                return loss.detach()
            return step

        ref = self._models["ref"]
        return [Impl("eager", "eager", make=lambda: step_of(ref, ref)),
                Impl("compile", "compile", make=lambda: step_of(ref, compiled(ref, compile_opts)))
                ] + _fused_impls(device, dtype, lambda model: step_of(model, model), self._models)


class InferenceCase(_ModuleCase):
    """Whole-sequence inference (sliding 96-frame windows, step 5, flip TTA) of one sequence."""
    name = "ugcn_inference"
    description = ("ugcn_fast.inference.predict_sequence: sliding 96-frame windows (step 5) with flip TTA, "
                   "fused vs reference model; frames/s = T / median")
    modes = ("forward",)

    def default_shape(self, quick: bool) -> dict:
        return {"T": 300 if quick else 1000, "J": 17, "batch": 64}

    def flops(self, shape, mode, device) -> int | None:
        windows = len(window_starts(max(shape["T"], 96), 96, 5))
        return 2 * block_forward_flops(UGCN_BLOCKS, windows, shape["J"])  # x 2: flip TTA

    def make_inputs(self, shape, device, dtype):
        torch.manual_seed(0)
        x = torch.randn(shape["T"], shape["J"], 2, device=device, dtype=dtype) * 0.3
        self._models = _models(device, dtype, eval_mode=True)
        return _inputs((x,), [], list(self._models.values()))

    def implementations(self, device, dtype, shape, compile_opts):
        batch = shape["batch"]

        def predict(model):
            return lambda x: predict_sequence(model, x, batch_size=batch)

        return ([Impl("eager", "eager", make=lambda: predict(self._models["ref"]))]
                + _fused_impls(device, dtype, predict, self._models))


class WindowCase(_ModuleCase):
    """The UGCN's eval forward on a few windows (B = 1 by default: one 96-frame window, as in real-time lifting),
    where the fixed costs of a call (folding BatchNorm, packing weights) weigh most: the fused model as it is and
    frozen (ugcn_fast.freeze: folded and packed once), against the reference."""
    name = "ugcn_window"
    description = ("UGCN eval forward on B windows of 96 frames (no grad): fused (per call folding) and fused "
                   "frozen (ugcn_fast.freeze) vs reference model")
    modes = ("forward",)

    def default_shape(self, quick: bool) -> dict:
        return {"B": 1, "B_gpu": 1, "T": 96, "J": 17}

    def flops(self, shape, mode, device) -> int | None:
        B = shape["B"] if device.type == "cpu" else shape["B_gpu"]
        return block_forward_flops(UGCN_BLOCKS, B, shape["J"])

    def make_inputs(self, shape, device, dtype):
        torch.manual_seed(0)
        B = shape["B"] if device.type == "cpu" else shape["B_gpu"]
        x = torch.randn(B, shape["T"], shape["J"], 2, device=device, dtype=dtype) * 0.3
        self._models = _models(device, dtype, eval_mode=True)
        self._frozen = {name: freeze(copy.deepcopy(m)) for name, m in self._models.items() if name != "ref"}
        return _inputs((x,), [], list(self._models.values()) + list(self._frozen.values()))

    def implementations(self, device, dtype, shape, compile_opts):
        ref = self._models["ref"]
        impls = [Impl("eager", "eager", make=lambda: ref),
                 Impl("compile", "compile", make=lambda: compiled(ref, compile_opts))]
        impls += _fused_impls(device, dtype, lambda model: model, self._models)
        for impl in _fused_impls(device, dtype, lambda model: model, self._frozen):
            impls.append(Impl(f"{impl.name} frozen", impl.kind, impl.make, impl.backend, impl.skip))
        return impls


# bench/speed.py's Impl, Inputs and compiled(), handed over by cases() (speed.py imports this module)
Impl = Inputs = compiled = None


def _inputs(args, grad_leaves, modules):
    return Inputs(args=args, grad_leaves=grad_leaves, modules=modules)


def cases(impl_type, inputs_type, compile_fn) -> list:
    """The UGCN cases, built on bench/speed.py's Impl, Inputs and compiled()."""
    global Impl, Inputs, compiled
    Impl, Inputs, compiled = impl_type, inputs_type, compile_fn
    per_block = [BlocksCase(f"stgcn_block:{b[0]}", [b]) for b in UGCN_BLOCKS]
    return [BlocksCase("ugcn_blocks", UGCN_BLOCKS)] + per_block + [TrainStepCase(), InferenceCase(), WindowCase()]

