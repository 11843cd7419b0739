// CPU kernels of the fused ST-GCN block's channel mixing (the GEMMs) with fused epilogues, for the small channel
// counts of UGCN (16 to 256 channels, ~100k rows), where a library GEMM is narrow and memory-bound.
// Contract: gcn_forward and conv_frames in ugcn_fast/backends/torch_stgcn.py; launchers in
// ugcn_fast/backends/cpu_stgcn.py. Matrices are rows x C, channels contiguous; per-channel statistics are float64
// sums over per-thread partials of a static partition, added in thread order: bitwise reproducible for a given
// thread count.
//
// What each tile does (stgcn_gemm.cpp):
// - conv_frames: a thread owns a contiguous run of row tiles (96 output rows each; fewer, down to 24, when that
//   leaves a thread fewer than four tiles, so that a small batch still splits evenly). For a row tile it
//   computes each row's source row once (row m = t * R + r reads, for tap j, source row
//   (frame_offsets[j] + t * frame_step) * R + r: the taps and the strided frames are addressing, nothing is
//   copied), then for every block of output channels (1 to 4 SIMD vectors wide) it walks the tile in micro-tiles
//   of RB rows: RB x block accumulators in registers, one pass over (tap, input channel) broadcasting
//   src[row, ci] against the packed weight row W[j, ci, block], then the epilogue in registers (+ bias, + add,
//   ReLU, store, statistics). The pass takes only the taps that read a real frame for some row of the tile.
// - gcn_forward: a thread owns a contiguous run of groups (the V rows of one (t, n)), processed in chunks of whole
//   groups (up to 256 rows, 256 KiB) through a thread-local buffer. When the input has fewer SIMD vectors of
//   channels than the output (16 -> 32): aggregate first (xa = the K aggregated copies of x, V x K*C_in, over the
//   adjacency's non-zeros only), then z = xa @ Wcat + bias_map by the same micro-kernel, statistics in its
//   epilogue. Otherwise: GEMM first (y = x @ W^T + b, V x K*C_out, rounded to the dtype as the contract's), then
//   the sparse aggregation into z, group by group, with the statistics in registers on the way. Either way the
//   dense product skips the segments the adjacency makes zero or unread: the joints are grouped by the subsets
//   they take part in (a destination w uses subset k when column w of A_k has a non-zero, a source v when row v
//   does), and each group's rows run through a panel packed with only those subsets (~22 % fewer graph FLOPs
//   with ST-GCN's spatial partition of the H36M skeleton).
// - gcn_relu_phases: gcn_forward whose epilogue adds B1's shift, applies the ReLU and stores each group's rows at
//   their place in the phase buffer (a per-row destination instead of row m), without statistics.
#pragma once

#include <cstdint>
#include <memory>

namespace ugcn {
namespace cpu {

constexpr int kMaxConvTaps = 9;

struct ConvFrames {
  int64_t frames, R, C_in, C_out, T_out, frame_step;  // src (frames, R, C_in) -> u (T_out * R, C_out)
  int taps;                                           // 1 .. kMaxConvTaps
  int64_t frame_offsets[kMaxConvTaps];                // tap j's first frame; every read frame < frames
  // Tap j reads zero frames (a convolution's padding) outside output frames [live_first[j], live_end[j]): a row
  // tile skips the taps whose span misses all of its frames (UGCN's deep blocks, T = 6 to 24 frames, spend 5 to
  // 20 % of their temporal products on padding otherwise). [0, T_out) for every tap skips nothing.
  int64_t live_first[kMaxConvTaps], live_end[kMaxConvTaps];
};

// A pointwise product conv_frames adds into its sums: src (frames, R, C_in) at frame t * frame_step for output
// frame t, weight (C_in, C_out) contiguous. The eval block's convolution residual (B3 folded in) is one: computed
// in the temporal convolution's accumulators, it is never stored and read back.
template <typename T>
struct PointwiseTerm {
  const T* src = nullptr;  // null: no term
  const T* weight = nullptr;
  int64_t C_in = 0, frame_step = 1;
};

// u[t*R + r] = relu?(sum_j src[frame_offsets[j] + t*frame_step, r] @ weight[j]
//                    + term.src[t*term.frame_step, r] @ term.weight + bias + add[t*R + r]).
// weight (taps, C_in, C_out) contiguous; bias (C_out) or null; add (T_out*R, C_out) or null; sums (2, C_out)
// float64 (sum, sum of squares of the stored u) or null for no statistics.
template <typename T>
void conv_frames(const ConvFrames& p, const T* src, const T* weight, const T* bias, const T* add, bool relu, T* u,
                 double* sums, int threads, const PointwiseTerm<T>& term = PointwiseTerm<T>{});

struct GcnForward {
  int64_t groups, V, K, C_in, C_out;  // x (groups, V, C_in) -> z (groups, V, C_out)
  const double* A;                    // (K, V, V), rounded to T as the contract's aggregation does
};

// Which side gcn_forward aggregates: auto (the narrower one: aggregate first when C_in < C_out), or forced (tests
// and the measurement script exercise both).
enum GcnOrder { kGcnAuto = 0, kGcnAggregateFirst = 1, kGcnGemmFirst = 2 };

// z[g, w, c] = sum_k sum_v A[k, v, w] (x[g, v] . weight[k*C_out + c] + bias[k*C_out + c]); weight (K*C_out, C_in)
// contiguous, bias (K*C_out); sums (2, C_out) float64: sum and sum of squares of the stored z.
template <typename T>
void gcn_forward(const GcnForward& p, const T* x, const T* weight, const T* bias, T* z, double* sums, int threads,
                 int order = kGcnAuto);

// The eval block's gcn_forward (gcn_relu_phases): group g = t * N + n's rows go, as relu(z + shift[w, c]) and with no
// statistics, to the temporal convolution's phase buffer h (stride, Tq, N*V, C_out): frame t at phase
// (t + pad) % stride, slot (t + pad) / stride (dropped when the slot is >= Tq); the slots no frame fills are zeroed.
// Saves the pass that read z back to write the phase buffer, and the statistics eval does not use.
struct PhaseOutput {
  int64_t N, stride, pad, Tq;  // groups = T * N
};

template <typename T>
void gcn_relu_phases(const GcnForward& p, const PhaseOutput& o, const T* x, const T* weight, const T* bias,
                     const T* shift, T* h, int threads, int order = kGcnAuto);

// Packed weights: what conv_frames and gcn_relu_phases build from their weights on every call (panels, the
// subset patterns and gather lists, padded biases), built once. The eval block builds them with its BatchNorms
// folded in (pack_eval_block, stgcn_fold.h), and a frozen one (ugcn_fast's FusedSTGCNBlock.freeze) keeps them
// between calls: that build is most of a small batch's fixed cost. They copy everything they need (weights,
// biases, shift, A's values); the *_packed calls take the sizes they were packed for, which the caller checks
// against the packed ones. `threads`: large operands are packed by up to that many threads.
template <typename T>
struct ConvFramesWeights;  // taps, C_in, C_out, term_C_in (0: none)
template <typename T>
struct GcnWeights;  // V, K, C_in, C_out, eval

// A weight matrix as packing reads it, in place: element (r, c) at data[offset of row r + c * col_stride], times
// col_scale[c] where given. The scale is how pack_eval_block folds a BatchNorm into the weights on the way, with
// the same single rounding as multiplying the folded tensor out first (ugcn_fast's fold_eval_weights).
template <typename T>
struct WeightOperand {
  const T* data = nullptr;  // null: no such operand
  int64_t row_stride = 0, col_stride = 1;
  const T* col_scale = nullptr;
};

// conv_frames' operands: tap j, input channel ci, output channel c at weight.data[j * tap_stride + ci *
// weight.row_stride + c * weight.col_stride] (contiguous (taps, C_in, C_out), or nn.Conv2d's (C_out, C_in, taps)
// read in place); bias (C_out) or null; the pointwise term's weight (term_C_in, C_out) or no data.
template <typename T>
struct ConvFramesOperands {
  int taps;
  int64_t C_in, C_out;
  WeightOperand<T> weight;
  int64_t tap_stride;
  const T* bias;
  WeightOperand<T> term;
  int64_t term_C_in;
};

// The contiguous operands of conv_frames' contract: weight (taps, C_in, C_out), bias (C_out) or null, term_weight
// (term_C_in, C_out) or null.
template <typename T>
ConvFramesOperands<T> contiguous_conv_frames_operands(int taps, int64_t C_in, int64_t C_out, const T* weight,
                                                      const T* bias, int64_t term_C_in, const T* term_weight) {
  return ConvFramesOperands<T>{taps,         C_in, C_out, {weight, C_out, 1, nullptr}, C_in * C_out, bias,
                               {term_weight, C_out, 1, nullptr}, term_weight ? term_C_in : 0};
}

template <typename T>
std::shared_ptr<const ConvFramesWeights<T>> pack_conv_frames(const ConvFramesOperands<T>& operands, int threads);
// conv_frames with packed weights (p.taps, p.C_in, p.C_out as packed); term_src: the pointwise term's source, given
// exactly when the weights hold a term (std::invalid_argument otherwise).
template <typename T>
void conv_frames_packed(const ConvFrames& p, const ConvFramesWeights<T>& w, const T* src, const T* add, bool relu,
                        T* u, double* sums, int threads, const T* term_src, int64_t term_frame_step);

// gcn_relu_phases' operands: weight (K*C_out, C_in), bias (K*C_out), each times scale[c] for output channel c
// where scale (C_out) is given (pack_eval_block folds B1 in so); eval_shift: the shift of gcn_relu_phases'
// epilogue, (V, C_out), or (shift_per_joint false) one (C_out) row for every joint; null for gcn_forward's epilogue.
template <typename T>
struct GcnOperands {
  const T* weight;
  const T* bias;
  const T* scale;
  const T* eval_shift;
  bool shift_per_joint;
};

// p's V, K, C_in, C_out and A (p.groups unused). Only gcn_relu_phases_packed exists: the eval path is the one that
// reuses weights; it refuses weights packed without the eval shift with std::invalid_argument.
template <typename T>
std::shared_ptr<const GcnWeights<T>> pack_gcn(const GcnForward& p, const GcnOperands<T>& operands, int order,
                                              int threads);
template <typename T>
void gcn_relu_phases_packed(const GcnWeights<T>& w, int64_t groups, const PhaseOutput& o, const T* x, T* h,
                            int threads);

}  // namespace cpu
}  // namespace ugcn
