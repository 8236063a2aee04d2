// FACT fp32-faithful GEMM for Hopper (sm90a): fp32 operands are split into
// bf16 parts where they are loaded, the parts are multiplied on wgmma, and the
// tensor-core partial sums are promoted into fp32 registers after every k-tile.
//
//   x = p0 + p1 + p2 (+ rest),  p_i = bf16_rn(x - p0 - ... - p_{i-1})
//   Terms = 1: p0*q0                                  (bf16 class, ~8 operand bits)
//   Terms = 3: p0*q0 + p0*q1 + p1*q0                  (~16 bits)
//   Terms = 6: all p_i*q_j with i + j <= 2            (~24 bits, fp32-like)
// Part format (9th Config parameter, default PartsBf16):
//   PartsBf16:        p_i are bf16 (8 bits each, full fp32 exponent range).
//   PartsFp16Scaled:  p_i are fp16 (11 bits each) of x * 2^s, with one power-of-two s per
//                     operand k-tile (max |x * 2^s| in [2^14, 2^15), so nothing overflows
//                     and the low parts stay normal); the promotion multiplies the k-tile's
//                     partial sum by 2^-(sA + sB). Terms = 3 then carries ~22 bits: fp32-class
//                     accuracy at bf16x3's cost (docs/notes/split_gemm.md). Costs one extra
//                     pass over the fp32 stage (tile max) and one extra barrier per k-tile.
//                     Tile maxima below 2^-113 are scaled as if they were 2^-113.
//
// Data path per CTA (TileM = 64 * warpgroups, every thread is a consumer):
//   global fp32 --cp.async (zero-fill outside the problem)--> fp32 smem ring (Stages deep)
//   fp32 smem --each thread converts 8 consecutive k of one row--> bf16 part buffers,
//       K-major, GMMA 64B-swizzled, double buffered (the transpose of an MN-contiguous
//       operand happens here, so wgmma always sees K-major operands)
//   wgmma (SS) on buffer b into a per-k-tile accumulator `part` (first issue zeroes it)
//       while the threads convert the next k-tile into buffer b^1
//   wait, acc += part (fp32 FADD: the promotion), barrier, next k-tile.
//
// Split-K: run() picks the number of K-splits from the problem and the SM
// count (one compiled variant serves all shapes). With more than one split,
// each CTA writes its fp32 partial tile to the workspace and a second kernel
// sums the partials in split order (deterministic) and applies the epilogue.
//
// Hazards:
// - Inf/NaN inputs: x - bf16(x) is NaN for x = +-inf, so an inf operand gives
//   NaN where fp32 math would give +-inf. |x| above the bf16 maximum
//   (~3.39e38) rounds to inf the same way.
// - Requirements (can_implement): 16-byte aligned A/B base pointers, leading
//   dimensions and batch strides multiples of 4 elements, and the contiguous
//   extent of A and B (k for row-major A, m for column-major A, n for
//   row-major B, k for column-major B) a multiple of 4.
#pragma once

#include <cuda.h>  // CUtensorMap
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include <cute/tensor.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm90.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cutlass/arch/barrier.h>

#include "epilogue_chain.cuh"
#include "fact/kernel_abi.h"
#include "kernel_launch.cuh"
#include "operand_image.cuh"

namespace fact::split_gemm {

// Part formats (Config's optional 9th parameter): PartFormat, operand_image.cuh.

// Chain_: void, or an epilogue_chain::ElementwiseChain that computes D from the
// accumulator and the epilogue's inputs (a generated GEMM + epilogue-chain variant).
template <int TileM_, int TileN_, int TileK_, int Terms_, bool ARowMajor_, bool BRowMajor_,
          int Epilogue_, int Stages_, int Format_ = PartsBf16, class Chain_ = void>
struct Config {
  static constexpr int TileM = TileM_;
  static constexpr int TileN = TileN_;
  static constexpr int TileK = TileK_;
  static constexpr int Terms = Terms_;
  static constexpr bool ARowMajor = ARowMajor_;  // A(m,k) at m*ld_a + k, else k*ld_a + m
  static constexpr bool BRowMajor = BRowMajor_;  // B(k,n) at k*ld_b + n, else n*ld_b + k
  static constexpr int Epilogue = Epilogue_;     // FactEpilogueKind
  static constexpr int Stages = Stages_;         // fp32 smem ring depth
  static constexpr int Format = Format_;         // PartFormat
  using Chain = Chain_;                           // void: D = alpha * acc + beta * E
  // What the epilogue evaluates: the generated chain, else the built-in epilogue's.
  using EpilogueChain =
      std::conditional_t<std::is_void_v<Chain_>, epilogue_chain::BuiltinChain<Epilogue_>, Chain_>;
  static constexpr int Parts = Terms == 1 ? 1 : Terms == 3 ? 2 : Terms == 6 ? 3 : 0;
  static constexpr int WarpGroups = TileM / 64;
  static constexpr int Threads = 128 * WarpGroups;

  static_assert(Parts != 0, "Terms must be 1, 3 or 6");
  static_assert(TileM == 64 || TileM == 128, "TileM must be 64 or 128 (one or two warpgroups)");
  static_assert(TileN == 64 || TileN == 128, "TileN must be 64 or 128 (accumulator registers)");
  static_assert(TileK == 32, "TileK must be 32 (one 128-byte fp32 row, one 64B-swizzle bf16 atom)");
  static_assert(Stages >= 3 && Stages <= 8, "Stages must be 3..8 (tile kt+2 lands one step early)");
  static_assert(Format == PartsBf16 || Format == PartsFp16Scaled, "unknown part format");
  static_assert(Epilogue == FACT_EPILOGUE_NONE || Epilogue == FACT_EPILOGUE_BIAS ||
                    Epilogue == FACT_EPILOGUE_C,
                "unknown epilogue");

  // Shared memory: fp32 ring, then the bf16 part buffers (2 buffers x Parts).
  static constexpr int StageFloats = (TileM + TileN) * TileK;
  static constexpr size_t Fp32Bytes = size_t(Stages) * StageFloats * 4;
  static constexpr int BufElemsA = TileM * TileK;  // one bf16 part of A
  static constexpr int BufElemsB = TileN * TileK;
  static constexpr size_t Bf16Bytes = size_t(2) * Parts * (BufElemsA + BufElemsB) * 2;
  // PartsFp16Scaled: per-warp tile maxima of A and B.
  static constexpr size_t MaxSlotBytes = Format == PartsFp16Scaled ? 2 * (Threads / 32) * 4 : 0;
  static constexpr size_t SmemBytes = Fp32Bytes + Bf16Bytes + MaxSlotBytes + 1024;  // + alignment slack
  static_assert(SmemBytes <= 227 * 1024, "shared memory over the sm90 limit: fewer Stages");
};

namespace detail {

using namespace cute;

template <class Cfg>
struct Types {
  // The 16-bit part type (named Bf16 for history; half_t for PartsFp16Scaled).
  using Bf16 = PartElem<Cfg::Format>;
  using TileShape = Shape<Int<Cfg::TileM>, Int<Cfg::TileN>, Int<Cfg::TileK>>;
  using MmaAtom = decltype(SM90::GMMA::ss_op_selector<Bf16, Bf16, float,
                                                      Shape<_64, Int<Cfg::TileN>, Int<Cfg::TileK>>,
                                                      GMMA::Major::K, GMMA::Major::K>());
  using TiledMma = decltype(make_tiled_mma(MmaAtom{}, Layout<Shape<Int<Cfg::WarpGroups>, _1, _1>>{}));
  // bf16 part buffers: (rows, k, buffer*Parts + part), K-major, 64-byte swizzle.
  using SmemLayoutA = decltype(tile_to_shape(GMMA::Layout_K_SW64_Atom<Bf16>{},
                                             make_shape(Int<Cfg::TileM>{}, Int<Cfg::TileK>{},
                                                        Int<2 * Cfg::Parts>{})));
  using SmemLayoutB = decltype(tile_to_shape(GMMA::Layout_K_SW64_Atom<Bf16>{},
                                             make_shape(Int<Cfg::TileN>{}, Int<Cfg::TileK>{},
                                                        Int<2 * Cfg::Parts>{})));
};

// Operand images split by a pre-pass (split_gemm_pre_sm90.cuh); null for the kernels
// that split where they load.
struct PreSplitImages {
  const void* a = nullptr;
  const void* b = nullptr;
  const int4* exp_a = nullptr;
  const int4* exp_b = nullptr;
};

// D written as the pre-split A image of the next GEMM (FactGemmProblem::d_image;
// split_gemm_pre_sm90.cuh, "operand hand-off"): parts and exponents of its blocks, and
// its k-tiles per row tile (ceil(n / TileK)). parts == nullptr: D is written to d.
struct ImageOut {
  void* parts = nullptr;
  int4* exps = nullptr;
  int k_tiles = 0;
};

struct Params {
  int64_t m, n, k;
  const float* a;
  int64_t ld_a, batch_stride_a;
  const float* b;
  int64_t ld_b, batch_stride_b;
  float* d;
  int64_t ld_d, batch_stride_d;
  const float* e;
  int64_t ld_e, batch_stride_e;
  float alpha, beta;
  int tiles_m, tiles_n;  // output tiles per batch entry
  int splits;            // K-splits; 1 = epilogue in the main kernel
  int k_tiles;           // ceil(k / TileK)
  int64_t work;          // work items = batch * splits * tiles (one CTA each unless persistent)
  float* partials;       // splits > 1: [batch][tile][split][Threads-major fragment]
  PreSplitImages images;
  ImageOut image_out;
  FactEpilogueLeaf leaves[FACT_GEMM_MAX_LEAVES];  // the epilogue chain's leaves (Config::Chain)
  // TMA descriptors of A's and B's fp32 tiles, for the kernels that load their fp32 stages
  // by TMA (split_gemm_ws_sm90.cuh: both, split_gemm_hybrid_sm90.cuh: B's; their launch's
  // prepare step fills them; untouched elsewhere). Bit 0 / 1 of
  // stage_maps_batched: A's / B's map has a batch mode (else batch entries share it).
  CUtensorMap stage_map_a, stage_map_b;
  int stage_maps_batched;
};

__device__ __forceinline__ void cp_async_16(uint32_t smem_addr, const void* gmem, bool pred) {
  // Zero-fill when !pred: the source size is 0 and no global byte is read.
  int src_bytes = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr), "l"(gmem),
               "r"(src_bytes));
}
// 4-byte form of cp_async_16 (cp.async's 4-byte copies exist only as .ca): any fp32 address.
__device__ __forceinline__ void cp_async_4(uint32_t smem_addr, const void* gmem, bool pred) {
  int src_bytes = pred ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// cp.async copies of one operand tile (Rows x TileK of the logical (mn, k)
// operand) into an fp32 stage. Per-thread source pointers, row predicates and
// smem offsets are computed once; each k-tile only advances the pointers.
//  KContig: gmem (mn, k) at mn*ld + k; smem [mn][TileK], 16B chunk c of row r at c ^ (r & 7).
//  else:    gmem (mn, k) at k*ld + mn; smem [TileK][rows] (plain row-major).
template <int Rows, int TileK, int Threads, bool KContig>
struct TileLoader {
  static constexpr int Chunks = Rows * TileK / 4;
  static constexpr int PerThread = Chunks / Threads;
  static_assert(Chunks % Threads == 0, "tile does not divide among threads");
  const float* src[PerThread];  // element (mn, k) of k-tile 0 for this chunk
  uint32_t dst[PerThread];      // byte offset in the stage
  int kofs[PerThread];          // k of the chunk within a k-tile
  bool row_ok[PerThread];       // mn inside the problem
  int64_t step;                 // elements between consecutive k-tiles

  __device__ __forceinline__ TileLoader(const float* base, int64_t ld, int64_t mn0, int64_t mn_extent,
                                        int64_t k_first, int tid) {
#pragma unroll
    for (int i = 0; i < PerThread; ++i) {
      int c = tid + i * Threads;
      if constexpr (KContig) {
        int r = c / (TileK / 4), ch = c % (TileK / 4);
        row_ok[i] = mn0 + r < mn_extent;
        kofs[i] = 4 * ch;
        src[i] = base + (row_ok[i] ? (mn0 + r) * ld + k_first + 4 * ch : 0);
        dst[i] = (r * TileK + (ch ^ (r & 7)) * 4) * 4;
      } else {
        int kr = c / (Rows / 4), ch = c % (Rows / 4);
        row_ok[i] = mn0 + 4 * ch < mn_extent;
        kofs[i] = kr;
        src[i] = base + (row_ok[i] ? (k_first + kr) * ld + mn0 + 4 * ch : 0);
        dst[i] = (kr * Rows + ch * 4) * 4;
      }
    }
    step = KContig ? TileK : TileK * ld;
  }

  // Copies k-tile `kt` (relative to k_first; k0 = its first absolute k).
  __device__ __forceinline__ void load(float* stage, int kt, int64_t k0, int64_t k_extent) const {
    uint32_t sbase = static_cast<uint32_t>(__cvta_generic_to_shared(stage));
#pragma unroll
    for (int i = 0; i < PerThread; ++i) {
      bool pred = row_ok[i] && k0 + kofs[i] < k_extent;
      const float* p = pred ? src[i] + kt * step : src[i];
      cp_async_16(sbase + dst[i], p, pred);
    }
  }
};

// The part split (split2, split8): operand_image.cuh.

// max |x| over an fp32 stage of `Floats` elements (zero-filled padding counts
// as 0; NaN is ignored by fmaxf and still propagates through the parts).
template <int Floats, int Threads>
__device__ __forceinline__ float stage_absmax(const float* stage, int tid) {
  static_assert(Floats % (4 * Threads) == 0, "stage does not divide among threads");
  const float4* q = reinterpret_cast<const float4*>(stage);
  float m = 0.f;
#pragma unroll
  for (int i = 0; i < Floats / (4 * Threads); ++i) {
    float4 x = q[tid + i * Threads];
    m = fmaxf(m, fmaxf(fmaxf(fabsf(x.x), fabsf(x.y)), fmaxf(fabsf(x.z), fabsf(x.w))));
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  return m;
}

// Block exponents (tile_exponent, pow2): operand_image.cuh.

// The CTA-wide block exponents of two operands from every thread's warp maxima
// (stage_absmax): warp leaders publish theirs in slots[0, 2 * NW), one CTA barrier, each
// thread reduces them all. Hazard: the slots must not be rewritten before every thread has
// read them (behind the caller's next CTA barrier).
template <int NW>
__device__ __forceinline__ int2 cta_exponents(float ma, float mb, float* slots, int tid) {
  if ((tid & 31) == 0) {
    slots[tid / 32] = ma;
    slots[NW + tid / 32] = mb;
  }
  __syncthreads();
  ma = 0.f;
  mb = 0.f;
#pragma unroll
  for (int w = 0; w < NW; ++w) {
    ma = fmaxf(ma, slots[w]);
    mb = fmaxf(mb, slots[NW + w]);
  }
  return make_int2(tile_exponent(ma), tile_exponent(mb));
}

// Issues the part products p_i * q_j (i + j <= P - 1), smallest terms first, of
// the k-tile whose parts sit at smem slots slot*P .. slot*P + P - 1, into `part`
// (the first product overwrites it). The caller fences, arrives and commits.
template <int P, class Mma, class FragA, class FragB, class Acc>
__device__ __forceinline__ void issue_part_products(Mma& mma, FragA& tCrA, FragB& tCrB, Acc& part, int slot) {
  mma.accumulate_ = GMMA::ScaleOut::Zero;
#pragma unroll
  for (int order = P - 1; order >= 0; --order) {
#pragma unroll
    for (int i = 0; i <= order; ++i) {
      const int j = order - i;
#pragma unroll
      for (int kb = 0; kb < size<2>(tCrA); ++kb) {
        cute::gemm(mma, tCrA(_, _, kb, slot * P + i), tCrB(_, _, kb, slot * P + j), part);
        mma.accumulate_ = GMMA::ScaleOut::One;
      }
    }
  }
}

// Promotion of one k-tile's tensor-core sum into the fp32 accumulator. Scaled
// fp16 parts are in units of 2^(eA + eB - 28) (the exponents are uniform over the
// CTA); bf16 parts are plain.
template <bool F16, class Acc>
__device__ __forceinline__ void promote(Acc& acc, const Acc& part, int eA, int eB) {
  if constexpr (F16) {
    const int e = eA + eB - 28;
    if (e >= -126 && e <= 127) {
      const float f = pow2(e);
#pragma unroll
      for (int i = 0; i < size(acc); ++i) acc(i) = fmaf(part(i), f, acc(i));
    } else {
#pragma unroll
      for (int i = 0; i < size(acc); ++i) acc(i) += ldexpf(part(i), e);
    }
  } else {
#pragma unroll
    for (int i = 0; i < size(acc); ++i) acc(i) += part(i);
  }
}


// Splits 8 consecutive fp32 values of one row into Parts 16-bit parts (split8) and stores
// part p's 16 bytes at element offset offset(p) from `base` (the caller's swizzled smem
// position). Shared by every kernel that splits an operand into shared memory.
template <int Parts, bool Fp16, class Elem, class Offset>
__device__ __forceinline__ void split_store8(const float (&v)[8], float scale, Elem* base, Offset&& offset) {
  uint4 parts[Parts];
  split8<Parts, Fp16>(v, scale, parts);
#pragma unroll
  for (int p = 0; p < Parts; ++p) *reinterpret_cast<uint4*>(base + offset(p)) = parts[p];
}

// Converts one fp32 operand stage into the bf16 part buffers `buf` (K-major,
// swizzled by `layout`, parts at mode-2 index buf_base + p).
template <int Rows, int TileK, int Threads, int Parts, bool KContig, bool Fp16, class Elem, class SmemLayout>
__device__ __forceinline__ void convert_tile(const float* stage, Elem* bf, SmemLayout layout, int buf_base,
                                             float scale, int tid) {
  constexpr int Units = Rows * TileK / 8;  // 8 consecutive k of one row
  static_assert(Units % Threads == 0, "tile does not divide among threads");
#pragma unroll
  for (int i = 0; i < Units / Threads; ++i) {
    int u = tid + i * Threads;
    int r, kc;
    float v[8];
    if constexpr (KContig) {
      r = u / (TileK / 8);
      kc = u % (TileK / 8);
      const float4* row = reinterpret_cast<const float4*>(stage + r * TileK);
      float4 x0 = row[(2 * kc) ^ (r & 7)];
      float4 x1 = row[(2 * kc + 1) ^ (r & 7)];
      v[0] = x0.x; v[1] = x0.y; v[2] = x0.z; v[3] = x0.w;
      v[4] = x1.x; v[5] = x1.y; v[6] = x1.z; v[7] = x1.w;
    } else {
      r = u % Rows;
      kc = u / Rows;
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = stage[(8 * kc + j) * Rows + r];
    }
    // The GMMA swizzle acts on byte addresses; the buffers are 1024-byte aligned, so the
    // element-unit (position-independent) form gives the same placement.
    split_store8<Parts, Fp16>(v, scale, bf, [&](int p) {
      return int(cute::as_position_independent_swizzle_layout(layout)(r, 8 * kc, buf_base + p));
    });
  }
}

// D at (m, n) of one batch entry: Cfg::EpilogueChain's value.
template <class Cfg>
__device__ __forceinline__ void store_out(const Params& p, int64_t bidx, int64_t m, int64_t n, float v) {
  p.d[bidx * p.batch_stride_d + m * p.ld_d + n] = Cfg::EpilogueChain::apply(p, bidx, m, n, v);
}

// Whether the output and the epilogue's inputs can be accessed in (n, n + 1) pairs,
// n even, with 8-byte loads and stores (store_pair). Uniform over the kernel.
template <class Cfg>
__device__ __forceinline__ bool pairs_aligned(const Params& p) {
  return reinterpret_cast<uintptr_t>(p.d) % 8 == 0 && p.ld_d % 2 == 0 && p.batch_stride_d % 2 == 0 &&
         Cfg::EpilogueChain::pairs_aligned(p);
}

// D at (m, n) and (m, n + 1), n even, inside the problem: store_out's arithmetic per
// element, one 8-byte store (and 8-byte epilogue loads). Needs pairs_aligned<Cfg>(p).
template <class Cfg>
__device__ __forceinline__ void store_pair(const Params& p, int64_t bidx, int64_t m, int64_t n, float v0,
                                           float v1) {
  const float2 out = Cfg::EpilogueChain::apply2(p, bidx, m, n, v0, v1);
  // One st.global.v2 (a float2 assignment is split into two 4-byte stores by NVVM). No
  // memory clobber: the epilogue loads of later pairs may be scheduled above this store,
  // which is sound because D never overlaps an epilogue input at another position.
  float* dst = p.d + bidx * p.batch_stride_d + m * p.ld_d + n;
  asm volatile("st.global.v2.f32 [%0], {%1, %2};\n" ::"l"(dst), "f"(out.x), "f"(out.y));
}

// Work decomposition: work item idx = ((batch * splits + split) * tiles + tile) (blockIdx.x,
// or a persistent kernel's loop index).
// Tiles are rasterised in groups of 8 tile-rows so that the CTAs resident at
// one time share A rows and B columns in L2.
struct TileCoord {
  int64_t batch;
  int split, tm, tn;
};
__device__ __forceinline__ TileCoord decode(const Params& p, int64_t idx) {
  int tiles = p.tiles_m * p.tiles_n;
  TileCoord c;
  int t = static_cast<int>(idx % tiles);
  idx /= tiles;
  c.split = static_cast<int>(idx % p.splits);
  c.batch = idx / p.splits;
  constexpr int Group = 8;
  int group_size = Group * p.tiles_n;
  int g = t / group_size;
  int first_m = g * Group;
  int rows_in_group = min(p.tiles_m - first_m, Group);
  int in_group = t % group_size;
  c.tm = first_m + in_group % rows_in_group;
  c.tn = in_group / rows_in_group;
  return c;
}
// The work item of a one-tile-per-CTA grid.
__device__ __forceinline__ TileCoord decode(const Params& p) { return decode(p, blockIdx.x); }

// Writes a CTA's fp32 output tile: through the epilogue when K is not split, else
// as this split's partial (fragment order: element i of thread t at i * threads + t,
// the layout split_gemm_reduce reads).
// Tiles wholly inside the problem with aligned output and inputs go by fragment pairs
// (i, i + 1): the wgmma accumulator layout holds columns (n, n + 1) of one row there,
// stored with one 8-byte access (store_pair; scalar stores write each 32-byte sector in
// two halves); edge tiles and unaligned problems go element by element.
template <class Cfg, class Acc, class Coords>
__device__ __forceinline__ void store_tile(const Params& p, const TileCoord& tc, int64_t m0, int64_t n0,
                                           const Acc& acc, const Coords& tCcC, int threads, int thread) {
  if (p.splits == 1) {
    static_assert(decltype(size(acc))::value % 2 == 0, "accumulator fragments come in column pairs");
    // Whether every fragment pair is (m, n), (m, n + 1) with n even (the differences are
    // compile-time constants: this folds to one value).
    bool column_pairs = true;
#pragma unroll
    for (int i = 0; i < size(acc); i += 2) {
      column_pairs = column_pairs && get<0>(tCcC(i + 1)) == get<0>(tCcC(i)) &&
                     get<1>(tCcC(i + 1)) == get<1>(tCcC(i)) + 1 && (n0 + get<1>(tCcC(i))) % 2 == 0;
    }
    if (column_pairs && pairs_aligned<Cfg>(p) && m0 + Cfg::TileM <= p.m && n0 + Cfg::TileN <= p.n) {
      // A whole tile inside the problem: straight-line code, so that the input loads of
      // all pairs can be in flight together (epilogue_chain::read_input).
#pragma unroll
      for (int i = 0; i < size(acc); i += 2)
        store_pair<Cfg>(p, tc.batch, m0 + get<0>(tCcC(i)), n0 + get<1>(tCcC(i)), acc(i), acc(i + 1));
    } else {
#pragma unroll
      for (int i = 0; i < size(acc); ++i) {
        const int64_t m = m0 + get<0>(tCcC(i)), n = n0 + get<1>(tCcC(i));
        if (m < p.m && n < p.n) store_out<Cfg>(p, tc.batch, m, n, acc(i));
      }
    }
  } else {
    int64_t tile = int64_t(tc.tm) * p.tiles_n + tc.tn;
    float* dst = p.partials + ((tc.batch * p.tiles_m * p.tiles_n + tile) * p.splits + tc.split) *
                                  int64_t(Cfg::TileM * Cfg::TileN);
#pragma unroll
    for (int i = 0; i < size(acc); ++i) dst[i * threads + thread] = acc(i);
  }
}

template <class Cfg>
__global__ void __launch_bounds__(Cfg::Threads, 1) split_gemm_kernel(const Params p) {
  using T = Types<Cfg>;
  using Bf16 = typename T::Bf16;
  constexpr int TM = Cfg::TileM, TN = Cfg::TileN, TK = Cfg::TileK, S = Cfg::Stages;
  constexpr int P = Cfg::Parts, NT = Cfg::Threads;

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  uintptr_t aligned = (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023);
  Bf16* bfA = reinterpret_cast<Bf16*>(aligned);
  Bf16* bfB = bfA + 2 * P * Cfg::BufElemsA;
  float* ring = reinterpret_cast<float*>(bfB + 2 * P * Cfg::BufElemsB);
  auto stageA = [&](int s) { return ring + s * Cfg::StageFloats; };
  auto stageB = [&](int s) { return ring + s * Cfg::StageFloats + TM * TK; };

  const int tid = threadIdx.x;
  const TileCoord tc = decode(p);
  const float* A = p.a + tc.batch * p.batch_stride_a;
  const float* B = p.b + tc.batch * p.batch_stride_b;
  const int64_t m0 = int64_t(tc.tm) * TM, n0 = int64_t(tc.tn) * TN;
  const int kt_begin = static_cast<int>(int64_t(p.k_tiles) * tc.split / p.splits);
  const int kt_end = static_cast<int>(int64_t(p.k_tiles) * (tc.split + 1) / p.splits);
  const int nk = kt_end - kt_begin;

  constexpr bool AK = Cfg::ARowMajor;   // A is K-contiguous
  constexpr bool BK = !Cfg::BRowMajor;  // B is K-contiguous

  const int64_t k_first = int64_t(kt_begin) * TK;
  const TileLoader<TM, TK, NT, AK> loadA(A, p.ld_a, m0, p.m, k_first, tid);
  const TileLoader<TN, TK, NT, BK> loadB(B, p.ld_b, n0, p.n, k_first, tid);
  auto issue_load = [&](int kt_local, int stage) {
    if (kt_local < nk) {
      int64_t k0 = k_first + int64_t(kt_local) * TK;
      loadA.load(stageA(stage), kt_local, k0, p.k);
      loadB.load(stageB(stage), kt_local, k0, p.k);
    }
    cp_async_commit();  // empty groups keep the wait counts uniform
  };

  typename T::SmemLayoutA sLA;
  typename T::SmemLayoutB sLB;
  constexpr bool F16 = Cfg::Format == PartsFp16Scaled;
  // PartsFp16Scaled: tile exponents of the k-tile in the tensor cores (cur) and
  // of the one being converted (next); the same in every thread.
  int eA_cur = 0, eB_cur = 0, eA_next = 0, eB_next = 0;
  float* max_slots = ring + S * Cfg::StageFloats;  // [2][Threads / 32], F16 only
  // F16 only: CTA-wide maxima of a landed stage (call after the barrier that
  // makes the stage visible; contains one more barrier).
  auto stage_exponents = [&](int stage) {
    const int2 e = cta_exponents<NT / 32>(stage_absmax<TM * TK, NT>(stageA(stage), tid),
                                          stage_absmax<TN * TK, NT>(stageB(stage), tid), max_slots, tid);
    eA_next = e.x;
    eB_next = e.y;
  };
  auto convert = [&](int stage, int buf) {
    if constexpr (F16) stage_exponents(stage);
    convert_tile<TM, TK, NT, P, AK, F16>(stageA(stage), bfA, sLA, buf * P, pow2(14 - eA_next), tid);
    convert_tile<TN, TK, NT, P, BK, F16>(stageB(stage), bfB, sLB, buf * P, pow2(14 - eB_next), tid);
  };

  typename T::TiledMma mma;
  auto thr = mma.get_slice(tid);
  Tensor sA = make_tensor(make_smem_ptr(bfA), sLA);
  Tensor sB = make_tensor(make_smem_ptr(bfB), sLB);
  Tensor tCsA = thr.partition_A(sA);  // (MMA, MMA_M, MMA_K, 2P)
  Tensor tCsB = thr.partition_B(sB);  // (MMA, MMA_N, MMA_K, 2P)
  Tensor tCrA = thr.make_fragment_A(tCsA);
  Tensor tCrB = thr.make_fragment_B(tCsB);
  Tensor acc = partition_fragment_C(mma, Shape<Int<TM>, Int<TN>>{});
  Tensor part = partition_fragment_C(mma, Shape<Int<TM>, Int<TN>>{});
  clear(acc);

  // Pipeline invariant at the top of step kt: bf16 buffer kt&1 holds tile kt
  // (written and fenced before the last barrier), the fp32 stage of tile kt+1
  // has landed and is visible to every thread, and tiles up to kt+S-1 are in
  // flight. One CTA barrier per k-tile.
#pragma unroll
  for (int s = 0; s < S; ++s) issue_load(s, s);
  if (nk > 0) {
    cp_async_wait<S - 2>();  // tiles 0 and 1
    __syncthreads();
    convert(0, 0);
    eA_cur = eA_next;
    eB_cur = eB_next;
    cutlass::arch::fence_view_async_shared();
    __syncthreads();
  }

  for (int kt = 0; kt < nk; ++kt) {
    const int buf = kt & 1;
    warpgroup_fence_operand(part);
    warpgroup_arrive();
    issue_part_products<P>(mma, tCrA, tCrB, part, buf);
    warpgroup_commit_batch();

    // While the tensor cores run: refill the stage of tile kt (converted
    // before the last barrier) and convert tile kt+1 into the other buffer
    // (its last reader, wgmma kt-1, completed before the last barrier).
    issue_load(kt + S, kt % S);
    if (kt + 1 < nk) convert((kt + 1) % S, buf ^ 1);

    warpgroup_wait<0>();
    warpgroup_fence_operand(part);
    promote<F16>(acc, part, eA_cur, eB_cur);
    if constexpr (F16) {
      eA_cur = eA_next;
      eB_cur = eB_next;
    }
    cp_async_wait<S - 2>();  // this thread's copies of tile kt+2
    cutlass::arch::fence_view_async_shared();
    __syncthreads();
  }
  cp_async_wait<0>();

  Tensor cC = make_identity_tensor(Shape<Int<TM>, Int<TN>>{});
  Tensor tCcC = thr.partition_C(cC);
  store_tile<Cfg>(p, tc, m0, n0, acc, tCcC, NT, tid);
}

// Sums the split-K partials in split order (deterministic: the same sums, bit for bit,
// whatever the grid) and applies the epilogue. Same thread count and fragment mapping as
// the main kernel; blockIdx.x is the (batch, tile), blockIdx.y one of gridDim.y equal
// slices of the fragment indices (reduce_slices), so that a few output tiles with many
// splits still spread over the SMs: one CTA per tile held large-K (4 tiles x 33 splits)
// at ~0.16 ms on the H100 (ncu), a quarter of its main kernel.
template <class Cfg>
__global__ void __launch_bounds__(Cfg::Threads) split_gemm_reduce(const Params p) {
  using T = Types<Cfg>;
  constexpr int TM = Cfg::TileM, TN = Cfg::TileN, NT = Cfg::Threads;
  const int tid = threadIdx.x;
  const int64_t tiles = int64_t(p.tiles_m) * p.tiles_n;
  const int64_t batch = blockIdx.x / tiles;
  const int64_t tile = blockIdx.x % tiles;
  const int64_t m0 = (tile / p.tiles_n) * TM, n0 = (tile % p.tiles_n) * TN;
  typename T::TiledMma mma;
  auto thr = mma.get_slice(tid);
  Tensor cC = make_identity_tensor(Shape<Int<TM>, Int<TN>>{});
  Tensor tCcC = thr.partition_C(cC);
  const float* src = p.partials + (batch * tiles + tile) * p.splits * int64_t(TM * TN);
  constexpr int Frag = TM * TN / NT;
  const int per_slice = Frag / static_cast<int>(gridDim.y);
  const int i0 = static_cast<int>(blockIdx.y) * per_slice;
  for (int i = i0; i < i0 + per_slice; ++i) {
    float s = 0.f;
    // Unrolled so that eight partials' loads are in flight before their in-order adds.
#pragma unroll 8
    for (int sp = 0; sp < p.splits; ++sp) s += src[sp * int64_t(TM * TN) + i * NT + tid];
    int64_t m = m0 + get<0>(tCcC(i)), n = n0 + get<1>(tCcC(i));
    if (m < p.m && n < p.n) store_out<Cfg>(p, batch, m, n, s);
  }
}

// gridDim.y of split_gemm_reduce for `tiles` (batch x output tiles): the fewest slices
// (a power of two dividing the fragment count) that give at least two CTAs per SM.
template <class Cfg>
unsigned reduce_slices(int64_t tiles, int sms) {
  constexpr int Frag = Cfg::TileM * Cfg::TileN / Cfg::Threads;
  static_assert((Frag & (Frag - 1)) == 0, "fragment count must be a power of two");
  int slices = 1;
  while (slices < Frag && tiles * slices < 2 * int64_t(sms)) slices *= 2;
  return static_cast<unsigned>(slices);
}

inline int sm_count() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) return 0;
  return sms;
}

struct Plan {
  int tiles_m = 0, tiles_n = 0, k_tiles = 0, splits = 1;
  size_t workspace = 0;
  int sms = 0;  // SMs of the current device (0: unknown)
};

// Split-K choice: split only when the output tiles cannot fill the SMs; each
// split keeps at least MinKTilesPerSplit k-tiles so promotion and partial
// traffic stay small against the mainloop.
template <class Cfg>
Plan make_plan(const FactGemmProblem& pr) {
  constexpr int MinKTilesPerSplit = 8;
  Plan pl;
  pl.tiles_m = static_cast<int>((pr.m + Cfg::TileM - 1) / Cfg::TileM);
  pl.tiles_n = static_cast<int>((pr.n + Cfg::TileN - 1) / Cfg::TileN);
  pl.k_tiles = static_cast<int>((pr.k + Cfg::TileK - 1) / Cfg::TileK);
  int64_t tiles = int64_t(pl.tiles_m) * pl.tiles_n * pr.batch;
  const int sms = pl.sms = sm_count();
  if (sms > 0 && tiles > 0 && tiles < sms) {
    int64_t by_sms = sms / tiles;
    int64_t by_k = pl.k_tiles / MinKTilesPerSplit;
    int64_t s = by_sms < by_k ? by_sms : by_k;
    pl.splits = static_cast<int>(s < 1 ? 1 : s);
  }
  if (pl.splits > 1)
    pl.workspace = size_t(tiles) * pl.splits * Cfg::TileM * Cfg::TileN * sizeof(float);
  return pl;
}

// Host side shared by the split kernels (this one and split_gemm_ws_sm90.cuh):
// Cfg's plan (tiles, split-K, workspace), the kernel parameters, the launch of
// `kernel` (one CTA of `threads` threads per tile and split, `smem_bytes` of
// dynamic shared memory) and, with split-K, the deterministic reduction.
// `tag` names the kernel in error messages; `images`: see PreSplitImages; `image_out`: D
// as an operand image (ImageOut; the kernel must implement it). persistent:
// one CTA per SM (at most one per work item) that loops over the work items (p.work),
// for kernels written as such loops; else one CTA per work item.
// prepare(p, why): a last step on the filled parameters before the launch (the TMA
// kernels encode their descriptors there); nonzero refuses the launch with `why`.
struct NoPrepare {
  int operator()(Params&, std::string&) const { return 0; }
};
template <class Cfg, class Prepare = NoPrepare>
int launch(const FactGemmProblem& pr, void* workspace, size_t workspace_bytes, cudaStream_t stream, std::string& why,
           void (*kernel)(Params), int threads, size_t smem_bytes, const char* tag, PreSplitImages images = {},
           bool persistent = false, ImageOut image_out = {}, Prepare prepare = {}) {
  Plan pl = make_plan<Cfg>(pr);
  if (pl.workspace > workspace_bytes || (pl.workspace > 0 && workspace == nullptr)) {
    why = std::string(tag) + ": workspace too small (" + std::to_string(workspace_bytes) + " < " +
          std::to_string(pl.workspace) + " bytes)";
    return 1;
  }
  Params p{};
  p.m = pr.m; p.n = pr.n; p.k = pr.k;
  p.a = static_cast<const float*>(pr.a); p.ld_a = pr.ld_a; p.batch_stride_a = pr.batch_stride_a;
  p.b = static_cast<const float*>(pr.b); p.ld_b = pr.ld_b; p.batch_stride_b = pr.batch_stride_b;
  p.d = static_cast<float*>(pr.d); p.ld_d = pr.ld_d; p.batch_stride_d = pr.batch_stride_d;
  p.e = static_cast<const float*>(pr.e); p.ld_e = pr.ld_e; p.batch_stride_e = pr.batch_stride_e;
  p.alpha = pr.alpha; p.beta = pr.beta;
  p.tiles_m = pl.tiles_m; p.tiles_n = pl.tiles_n; p.splits = pl.splits; p.k_tiles = pl.k_tiles;
  p.partials = static_cast<float*>(workspace);
  p.images = images;
  p.image_out = image_out;
  for (int i = 0; i < FACT_GEMM_MAX_LEAVES; ++i) p.leaves[i] = pr.leaves[i];
  if (int code = prepare(p, why)) return code;

  if (int code = kernel_launch::opt_in_shared_memory(kernel, smem_bytes, why, tag, ": cudaFuncSetAttribute: "))
    return code;
  int64_t tiles = int64_t(pl.tiles_m) * pl.tiles_n * pr.batch;
  p.work = tiles * pl.splits;
  int64_t blocks = p.work;
  if (persistent) {
    if (pl.sms <= 0) {
      why = std::string(tag) + ": cannot read the SM count of the current device";
      return 1;
    }
    blocks = blocks < pl.sms ? blocks : pl.sms;
  }
  if (blocks > 0x7fffffff) {
    why = std::string(tag) + ": grid too large";
    return 1;
  }
  kernel<<<static_cast<unsigned>(blocks), threads, smem_bytes, stream>>>(p);
  if (int code = kernel_launch::launch_status(why, tag, ": main kernel launch: ")) return code;
  if (pl.splits > 1) {
    const dim3 grid(static_cast<unsigned>(tiles), reduce_slices<Cfg>(tiles, pl.sms));
    split_gemm_reduce<Cfg><<<grid, Cfg::Threads, 0, stream>>>(p);
    return kernel_launch::launch_status(why, tag, ": reduce kernel launch: ");
  }
  return 0;
}

}  // namespace detail

template <class Cfg>
struct Operation {
  static int can_implement(const FactGemmProblem& pr, std::string& why) { return check(pr, why, false); }

  // pre_split: whether the calling kernel splits its operands in a pre-pass
  // (split_gemm_pre_sm90.cuh). It may then read A from pr.a_image and write D to
  // pr.d_image: A's (D's) pointer and strides are not checked, the image's pointer is,
  // and a D image needs the whole K in one CTA. Its pre-pass reads fp32 A and B of any
  // alignment (4-byte copies where 16-byte chunks do not fit: chunks16_ok), so their
  // 16-byte rules below do not apply to it.
  static int check(const FactGemmProblem& pr, std::string& why, bool pre_split) {
    auto fail = [&](const std::string& text) {
      why = text;
      return 1;
    };
    const bool a_image = pr.a_image != nullptr, d_image = pr.d_image != nullptr;
    if ((a_image || d_image) && !pre_split)
      return fail("split_gemm: this kernel neither reads nor writes operand images (only the pre kernels do)");
    if (pr.batch < 1 || pr.m < 1 || pr.n < 1 || pr.k < 0)
      return fail("split_gemm: batch, m, n must be >= 1 and k >= 0");
    if ((!a_image && pr.a == nullptr) || pr.b == nullptr || (!d_image && pr.d == nullptr))
      return fail("split_gemm: null A, B or D pointer");
    if (Cfg::Epilogue != FACT_EPILOGUE_NONE && pr.e == nullptr)
      return fail("split_gemm: epilogue needs E but e is null");
    if ((reinterpret_cast<uintptr_t>(pr.a_image) % 256) || (reinterpret_cast<uintptr_t>(pr.d_image) % 256))
      return fail("split_gemm: operand images must be 256-byte aligned");
    if ((!a_image && reinterpret_cast<uintptr_t>(pr.a) % 4) || (reinterpret_cast<uintptr_t>(pr.b) % 4))
      return fail("split_gemm: A and B must be 4-byte aligned (fp32 elements)");
    if (!pre_split) {
      if ((!a_image && reinterpret_cast<uintptr_t>(pr.a) % 16) || (reinterpret_cast<uintptr_t>(pr.b) % 16))
        return fail("split_gemm: A and B must be 16-byte aligned (cp.async of 4 floats)");
      if ((!a_image && (pr.ld_a % 4 || pr.batch_stride_a % 4)) || pr.ld_b % 4 || pr.batch_stride_b % 4)
        return fail("split_gemm: ld and batch strides of A and B must be multiples of 4 elements");
      int64_t a_contig = a_image ? 0 : Cfg::ARowMajor ? pr.k : pr.m;
      int64_t b_contig = Cfg::BRowMajor ? pr.n : pr.k;
      if (a_contig % 4 || b_contig % 4)
        return fail(std::string("split_gemm: ") + (Cfg::ARowMajor ? "k" : "m") + " (A) and " +
                    (Cfg::BRowMajor ? "n" : "k") + " (B) must be multiples of 4 (16-byte operand chunks)");
    }
    if ((!a_image && pr.ld_a < (Cfg::ARowMajor ? pr.k : pr.m)) || pr.ld_b < (Cfg::BRowMajor ? pr.n : pr.k) ||
        (!d_image && pr.ld_d < pr.n) || (Cfg::Epilogue == FACT_EPILOGUE_C && pr.ld_e < pr.n))
      return fail("split_gemm: a leading dimension is smaller than the row it spans");
    int64_t tiles = ((pr.m + Cfg::TileM - 1) / Cfg::TileM) * ((pr.n + Cfg::TileN - 1) / Cfg::TileN) * pr.batch;
    if (tiles > int64_t(1) << 30 || (pr.k + Cfg::TileK - 1) / Cfg::TileK > (int64_t(1) << 30))
      return fail("split_gemm: problem too large for the 32-bit tile grid");
    if (d_image && detail::make_plan<Cfg>(pr).splits != 1)
      return fail("split_gemm: writing D as an operand image needs the whole K in one CTA, and this problem "
                  "splits K (too few output tiles for the SMs)");
    if constexpr (!std::is_void_v<typename Cfg::Chain>) {
      if (pr.num_leaves < Cfg::Chain::kLeaves)
        return fail("split_gemm: this variant's epilogue chain reads " + std::to_string(Cfg::Chain::kLeaves) +
                    " leaf tensor(s), the problem passes " + std::to_string(pr.num_leaves));
      return Cfg::Chain::can_implement(pr, why);
    }
    return 0;
  }

  static size_t workspace_size(const FactGemmProblem& pr) { return detail::make_plan<Cfg>(pr).workspace; }

  static int run(const FactGemmProblem& pr, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                 std::string& why) {
    return detail::launch<Cfg>(pr, workspace, workspace_bytes, stream, why, detail::split_gemm_kernel<Cfg>,
                               Cfg::Threads, Cfg::SmemBytes, "split_gemm");
  }
};

}  // namespace fact::split_gemm
