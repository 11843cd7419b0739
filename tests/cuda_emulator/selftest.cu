// Kernels with the bugs the CUDA emulator exists to catch, and their correct twins, so that
// tests/test_cuda_emulator.py can show that each check fails when it should (built by build.py like csrc/cuda).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace {

constexpr int kThreads = 128;

// Tree sum of each block's kThreads values; BARRIERS = false drops every __syncthreads() (a race).
template <bool BARRIERS>
__global__ void block_sum_kernel(const float* x, float* out) {
  __shared__ float s[kThreads];
  const int t = threadIdx.x;
  s[t] = x[blockIdx.x * kThreads + t];
  if (BARRIERS) __syncthreads();
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (t < half) s[t] += s[t + half];
    if (BARRIERS) __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

// Threads below 32 leave before the barrier the others wait at (undefined behaviour on a GPU).
__global__ void divergent_barrier_kernel(float* out) {
  if (threadIdx.x < 32) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// Even threads write their slot; every thread reads its neighbour's: odd slots were never written.
__global__ void unwritten_shared_kernel(float* out) {
  __shared__ float s[kThreads];
  if (threadIdx.x % 2 == 0) s[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x ^ 1];
}

// Every block writes the same element: which block wins depends on the order blocks run in.
__global__ void shared_output_kernel(float* out) {
  if (threadIdx.x == 0) out[0] = static_cast<float>(blockIdx.x);
}

// Static and dynamic shared memory together (the launch's dynamic part comes from the caller).
__global__ void big_shared_kernel(float* out) {
  __shared__ float s[4096];  // 16 KiB
  extern __shared__ __align__(16) unsigned char dynamic[];
  s[threadIdx.x] = 1.0f;
  dynamic[threadIdx.x] = 1;
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x] + dynamic[threadIdx.x];
}

__global__ void empty_kernel() {}

// The stand-in half types' conversions, elementwise (grid-stride), both ways.
__global__ void round_trip_kernel(const float* x, __half* h, __nv_bfloat16* b, float* h_back, float* b_back,
                                  std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    h[i] = __float2half_rn(x[i]);
    b[i] = __float2bfloat16_rn(x[i]);
    h_back[i] = __half2float(h[i]);
    b_back[i] = __bfloat162float(b[i]);
  }
}

float* f32(std::uintptr_t p) { return reinterpret_cast<float*>(p); }

void check(cudaError_t err) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(cudaGetErrorName(err)));
}

}  // namespace

PYBIND11_MODULE(_emulator_selftest, m) {
  m.attr("threads") = kThreads;
  m.def("block_sum", [](std::uintptr_t x, std::uintptr_t out, unsigned blocks, bool barriers) {
    if (barriers) {
      block_sum_kernel<true><<<blocks, kThreads>>>(f32(x), f32(out));
    } else {
      block_sum_kernel<false><<<blocks, kThreads>>>(f32(x), f32(out));
    }
    check(cudaGetLastError());
  });
  m.def("divergent_barrier", [](std::uintptr_t out) {
    divergent_barrier_kernel<<<1, kThreads>>>(f32(out));
    check(cudaGetLastError());
  });
  m.def("unwritten_shared", [](std::uintptr_t out) {
    unwritten_shared_kernel<<<1, kThreads>>>(f32(out));
    check(cudaGetLastError());
  });
  m.def("shared_output", [](std::uintptr_t out, unsigned blocks) {
    shared_output_kernel<<<blocks, kThreads>>>(f32(out));
    check(cudaGetLastError());
  });
  m.def("big_shared", [](std::uintptr_t out, std::size_t dynamic_bytes) {
    big_shared_kernel<<<1, kThreads, dynamic_bytes>>>(f32(out));
    check(cudaGetLastError());
  });
  m.def("round_trip", [](std::uintptr_t x, std::uintptr_t h, std::uintptr_t b, std::uintptr_t h_back,
                         std::uintptr_t b_back, std::int64_t n) {
    round_trip_kernel<<<4, kThreads>>>(f32(x), reinterpret_cast<__half*>(h), reinterpret_cast<__nv_bfloat16*>(b),
                                       f32(h_back), f32(b_back), n);
    check(cudaGetLastError());
  });
  m.def("launch_config", [](unsigned grid_x, unsigned grid_y, unsigned block_x, std::size_t smem) {
    empty_kernel<<<dim3(grid_x, grid_y), dim3(block_x), smem>>>();
    return std::string(cudaGetErrorName(cudaGetLastError()));
  });
}
