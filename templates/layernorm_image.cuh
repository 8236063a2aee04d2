// FACT LayerNorm / RMSNorm that writes its output as a GEMM's pre-split A operand (an operand
// image, docs/CONTRACTS.md §4.1; operand_image.cuh) instead of fp32 y, so the GEMM that
// reads y skips its A pre-pass and y never makes the round trip through memory.
//
// The image is byte for byte what the GEMM's pre-pass (split_gemm_pre_sm90.cuh,
// split_operand_tiles) makes of the y that layernorm_kernel writes: the same row
// statistics (load_row, RowReduce, row_statistics: one reduction order per Config),
// the same normalize, the same block maxima, exponents and split2 — so the GEMM's
// result is bit-identical to running the two apart.
//
// Geometry: an image block is Rows (128) rows x TileK (32) columns, and its exponent
// depends on the largest |y| over all of it, so the rows of one 128-row tile must
// agree before any of them is split. A cluster of 8 CTAs owns one row tile, each CTA 16
// rows (512 threads; a row is handled by kThreadsPerRow threads exactly as in
// layernorm_kernel, several passes of rows when that is more than 32):
//   1. statistics and y of the CTA's rows, y into shared memory, per-block maxima of |y|
//      over the CTA's rows (shared-memory atomicMax on the bits of non-negative floats);
//   2. each CTA writes its maxima into slot [its rank] of every cluster CTA (DSMEM),
//      one cluster barrier, every CTA reduces the 8 slots: the same exponents in all;
//   3. split2 of y with the block's scale, stored where ImageBlockLayout puts them
//      (kVec consecutive columns of one row per store); rank 0 writes the exponents.
// Rows past p.rows and columns past kCols (up to the last whole k-tile) are written as
// zeros, as the pre-pass's zero fill. x is read once; nothing goes back to memory but
// the image (and the residual sum of a kResidualWritesSum variant).
// Needs sm90 (clusters, DSMEM); the emitter includes this header for sm90 targets only.
#pragma once

#include <cooperative_groups.h>

#include <string>

#include "layernorm.cuh"
#include "operand_image.cuh"

namespace fact::layernorm {

// One image format a LayerNorm library writes: part format, parts, block rows x k.
template <int Format_, int Parts_, int Rows_ = 128, int TileK_ = 32>
struct ImageFormat {
  static constexpr int Format = Format_, Parts = Parts_, Rows = Rows_, TileK = TileK_;
  using Elem = split_gemm::PartElem<Format>;
  using Size = split_gemm::ImageSize<Parts, Rows, TileK>;
  static const std::string& name() {
    static const std::string text = split_gemm::image_format_name(Format, Parts, Rows, TileK);
    return text;
  }
};

// Geometry of the image writer for a LayerNorm Config and an image format.
template <class Cfg, class Fmt>
struct ImageGeometry {
  static constexpr int kClusterCtas = 8;
  static constexpr int kThreads = 512;
  static constexpr int kRowsPerCta = Fmt::Rows / kClusterCtas;
  static constexpr int kRowsPerPass = kThreads / Cfg::kThreadsPerRow;
  static constexpr int kPasses = kRowsPerCta / kRowsPerPass;
  static constexpr int kKTiles = (Cfg::kCols + Fmt::TileK - 1) / Fmt::TileK;
  // y of the CTA's rows waits in shared memory for the exponents ([pass][chunk][thread]
  // vectors: each thread reads back what it wrote, conflict-free), so the registers hold
  // one row fragment at a time: two CTAs per SM (<= 64 registers a thread) where two
  // stages fit the SM's shared memory (rows of up to ~1500 columns), else one.
  static constexpr size_t kStageBytes = size_t(kPasses) * Cfg::kChunks * kThreads * Cfg::kVec * 4;
  static constexpr int kMinBlocks = 2 * kStageBytes <= 200 * 1024 ? 2 : 1;
  static_assert(Fmt::Rows % kClusterCtas == 0 && kRowsPerCta % kRowsPerPass == 0 && kRowsPerPass >= 1,
                "a CTA's rows must split into whole passes of kThreadsPerRow threads");
  static_assert(Fmt::TileK % Cfg::kVec == 0, "a vector must lie in one image block");
  // kLayerNormImageMaxCols (include/fact/pattern_realizer.hpp) keeps every variant the
  // realizer emits under this: 16 rows of at most 2048 + 1023 padded columns.
  static_assert(kStageBytes <= 220 * 1024, "the CTA's rows do not fit the writer's shared memory");
};

template <class Cfg, class Fmt>
__global__ void __cluster_dims__(8, 1, 1)
    __launch_bounds__(ImageGeometry<Cfg, Fmt>::kThreads, ImageGeometry<Cfg, Fmt>::kMinBlocks)
        layernorm_image_kernel(FactLayerNormProblem p, split_gemm::Image<typename Fmt::Elem> image) {
  using G = ImageGeometry<Cfg, Fmt>;
  using Elem = typename Fmt::Elem;
  using Layout = split_gemm::ImageBlockLayout<Elem, Fmt::Rows, Fmt::TileK, Fmt::Parts>;
  constexpr int kVec = Cfg::kVec, P = Fmt::Parts, TK = Fmt::TileK, KT = G::kKTiles;
  constexpr bool F16 = Fmt::Format == split_gemm::PartsFp16Scaled;
  namespace cg = cooperative_groups;
  static_assert(G::kClusterCtas == 8, "__cluster_dims__ above");

  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int64_t tile = blockIdx.x / G::kClusterCtas;  // the 128-row image tile
  const int lane_in_row = threadIdx.x % Cfg::kThreadsPerRow;
  const int row_in_pass = threadIdx.x / Cfg::kThreadsPerRow;
  const int first_row = rank * G::kRowsPerCta;  // within the tile

  __shared__ float partials[2 * G::kRowsPerPass * Cfg::kWarpsPerRow];
  __shared__ unsigned cta_max[KT];                  // this CTA's block maxima (float bits)
  __shared__ unsigned cluster_max[G::kClusterCtas][KT];  // every CTA's, by rank (DSMEM)
  __shared__ int exps[KT];
  for (int t = threadIdx.x; t < KT; t += G::kThreads) cta_max[t] = 0u;
  // DSMEM may be written only once its CTA runs: this arrival is waited for before step 2's
  // remote stores.
  if constexpr (F16) cluster.barrier_arrive();
  __syncthreads();

  // 1. Statistics and y of the CTA's rows, pass by pass, y to the stage; block maxima.
  extern __shared__ __align__(16) float y_stage[];
  const auto staged = [&](int pass, int c) {  // this thread's vector of chunk c
    return reinterpret_cast<typename VecOf<kVec>::type*>(y_stage) + (pass * Cfg::kChunks + c) * G::kThreads +
           threadIdx.x;
  };
  const RowReduce<Cfg, G::kRowsPerPass> reduce{partials, lane_in_row, row_in_pass};
#pragma unroll 1
  for (int pass = 0; pass < G::kPasses; ++pass) {
    const int64_t row = tile * Fmt::Rows + first_row + pass * G::kRowsPerPass + row_in_pass;
    const bool in_rows = row < p.rows;  // every thread runs the reduction (its barriers)
    float v[Cfg::kPerThread];
    bool valid[Cfg::kPerThread];
    load_row<Cfg>(p, row, in_rows, lane_in_row, v, valid);
    float mean, rstd;
    row_statistics<Cfg::kNorm>(v, valid, Cfg::kCols, p.eps, reduce, mean, rstd);
#pragma unroll
    for (int c = 0; c < Cfg::kChunks; ++c) {
      const int col = fragment_col<Cfg>(c, lane_in_row);
      float out[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) out[i] = 0.0f;
      if (in_rows && col < Cfg::kCols) normalize_chunk<Cfg>(p, v, c, col, mean, rstd, out);
      store_vec<kVec>(reinterpret_cast<float*>(staged(pass, c)), out);
      float m = 0.0f;  // max |y| ignoring NaN, as the pre-pass (fmaxf)
#pragma unroll
      for (int i = 0; i < kVec; ++i) m = fmaxf(m, fabsf(out[i]));
      if constexpr (F16) {
        // The 32 / kVec lanes of a warp that hold one block's columns of this row are
        // consecutive lanes (kThreadsPerRow is a multiple of 32): reduce within them.
#pragma unroll
        for (int offset = 1; offset < TK / kVec && offset < 32; offset <<= 1)
          m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
        if (col < KT * TK && lane_in_row % (TK / kVec) == 0) atomicMax(&cta_max[col / TK], __float_as_uint(m));
      }
    }
  }

  // 2. Block exponents over the cluster's 128 rows.
  if constexpr (F16) {
    __syncthreads();        // cta_max complete
    cluster.barrier_wait();  // every CTA of the cluster runs
    for (int t = threadIdx.x; t < KT; t += G::kThreads) {
      const unsigned m = cta_max[t];
#pragma unroll
      for (int r = 0; r < G::kClusterCtas; ++r) cluster.map_shared_rank(&cluster_max[0][0], r)[rank * KT + t] = m;
    }
    cluster.sync();  // every CTA's maxima are in every CTA's cluster_max; no DSMEM access after this
    for (int t = threadIdx.x; t < KT; t += G::kThreads) {
      unsigned m = cluster_max[0][t];
#pragma unroll
      for (int r = 1; r < G::kClusterCtas; ++r) m = max(m, cluster_max[r][t]);
      exps[t] = split_gemm::detail::tile_exponent(__uint_as_float(m));
    }
  } else {
    for (int t = threadIdx.x; t < KT; t += G::kThreads) exps[t] = 0;
  }
  __syncthreads();  // exps
  if (rank == 0)
    for (int t = threadIdx.x; t < KT; t += G::kThreads) image.exps[tile * KT + t] = make_int4(exps[t], 0, 0, 0);

  // 3. Parts into the image: kVec consecutive columns of one row per store (8 bytes
  // for kVec 4: a 16-byte swizzle chunk holds 8 consecutive k, contiguous).
#pragma unroll 1
  for (int pass = 0; pass < G::kPasses; ++pass) {
    const int r = first_row + pass * G::kRowsPerPass + row_in_pass;  // row within the block
#pragma unroll
    for (int c = 0; c < Cfg::kChunks; ++c) {
      const int col = fragment_col<Cfg>(c, lane_in_row);
      if (col >= KT * TK) continue;
      float y[kVec];
      load_vec<kVec>(reinterpret_cast<const float*>(staged(pass, c)), y);
      const int kb = col / TK, k = col % TK;
      const float scale = split_gemm::detail::pow2(14 - exps[kb]);
      Elem* block = image.parts + (tile * KT + kb) * (P * Fmt::Rows * TK);
      const int off = cute::as_position_independent_swizzle_layout(Layout{})(r, k - k % 8, 0) + k % 8;
      if constexpr (kVec == 1) {
        uint32_t pair[P];
        split_gemm::detail::split2<P, F16>(y[0], 0.0f, scale, pair);
#pragma unroll
        for (int q = 0; q < P; ++q)
          reinterpret_cast<uint16_t*>(block + off + q * (Fmt::Rows * TK))[0] = static_cast<uint16_t>(pair[q]);
      } else {
        uint32_t words[P][kVec / 2];
#pragma unroll
        for (int j = 0; j < kVec / 2; ++j) {
          uint32_t pair[P];
          split_gemm::detail::split2<P, F16>(y[2 * j], y[2 * j + 1], scale, pair);
#pragma unroll
          for (int q = 0; q < P; ++q) words[q][j] = pair[q];
        }
#pragma unroll
        for (int q = 0; q < P; ++q) {
          Elem* dst = block + off + q * (Fmt::Rows * TK);
          if constexpr (kVec == 4) *reinterpret_cast<uint2*>(dst) = make_uint2(words[q][0], words[q][1]);
          else *reinterpret_cast<uint32_t*>(dst) = words[q][0];
        }
      }
    }
  }
}

// The image entry points of a LayerNorm library: Operation's problem checks, then one
// of Formats... by name.
template <class Cfg, class... Formats>
struct ImageWriters {
  // ';'-separated names (fact_layernorm_image_formats).
  static const char* formats() {
    static const std::string names = [] {
      std::string out;
      ((out += (out.empty() ? "" : ";") + Formats::name()), ...);
      return out;
    }();
    return names.c_str();
  }

  static size_t image_bytes(const FactLayerNormProblem& p, const char* format) {
    size_t bytes = 0;
    with_format(format, [&](auto fmt) { bytes = typename decltype(fmt)::Size(1, p.rows, p.cols).total; });
    return bytes;
  }

  static int can_implement(const FactLayerNormProblem& p, const char* format, std::string& why) {
    FactLayerNormProblem q = p;
    q.y = reinterpret_cast<void*>(uintptr_t(256));  // y is not read: any aligned stand-in
    q.y_row_stride = p.cols;
    if (int status = Operation<Cfg>::can_implement(q, why)) return status;
    int64_t ctas = 0;
    if (!with_format(format, [&](auto fmt) {
          using Fmt = decltype(fmt);
          ctas = (p.rows + Fmt::Rows - 1) / Fmt::Rows * ImageGeometry<Cfg, Fmt>::kClusterCtas;
        })) {
      why = std::string("this LayerNorm library writes no image in format '") + (format ? format : "(null)") +
            "' (it writes: " + formats() + ")";
      return 2;
    }
    if (ctas > 0x7fffffffLL) {
      why = "too many rows for one grid";
      return 2;
    }
    return 0;
  }

  static int run(const FactLayerNormProblem& p, const char* format, void* image, cudaStream_t stream,
                 std::string& why) {
    if (int status = can_implement(p, format, why)) return status;
    if (!image || reinterpret_cast<uintptr_t>(image) % 256 != 0) {
      why = "the image must be non-null and 256-byte aligned";
      return 3;
    }
    int status = 0;
    with_format(format, [&](auto fmt) { status = launch<decltype(fmt)>(p, image, stream, why); });
    return status;
  }

 private:
  // Calls fn(Fmt{}) for the one of Formats... named `format`; false when there is none.
  template <class Fn>
  static bool with_format(const char* format, Fn&& fn) {
    return format != nullptr && ((Formats::name() == format ? (fn(Formats{}), true) : false) || ...);
  }

  template <class Fmt>
  static int launch(const FactLayerNormProblem& p, void* image, cudaStream_t stream, std::string& why) {
    using G = ImageGeometry<Cfg, Fmt>;
    const typename Fmt::Size size(1, p.rows, p.cols);
    const int64_t tiles = (p.rows + Fmt::Rows - 1) / Fmt::Rows;
    constexpr auto kernel = layernorm_image_kernel<Cfg, Fmt>;
    if (int code = kernel_launch::opt_in_shared_memory(kernel, G::kStageBytes, why, "layernorm image writer needs ",
                                                       G::kStageBytes, " bytes of shared memory: "))
      return code;
    kernel<<<static_cast<unsigned>(tiles * G::kClusterCtas), G::kThreads, G::kStageBytes, stream>>>(
        p, size.template at<typename Fmt::Elem>(image));
    return kernel_launch::launch_status(why, "layernorm image launch: ");
  }
};

}  // namespace fact::layernorm
