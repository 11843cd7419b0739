// CPU stand-in for the CUDA runtime, for the CUDA emulator of the tests (see ../build.py): exactly what
// csrc/cuda uses, no more. Kernels become plain C++ functions; a launch runs every block of the grid in turn on
// the calling thread, each CUDA thread of a block as a fiber that yields at __syncthreads(), so the kernels'
// indexing, shared-memory staging and barrier structure execute for real, with CUDA's launch limits enforced.
#pragma once

#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) alignas(n)
// __shared__ declarations are rewritten by build.py (per-block storage, poisoned at every block start).

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

extern thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

typedef struct CUstream_st* cudaStream_t;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
};
typedef cudaError_t cudaError;

cudaError_t cudaGetLastError();
const char* cudaGetErrorName(cudaError_t err);
const char* cudaGetErrorString(cudaError_t err);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceCount(int* count);

namespace cuda_emu {

void syncthreads();
// Per-block storage of a `__shared__` variable: poisoned with 0xFF bytes (NaN in every float type) the first
// time a thread of a new block reaches its declaration, so a read before any write shows in the results.
void enter_shared(void* storage, std::size_t bytes);
unsigned char* dynamic_shared_memory();
// Runs body(ctx) as every thread of every block (validates the configuration as a CUDA launch does; a bad one
// sets the error cudaGetLastError() reports and runs nothing).
void run_grid(dim3 grid, dim3 block, std::size_t dynamic_smem, void (*body)(void*), void* ctx);

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t /*stream*/,
            Args&&... args) {
  // Arguments are converted to the kernel's parameter types and copied once, as a CUDA launch does.
  struct Call {
    void (*kernel)(Params...);
    std::tuple<std::decay_t<Params>...> params;
  } call{kernel, std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...)};
  run_grid(grid, block, smem, [](void* p) {
    Call* c = static_cast<Call*>(p);
    std::apply(c->kernel, c->params);
  }, &call);
}

}  // namespace cuda_emu

inline void __syncthreads() { ::cuda_emu::syncthreads(); }
