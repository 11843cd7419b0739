// A zero-initialised (unless asked not to be), 64-byte (cache-line) aligned array for the CPU kernels' scratch.
//
// Why aligned: the kernels stream their scratch with full-width SIMD loads and stores (64 bytes with AVX-512). On
// std::vector's 16-byte-aligned storage every such access straddles two cache lines and costs two; the motion
// loss's planes measured ~17 % of its forward + backward in split stores alone.
#pragma once

#include <algorithm>
#include <cstddef>
#include <new>
#include <utility>

#if defined(__SANITIZE_ADDRESS__)
#define UGCN_ADDRESS_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UGCN_ADDRESS_SANITIZER 1
#endif
#endif
#ifdef UGCN_ADDRESS_SANITIZER
#include <sanitizer/asan_interface.h>
#endif

namespace ugcn {
namespace cpu {

template <typename T>
class Aligned {
 public:
  explicit Aligned(size_t n) : Aligned(n, kUninitialised) { std::fill(p_, p_ + std::max<size_t>(n, 1), T(0)); }
  // For a buffer its owner writes in full before reading (packed weights): the zero fill would be one more pass
  // over fresh memory, with its page faults.
  enum Uninitialised { kUninitialised };
  Aligned(size_t n, Uninitialised)
      : p_(static_cast<T*>(::operator new[](std::max<size_t>(n, 1) * sizeof(T), std::align_val_t(64)))) {}
  Aligned() : Aligned(0) {}
  ~Aligned() { ::operator delete[](p_, std::align_val_t(64)); }  // (null after a move: a no-op)
  Aligned(const Aligned&) = delete;
  Aligned& operator=(const Aligned&) = delete;
  Aligned(Aligned&& other) noexcept : p_(other.p_) { other.p_ = nullptr; }
  Aligned& operator=(Aligned&& other) noexcept {
    std::swap(p_, other.p_);
    return *this;
  }
  T* data() { return p_; }
  const T* data() const { return p_; }

 private:
  T* p_;
};

// Buffers carved out of one allocation lose the sanitizer's bounds between them. Sanitizer builds leave a gap of
// kRedzoneBytes after each and mark it unreadable (AddressSanitizer reports any access to it); other builds leave
// no gap and these calls do nothing. Both are whole cache lines, so the buffers stay aligned.
#ifdef UGCN_ADDRESS_SANITIZER
constexpr size_t kRedzoneBytes = 64;
inline void mark_unreadable(const void* p, size_t bytes) { ASAN_POISON_MEMORY_REGION(p, bytes); }
inline void mark_readable(const void* p, size_t bytes) { ASAN_UNPOISON_MEMORY_REGION(p, bytes); }
#else
constexpr size_t kRedzoneBytes = 0;
inline void mark_unreadable(const void*, size_t) {}
inline void mark_readable(const void*, size_t) {}
#endif

}  // namespace cpu
}  // namespace ugcn
