// CUDA's half and bfloat16 types with their arithmetic and conversion operators, for the kernels of this folder.
// No translation unit here includes a torch header, so the operators that torch's extension builds switch off
// (-D__CUDA_NO_HALF_CONVERSIONS__ etc.) are safe, and the shared math headers need them (acc_t(x) loads).
#pragma once

#undef __CUDA_NO_HALF_OPERATORS__
#undef __CUDA_NO_HALF_CONVERSIONS__
#undef __CUDA_NO_HALF2_OPERATORS__
#undef __CUDA_NO_BFLOAT16_OPERATORS__
#undef __CUDA_NO_BFLOAT16_CONVERSIONS__
#undef __CUDA_NO_BFLOAT162_OPERATORS__

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
