// CUDA backend of the motion loss (SPEC §1): two passes per call, both on the caller's stream.
//
//   pass 1 "statistics" (den_kernel): one block per (sample, interval) reads the TARGET once and writes the
//          denominators den[b, i, :] = mu + eps * s. They are constants of the loss (no gradient flows through
//          them), so they must be complete before any encoding is normalised: hence a separate pass.
//   pass 2 "loss and gradient" (loss_kernel): one block per sample; each thread owns frame-joints of that sample
//          and gathers everything that lands on them (ugcn::gather_frame_joint), so every gradient element is
//          written exactly once by the thread that summed it, and each pair's loss is counted by the thread of
//          its start frame-joint.
//
// Determinism by construction: no atomics; every sum is a per-thread loop in a fixed order followed by a
// fixed-shape shared-memory tree over kThreads (a compile-time constant), so the same input gives the same
// bits on every run and every GPU of the same architecture.
//
// All per-element math lives in ../motion_loss_math.h, shared with the CPU backend that the tests cover.

#include "half_types.h"
#include "host_checks.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "motion_loss_cuda.h"
#include "motion_loss_math.h"

namespace ugcn {
namespace gpu {
namespace {

// Threads per block of both passes. Fixed (not tuned per shape or device) because it fixes the order of every
// block reduction, and with it the bits of the result. Power of two for the reduction tree.
constexpr int kThreads = 256;
static_assert((kThreads & (kThreads - 1)) == 0, "the reduction tree needs a power-of-two block");
constexpr int kMaxEnc = kMaxD > 3 ? kMaxD : 3;  // scratch for one encoding (cross has 3 components)
constexpr int64_t kMaxGrid = 2147483647;        // gridDim.x limit; the kernels loop over blocks beyond it

// ---- scalar types -------------------------------------------------------------------------------------------
template <typename scalar_t>
struct Acc {
  using type = float;  // float32, float16 and bfloat16 accumulate in float
};
template <>
struct Acc<double> {
  using type = double;
};

template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t to_acc(scalar_t x) {
  return static_cast<acc_t>(x);
}
template <>
__device__ __forceinline__ float to_acc<float, __half>(__half x) {
  return __half2float(x);
}
template <>
__device__ __forceinline__ float to_acc<float, __nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

// Fixed-shape tree over the kThreads values in s[] (every thread of the block must call it); returns the
// total to every thread. Leaves s[] dirty: the caller synchronises before reusing it.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t* s, acc_t v) {
  const int tid = threadIdx.x;
  s[tid] = v;
  __syncthreads();
#pragma unroll
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (tid < half) s[tid] += s[tid + half];
    __syncthreads();
  }
  return s[0];
}

// ---- pass 1: statistics -----------------------------------------------------------------------------------
template <typename scalar_t, typename acc_t>
struct DenParams {
  const scalar_t* target;
  int64_t target_stride_b;
  int64_t B, T, J;
  int D;
  int normalize;
  acc_t eps;
  int n_intervals;
  int intervals[kMaxIntervals];
  acc_t* den;  // (B, n_intervals, J)
};

// One block per (sample b, interval i), looping over blocks when B * n_intervals exceeds the grid.
// Tile: the block is viewed as rows x lanes threads, lanes = min(J, kThreads). A lane owns one joint of the
// current chunk of `lanes` joints and its rows split the time axis, so the per-joint sums that "joint" mode
// needs are a per-lane reduction over rows, and the per-sample sums are a reduction over the whole block, with
// one read of each target pair either way. DC > 0 fixes D at compile time so the point scratch stays in
// registers.
template <int OP, int DC, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) den_kernel(const __grid_constant__ DenParams<scalar_t, acc_t> p) {
  __shared__ acc_t s_mag[kThreads];
  __shared__ acc_t s_prod[kThreads];
  const int D = DC > 0 ? DC : p.D;
  const int tid = threadIdx.x;
  const int64_t J = p.J;
  const int lanes = J < kThreads ? static_cast<int>(J) : kThreads;
  const int rows = kThreads / lanes;
  const int lane = tid % lanes;
  const int row = tid / lanes;  // threads with row >= rows are spare and add zeros
  const bool joint_mode = p.normalize == kNormJoint;
  const int64_t n_work = p.B * p.n_intervals;

  for (int64_t w = blockIdx.x; w < n_work; w += gridDim.x) {
    const int64_t b = w / p.n_intervals;
    const int64_t tau = p.intervals[w % p.n_intervals];
    const int64_t n_t = p.T - tau;  // pairs per joint
    const scalar_t* G = p.target + b * p.target_stride_b;
    acc_t* den = p.den + w * J;  // row (b, i) of the (B, n_intervals, J) output

    acc_t prod = 0;      // this thread's part of sum ||G_t|| * ||G_{t+tau}|| (for s)
    acc_t mag_all = 0;   // this thread's part of sum ||mG|| over (t, j) ("sample" mode)
    for (int64_t j0 = 0; j0 < J; j0 += lanes) {
      const int64_t j = j0 + lane;
      acc_t mag = 0;  // this thread's part of sum_t ||mG[t, j]||
      if (row < rows && j < J) {
        for (int64_t t = row; t < n_t; t += rows) {
          acc_t a[kMaxD], e[kMaxD], m[kMaxEnc];
          const scalar_t* xa = G + (t * J + j) * D;
          const scalar_t* xe = xa + tau * J * D;
          for (int d = 0; d < D; ++d) {
            a[d] = to_acc<acc_t>(xa[d]);
            e[d] = to_acc<acc_t>(xe[d]);
          }
          encode<OP>(a, e, D, m);
          mag += encoding_magnitude<OP>(m);
          prod += point_norm(a, D) * point_norm(e, D);
        }
      }
      if (joint_mode) {
        // Per-lane sum over rows in row order; parked in den[j] until s is known (same thread finishes it).
        s_mag[tid] = mag;
        __syncthreads();
        if (row == 0 && j < J) {
          acc_t sum = 0;
          for (int r = 0; r < rows; ++r) sum += s_mag[r * lanes + lane];
          den[j] = sum;
        }
        __syncthreads();
      } else {
        mag_all += mag;
      }
    }
    const acc_t sum_prod = block_sum(s_prod, prod);
    const acc_t sum_mag = joint_mode ? acc_t(0) : block_sum(s_mag, mag_all);
    const acc_t n_pairs = acc_t(n_t) * acc_t(J);
    // j = tid + k * kThreads is the joint this thread parked in joint mode (lane == tid whenever row == 0).
    for (int64_t j = tid; j < J; j += kThreads) {
      den[j] = joint_mode ? denominator(den[j], acc_t(n_t), sum_prod, n_pairs, p.eps)
                          : denominator(sum_mag, n_pairs, sum_prod, n_pairs, p.eps);
    }
    __syncthreads();  // s_mag / s_prod are reused by the next (b, i)
  }
}

// normalize == none (and always for sub): the encodings are used as they are.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) fill_ones_kernel(acc_t* den, int64_t n) {
  for (int64_t k = blockIdx.x * int64_t(kThreads) + threadIdx.x; k < n; k += int64_t(gridDim.x) * kThreads) {
    den[k] = acc_t(1);
  }
}

// ---- pass 2: loss and gradient --------------------------------------------------------------------------
template <typename scalar_t, typename acc_t>
struct LossParams {
  const scalar_t* pred;
  const scalar_t* target;
  int64_t pred_stride_b, target_stride_b;
  int64_t B, T, J;
  int D;
  int n_intervals;
  int intervals[kMaxIntervals];
  acc_t weight[kMaxIntervals];  // interval_weight(reduction, ...) per interval
  const acc_t* den;             // (B, n_intervals, J)
  acc_t* loss;                  // (B,)
  // Unit gradients in acc_t, not scalar_t: before grad_output (e.g. AMP's loss scale) multiplies them they are
  // ~1 / (B T J C den), below float16's normal range.
  acc_t* grad_pred;             // (B, T, J, D) or null
  acc_t* grad_target;           // (B, T, J, D) or null
};

// One block per sample (looping over samples beyond the grid), frame-joints n = t * J + j strided over the
// block's threads: consecutive threads touch consecutive points, so loads and gradient stores coalesce, and the
// sample's loss is one fixed-order block reduction written straight to loss[b] (no partials, no second pass).
// GRAD bit 0: write grad_pred, bit 1: write grad_target; a compile-time choice so that the unwanted half of the
// gather compiles away. DC > 0 fixes D at compile time so the point scratch stays in registers.
template <int OP, int DC, int GRAD, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) loss_kernel(const __grid_constant__ LossParams<scalar_t, acc_t> p) {
  // Intervals and weights are read by every thread for every frame-joint: stage them once per block.
  __shared__ int s_tau[kMaxIntervals];
  __shared__ acc_t s_w[kMaxIntervals];
  __shared__ acc_t s_red[kThreads];
  const int tid = threadIdx.x;
  for (int i = tid; i < p.n_intervals; i += kThreads) {
    s_tau[i] = p.intervals[i];
    s_w[i] = p.weight[i];
  }
  __syncthreads();

  const int D = DC > 0 ? DC : p.D;
  const int64_t T = p.T, J = p.J;
  const int64_t TJ = T * J;
  const int64_t sample_den = int64_t(p.n_intervals) * J;
  constexpr bool kGradP = (GRAD & 1) != 0;
  constexpr bool kGradG = (GRAD & 2) != 0;

  for (int64_t b = blockIdx.x; b < p.B; b += gridDim.x) {
    const scalar_t* P = p.pred + b * p.pred_stride_b;
    const scalar_t* G = p.target + b * p.target_stride_b;
    const acc_t* den = p.den + b * sample_den;
    acc_t* gP = kGradP ? p.grad_pred + b * TJ * D : nullptr;
    acc_t* gG = kGradG ? p.grad_target + b * TJ * D : nullptr;

    acc_t part = 0;
    for (int64_t n = tid; n < TJ; n += kThreads) {
      const int64_t t = n / J;
      const int64_t j = n - t * J;
      acc_t dP[kMaxD], dG[kMaxD];
      part += gather_frame_joint<OP, scalar_t, acc_t>(P, G, T, J, D, t, j, s_tau, p.n_intervals, den, s_w,
                                                      kGradP ? dP : nullptr, kGradG ? dG : nullptr);
      if (kGradP) {
        for (int d = 0; d < D; ++d) gP[n * D + d] = dP[d];
      }
      if (kGradG) {
        for (int d = 0; d < D; ++d) gG[n * D + d] = dG[d];
      }
    }
    const acc_t total = block_sum(s_red, part);
    if (tid == 0) p.loss[b] = total;
    __syncthreads();  // s_red is reused by the next sample
  }
}

// ---- host side ----------------------------------------------------------------------------------------------
void check_cuda(cudaError_t err, const char* what) { throw_on_cuda_error(err, "motion_loss", what); }

unsigned int grid_size(int64_t blocks) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(blocks, kMaxGrid)));
}

template <int OP, int DC, int GRAD, typename scalar_t, typename acc_t>
void launch_loss(const LossParams<scalar_t, acc_t>& p, cudaStream_t stream) {
  loss_kernel<OP, DC, GRAD, scalar_t, acc_t><<<grid_size(p.B), kThreads, 0, stream>>>(p);
  check_cuda(cudaGetLastError(), "loss_kernel launch");
}

template <int OP, int DC, typename scalar_t>
void launch_typed(const MotionLossLaunch& a, cudaStream_t stream) {
  using acc_t = typename Acc<scalar_t>::type;
  const int n_intervals = static_cast<int>(a.intervals.size());
  acc_t* den = reinterpret_cast<acc_t*>(a.den);
  const int normalize = OP == kSub ? int(kNormNone) : a.normalize;  // SPEC §1: sub is never normalised

  // Pass 1: denominators.
  if (normalize == kNormNone) {
    const int64_t n = a.B * n_intervals * a.J;
    fill_ones_kernel<acc_t><<<grid_size(std::min<int64_t>((n + kThreads - 1) / kThreads, 65536)), kThreads, 0,
                              stream>>>(den, n);
    check_cuda(cudaGetLastError(), "fill_ones_kernel launch");
  } else {
    if constexpr (OP != kSub) {
      DenParams<scalar_t, acc_t> p{};
      p.target = reinterpret_cast<const scalar_t*>(a.target);
      p.target_stride_b = a.target_stride_b;
      p.B = a.B;
      p.T = a.T;
      p.J = a.J;
      p.D = static_cast<int>(a.D);
      p.normalize = normalize;
      p.eps = static_cast<acc_t>(a.eps);
      p.n_intervals = n_intervals;
      for (int i = 0; i < n_intervals; ++i) p.intervals[i] = a.intervals[i];
      p.den = den;
      den_kernel<OP, DC, scalar_t, acc_t><<<grid_size(a.B * n_intervals), kThreads, 0, stream>>>(p);
      check_cuda(cudaGetLastError(), "den_kernel launch");
    }
  }

  // Pass 2: loss and gradients (same stream, so it sees the finished denominators).
  LossParams<scalar_t, acc_t> p{};
  p.pred = reinterpret_cast<const scalar_t*>(a.pred);
  p.target = reinterpret_cast<const scalar_t*>(a.target);
  p.pred_stride_b = a.pred_stride_b;
  p.target_stride_b = a.target_stride_b;
  p.B = a.B;
  p.T = a.T;
  p.J = a.J;
  p.D = static_cast<int>(a.D);
  p.n_intervals = n_intervals;
  const int C = components<OP>(p.D);
  for (int i = 0; i < n_intervals; ++i) {
    p.intervals[i] = a.intervals[i];
    p.weight[i] = interval_weight<acc_t>(a.reduction, n_intervals, a.B, a.T, a.J, C, a.intervals[i]);
  }
  p.den = den;
  p.loss = reinterpret_cast<acc_t*>(a.loss);
  p.grad_pred = reinterpret_cast<acc_t*>(a.grad_pred);
  p.grad_target = reinterpret_cast<acc_t*>(a.grad_target);
  const int grad = (a.grad_pred ? 1 : 0) | (a.grad_target ? 2 : 0);
  switch (grad) {
    case 0: launch_loss<OP, DC, 0>(p, stream); break;
    case 1: launch_loss<OP, DC, 1>(p, stream); break;
    case 2: launch_loss<OP, DC, 2>(p, stream); break;
    default: launch_loss<OP, DC, 3>(p, stream); break;
  }
}

// Operator and D: cross is always D = 3; sub / inner get a register-resident D = 3 (3D poses) and D = 2
// (2D keypoints) specialisation, and a generic D <= kMaxD kernel for the rest.
template <typename scalar_t>
void launch_dtype(const MotionLossLaunch& a, cudaStream_t stream) {
  switch (a.op) {
    case kCross:
      launch_typed<kCross, 3, scalar_t>(a, stream);
      return;
    case kInner:
      if (a.D == 3) return launch_typed<kInner, 3, scalar_t>(a, stream);
      if (a.D == 2) return launch_typed<kInner, 2, scalar_t>(a, stream);
      return launch_typed<kInner, 0, scalar_t>(a, stream);
    case kSub:
      if (a.D == 3) return launch_typed<kSub, 3, scalar_t>(a, stream);
      if (a.D == 2) return launch_typed<kSub, 2, scalar_t>(a, stream);
      return launch_typed<kSub, 0, scalar_t>(a, stream);
    default:
      throw std::invalid_argument("motion_loss_forward: op must be 0 (sub), 1 (inner) or 2 (cross), got " +
                                  std::to_string(a.op));
  }
}

}  // namespace

void motion_loss_forward(const MotionLossLaunch& a) {
  // Last line of defence (Python validated everything): the enums index kernels and weights.
  if (a.op < kSub || a.op > kCross) {
    throw std::invalid_argument("motion_loss_forward: op must be 0 (sub), 1 (inner) or 2 (cross), got " +
                                std::to_string(a.op));
  }
  if (a.normalize < kNormNone || a.normalize > kNormJoint) {
    throw std::invalid_argument("motion_loss_forward: normalize must be 0 (none), 1 (sample) or 2 (joint), got " +
                                std::to_string(a.normalize));
  }
  if (a.reduction < kMean || a.reduction > kNone) {
    throw std::invalid_argument("motion_loss_forward: reduction must be 0 (mean), 1 (sum) or 2 (none), got " +
                                std::to_string(a.reduction));
  }
  if (a.intervals.empty() || a.intervals.size() > static_cast<size_t>(kMaxIntervals)) {
    throw std::invalid_argument("motion_loss_forward: intervals must hold 1 to " + std::to_string(kMaxIntervals) +
                                " values, got " + std::to_string(a.intervals.size()));
  }

  DeviceGuard guard(a.device_index, "motion_loss");
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(a.stream);
  switch (a.dtype) {
    case DType::kFloat32: launch_dtype<float>(a, stream); break;
    case DType::kFloat64: launch_dtype<double>(a, stream); break;
    case DType::kFloat16: launch_dtype<__half>(a, stream); break;
    case DType::kBFloat16: launch_dtype<__nv_bfloat16>(a, stream); break;
    default:
      throw std::invalid_argument("motion_loss_forward: dtype must be float32, float64, float16 or bfloat16");
  }
}

}  // namespace gpu
}  // namespace ugcn

namespace ugcn {
namespace gpu {

std::string runtime_problem() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
  if (count == 0) return "no CUDA device";
  return "";
}

}  // namespace gpu
}  // namespace ugcn
