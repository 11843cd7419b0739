"""What every native launcher needs: the enum codes of csrc/motion_loss_math.h and the sample-packed layout."""
from __future__ import annotations

from torch import Tensor

CODES = {
    "operator": {"sub": 0, "inner": 1, "cross": 2},
    "normalize": {"none": 0, "sample": 1, "joint": 2},
    "reduction": {"mean": 0, "sum": 1, "none": 2},
}


def sample_packed(x: Tensor) -> Tensor:
    """x with every sample a packed (T, J, D) block. Any batch stride is kept, 0 included, so a target broadcast
    over the batch (`expand`) is read in place; anything else non-packed is copied once."""
    _, T, J, D = x.shape
    packed = (J * D, D, 1)
    if all(size == 1 or stride == want for size, stride, want in zip(x.shape[1:], x.stride()[1:], packed)):
        if x.shape[0] == 1 or x.stride(0) == 0 or x.stride(0) >= T * J * D:
            return x
    return x.contiguous()


def kernel_arguments(pred: Tensor, target: Tensor, opts, den: Tensor, loss: Tensor, grad_pred, grad_target) -> list:
    """The arguments every native motion-loss launcher takes, in the order of csrc/*/bindings.cpp, up to the
    device-specific tail (thread count on the CPU, stream and device on CUDA)."""
    B, T, J, D = pred.shape
    return [
        str(pred.dtype).removeprefix("torch."),
        pred.data_ptr(), pred.stride(0), target.data_ptr(), target.stride(0),
        B, T, J, D, list(opts.intervals),
        CODES["operator"][opts.operator], CODES["normalize"][opts.normalize], opts.eps,
        CODES["reduction"][opts.reduction],
        den.data_ptr(), loss.data_ptr(),
        grad_pred.data_ptr() if grad_pred is not None else 0,
        grad_target.data_ptr() if grad_target is not None else 0,
    ]
