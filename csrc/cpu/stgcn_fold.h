// The eval block's BatchNorms folded into its convolutions, and both eval kernels' weights packed, in one call
// from the parameters as the model holds them. An unfrozen eval block does this on every call: it is ugcn_fast's
// fold_eval_weights (ugcn_fast/ops/stgcn_block.py) followed by the packing, bitwise, without that function's ~35
// small tensor operations a block and the copies of the folded weights. Launcher: pack_eval_block in
// ugcn_fast/backends/cpu_stgcn.py.
#pragma once

#include <cstdint>
#include <memory>

#include "stgcn_gemm.h"

namespace ugcn {
namespace cpu {

// BatchNorm in eval: y = x * scale + shift, scale = weight / sqrt(running_var + eps), shift = bias - running_mean *
// scale, computed in float64 and rounded to T, as fold_eval_weights computes them.
template <typename T>
struct BatchNormOperands {
  const T *weight, *bias, *running_mean, *running_var;
  double eps;
};

template <typename T>
struct EvalBlockOperands {
  int64_t V, K, C_in, C_out;
  int taps;
  const double* A;                           // (K, V, V), the values rounded to T
  const T *gcn_weight, *gcn_bias;            // gcn.conv: (K*C_out, C_in), (K*C_out)
  const T *tcn_weight, *tcn_bias;            // tcn.2: (C_out, C_out, taps), (C_out)
  const T *residual_weight, *residual_bias;  // residual.0: (C_out, C_in), (C_out); null: no convolution residual
  BatchNormOperands<T> bn1, bn2, bn3;        // tcn.0, tcn.3, residual.1 (bn3 only with the convolution residual)
};

template <typename T>
struct PackedEvalBlock {
  std::shared_ptr<const GcnWeights<T>> graph;            // for gcn_relu_phases_packed: B1 folded in
  std::shared_ptr<const ConvFramesWeights<T>> temporal;  // for conv_frames_packed: B2 (and B3) folded in
};

template <typename T>
PackedEvalBlock<T> pack_eval_block(const EvalBlockOperands<T>& operands, int order, int threads);

}  // namespace cpu
}  // namespace ugcn
