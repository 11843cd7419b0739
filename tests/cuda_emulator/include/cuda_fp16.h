// CPU stand-in for CUDA's __half (storage and correctly rounded conversions; arithmetic goes through float).
#pragma once

#include <cstring>

struct __half {
  _Float16 value;
  __half() = default;
  __half(float f) : value(static_cast<_Float16>(f)) {}
  __half(double d) : value(static_cast<_Float16>(d)) {}
  __half(int i) : value(static_cast<_Float16>(i)) {}
  operator float() const { return static_cast<float>(value); }
};
static_assert(sizeof(__half) == 2, "__half must be the 2-byte IEEE binary16 of torch.float16");

inline float __half2float(__half h) { return static_cast<float>(h.value); }
inline __half __float2half_rn(float f) { return __half(f); }
