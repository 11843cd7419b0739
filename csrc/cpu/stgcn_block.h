// CPU kernels of the fused ST-GCN block's memory-bound passes (OpenMP over rows, `omp simd` over channels).
// Contract, pass by pass: ugcn_fast/backends/torch_stgcn.py. Matrices are rows x C, channels contiguous; per
// channel statistics are float64. Every reduction is per-thread partials over a static row partition, summed in
// thread order: bitwise reproducible for a given thread count.
#pragma once

#include <cstdint>

namespace ugcn {
namespace cpu {

// The K adjacency subsets as sparse columns: for output joint w and subset k, the (v, M[k][v][w]) with a non-zero
// weight. Non-edges therefore contribute exact zeros (a NaN or Inf stays in its joint's neighbourhood; for finite
// inputs the result equals the dense einsum).
struct GraphAggregation {
  int64_t groups, V, K, C;  // src/out per group: contract (V, K*C) -> (V, C); expand (V, C) -> (V, K*C)
  bool contract;
  const double* M;  // (K, V, V), already transposed when the caller wants A^T
};

template <typename T>
void graph_aggregate(const GraphAggregation& g, const T* src, const T* bias_map, T* out, int threads);

// sums[0:C] = sum over rows, sums[C:2C] = sum of squares; with bias_map (V, C), y = x + bias_map[row % V] is
// written to `y` first and its statistics taken.
template <typename T>
void channel_stats(const T* x, int64_t rows, int64_t C, const T* bias_map, int64_t V, T* y, double* sums, int threads);

// Per-channel BatchNorm parameters for a backward pass, float64: mean, invstd, weight.
struct BatchNormSaved {
  const double* mean;
  const double* invstd;
  const double* weight;
};

struct Phases {
  int64_t T, rows, C, V, stride, pad, Tq;  // z (T, rows, C) -> phase buffer (stride, Tq, rows, C)
};

template <typename T>
void bn_relu_phases(const Phases& p, const T* z, const T* scale, const T* shift_map, T* h_ph, int threads);

// The block's input in its time-major layout: out (T, N, V, C)[t, n, v, c] = x (N, C, T, V)[n, c, t, v], both
// contiguous. One (n, t) per task: its C x V tile is read a channel row (V values) at a time and written as V rows
// of C, the C rows it reads staying in L1 while the V output rows are written.
template <typename T>
void to_time_major(const T* x, int64_t N, int64_t C, int64_t T_in, int64_t V, T* out, int threads);

// Dropout's multiplier of each element: none, a (rows, C) tensor of multipliers, or hashed from a seed
// (stgcn::dropout_multiplier, nothing stored).
template <typename T>
struct Dropout {
  enum Kind { kNone = 0, kMask = 1, kHashed = 2 } kind = kNone;
  const T* mask = nullptr;
  uint64_t seed = 0;
  uint32_t threshold = 0;
  T scale = T(1);
};

// out = relu((u * scale2 + shift2) * dropout + residual); residual = res * scale3 + shift3 (scale3 non-null),
// res (scale3 null) or 0 (res null).
template <typename T>
void block_output(int64_t rows, int64_t C, const T* u, const T* scale2, const T* shift2, Dropout<T> dropout,
                  const T* res, const T* scale3, const T* shift3, T* out, int threads);

enum ResidualKind { kResidualNone = 0, kResidualIdentity = 1, kResidualConv = 2 };

// Backward of block_output (training). Writes du (rows, C), dres (rows, C; identity: dL/dres, conv: dL/dr0), and
// into `sums` (6 x C doubles): dweight2, dbias2, dweight3, dbias3, dbias_t = sum du, dbias_r = sum dres (conv).
template <typename T>
void block_output_backward(int64_t rows, int64_t C, const T* dout, const T* out, const T* u, Dropout<T> dropout,
                           BatchNormSaved bn2, int residual, const T* r0, BatchNormSaved bn3, T* du, T* dres,
                           double* sums, int threads);

// Backward of bn_relu_phases (training): dz (T, rows, C); sums (2 x C): dweight1, dbias1; joint_sums (V, C).
template <typename T>
void bn_relu_phases_backward(const Phases& p, const T* dh_ph, const T* h_ph, const T* z, BatchNormSaved bn1, T* dz,
                             double* sums, double* joint_sums, int threads);

}  // namespace cpu
}  // namespace ugcn
