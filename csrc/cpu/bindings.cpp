// pybind11 module ugcn_fast._C: the CPU kernels, called with raw pointers, sizes and strides.
// No torch headers: one build serves every torch version. The Python layer (ugcn_fast/backends/cpu.py) has
// validated every argument; the checks here only refuse what would be memory-unsafe if a caller bypassed it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "../motion_loss_math.h"
#include "motion_loss.h"

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
  m.attr("max_d") = ugcn::kMaxD;
  m.attr("max_intervals") = ugcn::kMaxIntervals;
}
