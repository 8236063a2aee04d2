// Scalar ops of a generated epilogue-chain functor (docs/CONTRACTS.md §2.1),
// host + device (a .cuh, so the kernel cache key's template digest covers
// it), in float, spelled as PyTorch computes them for fp32 tensors (opmath float):
// pow by 2 / 3 / 0.5 multiplies / takes sqrt like PyTorch's pow_tensor_scalar;
// relu and clamp propagate NaN (the comparisons are false for NaN), as
// torch.relu / torch.clamp do.
//
// Plain C++ when not compiled by nvcc, so the unit tests compile the generated
// functor with g++ and check it numerically on the host
// (tests/unit/realize/test_epilogue_emit.cpp).
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define FACT_CHAIN_HD __host__ __device__ __forceinline__
#else
#define FACT_CHAIN_HD inline
#endif

namespace fact::epilogue_chain::ops {

FACT_CHAIN_HD float relu(float x) { return x < 0.f ? 0.f : x; }
FACT_CHAIN_HD float tanh(float x) { return ::tanhf(x); }
FACT_CHAIN_HD float exp(float x) { return ::expf(x); }
FACT_CHAIN_HD float erf(float x) { return ::erff(x); }
FACT_CHAIN_HD float sqrt(float x) { return ::sqrtf(x); }
FACT_CHAIN_HD float abs(float x) { return ::fabsf(x); }
FACT_CHAIN_HD float pow(float x, float y) { return ::powf(x, y); }
FACT_CHAIN_HD float square(float x) { return x * x; }
FACT_CHAIN_HD float cube(float x) { return x * x * x; }
FACT_CHAIN_HD float sigmoid(float x) { return 1.f / (1.f + ::expf(-x)); }
FACT_CHAIN_HD float silu(float x) { return x / (1.f + ::expf(-x)); }
// F.gelu(approximate="none"): 0.5·x·(1 + erf(x/√2)).
FACT_CHAIN_HD float gelu_erf(float x) { return 0.5f * x * (1.f + ::erff(x * 0.70710678118654752f)); }
// F.gelu(approximate="tanh"): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
FACT_CHAIN_HD float gelu_tanh(float x) {
  return 0.5f * x * (1.f + ::tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
}
FACT_CHAIN_HD float clamp_min(float x, float lo) { return x < lo ? lo : x; }
FACT_CHAIN_HD float clamp_max(float x, float hi) { return x > hi ? hi : x; }

}  // namespace fact::epilogue_chain::ops
