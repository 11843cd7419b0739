// CUDA backend of the fused ST-GCN block's memory-bound passes (SPEC §3). The executable contract of every pass
// is ugcn_fast/backends/torch_stgcn.py; the orchestration that calls them is ugcn_fast/ops/stgcn_block.py.
//
// Layout: rows x C matrices, channels contiguous (time-major activations, rows (t, n, v)). Every elementwise and
// reduction pass maps a block of kThreads threads onto a tile of ty rows x tx consecutive columns (tx = 32, or
// the next power of two >= C when C is smaller), so a warp reads and writes consecutive channels; a thread keeps
// one column for the whole pass (its per-channel parameters live in registers) and walks its rows with a fixed
// step, keeping row -> (phase, slot, frame, joint) decompositions with additions, not divisions, per row
// (ModCounter, Radix2Walk).
//
// Reductions (channel statistics, the BatchNorm backward reductions) are deterministic and atomic-free:
//   pass 1 (reduce_kernel): block (chunk of rows, column tile) sums its rows per thread in row order, then a
//          fixed-shape shared-memory tree over the tile's rows, and writes one partial per column and chunk into
//          the float64 workspace; the chunk count depends on the shape only, never on the device;
//   pass 2 (finalize_kernel): per column, the partials summed in chunk order (8 lanes, then a fixed tree), then
//          the pass's per-channel epilogue (statistics, BatchNorm gradients, the coefficients the apply pass uses).
// The backward passes then run an apply kernel in which every output element is computed by one thread.
// Sums of quantities that are only needed in total (sum of du for the tcn bias, sum of dz per joint for the gcn
// bias) come from the same reductions in closed form, sum_r k (dy_r - mean_dy - xhat_r mean_dy_xhat) =
// k (S_dy - n mean_dy - S_xhat mean_dy_xhat), instead of a third pass over the output.
//
// Graph aggregation: one block per unit (a few groups x a tile of channels), looping over units. The adjacency is
// staged once per block in shared memory as compressed columns (the non-zero (v, k) entries of each output joint,
// so a skeleton's ~95% zeros cost nothing; non-edges contribute exact zeros, as in the CPU backend), the unit's
// source rows are staged next, and every output element is one thread's fixed-order sum. Adjacencies too large
// for the shared-memory budget are read from global memory (dense, zeros skipped, same summation order).
//
// Elementwise arithmetic mirrors the contract's rounding: each torch op in dtype T rounds its result to T, so the
// passes compute in the accumulation type (float, double for float64) and round to T after each op (round_to);
// statistics accumulate in float64. Per-element math shared with the CPU backend: ../stgcn_block_math.h.

#include "half_types.h"
#include "host_checks.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "stgcn_block_cuda.h"
#include "stgcn_block_math.h"

namespace ugcn {
namespace gpu {
namespace {

namespace math = ::ugcn::stgcn;

// ---- configuration (fixed: the reduction shapes, and with them the bits of every sum, depend on it) ----------
constexpr int kThreads = 256;                 // threads per block of every kernel
static_assert((kThreads & (kThreads - 1)) == 0, "the reduction trees need a power-of-two block");
constexpr int kMaxTileWidth = 32;             // columns of a thread tile: one warp spans 32 consecutive channels
constexpr std::int64_t kMinChunkRows = 128;   // a reduction block sums at least this many rows (when there are any)
constexpr std::int64_t kReduceBlocks = 2048;  // reduction blocks aimed at (row chunks x column tiles)
constexpr std::int64_t kMaxChunks = 1024;     // bounds the workspace and the second pass's loop
constexpr std::int64_t kApplyBlocks = 2048;   // elementwise passes: at most this many blocks, grid-stride beyond
constexpr std::int64_t kMaxGridY = 65535;     // gridDim.y limit; column tiles beyond it are looped over
constexpr int kFinalLanes = 32;               // second reduction pass: 32 columns x 8 chunk lanes per block
constexpr int kFinalRows = kThreads / kFinalLanes;
constexpr std::int64_t kFinalBlocks = 4096;
constexpr std::int64_t kChannelBlocks = 4096;
constexpr std::int64_t kGraphBlocks = 1024;   // graph aggregation: persistent blocks (adjacency staged once each)
constexpr std::size_t kSmemBudget = 48 * 1024;     // dynamic shared memory of the graph aggregation (no opt-in)
constexpr std::size_t kSmemAdjBudget = 32 * 1024;  // ... of which the compressed adjacency may take at most this
constexpr int kGraphUnitOutputs = 512;        // outputs aimed at per graph-aggregation unit

// ---- scalar types -------------------------------------------------------------------------------------------
template <typename T>
struct Scalar;
template <>
struct Scalar<float> {
  using acc = float;
  __device__ __forceinline__ static float to(float x) { return x; }
  __device__ __forceinline__ static float from(float x) { return x; }
};
template <>
struct Scalar<double> {
  using acc = double;
  __device__ __forceinline__ static double to(double x) { return x; }
  __device__ __forceinline__ static double from(double x) { return x; }
};
template <>
struct Scalar<__half> {
  using acc = float;
  __device__ __forceinline__ static float to(__half x) { return __half2float(x); }
  __device__ __forceinline__ static __half from(float x) { return __float2half_rn(x); }
};
template <>
struct Scalar<__nv_bfloat16> {
  using acc = float;
  __device__ __forceinline__ static float to(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ __forceinline__ static __nv_bfloat16 from(float x) { return __float2bfloat16_rn(x); }
};

template <typename T>
using acc_t = typename Scalar<T>::acc;

template <typename T>
__device__ __forceinline__ acc_t<T> load(const T* p, std::int64_t i) {
  return Scalar<T>::to(p[i]);
}
template <typename T>
__device__ __forceinline__ void store(T* p, std::int64_t i, acc_t<T> v) {
  p[i] = Scalar<T>::from(v);
}
// The value a torch op in dtype T leaves: computed in the accumulation type, rounded to T.
template <typename T>
__device__ __forceinline__ acc_t<T> round_to(acc_t<T> v) {
  return Scalar<T>::to(Scalar<T>::from(v));
}

__host__ __device__ __forceinline__ std::int64_t min64(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// Walks r = r0, r0 + step, r0 + 2 step, ... keeping rem = r % m with additions only.
struct ModCounter {
  std::int64_t rem, step_rem, m;
  __device__ __forceinline__ ModCounter(std::int64_t r0, std::int64_t step, std::int64_t m_)
      : rem(r0 % m_), step_rem(step % m_), m(m_) {}
  __device__ __forceinline__ void advance() {
    rem += step_rem;  // both < m: one wrap at most
    if (rem >= m) rem -= m;
  }
};

// Walks x = x0, x0 + step, ... as the digits x = d0 + m0 * (d1 + m1 * d2), d0 < m0, d1 < m1, with additions only.
struct Radix2Walk {
  std::int64_t d0, d1, d2, s0, s1, s2, m0, m1;
  // From the digits of x0 (d0_ < m0_, d1_ < m1_).
  __device__ __forceinline__ Radix2Walk(std::int64_t d0_, std::int64_t d1_, std::int64_t d2_, std::int64_t step,
                                        std::int64_t m0_, std::int64_t m1_)
      : d0(d0_), d1(d1_), d2(d2_), s0(step % m0_), s1((step / m0_) % m1_), s2((step / m0_) / m1_), m0(m0_), m1(m1_) {}
  __device__ __forceinline__ void advance() {
    d0 += s0;
    d1 += s1;
    d2 += s2;
    if (d0 >= m0) {  // d0 + s0 < 2 m0
      d0 -= m0;
      ++d1;
    }
    if (d1 >= m1) {  // d1 + s1 + 1 < 2 m1
      d1 -= m1;
      ++d2;
    }
  }
};

__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char ugcn_stgcn_smem[];
  return ugcn_stgcn_smem;
}

// ---- launch geometry ----------------------------------------------------------------------------------------
struct ColumnTiles {
  int tx, ty;          // threads per tile row (power of two <= 32) and tile rows, tx * ty = kThreads
  std::int64_t tiles;  // column tiles covering the columns
};

ColumnTiles column_tiles(std::int64_t cols) {
  int tx = 1;
  while (tx < kMaxTileWidth && tx < cols) tx *= 2;
  return ColumnTiles{tx, kThreads / tx, ceil_div(cols, tx)};
}

unsigned int grid_y(std::int64_t tiles) { return static_cast<unsigned int>(std::min(tiles, kMaxGridY)); }

// Pass 1 of a reduction over a rows x cols matrix: block (chunk, tile) sums rows [chunk * chunk_rows, ...).
struct ReduceGeom {
  std::int64_t rows, cols, chunk_rows, tiles, chunks;
  int tx, ty;
};

ReduceGeom reduce_geom(std::int64_t rows, std::int64_t cols) {
  const ColumnTiles t = column_tiles(cols);
  std::int64_t chunks = std::min(ceil_div(rows, kMinChunkRows), ceil_div(kReduceBlocks, std::max<std::int64_t>(t.tiles, 1)));
  chunks = std::max<std::int64_t>(1, std::min(chunks, kMaxChunks));
  return ReduceGeom{rows, cols, ceil_div(rows, chunks), t.tiles, chunks, t.tx, t.ty};
}

std::int64_t partials_size(std::int64_t rows, std::int64_t cols, int n_acc) {
  if (cols <= 0) return 0;
  return reduce_geom(rows, cols).chunks * n_acc * cols;
}

struct ApplyGeom {
  std::int64_t rows, cols, tiles;
  int tx, ty;
};

ApplyGeom apply_geom(std::int64_t rows, std::int64_t cols) {
  const ColumnTiles t = column_tiles(cols);
  return ApplyGeom{rows, cols, t.tiles, t.tx, t.ty};
}

dim3 apply_grid(const ApplyGeom& g) {
  const std::int64_t max_x = std::max<std::int64_t>(1, ceil_div(kApplyBlocks, g.tiles));
  const std::int64_t x = std::max<std::int64_t>(1, std::min(ceil_div(g.rows, g.ty), max_x));
  return dim3(static_cast<unsigned int>(x), grid_y(g.tiles), 1);
}

// ---- generic kernels ----------------------------------------------------------------------------------------
// Op: kAcc, and run(col, r, r_end, step, acc) adding the column's rows r, r + step, ... < r_end into acc[kAcc].
template <class Op>
__global__ void __launch_bounds__(kThreads) reduce_kernel(const Op op, const ReduceGeom g, double* partial) {
  constexpr int NA = Op::kAcc;
  __shared__ double s[NA][kThreads];
  const int tid = threadIdx.x;
  const int lx = tid % g.tx;
  const int ly = tid / g.tx;
  const std::int64_t chunk = blockIdx.x;
  const std::int64_t r_first = chunk * g.chunk_rows + ly;
  const std::int64_t r_end = min64(g.rows, (chunk + 1) * g.chunk_rows);
  for (std::int64_t tile = blockIdx.y; tile < g.tiles; tile += gridDim.y) {
    const std::int64_t col = tile * g.tx + lx;
    double acc[NA];
    for (int a = 0; a < NA; ++a) acc[a] = 0.0;
    if (col < g.cols) op.run(col, r_first, r_end, g.ty, acc);
    for (int a = 0; a < NA; ++a) s[a][tid] = acc[a];
    __syncthreads();
    for (int h = g.ty / 2; h > 0; h /= 2) {  // fixed tree over the tile's rows
      if (ly < h) {
        for (int a = 0; a < NA; ++a) s[a][tid] += s[a][tid + h * g.tx];
      }
      __syncthreads();
    }
    if (ly == 0 && col < g.cols) {
      for (int a = 0; a < NA; ++a) partial[(chunk * NA + a) * g.cols + col] = s[a][tid];
    }
    __syncthreads();  // s is reused by the next tile
  }
}

// Fin: kAcc, and operator()(col, totals[kAcc]) finishing one column.
template <class Fin>
__global__ void __launch_bounds__(kThreads) finalize_kernel(const Fin fin, const double* partial, std::int64_t chunks,
                                                            std::int64_t cols) {
  constexpr int NA = Fin::kAcc;
  __shared__ double s[NA][kThreads];
  const int tid = threadIdx.x;
  const int lx = tid % kFinalLanes;
  const int ly = tid / kFinalLanes;
  const std::int64_t tiles = ceil_div(cols, kFinalLanes);
  for (std::int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const std::int64_t col = tile * kFinalLanes + lx;
    double acc[NA];
    for (int a = 0; a < NA; ++a) acc[a] = 0.0;
    if (col < cols) {
      for (std::int64_t k = ly; k < chunks; k += kFinalRows) {
        for (int a = 0; a < NA; ++a) acc[a] += partial[(k * NA + a) * cols + col];
      }
    }
    for (int a = 0; a < NA; ++a) s[a][tid] = acc[a];
    __syncthreads();
    for (int h = kFinalRows / 2; h > 0; h /= 2) {
      if (ly < h) {
        for (int a = 0; a < NA; ++a) s[a][tid] += s[a][tid + h * kFinalLanes];
      }
      __syncthreads();
    }
    if (ly == 0 && col < cols) {
      double total[NA];
      for (int a = 0; a < NA; ++a) total[a] = s[a][tid];
      fin(col, total);
    }
    __syncthreads();
  }
}

// Op: run(col, r, rows, step) writing the column's rows r, r + step, ... < rows.
template <class Op>
__global__ void __launch_bounds__(kThreads) apply_kernel(const Op op, const ApplyGeom g) {
  const int tid = threadIdx.x;
  const int lx = tid % g.tx;
  const int ly = tid / g.tx;
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * g.ty;
  const std::int64_t r_first = static_cast<std::int64_t>(blockIdx.x) * g.ty + ly;
  for (std::int64_t tile = blockIdx.y; tile < g.tiles; tile += gridDim.y) {
    const std::int64_t col = tile * g.tx + lx;
    if (col < g.cols) op.run(col, r_first, g.rows, step);
  }
}

// ---- BatchNorm backward, per channel ------------------------------------------------------------------------
// From a channel's reductions over its M rows, S_dy = sum dy, S_dy_dev = sum dy (x - mean), S_dev = sum (x - mean):
// dbias = S_dy, dweight = S_dy_dev * invstd, the coefficients of math::bn_backward_element and the sum of dx over
// the rows, k (S_dy - M mean_dy - S_xhat mean_dy_xhat) = -k S_xhat mean_dy_xhat.
struct BnBackwardChannel {
  double dweight, dbias, k, mean_dy, mean_dy_xhat, sum_dx;
};

__device__ __forceinline__ BnBackwardChannel bn_backward_channel(double weight, double invstd, double sum_dy,
                                                                 double sum_dy_dev, double sum_dev, double M) {
  BnBackwardChannel r;
  r.dbias = sum_dy;
  r.dweight = sum_dy_dev * invstd;
  r.k = weight * invstd;
  r.mean_dy = M > 0 ? sum_dy / M : 0.0;
  r.mean_dy_xhat = M > 0 ? r.dweight / M : 0.0;
  r.sum_dx = -r.k * (sum_dev * invstd) * r.mean_dy_xhat;
  return r;
}

// ---- channel_stats / bias_map_stats -------------------------------------------------------------------------
template <typename T>
struct StatsReduce {
  static constexpr int kAcc = 2;
  const T* x;
  const T* bias_map;  // (V, C) or null
  T* y;               // written when bias_map is set
  std::int64_t C, V;

  __device__ void run(std::int64_t c, std::int64_t r, std::int64_t r_end, std::int64_t step, double* acc) const {
    if (bias_map == nullptr) {
      for (; r < r_end; r += step) {
        const double v = static_cast<double>(load(x, r * C + c));
        acc[0] += v;
        acc[1] += v * v;
      }
      return;
    }
    if (r >= r_end) return;
    ModCounter joint(r, step, V);  // joint.rem = r % V
    for (; r < r_end; r += step, joint.advance()) {
      const std::int64_t i = r * C + c;
      const acc_t<T> v = round_to<T>(load(x, i) + load(bias_map, joint.rem * C + c));
      store(y, i, v);
      const double d = static_cast<double>(v);
      acc[0] += d;
      acc[1] += d * d;
    }
  }
};

struct StatsFinish {
  static constexpr int kAcc = 2;
  double* sum;
  double* sumsq;
  __device__ void operator()(std::int64_t c, const double* t) const {
    sum[c] = t[0];
    sumsq[c] = t[1];
  }
};

// ---- bn_relu_phases -----------------------------------------------------------------------------------------
// Output rows r = (phase * Tq + slot) * NV + row of the phase buffer; each is written exactly once, zeros where
// the slot holds no frame of [0, T).
template <typename T>
struct BnReluPhasesApply {
  const T* z;
  const T* scale;
  const T* shift_map;
  T* h_ph;
  std::int64_t T_, NV, V, C, stride, pad, Tq;

  __device__ void run(std::int64_t c, std::int64_t r, std::int64_t rows, std::int64_t step) const {
    if (r >= rows) return;
    const acc_t<T> sc = load(scale, c);
    const std::int64_t f = r / NV;
    Radix2Walk pos(r - f * NV, f % Tq, f / Tq, step, NV, Tq);  // d0 = row within the frame, d1 = slot, d2 = phase
    ModCounter joint(r, step, V);                              // NV is a multiple of V: r % V = row % V
    for (; r < rows; r += step, pos.advance(), joint.advance()) {
      const std::int64_t t = pos.d1 * stride + pos.d2 - pad;  // padded frame tp = slot * stride + phase
      acc_t<T> h = acc_t<T>(0);
      if (t >= 0 && t < T_) {
        const acc_t<T> scaled = round_to<T>(load(z, (t * NV + pos.d0) * C + c) * sc);
        h = math::relu(round_to<T>(scaled + load(shift_map, joint.rem * C + c)));
      }
      store(h_ph, r * C + c, h);
    }
  }
};

// ---- block_output -------------------------------------------------------------------------------------------
// Dropout's multiplier of element i of the time-major (rows, C) activation: read from a stored mask, hashed from
// a seed (math::dropout_multiplier, the function torch_stgcn.dropout_multipliers materialises), or none.
template <typename T>
struct Dropout {
  const T* mask;
  std::uint64_t seed;
  std::uint32_t threshold;
  acc_t<T> scale;  // 1 / (1 - p), rounded to T
  bool hashed;

  __device__ __forceinline__ bool active() const { return hashed || mask != nullptr; }
  __device__ __forceinline__ acc_t<T> at(std::int64_t i) const {
    return hashed ? math::dropout_multiplier<acc_t<T>>(seed, static_cast<std::uint64_t>(i), threshold, scale)
                  : load(mask, i);
  }
};

template <typename T>
struct BlockOutputApply {
  const T *u, *scale2, *shift2;
  Dropout<T> drop;
  const T *res, *scale3, *shift3;
  T* out;
  std::int64_t C;

  __device__ void run(std::int64_t c, std::int64_t r, std::int64_t rows, std::int64_t step) const {
    using A = acc_t<T>;
    const A s2 = load(scale2, c), b2 = load(shift2, c);
    const bool conv = scale3 != nullptr;
    const A s3 = conv ? load(scale3, c) : A(0), b3 = conv ? load(shift3, c) : A(0);
    const bool dropout = drop.active();
    for (; r < rows; r += step) {
      const std::int64_t i = r * C + c;
      A y = round_to<T>(round_to<T>(load(u, i) * s2) + b2);
      if (dropout) y = round_to<T>(y * drop.at(i));
      if (res != nullptr) {
        A rr = load(res, i);
        if (conv) rr = round_to<T>(round_to<T>(rr * s3) + b3);
        y = round_to<T>(y + rr);
      }
      store(out, i, math::relu(y));
    }
  }
};

// ---- block_output_backward ----------------------------------------------------------------------------------
// g = relu'(out) dout, d = g * mask (rounded to T like the contract's product): BN2's dy is d, BN3's is g.
template <typename T>
struct OutputGrad {
  const T *dout, *out;
  Dropout<T> drop;
  __device__ __forceinline__ void at(std::int64_t i, acc_t<T>& g, acc_t<T>& d) const {
    g = math::relu_backward(load(dout, i), load(out, i));
    d = drop.active() ? round_to<T>(g * drop.at(i)) : g;
  }
};

template <typename T, bool CONV>
struct BlockOutputBackwardReduce {
  static constexpr int kAcc = CONV ? 6 : 3;
  OutputGrad<T> grad;
  const T *u, *r0;
  const double *mean2, *mean3;
  std::int64_t C;

  __device__ void run(std::int64_t c, std::int64_t r, std::int64_t r_end, std::int64_t step, double* acc) const {
    const double m2 = mean2[c];
    const double m3 = CONV ? mean3[c] : 0.0;
    for (; r < r_end; r += step) {
      const std::int64_t i = r * C + c;
      acc_t<T> g, d;
      grad.at(i, g, d);
      const double dev2 = static_cast<double>(load(u, i)) - m2;
      acc[0] += static_cast<double>(d);
      acc[1] += static_cast<double>(d) * dev2;
      acc[2] += dev2;
      if constexpr (CONV) {
        const double dev3 = static_cast<double>(load(r0, i)) - m3;
        acc[3] += static_cast<double>(g);
        acc[4] += static_cast<double>(g) * dev3;
        acc[5] += dev3;
      }
    }
  }
};

// coef (6, C): k, mean_dy, mean_dy_xhat of BN2, then of BN3 (conv residual).
template <bool CONV>
struct BlockOutputBackwardFinish {
  static constexpr int kAcc = CONV ? 6 : 3;
  const double *invstd2, *weight2, *invstd3, *weight3;
  double M;
  std::int64_t C;
  double* coef;
  double *dweight2, *dbias2, *dbias_t, *dweight3, *dbias3, *dbias_r;

  __device__ void operator()(std::int64_t c, const double* t) const {
    const BnBackwardChannel b2 = bn_backward_channel(weight2[c], invstd2[c], t[0], t[1], t[2], M);
    dweight2[c] = b2.dweight;
    dbias2[c] = b2.dbias;
    dbias_t[c] = b2.sum_dx;
    coef[c] = b2.k;
    coef[C + c] = b2.mean_dy;
    coef[2 * C + c] = b2.mean_dy_xhat;
    if constexpr (CONV) {
      const BnBackwardChannel b3 = bn_backward_channel(weight3[c], invstd3[c], t[3], t[4], t[5], M);
      dweight3[c] = b3.dweight;
      dbias3[c] = b3.dbias;
      dbias_r[c] = b3.sum_dx;
      coef[3 * C + c] = b3.k;
      coef[4 * C + c] = b3.mean_dy;
      coef[5 * C + c] = b3.mean_dy_xhat;
    }
  }
};

template <typename T, bool CONV>
struct BlockOutputBackwardApply {
  OutputGrad<T> grad;
  const T *u, *r0;
  T *du, *dres;
  bool identity;  // dres = g (identity residual); unused with CONV
  const double *coef, *mean2, *invstd2, *mean3, *invstd3;
  std::int64_t C;

  __device__ void run(std::int64_t c, std::int64_t r, std::int64_t rows, std::int64_t step) const {
    using A = acc_t<T>;
    const A m2 = A(mean2[c]), is2 = A(invstd2[c]);
    const A k2 = A(coef[c]), mdy2 = A(coef[C + c]), mdx2 = A(coef[2 * C + c]);
    A m3 = A(0), is3 = A(0), k3 = A(0), mdy3 = A(0), mdx3 = A(0);
    if constexpr (CONV) {
      m3 = A(mean3[c]);
      is3 = A(invstd3[c]);
      k3 = A(coef[3 * C + c]);
      mdy3 = A(coef[4 * C + c]);
      mdx3 = A(coef[5 * C + c]);
    }
    for (; r < rows; r += step) {
      const std::int64_t i = r * C + c;
      A g, d;
      grad.at(i, g, d);
      store(du, i, math::bn_backward_element<A, A>(d, load(u, i), m2, is2, k2, mdy2, mdx2));
      if constexpr (CONV) {
        store(dres, i, math::bn_backward_element<A, A>(g, load(r0, i), m3, is3, k3, mdy3, mdx3));
      } else {
        if (identity) store(dres, i, g);
      }
    }
  }
};

// ---- bn_relu_phases_backward --------------------------------------------------------------------------------
// The matrix is z viewed as (T * N, V * C): row r = t * N + n, column j = v * C + c, so the per-(joint, channel)
// sums that the gcn bias gradient needs are plain column sums. The gradient reaching z[t] is relu'(h) dh at the
// frame's phase-buffer position, and 0 for frames no tap reads (slot >= Tq).
template <typename T>
struct PhaseGrad {
  const T *dh_ph, *h_ph;
  std::int64_t N, VC, stride, pad, Tq;

  // Rows r = t * N + n walked as (t + pad) * N + n = n + N * (phase + stride * slot): d0 = n, d1 = phase,
  // d2 = slot, starting from math::phase_slot of the first row's frame.
  __device__ __forceinline__ Radix2Walk walk(std::int64_t r, std::int64_t step) const {
    const std::int64_t t = r / N;
    const math::PhaseSlot ps = math::phase_slot(t, pad, stride);
    return Radix2Walk(r - t * N, ps.phase, ps.slot, step, N, stride);
  }
  __device__ __forceinline__ acc_t<T> at(const Radix2Walk& w, std::int64_t j) const {
    if (w.d2 >= Tq) return acc_t<T>(0);  // a frame no tap reads
    const std::int64_t i = ((w.d1 * Tq + w.d2) * N + w.d0) * VC + j;
    return math::relu_backward(load(dh_ph, i), load(h_ph, i));
  }
};

template <typename T>
struct BnReluBackwardReduce {
  static constexpr int kAcc = 3;
  PhaseGrad<T> grad;
  const T* z;
  const double* mean1;
  std::int64_t C;

  __device__ void run(std::int64_t j, std::int64_t r, std::int64_t r_end, std::int64_t step, double* acc) const {
    if (r >= r_end) return;  // also keeps N = 0 (no rows) away from the division
    const double m = mean1[j % C];
    for (Radix2Walk w = grad.walk(r, step); r < r_end; r += step, w.advance()) {
      const double g = static_cast<double>(grad.at(w, j));
      const double dev = static_cast<double>(load(z, r * grad.VC + j)) - m;
      acc[0] += g;
      acc[1] += g * dev;
      acc[2] += dev;
    }
  }
};

struct ColumnSumsFinish {
  static constexpr int kAcc = 3;
  double* sums;  // (kAcc, cols)
  std::int64_t cols;
  __device__ void operator()(std::int64_t col, const double* t) const {
    for (int a = 0; a < kAcc; ++a) sums[a * cols + col] = t[a];
  }
};

// Per channel: BN1's gradients from the (joint, channel) column sums, the coefficients of the apply pass
// (coef (3, C): k, mean_dy, mean_dy_xhat) and joint_sums[v, c] = sum over (t, n) of dz.
struct Bn1Channels {
  const double* colsum;  // (3, V * C): sum g, sum g (z - mean), sum (z - mean)
  const double *invstd, *weight;
  std::int64_t V, C;
  double TN, M;
  double *dweight, *dbias, *joint_sums, *coef;
};

__global__ void __launch_bounds__(kThreads) bn1_channel_kernel(const Bn1Channels p) {
  const std::int64_t VC = p.V * p.C;
  for (std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; c < p.C;
       c += static_cast<std::int64_t>(gridDim.x) * kThreads) {
    double s_g = 0.0, s_gdev = 0.0, s_dev = 0.0;
    for (std::int64_t v = 0; v < p.V; ++v) {
      s_g += p.colsum[v * p.C + c];
      s_gdev += p.colsum[VC + v * p.C + c];
      s_dev += p.colsum[2 * VC + v * p.C + c];
    }
    const double invstd = p.invstd[c];
    const BnBackwardChannel b = bn_backward_channel(p.weight[c], invstd, s_g, s_gdev, s_dev, p.M);
    p.dweight[c] = b.dweight;
    p.dbias[c] = b.dbias;
    p.coef[c] = b.k;
    p.coef[p.C + c] = b.mean_dy;
    p.coef[2 * p.C + c] = b.mean_dy_xhat;
    for (std::int64_t v = 0; v < p.V; ++v) {
      const double g = p.colsum[v * p.C + c];
      const double xhat = invstd * p.colsum[2 * VC + v * p.C + c];
      p.joint_sums[v * p.C + c] = b.k * (g - p.TN * b.mean_dy - xhat * b.mean_dy_xhat);
    }
  }
}

template <typename T>
struct BnReluBackwardApply {
  PhaseGrad<T> grad;
  const T* z;
  T* dz;
  const double *coef, *mean1, *invstd1;
  std::int64_t C;

  __device__ void run(std::int64_t j, std::int64_t r, std::int64_t rows, std::int64_t step) const {
    if (r >= rows) return;
    using A = acc_t<T>;
    const std::int64_t c = j % C;
    const A m = A(mean1[c]), is = A(invstd1[c]), k = A(coef[c]), mdy = A(coef[C + c]), mdx = A(coef[2 * C + c]);
    for (Radix2Walk w = grad.walk(r, step); r < rows; r += step, w.advance()) {
      const std::int64_t i = r * grad.VC + j;
      store(dz, i, math::bn_backward_element<A, A>(grad.at(w, j), load(z, i), m, is, k, mdy, mdx));
    }
  }
};

// ---- graph_aggregate ----------------------------------------------------------------------------------------
// Output column `col` of a group: contract col = w (sums over subset k and joint v), expand col = k * V + w (sums
// over v). Source tile of a unit: (groups, V, KS, ct) with KS = K (contract) or 1 (expand), so the source
// element of entry e (e = v * K + k, or v) for group gl and channel cc sits at (gl * V * KS + e) * ct + cc.
// Compressed adjacency: column col's non-zero entries at [col * cap, col * cap + count[col]), cap = KS * V.
template <typename T>
struct GraphParams {
  const T* src;
  const T* A;  // (K, V, V)
  const T* bias_map;
  T* out;
  std::int64_t G, C;
  int K, V;
  int ct, gb, n_ctiles;
  std::int64_t n_units;
  bool transpose, adj_in_smem;
  int off_vals, off_idx, off_count, off_tile;  // byte offsets in dynamic shared memory
};

template <typename T>
__device__ __forceinline__ acc_t<T> adjacency(const GraphParams<T>& p, int k, int v, int w) {
  const int V = p.V;
  return load(p.A, p.transpose ? (static_cast<std::int64_t>(k) * V + w) * V + v
                               : (static_cast<std::int64_t>(k) * V + v) * V + w);
}

template <typename T, bool CONTRACT>
__global__ void __launch_bounds__(kThreads) graph_aggregate_kernel(const GraphParams<T> p) {
  using A = acc_t<T>;
  unsigned char* smem = dynamic_smem();
  A* vals = reinterpret_cast<A*>(smem + p.off_vals);
  int* idx = reinterpret_cast<int*>(smem + p.off_idx);
  int* count = reinterpret_cast<int*>(smem + p.off_count);
  A* tile = reinterpret_cast<A*>(smem + p.off_tile);
  const int tid = threadIdx.x;
  const int V = p.V, K = p.K;
  const int KS = CONTRACT ? K : 1;
  const int KO = CONTRACT ? 1 : K;
  const int cap = KS * V;
  const std::int64_t C = p.C;
  const std::int64_t src_row = KS * C, out_row = KO * C;

  if (p.adj_in_smem) {  // compress the adjacency's columns, entries in (v, k) order
    for (int col = tid; col < KO * V; col += kThreads) {
      const int w = col % V;
      const int k_lo = CONTRACT ? 0 : col / V, k_hi = CONTRACT ? K : k_lo + 1;
      int n = 0;
      for (int v = 0; v < V; ++v) {
        for (int k = k_lo; k < k_hi; ++k) {
          const A m = adjacency(p, k, v, w);
          if (m != A(0)) {
            vals[col * cap + n] = m;
            idx[col * cap + n] = CONTRACT ? v * K + k : v;
            ++n;
          }
        }
      }
      count[col] = n;
    }
  }  // made visible by the first unit's barrier

  for (std::int64_t unit = blockIdx.x; unit < p.n_units; unit += gridDim.x) {
    const int ti = static_cast<int>(unit % p.n_ctiles);
    const std::int64_t g0 = (unit / p.n_ctiles) * p.gb;
    const int ng = static_cast<int>(min64(p.gb, p.G - g0));
    const std::int64_t c0 = static_cast<std::int64_t>(ti) * p.ct;
    const int cw = static_cast<int>(min64(p.ct, C - c0));

    const int n_in = ng * V * KS * cw;  // stage the unit's source rows, channels fastest
    for (int i = tid; i < n_in; i += kThreads) {
      const int cc = i % cw;
      int rest = i / cw;
      const int k = rest % KS;
      rest /= KS;
      const int v = rest % V;
      const int gl = rest / V;
      tile[((gl * V + v) * KS + k) * p.ct + cc] = load(p.src, ((g0 + gl) * V + v) * src_row + k * C + c0 + cc);
    }
    __syncthreads();

    const int n_out = ng * V * KO * cw;
    for (int o = tid; o < n_out; o += kThreads) {
      const int cc = o % cw;
      int rest = o / cw;
      const int ko = rest % KO;
      rest /= KO;
      const int w = rest % V;
      const int gl = rest / V;
      const A* base = tile + gl * V * KS * p.ct + cc;
      A sum = A(0);
      if (p.adj_in_smem) {
        const int col = ko * V + w;
        const int n = count[col];
        const A* mv = vals + col * cap;
        const int* me = idx + col * cap;
        for (int e = 0; e < n; ++e) sum += mv[e] * base[me[e] * p.ct];
      } else {
        const int k_lo = CONTRACT ? 0 : ko, k_hi = CONTRACT ? K : ko + 1;
        for (int v = 0; v < V; ++v) {
          for (int k = k_lo; k < k_hi; ++k) {
            const A m = adjacency(p, k, v, w);
            if (m != A(0)) sum += m * base[(CONTRACT ? v * K + k : v) * p.ct];
          }
        }
      }
      const std::int64_t row = (g0 + gl) * V + w;
      if (CONTRACT) {
        if (p.bias_map != nullptr) sum = round_to<T>(round_to<T>(sum) + load(p.bias_map, w * C + c0 + cc));
        store(p.out, row * out_row + c0 + cc, sum);
      } else {
        store(p.out, row * out_row + ko * C + c0 + cc, sum);
      }
    }
    __syncthreads();  // the tile is restaged by the next unit
  }
}

// ---- host side ----------------------------------------------------------------------------------------------
void check_cuda(cudaError_t err, const char* what) { throw_on_cuda_error(err, "stgcn", what); }

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

// The one launch site: every kernel runs kThreads threads per block on the caller's stream.
template <typename... Params, typename... Args>
void launch(const char* what, void (*kernel)(Params...), dim3 grid, std::size_t smem, cudaStream_t stream,
            Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > kMaxGridY || grid.z > kMaxGridY) {
    throw std::logic_error(std::string("ugcn_fast stgcn CUDA backend: bad grid for ") + what);
  }
  kernel<<<grid, kThreads, smem, stream>>>(std::forward<Args>(args)...);
  check_cuda(cudaGetLastError(), what);
}

template <typename T>
const T* in(std::uintptr_t address) {
  return reinterpret_cast<const T*>(address);
}
template <typename T>
T* out(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// Runs f(T{}) with T the storage type of `dtype`.
template <typename F>
void with_dtype(DType dtype, const char* what, F&& f) {
  switch (dtype) {
    case DType::kFloat32: f(float{}); return;
    case DType::kFloat64: f(double{}); return;
    case DType::kFloat16: f(__half{}); return;
    case DType::kBFloat16: f(__nv_bfloat16{}); return;
  }
  throw std::invalid_argument(std::string(what) + ": dtype must be float32, float64, float16 or bfloat16");
}

void require_workspace(std::int64_t have, std::int64_t need, const char* what) {
  require(have >= need, std::string(what) + ": the workspace holds " + std::to_string(have) +
                            " float64 elements, the pass needs " + std::to_string(need));
}

// Pass 1 then pass 2 of a reduction of a rows x cols matrix into the workspace's first partials_size elements.
template <class Op, class Fin>
void reduce(const char* what, const Op& op, const Fin& fin, std::int64_t rows, std::int64_t cols, double* workspace,
            cudaStream_t stream) {
  static_assert(Op::kAcc == Fin::kAcc, "the two passes must agree on the sums");
  const ReduceGeom g = reduce_geom(rows, cols);
  launch(what, reduce_kernel<Op>, dim3(static_cast<unsigned int>(g.chunks), grid_y(g.tiles), 1), 0, stream, op, g,
         workspace);
  const std::int64_t blocks = std::max<std::int64_t>(1, std::min(ceil_div(cols, kFinalLanes), kFinalBlocks));
  launch(what, finalize_kernel<Fin>, dim3(static_cast<unsigned int>(blocks), 1, 1), 0, stream, fin,
         static_cast<const double*>(workspace), g.chunks, cols);
}

template <class Op>
void apply(const char* what, const Op& op, std::int64_t rows, std::int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const ApplyGeom g = apply_geom(rows, cols);
  launch(what, apply_kernel<Op>, apply_grid(g), 0, stream, op, g);
}

std::size_t align16(std::size_t bytes) { return (bytes + 15) / 16 * 16; }

template <typename T>
Dropout<T> dropout(std::uintptr_t mask, const StgcnHashedDropout& h) {
  // keep_scale is 1 / (1 - p) already rounded to T by the caller: the float conversion below is exact.
  return Dropout<T>{in<T>(mask), static_cast<std::uint64_t>(h.seed), h.threshold,
                    static_cast<acc_t<T>>(h.keep_scale), h.enabled};
}

template <typename T>
void graph_aggregate_typed(const StgcnGraphAggregate& a, cudaStream_t stream) {
  const std::size_t acc = sizeof(acc_t<T>);
  const int K = static_cast<int>(a.K), V = static_cast<int>(a.V);
  const int KS = a.contract ? K : 1, KO = a.contract ? 1 : K;
  const std::size_t entries = static_cast<std::size_t>(K) * V * V;
  const std::size_t cols = static_cast<std::size_t>(KO) * V;
  GraphParams<T> p{};
  p.off_vals = 0;
  p.off_idx = static_cast<int>(align16(entries * acc));
  p.off_count = p.off_idx + static_cast<int>(entries * sizeof(int));
  const std::size_t adj_bytes = align16(static_cast<std::size_t>(p.off_count) + cols * sizeof(int));
  p.adj_in_smem = adj_bytes <= kSmemAdjBudget;
  p.off_tile = p.adj_in_smem ? static_cast<int>(adj_bytes) : 0;
  const std::size_t room = kSmemBudget - static_cast<std::size_t>(p.off_tile);

  int ct = static_cast<int>(std::min<std::int64_t>(a.C, kMaxTileWidth));
  auto group_bytes = [&](int width) { return static_cast<std::size_t>(V) * KS * width * acc; };
  while (ct > 1 && group_bytes(ct) > room) ct = (ct + 1) / 2;
  require(group_bytes(ct) <= room, "graph_aggregate: K * V = " + std::to_string(a.K * a.V) +
                                       " is too large to stage one joint row of a group in shared memory");
  const std::int64_t per_unit = static_cast<std::int64_t>(V) * KO * ct;
  std::int64_t gb = std::max<std::int64_t>(1, ceil_div(kGraphUnitOutputs, per_unit));
  gb = std::min<std::int64_t>({gb, static_cast<std::int64_t>(room / group_bytes(ct)), a.G});

  p.src = in<T>(a.src);
  p.A = in<T>(a.A);
  p.bias_map = in<T>(a.bias_map);
  p.out = out<T>(a.out);
  p.G = a.G;
  p.C = a.C;
  p.K = K;
  p.V = V;
  p.ct = ct;
  p.gb = static_cast<int>(gb);
  p.n_ctiles = static_cast<int>(ceil_div(a.C, ct));
  p.n_units = ceil_div(a.G, gb) * p.n_ctiles;
  p.transpose = a.transpose;
  const std::size_t smem = static_cast<std::size_t>(p.off_tile) + static_cast<std::size_t>(gb) * group_bytes(ct);
  const dim3 grid(static_cast<unsigned int>(std::min(p.n_units, kGraphBlocks)), 1, 1);
  if (a.contract) {
    launch("graph_aggregate (contract)", graph_aggregate_kernel<T, true>, grid, smem, stream, p);
  } else {
    launch("graph_aggregate (expand)", graph_aggregate_kernel<T, false>, grid, smem, stream, p);
  }
}

}  // namespace

// ---- entry points -------------------------------------------------------------------------------------------
void stgcn_graph_aggregate(const StgcnGraphAggregate& a, const StgcnLaunch& launch_on) {
  require(a.K >= 1 && a.V >= 1 && a.V <= kStgcnMaxJoints && a.G >= 0 && a.C >= 0,
          "graph_aggregate: need K >= 1, 1 <= V <= " + std::to_string(kStgcnMaxJoints) + ", G >= 0, C >= 0");
  require(a.K * a.V <= (1 << 20) && a.C <= 2147483647, "graph_aggregate: K * V or C out of range");
  if (a.G == 0 || a.C == 0) return;
  require(a.src && a.A && a.out, "graph_aggregate: null pointer");
  DeviceGuard guard(launch_on.device_index, "stgcn");
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(launch_on.stream);
  with_dtype(a.dtype, "graph_aggregate", [&](auto tag) { graph_aggregate_typed<decltype(tag)>(a, stream); });
}

std::int64_t stgcn_stats_workspace(std::int64_t rows, std::int64_t C) { return partials_size(rows, C, 2); }

std::int64_t stgcn_block_output_backward_workspace(std::int64_t rows, std::int64_t C, bool conv_residual) {
  return C <= 0 ? 0 : partials_size(rows, C, conv_residual ? 6 : 3) + 6 * C;
}

std::int64_t stgcn_bn_relu_phases_backward_workspace(std::int64_t T, std::int64_t N, std::int64_t V, std::int64_t C) {
  const std::int64_t cols = V * C;
  return cols <= 0 ? 0 : partials_size(T * N, cols, 3) + 3 * cols + 3 * C;
}

void stgcn_channel_stats(const StgcnChannelStats& a, const StgcnLaunch& launch_on) {
  require(a.rows >= 0 && a.C >= 0 && a.V >= 1, "channel_stats: need rows >= 0, C >= 0, V >= 1");
  require(a.bias_map == 0 || a.rows % a.V == 0, "bias_map_stats: rows must be a multiple of V");
  if (a.C == 0) return;
  require(a.sum && a.sumsq && a.workspace && (a.rows == 0 || a.x) && (a.bias_map == 0 || a.rows == 0 || a.y),
          "channel_stats: null pointer");
  require_workspace(a.workspace_size, stgcn_stats_workspace(a.rows, a.C), "channel_stats");
  DeviceGuard guard(launch_on.device_index, "stgcn");
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(launch_on.stream);
  with_dtype(a.dtype, "channel_stats", [&](auto tag) {
    using T = decltype(tag);
    const StatsReduce<T> op{in<T>(a.x), in<T>(a.bias_map), out<T>(a.y), a.C, a.V};
    reduce("channel_stats", op, StatsFinish{out<double>(a.sum), out<double>(a.sumsq)}, a.rows, a.C,
           out<double>(a.workspace), stream);
  });
}

void stgcn_bn_relu_phases(const StgcnBnReluPhases& a, const StgcnLaunch& launch_on) {
  require(a.T >= 0 && a.N >= 0 && a.V >= 1 && a.C >= 0 && a.stride >= 1 && a.pad >= 0 && a.Tq >= 0,
          "bn_relu_phases: need T, N, C, pad, Tq >= 0, V, stride >= 1");
  const std::int64_t NV = a.N * a.V;
  const std::int64_t rows = a.stride * a.Tq * NV;
  if (rows == 0 || a.C == 0) return;
  require(a.h_ph && a.scale && a.shift_map && (a.T == 0 || a.z), "bn_relu_phases: null pointer");
  DeviceGuard guard(launch_on.device_index, "stgcn");
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(launch_on.stream);
  with_dtype(a.dtype, "bn_relu_phases", [&](auto tag) {
    using T = decltype(tag);
    const BnReluPhasesApply<T> op{in<T>(a.z), in<T>(a.scale), in<T>(a.shift_map), out<T>(a.h_ph), a.T, NV, a.V,
                                  a.C, a.stride, a.pad, a.Tq};
    apply("bn_relu_phases", op, rows, a.C, stream);
  });
}

void stgcn_block_output(const StgcnBlockOutput& a, const StgcnLaunch& launch_on) {
  require(a.rows >= 0 && a.C >= 0, "block_output: need rows >= 0, C >= 0");
  require(a.scale3 == 0 || (a.res && a.shift3), "block_output: scale3 needs res and shift3");
  require(!(a.dropout.enabled && a.mask), "block_output: a mask or hashed dropout, not both");
  if (a.rows == 0 || a.C == 0) return;
  require(a.u && a.scale2 && a.shift2 && a.out, "block_output: null pointer");
  DeviceGuard guard(launch_on.device_index, "stgcn");
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(launch_on.stream);
  with_dtype(a.dtype, "block_output", [&](auto tag) {
    using T = decltype(tag);
    const BlockOutputApply<T> op{in<T>(a.u),   in<T>(a.scale2), in<T>(a.shift2), dropout<T>(a.mask, a.dropout),
                                 in<T>(a.res), in<T>(a.scale3), in<T>(a.shift3), out<T>(a.out), a.C};
    apply("block_output", op, a.rows, a.C, stream);
  });
}

namespace {

template <typename T, bool CONV>
void block_output_backward_typed(const StgcnBlockOutputBackward& a, cudaStream_t stream) {
  double* workspace = out<double>(a.workspace);
  double* coef = workspace + partials_size(a.rows, a.C, CONV ? 6 : 3);
  const OutputGrad<T> grad{in<T>(a.dout), in<T>(a.out), dropout<T>(a.mask, a.dropout)};
  const BlockOutputBackwardReduce<T, CONV> op{grad, in<T>(a.u), in<T>(a.r0), in<double>(a.mean2),
                                              in<double>(a.mean3), a.C};
  const BlockOutputBackwardFinish<CONV> fin{in<double>(a.invstd2), in<double>(a.weight2), in<double>(a.invstd3),
                                            in<double>(a.weight3), static_cast<double>(a.rows), a.C, coef,
                                            out<double>(a.dweight2), out<double>(a.dbias2), out<double>(a.dbias_t),
                                            out<double>(a.dweight3), out<double>(a.dbias3), out<double>(a.dbias_r)};
  reduce("block_output_backward", op, fin, a.rows, a.C, workspace, stream);
  const BlockOutputBackwardApply<T, CONV> ap{grad, in<T>(a.u), in<T>(a.r0), out<T>(a.du), out<T>(a.dres),
                                             a.residual == kStgcnResidualIdentity, coef, in<double>(a.mean2),
                                             in<double>(a.invstd2), in<double>(a.mean3), in<double>(a.invstd3), a.C};
  apply("block_output_backward", ap, a.rows, a.C, stream);
}

}  // namespace

void stgcn_block_output_backward(const StgcnBlockOutputBackward& a, const StgcnLaunch& launch_on) {
  require(a.rows >= 0 && a.C >= 0, "block_output_backward: need rows >= 0, C >= 0");
  require(a.residual == kStgcnResidualNone || a.residual == kStgcnResidualIdentity ||
              a.residual == kStgcnResidualConv,
          "block_output_backward: residual must be 0 (none), 1 (identity) or 2 (conv), got " +
              std::to_string(a.residual));
  require(!(a.dropout.enabled && a.mask), "block_output_backward: a mask or hashed dropout, not both");
  if (a.C == 0) return;
  const bool conv = a.residual == kStgcnResidualConv;
  require(a.mean2 && a.invstd2 && a.weight2 && a.dweight2 && a.dbias2 && a.dbias_t && a.workspace,
          "block_output_backward: null pointer");
  require(a.rows == 0 || (a.dout && a.out && a.u && a.du && (a.residual == kStgcnResidualNone || a.dres)),
          "block_output_backward: null pointer");
  require(!conv || (a.mean3 && a.invstd3 && a.weight3 && a.dweight3 && a.dbias3 && a.dbias_r &&
                    (a.rows == 0 || a.r0)),
          "block_output_backward: the conv residual needs r0, mean3, invstd3, weight3 and their gradients");
  require_workspace(a.workspace_size, stgcn_block_output_backward_workspace(a.rows, a.C, conv),
                    "block_output_backward");
  DeviceGuard guard(launch_on.device_index, "stgcn");
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(launch_on.stream);
  with_dtype(a.dtype, "block_output_backward", [&](auto tag) {
    using T = decltype(tag);
    if (conv) {
      block_output_backward_typed<T, true>(a, stream);
    } else {
      block_output_backward_typed<T, false>(a, stream);
    }
  });
}

void stgcn_bn_relu_phases_backward(const StgcnBnReluPhasesBackward& a, const StgcnLaunch& launch_on) {
  require(a.T >= 0 && a.N >= 0 && a.V >= 1 && a.C >= 0 && a.stride >= 1 && a.pad >= 0 && a.Tq >= 0,
          "bn_relu_phases_backward: need T, N, C, pad, Tq >= 0, V, stride >= 1");
  if (a.C == 0) return;
  const std::int64_t rows = a.T * a.N, cols = a.V * a.C;
  require(a.mean1 && a.invstd1 && a.weight1 && a.dweight1 && a.dbias1 && a.joint_sums && a.workspace,
          "bn_relu_phases_backward: null pointer");
  require(rows == 0 || (a.z && a.dz && ((a.dh_ph && a.h_ph) || a.stride * a.Tq == 0)),
          "bn_relu_phases_backward: null pointer");
  require_workspace(a.workspace_size, stgcn_bn_relu_phases_backward_workspace(a.T, a.N, a.V, a.C),
                    "bn_relu_phases_backward");
  DeviceGuard guard(launch_on.device_index, "stgcn");
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(launch_on.stream);
  double* workspace = out<double>(a.workspace);
  double* colsum = workspace + partials_size(rows, cols, 3);
  double* coef = colsum + 3 * cols;
  with_dtype(a.dtype, "bn_relu_phases_backward", [&](auto tag) {
    using T = decltype(tag);
    const PhaseGrad<T> grad{in<T>(a.dh_ph), in<T>(a.h_ph), a.N, cols, a.stride, a.pad, a.Tq};
    reduce("bn_relu_phases_backward", BnReluBackwardReduce<T>{grad, in<T>(a.z), in<double>(a.mean1), a.C},
           ColumnSumsFinish{colsum, cols}, rows, cols, workspace, stream);
    const Bn1Channels ch{colsum,
                         in<double>(a.invstd1),
                         in<double>(a.weight1),
                         a.V,
                         a.C,
                         static_cast<double>(rows),
                         static_cast<double>(rows * a.V),
                         out<double>(a.dweight1),
                         out<double>(a.dbias1),
                         out<double>(a.joint_sums),
                         coef};
    const std::int64_t blocks = std::max<std::int64_t>(1, std::min(ceil_div(a.C, kThreads), kChannelBlocks));
    launch("bn_relu_phases_backward", bn1_channel_kernel, dim3(static_cast<unsigned int>(blocks), 1, 1), 0, stream,
           ch);
    const BnReluBackwardApply<T> ap{grad, in<T>(a.z), out<T>(a.dz), coef, in<double>(a.mean1), in<double>(a.invstd1),
                                    a.C};
    apply("bn_relu_phases_backward", ap, rows, cols, stream);
  });
}

}  // namespace gpu
}  // namespace ugcn
