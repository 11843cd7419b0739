// The CUDA emulator's runtime: launches, fibers, barriers, shared memory, and the few runtime API calls of
// csrc/cuda. One emulated device (index 0); every stream is the calling thread, so work is synchronous.
//
// A launch runs the blocks of the grid one after another. Within a block every CUDA thread is a fiber
// (ucontext) with its own guarded stack; the scheduler runs each fiber until it reaches __syncthreads() or
// returns, then starts the next round, so a round is exactly the code between two barriers. A block whose
// threads disagree on the barrier (some wait while others have returned) is an error, as it is undefined
// behaviour on a GPU. UGCN_FAST_CUDA_EMULATOR_ORDER=reverse runs threads and blocks in reverse order: a kernel
// that is correct gives the same bits either way, a missing barrier or a write shared by two threads does not.
#include <cuda_runtime.h>

#include <sys/mman.h>
#include <ucontext.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace {

constexpr std::size_t kStackBytes = 256 * 1024;
constexpr std::size_t kGuardBytes = 4096;
constexpr std::size_t kSharedLimit = 48 * 1024;  // static + dynamic, without cudaFuncSetAttribute opt-in

struct Fiber {
  ucontext_t context;
  unsigned char* stack = nullptr;  // kGuardBytes of PROT_NONE below kStackBytes of stack
  bool finished = false;  // returned from the kernel (otherwise, between rounds: waiting at __syncthreads())
};

struct Launch {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  int current = 0;
  void (*body)(void*) = nullptr;
  void* ctx = nullptr;
  std::vector<unsigned char> dynamic_smem;
  std::uint64_t block_serial = 0;
  std::size_t static_smem = 0;
  std::unordered_map<void*, std::uint64_t> shared_seen;  // storage -> block_serial it was poisoned for
  std::exception_ptr error;  // thrown inside a fiber, rethrown by the scheduler (a fiber's stack has no handler)
};

Launch g;
std::mutex g_mutex;  // one launch at a time: the shared-memory statics are process-wide
thread_local cudaError_t g_last_error = cudaSuccess;

void fiber_main() {
  try {
    g.body(g.ctx);
  } catch (...) {
    g.error = std::current_exception();
  }
  g.fibers[g.current].finished = true;
  swapcontext(&g.fibers[g.current].context, &g.scheduler);
}

void ensure_fibers(std::size_t n) {
  while (g.fibers.size() < n) {
    Fiber f;
    void* mem = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw std::runtime_error("cuda emulator: cannot map a fiber stack");
    mprotect(mem, kGuardBytes, PROT_NONE);  // a stack overflow faults instead of corrupting a neighbour
    f.stack = static_cast<unsigned char*>(mem);
    g.fibers.push_back(f);
  }
}

bool reverse_order() {
  const char* order = std::getenv("UGCN_FAST_CUDA_EMULATOR_ORDER");
  return order != nullptr && std::strcmp(order, "reverse") == 0;
}

std::string dims(dim3 d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

void run_block(std::size_t n_threads, bool reverse) {
  for (std::size_t t = 0; t < n_threads; ++t) {
    Fiber& f = g.fibers[t];
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack + kGuardBytes;
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiber_main, 0);
    f.finished = false;
  }
  for (;;) {
    for (std::size_t k = 0; k < n_threads; ++k) {
      const std::size_t t = reverse ? n_threads - 1 - k : k;
      Fiber& f = g.fibers[t];
      if (f.finished) continue;
      g.current = static_cast<int>(t);
      threadIdx = dim3(static_cast<unsigned>(t % blockDim.x), static_cast<unsigned>((t / blockDim.x) % blockDim.y),
                       static_cast<unsigned>(t / (std::size_t(blockDim.x) * blockDim.y)));
      swapcontext(&g.scheduler, &f.context);
      if (g.error) std::rethrow_exception(std::exchange(g.error, nullptr));
    }
    std::size_t finished = 0;
    for (std::size_t t = 0; t < n_threads; ++t) finished += g.fibers[t].finished ? 1 : 0;
    if (finished == n_threads) return;
    if (finished != 0) {
      throw std::runtime_error("cuda emulator: block " + dims(blockIdx) + " of a " + dims(gridDim) + " grid: " +
                               std::to_string(n_threads - finished) + " threads wait at __syncthreads() while " +
                               std::to_string(finished) + " have returned (a divergent barrier)");
    }
  }
}

}  // namespace

namespace cuda_emu {

void syncthreads() { swapcontext(&g.fibers[g.current].context, &g.scheduler); }

void enter_shared(void* storage, std::size_t bytes) {
  std::uint64_t& seen = g.shared_seen[storage];
  if (seen == g.block_serial) return;
  seen = g.block_serial;
  std::memset(storage, 0xFF, bytes);
  g.static_smem += bytes;
  if (g.static_smem + g.dynamic_smem.size() > kSharedLimit) {
    throw std::runtime_error("cuda emulator: block uses " + std::to_string(g.static_smem) + " bytes of static and " +
                             std::to_string(g.dynamic_smem.size()) + " of dynamic shared memory, over the " +
                             std::to_string(kSharedLimit) + " a launch gets without opting in");
  }
}

unsigned char* dynamic_shared_memory() { return g.dynamic_smem.data(); }

void run_grid(dim3 grid, dim3 block, std::size_t dynamic_smem, void (*body)(void*), void* ctx) {
  const std::size_t n_threads = std::size_t(block.x) * block.y * block.z;
  if (n_threads == 0 || n_threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 ||
      grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
    g_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (dynamic_smem > kSharedLimit) {
    g_last_error = cudaErrorInvalidValue;
    return;
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  ensure_fibers(n_threads);
  g.body = body;
  g.ctx = ctx;
  g.dynamic_smem.assign(dynamic_smem, 0xFF);  // operator new's 16-byte alignment, as __align__(16) asks
  gridDim = grid;
  blockDim = block;
  const bool reverse = reverse_order();
  const std::uint64_t n_blocks = std::uint64_t(grid.x) * grid.y * grid.z;
  for (std::uint64_t k = 0; k < n_blocks; ++k) {
    const std::uint64_t b = reverse ? n_blocks - 1 - k : k;
    blockIdx = dim3(static_cast<unsigned>(b % grid.x), static_cast<unsigned>((b / grid.x) % grid.y),
                    static_cast<unsigned>(b / (std::uint64_t(grid.x) * grid.y)));
    ++g.block_serial;
    g.static_smem = 0;
    std::memset(g.dynamic_smem.data(), 0xFF, g.dynamic_smem.size());
    run_block(n_threads, reverse);
  }
}

}  // namespace cuda_emu

cudaError_t cudaGetLastError() {
  const cudaError_t err = g_last_error;
  g_last_error = cudaSuccess;
  return err;
}

const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
  }
  return "unknown error";
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
