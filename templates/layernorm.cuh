// FACT LayerNorm template (hand-written: CUTLASS has no LayerNorm primitive).
//   y[r, :] = (x[r, :] - mean) / sqrt(var + eps) * weight + bias     over the last dim
// fp32 math. Each row is held in registers by kThreadsPerRow threads (one warp
// per row, several rows per CTA; or a whole CTA of 2..8 warps per row), so the
// mean and the (biased) variance are two exact passes over registers: no
// one-pass E[x^2] - E[x]^2 cancellation, and x is read from memory once.
// Optional fused residual: x = a + b (both read), written to `sum` when the
// variant says so. weight / bias are optional at run time (null pointers).
//
// Contract: the row length is compiled in (kCols); can_implement rejects any
// other length and every misaligned pointer/stride of a vectorised variant.
// The row statistics and the affine step are __host__ __device__ so the CPU
// tests (tests/unit/realize/test_layernorm_math.cpp) run the same code on one
// "thread" that holds the whole row.
#pragma once

#include <math.h>
#include <stdint.h>

#include <string>

#include "fact/kernel_abi.h"

#ifdef __CUDACC__
#include <cuda_runtime.h>
#define FACT_LN_HD __host__ __device__ __forceinline__
#else
#define FACT_LN_HD inline
#endif

namespace fact::layernorm {

enum ResidualMode { kNoResidual = 0, kResidual = 1, kResidualWritesSum = 2 };

// Mean and 1/sqrt(var + eps) of one row from this thread's fragment `v`
// (valid[i] false for slots past the row end). `reduce(partial, slot)` returns
// the sum of `partial` over every thread of the row; slot 0 and 1 are the two
// passes (distinct so a block reduction needs no barrier between them).
template <int N, class Reduce>
FACT_LN_HD void row_statistics(const float (&v)[N], const bool (&valid)[N], int cols, float eps, Reduce&& reduce,
                               float& mean, float& rstd) {
  float sum = 0.0f;
  for (int i = 0; i < N; ++i) sum += valid[i] ? v[i] : 0.0f;
  mean = reduce(sum, 0) / static_cast<float>(cols);
  float squares = 0.0f;
  for (int i = 0; i < N; ++i) {
    const float d = valid[i] ? v[i] - mean : 0.0f;
    squares += d * d;
  }
  const float var = reduce(squares, 1) / static_cast<float>(cols);
  // 1/sqrtf rather than rsqrtf: rsqrtf is up to 2 ulp off and every output carries it.
  rstd = 1.0f / sqrtf(var + eps);
}

FACT_LN_HD float normalize(float x, float mean, float rstd, const float* weight, const float* bias, int col) {
  float y = (x - mean) * rstd;
  if (weight) y *= weight[col];
  if (bias) y += bias[col];
  return y;
}

template <int Cols_, int WarpsPerRow_, int Vec_, int Residual_>
struct Config {
  static constexpr int kCols = Cols_;
  static constexpr int kWarpsPerRow = WarpsPerRow_;
  static constexpr int kVec = Vec_;
  static constexpr int kResidual = Residual_;
  static constexpr int kThreadsPerRow = 32 * kWarpsPerRow;
  // One warp per row: 4 rows (128 threads) per CTA. Several warps: one row per CTA.
  static constexpr int kRowsPerBlock = kWarpsPerRow == 1 ? 4 : 1;
  static constexpr int kThreadsPerBlock = kThreadsPerRow * kRowsPerBlock;
  static constexpr int kChunks = (kCols + kThreadsPerRow * kVec - 1) / (kThreadsPerRow * kVec);
  static constexpr int kPerThread = kChunks * kVec;
  static_assert(kVec == 1 || kVec == 2 || kVec == 4, "vector width 1, 2 or 4");
  static_assert(kCols % kVec == 0, "a vectorised row splits into whole vectors");
  static_assert(kPerThread <= 64, "row fragment too large for registers");
};

#ifdef __CUDACC__

template <int Vec>
struct VecOf;
template <>
struct VecOf<1> {
  using type = float;
};
template <>
struct VecOf<2> {
  using type = float2;
};
template <>
struct VecOf<4> {
  using type = float4;
};

template <int Vec>
__device__ __forceinline__ void load_vec(const float* p, float* out) {
  // Hazard: the reinterpret needs Vec*4-byte alignment; can_implement checks
  // pointers and row strides of vectorised variants.
  const auto value = *reinterpret_cast<const typename VecOf<Vec>::type*>(p);
  const float* lanes = reinterpret_cast<const float*>(&value);
#pragma unroll
  for (int i = 0; i < Vec; ++i) out[i] = lanes[i];
}

template <int Vec>
__device__ __forceinline__ void store_vec(float* p, const float* in) {
  typename VecOf<Vec>::type value;
  float* lanes = reinterpret_cast<float*>(&value);
#pragma unroll
  for (int i = 0; i < Vec; ++i) lanes[i] = in[i];
  *reinterpret_cast<typename VecOf<Vec>::type*>(p) = value;
}

template <class Cfg>
__global__ void __launch_bounds__(Cfg::kThreadsPerBlock) layernorm_kernel(FactLayerNormProblem p) {
  constexpr int kVec = Cfg::kVec;
  const int lane_in_row = threadIdx.x % Cfg::kThreadsPerRow;
  const int row_in_block = threadIdx.x / Cfg::kThreadsPerRow;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * Cfg::kRowsPerBlock + row_in_block;
  // A whole warp (one-warp rows) or the whole CTA (multi-warp rows) leaves
  // together, so the shuffles and barriers below see every participant.
  if (row >= p.rows) return;

  const float* x = static_cast<const float*>(p.x) + row * p.x_row_stride;
  const float* r = Cfg::kResidual != kNoResidual ? static_cast<const float*>(p.residual) + row * p.residual_row_stride
                                                 : nullptr;
  float v[Cfg::kPerThread];
  bool valid[Cfg::kPerThread];
#pragma unroll
  for (int c = 0; c < Cfg::kChunks; ++c) {
    const int col = (c * Cfg::kThreadsPerRow + lane_in_row) * kVec;
    const bool in_row = col < Cfg::kCols;  // kCols % kVec == 0: a vector is wholly in or out
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      valid[c * kVec + i] = in_row;
      v[c * kVec + i] = 0.0f;
    }
    if (in_row) {
      load_vec<kVec>(x + col, &v[c * kVec]);
      if (Cfg::kResidual != kNoResidual) {
        float b[kVec];
        load_vec<kVec>(r + col, b);
#pragma unroll
        for (int i = 0; i < kVec; ++i) v[c * kVec + i] += b[i];
        if (Cfg::kResidual == kResidualWritesSum)
          store_vec<kVec>(static_cast<float*>(p.sum) + row * p.sum_row_stride + col, &v[c * kVec]);
      }
    }
  }

  __shared__ float partials[2][Cfg::kRowsPerBlock * Cfg::kWarpsPerRow];
  auto reduce = [&](float value, int slot) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
    if (Cfg::kWarpsPerRow == 1) return value;
    // Several warps per row (one row per CTA): combine the warp sums in shared
    // memory. Each pass has its own slot, so one barrier per pass suffices.
    const int warp = lane_in_row / 32;
    if (lane_in_row % 32 == 0) partials[slot][warp] = value;
    __syncthreads();
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < Cfg::kWarpsPerRow; ++w) total += partials[slot][w];
    return total;
  };
  float mean, rstd;
  row_statistics(v, valid, Cfg::kCols, p.eps, reduce, mean, rstd);

  const float* weight = static_cast<const float*>(p.weight);
  const float* bias = static_cast<const float*>(p.bias);
  float* y = static_cast<float*>(p.y) + row * p.y_row_stride;
#pragma unroll
  for (int c = 0; c < Cfg::kChunks; ++c) {
    const int col = (c * Cfg::kThreadsPerRow + lane_in_row) * kVec;
    if (col >= Cfg::kCols) continue;
    float w[kVec], b[kVec], out[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i) w[i] = 1.0f, b[i] = 0.0f;
    if (weight) load_vec<kVec>(weight + col, w);
    if (bias) load_vec<kVec>(bias + col, b);
#pragma unroll
    for (int i = 0; i < kVec; ++i) out[i] = normalize(v[c * kVec + i], mean, rstd, w, b, i);
    store_vec<kVec>(y + col, out);
  }
}

inline bool aligned_to(const void* ptr, int bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

template <class Cfg>
struct Operation {
  static int can_implement(const FactLayerNormProblem& p, std::string& why) {
    if (p.rows <= 0) {
      why = "rows must be positive, got " + std::to_string(p.rows);
      return 2;
    }
    if (p.cols != Cfg::kCols) {
      why = "this variant normalises rows of " + std::to_string(Cfg::kCols) + " columns, the problem has " +
            std::to_string(p.cols);
      return 2;
    }
    if (!p.x || !p.y) {
      why = "x and y must be non-null";
      return 2;
    }
    if ((Cfg::kResidual != kNoResidual) != (p.residual != nullptr)) {
      why = Cfg::kResidual != kNoResidual ? "this residual variant needs the residual operand"
                                          : "this variant has no residual input, but the problem passes one";
      return 2;
    }
    if ((Cfg::kResidual == kResidualWritesSum) != (p.sum != nullptr)) {
      why = Cfg::kResidual == kResidualWritesSum ? "this variant writes the residual sum, but sum is null"
                                                 : "this variant does not write the residual sum, but sum is set";
      return 2;
    }
    const int bytes = Cfg::kVec * 4;
    struct Operand {
      const char* name;
      const void* ptr;
      int64_t row_stride;
    };
    const Operand operands[] = {{"x", p.x, p.x_row_stride},
                                {"residual", p.residual, p.residual_row_stride},
                                {"sum", p.sum, p.sum_row_stride},
                                {"y", p.y, p.y_row_stride},
                                {"weight", p.weight, 0},
                                {"bias", p.bias, 0}};
    for (const auto& o : operands) {
      if (!o.ptr) continue;
      if (!aligned_to(o.ptr, bytes)) {
        why = std::string(o.name) + " is not " + std::to_string(bytes) + "-byte aligned (vector width " +
              std::to_string(Cfg::kVec) + ")";
        return 3;
      }
      if (p.rows > 1 && o.row_stride % Cfg::kVec != 0) {
        why = std::string(o.name) + " row stride " + std::to_string(o.row_stride) + " is not a multiple of " +
              std::to_string(Cfg::kVec);
        return 3;
      }
    }
    if (!(p.eps >= 0.0f)) {
      why = "eps must be a non-negative number";
      return 2;
    }
    return 0;
  }

  static int run(const FactLayerNormProblem& p, cudaStream_t stream, std::string& why) {
    const int64_t blocks = (p.rows + Cfg::kRowsPerBlock - 1) / Cfg::kRowsPerBlock;
    if (blocks > 0x7fffffff) {
      why = "too many rows for one grid";
      return 2;
    }
    layernorm_kernel<Cfg><<<static_cast<unsigned>(blocks), Cfg::kThreadsPerBlock, 0, stream>>>(p);
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) {
      why = std::string("layernorm launch: ") + cudaGetErrorString(status);
      return static_cast<int>(status);
    }
    return 0;
  }
};

#endif  // __CUDACC__

}  // namespace fact::layernorm
