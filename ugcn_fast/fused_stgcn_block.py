"""FusedSTGCNBlock: the ST-GCN block of SPEC §3 on fused kernels, a drop-in for ugcn_fast.reference.STGCNBlock.

Same constructor, parameters and buffers as the reference (it *is* one, with another forward), so state dicts move
between the two with strict=True. Exact in both modes:
- training: BatchNorm with batch statistics, running statistics updated as nn.BatchNorm2d updates them (momentum,
  or the cumulative average when momentum is None; unbiased running variance; num_batches_tracked); dropout keeps
  each element with probability 1 - p, decided by a counter-based hash of a seed drawn from torch's generator
  (torch.manual_seed reproduces the masks; `dropout_masks` below rebuilds them), so the CPU kernels never store a
  mask and the backward recomputes it. The masks differ from the reference block's bernoulli_ draws (drawing those
  alone took a fifth of a training step on the CPU);
- eval: BatchNorm folded into the convolutions (ugcn_fast/ops/stgcn_block.py); `freeze()` keeps the folded (and on
  the CPU packed) operands between calls while the weights stay as they are (`ugcn_fast.frozen(model)` for a whole
  model), which removes most of a small batch's fixed cost.
Eval-mode calls that need gradients (autograd enabled and x or a parameter requiring grad) run the reference
block: the folded passes have no backward. Wrap inference in torch.no_grad() or torch.inference_mode().
The reference computation also runs wherever the modules ask for what the fused passes do not do
(FusedSTGCNBlock._needs_reference): a BatchNorm or the dropout in another mode than the block (BatchNorms kept in
eval while fine-tuning), hooks on a submodule (feature extraction, old-style weight_norm), an adjacency that
requires grad, a dropout probability set outside [0, 1) after construction, an input of another dtype than the
weights, an empty batch; and `auto` picks it for kernels longer than the fused kernels take (9 taps on cpu and
triton). Under autocast the fused passes compute in the input's dtype.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from . import backends
from .backends.torch_stgcn import dropout_multipliers
from .ops._eager import needs_plain_torch, needs_registrations
from .ops.stgcn_block import (BlockConfig, EvalWeights, PackedEvalWeights, draw_dropout_seed, eval_forward,
                              eval_weights, fold_eval_weights, from_time_major, phase_geometry, to_time_major,
                              training_forward)
from .reference.stgcn_block import GraphConvolution, STGCNBlock, check_block_input


class FusedSTGCNBlock(STGCNBlock):
    """(N, C_in, T, V) -> (N, C_out, T_out, V). `backend`: "auto" (CPU: the native kernels; CUDA: the native CUDA
    kernels, else Triton; otherwise the reference), "reference", "torch", "cpu", "triton" or "cuda" (see
    ugcn_fast.backends). The output is a view of a time-major buffer; a following fused block reads it without a
    copy."""

    def __init__(self, in_channels: int, out_channels: int, A: Tensor, kernel_size: int = 5, stride: int = 1,
                 dropout: float = 0.0, residual: bool = True, backend: str = "auto"):
        super().__init__(in_channels, out_channels, A, kernel_size, stride, dropout, residual)
        if backend not in backends.BLOCK_BACKENDS:
            raise ValueError(f"backend must be one of {backends.BLOCK_BACKENDS}, got {backend!r}")
        self.backend = backend
        self._eval_cache: dict | None = None  # None: not frozen; else {"entry": (key, ..., operands)} once folded
        self._frozen_by_user = False  # freeze() called (frozen() contexts leave such a block frozen)
        self._frozen_holds = 0  # frozen() contexts holding the block frozen

    def freeze(self) -> "FusedSTGCNBlock":
        """Keep the eval operands (BatchNorm folded into the convolutions, weights in the kernels' layouts) from one
        eval call to the next instead of folding them on every call; the fixed cost this removes is most of a
        small batch's time. The operands are folded again when a parameter or buffer is replaced or updated in
        place through the tensor itself (an optimizer step, load_state_dict, .to()), or a BatchNorm's eps changes;
        a weight computed on access (a parametrization, functional_call) is folded on every call.
        Writes that no version counter sees are not noticed: through `.data`, a step of an optimizer built with
        fused=True (torch's fused Adam / AdamW / SGD kernels leave the counters as they were), or into a module
        built under torch.inference_mode() (inference tensors have no version counter); call freeze() again after
        one.
        Returns self. Training-mode calls are not affected."""
        with _FREEZE_LOCK:
            self._eval_cache = {}
            self._frozen_by_user = True
        return self

    def unfreeze(self) -> "FusedSTGCNBlock":
        with _FREEZE_LOCK:
            self._eval_cache = None
            self._frozen_by_user = False
        return self

    @property
    def is_frozen(self) -> bool:
        return getattr(self, "_eval_cache", None) is not None

    def __getstate__(self):
        # copies and pickles stay frozen but hold no operands (the packed ones are native objects; a copy's tensors
        # are new ones anyway): they fold again on their first eval call
        # (a copy made inside a frozen() context is frozen as if by the user: no context of the copy's will thaw it)
        state = self.__dict__.copy()
        if state.get("_eval_cache") is not None:
            state["_eval_cache"] = {}
        state["_frozen_by_user"] = state.get("_eval_cache") is not None
        state["_frozen_holds"] = 0
        return state

    def _apply(self, fn, recurse=True):
        # .to() / .float() / .cuda() swap every tensor's data: a new tensor may reuse a freed one's address and
        # version, which the cache key could not tell apart
        if getattr(self, "_eval_cache", None):
            self._eval_cache.clear()
        return super()._apply(fn, recurse)

    def _submodules(self) -> dict[str, nn.Module]:
        """The convolutions and BatchNorms by their state-dict prefix, read from the containers' dicts
        (nn.Sequential's indexing walks its modules: a dozen lookups took a fifth of a frozen block's call)."""
        tcn = self._modules["tcn"]._modules
        parts = {"gcn.conv": self._modules["gcn"]._modules["conv"], "tcn.0": tcn["0"], "tcn.2": tcn["2"],
                 "tcn.3": tcn["3"]}
        if self.residual_kind == "conv":
            residual = self._modules["residual"]._modules
            parts["residual.0"], parts["residual.1"] = residual["0"], residual["1"]
        return parts

    @staticmethod
    def _batch_norms(parts: dict[str, nn.Module]) -> list[nn.BatchNorm2d]:
        bns = [parts["tcn.0"], parts["tcn.3"]]
        return bns + [parts["residual.1"]] if "residual.1" in parts else bns

    def _parameters_by_name(self, parts: dict[str, nn.Module] | None = None) -> dict[str, Tensor]:
        """named_parameters() as a dict, read from the submodules directly (the generic walk took ~60 µs a call, a
        tenth of a small batch's eval block)."""
        parts = self._submodules() if parts is None else parts
        # (getattr where a parametrization, pruning or a DataParallel replica keeps the tensor outside _parameters)
        return {f"{name}.{kind}": m._parameters[kind] if kind in m._parameters else getattr(m, kind)
                for name, m in parts.items() for kind in ("weight", "bias")}

    def _rebuilt(self) -> bool:
        """Whether a submodule is no longer what the constructor built: replaced (another activation, a SyncBatchNorm,
        a subclass with a forward of its own: a quantised or low-rank convolution), removed (a bias set to None) or
        reconfigured (a convolution's geometry). The fused passes compute exactly the constructor's modules."""
        gcn, tcn, relu = self._modules["gcn"], self._modules["tcn"], self._modules["relu"]
        if type(gcn) is not GraphConvolution or type(tcn) is not nn.Sequential or type(relu) is not nn.ReLU:
            return True
        if tuple(type(m) for m in tcn._modules.values()) != _TCN_LAYERS:
            return True
        k, s = self.kernel_size, self.stride
        convs = [(gcn._modules["conv"], (1, 1), (1, 1), (0, 0)), (tcn._modules["2"], (k, 1), (s, 1), ((k - 1) // 2, 0))]
        if self.residual_kind == "conv":
            residual = self._modules["residual"]
            if (type(residual) is not nn.Sequential
                    or tuple(type(m) for m in residual._modules.values()) != _RESIDUAL_LAYERS):
                return True
            convs.append((residual._modules["0"], (1, 1), (s, 1), (0, 0)))
        return any(type(conv) is not nn.Conv2d or conv.kernel_size != size or conv.stride != stride
                   or conv.padding != padding or conv.dilation != (1, 1) or conv.groups != 1
                   or conv.padding_mode != "zeros" or conv.bias is None for conv, size, stride, padding in convs)

    def _needs_reference(self, x: Tensor, parts: dict[str, nn.Module], bns: list[nn.BatchNorm2d]) -> bool:
        """Whether only the reference block computes what the modules ask for: the fused passes assume the
        configuration the constructor built (see _rebuilt, checked before) and run no submodule's hooks."""
        if torch.jit.is_tracing():
            return True  # the JIT tracer cannot record the fused ops (their optional int-list arguments)
        if needs_plain_torch((x,), lambda: (*self.parameters(), *self.buffers())):
            return True  # torch.func transforms and forward-mode AD: the fused ops have no formulas for them
        if self.training and torch.compiler.is_exporting():
            return True  # torch.export does not keep the training block's autograd.Function: no backward
        if any(not (bn.affine and bn.track_running_stats) for bn in bns):
            return True  # a BatchNorm reconfigured after construction
        dropout = self._modules["tcn"]._modules["4"]
        if any(m.training != self.training for m in (*bns, dropout)):
            return True  # a submodule in the other mode, e.g. BatchNorms kept in eval while fine-tuning
        if not 0.0 <= dropout.p < 1.0:
            return True  # p set after construction: nn.Dropout says what it means (p = 1: zeros; else an error)
        weight = parts["gcn.conv"]._parameters.get("weight")  # (a parametrized weight is not computed twice)
        if x.numel() == 0 or (weight is not None and weight.dtype != x.dtype):
            return True  # an empty batch; an input of another dtype than the weights (the reference's error)
        if _hooks_on_submodules(self):
            return True  # forward hooks (feature extraction) and pre-hooks (old-style weight_norm) must run
        grad = torch.is_grad_enabled()
        if grad and self.A.requires_grad:
            return True  # a learned adjacency (edge importance): the fused backward has no gradient for A
        if self.training:
            return False
        return grad and (x.requires_grad or any(p.requires_grad for p in self.parameters()))

    def forward(self, x: Tensor) -> Tensor:
        check_block_input(x, self.A, self.in_channels)
        backend = backends.select_block(self.backend, x.device, x.dtype, x.shape[-1], self.kernel_size)
        if backend == "reference" or self._rebuilt():
            return super().forward(x)
        parts = self._submodules()
        bns = self._batch_norms(parts)
        if self._needs_reference(x, parts, bns):
            return super().forward(x)
        if torch.is_autocast_enabled(x.device.type):  # the fused passes compute in x's dtype, whatever autocast says
            with torch.autocast(x.device.type, enabled=False):
                return self._fused_forward(x, backend, parts, bns)
        return self._fused_forward(x, backend, parts, bns)

    def _fused_forward(self, x: Tensor, backend: str, parts: dict[str, nn.Module], bns: list[nn.BatchNorm2d]
                       ) -> Tensor:
        params = self._parameters_by_name(parts)
        if params["gcn.conv.weight"].dtype != x.dtype:  # a parametrized weight of another dtype: the reference's error
            return super().forward(x)
        eps = tuple(bn.eps for bn in bns) + (0.0,) * (3 - len(bns))
        cfg = BlockConfig(self.kernel_size, self.stride, self.residual_kind, eps, backend,
                          float(self._modules["tcn"]._modules["4"].p))
        x_tm = to_time_major(x, backend, scratch=not self.training)
        if not self.training:
            return from_time_major(eval_forward(x_tm, self._eval_weights(x, params, bns, cfg, x.dtype), cfg))
        N, _, T, V = x.shape
        _, T_out, _ = phase_geometry(T, self.kernel_size, self.stride)
        if T * N * V < 2 or T_out * N * V < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got input of shape "
                             f"{tuple(x.shape)} (BatchNorm needs batch statistics over N * T * V > 1)")
        seed = draw_dropout_seed() if cfg.dropout > 0 else None
        out, stats = training_forward(x_tm, self.A, params, seed, cfg)
        counts = [T * N * V] + [T_out * N * V] * (len(bns) - 1)
        with torch.no_grad():
            for bn, (mean, var), count in zip(bns, stats, counts):
                _update_running_stats(bn, mean, var, count)
        return from_time_major(out)

    def _eval_weights(self, x: Tensor, params: dict[str, Tensor], bns: list[nn.BatchNorm2d], cfg: BlockConfig,
                      dtype) -> EvalWeights | PackedEvalWeights:
        def states() -> list[dict]:
            return [{"weight": bn.weight, "bias": bn.bias, "running_mean": bn.running_mean,
                     "running_var": bn.running_var} for bn in bns]

        sources = [self.A, *params.values()]
        for bn in bns:
            sources += (bn._buffers["running_mean"], bn._buffers["running_var"])
        if needs_registrations([x, *sources]):  # traced (the folding is part of the graph) or tensor subclasses
            return fold_eval_weights(self.A, params, states(), cfg, dtype)
        cache = getattr(self, "_eval_cache", None)  # (a block pickled before freeze() existed has none)
        if cache is None:
            return eval_weights(self.A, params, states(), cfg, dtype)
        # The entry holds its sources: a tensor is the same one (not a new one at a freed one's address) with the
        # same data and version; a parametrized weight, a new tensor on every access, refolds every call.
        state = [(t.data_ptr(), -1 if t.is_inference() else t._version) for t in sources]
        entry = cache.get("entry")  # one tuple, so that a concurrent refold cannot mix parts of two
        if (entry is None or entry[0] != (cfg, dtype) or entry[2] != state
                or any(a is not b for a, b in zip(entry[1], sources))):
            entry = cache["entry"] = ((cfg, dtype), sources, state, eval_weights(self.A, params, states(), cfg, dtype))
        return entry[3]


# the submodules' classes the constructor builds (SPEC §3), in order
_TCN_LAYERS = (nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.Dropout)
_RESIDUAL_LAYERS = (nn.Conv2d, nn.BatchNorm2d)


def _global_hooks() -> bool:
    hooks = nn.modules.module
    return bool(hooks._global_forward_hooks or hooks._global_forward_pre_hooks or hooks._global_backward_hooks
                or hooks._global_backward_pre_hooks)


def _own_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def runs_hooks(module: nn.Module) -> bool:
    """Whether calling `module` would run hooks (its own, or global module hooks)."""
    return _global_hooks() or _own_hooks(module)


def _hooks_on_submodules(block: nn.Module) -> bool:
    """Whether calling `block`'s submodules would run hooks (theirs, or global module hooks)."""
    if _global_hooks():
        return True
    stack = list(block._modules.values())
    while stack:
        m = stack.pop()
        if _own_hooks(m):
            return True
        stack.extend(m._modules.values())
    return False


def freeze(module: nn.Module) -> nn.Module:
    """FusedSTGCNBlock.freeze() on every fused block in `module` (e.g. a UGCN); returns `module`."""
    for m in module.modules():
        if isinstance(m, FusedSTGCNBlock):
            m.freeze()
    return module


def unfreeze(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, FusedSTGCNBlock):
            m.unfreeze()
    return module


# frozen() contexts may overlap, also across threads (concurrent predict_sequence calls on one model): each block
# counts the contexts that hold it and thaws when the last one ends, unless the user froze it (freeze()), before or
# during them. Without the count, the first context to end thawed the blocks another was still using, and a context
# entered while the user's freeze() was in flight undid it.
_FREEZE_LOCK = threading.RLock()  # (re-entrant: a context's cleanup may run on a thread that holds it)


@contextmanager
def frozen(module: nn.Module):
    """Every fused block in `module` frozen for the duration (FusedSTGCNBlock.freeze), as it was afterwards: for a
    run of eval calls that change no weight, e.g. inference over a sequence's windows. Contexts may nest and
    overlap (also from several threads): a block thaws when the last context holding it ends, and not at all if
    freeze() was called on it (before or during the contexts); unfreeze() thaws it at once."""
    blocks = [m for m in module.modules() if isinstance(m, FusedSTGCNBlock)]
    with _FREEZE_LOCK:
        held = [m for m in blocks if getattr(m, "_frozen_holds", 0) or not m.is_frozen]
        for m in held:
            if not m.is_frozen:
                m._eval_cache = {}
                m._frozen_by_user = False
            m._frozen_holds = getattr(m, "_frozen_holds", 0) + 1
    try:
        yield module
    finally:
        with _FREEZE_LOCK:
            for m in held:
                m._frozen_holds -= 1
                if not m._frozen_holds and not getattr(m, "_frozen_by_user", True):
                    m._eval_cache = None


def dropout_masks(seed: Tensor, p: float, shape: tuple[int, int, int, int], dtype=torch.float32,
                  device=None) -> Tensor:
    """Dropout's multipliers (0 or 1 / (1 - p)) that a fused block's training forward applied to its (N, C_out,
    T_out, V) activation, given the seed it drew (`draw_dropout_seed`; e.g. re-seed torch and draw again)."""
    N, C, T, V = shape
    multipliers = dropout_multipliers(seed, p, T * N * V, C, dtype, device or seed.device)
    return from_time_major(multipliers.view(T, N, V, C))


def _update_running_stats(bn: nn.BatchNorm2d, mean: Tensor, var: Tensor, count: int) -> None:
    """As nn.BatchNorm2d in training: running = (1 - f) running + f batch, with the unbiased batch variance and
    f = momentum, or 1 / num_batches_tracked when momentum is None."""
    bn.num_batches_tracked.add_(1)
    factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    unbiased = var * (count / (count - 1))
    bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
    bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
