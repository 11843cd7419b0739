// pybind11 module ugcn_fast._C: the CPU kernels, called with raw pointers, sizes and strides.
// No torch headers: one build serves every torch version. The Python layer (ugcn_fast/backends/cpu.py) has
// validated every argument; the checks here only refuse what would be memory-unsafe if a caller bypassed it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "../motion_loss_math.h"
#include "motion_loss.h"
#include "stgcn_block.h"
#include "stgcn_fold.h"
#include "stgcn_gemm.h"

namespace py = pybind11;
using ugcn::cpu::MotionLossProblem;

namespace {

void* as_ptr(uintptr_t address) { return reinterpret_cast<void*>(address); }

MotionLossProblem make_problem(uintptr_t pred, int64_t pred_stride_b, uintptr_t target, int64_t target_stride_b,
                               int64_t B, int64_t T, int64_t J, int D, const std::vector<int>& intervals, int op,
                               int normalize, double eps, int reduction, uintptr_t den, uintptr_t loss,
                               uintptr_t grad_pred, uintptr_t grad_target, int num_threads) {
  if (!pred || !target || !den || !loss) throw std::invalid_argument("pred, target, den and loss must be non-null");
  if (B < 1 || T < 2 || J < 1 || D < 1) throw std::invalid_argument("sizes: need B >= 1, T >= 2, J >= 1, D >= 1");
  if (op == ugcn::kCross ? D != 3 : D > ugcn::kMaxD) throw std::invalid_argument("D: out of range for the operator");
  if (intervals.empty() || int(intervals.size()) > ugcn::kMaxIntervals)
    throw std::invalid_argument("intervals: need 1 to kMaxIntervals values");
  for (int tau : intervals)
    if (tau < 1 || tau >= T) throw std::invalid_argument("intervals: every tau must satisfy 1 <= tau < T");
  if (normalize < 0 || normalize > 2) throw std::invalid_argument("normalize: unknown code");
  if (reduction < 0 || reduction > 2) throw std::invalid_argument("reduction: unknown code");
  return MotionLossProblem{as_ptr(pred), pred_stride_b, as_ptr(target), target_stride_b, B, T, J, D, intervals, op,
                           normalize, reduction, eps, as_ptr(den), as_ptr(loss), as_ptr(grad_pred),
                           as_ptr(grad_target), num_threads < 1 ? 1 : num_threads};
}

template <void (*F32)(const MotionLossProblem&), void (*F64)(const MotionLossProblem&)>
void launch(const std::string& dtype, uintptr_t pred, int64_t pred_stride_b, uintptr_t target, int64_t target_stride_b,
            int64_t B, int64_t T, int64_t J, int D, const std::vector<int>& intervals, int op, int normalize,
            double eps, int reduction, uintptr_t den, uintptr_t loss, uintptr_t grad_pred, uintptr_t grad_target,
            int num_threads) {
  const MotionLossProblem p = make_problem(pred, pred_stride_b, target, target_stride_b, B, T, J, D, intervals, op,
                                           normalize, eps, reduction, den, loss, grad_pred, grad_target, num_threads);
  if (dtype == "float32") {
    py::gil_scoped_release no_gil;
    F32(p);
  } else if (dtype == "float64") {
    py::gil_scoped_release no_gil;
    F64(p);
  } else {
    throw std::invalid_argument("dtype: the CPU kernels take float32 or float64, got " + dtype);
  }
}

// The ST-GCN block's passes: `dtype` picks the float or double instantiation; the GIL is released while they run.
template <typename F>
void with_dtype(const std::string& dtype, F&& f) {
  if (dtype == "float32") {
    py::gil_scoped_release no_gil;
    f(float{});
  } else if (dtype == "float64") {
    py::gil_scoped_release no_gil;
    f(double{});
  } else {
    throw std::invalid_argument("dtype: the CPU kernels take float32 or float64, got " + dtype);
  }
}

template <typename T>
const T* in(uintptr_t address) { return reinterpret_cast<const T*>(address); }
template <typename T>
T* out(uintptr_t address) { return reinterpret_cast<T*>(address); }

void require(bool ok, const char* what) {
  if (!ok) throw std::invalid_argument(what);
}

ugcn::cpu::Phases make_phases(int64_t T, int64_t rows, int64_t C, int64_t V, int64_t stride, int64_t pad, int64_t Tq) {
  require(T >= 1 && rows >= 1 && C >= 1 && V >= 1 && rows % V == 0, "sizes: need T, rows, C, V >= 1, V | rows");
  require(stride >= 1 && pad >= 0 && Tq >= 1, "phases: need stride >= 1, pad >= 0, Tq >= 1");
  return ugcn::cpu::Phases{T, rows, C, V, stride, pad, Tq};
}

// Dropout from the Python arguments: a mask tensor (pointer), or hashed from `seed` with probability p.
template <typename T>
ugcn::cpu::Dropout<T> make_dropout(uintptr_t mask, bool hashed, uint64_t seed, double p) {
  ugcn::cpu::Dropout<T> d;
  if (hashed) {
    require(p >= 0.0 && p < 1.0, "dropout p: need 0 <= p < 1");
    d.kind = ugcn::cpu::Dropout<T>::kHashed;
    d.seed = seed;
    d.threshold = static_cast<uint32_t>(std::llround(p * 16777216.0));
    d.scale = T(1.0 / (1.0 - p));
  } else if (mask) {
    d.kind = ugcn::cpu::Dropout<T>::kMask;
    d.mask = in<T>(mask);
  }
  return d;
}

ugcn::cpu::BatchNormSaved saved(uintptr_t mean, uintptr_t invstd, uintptr_t weight) {
  return {in<double>(mean), in<double>(invstd), in<double>(weight)};
}

// conv_frames' problem from the Python arguments, every read it implies checked against the sizes.
ugcn::cpu::ConvFrames make_conv_frames(int64_t frames, int64_t R, int64_t C_in, int64_t C_out, int64_t T_out,
                                       int64_t frame_step, const std::vector<int64_t>& frame_offsets,
                                       const std::vector<int64_t>& tap_spans, bool term, int64_t frames2,
                                       int64_t C_in2, int64_t frame_step2) {
  require(frames >= 1 && R >= 1 && C_in >= 1 && C_out >= 1 && T_out >= 1 && frame_step >= 1,
          "conv_frames: need frames, R, C_in, C_out, T_out, frame_step >= 1");
  require(!frame_offsets.empty() && frame_offsets.size() <= size_t(ugcn::cpu::kMaxConvTaps),
          "conv_frames: need 1 to 9 taps (frame offsets)");
  require(tap_spans.empty() || tap_spans.size() == 2 * frame_offsets.size(),
          "conv_frames: tap_spans holds no span or one (first, end) per tap");
  ugcn::cpu::ConvFrames p{frames, R, C_in, C_out, T_out, frame_step, int(frame_offsets.size()), {}, {}, {}};
  for (size_t j = 0; j < frame_offsets.size(); ++j) {
    const int64_t first = frame_offsets[j];
    require(first >= 0 && first < frames && (T_out - 1) <= (frames - 1 - first) / frame_step,
            "conv_frames: a frame offset reads outside src's frames");
    p.frame_offsets[j] = first;
    p.live_first[j] = tap_spans.empty() ? 0 : tap_spans[2 * j];
    p.live_end[j] = tap_spans.empty() ? T_out : tap_spans[2 * j + 1];
  }
  if (term) {
    require(frames2 >= 1 && C_in2 >= 1 && frame_step2 >= 1,
            "conv_frames: the pointwise term needs src2, weight2, frames2, C_in2, frame_step2 >= 1");
    require((T_out - 1) <= (frames2 - 1) / frame_step2, "conv_frames: the pointwise term reads past src2");
  }
  return p;
}

// Packed weights for Python (stgcn_gemm.h: built once, reused by a frozen eval block): the native object and what
// it was packed for, which every call that uses it must match.
struct PackedWeights {
  std::string kind;  // "conv_frames" or "gcn_relu_phases"
  std::string dtype;
  std::vector<int64_t> sizes;  // conv_frames: taps, C_in, C_out, C_in2 (0: no pointwise term); gcn: V, K, C_in, C_out
  std::shared_ptr<const void> native;
};

template <typename T>
const T& unpack(const PackedWeights& w) {
  return *static_cast<const T*>(w.native.get());
}

// The channel-mixing kernels (stgcn_gemm.h). Every read they do is bounded by the sizes and offsets checked here.
void bind_stgcn_gemm(py::module_& m) {
  py::class_<PackedWeights, std::shared_ptr<PackedWeights>>(
      m, "PackedWeights", "packed weights of conv_frames or gcn_relu_phases (stgcn_pack_*); opaque")
      .def_readonly("kind", &PackedWeights::kind)
      .def_readonly("dtype", &PackedWeights::dtype)
      .def_readonly("sizes", &PackedWeights::sizes)
      .def("__repr__", [](const PackedWeights& w) {
        std::string sizes;
        for (int64_t v : w.sizes) sizes += (sizes.empty() ? "" : ", ") + std::to_string(v);
        return "PackedWeights(" + w.kind + ", " + w.dtype + ", sizes=(" + sizes + "))";
      });
  m.def("stgcn_conv_frames",
        [](const std::string& dtype, uintptr_t src, uintptr_t weight, uintptr_t bias, uintptr_t add, uintptr_t u,
           uintptr_t sums, int64_t frames, int64_t R, int64_t C_in, int64_t C_out, int64_t T_out,
           int64_t frame_step, const std::vector<int64_t>& frame_offsets, const std::vector<int64_t>& tap_spans,
           uintptr_t src2, uintptr_t weight2, int64_t frames2, int64_t C_in2, int64_t frame_step2, bool relu,
           int threads) {
          require(src && weight && u, "conv_frames: null pointer");
          require(!src2 || weight2, "conv_frames: the pointwise term needs src2, weight2, frames2, C_in2, frame_step2 >= 1");
          const ugcn::cpu::ConvFrames p = make_conv_frames(frames, R, C_in, C_out, T_out, frame_step, frame_offsets,
                                                           tap_spans, src2 != 0, frames2, C_in2, frame_step2);
          with_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            const ugcn::cpu::PointwiseTerm<T> term{in<T>(src2), in<T>(weight2), C_in2, frame_step2};
            ugcn::cpu::conv_frames<T>(p, in<T>(src), in<T>(weight), in<T>(bias), in<T>(add), relu, out<T>(u),
                                      out<double>(sums), threads, term);
          });
        },
        "conv_frames(dtype, src, weight, bias, add, u, sums, frames, R, C_in, C_out, T_out, frame_step, "
        "frame_offsets, tap_spans, src2, weight2, frames2, C_in2, frame_step2, relu, threads): src (frames, R, "
        "C_in), weight (taps, C_in, C_out) contiguous, bias (C_out) or 0, add (T_out*R, C_out) or 0, u (T_out*R, "
        "C_out), sums (2, C_out) float64 or 0 (no statistics); tap_spans empty or (first, end) per tap: the output "
        "frames outside which the tap reads zeros; src2 (frames2, R, C_in2) or 0 and weight2 (C_in2, C_out): the "
        "pointwise term src2[t * frame_step2] @ weight2 added to the sums");
  m.def("stgcn_pack_conv_frames",
        [](const std::string& dtype, uintptr_t weight, uintptr_t bias, int64_t taps, int64_t C_in, int64_t C_out,
           uintptr_t weight2, int64_t C_in2) {
          require(weight != 0, "pack_conv_frames: null weight");
          require(taps >= 1 && taps <= ugcn::cpu::kMaxConvTaps && C_in >= 1 && C_out >= 1,
                  "pack_conv_frames: need 1 to 9 taps, C_in, C_out >= 1");
          require(!weight2 || C_in2 >= 1, "pack_conv_frames: the pointwise term needs C_in2 >= 1");
          auto packed = std::make_shared<PackedWeights>(
              PackedWeights{"conv_frames", dtype, {taps, C_in, C_out, weight2 ? C_in2 : 0}, nullptr});
          with_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            packed->native = ugcn::cpu::pack_conv_frames<T>(ugcn::cpu::contiguous_conv_frames_operands<T>(
                int(taps), C_in, C_out, in<T>(weight), in<T>(bias), C_in2, in<T>(weight2)), 1);
          });
          return packed;
        },
        "pack_conv_frames(dtype, weight, bias, taps, C_in, C_out, weight2, C_in2) -> PackedWeights: conv_frames' "
        "weight (taps, C_in, C_out) contiguous, bias (C_out) or 0, weight2 (C_in2, C_out) or 0, copied and packed");
  m.def("stgcn_conv_frames_packed",
        [](const PackedWeights& w, uintptr_t src, uintptr_t add, uintptr_t u, uintptr_t sums, int64_t frames,
           int64_t R, int64_t C_in, int64_t C_out, int64_t T_out, int64_t frame_step,
           const std::vector<int64_t>& frame_offsets, const std::vector<int64_t>& tap_spans, uintptr_t src2,
           int64_t frames2, int64_t C_in2, int64_t frame_step2, bool relu, int threads) {
          require(w.kind == "conv_frames", "conv_frames_packed: the weights were packed for another kernel");
          require(src && u, "conv_frames_packed: null pointer");
          const int64_t taps = int64_t(frame_offsets.size());
          require(w.sizes == std::vector<int64_t>{taps, C_in, C_out, src2 ? C_in2 : 0},
                  "conv_frames_packed: taps, C_in, C_out or the pointwise term differ from the packed weights'");
          const ugcn::cpu::ConvFrames p = make_conv_frames(frames, R, C_in, C_out, T_out, frame_step, frame_offsets,
                                                           tap_spans, src2 != 0, frames2, C_in2, frame_step2);
          with_dtype(w.dtype, [&](auto t) {
            using T = decltype(t);
            ugcn::cpu::conv_frames_packed<T>(p, unpack<ugcn::cpu::ConvFramesWeights<T>>(w), in<T>(src), in<T>(add),
                                             relu, out<T>(u), out<double>(sums), threads, in<T>(src2), frame_step2);
          });
        },
        "conv_frames_packed(packed, src, add, u, sums, frames, R, C_in, C_out, T_out, frame_step, frame_offsets, "
        "tap_spans, src2, frames2, C_in2, frame_step2, relu, threads): conv_frames with packed weights (dtype, "
        "taps, C_in, C_out and the pointwise term's C_in2 as packed)");
  m.def("stgcn_gcn_forward",
        [](const std::string& dtype, uintptr_t x, uintptr_t A, uintptr_t weight, uintptr_t bias, uintptr_t z,
           uintptr_t sums, int64_t groups, int64_t V, int64_t K, int64_t C_in, int64_t C_out, int order,
           int threads) {
          require(x && A && weight && bias && z && sums, "gcn_forward: null pointer");
          require(groups >= 1 && V >= 1 && K >= 1 && C_in >= 1 && C_out >= 1,
                  "gcn_forward: need groups, V, K, C_in, C_out >= 1");
          require(order >= ugcn::cpu::kGcnAuto && order <= ugcn::cpu::kGcnGemmFirst, "gcn_forward: unknown order");
          const ugcn::cpu::GcnForward p{groups, V, K, C_in, C_out, in<double>(A)};
          with_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            ugcn::cpu::gcn_forward<T>(p, in<T>(x), in<T>(weight), in<T>(bias), out<T>(z), out<double>(sums),
                                      threads, order);
          });
        },
        "gcn_forward(dtype, x, A, weight, bias, z, sums, groups, V, K, C_in, C_out, order, threads): x (groups, V, "
        "C_in), A (K, V, V) float64, weight (K*C_out, C_in), bias (K*C_out), z (groups, V, C_out), sums (2, C_out) "
        "float64; order 0 auto, 1 aggregate first, 2 GEMM first");
  m.def("stgcn_gcn_relu_phases",
        [](const std::string& dtype, uintptr_t x, uintptr_t A, uintptr_t weight, uintptr_t bias, uintptr_t shift,
           uintptr_t h, int64_t T, int64_t N, int64_t V, int64_t K, int64_t C_in, int64_t C_out, int64_t stride,
           int64_t pad, int64_t Tq, int order, int threads) {
          require(x && A && weight && bias && shift && h, "gcn_relu_phases: null pointer");
          require(T >= 1 && N >= 1 && V >= 1 && K >= 1 && C_in >= 1 && C_out >= 1,
                  "gcn_relu_phases: need T, N, V, K, C_in, C_out >= 1");
          require(stride >= 1 && pad >= 0 && Tq >= 1, "gcn_relu_phases: need stride >= 1, pad >= 0, Tq >= 1");
          require(order >= ugcn::cpu::kGcnAuto && order <= ugcn::cpu::kGcnGemmFirst, "gcn_relu_phases: unknown order");
          const ugcn::cpu::GcnForward p{T * N, V, K, C_in, C_out, in<double>(A)};
          const ugcn::cpu::PhaseOutput o{N, stride, pad, Tq};
          with_dtype(dtype, [&](auto t) {
            using T_ = decltype(t);
            ugcn::cpu::gcn_relu_phases<T_>(p, o, in<T_>(x), in<T_>(weight), in<T_>(bias), in<T_>(shift), out<T_>(h),
                                           threads, order);
          });
        },
        "gcn_relu_phases(dtype, x, A, weight, bias, shift, h, T, N, V, K, C_in, C_out, stride, pad, Tq, order, "
        "threads): x (T, N, V, C_in), A (K, V, V) float64, weight (K*C_out, C_in), bias (K*C_out), shift (V, C_out), "
        "h (stride, Tq, N*V, C_out)");
  m.def("stgcn_pack_gcn_relu_phases",
        [](const std::string& dtype, uintptr_t A, uintptr_t weight, uintptr_t bias, uintptr_t shift, int64_t V,
           int64_t K, int64_t C_in, int64_t C_out, int order) {
          require(A && weight && bias && shift, "pack_gcn_relu_phases: null pointer");
          require(V >= 1 && K >= 1 && C_in >= 1 && C_out >= 1, "pack_gcn_relu_phases: need V, K, C_in, C_out >= 1");
          require(order >= ugcn::cpu::kGcnAuto && order <= ugcn::cpu::kGcnGemmFirst,
                  "pack_gcn_relu_phases: unknown order");
          auto packed = std::make_shared<PackedWeights>(PackedWeights{"gcn_relu_phases", dtype, {V, K, C_in, C_out},
                                                                      nullptr});
          const ugcn::cpu::GcnForward p{0, V, K, C_in, C_out, in<double>(A)};
          with_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            packed->native = ugcn::cpu::pack_gcn<T>(
                p, ugcn::cpu::GcnOperands<T>{in<T>(weight), in<T>(bias), nullptr, in<T>(shift), true}, order, 1);
          });
          return packed;
        },
        "pack_gcn_relu_phases(dtype, A, weight, bias, shift, V, K, C_in, C_out, order) -> PackedWeights: "
        "gcn_relu_phases' A (K, V, V) float64, weight (K*C_out, C_in), bias (K*C_out), shift (V, C_out), copied and "
        "packed");
  m.def("stgcn_gcn_relu_phases_packed",
        [](const PackedWeights& w, uintptr_t x, uintptr_t h, int64_t T, int64_t N, int64_t V, int64_t C_in,
           int64_t C_out, int64_t stride, int64_t pad, int64_t Tq, int threads) {
          require(w.kind == "gcn_relu_phases", "gcn_relu_phases_packed: the weights were packed for another kernel");
          require(x && h, "gcn_relu_phases_packed: null pointer");
          require(T >= 1 && N >= 1, "gcn_relu_phases_packed: need T, N >= 1");
          require(V == w.sizes[0] && C_in == w.sizes[2] && C_out == w.sizes[3],
                  "gcn_relu_phases_packed: V, C_in or C_out differ from the packed weights'");
          require(stride >= 1 && pad >= 0 && Tq >= 1, "gcn_relu_phases_packed: need stride >= 1, pad >= 0, Tq >= 1");
          const ugcn::cpu::PhaseOutput o{N, stride, pad, Tq};
          with_dtype(w.dtype, [&](auto t) {
            using T_ = decltype(t);
            ugcn::cpu::gcn_relu_phases_packed<T_>(unpack<ugcn::cpu::GcnWeights<T_>>(w), T * N, o, in<T_>(x),
                                                  out<T_>(h), threads);
          });
        },
        "gcn_relu_phases_packed(packed, x, h, T, N, V, C_in, C_out, stride, pad, Tq, threads): gcn_relu_phases "
        "with packed weights (dtype, V, C_in, C_out as packed)");
  m.def("stgcn_pack_eval_block",
        [](const std::string& dtype, uintptr_t A, uintptr_t gcn_weight, uintptr_t gcn_bias, uintptr_t tcn_weight,
           uintptr_t tcn_bias, uintptr_t residual_weight, uintptr_t residual_bias,
           const std::vector<std::vector<uintptr_t>>& batch_norms, const std::vector<double>& eps, int64_t V,
           int64_t K, int64_t C_in, int64_t C_out, int64_t taps, int order, int threads) {
          require(A && gcn_weight && gcn_bias && tcn_weight && tcn_bias, "pack_eval_block: null pointer");
          require(!residual_weight == !residual_bias, "pack_eval_block: the residual needs its weight and bias");
          const size_t n_bn = residual_weight ? 3 : 2;
          require(batch_norms.size() == n_bn && eps.size() == n_bn,
                  "pack_eval_block: one BatchNorm per convolution (2, or 3 with the convolution residual)");
          for (const auto& bn : batch_norms)
            require(bn.size() == 4 && bn[0] && bn[1] && bn[2] && bn[3],
                    "pack_eval_block: a BatchNorm is (weight, bias, running_mean, running_var)");
          require(V >= 1 && K >= 1 && C_in >= 1 && C_out >= 1, "pack_eval_block: need V, K, C_in, C_out >= 1");
          require(taps >= 1 && taps <= ugcn::cpu::kMaxConvTaps, "pack_eval_block: need 1 to 9 taps");
          require(order >= ugcn::cpu::kGcnAuto && order <= ugcn::cpu::kGcnGemmFirst, "pack_eval_block: unknown order");
          auto graph = std::make_shared<PackedWeights>(PackedWeights{"gcn_relu_phases", dtype, {V, K, C_in, C_out},
                                                                     nullptr});
          auto temporal = std::make_shared<PackedWeights>(
              PackedWeights{"conv_frames", dtype, {taps, C_out, C_out, residual_weight ? C_in : 0}, nullptr});
          with_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            auto bn = [&](size_t i) {
              if (i >= n_bn) return ugcn::cpu::BatchNormOperands<T>{nullptr, nullptr, nullptr, nullptr, 0.0};
              const auto& b = batch_norms[i];
              return ugcn::cpu::BatchNormOperands<T>{in<T>(b[0]), in<T>(b[1]), in<T>(b[2]), in<T>(b[3]), eps[i]};
            };
            const ugcn::cpu::EvalBlockOperands<T> operands{
                V, K, C_in, C_out, int(taps), in<double>(A), in<T>(gcn_weight), in<T>(gcn_bias), in<T>(tcn_weight),
                in<T>(tcn_bias), in<T>(residual_weight), in<T>(residual_bias), bn(0), bn(1), bn(2)};
            const auto block = ugcn::cpu::pack_eval_block<T>(operands, order, threads);
            graph->native = block.graph;
            temporal->native = block.temporal;
          });
          return py::make_tuple(graph, temporal);
        },
        "pack_eval_block(dtype, A, gcn_weight, gcn_bias, tcn_weight, tcn_bias, residual_weight, residual_bias, "
        "batch_norms, eps, V, K, C_in, C_out, taps, order, threads) -> (graph, temporal) PackedWeights: the eval "
        "block's BatchNorms folded into its convolutions and the weights of gcn_relu_phases_packed and "
        "conv_frames_packed packed, from the parameters as the model holds them: A (K, V, V) float64, gcn.conv's "
        "weight (K*C_out, C_in) and bias, tcn.2's weight (C_out, C_out, taps) and bias, residual.0's weight (C_out, "
        "C_in) and bias or 0, 0; batch_norms: (weight, bias, running_mean, running_var) of tcn.0, tcn.3 (and "
        "residual.1), all contiguous in dtype; eps: theirs");
}

void bind_stgcn(py::module_& m) {
  m.def("stgcn_graph_aggregate",
        [](const std::string& dtype, uintptr_t src, uintptr_t M, uintptr_t bias_map, uintptr_t dst, int64_t groups,
           int64_t V, int64_t K, int64_t C, bool contract, int threads) {
          require(src && M && dst && groups >= 1 && V >= 1 && K >= 1 && C >= 1, "graph_aggregate: bad arguments");
          const ugcn::cpu::GraphAggregation g{groups, V, K, C, contract, in<double>(M)};
          with_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            ugcn::cpu::graph_aggregate<T>(g, in<T>(src), in<T>(bias_map), out<T>(dst), threads);
          });
        },
        "graph_aggregate(dtype, src, M, bias_map, out, groups, V, K, C, contract, threads); M: (K, V, V) float64");
  m.def("stgcn_channel_stats",
        [](const std::string& dtype, uintptr_t x, int64_t rows, int64_t C, uintptr_t bias_map, int64_t V, uintptr_t y,
           uintptr_t sums, int threads) {
          require(x && sums && rows >= 1 && C >= 1 && (!bias_map || (y && V >= 1)), "channel_stats: bad arguments");
          with_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            ugcn::cpu::channel_stats<T>(in<T>(x), rows, C, in<T>(bias_map), V, out<T>(y), out<double>(sums), threads);
          });
        },
        "channel_stats(dtype, x, rows, C, bias_map, V, y, sums, threads): sums (2, C) float64");
  m.def("stgcn_bn_relu_phases",
        [](const std::string& dtype, uintptr_t z, uintptr_t scale, uintptr_t shift_map, uintptr_t h_ph, int64_t T,
           int64_t rows, int64_t C, int64_t V, int64_t stride, int64_t pad, int64_t Tq, int threads) {
          require(z && scale && shift_map && h_ph, "bn_relu_phases: null pointer");
          const auto p = make_phases(T, rows, C, V, stride, pad, Tq);
          with_dtype(dtype, [&](auto t) {
            using T_ = decltype(t);
            ugcn::cpu::bn_relu_phases<T_>(p, in<T_>(z), in<T_>(scale), in<T_>(shift_map), out<T_>(h_ph), threads);
          });
        },
        "bn_relu_phases(dtype, z, scale, shift_map, h_ph, T, rows, C, V, stride, pad, Tq, threads)");
  m.def("stgcn_to_time_major",
        [](const std::string& dtype, uintptr_t x, uintptr_t dst, int64_t N, int64_t C, int64_t T, int64_t V,
           int threads) {
          require(x && dst, "to_time_major: null pointer");
          require(N >= 1 && C >= 1 && T >= 1 && V >= 1, "to_time_major: need N, C, T, V >= 1");
          with_dtype(dtype, [&](auto t) {
            using T_ = decltype(t);
            ugcn::cpu::to_time_major<T_>(in<T_>(x), N, C, T, V, out<T_>(dst), threads);
          });
        },
        "to_time_major(dtype, x, dst, N, C, T, V, threads): x (N, C, T, V) -> dst (T, N, V, C), both contiguous");
  m.def("stgcn_block_output",
        [](const std::string& dtype, int64_t rows, int64_t C, uintptr_t u, uintptr_t scale2, uintptr_t shift2,
           uintptr_t mask, bool hashed, uint64_t seed, double p, uintptr_t res, uintptr_t scale3, uintptr_t shift3,
           uintptr_t dst, int threads) {
          require(u && scale2 && shift2 && dst && rows >= 1 && C >= 1 && (!scale3 || (res && shift3)),
                  "block_output: bad arguments");
          with_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            ugcn::cpu::block_output<T>(rows, C, in<T>(u), in<T>(scale2), in<T>(shift2),
                                       make_dropout<T>(mask, hashed, seed, p), in<T>(res), in<T>(scale3),
                                       in<T>(shift3), out<T>(dst), threads);
          });
        },
        "block_output(dtype, rows, C, u, scale2, shift2, mask, hashed, seed, p, res, scale3, shift3, out, threads): "
        "dropout from the mask tensor, or hashed from seed with probability p (hashed=True), or none");
  m.def("stgcn_block_output_backward",
        [](const std::string& dtype, int64_t rows, int64_t C, uintptr_t dout, uintptr_t y, uintptr_t u, uintptr_t mask,
           bool hashed, uint64_t seed, double p, uintptr_t mean2, uintptr_t invstd2, uintptr_t weight2, int residual, uintptr_t r0, uintptr_t mean3,
           uintptr_t invstd3, uintptr_t weight3, uintptr_t du, uintptr_t dres, uintptr_t sums, int threads) {
          require(dout && y && u && mean2 && invstd2 && weight2 && du && sums && rows >= 1 && C >= 1,
                  "block_output_backward: bad arguments");
          require(residual >= 0 && residual <= 2, "residual: unknown kind");
          require(residual == 0 || dres, "dres: needed with a residual");
          require(residual != 2 || (r0 && mean3 && invstd3 && weight3), "conv residual: r0 and BN3 needed");
          with_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            ugcn::cpu::block_output_backward<T>(rows, C, in<T>(dout), in<T>(y), in<T>(u),
                                                make_dropout<T>(mask, hashed, seed, p),
                                                saved(mean2, invstd2, weight2), residual, in<T>(r0),
                                                saved(mean3, invstd3, weight3), out<T>(du), out<T>(dres),
                                                out<double>(sums), threads);
          });
        },
        "block_output_backward(dtype, rows, C, dout, out, u, mask, hashed, seed, p, mean2, invstd2, weight2, residual, r0, mean3, "
        "invstd3, weight3, du, dres, sums, threads): sums (6, C) float64");
  m.def("stgcn_bn_relu_phases_backward",
        [](const std::string& dtype, uintptr_t dh_ph, uintptr_t h_ph, uintptr_t z, uintptr_t mean1, uintptr_t invstd1,
           uintptr_t weight1, uintptr_t dz, uintptr_t sums, uintptr_t joint_sums, int64_t T, int64_t rows, int64_t C,
           int64_t V, int64_t stride, int64_t pad, int64_t Tq, int threads) {
          require(dh_ph && h_ph && z && mean1 && invstd1 && weight1 && dz && sums && joint_sums,
                  "bn_relu_phases_backward: null pointer");
          const auto p = make_phases(T, rows, C, V, stride, pad, Tq);
          with_dtype(dtype, [&](auto t) {
            using T_ = decltype(t);
            ugcn::cpu::bn_relu_phases_backward<T_>(p, in<T_>(dh_ph), in<T_>(h_ph), in<T_>(z),
                                                   saved(mean1, invstd1, weight1), out<T_>(dz), out<double>(sums),
                                                   out<double>(joint_sums), threads);
          });
        },
        "bn_relu_phases_backward(dtype, dh_ph, h_ph, z, mean1, invstd1, weight1, dz, sums, joint_sums, T, rows, C, "
        "V, stride, pad, Tq, threads): sums (2, C), joint_sums (V, C) float64");
  bind_stgcn_gemm(m);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ugcn_fast CPU kernels (OpenMP, vectorised); called through ugcn_fast.backends.cpu";
  const char* doc =
      "motion_loss_forward(dtype, pred, pred_stride_b, target, target_stride_b, B, T, J, D, intervals, op, "
      "normalize, eps, reduction, den, loss, grad_pred, grad_target, num_threads): pointers as ints; "
      "writes den (B, nI, J), the per-sample loss (B,) and, for non-zero pointers, the unit gradients.";
  m.def("motion_loss_forward",
        &launch<ugcn::cpu::motion_loss_forward<float>, ugcn::cpu::motion_loss_forward<double>>, doc);
  m.def("motion_loss_forward_gather",
        &launch<ugcn::cpu::motion_loss_forward_gather<float>, ugcn::cpu::motion_loss_forward_gather<double>>,
        "Same contract as motion_loss_forward, through the per-frame-joint gather code the CUDA kernel runs.");
  bind_stgcn(m);
  m.attr("max_d") = ugcn::kMaxD;
  m.attr("max_intervals") = ugcn::kMaxIntervals;
}
