// Host-side declaration of the CUDA motion-loss launcher (csrc/cuda/motion_loss.cu), shared with the pybind11
// bindings (csrc/cuda/bindings.cpp). Plain C++: no CUDA or torch headers, so g++ can compile the bindings.
//
// Tensors travel as raw device addresses. The caller (ugcn_fast's Python layer) owns every buffer and has
// validated shapes, dtypes and the configuration; bindings.cpp re-checks the cheap invariants.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ugcn {
namespace gpu {

enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

struct MotionLossLaunch {
  DType dtype = DType::kFloat32;
  // Each sample is a packed (T, J, D) block; samples sit *_stride_b elements apart (0 = one sample broadcast).
  std::uintptr_t pred = 0;
  std::int64_t pred_stride_b = 0;
  std::uintptr_t target = 0;
  std::int64_t target_stride_b = 0;
  std::int64_t B = 0, T = 0, J = 0, D = 0;
  std::vector<int> intervals;  // 1 <= tau < T, distinct, at most ugcn::kMaxIntervals
  int op = 0;                  // ugcn::MotionOp
  int normalize = 0;           // ugcn::Normalize (the sub operator is always treated as kNormNone)
  double eps = 0.0;
  int reduction = 0;  // ugcn::Reduction (selects the interval weights)
  // Outputs. acc_t = double for kFloat64, float otherwise.
  std::uintptr_t den = 0;          // (B, n_intervals, J) acc_t
  std::uintptr_t loss = 0;         // (B,) acc_t
  std::uintptr_t grad_pred = 0;    // 0 or (B, T, J, D) contiguous acc_t: unit gradient
  std::uintptr_t grad_target = 0;  // idem
  std::uintptr_t stream = 0;       // cudaStream_t
  int device_index = 0;
};

// Enqueues the statistics pass and the loss/gradient pass on args.stream (asynchronous, no allocation, no
// host-device copy). Throws std::invalid_argument for an unknown enum and std::runtime_error for a CUDA error.
void motion_loss_forward(const MotionLossLaunch& args);

// Why this process cannot run the kernels ("" when it can): no device, or a driver older than the CUDA runtime
// linked into the module. Lets the backend table skip the module instead of failing on every call.
std::string runtime_problem();

}  // namespace gpu
}  // namespace ugcn
