// A zero-initialised, 64-byte (cache-line) aligned array for the CPU kernels' scratch.
//
// Why aligned: the kernels stream their scratch with full-width SIMD loads and stores (64 bytes with AVX-512). On
// std::vector's 16-byte-aligned storage every such access straddles two cache lines and costs two; the motion
// loss's planes measured ~17 % of its forward + backward in split stores alone.
#pragma once

#include <algorithm>
#include <cstddef>
#include <new>

namespace ugcn {
namespace cpu {

template <typename T>
class Aligned {
 public:
  explicit Aligned(size_t n)
      : p_(static_cast<T*>(::operator new[](std::max<size_t>(n, 1) * sizeof(T), std::align_val_t(64)))) {
    std::fill(p_, p_ + std::max<size_t>(n, 1), T(0));
  }
  ~Aligned() { ::operator delete[](p_, std::align_val_t(64)); }
  Aligned(const Aligned&) = delete;
  Aligned& operator=(const Aligned&) = delete;
  T* data() { return p_; }
  const T* data() const { return p_; }

 private:
  T* p_;
};

}  // namespace cpu
}  // namespace ugcn
