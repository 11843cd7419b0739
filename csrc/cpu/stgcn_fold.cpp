// See stgcn_fold.h. Compiled as the build says (no FMA contraction, unlike stgcn_gemm.cpp): every sum and product
// here is the one torch computes in fold_eval_weights, rounded where torch rounds. The large operands (the
// weights) are not folded here but scaled while they are packed (WeightOperand::col_scale, GcnOperands::scale):
// one product each, rounded once, as torch's elementwise product.
#include "stgcn_fold.h"

#include <cmath>
#include <vector>

namespace ugcn {
namespace cpu {
namespace {

struct FoldedBatchNorm {
  std::vector<double> scale, shift;
};

template <typename T>
FoldedBatchNorm fold_batch_norm(const BatchNormOperands<T>& bn, int64_t C) {
  FoldedBatchNorm f{std::vector<double>(static_cast<size_t>(C)), std::vector<double>(static_cast<size_t>(C))};
  for (int64_t c = 0; c < C; ++c) {
    f.scale[c] = double(bn.weight[c]) * (1.0 / std::sqrt(double(bn.running_var[c]) + bn.eps));  // torch.rsqrt
    f.shift[c] = double(bn.bias[c]) - double(bn.running_mean[c]) * f.scale[c];
  }
  return f;
}

template <typename T>
std::vector<T> rounded(const std::vector<double>& values) {
  return std::vector<T>(values.begin(), values.end());
}

}  // namespace

template <typename T>
PackedEvalBlock<T> pack_eval_block(const EvalBlockOperands<T>& b, int order, int threads) {
  const int64_t C_out = b.C_out, C_in = b.C_in;
  const FoldedBatchNorm bn1 = fold_batch_norm(b.bn1, C_out), bn2 = fold_batch_norm(b.bn2, C_out);
  const std::vector<T> scale1 = rounded<T>(bn1.scale), shift1 = rounded<T>(bn1.shift);
  const std::vector<T> scale2 = rounded<T>(bn2.scale), shift2 = rounded<T>(bn2.shift);
  // the temporal convolution's bias with B2, + the convolution residual's with B3 (in T, in torch's order)
  std::vector<T> bias(static_cast<size_t>(C_out));
  for (int64_t c = 0; c < C_out; ++c) bias[c] = b.tcn_bias[c] * scale2[c] + shift2[c];
  std::vector<T> scale3;
  if (b.residual_weight) {
    const FoldedBatchNorm bn3 = fold_batch_norm(b.bn3, C_out);
    scale3 = rounded<T>(bn3.scale);
    const std::vector<T> shift3 = rounded<T>(bn3.shift);
    for (int64_t c = 0; c < C_out; ++c) bias[c] = (bias[c] + b.residual_bias[c] * scale3[c]) + shift3[c];
  }
  const GcnForward p{0, b.V, b.K, C_in, C_out, b.A};
  PackedEvalBlock<T> packed;
  packed.graph = pack_gcn(p, GcnOperands<T>{b.gcn_weight, b.gcn_bias, scale1.data(), shift1.data(), false}, order,
                          threads);
  // tcn.2's weight (C_out, C_in = C_out, taps) and residual.0's (C_out, C_in), read in place, scaled per channel
  const WeightOperand<T> taps{b.tcn_weight, b.taps, C_out * b.taps, scale2.data()};
  const WeightOperand<T> term{b.residual_weight, 1, C_in, b.residual_weight ? scale3.data() : nullptr};
  packed.temporal = pack_conv_frames(ConvFramesOperands<T>{b.taps, C_out, C_out, taps, 1, bias.data(), term,
                                                           b.residual_weight ? C_in : 0},
                                     threads);
  return packed;
}

template PackedEvalBlock<float> pack_eval_block<float>(const EvalBlockOperands<float>&, int, int);
template PackedEvalBlock<double> pack_eval_block<double>(const EvalBlockOperands<double>&, int, int);

}  // namespace cpu
}  // namespace ugcn
