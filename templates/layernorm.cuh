// FACT LayerNorm / RMSNorm template (hand-written: CUTLASS has no normalisation primitive).
//   LayerNorm: y[r, :] = (x[r, :] - mean) / sqrt(var + eps) * weight + bias   over the last dim
//   RMSNorm:   y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight
// (Config's Norm; an RMSNorm is the LayerNorm path with mean 0, one reduction pass, no bias).
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
#include "kernel_launch.cuh"

#ifdef __CUDACC__
#include <cuda_runtime.h>
#define FACT_LN_HD __host__ __device__ __forceinline__
#else
#define FACT_LN_HD inline
#endif

namespace fact::layernorm {

enum ResidualMode { kNoResidual = 0, kResidual = 1, kResidualWritesSum = 2 };
enum NormKind { kLayerNorm = 0, kRmsNorm = 1 };

// Explicitly rounded fp32 arithmetic for the row math. Hazard: with plain operators
// nvcc may contract a multiply and a following add into one FMA in one kernel and not
// in another (-fmad=true), and the LayerNorm image writer (layernorm_image.cuh) must
// produce y bit for bit as layernorm_kernel does. The host side (the CPU tests) has
// no FMA contraction on its default x86-64 target; fmaf is exact on both.
FACT_LN_HD float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
FACT_LN_HD float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// Mean and 1/sqrt(var + eps) of one row from this thread's fragment `v`
// (valid[i] false for slots past the row end). `reduce(partial, slot)` returns
// the sum of `partial` over every thread of the row; slot 0 and 1 are the two
// passes (distinct so a block reduction needs no barrier between them).
// kRmsNorm: mean = 0 exactly (so normalize's x - mean is x) and 1/sqrt(mean(x^2) + eps),
// one pass in slot 1: every thread of a row still calls reduce the same number of times.
template <int Norm = kLayerNorm, int N, class Reduce>
FACT_LN_HD void row_statistics(const float (&v)[N], const bool (&valid)[N], int cols, float eps, Reduce&& reduce,
                               float& mean, float& rstd) {
  if constexpr (Norm == kRmsNorm) {
    float squares = 0.0f;
    for (int i = 0; i < N; ++i) {
      const float d = valid[i] ? v[i] : 0.0f;
      squares = fmaf(d, d, squares);
    }
    mean = 0.0f;
    rstd = 1.0f / sqrtf(reduce(squares, 1) / static_cast<float>(cols) + eps);
    return;
  }
  float sum = 0.0f;
  for (int i = 0; i < N; ++i) sum = add_rn(sum, valid[i] ? v[i] : 0.0f);
  mean = reduce(sum, 0) / static_cast<float>(cols);
  float squares = 0.0f;
  for (int i = 0; i < N; ++i) {
    const float d = valid[i] ? v[i] - mean : 0.0f;
    squares = fmaf(d, d, squares);
  }
  const float var = reduce(squares, 1) / static_cast<float>(cols);
  // 1/sqrtf rather than rsqrtf: rsqrtf is up to 2 ulp off and every output carries it.
  rstd = 1.0f / sqrtf(var + eps);
}

// y of one element; w (b) is used only where has_weight (has_bias).
FACT_LN_HD float normalize(float x, float mean, float rstd, bool has_weight, float w, bool has_bias, float b) {
  const float y = mul_rn(x - mean, rstd);
  if (has_weight && has_bias) return fmaf(y, w, b);
  if (has_weight) return mul_rn(y, w);
  if (has_bias) return add_rn(y, b);
  return y;
}
FACT_LN_HD float normalize(float x, float mean, float rstd, const float* weight, const float* bias, int col) {
  return normalize(x, mean, rstd, weight != nullptr, weight ? weight[col] : 1.0f, bias != nullptr,
                   bias ? bias[col] : 0.0f);
}

template <int Cols_, int WarpsPerRow_, int Vec_, int Residual_, int Norm_ = kLayerNorm>
struct Config {
  static constexpr int kCols = Cols_;
  static constexpr int kWarpsPerRow = WarpsPerRow_;
  static constexpr int kVec = Vec_;
  static constexpr int kResidual = Residual_;
  static constexpr int kNorm = Norm_;
  static constexpr int kThreadsPerRow = 32 * kWarpsPerRow;
  // One warp per row: 4 rows (128 threads) per CTA. Several warps: one row per CTA.
  static constexpr int kRowsPerBlock = kWarpsPerRow == 1 ? 4 : 1;
  static constexpr int kThreadsPerBlock = kThreadsPerRow * kRowsPerBlock;
  static constexpr int kChunks = (kCols + kThreadsPerRow * kVec - 1) / (kThreadsPerRow * kVec);
  static constexpr int kPerThread = kChunks * kVec;
  static_assert(kVec == 1 || kVec == 2 || kVec == 4, "vector width 1, 2 or 4");
  static_assert(kCols % kVec == 0, "a vectorised row splits into whole vectors");
  static_assert(kPerThread <= 64, "row fragment too large for registers");
  static_assert(kNorm == kLayerNorm || kNorm == kRmsNorm, "LayerNorm or RMSNorm");
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

// The sum over the kThreadsPerRow threads of one row: a warp butterfly, then (several
// warps per row) the warp sums in warp order through `partials` (2 slots x Rows x
// kWarpsPerRow floats of shared memory, Rows = the rows a CTA reduces at once) and one
// CTA barrier per pass. Every thread of the CTA must call it (the barrier), the same
// number of times. The one reduction order of a row: layernorm_kernel and the image
// writer both use it, so their statistics are bit-identical.
template <class Cfg, int Rows>
struct RowReduce {
  float* partials;
  int lane_in_row, row_in_block;
  __device__ __forceinline__ float operator()(float value, int slot) const {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
    if constexpr (Cfg::kWarpsPerRow == 1) {
      return value;
    } else {
      // Each pass has its own slot, so one barrier per pass suffices.
      float* row = partials + (slot * Rows + row_in_block) * Cfg::kWarpsPerRow;
      if (lane_in_row % 32 == 0) row[lane_in_row / 32] = value;
      __syncthreads();
      float total = 0.0f;
#pragma unroll
      for (int w = 0; w < Cfg::kWarpsPerRow; ++w) total += row[w];
      return total;
    }
  }
};

// Column of slot c * kVec of this thread's row fragment.
template <class Cfg>
__device__ __forceinline__ int fragment_col(int c, int lane_in_row) {
  return (c * Cfg::kThreadsPerRow + lane_in_row) * Cfg::kVec;
}

// This thread's fragment of row `row` into v (x, plus the residual operand; a
// kResidualWritesSum variant writes the sum), valid[] false past the row end. A row
// past p.rows (in_rows false) reads nothing and holds zeros.
template <class Cfg>
__device__ __forceinline__ void load_row(const FactLayerNormProblem& p, int64_t row, bool in_rows, int lane_in_row,
                                         float (&v)[Cfg::kPerThread], bool (&valid)[Cfg::kPerThread]) {
  constexpr int kVec = Cfg::kVec;
  const float* x = static_cast<const float*>(p.x) + row * p.x_row_stride;
  const float* r = Cfg::kResidual != kNoResidual ? static_cast<const float*>(p.residual) + row * p.residual_row_stride
                                                 : nullptr;
#pragma unroll
  for (int c = 0; c < Cfg::kChunks; ++c) {
    const int col = fragment_col<Cfg>(c, lane_in_row);
    const bool in_row = col < Cfg::kCols;  // kCols % kVec == 0: a vector is wholly in or out
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      valid[c * kVec + i] = in_row;
      v[c * kVec + i] = 0.0f;
    }
    if (in_row && in_rows) {
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
}

// y of chunk c of the fragment (its kVec columns start at fragment_col; the chunk must
// lie in the row).
template <class Cfg>
__device__ __forceinline__ void normalize_chunk(const FactLayerNormProblem& p, const float (&v)[Cfg::kPerThread],
                                                int c, int col, float mean, float rstd, float (&out)[Cfg::kVec]) {
  constexpr int kVec = Cfg::kVec;
  float w[kVec], b[kVec];
#pragma unroll
  for (int i = 0; i < kVec; ++i) w[i] = 1.0f, b[i] = 0.0f;
  if (p.weight) load_vec<kVec>(static_cast<const float*>(p.weight) + col, w);
  if (p.bias) load_vec<kVec>(static_cast<const float*>(p.bias) + col, b);
#pragma unroll
  for (int i = 0; i < kVec; ++i)
    out[i] = normalize(v[c * kVec + i], mean, rstd, p.weight != nullptr, w[i], p.bias != nullptr, b[i]);
}

template <class Cfg>
__global__ void __launch_bounds__(Cfg::kThreadsPerBlock) layernorm_kernel(FactLayerNormProblem p) {
  const int lane_in_row = threadIdx.x % Cfg::kThreadsPerRow;
  const int row_in_block = threadIdx.x / Cfg::kThreadsPerRow;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * Cfg::kRowsPerBlock + row_in_block;
  // A whole warp (one-warp rows) or the whole CTA (multi-warp rows) leaves
  // together, so the shuffles and barriers below see every participant.
  if (row >= p.rows) return;

  float v[Cfg::kPerThread];
  bool valid[Cfg::kPerThread];
  load_row<Cfg>(p, row, true, lane_in_row, v, valid);
  __shared__ float partials[2 * Cfg::kRowsPerBlock * Cfg::kWarpsPerRow];
  float mean, rstd;
  row_statistics<Cfg::kNorm>(v, valid, Cfg::kCols, p.eps,
                             RowReduce<Cfg, Cfg::kRowsPerBlock>{partials, lane_in_row, row_in_block}, mean, rstd);

  float* y = static_cast<float*>(p.y) + row * p.y_row_stride;
#pragma unroll
  for (int c = 0; c < Cfg::kChunks; ++c) {
    const int col = fragment_col<Cfg>(c, lane_in_row);
    if (col >= Cfg::kCols) continue;
    float out[Cfg::kVec];
    normalize_chunk<Cfg>(p, v, c, col, mean, rstd, out);
    store_vec<Cfg::kVec>(y + col, out);
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
    if (Cfg::kNorm == kRmsNorm && p.bias) {
      why = "an RMSNorm variant has no bias, but the problem passes one";
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
    return kernel_launch::launch_status(why, "layernorm launch: ");
  }
};

// The operand-image entry points of a library built without the image writer
// (layernorm_image.cuh needs sm90): it writes no format.
struct NoImages {
  static constexpr const char* kWhy = "this LayerNorm library writes no operand images (built for a target without sm90)";
  static const char* formats() { return ""; }
  static size_t image_bytes(const FactLayerNormProblem&, const char*) { return 0; }
  static int can_implement(const FactLayerNormProblem&, const char*, std::string& why) {
    why = kWhy;
    return 2;
  }
  static int run(const FactLayerNormProblem&, const char*, void*, cudaStream_t, std::string& why) {
    why = kWhy;
    return 2;
  }
};

#endif  // __CUDACC__

}  // namespace fact::layernorm
