// Host-side declarations of the CUDA passes of the fused ST-GCN block (csrc/cuda/stgcn_block.cu), shared with the
// pybind11 bindings (csrc/cuda/bindings.cpp). Plain C++: no CUDA or torch headers, so g++ compiles the bindings.
//
// The executable contract of every pass is ugcn_fast/backends/torch_stgcn.py; the layout is time-major and
// channels-last (rows x C matrices, channels contiguous; see ugcn_fast/ops/stgcn_block.py). Tensors travel as raw
// device addresses of contiguous buffers. The Python layer (ugcn_fast/backends/cuda_stgcn.py) owns every buffer
// (outputs and the float64 workspace included) and has validated shapes, dtypes and devices. Every function only
// enqueues kernels on `stream` (asynchronous, no allocation, no host-device copy) and throws
// std::invalid_argument for arguments no kernel can serve, std::runtime_error for a CUDA error.
//
// Reductions are deterministic: per-block partials in a fixed order into the workspace, then a second kernel that
// sums them in a fixed order. No atomics.
#pragma once

#include <cstdint>

#include "motion_loss_cuda.h"  // DType

namespace ugcn {
namespace gpu {

// Largest joint count V the graph aggregation serves (the adjacency and a group's rows are staged per block).
constexpr int kStgcnMaxJoints = 64;

struct StgcnLaunch {
  std::uintptr_t stream = 0;  // cudaStream_t
  int device_index = 0;
};

// out = M-aggregation of src over the joints of every group, M[k] = A[k] or A[k]^T (transpose), A (K, V, V) in the
// dtype of src:  contract: src (G, V, K*C) -> out (G, V, C) (+ bias_map (V, C) when non-zero);
//                expand:   src (G, V, C)   -> out (G, V, K*C).
// Zero entries of A are skipped: non-edges contribute exact zeros (as the CPU backend).
struct StgcnGraphAggregate {
  DType dtype = DType::kFloat32;
  std::uintptr_t src = 0, A = 0, bias_map = 0, out = 0;
  std::int64_t G = 0, K = 0, V = 0, C = 0;
  bool contract = true, transpose = false;
};
void stgcn_graph_aggregate(const StgcnGraphAggregate& a, const StgcnLaunch& launch);

// Workspace sizes, in float64 elements, of the passes that reduce.
std::int64_t stgcn_stats_workspace(std::int64_t rows, std::int64_t C);
std::int64_t stgcn_block_output_backward_workspace(std::int64_t rows, std::int64_t C, bool conv_residual);
std::int64_t stgcn_bn_relu_phases_backward_workspace(std::int64_t T, std::int64_t N, std::int64_t V, std::int64_t C);

// Per-channel sum and sum of squares (float64) of x (rows, C). With bias_map (V, C) non-zero, rows = G * V and
// y = x + bias_map[row % V] is written to `y` first and its statistics taken (bias_map_stats).
struct StgcnChannelStats {
  DType dtype = DType::kFloat32;
  std::uintptr_t x = 0, bias_map = 0, y = 0;
  std::int64_t rows = 0, C = 0, V = 1;
  std::uintptr_t sum = 0, sumsq = 0;  // (C,) float64
  std::uintptr_t workspace = 0;       // stgcn_stats_workspace(rows, C) float64
  std::int64_t workspace_size = 0;
};
void stgcn_channel_stats(const StgcnChannelStats& a, const StgcnLaunch& launch);

// h_ph (stride, Tq, N*V, C) = phase buffer of relu(z * scale[c] + shift_map[v, c]), z (T, N*V, C).
struct StgcnBnReluPhases {
  DType dtype = DType::kFloat32;
  std::uintptr_t z = 0, scale = 0, shift_map = 0, h_ph = 0;
  std::int64_t T = 0, N = 0, V = 1, C = 0, stride = 1, pad = 0, Tq = 0;
};
void stgcn_bn_relu_phases(const StgcnBnReluPhases& a, const StgcnLaunch& launch);

// Dropout without a mask tensor (csrc/stgcn_block_math.h dropout_multiplier): element e of the time-major (rows, C)
// activation is multiplied by keep_scale when dropout_bits24(seed, e) >= threshold, else by 0; the function
// torch_stgcn.dropout_multipliers materialises.
struct StgcnHashedDropout {
  bool enabled = false;
  std::int64_t seed = 0;        // its two's-complement bits are the hash's uint64 seed
  std::uint32_t threshold = 0;  // round(p * 2^24)
  double keep_scale = 1.0;      // 1 / (1 - p), already rounded to the dtype
};

// out (rows, C) = relu((u * scale2 + shift2) * mask + residual); residual = res * scale3 + shift3 (scale3
// non-zero), res (scale3 zero) or 0 (res zero); dropout's multipliers from `mask` (rows, C), or hashed, or none.
// Per-channel vectors in the dtype.
struct StgcnBlockOutput {
  DType dtype = DType::kFloat32;
  std::uintptr_t u = 0, scale2 = 0, shift2 = 0, mask = 0, res = 0, scale3 = 0, shift3 = 0, out = 0;
  StgcnHashedDropout dropout;
  std::int64_t rows = 0, C = 0;
};
void stgcn_block_output(const StgcnBlockOutput& a, const StgcnLaunch& launch);

enum StgcnResidual : int { kStgcnResidualNone = 0, kStgcnResidualIdentity = 1, kStgcnResidualConv = 2 };

// Backward of block_output in training (BatchNorm with batch statistics); torch_stgcn.block_output_backward.
// mean/invstd/weight: (C,) float64. Outputs du, dres (rows, C) in the dtype (dres unused without residual);
// dweight2, dbias2, dbias_t and, with the conv residual, dweight3, dbias3, dbias_r: (C,) float64.
struct StgcnBlockOutputBackward {
  DType dtype = DType::kFloat32;
  std::uintptr_t dout = 0, out = 0, u = 0, mask = 0;
  StgcnHashedDropout dropout;  // instead of mask: the multipliers the forward hashed
  std::uintptr_t mean2 = 0, invstd2 = 0, weight2 = 0;
  int residual = kStgcnResidualNone;
  std::uintptr_t r0 = 0, mean3 = 0, invstd3 = 0, weight3 = 0;
  std::uintptr_t du = 0, dres = 0;
  std::uintptr_t dweight2 = 0, dbias2 = 0, dweight3 = 0, dbias3 = 0, dbias_t = 0, dbias_r = 0;
  std::int64_t rows = 0, C = 0;
  std::uintptr_t workspace = 0;  // stgcn_block_output_backward_workspace(rows, C, residual == conv) float64
  std::int64_t workspace_size = 0;
};
void stgcn_block_output_backward(const StgcnBlockOutputBackward& a, const StgcnLaunch& launch);

// Backward of bn_relu_phases in training; torch_stgcn.bn_relu_phases_backward. dh_ph, h_ph (stride, Tq, N*V, C),
// z and dz (T, N*V, C) in the dtype; mean1/invstd1/weight1 (C,) float64; outputs dweight1, dbias1 (C,) and
// joint_sums (V, C) float64.
struct StgcnBnReluPhasesBackward {
  DType dtype = DType::kFloat32;
  std::uintptr_t dh_ph = 0, h_ph = 0, z = 0;
  std::uintptr_t mean1 = 0, invstd1 = 0, weight1 = 0;
  std::uintptr_t dz = 0, dweight1 = 0, dbias1 = 0, joint_sums = 0;
  std::int64_t T = 0, N = 0, V = 1, C = 0, stride = 1, pad = 0, Tq = 0;
  std::uintptr_t workspace = 0;  // stgcn_bn_relu_phases_backward_workspace(T, N, V, C) float64
  std::int64_t workspace_size = 0;
};
void stgcn_bn_relu_phases_backward(const StgcnBnReluPhasesBackward& a, const StgcnLaunch& launch);

}  // namespace gpu
}  // namespace ugcn
