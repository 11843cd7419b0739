// CPU stand-in for CUDA's __nv_bfloat16 (storage and round-to-nearest-even conversions; arithmetic through float).
#pragma once

#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
  std::uint16_t bits;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : bits(round(f)) {}
  __nv_bfloat16(double d) : bits(round(static_cast<float>(d))) {}
  __nv_bfloat16(int i) : bits(round(static_cast<float>(i))) {}
  operator float() const {
    const std::uint32_t x = std::uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
  static std::uint16_t round(float f) {
    std::uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet NaN
    x += 0x7fffu + ((x >> 16) & 1u);  // round to nearest, ties to even
    return static_cast<std::uint16_t>(x >> 16);
  }
};
static_assert(sizeof(__nv_bfloat16) == 2, "__nv_bfloat16 must be the 2-byte bfloat16 of torch.bfloat16");

inline float __bfloat162float(__nv_bfloat16 h) { return static_cast<float>(h); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
