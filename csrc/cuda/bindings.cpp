// pybind11 module `_cuda`: the Python face of the CUDA launchers, the motion loss (motion_loss.cu) and the fused
// ST-GCN block's passes (stgcn_block.cu).
//
// Tensors cross as raw device addresses, strides and the current stream as integers, so neither side needs
// torch headers or libtorch. The Python layer (ugcn_fast) validates every argument first; the checks below are
// a cheap last line of defence, so that a bad call raises instead of launching a kernel on garbage.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "motion_loss_cuda.h"
#include "motion_loss_math.h"
#include "stgcn_block_cuda.h"

namespace py = pybind11;

namespace {

using ugcn::gpu::DType;

DType parse_dtype(const std::string& dtype) {
  if (dtype == "float32") return DType::kFloat32;
  if (dtype == "float64") return DType::kFloat64;
  if (dtype == "float16") return DType::kFloat16;
  if (dtype == "bfloat16") return DType::kBFloat16;
  throw std::invalid_argument("dtype must be one of 'float32', 'float64', 'float16', 'bfloat16', got '" + dtype +
                              "'");
}

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

void motion_loss_forward(const std::string& dtype, std::uintptr_t pred_ptr, std::int64_t pred_stride_b,
                         std::uintptr_t target_ptr, std::int64_t target_stride_b, std::int64_t B, std::int64_t T,
                         std::int64_t J, std::int64_t D, const std::vector<int>& intervals, int op, int normalize,
                         double eps, int reduction, std::uintptr_t den_ptr, std::uintptr_t loss_ptr,
                         std::uintptr_t grad_pred_ptr, std::uintptr_t grad_target_ptr, std::uintptr_t stream,
                         int device_index) {
  ugcn::gpu::MotionLossLaunch a;
  a.dtype = parse_dtype(dtype);
  require(op == ugcn::kSub || op == ugcn::kInner || op == ugcn::kCross,
          "op must be 0 (sub), 1 (inner) or 2 (cross), got " + std::to_string(op));
  require(normalize == ugcn::kNormNone || normalize == ugcn::kNormSample || normalize == ugcn::kNormJoint,
          "normalize must be 0 (none), 1 (sample) or 2 (joint), got " + std::to_string(normalize));
  require(reduction == ugcn::kMean || reduction == ugcn::kSum || reduction == ugcn::kNone,
          "reduction must be 0 (mean), 1 (sum) or 2 (none), got " + std::to_string(reduction));
  require(B >= 1 && T >= 2 && J >= 1 && D >= 1,
          "shape (B, T, J, D) must have B, J, D >= 1 and T >= 2, got (" + std::to_string(B) + ", " +
              std::to_string(T) + ", " + std::to_string(J) + ", " + std::to_string(D) + ")");
  if (op == ugcn::kCross) {
    require(D == 3, "op cross needs D = 3, got D = " + std::to_string(D));
  } else {
    require(D <= ugcn::kMaxD, "D must be <= " + std::to_string(ugcn::kMaxD) + " for sub / inner, got D = " +
                                  std::to_string(D));
  }
  require(!intervals.empty() && intervals.size() <= static_cast<size_t>(ugcn::kMaxIntervals),
          "intervals must hold 1 to " + std::to_string(ugcn::kMaxIntervals) + " values, got " +
              std::to_string(intervals.size()));
  for (size_t i = 0; i < intervals.size(); ++i) {
    require(intervals[i] >= 1 && intervals[i] < T,
            "every interval must satisfy 1 <= tau < T = " + std::to_string(T) + ", got " +
                std::to_string(intervals[i]));
    for (size_t k = 0; k < i; ++k) {
      require(intervals[k] != intervals[i], "intervals must not repeat a value, got " + std::to_string(intervals[i]) +
                                                " twice");
    }
  }
  require(std::isfinite(eps) && eps >= 0, "eps must be a finite number >= 0");
  require(pred_stride_b >= 0 && target_stride_b >= 0, "pred_stride_b and target_stride_b must be >= 0");
  require(pred_ptr != 0, "pred_ptr must not be 0");
  require(target_ptr != 0, "target_ptr must not be 0");
  require(den_ptr != 0, "den_ptr must not be 0");
  require(loss_ptr != 0, "loss_ptr must not be 0");
  require(device_index >= 0, "device_index must be >= 0, got " + std::to_string(device_index));

  a.pred = pred_ptr;
  a.pred_stride_b = pred_stride_b;
  a.target = target_ptr;
  a.target_stride_b = target_stride_b;
  a.B = B;
  a.T = T;
  a.J = J;
  a.D = D;
  a.intervals = intervals;
  a.op = op;
  a.normalize = normalize;
  a.eps = eps;
  a.reduction = reduction;
  a.den = den_ptr;
  a.loss = loss_ptr;
  a.grad_pred = grad_pred_ptr;
  a.grad_target = grad_target_ptr;
  a.stream = stream;
  a.device_index = device_index;

  py::gil_scoped_release no_gil;  // launches are asynchronous, but cudaSetDevice / a launch can still block
  ugcn::gpu::motion_loss_forward(a);
}


// ---- the fused ST-GCN block's passes (stgcn_block_cuda.h) ------------------------------------------------------
// Sizes, null pointers and the workspace size are checked in stgcn_block.cu, once, next to the kernels that rely
// on them; the Python layer (ugcn_fast/backends/cuda_stgcn.py) checks devices, dtypes and shapes.
using ugcn::gpu::StgcnLaunch;

ugcn::gpu::StgcnHashedDropout hashed_dropout(bool enabled, std::int64_t seed, std::int64_t threshold,
                                             double keep_scale) {
  require(!enabled || (threshold >= 0 && threshold <= (std::int64_t(1) << 24)),
          "dropout threshold must be in [0, 2^24], got " + std::to_string(threshold));
  require(!enabled || (std::isfinite(keep_scale) && keep_scale >= 1.0),
          "dropout keep_scale must be a finite number >= 1 (1 / (1 - p))");
  ugcn::gpu::StgcnHashedDropout h;
  h.enabled = enabled;
  h.seed = seed;
  h.threshold = static_cast<std::uint32_t>(threshold);
  h.keep_scale = keep_scale;
  return h;
}

StgcnLaunch on_stream(std::uintptr_t stream, int device_index) {
  require(device_index >= 0, "device_index must be >= 0, got " + std::to_string(device_index));
  StgcnLaunch l;
  l.stream = stream;
  l.device_index = device_index;
  return l;
}

void bind_stgcn(py::module_& m) {
  using std::int64_t;
  using std::uintptr_t;
  m.attr("stgcn_max_joints") = ugcn::gpu::kStgcnMaxJoints;
  m.def("stgcn_stats_workspace", &ugcn::gpu::stgcn_stats_workspace, py::arg("rows"), py::arg("C"),
        "float64 elements of channel_stats' workspace");
  m.def("stgcn_block_output_backward_workspace", &ugcn::gpu::stgcn_block_output_backward_workspace, py::arg("rows"),
        py::arg("C"), py::arg("conv_residual"), "float64 elements of block_output_backward's workspace");
  m.def("stgcn_bn_relu_phases_backward_workspace", &ugcn::gpu::stgcn_bn_relu_phases_backward_workspace,
        py::arg("T"), py::arg("N"), py::arg("V"), py::arg("C"), "float64 elements of bn_relu_phases_backward's workspace");

  m.def(
      "stgcn_graph_aggregate",
      [](const std::string& dtype, uintptr_t src, uintptr_t A, uintptr_t bias_map, uintptr_t dst, int64_t G,
         int64_t K, int64_t V, int64_t C, bool contract, bool transpose, uintptr_t stream, int device_index) {
        ugcn::gpu::StgcnGraphAggregate a;
        a.dtype = parse_dtype(dtype);
        a.src = src;
        a.A = A;
        a.bias_map = bias_map;
        a.out = dst;
        a.G = G;
        a.K = K;
        a.V = V;
        a.C = C;
        a.contract = contract;
        a.transpose = transpose;
        const StgcnLaunch l = on_stream(stream, device_index);
        py::gil_scoped_release no_gil;
        ugcn::gpu::stgcn_graph_aggregate(a, l);
      },
      py::arg("dtype"), py::arg("src"), py::arg("A"), py::arg("bias_map"), py::arg("out"), py::arg("G"), py::arg("K"),
      py::arg("V"), py::arg("C"), py::arg("contract"), py::arg("transpose"), py::arg("stream"),
      py::arg("device_index"),
      "contract: src (G, V, K*C) -> out (G, V, C) (+ bias_map (V, C)); expand: src (G, V, C) -> out (G, V, K*C); "
      "A (K, V, V) in the dtype of src, applied transposed when `transpose`");

  m.def(
      "stgcn_channel_stats",
      [](const std::string& dtype, uintptr_t x, uintptr_t bias_map, uintptr_t y, int64_t rows, int64_t C, int64_t V,
         uintptr_t sum, uintptr_t sumsq, uintptr_t workspace, int64_t workspace_size, uintptr_t stream,
         int device_index) {
        ugcn::gpu::StgcnChannelStats a;
        a.dtype = parse_dtype(dtype);
        a.x = x;
        a.bias_map = bias_map;
        a.y = y;
        a.rows = rows;
        a.C = C;
        a.V = V;
        a.sum = sum;
        a.sumsq = sumsq;
        a.workspace = workspace;
        a.workspace_size = workspace_size;
        const StgcnLaunch l = on_stream(stream, device_index);
        py::gil_scoped_release no_gil;
        ugcn::gpu::stgcn_channel_stats(a, l);
      },
      py::arg("dtype"), py::arg("x"), py::arg("bias_map"), py::arg("y"), py::arg("rows"), py::arg("C"), py::arg("V"),
      py::arg("sum"), py::arg("sumsq"), py::arg("workspace"), py::arg("workspace_size"), py::arg("stream"),
      py::arg("device_index"),
      "sum, sumsq (C,) float64 of x (rows, C); with bias_map (V, C), of y = x + bias_map[row % V], written to y");

  m.def(
      "stgcn_bn_relu_phases",
      [](const std::string& dtype, uintptr_t z, uintptr_t scale, uintptr_t shift_map, uintptr_t h_ph, int64_t T,
         int64_t N, int64_t V, int64_t C, int64_t stride, int64_t pad, int64_t Tq, uintptr_t stream,
         int device_index) {
        ugcn::gpu::StgcnBnReluPhases a;
        a.dtype = parse_dtype(dtype);
        a.z = z;
        a.scale = scale;
        a.shift_map = shift_map;
        a.h_ph = h_ph;
        a.T = T;
        a.N = N;
        a.V = V;
        a.C = C;
        a.stride = stride;
        a.pad = pad;
        a.Tq = Tq;
        const StgcnLaunch l = on_stream(stream, device_index);
        py::gil_scoped_release no_gil;
        ugcn::gpu::stgcn_bn_relu_phases(a, l);
      },
      py::arg("dtype"), py::arg("z"), py::arg("scale"), py::arg("shift_map"), py::arg("h_ph"), py::arg("T"),
      py::arg("N"), py::arg("V"), py::arg("C"), py::arg("stride"), py::arg("pad"), py::arg("Tq"), py::arg("stream"),
      py::arg("device_index"),
      "h_ph (stride, Tq, N*V, C) = phase buffer of relu(z * scale + shift_map[v]) for z (T, N*V, C)");

  m.def(
      "stgcn_block_output",
      [](const std::string& dtype, uintptr_t u, uintptr_t scale2, uintptr_t shift2, uintptr_t mask, bool hashed,
         int64_t seed, int64_t threshold, double keep_scale, uintptr_t res, uintptr_t scale3, uintptr_t shift3,
         uintptr_t dst, int64_t rows, int64_t C, uintptr_t stream, int device_index) {
        ugcn::gpu::StgcnBlockOutput a;
        a.dtype = parse_dtype(dtype);
        a.u = u;
        a.scale2 = scale2;
        a.shift2 = shift2;
        a.mask = mask;
        a.dropout = hashed_dropout(hashed, seed, threshold, keep_scale);
        a.res = res;
        a.scale3 = scale3;
        a.shift3 = shift3;
        a.out = dst;
        a.rows = rows;
        a.C = C;
        const StgcnLaunch l = on_stream(stream, device_index);
        py::gil_scoped_release no_gil;
        ugcn::gpu::stgcn_block_output(a, l);
      },
      py::arg("dtype"), py::arg("u"), py::arg("scale2"), py::arg("shift2"), py::arg("mask"), py::arg("hashed"),
      py::arg("seed"), py::arg("threshold"), py::arg("keep_scale"), py::arg("res"), py::arg("scale3"),
      py::arg("shift3"), py::arg("out"), py::arg("rows"), py::arg("C"), py::arg("stream"), py::arg("device_index"),
      "out = relu((u * scale2 + shift2) * dropout + residual) over (rows, C); dropout's multipliers from mask, "
      "hashed from seed (hashed = True: kept when dropout_bits24(seed, e) >= threshold, times keep_scale), or none");

  m.def(
      "stgcn_block_output_backward",
      [](const std::string& dtype, uintptr_t dout, uintptr_t y, uintptr_t u, uintptr_t mask, bool hashed,
         int64_t seed, int64_t threshold, double keep_scale, uintptr_t mean2, uintptr_t invstd2, uintptr_t weight2,
         int residual, uintptr_t r0, uintptr_t mean3, uintptr_t invstd3, uintptr_t weight3, uintptr_t du,
         uintptr_t dres, uintptr_t dweight2, uintptr_t dbias2, uintptr_t dweight3, uintptr_t dbias3,
         uintptr_t dbias_t, uintptr_t dbias_r, int64_t rows, int64_t C, uintptr_t workspace, int64_t workspace_size,
         uintptr_t stream, int device_index) {
        ugcn::gpu::StgcnBlockOutputBackward a;
        a.dtype = parse_dtype(dtype);
        a.dout = dout;
        a.out = y;
        a.u = u;
        a.mask = mask;
        a.dropout = hashed_dropout(hashed, seed, threshold, keep_scale);
        a.mean2 = mean2;
        a.invstd2 = invstd2;
        a.weight2 = weight2;
        a.residual = residual;
        a.r0 = r0;
        a.mean3 = mean3;
        a.invstd3 = invstd3;
        a.weight3 = weight3;
        a.du = du;
        a.dres = dres;
        a.dweight2 = dweight2;
        a.dbias2 = dbias2;
        a.dweight3 = dweight3;
        a.dbias3 = dbias3;
        a.dbias_t = dbias_t;
        a.dbias_r = dbias_r;
        a.rows = rows;
        a.C = C;
        a.workspace = workspace;
        a.workspace_size = workspace_size;
        const StgcnLaunch l = on_stream(stream, device_index);
        py::gil_scoped_release no_gil;
        ugcn::gpu::stgcn_block_output_backward(a, l);
      },
      py::arg("dtype"), py::arg("dout"), py::arg("out"), py::arg("u"), py::arg("mask"), py::arg("hashed"),
      py::arg("seed"), py::arg("threshold"), py::arg("keep_scale"), py::arg("mean2"), py::arg("invstd2"),
      py::arg("weight2"), py::arg("residual"), py::arg("r0"), py::arg("mean3"), py::arg("invstd3"),
      py::arg("weight3"), py::arg("du"), py::arg("dres"), py::arg("dweight2"),
      py::arg("dbias2"), py::arg("dweight3"), py::arg("dbias3"), py::arg("dbias_t"), py::arg("dbias_r"),
      py::arg("rows"), py::arg("C"), py::arg("workspace"), py::arg("workspace_size"), py::arg("stream"),
      py::arg("device_index"),
      "backward of block_output in training: du, dres (rows, C); BN2 / BN3 / bias gradients (C,) float64; "
      "residual 0 none, 1 identity, 2 conv; dropout as in stgcn_block_output");

  m.def(
      "stgcn_bn_relu_phases_backward",
      [](const std::string& dtype, uintptr_t dh_ph, uintptr_t h_ph, uintptr_t z, uintptr_t mean1, uintptr_t invstd1,
         uintptr_t weight1, uintptr_t dz, uintptr_t dweight1, uintptr_t dbias1, uintptr_t joint_sums, int64_t T,
         int64_t N, int64_t V, int64_t C, int64_t stride, int64_t pad, int64_t Tq, uintptr_t workspace,
         int64_t workspace_size, uintptr_t stream, int device_index) {
        ugcn::gpu::StgcnBnReluPhasesBackward a;
        a.dtype = parse_dtype(dtype);
        a.dh_ph = dh_ph;
        a.h_ph = h_ph;
        a.z = z;
        a.mean1 = mean1;
        a.invstd1 = invstd1;
        a.weight1 = weight1;
        a.dz = dz;
        a.dweight1 = dweight1;
        a.dbias1 = dbias1;
        a.joint_sums = joint_sums;
        a.T = T;
        a.N = N;
        a.V = V;
        a.C = C;
        a.stride = stride;
        a.pad = pad;
        a.Tq = Tq;
        a.workspace = workspace;
        a.workspace_size = workspace_size;
        const StgcnLaunch l = on_stream(stream, device_index);
        py::gil_scoped_release no_gil;
        ugcn::gpu::stgcn_bn_relu_phases_backward(a, l);
      },
      py::arg("dtype"), py::arg("dh_ph"), py::arg("h_ph"), py::arg("z"), py::arg("mean1"), py::arg("invstd1"),
      py::arg("weight1"), py::arg("dz"), py::arg("dweight1"), py::arg("dbias1"), py::arg("joint_sums"), py::arg("T"),
      py::arg("N"), py::arg("V"), py::arg("C"), py::arg("stride"), py::arg("pad"), py::arg("Tq"),
      py::arg("workspace"), py::arg("workspace_size"), py::arg("stream"), py::arg("device_index"),
      "backward of bn_relu_phases in training: dz (T, N*V, C); dweight1, dbias1 (C,), joint_sums (V, C) float64");
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "CUDA backend of ugcn_fast's motion loss and fused ST-GCN block passes (raw pointers; see "
            "csrc/cuda/motion_loss_cuda.h and csrc/cuda/stgcn_block_cuda.h)";
  m.def("runtime_problem", &ugcn::gpu::runtime_problem,
        "Why the kernels cannot run in this process ('' when they can): no device, or a driver too old for the "
        "CUDA runtime linked into this module.");
  m.def("motion_loss_forward", &motion_loss_forward, py::arg("dtype"), py::arg("pred_ptr"),
        py::arg("pred_stride_b"), py::arg("target_ptr"), py::arg("target_stride_b"), py::arg("B"), py::arg("T"),
        py::arg("J"), py::arg("D"), py::arg("intervals"), py::arg("op"), py::arg("normalize"), py::arg("eps"),
        py::arg("reduction"), py::arg("den_ptr"), py::arg("loss_ptr"), py::arg("grad_pred_ptr"),
        py::arg("grad_target_ptr"), py::arg("stream"), py::arg("device_index"),
        "Enqueues the motion loss's statistics and loss/gradient passes on `stream`: den (B, nI, J), loss (B,), "
        "and the unit gradients when their pointers are non-zero. acc_t = float64 for float64, else float32.");
  m.attr("max_intervals") = ugcn::kMaxIntervals;
  m.attr("max_d") = ugcn::kMaxD;
  bind_stgcn(m);
}
