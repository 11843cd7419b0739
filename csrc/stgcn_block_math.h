// Per-element math of the fused ST-GCN block's memory-bound passes, shared by the CPU (csrc/cpu/stgcn_block.cpp)
// and CUDA (csrc/cuda/stgcn_block.cu) kernels, so the math the CPU tests cover is the math the GPU runs.
// The executable contract of every pass is ugcn_fast/backends/torch_stgcn.py.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define UGCN_HD __host__ __device__ __forceinline__
#else
#define UGCN_HD inline
#endif

namespace ugcn {
namespace stgcn {

// Where padded frame tp = t + pad of a stride-s temporal convolution's input lives in the phase buffer
// (s, Tq, rows, C): phase tp % s, slot tp / s. Frames whose slot is >= Tq are read by no tap and not stored.
struct PhaseSlot {
  int64_t phase, slot;
};
UGCN_HD PhaseSlot phase_slot(int64_t t, int64_t pad, int64_t stride) {
  const int64_t tp = t + pad;
  return PhaseSlot{tp % stride, tp / stride};
}

// torch.relu propagates NaN (max(x, 0) with NaN in x gives NaN); keep that so NaN inputs surface as in the
// reference instead of being silently zeroed.
template <typename T>
UGCN_HD T relu(T x) {
  return x < T(0) ? T(0) : x;
}

// ReLU's backward as autograd computes it for torch.relu (threshold_backward): 0 where the output is <= 0 (even for
// a NaN gradient), the gradient elsewhere, a NaN output included.
template <typename T>
UGCN_HD T relu_backward(T grad, T out) {
  return out <= T(0) ? T(0) : grad;
}

// BatchNorm backward with batch statistics, the per-element part: given the channel's reductions
// sum_dy = sum(dy), sum_dy_xhat = sum(dy * xhat) over its M rows,
//   dx = weight * invstd / M * (M * dy - sum_dy - xhat * sum_dy_xhat),  xhat = (x - mean) * invstd.
// Written as dx = k * (dy - mean_dy - xhat * mean_dy_xhat) with k = weight * invstd (computed once per channel).
template <typename T, typename Acc>
UGCN_HD T bn_backward_element(T dy, T x, Acc mean, Acc invstd, Acc k, Acc mean_dy, Acc mean_dy_xhat) {
  const Acc xhat = (Acc(x) - mean) * invstd;
  return T(k * (Acc(dy) - mean_dy - xhat * mean_dy_xhat));
}

// Dropout without a mask tensor: element e (its index in the time-major (rows, C) activation) is kept when 24
// uniform bits of splitmix64(seed + (e + 1) * golden) are >= threshold = round(p * 2^24), so P(keep) = 1 - p up
// to 2^-24. A counter-based hash: any thread recomputes any element's decision, forward and backward agree without
// storing anything, and the seed (drawn from torch's generator) makes torch.manual_seed reproduce the masks.
// ugcn_fast.backends.torch_stgcn.dropout_multipliers is the same function in torch.
UGCN_HD uint32_t dropout_bits24(uint64_t seed, uint64_t e) {
  uint64_t z = seed + (e + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z = z ^ (z >> 31);
  return static_cast<uint32_t>(z >> 40);
}

template <typename T>
UGCN_HD T dropout_multiplier(uint64_t seed, uint64_t e, uint32_t threshold, T scale) {
  return dropout_bits24(seed, e) >= threshold ? scale : T(0);
}

}  // namespace stgcn
}  // namespace ugcn
