// CPU motion loss: declarations shared by the kernels (motion_loss.cpp) and the Python bindings (bindings.cpp).
#pragma once

#include <cstdint>
#include <vector>

namespace ugcn {
namespace cpu {

// One call's problem, as the Python layer describes it. Pointers are raw; every sample of pred / target is a
// packed (T, J, D) block `stride_b` elements after the previous one (0 broadcasts one sample over the batch).
struct MotionLossProblem {
  const void* pred;
  int64_t pred_stride_b;
  const void* target;
  int64_t target_stride_b;
  int64_t B, T, J;
  int D;
  std::vector<int> intervals;
  int op, normalize, reduction;
  double eps;
  void* den;          // out (B, nI, J)
  void* loss;         // out (B,) per-sample weighted loss L_b
  void* grad_pred;    // out (B, T, J, D) unit gradient, or nullptr
  void* grad_target;  // out (B, T, J, D) unit gradient, or nullptr
  int num_threads;
};

// Scatter form: one thread per sample, each interval's pairs in vectorised passes (the fast path).
template <typename scalar_t>
void motion_loss_forward(const MotionLossProblem& p);

// Gather form: one task per frame-joint through ugcn::gather_frame_joint, the structure the CUDA kernel uses.
// Slower; exposed so the CPU tests exercise the GPU's per-element code path.
template <typename scalar_t>
void motion_loss_forward_gather(const MotionLossProblem& p);

}  // namespace cpu
}  // namespace ugcn
