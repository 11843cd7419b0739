// CPU kernels of the fused ST-GCN block's channel mixing with fused epilogues; see stgcn_gemm.h for what each tile
// does and ugcn_fast/backends/torch_stgcn.py (gcn_forward, conv_frames) for the contract.
//
// The micro-kernel. A block of output channels is 1 to kMaxVectors SIMD vectors (16 floats / 8 doubles each with
// AVX-512); a micro-tile is RB rows of it: RB x NV accumulators, small enough to stay in registers with the NV
// weight vectors and a broadcast (AVX-512 has 32), and at least 8 independent FMA chains to cover the FMA latency
// on two ports. The inner loop, per (tap, input channel): load the NV weight vectors of the packed row
// W[j, ci, block] once, then for each of the RB rows broadcast src[row, ci] and FMA. It is written as plain C++
// (fixed-size local arrays, compile-time block sizes, `omp simd` over the channels of the block, the row loop
// unrolled) that GCC turns into register-resident zmm accumulators with embedded-broadcast FMAs
// (`vfmadd231ps (%reg,%idx){1to16}, %zmmW, %zmmAcc`); check with objdump -d after changing the blocking. The
// weights are packed per channel block into contiguous panels [depth][block], zero-padded to whole vectors, so a
// ragged last block computes exact zeros in its padded lanes and only the epilogue (add, store, statistics)
// looks at the number of valid channels. Rows past the end of a run (the ragged last micro-tile) re-read the last
// valid row and are never stored. The sparse aggregation over the joints (gcn_forward) gathers whole vectors with
// GCC / Clang vector extensions instead (see Simd below).
//
// Rounding. This file is compiled with FMA contraction on (the pragma below; the build's -ffp-contract=off is for
// the motion loss, whose x * x must stay exact): every product-sum is a fused multiply-add in T, the whole sum
// over taps and input channels in one accumulator, the bias and `add` added after it, the result rounded once to
// T. The contract (torch) sums per tap with a BLAS GEMM; the results agree to the dtype's rounding, not bitwise.
//
// Statistics: per-thread float64 partials (plain float64 accumulation, as the contract's float64 sums: exact
// enough for a large mean and a small spread), of the values as stored, over a static partition of row tiles
// (groups for gcn_forward), summed in thread order: bitwise reproducible for a given thread count.
#include "stgcn_gemm.h"

#include "aligned_buffer.h"

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <numeric>
#include <stdexcept>
#include <type_traits>
#include <vector>

#if defined(__clang__)
#pragma clang fp contract(fast)
#elif defined(__GNUC__)
// (and no memcpy calls made of store loops: the statistics that follow a store read registers, not the store)
#pragma GCC optimize("fp-contract=fast", "no-tree-loop-distribute-patterns")
#endif

namespace ugcn {
namespace cpu {
namespace {

// Elements of T in one 64-byte vector (AVX-512; narrower targets split it into 2 or 4 registers).
template <typename T>
constexpr int kLanes = 64 / static_cast<int>(sizeof(T));
// The widest channel block, in vectors: 4 x 6 accumulators + 4 weight vectors + a broadcast fill 29 of 32 zmm.
constexpr int kMaxVectors = 4;
// Blocking (measured with bench/cpu_gemm_probe.py; the UGCN_GEMM_* macros override it for such measurements).
#ifndef UGCN_GEMM_RB
#define UGCN_GEMM_RB 8, 8, 8, 6
#endif
#ifndef UGCN_GEMM_ROW_TILE
#define UGCN_GEMM_ROW_TILE 96
#endif
#ifndef UGCN_GEMM_CHUNK_BYTES
#define UGCN_GEMM_CHUNK_BYTES (256 * 1024)
#endif
#ifndef UGCN_GEMM_CHUNK_ROWS
#define UGCN_GEMM_CHUNK_ROWS 256
#endif
// Rows per micro-tile for a block of nv vectors: nv * RB accumulators (<= 24 registers), >= 8 FMA chains.
constexpr int kMicroRows[kMaxVectors] = {UGCN_GEMM_RB};
constexpr int micro_rows(int nv) { return kMicroRows[nv - 1]; }
// conv_frames' unit of work (rows): a multiple of every micro_rows, and short enough that the source rows it
// reads (kRowTile x taps x C_in) stay in L2 while every channel block walks them.
constexpr int64_t kRowTile = UGCN_GEMM_ROW_TILE;
static_assert(kRowTile % micro_rows(1) == 0 && kRowTile % micro_rows(2) == 0 && kRowTile % micro_rows(3) == 0 &&
                  kRowTile % micro_rows(4) == 0,
              "a row tile is whole micro-tiles");
// The smallest row tile (every micro_rows divides it): small problems (a batch of one window: down9 has 102 rows)
// are cut into tiles of this granularity so that each thread gets several, instead of one thread taking a whole
// kRowTile while the other idles.
constexpr int64_t kMinRowTile = std::lcm(std::lcm(int64_t{micro_rows(1)}, int64_t{micro_rows(2)}),
                                         std::lcm(int64_t{micro_rows(3)}, int64_t{micro_rows(4)}));
static_assert(kMinRowTile <= kRowTile, "the smallest row tile fits the row-pointer array");
// conv_frames splits small problems (fewer than kSmallRows rows a thread) by channel blocks rather than row tiles.
#ifndef UGCN_GEMM_SMALL_ROWS
#define UGCN_GEMM_SMALL_ROWS 384
#endif
constexpr int64_t kSmallRows = UGCN_GEMM_SMALL_ROWS;
// gcn_forward's thread-local buffer (a chunk of whole groups) targets this many bytes and at most kChunkRows rows
// (enough rows that the ragged last micro-tile of a chunk wastes little).
constexpr int64_t kChunkBytes = UGCN_GEMM_CHUNK_BYTES;
constexpr int64_t kChunkRows = UGCN_GEMM_CHUNK_ROWS;

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Runs fn(partials, first, end) on a static partition of [0, units) over the threads (contiguous runs); each
// thread's partials hold `width` doubles (cache-line separated), summed in thread order into `result` when
// non-null.
template <typename F>
void partitioned(int64_t units, int threads, int64_t width, double* result, F&& fn) {
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, units)));
  const int64_t stride = round_up(std::max<int64_t>(width, 1), 8);
  Aligned<double> partials(static_cast<size_t>(threads * stride));
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t chunk = (units + nt - 1) / nt;
    const int64_t first = std::min(units, tid * chunk), end = std::min(units, first + chunk);
    if (first < end) fn(partials.data() + tid * stride, first, end);
  }
  if (result == nullptr) return;
  std::fill(result, result + width, 0.0);
  for (int t = 0; t < threads; ++t) {
    const double* p = partials.data() + t * stride;
    for (int64_t i = 0; i < width; ++i) result[i] += p[i];
  }
}

// The B operand (depth x n; n output channels) packed for the micro-kernel: channel blocks of 1 to kMaxVectors
// vectors (balanced: 5 vectors are 3 + 2), block b = channels [c0, c0 + nv * L) stored as the contiguous panel
// [depth][nv * L] at offset depth * c0, channels >= n zero.
template <typename T>
struct Panels {
  struct Block {
    int64_t c0;
    int nv;
    const T* data;
  };
  int64_t depth, n, padded;
  Aligned<T> storage;
  std::vector<Block> blocks;

  // value(kk, c): the operand's element, read contiguously along kk (the graph convolution's weight). Packing walks
  // kTile depth rows at a time, channel by channel, so that the tile's reads and writes stay in L1: it is the fixed
  // cost of every call, which dominates a small batch (down9's graph convolution at N = 1 went from 1.5 to 0.5 ms).
  template <typename F>
  Panels(int64_t depth_, int64_t n_, F&& value, int threads)
      : Panels(depth_, n_, FillBlocks{}, threads, [&](T* panel, int64_t c0, int64_t width, int64_t valid) {
          constexpr int64_t kTile = 16;
          for (int64_t k0 = 0; k0 < depth; k0 += kTile) {
            const int64_t k1 = std::min(depth, k0 + kTile);
            for (int64_t c = 0; c < valid; ++c)
              for (int64_t kk = k0; kk < k1; ++kk) panel[kk * width + c] = value(kk, c0 + c);
          }
        }) {}

  // fill(panel, c0, width, valid) writes panel[kk * width + c - c0] for every kk < depth and c0 <= c < c0 + valid,
  // in whatever order reads its source best; the padding channels are zeroed here. Large operands are packed by up
  // to `threads` threads, a channel block each (disjoint panels; the values do not depend on who writes them).
  struct FillBlocks {};
  template <typename Fill>
  Panels(int64_t depth_, int64_t n_, FillBlocks, int threads, Fill&& fill)
      : depth(depth_), n(n_), padded(round_up(n_, kLanes<T>)),
        storage(static_cast<size_t>(depth_ * padded), Aligned<T>::kUninitialised) {
    constexpr int L = kLanes<T>;
    const int64_t vectors = padded / L, count = (vectors + kMaxVectors - 1) / kMaxVectors;
    int64_t c0 = 0;
    for (int64_t b = 0; b < count; ++b) {
      const int nv = static_cast<int>(vectors / count + (b < vectors % count ? 1 : 0));
      blocks.push_back(Block{c0, nv, storage.data() + depth * c0});
      c0 += int64_t(nv) * L;
    }
    constexpr int64_t kParallelElements = 1 << 15;  // below this, waking threads costs more than it saves
    const int team = depth * padded >= kParallelElements ? std::max(1, std::min<int>(threads, int(count))) : 1;
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1)
    for (int64_t b = 0; b < count; ++b) {
      const Block& block = blocks[b];
      const int64_t width = int64_t(block.nv) * L, valid = std::min(width, n - block.c0);
      T* panel = storage.data() + depth * block.c0;
      fill(panel, block.c0, width, valid);
      if (valid < width)
        for (int64_t kk = 0; kk < depth; ++kk) std::fill(panel + kk * width + valid, panel + (kk + 1) * width, T(0));
    }
  }
};

// Panels' fill for a WeightOperand of taps x C_in rows (row j * C_in + ci at j * tap_stride + ci * row_stride)
// and C_out channels, walking its memory in order: row by row where the channels are adjacent (the contract's
// contiguous operands), else channel by channel (nn.Conv2d's (C_out, C_in, taps) weights, read in place by
// pack_eval_block). Packing is the fixed cost of every call; a strided walk would read each cache line taps times.
template <typename T>
auto operand_fill(const WeightOperand<T>& w, int taps, int64_t tap_stride, int64_t C_in) {
  return [&w, taps, tap_stride, C_in](T* panel, int64_t c0, int64_t width, int64_t valid) {
    auto scaled = [&w](T value, int64_t c) { return w.col_scale ? value * w.col_scale[c] : value; };
    if (w.col_stride == 1) {
      for (int j = 0; j < taps; ++j)
        for (int64_t ci = 0; ci < C_in; ++ci) {
          const T* row = w.data + j * tap_stride + ci * w.row_stride;
          T* dst = panel + (j * C_in + ci) * width;
          for (int64_t c = 0; c < valid; ++c) dst[c] = scaled(row[c0 + c], c0 + c);
        }
    } else {  // kTile channels at a time, each read along its own column: kTile streams in, whole lines out
      constexpr int64_t kTile = 16;
      for (int64_t t0 = 0; t0 < valid; t0 += kTile) {
        const int64_t t1 = std::min(valid, t0 + kTile);
        for (int64_t ci = 0; ci < C_in; ++ci)
          for (int j = 0; j < taps; ++j) {
            const T* src = w.data + ci * w.row_stride + j * tap_stride;
            T* dst = panel + (j * C_in + ci) * width;
            for (int64_t c = t0; c < t1; ++c) dst[c] = scaled(src[(c0 + c) * w.col_stride], c0 + c);
          }
      }
    }
  };
}

// A run of rows through every channel block: row l of the run reads rows[l] + tap_offset[j] for tap j (depth
// values each) and is output row m = row0 + l, stored at out + m * out_ld (or at out_rows[l]); the epilogue adds
// bias[c] (padded to whole vectors; zeros for none) and add[m * add_ld + c] (or add_rows[l][c]; a zero row with
// add_ld = 0 for none), applies the ReLU and accumulates the statistics of the n valid channels into sum / sumsq
// (indexed by channel; null: none).
template <typename T>
struct RowRun {
  const T* const* rows = nullptr;
  int64_t row0 = 0;
  const int64_t* tap_offset = nullptr;
  int taps = 1;
  const int* tap_ids = nullptr;  // the taps to take (their tap_offset and panel rows), taps of them; null: 0 .. taps-1
  int64_t depth = 0;
  const T* bias = nullptr;
  const T* add = nullptr;
  int64_t add_ld = 0;
  bool relu = false;
  T* out = nullptr;
  int64_t out_ld = 0, n = 0;
  double* sum = nullptr;
  double* sumsq = nullptr;
  T* const* out_rows = nullptr;        // per-row destinations (gcn_run: rows in subset-pattern order, phase buffer)
  const T* const* add_rows = nullptr;  // per-row addends (gcn_run: the bias map's row of each row's joint)
  // A second product into the same accumulators (conv_frames' pointwise term): row l also reads rows2[l] (depth2
  // values) against the block of panels2 with the same index (panels2 has the same columns, so the same blocks).
  const T* const* rows2 = nullptr;
  int64_t depth2 = 0;
  const Panels<T>* panels2 = nullptr;
};

// acc[i] += sum over k < depth of a[i][k] * w[k] (w: a packed panel block, CB values a row).
template <typename T, int RB, int CB>
inline __attribute__((always_inline)) void accumulate_panel(T (&acc)[RB][CB], const T* const (&a)[RB], const T* w,
                                                            int64_t depth) {
  for (int64_t k = 0; k < depth; ++k, w += CB) {
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) {
      const T s = a[i][k];
#pragma omp simd
      for (int c = 0; c < CB; ++c) acc[i][c] += s * w[c];
    }
  }
}

// One micro-tile: rows l0 .. l0 + nrows - 1 (nrows <= RB) of the run, one channel block of NV vectors; kFull: the
// whole block is valid channels (no bounds in the epilogue); kStats: accumulate the statistics.
template <typename T, int NV, bool kFull, bool kStats>
inline void micro_tile(const RowRun<T>& run, const typename Panels<T>::Block& block,
                       const typename Panels<T>::Block* block2, int64_t l0, int nrows) {
  constexpr int CB = NV * kLanes<T>;
  constexpr int RB = micro_rows(NV);
  T acc[RB][CB];
  const T* row[RB];
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i) {
    row[i] = run.rows[l0 + std::min(i, nrows - 1)];
#pragma omp simd
    for (int c = 0; c < CB; ++c) acc[i][c] = T(0);
  }
  for (int jj = 0; jj < run.taps; ++jj) {
    const int j = run.tap_ids ? run.tap_ids[jj] : jj;
    const T* a[RB];
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) a[i] = row[i] + run.tap_offset[j];
    accumulate_panel<T, RB, CB>(acc, a, block.data + j * run.depth * CB, run.depth);
  }
  if (block2) {
    const T* a[RB];
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) a[i] = run.rows2[l0 + std::min(i, nrows - 1)];
    accumulate_panel<T, RB, CB>(acc, a, block2->data, run.depth2);
  }
  // epilogue, row by row in one pass over the block: + bias, + add, ReLU, store; the stored value goes back to acc
  // (rows past nrows: 0) for the statistics below
  const int64_t c0 = block.c0;
  const int nc = kFull ? CB : static_cast<int>(run.n - c0);
  const T* __restrict b = run.bias + c0;
  // ReLU as a clamp from below at 0, or at -inf (nothing) without it: value < lo ? lo : value keeps NaN (as
  // stgcn::relu, torch.relu) and compiles to a compare + blend against a broadcast constant.
  const T lo = run.relu ? T(0) : -std::numeric_limits<T>::infinity();
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i) {
    if (i >= nrows) {
      if (kStats) {
#pragma omp simd
        for (int c = 0; c < CB; ++c) acc[i][c] = T(0);
      }
      continue;
    }
    const int64_t m = run.row0 + l0 + i;
    const T* __restrict a = (run.add_rows ? run.add_rows[l0 + i] : run.add + m * run.add_ld) + c0;
    T* __restrict o = (run.out_rows ? run.out_rows[l0 + i] : run.out + m * run.out_ld) + c0;
#pragma omp simd
    for (int c = 0; c < nc; ++c) {
      T value = acc[i][c] + b[c] + a[c];
      value = value < lo ? lo : value;
      o[c] = value;
      acc[i][c] = value;
    }
  }
  // statistics: the tile's column sums in float64 (rows in order), then one update of the thread's partials per
  // tile (per-row updates would chain every row through a store and a reload of the partials)
  if (kStats) {
    double* __restrict s = run.sum + c0;
    double* __restrict q = run.sumsq + c0;
#pragma omp simd
    for (int c = 0; c < nc; ++c) {
      double ts = 0.0, tq = 0.0;
#pragma GCC unroll 16
      for (int i = 0; i < RB; ++i) {
        const double d = double(acc[i][c]);
        ts += d;
        tq += d * d;
      }
      s[c] += ts;
      q[c] += tq;
    }
  }
}

template <typename T, int NV>
void run_block(const RowRun<T>& run, const typename Panels<T>::Block& block, const typename Panels<T>::Block* block2,
               int64_t rows) {
  constexpr int RB = micro_rows(NV);
  const bool full = block.c0 + NV * kLanes<T> <= run.n, stats = run.sum != nullptr;
  for (int64_t l0 = 0; l0 < rows; l0 += RB) {
    const int nr = static_cast<int>(std::min<int64_t>(RB, rows - l0));
    if (full)
      stats ? micro_tile<T, NV, true, true>(run, block, block2, l0, nr)
            : micro_tile<T, NV, true, false>(run, block, block2, l0, nr);
    else
      stats ? micro_tile<T, NV, false, true>(run, block, block2, l0, nr)
            : micro_tile<T, NV, false, false>(run, block, block2, l0, nr);
  }
}

// The run's `rows` rows through channel block b of the panels (and of run.panels2).
template <typename T>
void run_block_at(const RowRun<T>& run, const Panels<T>& panels, size_t b, int64_t rows) {
  const auto& block = panels.blocks[b];
  const auto* block2 = run.panels2 ? &run.panels2->blocks[b] : nullptr;
  switch (block.nv) {
    case 1: run_block<T, 1>(run, block, block2, rows); break;
    case 2: run_block<T, 2>(run, block, block2, rows); break;
    case 3: run_block<T, 3>(run, block, block2, rows); break;
    default: run_block<T, 4>(run, block, block2, rows); break;
  }
}

// ... through every channel block.
template <typename T>
void run_blocks(const RowRun<T>& run, const Panels<T>& panels, int64_t rows) {
  for (size_t b = 0; b < panels.blocks.size(); ++b) run_block_at(run, panels, b, rows);
}

// Sparse gathers of the aggregation over the joints: destination i = sum over its entries e of m[e] * the source
// run at off[e] (n channels each). entries of destination i: [start[i], start[i + 1]).
template <typename T>
struct GatherList {
  std::vector<int64_t> start, off;
  std::vector<T> m;
  GatherList() : start(1, 0) {}
  void add(int64_t offset, T weight) {
    off.push_back(offset);
    m.push_back(weight);
  }
  void close() { start.push_back(static_cast<int64_t>(off.size())); }
};

// The aggregation's gathers are written with GCC / Clang vector extensions (64-byte vectors; GCC splits them on
// narrower targets): there GCC keeps plain arrays on the stack (a loop over a run-time number of entries around the
// channel loop), which chains every entry through a store and a reload. Vectors are loaded and stored with memcpy
// (unaligned moves).
template <typename T>
struct Simd;
template <>
struct Simd<float> {
  typedef float V __attribute__((vector_size(64)));
  typedef float Unaligned __attribute__((vector_size(64), aligned(4), may_alias));
  typedef double Wide __attribute__((vector_size(128)));  // a float vector in float64: two double vectors
};
template <>
struct Simd<double> {
  typedef double V __attribute__((vector_size(64)));
  typedef double Unaligned __attribute__((vector_size(64), aligned(8), may_alias));
  typedef double Wide __attribute__((vector_size(64)));
};
template <typename T>
using Vec = typename Simd<T>::V;
using VecD = Vec<double>;
// float64 vectors per vector of T (a float vector widens to two)
template <typename T>
constexpr int kWiden = static_cast<int>(sizeof(double) / sizeof(T));

template <typename T>  // (a reference: no vector passed by value, whose ABI depends on the target)
inline const typename Simd<T>::Unaligned& vload(const T* p) {
  return *reinterpret_cast<const typename Simd<T>::Unaligned*>(p);
}
template <typename T>
inline void vstore(T* p, const Vec<T>& v) {
  *reinterpret_cast<typename Simd<T>::Unaligned*>(p) = v;
}
// v in float64, as kWiden<T> double vectors
template <typename T>
inline void widen(const Vec<T>& v, VecD* out) {
  const typename Simd<T>::Wide wide = __builtin_convertvector(v, typename Simd<T>::Wide);
  std::memcpy(out, &wide, sizeof wide);
}

// acc[0:NV) = sum over the entries e in [first, end) of m[e] * the NV vectors at base + off[e].
template <typename T, int NV>
inline void gather_vectors(Vec<T> (&acc)[NV], const T* __restrict base, const int64_t* __restrict off,
                           const T* __restrict m, int64_t first, int64_t end) {
  constexpr int L = kLanes<T>;
  for (int v = 0; v < NV; ++v) acc[v] = Vec<T>{};
  for (int64_t e = first; e < end; ++e) {
    const T* src = base + off[e];
    const T w = m[e];
    for (int v = 0; v < NV; ++v) acc[v] += w * vload(src + v * L);
  }
}

// dst rows d = 0 .. rows-1 (dst + d * dst_ld, n channels each) = the gathers of destination d of `lists` (entries
// relative to base): whole vectors in blocks of up to kMaxVectors, then the last n % L channels one by one, never
// reading past a source row's n channels (base may be the caller's tensor). With `shift` ((rows, n), the eval
// epilogue of gcn_relu_phases): relu(gather + shift[d]) instead.
template <typename T>
void gather_rows(T* dst, int64_t dst_ld, int64_t rows, int64_t n, const T* base, const GatherList<T>& lists,
                 const T* shift = nullptr) {
  constexpr int L = kLanes<T>;
  const int64_t* start = lists.start.data();
  auto blocks = [&](auto nv, int64_t c) {
    constexpr int NV = decltype(nv)::value;
    for (int64_t d = 0; d < rows; ++d) {
      Vec<T> acc[NV];
      gather_vectors<T, NV>(acc, base + c, lists.off.data(), lists.m.data(), start[d], start[d + 1]);
      for (int v = 0; v < NV; ++v) {
        if (shift) {
          acc[v] += vload(shift + d * n + c + v * L);
          acc[v] = acc[v] < Vec<T>{} ? Vec<T>{} : acc[v];  // (NaN stays NaN, as relu)
        }
        vstore(dst + d * dst_ld + c + v * L, acc[v]);
      }
    }
  };
  int64_t c = 0;
  for (; c + kMaxVectors * L <= n; c += kMaxVectors * L) blocks(std::integral_constant<int, kMaxVectors>{}, c);
  switch ((n - c) / L) {
    case 3: blocks(std::integral_constant<int, 3>{}, c); c += 3 * L; break;
    case 2: blocks(std::integral_constant<int, 2>{}, c); c += 2 * L; break;
    case 1: blocks(std::integral_constant<int, 1>{}, c); c += L; break;
    default: break;
  }
  for (; c < n; ++c)
    for (int64_t d = 0; d < rows; ++d) {
      T value = T(0);
      for (int64_t e = start[d]; e < start[d + 1]; ++e) value += lists.m[e] * base[lists.off[e] + c];
      if (shift) {
        value += shift[d * n + c];
        value = value < T(0) ? T(0) : value;
      }
      dst[d * dst_ld + c] = value;
    }
}

// gather_rows for one group's output rows w = 0 .. V-1 (destination w), with their statistics: summed over the
// group in float64 registers, added to sum / sumsq (indexed by channel) once per group.
template <typename T>
void aggregate_group(T* z, int64_t z_ld, int64_t V, int64_t n, const T* base, const GatherList<T>& lists,
                     double* sum, double* sumsq) {
  constexpr int L = kLanes<T>, W = kWiden<T>, DL = kLanes<double>;
  const int64_t* start = lists.start.data();
  auto blocks = [&](auto nv, int64_t c) {
    constexpr int NV = decltype(nv)::value;
    VecD gs[NV * W], gq[NV * W];
    for (int u = 0; u < NV * W; ++u) gs[u] = gq[u] = VecD{};
    for (int64_t w = 0; w < V; ++w) {
      Vec<T> acc[NV];
      gather_vectors<T, NV>(acc, base + c, lists.off.data(), lists.m.data(), start[w], start[w + 1]);
      for (int v = 0; v < NV; ++v) {
        vstore(z + w * z_ld + c + v * L, acc[v]);
        VecD d[W];
        widen<T>(acc[v], d);
        for (int u = 0; u < W; ++u) {
          gs[v * W + u] += d[u];
          gq[v * W + u] += d[u] * d[u];
        }
      }
    }
    for (int u = 0; u < NV * W; ++u) {
      vstore(sum + c + u * DL, vload(sum + c + u * DL) + gs[u]);
      vstore(sumsq + c + u * DL, vload(sumsq + c + u * DL) + gq[u]);
    }
  };
  int64_t c = 0;
  for (; c + 2 * L <= n; c += 2 * L) blocks(std::integral_constant<int, 2>{}, c);
  for (; c + L <= n; c += L) blocks(std::integral_constant<int, 1>{}, c);
  for (; c < n; ++c) {
    double gs = 0.0, gq = 0.0;
    for (int64_t w = 0; w < V; ++w) {
      T value = T(0);
      for (int64_t e = start[w]; e < start[w + 1]; ++e) value += lists.m[e] * base[lists.off[e] + c];
      z[w * z_ld + c] = value;
      gs += double(value);
      gq += double(value) * double(value);
    }
    sum[c] += gs;
    sumsq[c] += gq;
  }
}

// Where gcn_forward's output goes: z (groups, V, C_out) with statistics, or (phases != null) the eval's phase buffer,
// relu(z + shift) without statistics (the shift is the packed weights').
template <typename T>
struct GcnOutput {
  T* out;
  double* sums;
  const PhaseOutput* phases;
  int64_t row_width;  // V * C_out

  // The first of group g's V output rows, or null when the group's frame is dropped (no tap reads it).
  T* group(int64_t g) const {
    if (phases == nullptr) return out + g * row_width;
    const PhaseOutput& o = *phases;
    const int64_t t = g / o.N, n = g % o.N, tp = t + o.pad, slot = tp / o.stride;
    if (slot >= o.Tq) return nullptr;
    return out + (((tp % o.stride) * o.Tq + slot) * o.N + n) * row_width;
  }
};

}  // namespace

// conv_frames' weights packed: the taps' panels, the pointwise term's, the bias padded to whole vectors.
template <typename T>
struct ConvFramesWeights {
  int taps;
  int64_t C_in, C_out, term_C_in;
  Panels<T> panels;
  std::unique_ptr<Panels<T>> term_panels;
  Aligned<T> bias_padded, zero_row;

  ConvFramesWeights(const ConvFramesOperands<T>& o, int threads)
      : taps(o.taps), C_in(o.C_in), C_out(o.C_out), term_C_in(o.term.data ? o.term_C_in : 0),
        panels(o.taps * o.C_in, o.C_out, typename Panels<T>::FillBlocks{}, threads,
               operand_fill(o.weight, o.taps, o.tap_stride, o.C_in)),
        bias_padded(static_cast<size_t>(panels.padded)), zero_row(static_cast<size_t>(panels.padded)) {
    if (o.term.data)
      term_panels = std::make_unique<Panels<T>>(o.term_C_in, o.C_out, typename Panels<T>::FillBlocks{}, threads,
                                                operand_fill(o.term, 1, 0, o.term_C_in));
    if (o.bias) std::copy(o.bias, o.bias + o.C_out, bias_padded.data());
  }
};

template <typename T>
std::shared_ptr<const ConvFramesWeights<T>> pack_conv_frames(const ConvFramesOperands<T>& o, int threads) {
  return std::make_shared<const ConvFramesWeights<T>>(o, threads);
}

template <typename T>
void conv_frames(const ConvFrames& p, const T* src, const T* weight, const T* bias, const T* add, bool relu, T* u,
                 double* sums, int threads, const PointwiseTerm<T>& term) {
  const ConvFramesWeights<T> packed(contiguous_conv_frames_operands(p.taps, p.C_in, p.C_out, weight, bias, term.C_in,
                                                                    term.src ? term.weight : nullptr),
                                    threads);
  conv_frames_packed(p, packed, src, add, relu, u, sums, threads, term.src, term.frame_step);
}

template <typename T>
void conv_frames_packed(const ConvFrames& p, const ConvFramesWeights<T>& w, const T* src, const T* add, bool relu,
                        T* u, double* sums, int threads, const T* term_src, int64_t term_frame_step) {
  if ((w.term_panels != nullptr) != (term_src != nullptr))
    throw std::invalid_argument("conv_frames_packed: term_src must be given exactly when the weights hold a term");
  const int64_t M = p.T_out * p.R, C_in = p.C_in, C_out = p.C_out;
  const Panels<T>& panels = w.panels;
  int64_t tap_offset[kMaxConvTaps];
  for (int j = 0; j < p.taps; ++j) tap_offset[j] = p.frame_offsets[j] * p.R * C_in;
  // The work: row tiles, each through every channel block; at least kTilesPerThread tiles for every thread (or
  // kMinRowTile rows a tile), at most kRowTile rows a tile. Few rows and several channel blocks (a batch of one
  // window: down8 has 102 rows and 4 blocks), and no statistics: (channel block, row tile) units, block-major, so
  // that a thread streams only its own blocks' panels (row tiles re-read every block's panels, 1.3 MB for down8's
  // taps, once a tile).
  constexpr int64_t kTilesPerThread = 4;
  const int64_t nthreads = std::max(threads, 1);
  const int64_t n_blocks = static_cast<int64_t>(panels.blocks.size());
  const bool by_block = sums == nullptr && n_blocks >= 2 && M < kSmallRows * nthreads;
  int64_t tile_rows, tiles;
  if (by_block) {  // tiles as even as whole micro-tiles allow, at most kRowTile rows
    const int64_t count = (M + kRowTile - 1) / kRowTile;
    tile_rows = std::min(kRowTile, round_up((M + count - 1) / count, kMinRowTile));
  } else {
    const int64_t wanted = kTilesPerThread * nthreads;
    tile_rows = std::min(kRowTile, round_up((M + wanted - 1) / wanted, kMinRowTile));
  }
  tiles = (M + tile_rows - 1) / tile_rows;
  const int64_t units = by_block ? n_blocks * tiles : tiles;
  partitioned(units, threads, sums ? 2 * C_out : 0, sums, [&](double* part, int64_t first, int64_t end) {
    const T* rows[kRowTile];
    const T* rows2[kRowTile];
    int live[kMaxConvTaps];
    RowRun<T> run;
    run.rows = rows;
    if (term_src) {
      run.rows2 = rows2;
      run.depth2 = w.term_C_in;
      run.panels2 = w.term_panels.get();
    }
    run.tap_offset = tap_offset;
    run.tap_ids = live;
    run.depth = C_in;
    run.bias = w.bias_padded.data();
    run.add = add ? add : w.zero_row.data();
    run.add_ld = add ? C_out : 0;
    run.relu = relu;
    run.out = u;
    run.out_ld = run.n = C_out;
    run.sum = sums ? part : nullptr;
    run.sumsq = sums ? part + C_out : nullptr;
    int64_t set_up = -1;  // the tile whose rows and taps are set up
    for (int64_t unit = first; unit < end; ++unit) {
      const int64_t tile = by_block ? unit % tiles : unit;
      const int64_t m0 = tile * tile_rows, n = std::min(tile_rows, M - m0);
      if (tile != set_up) {
        int64_t t = m0 / p.R, r = m0 - t * p.R;
        for (int64_t l = 0; l < n; ++l) {  // row t * R + r reads frame t * frame_step (+ the tap's offset), row r
          rows[l] = src + (t * p.frame_step * p.R + r) * C_in;
          if (term_src) rows2[l] = term_src + (t * term_frame_step * p.R + r) * w.term_C_in;
          if (++r == p.R) r = 0, ++t;
        }
        const int64_t t_first = m0 / p.R, t_last = (m0 + n - 1) / p.R;
        run.taps = 0;
        for (int j = 0; j < p.taps; ++j)
          if (p.live_first[j] <= t_last && t_first < p.live_end[j]) live[run.taps++] = j;
        run.row0 = m0;
        set_up = tile;
      }
      if (by_block)
        run_block_at(run, panels, static_cast<size_t>(unit / tiles), n);
      else
        run_blocks(run, panels, n);
    }
  });
}

namespace {

// The adjacency subsets each joint takes part in, grouped into patterns. Aggregating first, destination w needs
// subset k only when column w of A_k has a non-zero (else its segment of xa is a sum over nothing); GEMM first,
// source v needs it only when row v of A_k has one (else no destination reads its segment of y). Each pattern's
// joints share a panel packed with only their subsets' depth (aggregate first) or columns (GEMM first), so the
// products of the skipped segments, zero or never read, are not computed: ST-GCN's spatial partition of the H36M
// skeleton uses 40 of the 51 destination segments and 39 of the 51 source segments (~22 % fewer graph FLOPs).
struct SubsetPatterns {
  std::vector<std::vector<int64_t>> subsets;  // pattern -> its subsets, increasing
  std::vector<std::vector<int64_t>> joints;   // pattern -> its joints, increasing
  std::vector<int64_t> slot;                  // (V, K): subset k's segment in the joint's row, -1 when unused
};

template <typename F>
SubsetPatterns subset_patterns(int64_t V, int64_t K, F&& uses) {
  SubsetPatterns sp;
  sp.slot.assign(static_cast<size_t>(V * K), -1);
  for (int64_t v = 0; v < V; ++v) {
    std::vector<int64_t> ks;
    for (int64_t k = 0; k < K; ++k)
      if (uses(v, k)) {
        sp.slot[v * K + k] = static_cast<int64_t>(ks.size());
        ks.push_back(k);
      }
    const size_t i = static_cast<size_t>(std::find(sp.subsets.begin(), sp.subsets.end(), ks) - sp.subsets.begin());
    if (i == sp.subsets.size()) {
      sp.subsets.push_back(ks);
      sp.joints.emplace_back();
    }
    sp.joints[i].push_back(v);
  }
  return sp;
}

}  // namespace

// gcn_forward's weights packed (everything that does not depend on x): which side it aggregates, the subset
// patterns, a panel per pattern, the bias (aggregate first: the bias map, with the eval shift in it; GEMM first:
// per pattern, its subsets' biases, and the eval shift) and the aggregation's gather lists, A's values in them.
template <typename T>
struct GcnWeights {
  int64_t V, K, C_in, C_out;
  bool eval;             // the eval epilogue (relu(z + shift) into the phase buffer) instead of statistics
  bool aggregate_first;  // else GEMM first
  int64_t width;         // the thread-local buffer's row: K * C_in (aggregate first) or K * C_out
  SubsetPatterns sp;
  std::vector<std::unique_ptr<Panels<T>>> panels;  // per subset pattern
  GatherList<T> lists;
  // aggregate first
  int64_t padded = 0;
  Aligned<T> bias_map;
  bool flat = false;  // C_in < one vector: the aggregation element by element over these flat lists
  std::vector<int64_t> flat_dst, flat_src;
  std::vector<T> flat_m;
  // GEMM first
  std::vector<std::unique_ptr<Aligned<T>>> biases;
  std::vector<T> shift;  // (V, C_out), eval only
  Aligned<T> zero_row;

  GcnWeights(const GcnForward& p, const GcnOperands<T>& o, int order, int threads);
};

template <typename T>
GcnWeights<T>::GcnWeights(const GcnForward& p, const GcnOperands<T>& o, int order, int threads)
    : V(p.V), K(p.K), C_in(p.C_in), C_out(p.C_out), eval(o.eval_shift != nullptr) {
  auto adjacency = [&](int64_t k, int64_t v, int64_t w) { return T(p.A[(k * V + v) * V + w]); };  // as the contract
  // The operands, with B1's scale where pack_eval_block folds it in (the products rounded to T once, as the
  // folded tensors' elements are).
  auto scaled = [&](T value, int64_t c) { return o.scale ? value * o.scale[c] : value; };
  auto weight = [&](int64_t row, int64_t ci) { return scaled(o.weight[row * C_in + ci], row % C_out); };
  auto bias = [&](int64_t row) { return scaled(o.bias[row], row % C_out); };
  auto eval_shift = [&](int64_t w, int64_t c) { return o.eval_shift[(o.shift_per_joint ? w * C_out : 0) + c]; };
  // The dense products are about the same either way (at most V x K*C_in x C_out, less the skipped segments);
  // aggregating costs nnz x (vectors of the aggregated side): aggregate first when the input has fewer vectors
  // than the output (16 -> 32 channels, not 2 -> 16 where both are one vector and the GEMM-first order measured
  // faster, and is the contract's order).
  const int64_t L = kLanes<T>;
  aggregate_first = order == kGcnAuto ? (C_in + L - 1) / L < (C_out + L - 1) / L : order == kGcnAggregateFirst;
  width = aggregate_first ? K * C_in : K * C_out;
  if (aggregate_first) {
    // z = xa @ Wcat + bias_map, xa[g, w, k*C_in + ci] = sum_v A[k, v, w] x[g, v, ci], Wcat[k*C_in + ci, c] =
    // weight[k*C_out + c, ci], bias_map[w, c] = sum_k colsum(A_k)[w] bias[k*C_out + c]; xa's row w holds only its
    // pattern's segments, the panel of the pattern only their rows of Wcat. This moves the 1x1's bias through the
    // aggregation and skips the contract's rounding of y = x @ W^T + b to T before it: equal in exact arithmetic,
    // so in float32 only the last bits differ (the tests' float32 tolerances), in float64 far below the tests'
    // 1e-9.
    sp = subset_patterns(V, K, [&](int64_t w, int64_t k) {
      for (int64_t v = 0; v < V; ++v)
        if (adjacency(k, v, w) != T(0)) return true;
      return false;
    });
    for (const auto& ks : sp.subsets) {
      std::vector<int64_t> source(ks.size() * static_cast<size_t>(C_in));  // panel row -> its first weight element
      for (size_t i = 0; i < source.size(); ++i)
        source[i] = ks[i / C_in] * C_out * C_in + static_cast<int64_t>(i) % C_in;
      panels.push_back(std::make_unique<Panels<T>>(int64_t(ks.size()) * C_in, C_out, [&](int64_t kk, int64_t c) {
        return scaled(o.weight[source[kk] + c * C_in], c);
      }, threads));
    }
    padded = round_up(C_out, L);
    bias_map = Aligned<T>(static_cast<size_t>(V * padded));
    zero_row = Aligned<T>(static_cast<size_t>(padded));
    std::vector<double> colsum(static_cast<size_t>(K * V), 0.0);  // (K, V): column sums of the adjacency
    for (int64_t k = 0; k < K; ++k)
      for (int64_t v = 0; v < V; ++v)
        for (int64_t w = 0; w < V; ++w) colsum[k * V + w] += double(adjacency(k, v, w));
    for (int64_t w = 0; w < V; ++w)
      for (int64_t c = 0; c < C_out; ++c) {
        double s = 0.0;
        for (int64_t k = 0; k < K; ++k) s += colsum[k * V + w] * double(bias(k * C_out + c));
        bias_map.data()[w * padded + c] = T(eval ? s + double(eval_shift(w, c)) : s);
      }
    // Narrow inputs (C_in < one vector) aggregate element by element over one flat list per group, destination
    // xa[w, slot*C_in + ci] (zeroed first) += m * x[v, ci]; wider ones row segment by row segment, in registers.
    flat = C_in < kLanes<T>;
    // lists: destination (w, slot): the x rows v (offset v * C_in); unused slots (last): nothing
    for (int64_t w = 0; w < V; ++w) {
      for (int64_t k = 0; k < K; ++k) {
        const int64_t slot = sp.slot[w * K + k];  // slots follow k, so the lists come in (w, slot) order
        if (slot < 0) continue;
        for (int64_t v = 0; v < V; ++v) {
          const T m = adjacency(k, v, w);
          if (m == T(0)) continue;
          lists.add(v * C_in, m);
          if (flat)
            for (int64_t ci = 0; ci < C_in; ++ci) {
              flat_dst.push_back((w * K + slot) * C_in + ci);
              flat_src.push_back(v * C_in + ci);
              flat_m.push_back(m);
            }
        }
        lists.close();
      }
      for (int64_t k = 0; k < K; ++k)
        if (sp.slot[w * K + k] < 0) lists.close();
    }
  } else {
    // y = x @ W^T + b per chunk (rounded to T, as the contract's), then z[w] = sum_k sum_v A[k, v, w] y[v, k]; y's
    // row v holds only its pattern's segments, computed by the pattern's panel (its subsets' columns of W^T).
    sp = subset_patterns(V, K, [&](int64_t v, int64_t k) {
      for (int64_t w = 0; w < V; ++w)
        if (adjacency(k, v, w) != T(0)) return true;
      return false;
    });
    for (const auto& ks : sp.subsets) {
      const int64_t n = int64_t(ks.size()) * C_out;
      std::vector<int64_t> source(static_cast<size_t>(n));  // panel column -> row of weight
      for (int64_t col = 0; col < n; ++col) source[col] = ks[col / C_out] * C_out + col % C_out;
      panels.push_back(std::make_unique<Panels<T>>(C_in, n, [&](int64_t ci, int64_t col) {
        return weight(source[col], ci);
      }, threads));
      biases.push_back(std::make_unique<Aligned<T>>(static_cast<size_t>(round_up(n, L))));
      for (int64_t col = 0; col < n; ++col) biases.back()->data()[col] = bias(source[col]);
    }
    if (eval) {
      shift.resize(static_cast<size_t>(V * C_out));
      for (int64_t w = 0; w < V; ++w)
        for (int64_t c = 0; c < C_out; ++c) shift[w * C_out + c] = eval_shift(w, c);
    }
    zero_row = Aligned<T>(static_cast<size_t>(round_up(width, L)));
    // lists: destination w: the y segments (v, slot of k) (offset v * width + slot * C_out)
    for (int64_t w = 0; w < V; ++w) {
      for (int64_t k = 0; k < K; ++k)
        for (int64_t v = 0; v < V; ++v) {
          const T m = adjacency(k, v, w);
          if (m != T(0)) lists.add(v * width + sp.slot[v * K + k] * C_out, m);
        }
      lists.close();
    }
  }
}

namespace {

// z (or the phase buffer) for `groups` groups of x through packed weights.
template <typename T>
void gcn_run(const GcnWeights<T>& gw, int64_t groups_total, const T* x, const GcnOutput<T>& dst, int threads) {
  const int64_t V = gw.V, C_in = gw.C_in, C_out = gw.C_out, width = gw.width;
  const bool eval = gw.eval;
  double* const sums = dst.sums;
  const int64_t chunk = std::max<int64_t>(
      1, std::min<int64_t>(kChunkBytes / (V * width * int64_t(sizeof(T))), kChunkRows / V));
  const int64_t zero_offset[1] = {0};
  const SubsetPatterns& sp = gw.sp;
  const auto& panels = gw.panels;
  if (gw.aggregate_first) {
    const int64_t padded = gw.padded, n_flat = static_cast<int64_t>(gw.flat_m.size());
    partitioned(groups_total, threads, eval ? 0 : 2 * C_out, sums, [&](double* part, int64_t first, int64_t end) {
      Aligned<T> xa(static_cast<size_t>(chunk * V * width));
      std::vector<const T*> rows(chunk * V), add_rows(chunk * V);
      std::vector<T*> out_rows(chunk * V);
      RowRun<T> run;
      run.rows = rows.data();
      run.tap_offset = zero_offset;
      run.bias = gw.zero_row.data();
      run.add_rows = add_rows.data();
      run.relu = eval;
      run.n = C_out;
      run.sum = eval ? nullptr : part;
      run.sumsq = eval ? nullptr : part + C_out;
      run.out_rows = out_rows.data();
      for (int64_t g0 = first; g0 < end; g0 += chunk) {
        const int64_t groups = std::min(chunk, end - g0);
        for (int64_t gl = 0; gl < groups; ++gl) {
          const T* __restrict xg = x + (g0 + gl) * V * C_in;
          T* __restrict xag = xa.data() + gl * V * width;
          if (gw.flat) {
            std::fill(xag, xag + V * width, T(0));
            for (int64_t e = 0; e < n_flat; ++e) xag[gw.flat_dst[e]] += gw.flat_m[e] * xg[gw.flat_src[e]];
          } else {  // destination (w, slot) is the row segment xa[w, slot*C_in : (slot+1)*C_in]
            gather_rows(xag, C_in, V * gw.K, C_in, xg, gw.lists);
          }
        }
        for (size_t pi = 0; pi < panels.size(); ++pi) {  // the rows of the pattern's joints, group by group
          int64_t l = 0;
          for (int64_t gl = 0; gl < groups; ++gl) {
            T* group = dst.group(g0 + gl);
            if (group == nullptr) continue;  // (eval) a frame no tap reads
            for (const int64_t w : sp.joints[pi]) {
              rows[l] = xa.data() + (gl * V + w) * width;
              out_rows[l] = group + w * C_out;
              add_rows[l] = gw.bias_map.data() + w * padded;
              ++l;
            }
          }
          run.depth = int64_t(sp.subsets[pi].size()) * C_in;
          run_blocks(run, *panels[pi], l);
        }
      }
    });
  } else {
    partitioned(groups_total, threads, eval ? 0 : 2 * C_out, sums, [&](double* part, int64_t first, int64_t end) {
      Aligned<T> y(static_cast<size_t>(chunk * V * width));
      std::vector<const T*> rows(chunk * V);
      std::vector<T*> out_rows(chunk * V);
      RowRun<T> run;
      run.rows = rows.data();
      run.tap_offset = zero_offset;
      run.depth = C_in;
      run.add = gw.zero_row.data();
      run.out_rows = out_rows.data();
      for (int64_t g0 = first; g0 < end; g0 += chunk) {
        const int64_t groups = std::min(chunk, end - g0);
        for (size_t pi = 0; pi < panels.size(); ++pi) {
          if (sp.subsets[pi].empty()) continue;  // joints no destination reads
          int64_t l = 0;
          for (int64_t gl = 0; gl < groups; ++gl)
            for (const int64_t v : sp.joints[pi]) {
              rows[l] = x + ((g0 + gl) * V + v) * C_in;
              out_rows[l] = y.data() + (gl * V + v) * width;
              ++l;
            }
          run.bias = gw.biases[pi]->data();
          run.n = panels[pi]->n;
          run_blocks(run, *panels[pi], l);
        }
        for (int64_t gl = 0; gl < groups; ++gl) {
          T* group = dst.group(g0 + gl);
          if (!eval)
            aggregate_group(group, C_out, V, C_out, y.data() + gl * V * width, gw.lists, part, part + C_out);
          else if (group)
            gather_rows(group, C_out, V, C_out, y.data() + gl * V * width, gw.lists, gw.shift.data());
        }
      }
    });
  }
}

}  // namespace

template <typename T>
std::shared_ptr<const GcnWeights<T>> pack_gcn(const GcnForward& p, const GcnOperands<T>& operands, int order,
                                              int threads) {
  return std::make_shared<const GcnWeights<T>>(p, operands, order, threads);
}

template <typename T>
void gcn_forward(const GcnForward& p, const T* x, const T* weight, const T* bias, T* z, double* sums, int threads,
                 int order) {
  const GcnWeights<T> packed(p, GcnOperands<T>{weight, bias, nullptr, nullptr, true}, order, threads);
  gcn_run(packed, p.groups, x, GcnOutput<T>{z, sums, nullptr, p.V * p.C_out}, threads);
}

template <typename T>
void gcn_relu_phases(const GcnForward& p, const PhaseOutput& o, const T* x, const T* weight, const T* bias,
                     const T* shift, T* h, int threads, int order) {
  const GcnWeights<T> packed(p, GcnOperands<T>{weight, bias, nullptr, shift, true}, order, threads);
  gcn_relu_phases_packed(packed, p.groups, o, x, h, threads);
}

template <typename T>
void gcn_relu_phases_packed(const GcnWeights<T>& w, int64_t groups, const PhaseOutput& o, const T* x, T* h,
                            int threads) {
  if (!w.eval) throw std::invalid_argument("gcn_relu_phases_packed: the weights were packed without the eval shift");
  const int64_t T_in = groups / o.N, slot_size = o.N * w.V * w.C_out;
  for (int64_t phase = 0; phase < o.stride; ++phase)  // the padding slots (a few frames' worth): zeros
    for (int64_t slot = 0; slot < o.Tq; ++slot) {
      const int64_t t = slot * o.stride + phase - o.pad;
      if (t < 0 || t >= T_in) std::memset(h + (phase * o.Tq + slot) * slot_size, 0, sizeof(T) * slot_size);
    }
  gcn_run(w, groups, x, GcnOutput<T>{h, nullptr, &o, w.V * w.C_out}, threads);
}

#define UGCN_INSTANTIATE(T)                                                                                   \
  template void conv_frames<T>(const ConvFrames&, const T*, const T*, const T*, const T*, bool, T*, double*, \
                               int, const PointwiseTerm<T>&);                                                \
  template std::shared_ptr<const ConvFramesWeights<T>> pack_conv_frames<T>(const ConvFramesOperands<T>&, int); \
  template void conv_frames_packed<T>(const ConvFrames&, const ConvFramesWeights<T>&, const T*, const T*, bool, \
                                      T*, double*, int, const T*, int64_t);                                   \
  template std::shared_ptr<const GcnWeights<T>> pack_gcn<T>(const GcnForward&, const GcnOperands<T>&, int, int); \
  template void gcn_relu_phases_packed<T>(const GcnWeights<T>&, int64_t, const PhaseOutput&, const T*, T*, int); \
  template void gcn_forward<T>(const GcnForward&, const T*, const T*, const T*, T*, double*, int, int);      \
  template void gcn_relu_phases<T>(const GcnForward&, const PhaseOutput&, const T*, const T*, const T*,      \
                                   const T*, T*, int, int);
UGCN_INSTANTIATE(float)
UGCN_INSTANTIATE(double)
#undef UGCN_INSTANTIATE

}  // namespace cpu
}  // namespace ugcn
