// Host-side helpers of this folder's launchers: CUDA error checks, and a guard that makes the tensors' device
// current for the launches.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace ugcn {
namespace gpu {

// Throws std::runtime_error naming the backend, the failed call and CUDA's error when err is not cudaSuccess.
inline void throw_on_cuda_error(cudaError_t err, const char* backend, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("ugcn_fast ") + backend + " CUDA backend: " + what + " failed: " +
                             cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
  }
}

// Makes device_index current for the launches and restores the caller's device afterwards (also on throw).
class DeviceGuard {
 public:
  DeviceGuard(int device_index, const char* backend) {
    throw_on_cuda_error(cudaGetDevice(&previous_), backend, "cudaGetDevice");
    if (previous_ != device_index) {
      throw_on_cuda_error(cudaSetDevice(device_index), backend, "cudaSetDevice");
      changed_ = true;
    }
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(previous_);  // best effort: a destructor must not throw
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

}  // namespace gpu
}  // namespace ugcn
