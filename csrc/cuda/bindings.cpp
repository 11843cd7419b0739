// pybind11 module `_cuda`: the Python face of the CUDA motion-loss launcher (motion_loss.cu).
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

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "CUDA backend of ugcn_fast's motion loss (raw pointers; see csrc/cuda/motion_loss_cuda.h)";
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
}
