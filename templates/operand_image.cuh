// The pre-split operand of FACT's split GEMMs, the one definition shared by every kernel
// that makes or reads it: the part split (split2 / split8), the power-of-two block scale
// (tile_exponent, pow2), and the operand image (docs/CONTRACTS.md §4.1) — its block
// layout, size and format name. Included by the split GEMM templates
// (split_gemm_sm90.cuh and the kernels built on it) and by the LayerNorm image writer
// (layernorm_image.cuh), so a LayerNorm's image, a GEMM's D image and a GEMM's own
// pre-pass agree byte for byte.
//
// Image of one operand (rows x k, `batch` entries): block (b, row tile, k-tile) =
// ((b * row_tiles + row_tile) * k_tiles + k_tile) holds Parts slots of Rows x TileK
// 16-bit parts in the layout a part-ring stage of the GEMM expects (ImageBlockLayout:
// K-major, GMMA 64-byte swizzle), zero outside the operand; then, at a 256-byte aligned
// offset, one int4 per block whose .x is the block exponent (PartsFp16Scaled; 0 for bf16).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include <cute/tensor.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>

namespace fact::split_gemm {

// Part formats (the split GEMM Configs' Format parameter).
enum PartFormat : int { PartsBf16 = 0, PartsFp16Scaled = 1 };

// The 16-bit part type of a format.
template <int Format>
using PartElem = std::conditional_t<Format == PartsFp16Scaled, cute::half_t, cute::bfloat16_t>;

// One image block: Parts slots of Rows x TileK parts (mode 2 = slot), K-major, 64B-swizzled.
template <class Elem, int Rows, int TileK, int Parts>
using ImageBlockLayout = decltype(cute::tile_to_shape(
    cute::GMMA::Layout_K_SW64_Atom<Elem>{}, cute::make_shape(cute::Int<Rows>{}, cute::Int<TileK>{}, cute::Int<Parts>{})));

// The format name fact_gemm_image_format() / fact_layernorm_image_formats() report.
inline std::string image_format_name(int format, int parts, int rows, int tile_k) {
  return std::string("fact-split-image-v1:") + (format == PartsFp16Scaled ? "f16s" : "bf16") + ":p" +
         std::to_string(parts) + ":r" + std::to_string(rows) + ":k" + std::to_string(tile_k) + ":sw64";
}

// An operand image in memory: its parts and its block exponents.
template <class Elem>
struct Image {
  Elem* parts;
  int4* exps;
};

// Bytes and layout of one operand's image: `blocks` = batch x ceil(rows / Rows) x
// ceil(k / TileK) blocks of Parts Rows x TileK 16-bit slots, then their int4 exponents at a
// 256-byte aligned offset.
template <int Parts, int Rows, int TileK>
struct ImageSize {
  static constexpr size_t BlockBytes = size_t(Parts) * Rows * TileK * 2;
  int64_t blocks = 0;
  size_t exps = 0, total = 0;  // byte offset of the exponents; total size

  static size_t align(size_t bytes) { return (bytes + 255) & ~size_t(255); }
  ImageSize(int64_t batch, int64_t rows, int64_t k)
      : blocks(batch * ((rows + Rows - 1) / Rows) * ((k + TileK - 1) / TileK)),
        exps(align(blocks * BlockBytes)),
        total(exps + align(blocks * 16)) {}

  // The image at `base` (256-byte aligned).
  template <class Elem>
  Image<Elem> at(void* base) const {
    auto* bytes = static_cast<unsigned char*>(base);
    return Image<Elem>{reinterpret_cast<Elem*>(bytes), reinterpret_cast<int4*>(bytes + exps)};
  }
};

namespace detail {

// A packed pair of 16-bit parts: fp16 (Fp16) or bf16, round to nearest, and back to fp32.
template <bool Fp16>
struct PartPair {
  using T2 = std::conditional_t<Fp16, __half2, __nv_bfloat162>;
  __device__ __forceinline__ static T2 round(float a, float b) {
    if constexpr (Fp16) return __floats2half2_rn(a, b);
    else return __floats2bfloat162_rn(a, b);
  }
  __device__ __forceinline__ static float2 widen(T2 h) {
    if constexpr (Fp16) return __half22float2(h);
    else return __bfloat1622float2(h);
  }
};

// Splits the fp32 pair (v0, v1) into Parts packed 16-bit pairs (p_0 = rn(x), p_i =
// rn(residual)); Fp16: of x * scale in fp16, else of x in bf16 (scale unused). The one
// definition of a part: the in-kernel conversion (split8), the pre-pass, the GEMM's
// operand-image epilogue and the LayerNorm image writer all go through it, so their
// parts are bit-identical. Each element's parts depend on that element alone.
template <int Parts, bool Fp16>
__device__ __forceinline__ void split2(float v0, float v1, float scale, uint32_t (&out)[Parts]) {
  using Pair = PartPair<Fp16>;
  float r0 = v0, r1 = v1;
  if constexpr (Fp16) {
    r0 *= scale;
    r1 *= scale;
  }
#pragma unroll
  for (int p = 0; p < Parts; ++p) {
    const typename Pair::T2 h = Pair::round(r0, r1);
    out[p] = *reinterpret_cast<const uint32_t*>(&h);
    if (p + 1 < Parts) {
      const float2 back = Pair::widen(h);
      r0 -= back.x;
      r1 -= back.y;
    }
  }
}

// split2 over 8 consecutive values: Parts packed 16-bit x8 vectors.
template <int Parts, bool Fp16>
__device__ __forceinline__ void split8(const float (&v)[8], float scale, uint4 (&out)[Parts]) {
  uint32_t w[4][Parts];
#pragma unroll
  for (int j = 0; j < 4; ++j) split2<Parts, Fp16>(v[2 * j], v[2 * j + 1], scale, w[j]);
#pragma unroll
  for (int p = 0; p < Parts; ++p) out[p] = make_uint4(w[0][p], w[1][p], w[2][p], w[3][p]);
}

// floor(log2(m)) clamped to [-113, 127]; 0 for a zero or non-finite maximum.
// The scale 2^(14 - e) is then a normal float.
__device__ __forceinline__ int tile_exponent(float m) {
  if (!(m > 0.f) || !isfinite(m)) return 0;
  int e;
  frexpf(m, &e);  // m = f * 2^e, f in [0.5, 1)
  return max(e - 1, -113);
}
__device__ __forceinline__ float pow2(int e) {  // e in [-126, 127]
  return __int_as_float((e + 127) << 23);
}

// Warp max of non-negative, non-NaN floats: their bit patterns order as unsigned
// integers, so one REDUX replaces five shuffle + max steps.
__device__ __forceinline__ float warp_max(float m) {
  return __uint_as_float(__reduce_max_sync(0xffffffffu, __float_as_uint(m)));
}

}  // namespace detail
}  // namespace fact::split_gemm
