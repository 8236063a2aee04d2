// FACT fp32-faithful fused attention for Hopper (sm90a): the split GEMMs' f16x3 arithmetic
// (split_gemm_sm90.cuh, PartsFp16Scaled) inside a FlashAttention-style online softmax.
//
//   O[b,h,i,:] = softmax_j(scale * Q[b,h,i,:].K[b,h,j,:] (+ causal mask)) . V[b,h,j,:]
//
// fp32 q, k, v in, fp32 o out. Every operand is split where it is loaded into two fp16
// parts of x * 2^s (split2: the one definition of a part), with one power-of-two s per
// block: per warpgroup for Q (64 query rows x head dim), per key tile for K and for V
// (KeysPerTile keys x head dim), a fixed 2^14 for the probabilities P (in [0, 1]). Each
// product is hi*hi + hi*lo + lo*hi on wgmma (~22 operand bits, fp32 class); the
// tensor-core partial sums are promoted into fp32 registers every SChunk head-dim columns
// (S = Q.K^T) and every PVChunk keys (O += P.V), scaled back by the exact power of two.
// Softmax statistics (row max, row sum, the rescaling) are fp32, as in eager.
//
// CTA = 128 query rows of one (batch, head): two warpgroups of 64 rows, 256 threads, all
// of them both converting and consuming:
//   q (fp32, global) --registers--> fp16 parts of Q in smem, once
//   k, v tile j+1 (fp32) --cp.async, zero-fill--> fp32 stage --split--> fp16 parts
//       (K K-major, V MN-major, both GMMA 64-byte swizzled; double buffered)
//   per key tile j: S = Q.K^T (wgmma SS, chunks promoted), mask, online softmax, P split
//       in registers, O += P.V (wgmma RS: P from registers, V from smem)
// The conversion of tile j+1 runs between the S chunks of tile j. Causal: a warpgroup
// skips the tiles past its diagonal; only tiles crossing it and a partial last tile are
// masked. CTAs are ordered (batch, head)-major, the longest query tile first. O is
// written at any strides (merged heads [B, T, H*dv] or [B, H, T, dv] alike).
//
// Hazards:
// - Inf/NaN operands give NaN (x - fp16(x) is NaN for inf), as in the split GEMMs.
// - Requirements (can_implement): head_dim, head_dim_v <= HeadDim and multiples of 4;
//   q, k, v 16-byte aligned with seq/head/batch strides multiples of 4 elements. Sizes and
//   strides are int64; only batch x heads x query tiles must fit the grid (int32).
// - A row whose keys are all masked cannot occur (causal is top-left: key 0 is always
//   visible), so the row sum is positive.
// - Registers: 243-255 per thread with at most 60 bytes of spill (nvcc 13.0); anything
//   that adds live values across the wgmmas spills. All threads pass every CTA barrier:
//   a warpgroup past its diagonal still converts and waits, it only skips the MMAs.
// - The kernel is issue-bound (ncu, block shape: ~2000 instructions per warp per key tile
//   against ~2300 tensor-core cycles shared by 8 warps on 4 schedulers), so instruction
//   count is its time: shared-space pointers (not generic LD/ST), a bank-conflict-free
//   stage, ex2.approx and masking only the tiles that need it took 0.87 -> 0.74 ms
//   (docs/notes/attention_sm90.md, "Instruction diet").
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include <cute/tensor.hpp>
#include <cute/arch/mma_sm90.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cutlass/arch/barrier.h>

#include "attention_problem.cuh"
#include "fact/kernel_abi.h"
#include "kernel_launch.cuh"
#include "split_gemm_sm90.cuh"

namespace fact::attention_sm90 {

// HeadDim: compiled head dimension (operands narrower are zero-padded); SChunk: head-dim
// columns per S promotion; PVChunk: keys per O promotion.
template <int HeadDim_, int KeysPerTile_, int SChunk_, int PVChunk_>
struct Config {
  static constexpr int HeadDim = HeadDim_;
  static constexpr int KeysPerTile = KeysPerTile_;
  static constexpr int SChunk = SChunk_;
  static constexpr int PVChunk = PVChunk_;
  static constexpr int WarpGroups = 2;
  static constexpr int QueryRows = 64 * WarpGroups;
  static constexpr int Threads = 128 * WarpGroups;
  static constexpr int Parts = 2;

  static_assert(HeadDim % 32 == 0 && HeadDim >= 32 && HeadDim <= 128, "HeadDim must be 32, 64, 96 or 128");
  // Keys per tile: 64, or 32 where a 64-key tile's parts and stage do not fit shared memory
  // (head dim 128); the S accumulators take KeysPerTile / 2 registers per thread.
  static_assert(KeysPerTile == 64 || KeysPerTile == 32, "KeysPerTile must be 32 or 64");
  static_assert(HeadDim % SChunk == 0 && SChunk % 16 == 0, "SChunk must divide HeadDim in k-blocks of 16");
  static_assert(KeysPerTile % PVChunk == 0 && PVChunk % 16 == 0, "PVChunk must divide KeysPerTile in k-blocks of 16");

  // Shared memory: Q parts (per warpgroup), K and V parts (2 buffers), one fp32 stage of
  // K and V, the block-maximum slots.
  static constexpr size_t QBytes = size_t(WarpGroups) * 64 * HeadDim * Parts * 2;
  static constexpr size_t KVPartBytes = size_t(2) * KeysPerTile * HeadDim * Parts * 2;  // K or V, both buffers
  static constexpr int StageFloats = KeysPerTile * HeadDim;                              // K or V
  static constexpr size_t StageBytes = size_t(2) * StageFloats * 4;
  static constexpr int Slots = 4 * (Threads / 32);  // K, V, Q maxima per warp (+ spare)
  static constexpr size_t SmemBytes = QBytes + 2 * KVPartBytes + StageBytes + Slots * 4 + 1024;
  static_assert(SmemBytes <= 227 * 1024, "shared memory over the sm90 limit");
};

namespace detail {

using namespace cute;
using split_gemm::detail::cp_async_16;
using split_gemm::detail::cp_async_commit;
using split_gemm::detail::cp_async_wait;
using split_gemm::detail::cta_exponents;
using split_gemm::detail::pow2;
using split_gemm::detail::promote;
using split_gemm::detail::split2;
using split_gemm::detail::split_store8;
using split_gemm::detail::stage_absmax;
using split_gemm::detail::tile_exponent;
using split_gemm::detail::warp_max;

template <class Cfg>
struct Types {
  using Half = cute::half_t;
  static constexpr int D = Cfg::HeadDim, KT = Cfg::KeysPerTile, P = Cfg::Parts;
  using MmaS = decltype(SM90::GMMA::ss_op_selector<Half, Half, float, Shape<_64, Int<KT>, Int<Cfg::SChunk>>,
                                                   GMMA::Major::K, GMMA::Major::K>());
  using MmaO = decltype(SM90::GMMA::rs_op_selector<Half, Half, float, Shape<_64, Int<D>, Int<Cfg::PVChunk>>,
                                                   GMMA::Major::K, GMMA::Major::MN>());
  using TiledMmaS = decltype(make_tiled_mma(MmaS{}));
  using TiledMmaO = decltype(make_tiled_mma(MmaO{}));
  // Q parts of one warpgroup: (64 rows, head dim, part), K-major.
  using SmemLayoutQ = decltype(tile_to_shape(GMMA::Layout_K_SW64_Atom<Half>{},
                                             make_shape(_64{}, Int<D>{}, Int<P>{})));
  // K parts: (keys, head dim, buffer * P + part), K-major (head dim contiguous).
  using SmemLayoutK = decltype(tile_to_shape(GMMA::Layout_K_SW64_Atom<Half>{},
                                             make_shape(Int<KT>{}, Int<D>{}, Int<2 * P>{})));
  // V parts: (head dim, keys, buffer * P + part), MN-major (head dim contiguous), the B
  // operand of O = P.V with N = head dim and K = keys.
  using SmemLayoutV = decltype(tile_to_shape(GMMA::Layout_MN_SW64_Atom<Half>{},
                                             make_shape(Int<D>{}, Int<KT>{}, Int<2 * P>{})));
};

struct Params {
  FactAttentionProblem p;
  int q_tiles;    // ceil(seq_q / QueryRows)
  int key_tiles;  // ceil(seq_k / KeysPerTile)
  float scale_log2;  // scale * log2(e): the softmax runs on exp2
};

// The part products hi*hi + hi*lo + lo*hi of k-blocks [kb0, kb0 + KBlocks), smallest terms
// first, into `part` (the first product overwrites it). `a(kb, part)` and `b(kb, part)` give
// the operand slices. The caller fences, arrives and commits.
template <int KBlocks, class Mma, class A, class B, class Acc>
__device__ __forceinline__ void issue_products(Mma& mma, A&& a, B&& b, Acc& part, int kb0) {
  constexpr int kTerms[3][2] = {{1, 0}, {0, 1}, {0, 0}};  // (A part, B part)
  mma.accumulate_ = GMMA::ScaleOut::Zero;
#pragma unroll
  for (int t = 0; t < 3; ++t) {
#pragma unroll
    for (int kb = 0; kb < KBlocks; ++kb) {
      cute::gemm(mma, a(kb0 + kb, kTerms[t][0]), b(kb0 + kb, kTerms[t][1]), part);
      mma.accumulate_ = GMMA::ScaleOut::One;
    }
  }
}

// 2^x by the SFU alone (ex2.approx.ftz: relative error ~2^-22, results below 2^-126
// flushed to 0). exp2f adds a denormal range fixup (three more instructions per element).
// Here the results are probabilities, split into two fp16 parts of P * 2^14 (~22 bits;
// nothing below 2^-24 survives the split), and the softmax's rescaling factors.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <class Cfg>
__global__ void __launch_bounds__(Cfg::Threads, 1) attention_kernel(const Params prm) {
  using T = Types<Cfg>;
  using Half = typename T::Half;
  constexpr int D = Cfg::HeadDim, KT = Cfg::KeysPerTile, P = Cfg::Parts, NT = Cfg::Threads;
  constexpr int NW = NT / 32;
  const FactAttentionProblem& p = prm.p;

  // 1024-byte alignment by an offset from smem_raw (not through an integer address: the
  // pointers must stay in the shared state space, or every stage read and part store
  // compiles to a generic LD/ST).
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t misalign = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) & 1023u;
  Half* sq = reinterpret_cast<Half*>(smem_raw + ((1024u - misalign) & 1023u));
  Half* sk = sq + Cfg::QBytes / 2;
  Half* sv = sk + Cfg::KVPartBytes / 2;
  float* stage_k = reinterpret_cast<float*>(sv + Cfg::KVPartBytes / 2);
  float* stage_v = stage_k + Cfg::StageFloats;
  float* slots = stage_v + Cfg::StageFloats;  // [K maxima NW][V maxima NW][Q maxima NW]

  const int tid = threadIdx.x;
  // The warpgroup index through a shuffle: ptxas then knows it (and `active` below) is
  // warp-uniform, and does not serialise the wgmmas issued under `if (active)`.
  const int wg = __shfl_sync(0xffffffffu, tid / 128, 0), wt = tid % 128;

  // (batch, head)-major, the longest (last) query tile of each first.
  const int64_t bh = blockIdx.x / prm.q_tiles;
  const int qt = prm.q_tiles - 1 - static_cast<int>(blockIdx.x % prm.q_tiles);
  const int64_t b = bh / p.heads, h = bh % p.heads;
  const int64_t q0 = int64_t(qt) * Cfg::QueryRows;
  const int64_t row0 = q0 + 64 * wg;  // this warpgroup's first query row
  const float* qg = static_cast<const float*>(p.q) + b * p.q_stride_batch + h * p.q_stride_head;
  const float* kg = static_cast<const float*>(p.k) + b * p.k_stride_batch + h * p.k_stride_head;
  const float* vg = static_cast<const float*>(p.v) + b * p.v_stride_batch + h * p.v_stride_head;

  // Key tiles this CTA needs, and the last one each warpgroup uses (-1: none).
  int tiles = prm.key_tiles;
  int last = tiles - 1;
  if (p.causal) {
    const int64_t cta_last_row = min(q0 + Cfg::QueryRows, p.seq_q) - 1;
    tiles = min<int64_t>(tiles, cta_last_row / KT + 1);
    const int64_t wg_last_row = min(row0 + 64, p.seq_q) - 1;
    last = wg_last_row < row0 ? -1 : static_cast<int>(min<int64_t>(prm.key_tiles - 1, wg_last_row / KT));
  } else if (row0 >= p.seq_q) {
    last = -1;
  }

  // ---- K/V tile loads (fp32 stage, zero-filled outside the problem) and conversion ----
  // Stage element (key r, head-dim d), d a multiple of 4: row-major with the 16-byte chunk
  // index XOR-ed with bit 7 of its byte offset, so the eight 16-byte reads of a quarter
  // warp (units of 32 bytes, 256 bytes apart in total) fall on distinct banks.
  const auto stage_offset = [](int r, int d) {
    const int f = r * D + d;
    return f ^ (((f >> 5) & 1) << 2);
  };
  auto load_tile = [&](int j) {
    if (j < tiles) {
      constexpr int Chunks = KT * D / 4;  // 16-byte chunks of K (and of V)
      static_assert(Chunks % NT == 0, "K/V tile does not divide among threads");
      const int64_t key0 = int64_t(j) * KT;
      const uint32_t sbk = static_cast<uint32_t>(__cvta_generic_to_shared(stage_k));
      const uint32_t sbv = static_cast<uint32_t>(__cvta_generic_to_shared(stage_v));
#pragma unroll
      for (int i = 0; i < Chunks / NT; ++i) {
        const int c = tid + i * NT;
        const int r = c / (D / 4), d = 4 * (c % (D / 4));
        const bool key_ok = key0 + r < p.seq_k;
        const bool k_ok = key_ok && d < p.head_dim, v_ok = key_ok && d < p.head_dim_v;
        const int64_t key = key_ok ? key0 + r : 0;
        cp_async_16(sbk + stage_offset(r, d) * 4, kg + (k_ok ? key * p.k_stride_seq + d : 0), k_ok);
        cp_async_16(sbv + stage_offset(r, d) * 4, vg + (v_ok ? key * p.v_stride_seq + d : 0), v_ok);
      }
    }
    cp_async_commit();
  };
  // Block exponents of the landed stage (contains a CTA barrier).
  int ek_next = 0, ev_next = 0;
  auto stage_exponents = [&]() {
    const int2 e = cta_exponents<NW>(stage_absmax<Cfg::StageFloats, NT>(stage_k, tid),
                                     stage_absmax<Cfg::StageFloats, NT>(stage_v, tid), slots, tid);
    ek_next = e.x;
    ev_next = e.y;
  };
  typename T::SmemLayoutK sLK;
  typename T::SmemLayoutV sLV;
  const auto k_offset = cute::as_position_independent_swizzle_layout(sLK);
  const auto v_offset = cute::as_position_independent_swizzle_layout(sLV);
  // Converts the stage into parts buffer `buf`: K (key, d) K-major, V (d, key) MN-major;
  // each unit is 8 consecutive head-dim values of one key (16 bytes per part either way).
  auto convert = [&](const float* stage, bool is_v, int buf) {
    constexpr int Units = KT * D / 8;
    static_assert(Units % NT == 0, "K/V tile does not divide among threads");
    const float scale = pow2(14 - (is_v ? ev_next : ek_next));
#pragma unroll
    for (int i = 0; i < Units / NT; ++i) {
      const int u = tid + i * NT;
      const int r = u / (D / 8), d = 8 * (u % (D / 8));
      const float4 x0 = *reinterpret_cast<const float4*>(stage + stage_offset(r, d));
      const float4 x1 = *reinterpret_cast<const float4*>(stage + stage_offset(r, d + 4));
      const float v[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
      if (is_v)
        split_store8<P, true>(v, scale, sv, [&](int part) { return v_offset(d, r, buf * P + part); });
      else
        split_store8<P, true>(v, scale, sk, [&](int part) { return k_offset(r, d, buf * P + part); });
    }
  };

  // ---- Q: fp32 from global into this warpgroup's parts, once ----
  load_tile(0);
  int eq = 0;
  {
    constexpr int Units = 64 * D / 8;
    static_assert(Units % 128 == 0, "Q tile does not divide among a warpgroup");
    float qv[Units / 128][8];
    float m = 0.f;
#pragma unroll
    for (int i = 0; i < Units / 128; ++i) {
      const int u = wt + i * 128;
      const int r = u / (D / 8), d = 8 * (u % (D / 8));
      const bool row_ok = row0 + r < p.seq_q;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
        if (row_ok && d + 4 * half < p.head_dim)
          x = *reinterpret_cast<const float4*>(qg + (row0 + r) * p.q_stride_seq + d + 4 * half);
        qv[i][4 * half + 0] = x.x;
        qv[i][4 * half + 1] = x.y;
        qv[i][4 * half + 2] = x.z;
        qv[i][4 * half + 3] = x.w;
        m = fmaxf(m, fmaxf(fmaxf(fabsf(x.x), fabsf(x.y)), fmaxf(fabsf(x.z), fabsf(x.w))));
      }
    }
    m = warp_max(m);
    if ((tid & 31) == 0) slots[2 * NW + tid / 32] = m;
    __syncthreads();
    float mq = 0.f;
#pragma unroll
    for (int w = 0; w < 4; ++w) mq = fmaxf(mq, slots[2 * NW + 4 * wg + w]);
    eq = tile_exponent(mq);
    typename T::SmemLayoutQ sLQ;
    const auto q_offset = cute::as_position_independent_swizzle_layout(sLQ);
    Half* sq_wg = sq + wg * (64 * D * P);
#pragma unroll
    for (int i = 0; i < Units / 128; ++i) {
      const int u = wt + i * 128;
      const int r = u / (D / 8), d = 8 * (u % (D / 8));
      split_store8<P, true>(qv[i], pow2(14 - eq), sq_wg, [&](int part) { return q_offset(r, d, part); });
    }
  }

  // ---- Prologue: tile 0 into parts buffer 0, tile 1 into the stage ----
  int ek = 0, ev = 0;
  cp_async_wait<0>();
  __syncthreads();
  stage_exponents();
  convert(stage_k, false, 0);
  convert(stage_v, true, 0);
  ek = ek_next;
  ev = ev_next;
  __syncthreads();  // the stage is free
  load_tile(1);
  cp_async_wait<0>();
  cutlass::arch::fence_view_async_shared();
  __syncthreads();

  // ---- MMA views ----
  typename T::TiledMmaS mma_s;
  typename T::TiledMmaO mma_o;
  auto thr_s = mma_s.get_slice(wt);
  auto thr_o = mma_o.get_slice(wt);
  Tensor sQ = make_tensor(make_smem_ptr(sq + wg * (64 * D * P)), typename T::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(sk), sLK);
  Tensor sV = make_tensor(make_smem_ptr(sv), sLV);
  Tensor tSrQ = thr_s.make_fragment_A(thr_s.partition_A(sQ));  // (MMA, 1, D/16, P)
  Tensor tSrK = thr_s.make_fragment_B(thr_s.partition_B(sK));  // (MMA, 1, D/16, 2P)
  Tensor tOrV = thr_o.make_fragment_B(thr_o.partition_B(sV));  // (MMA, 1, KT/16, 2P)
  Tensor acc_s = partition_fragment_C(mma_s, Shape<_64, Int<KT>>{});
  Tensor part_s = partition_fragment_C(mma_s, Shape<_64, Int<KT>>{});
  Tensor acc_o = partition_fragment_C(mma_o, Shape<_64, Int<D>>{});
  Tensor part_o = partition_fragment_C(mma_o, Shape<_64, Int<D>>{});
  // P as the A operand of O = P.V, hi and lo parts: ((2,2,2), 1, KT/16), element i + 8 kb
  // is element i + 8 kb of the S accumulator (the 64xN accumulator and the 64x16 register
  // A layouts of wgmma coincide per 16 columns).
  Tensor p_hi = make_tensor<Half>(partition_shape_A(mma_o, Shape<_64, Int<KT>>{}));
  Tensor p_lo = make_tensor<Half>(partition_shape_A(mma_o, Shape<_64, Int<KT>>{}));
  static_assert(decltype(size(p_hi))::value == decltype(size(acc_s))::value, "P and S fragments differ");
  Tensor tScS = thr_s.partition_C(make_identity_tensor(Shape<_64, Int<KT>>{}));
  Tensor tOcO = thr_o.partition_C(make_identity_tensor(Shape<_64, Int<D>>{}));
  clear(acc_o);

  // Row statistics of this thread's two rows (accumulator element i is in row slot
  // (i >> 1) & 1): running max of the log2-domain logits, partial row sum.
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.f, 0.f};
  auto slot_of = [](int i) { return (i >> 1) & 1; };

  constexpr int SChunks = D / Cfg::SChunk, SBlocks = Cfg::SChunk / 16;
  auto issue_s = [&](int buf, int c) {
    warpgroup_fence_operand(part_s);
    warpgroup_arrive();
    issue_products<SBlocks>(
        mma_s, [&](int kb, int part) { return tSrQ(_, _, kb, part); },
        [&](int kb, int part) { return tSrK(_, _, kb, buf * P + part); }, part_s, c * SBlocks);
    warpgroup_commit_batch();
  };
  auto finish_s = [&]() {
    warpgroup_wait<0>();
    warpgroup_fence_operand(part_s);
    promote<true>(acc_s, part_s, eq, ek);
  };

  for (int j = 0; j < tiles; ++j) {
    const int buf = j & 1;
    const bool active = j <= last;
    const bool has_next = j + 1 < tiles;

    // S = Q.K^T in chunks; tile j+1's conversion runs while they are in the tensor cores.
    if (active) {
      clear(acc_s);
      issue_s(buf, 0);
    }
    if (has_next) stage_exponents();
#pragma unroll
    for (int c = 0; c < SChunks; ++c) {
      if (active) {
        finish_s();
        if (c + 1 < SChunks) issue_s(buf, c + 1);
      }
      if (has_next && c == 0) convert(stage_k, false, buf ^ 1);
      if (has_next && c == SChunks - 1) convert(stage_v, true, buf ^ 1);
    }
    __syncthreads();  // every thread's conversion is done: the stage is free
    load_tile(j + 2);

    if (active) {
      // Mask, online softmax in the log2 domain, P = exp2(t - max) split into fp16 parts.
      const int64_t key0 = int64_t(j) * KT;
      const bool mask_keys = key0 + KT > p.seq_k;
      const bool mask_causal = p.causal && key0 + KT - 1 > row0;
      float tile_max[2] = {row_max[0], row_max[1]};
      if (mask_keys || mask_causal) {  // (uniform) tiles crossing the diagonal or the last key
        // Column c of the tile is key key0 + c: visible if c < keys_left and, causal,
        // c - row <= diagonal (row within this warpgroup's 64).
        const int keys_left = static_cast<int>(min<int64_t>(p.seq_k - key0, KT));
        const int diagonal = mask_causal ? static_cast<int>(row0 - key0) : KT;
#pragma unroll
        for (int i = 0; i < size(acc_s); ++i) {
          const int c = get<1>(tScS(i));
          const float t = c < keys_left && c - get<0>(tScS(i)) <= diagonal ? acc_s(i) * prm.scale_log2 : -INFINITY;
          acc_s(i) = t;
          tile_max[slot_of(i)] = fmaxf(tile_max[slot_of(i)], t);
        }
      } else {
#pragma unroll
        for (int i = 0; i < size(acc_s); ++i) {
          const float t = acc_s(i) * prm.scale_log2;
          acc_s(i) = t;
          tile_max[slot_of(i)] = fmaxf(tile_max[slot_of(i)], t);
        }
      }
      float correction[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
        // The first tile always holds a visible key of every row, so tile_max is finite.
        correction[r] = fast_exp2(row_max[r] - tile_max[r]);  // 0 on the first tile
        row_max[r] = tile_max[r];
        row_sum[r] *= correction[r];
      }
#pragma unroll
      for (int i = 0; i < size(acc_o); ++i) acc_o(i) *= correction[slot_of(i)];
      Tensor hi32 = recast<uint32_t>(p_hi);
      Tensor lo32 = recast<uint32_t>(p_lo);
#pragma unroll
      for (int i = 0; i < size(acc_s); i += 2) {
        const float e0 = fast_exp2(acc_s(i) - row_max[slot_of(i)]);
        const float e1 = fast_exp2(acc_s(i + 1) - row_max[slot_of(i + 1)]);
        row_sum[slot_of(i)] += e0 + e1;
        uint32_t w[P];
        split2<P, true>(e0, e1, 16384.f, w);  // P in [0, 1] -> [0, 2^14]
        hi32(i / 2) = w[0];
        lo32(i / 2) = w[1];
      }

      // O += P.V, promoted every PVChunk keys: P scaled by 2^14, V by 2^(14 - ev).
      constexpr int PVBlocks = Cfg::PVChunk / 16;
#pragma unroll
      for (int c = 0; c < KT / Cfg::PVChunk; ++c) {
        warpgroup_fence_operand(p_hi);
        warpgroup_fence_operand(p_lo);
        warpgroup_fence_operand(part_o);
        warpgroup_arrive();
        issue_products<PVBlocks>(
            mma_o, [&](int kb, int part) { return part == 0 ? p_hi(_, _, kb) : p_lo(_, _, kb); },
            [&](int kb, int part) { return tOrV(_, _, kb, buf * P + part); }, part_o, c * PVBlocks);
        warpgroup_commit_batch();
        warpgroup_wait<0>();
        warpgroup_fence_operand(part_o);
        promote<true>(acc_o, part_o, ev, 0);
      }
    }

    ek = ek_next;
    ev = ev_next;
    cp_async_wait<0>();
    cutlass::arch::fence_view_async_shared();
    __syncthreads();
  }

  // ---- Epilogue: O = acc / row sum ----
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float s = row_sum[r];
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    inv[r] = 1.f / s;
  }
  float* og = static_cast<float*>(p.o) + b * p.o_stride_batch + h * p.o_stride_head;
  const bool pairs = reinterpret_cast<uintptr_t>(og) % 8 == 0 && p.o_stride_seq % 2 == 0;
#pragma unroll
  for (int i = 0; i < size(acc_o); i += 2) {
    const int64_t row = row0 + get<0>(tOcO(i));
    const int col = get<1>(tOcO(i));  // even; element i + 1 is column col + 1
    if (row >= p.seq_q) continue;
    float* dst = og + row * p.o_stride_seq + col;
    const float o0 = acc_o(i) * inv[slot_of(i)], o1 = acc_o(i + 1) * inv[slot_of(i + 1)];
    if (pairs && col + 1 < p.head_dim_v) {
      *reinterpret_cast<float2*>(dst) = make_float2(o0, o1);
    } else {
      if (col < p.head_dim_v) dst[0] = o0;
      if (col + 1 < p.head_dim_v) dst[1] = o1;
    }
  }
}

}  // namespace detail

template <class Cfg>
struct Operation {
  static int can_implement(const FactAttentionProblem& p, std::string& why) {
    using fact::attention::fits_int32;
    if (int code = fact::attention::check_problem(p, Cfg::HeadDim, "head dim", why)) return code;
    if (p.head_dim % 4 != 0 || p.head_dim_v % 4 != 0) {
      why = "head_dim " + std::to_string(p.head_dim) + " / head_dim_v " + std::to_string(p.head_dim_v) +
            " are not multiples of 4 (16-byte loads)";
      return 3;
    }
    const int64_t q_tiles = (p.seq_q + Cfg::QueryRows - 1) / Cfg::QueryRows;
    if (!fits_int32(p.batch * p.heads * q_tiles) || !fits_int32((p.seq_k + Cfg::KeysPerTile - 1) / Cfg::KeysPerTile)) {
      why = "batch x heads x query tiles exceeds the grid (int32)";
      return 2;
    }
    struct Operand {
      const char* name;
      const void* ptr;
      int64_t batch, head, seq;
    };
    const Operand operands[] = {{"q", p.q, p.q_stride_batch, p.q_stride_head, p.q_stride_seq},
                                {"k", p.k, p.k_stride_batch, p.k_stride_head, p.k_stride_seq},
                                {"v", p.v, p.v_stride_batch, p.v_stride_head, p.v_stride_seq}};
    for (const auto& o : operands) {
      if (reinterpret_cast<uintptr_t>(o.ptr) % 16 != 0 || o.seq % 4 != 0 || (p.heads > 1 && o.head % 4 != 0) ||
          (p.batch > 1 && o.batch % 4 != 0)) {
        why = std::string(o.name) + " pointer or strides are not aligned to 4 elements (16-byte loads)";
        return 3;
      }
    }
    return 0;
  }

  static size_t workspace_size(const FactAttentionProblem&) { return 0; }

  static int run(const FactAttentionProblem& p, void*, size_t, cudaStream_t stream, std::string& why) {
    detail::Params prm;
    prm.p = p;
    prm.q_tiles = static_cast<int>((p.seq_q + Cfg::QueryRows - 1) / Cfg::QueryRows);
    prm.key_tiles = static_cast<int>((p.seq_k + Cfg::KeysPerTile - 1) / Cfg::KeysPerTile);
    prm.scale_log2 = static_cast<float>(double(p.scale) * 1.4426950408889634);
    constexpr auto kernel_fn = detail::attention_kernel<Cfg>;
    constexpr int smem_bytes = static_cast<int>(Cfg::SmemBytes);
    if (int code = kernel_launch::opt_in_shared_memory(kernel_fn, smem_bytes, why, "attention needs ", smem_bytes,
                                                       " bytes of shared memory: "))
      return code;
    const int64_t blocks = p.batch * p.heads * prm.q_tiles;
    kernel_fn<<<static_cast<unsigned>(blocks), Cfg::Threads, smem_bytes, stream>>>(prm);
    return kernel_launch::launch_status(why, "attention launch: ");
  }
};

}  // namespace fact::attention_sm90
