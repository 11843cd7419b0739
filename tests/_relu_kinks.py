"""Keeping a 16-bit block comparison away from the ReLUs' kinks.

A ReLU input within rounding of zero may land on either side of it in two correct 16-bit computations, and its
gradient then differs by the whole upstream value, spread by BatchNorm's backward over the channel and by the
convolutions over the input: on an H200 a bfloat16 output element at 0.0024 (float64) was 0 in the fused block and
0.0039 in the reference, and dx differed by 0.14 in 81 of 210 elements. Such data tests nothing but luck, so a
16-bit comparison (`clear_relu_kinks`) first

- places BatchNorm 1's ReLU threshold of every channel (through tcn.0.bias, in both blocks) in a gap between
  that channel's normalised values, away from each of them by a margin: every element's mask is decided by more
  than the rounding can move it. Of the wide enough gaps it takes the one that splits the channel most evenly, so
  the ReLU still zeroes part of the channel; a channel without one (many elements, narrow gaps) is passed whole;
- zeroes the output gradient wherever the output ReLU's input is within a margin of zero (the output there is
  still compared; only the derivative of the kink is left out).

The results are then measured against the same block in float64 on the same 16-bit data
(`close_or_as_accurate`).

A margin is `FACTOR` times the largest error of the 16-bit reference block's own ReLU inputs, measured against the
same block in float64 on the same data (the fused block rounds no more often than the reference: its sums are
float32). Checked on the CPU over 100 inputs per 16-bit dtype (the contract's passes; Triton's interpreter in
float16): without this, 31 of 50 bfloat16 runs failed; with it, none.
"""
import copy

import torch

from _tolerances import RTOL, SCALED_ATOL

UNIT_ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
FACTOR = 2.0


def _relu_inputs(block, x):
    """(input of BatchNorm 1, input of the output ReLU) of a copy of the training-mode `block` on x: the copy keeps
    `block`'s running statistics as they are."""
    twin = copy.deepcopy(block)
    seen = {}
    hooks = [twin.tcn[0].register_forward_pre_hook(lambda _, args: seen.__setitem__("z", args[0].detach().clone())),
             twin.relu.register_forward_pre_hook(lambda _, args: seen.__setitem__("out", args[0].detach().clone()))]
    with torch.no_grad():
        twin(x.detach())
    for hook in hooks:
        hook.remove()
    return seen["z"].double(), seen["out"].double()


def _normalised(z, eps):
    """Per channel (dim 1) batch-normalised z, as channels x elements."""
    rows = z.transpose(0, 1).reshape(z.shape[1], -1)
    mean = rows.mean(1, keepdim=True)
    return (rows - mean) / (rows.var(1, unbiased=False, keepdim=True) + eps).sqrt()


def _place_bn1_thresholds(reference, fused, x, dtype) -> None:
    bn = reference.tcn[0]
    z16, _ = _relu_inputs(reference, x)
    z64, _ = _relu_inputs(copy.deepcopy(reference).double(), x.double())
    zhat64, zhat16 = _normalised(z64, bn.eps), _normalised(z16, bn.eps)
    margins = FACTOR * (zhat16 - zhat64).abs().amax(1)
    weight = bn.weight.detach().double()
    bias = torch.empty_like(weight)
    for c, (values, margin) in enumerate(zip(zhat64.sort(1).values, margins)):
        # Among the gaps wider than twice the margin (plus the 16-bit bias's rounding of the threshold), the one
        # that splits the channel most evenly; a channel with none (many elements) gets its threshold below every
        # element: the ReLU passes it whole.
        middles = (values[1:] + values[:-1]) / 2
        wide = (values[1:] - values[:-1]) > 2 * (margin + 2 * UNIT_ROUNDOFF[dtype] * middles.abs())
        below = torch.arange(1, len(values), device=values.device)
        balance = torch.minimum(below, len(values) - below).masked_fill(~wide, -1)
        i = int(balance.argmax())
        if balance[i] > 0:
            threshold = middles[i]
        else:  # beyond every element on the side the ReLU passes (above them for a negative weight)
            threshold = values[0] - 4 * margin - 1 if weight[c] >= 0 else values[-1] + 4 * margin + 1
        bias[c] = -weight[c] * threshold  # weight 0: bias 0, every input of the channel exactly 0, no kink to round
    bias = bias.to(dtype)
    with torch.no_grad():
        reference.tcn[0].bias.copy_(bias)
        fused.tcn[0].bias.copy_(bias)
    # the threshold the 16-bit bias really sets, in normalised units, against every element
    live = weight != 0
    thresholds = -bias.double()[live] / weight[live]
    distance = (zhat64[live] - thresholds[:, None]).abs().amin(1)
    assert bool((distance > margins[live]).all()), "test data: a rounded threshold fell within the margin"


def clear_relu_kinks(reference, fused, x, dout, dtype):
    """Before a 16-bit training step of `reference` and `fused` (same state) on x, with output gradient dout:
    moves BatchNorm 1's thresholds clear of the data (both blocks) and returns dout zeroed at the output elements
    at the output ReLU's kink (see the module docstring). The blocks must already hold the dropout mask the step
    uses (give_reference_the_fused_mask)."""
    _place_bn1_thresholds(reference, fused, x, dtype)
    _, out16 = _relu_inputs(reference, x)
    _, out64 = _relu_inputs(copy.deepcopy(reference).double(), x.double())
    margin = FACTOR * (out16 - out64).abs().max()
    at_kink = (out64.abs() <= margin) & (out64 != 0)  # exact zeros (dropped, no residual) are zero in every dtype
    assert at_kink.float().mean() < 0.5, "test data: most outputs sit at the ReLU's kink"
    return dout.masked_fill(at_kink.to(dout.device), 0)


def close_or_as_accurate(actual, reference, exact, dtype, scale=None, what=""):
    """16-bit results of a whole block: `actual` within the dtype's tolerances of `exact` (the same computation in
    float64 on the same 16-bit data), or, where rounding alone exceeds them, within 4 x the tolerances everywhere
    and with an error no larger (root mean square over the tensor) than twice the 16-bit `reference` block's. Measured against the 16-bit reference alone,
    the test would charge the fused block with the reference's own rounding (in bfloat16 on the CPU the reference
    was 0.53 off a bias gradient whose exact value is 0; the fused block's float32 sums: 0.02); elementwise, two
    equally accurate blocks differ by luck where a gradient is a sum that cancels (a residual weight gradient of
    -38.0: the fused block -44.0, the reference -39.25, the same rounding of the same terms)."""
    assert actual is not None and actual.shape == exact.shape and actual.dtype == dtype, what
    rtol, atol = RTOL[dtype], SCALED_ATOL[dtype]
    exact = exact.detach().double().cpu()
    if scale is None:
        scale = exact.abs().max().item() if exact.numel() else 1.0
    error = actual.detach().double().cpu() - exact
    allowed = atol * scale + rtol * exact.abs()
    if bool((error.abs() <= allowed).all()):
        return
    rms = error.pow(2).mean().sqrt().item()
    reference_rms = (reference.detach().double().cpu() - exact).pow(2).mean().sqrt().item()
    worst = int((error.abs() / allowed).argmax())
    # no element far outside the tolerances (an error confined to one element hardly moves a root mean square)
    assert error.abs().flatten()[worst] <= 4 * allowed.flatten()[worst] and rms <= 2 * reference_rms, (
        f"{what}: {error.abs().max().item():.3g} from the float64 result (largest; {rms:.3g} root mean square; "
        f"{(error.abs() / allowed).max().item():.2g} x the {dtype} tolerance at worst), beyond the tolerances and, "
        f"either by more than 4 x at one element or in root mean square, beyond twice the {dtype} reference's error "
        f"({reference_rms:.3g})")


def float64_twin_step(block, x, dout):
    """The training step of a float64 copy of `block` (its state and dropout mask) on the same 16-bit x and dout:
    (output, input gradient, parameter gradients in `named_parameters` order), what 16-bit results are measured
    against."""
    twin = copy.deepcopy(block).double()
    x64 = x.detach().double().requires_grad_(True)
    out = twin(x64)
    grads = torch.autograd.grad(out, [x64, *twin.parameters()], dout.double())
    return out.detach(), grads[0], list(grads[1:])


def assert_16_bit_step(actual, reference, exact, names, dtype, what):
    """actual, reference, exact: (output, input gradient, parameter gradients) of a 16-bit training step of the block
    under test, of the 16-bit reference block and of the float64 twin (float64_twin_step), each compared with
    close_or_as_accurate. A parameter gradient sums products of the block's activations and gradients rounded at 16
    bits: its error scales with the block's largest gradient, not with its own (often cancelled) value."""
    close_or_as_accurate(actual[0], reference[0], exact[0], dtype, what=f"{what}: output")
    close_or_as_accurate(actual[1], reference[1], exact[1], dtype, what=f"{what}: input gradient")
    scale = max(float(g.abs().max()) for g in exact[2])
    for name, a, r, e in zip(names, actual[2], reference[2], exact[2]):
        close_or_as_accurate(a, r, e, dtype, scale=scale, what=f"{what}: gradient of {name}")
