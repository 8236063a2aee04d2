// FACT fp32-faithful GEMM for Hopper (sm90a), warp-specialized (v3). Same arithmetic as
// templates/split_gemm_sm90.cuh (fp32 operands split into 16-bit parts, Terms products
// per multiply-add on wgmma, fp32 promotion after every 32-wide k-tile, optional
// per-k-tile power-of-two operand scaling for PartsFp16Scaled) and the same
// Operation<Config> interface, but the conversion no longer runs on the MMA threads:
//
//   CTA = 4 warpgroups (512 threads), one 128 x TileN output tile, 1 CTA per SM.
//   WG0, WG1 (producers, setmaxnreg down to ProducerRegs), two independent groups: WG g
//       converts the k-tiles kt = g mod 2 alone, with its own named barrier (1 + g) and
//       its own ring stages, so that one group's barrier and LDS waits overlap the other
//       group's arithmetic. The fp32 A and B tiles arrive by TMA (zero-filled outside the
//       problem) in a private LoadStages-deep fp32 ring (mbarriers loaded[ls]; stage ls
//       belongs to group ls mod 2). Per k-tile the group's threads wait loaded[ls]; read
//       their 8-wide units of A; PartsFp16Scaled: A's tile max over the group's warps
//       (REDUX + the named barrier); wait empty[s]; split the units into 16-bit parts and
//       write them K-major, GMMA 64B-swizzled, into part stage s of a Stages-deep ring; the
//       same for B (its barrier also tells that the group has read stage ls, which the
//       group's thread 0 then refills by TMA with k-tile kt + LoadStages); write the
//       stage's two exponents; arrive on full[s]. A then B, not both at once: both would
//       hold 64 data registers per thread and spill at the producers' 96.
//       (Session 11, H100: cp.async by every producer thread cost ~75 of its ~400
//       instructions per k-tile; the two warpgroups converting each k-tile together, in
//       lockstep, were 7-10% slower than two groups; docs/notes/split_gemm.md.)
//   WG2, WG3 (consumers, 64 rows each, setmaxnreg up to ConsumerRegs): wait full[s],
//       Terms wgmmas into `part` (first issue zeroes it), wait for them, arrive on
//       empty[s], promote part into acc with 2^-(sA + sB); epilogue (alpha, beta *
//       bias/C) or the split-K partial tile.
// The first version (one producer warpgroup, 384 threads) was latency-bound in its
// producer (docs/notes/split_gemm.md, "v3 outcome"); two producer warps per scheduler
// hide each other's LDS -> math -> STS chains.
//
// Why an fp32 smem ring and not global -> registers: the tile exponent needs the whole
// 128 x 32 operand tile before any of it can be converted, so a register path must hold
// the tile being converted while the next ones are in flight: 64-128 data registers per
// producer thread (consumers hold acc + part = 128 registers) and a
// k-loop unrolled by the register ring depth. TMA keeps LoadStages tiles in flight with
// no registers and one thread, at the price of 64 KB more shared-memory traffic per
// k-tile (its write and the unit reads): ~168 KB per k-tile in all, ~1,300 cycles at 128
// bytes per cycle, the floor of this design (docs/notes/split_gemm.md, "Session 11").
//
// The two consumer warpgroups each wait for their own wgmma (one `part` accumulator) and
// promote while the other warpgroup's wgmma runs, so the tensor cores see back-to-back
// work from alternating warpgroups as long as their k-tiles drift apart. A second `part`
// would not fit here (acc + 2 parts = 192 registers, ConsumerRegs 160); the pre kernel,
// whose producer needs few registers, has it (consume, PartAccumulators).
//
// Shared with split_gemm_sm90.cuh (included, unchanged): Params, tile decode and
// rasterisation, the fp32 stage layout, split8, tile_exponent, pow2,
// store_out, the split-K plan, workspace layout and reduce kernel (the consumer fragment
// mapping is the base kernel's 256-thread TiledMma, so its partial tiles are what
// split_gemm_reduce expects), and can_implement's requirements.
#pragma once

#include "cute/arch/copy_sm90_desc.hpp"
#include "cute/arch/copy_sm90_tma.hpp"
#include "cutlass/arch/reg_reconfig.h"
#include "cutlass/cuda_host_adapter.hpp"
#include "split_gemm_sm90.cuh"

namespace fact::split_gemm::ws {

// What the Configs of the warp-specialized split kernels (this header's,
// split_gemm_pre_sm90.cuh's and split_gemm_hybrid_sm90.cuh's) share: the base kernel's
// configuration with the same tile, terms, layouts, epilogue and part format, whose
// TiledMma (2 warpgroups = the consumers), plan, partial layout and reduce kernel are
// reused (its Stages argument, 3, only satisfies its own asserts), and the consumer side
// of the part ring.
template <int TileM_, int TileN_, int TileK_, int Terms_, bool ARowMajor_, bool BRowMajor_,
          int Epilogue_, int Stages_, int Format_, class Chain_>
struct ConsumerConfig {
  using Base =
      split_gemm::Config<TileM_, TileN_, TileK_, Terms_, ARowMajor_, BRowMajor_, Epilogue_, 3, Format_, Chain_>;
  using EpilogueChain = typename Base::EpilogueChain;  // what store_tile evaluates (split_gemm::Config)
  static constexpr int TileM = TileM_;
  static constexpr int TileN = TileN_;
  static constexpr int TileK = TileK_;
  static constexpr int Terms = Terms_;
  static constexpr bool ARowMajor = ARowMajor_;
  static constexpr bool BRowMajor = BRowMajor_;
  static constexpr int Epilogue = Epilogue_;
  static constexpr int Stages = Stages_;  // 16-bit part ring depth (producer -> consumers)
  static constexpr int Format = Format_;
  static constexpr int Parts = Base::Parts;
  static constexpr int ConsumerThreads = Base::Threads;  // 256
  static constexpr size_t SlotBytesA = size_t(TileM) * TileK * 2;  // one 16-bit part of an A tile
  static constexpr size_t SlotBytesB = size_t(TileN) * TileK * 2;
  static constexpr size_t PartStageBytes = Parts * (SlotBytesA + SlotBytesB);

  static_assert(TileM == 128, "the warp-specialized kernels have two consumer warpgroups: TileM = 128");
  static_assert(Stages >= 2 && Stages <= 8, "Stages (part ring) must be 2..8");
};

// The converting producer side of the kernels whose producers split fp32 tiles in
// shared memory (this header's and split_gemm_hybrid_sm90.cuh's): two producer
// warpgroups (one measured 7–23% slower: docs/notes/split_gemm.md, "v3 outcome"). 512
// threads cap registers at 128 at launch, below the consumers' two 64-register
// accumulators plus addressing: setmaxnreg moves registers from the producers
// (ProducerRegs) to the consumers (ConsumerRegs).
struct ConvertingProducers {
  static constexpr int ProducerThreads = 256;
  static constexpr int ProducerWarps = ProducerThreads / 32;
  // Each producer warpgroup converts every other k-tile on its own (split_gemm_ws's and
  // split_gemm_hybrid's TMA-fed producers; the header comment).
  static constexpr int ProducerGroups = 2;
  static constexpr int GroupThreads = ProducerThreads / ProducerGroups;
  static constexpr int ProducerRegs = 96;
  static constexpr int ConsumerRegs = 160;
  static constexpr int PartAccumulators = 1;  // acc + 2 parts would not fit in 160 (ws::detail::consume)
  static_assert(2 * ProducerRegs + 2 * ConsumerRegs <= 512,
                "setmaxnreg split over the register file (64K registers / 128 threads per warpgroup)");
};

template <int TileM_, int TileN_, int TileK_, int Terms_, bool ARowMajor_, bool BRowMajor_,
          int Epilogue_, int Stages_, int Format_ = PartsBf16, class Chain_ = void>
struct Config
    : ConsumerConfig<TileM_, TileN_, TileK_, Terms_, ARowMajor_, BRowMajor_, Epilogue_, Stages_, Format_, Chain_>,
      ConvertingProducers {
  using C = ConsumerConfig<TileM_, TileN_, TileK_, Terms_, ARowMajor_, BRowMajor_, Epilogue_, Stages_, Format_, Chain_>;
  static constexpr int Threads = ProducerThreads + C::ConsumerThreads;

  static constexpr int StageFloats = (C::TileM + C::TileN) * C::TileK;
  static constexpr size_t Fp32StageBytes = size_t(StageFloats) * 4;
  // fp32 ring depth: 4 (each group's next tile in flight behind the one it converts)
  // where it fits, else 2; a multiple of ProducerGroups (stage ls belongs to group ls % 2).
  static constexpr int LoadStages =
      C::Stages * C::PartStageBytes + 4 * Fp32StageBytes + 2048 <= 227 * 1024 ? 4 : 2;
  static_assert(LoadStages % ProducerGroups == 0, "each ring stage belongs to one producer group");
  // Part ring, fp32 ring, per-warp maxima [group][k-tile parity][2 operands][group warps],
  // exponents int2[Stages], mbarriers full[Stages] + empty[Stages] + loaded[LoadStages],
  // + alignment slack.
  static constexpr size_t SmemBytes = C::Stages * C::PartStageBytes + LoadStages * Fp32StageBytes +
                                      4 * ProducerWarps * 4 + C::Stages * 8 + 2 * C::Stages * 8 + LoadStages * 8 +
                                      1024;
  static_assert(C::TileK * 4 == 128,
                "the TMA stage loads of a K-contiguous operand use the 128-byte swizzle: TileK = 32 fp32");
  static_assert(SmemBytes <= 227 * 1024, "shared memory over the sm90 limit: fewer Stages");
};

namespace detail {

using namespace cute;
using split_gemm::detail::Params;

// Reads this thread's 8-wide units of one operand stage of the fp32 ring (the layout
// StageLoader and the TMA stage loads write) into registers: unit u = tid + i * Threads
// is 8 consecutive k of row r. Same unit mapping as split_gemm::detail::convert_tile, so
// the part stores below keep its bank-conflict-free pattern.
template <int Rows, int TileK, int Threads, bool KContig>
struct Units {
  static constexpr int N = Rows * TileK / 8 / Threads;
  static_assert(Rows * TileK / 8 % Threads == 0, "tile does not divide among producer threads");
  __device__ __forceinline__ static void coords(int u, int& r, int& kc) {
    if constexpr (KContig) {
      r = u / (TileK / 8);
      kc = u % (TileK / 8);
    } else {
      r = u % Rows;
      kc = u / Rows;
    }
  }
  __device__ __forceinline__ static void read(const float* stage, float (&v)[N][8], int tid) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      int r, kc;
      coords(tid + i * Threads, r, kc);
      if constexpr (KContig) {
        const float4* row = reinterpret_cast<const float4*>(stage + r * TileK);
        float4 x0 = row[(2 * kc) ^ (r & 7)];
        float4 x1 = row[(2 * kc + 1) ^ (r & 7)];
        v[i][0] = x0.x; v[i][1] = x0.y; v[i][2] = x0.z; v[i][3] = x0.w;
        v[i][4] = x1.x; v[i][5] = x1.y; v[i][6] = x1.z; v[i][7] = x1.w;
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) v[i][j] = stage[(8 * kc + j) * Rows + r];
      }
    }
  }
  // max |x| over this thread's units as a tree (depth log2(8N), not a serial chain of
  // 8N dependent FMNMX). fmaxf ignores a NaN operand, so the result is NaN only if every
  // input is; the final fmaxf(0, .) makes it 0 then. Never NaN (a NaN input still
  // propagates through its parts).
  __device__ __forceinline__ static float absmax(const float (&v)[N][8]) {
    static_assert(N == 1 || N == 2 || N == 4 || N == 8, "unit count must be a power of two <= 8");
    float m[N];
#pragma unroll
    for (int i = 0; i < N; ++i)
      m[i] = fmaxf(fmaxf(fmaxf(fabsf(v[i][0]), fabsf(v[i][1])), fmaxf(fabsf(v[i][2]), fabsf(v[i][3]))),
                   fmaxf(fmaxf(fabsf(v[i][4]), fabsf(v[i][5])), fmaxf(fabsf(v[i][6]), fabsf(v[i][7]))));
    if constexpr (N >= 8)
#pragma unroll
      for (int i = 0; i < 4; ++i) m[i] = fmaxf(m[i], m[i + 4]);
    if constexpr (N >= 4)
#pragma unroll
      for (int i = 0; i < 2; ++i) m[i] = fmaxf(m[i], m[i + 2]);
    if constexpr (N >= 2) m[0] = fmaxf(m[0], m[1]);
    return fmaxf(0.f, m[0]);
  }
  // Splits the units into Parts 16-bit vectors and stores part p at mode-2 index
  // slot + p of `layout` (K-major, GMMA-swizzled; buffers 1024-byte aligned, so the
  // position-independent form of the swizzle gives the hardware's placement). Slot q of
  // the layout starts Rows * TileK elements after slot q - 1, a multiple of the swizzle's
  // 512-byte period, so an element's offset is its slot-0 offset + q * Rows * TileK (the
  // slot-0 offsets depend only on tid and stay in registers across k-tiles).
  template <int Parts, bool Fp16, class Elem, class SmemLayout>
  __device__ __forceinline__ static void store(const float (&v)[N][8], Elem* buf, SmemLayout layout, int slot,
                                               float scale, int tid) {
    static_assert(Rows * TileK * sizeof(Elem) % 512 == 0, "slot stride must be a multiple of the swizzle period");
#pragma unroll
    for (int i = 0; i < N; ++i) {
      int r, kc;
      coords(tid + i * Threads, r, kc);
      const int off0 = cute::as_position_independent_swizzle_layout(layout)(r, 8 * kc, 0);
      split_gemm::detail::split_store8<Parts, Fp16>(v[i], scale, buf,
                                                    [&](int p) { return off0 + (slot + p) * (Rows * TileK); });
    }
  }
};

// cp.async copies of one operand tile (Rows x TileK of the logical (mn, k) operand) into
// an fp32 stage, in split_gemm::detail::TileLoader's smem layout (KContig: [mn][TileK] with
// 16-byte chunk c of row r at c ^ (r & 7); else [TileK][Rows]). Differs from it in cost
// only: a chunk whose row lies outside the problem reads from row mn0 (inside, as the
// tile exists) with source size 0, so for a k-tile that lies wholly inside the problem
// every address is valid and the copy needs no k compare and no select (the common
// path: ~6 SASS instructions per copy instead of ~10).
// Chunks16: one 16-byte copy per chunk of 4 floats, which needs 16-byte aligned chunks
// (base, ld and batch stride multiples of 4 floats and the contiguous extent too: a
// chunk straddling the extent would read the next row's elements). Otherwise four
// 4-byte copies per chunk, each zero-filled on its own element's bounds: any fp32
// operand (irregular shapes), at four times the copy instructions.
template <int Rows, int TileK, int Threads, bool KContig, bool Chunks16 = true>
struct StageLoader {
  static constexpr int PerThread = Rows * TileK / 4 / Threads;
  static constexpr int Copies = Chunks16 ? 1 : 4;  // cp.async per chunk
  static_assert(Rows * TileK / 4 % Threads == 0 && PerThread * Copies <= 32, "tile does not divide among threads");
  const float* src[PerThread];  // the chunk's first element in k-tile 0 (row-clamped)
  uint32_t dst[PerThread];      // byte offset in the stage
  uint32_t row_ok = 0;          // bit i * Copies + j: copy j of chunk i lies in the rows (KContig) / columns
  int64_t step;                 // elements between consecutive k-tiles
  int tid;

  __device__ __forceinline__ static void chunk(int i, int thread, int& r, int& ch) {
    const int c = thread + i * Threads;
    r = KContig ? c / (TileK / 4) : c / (Rows / 4);  // KContig: row; else: k within the tile
    ch = KContig ? c % (TileK / 4) : c % (Rows / 4);
  }

  __device__ __forceinline__ StageLoader(const float* base, int64_t ld, int64_t mn0, int64_t mn_extent,
                                         int64_t k_first, int tid_)
      : tid(tid_) {
#pragma unroll
    for (int i = 0; i < PerThread; ++i) {
      int r, ch;
      chunk(i, tid, r, ch);
      const int64_t mn = KContig ? mn0 + r : mn0 + 4 * ch;
      const bool ok = mn < mn_extent;
#pragma unroll
      for (int j = 0; j < Copies; ++j) {
        // KContig: the copies of a chunk share its row; else copy j is column mn + j.
        const bool copy_ok = KContig || Chunks16 ? ok : mn + j < mn_extent;
        row_ok |= uint32_t(copy_ok) << (i * Copies + j);
      }
      if constexpr (KContig) {
        src[i] = base + (ok ? mn : mn0) * ld + k_first + 4 * ch;
        dst[i] = (r * TileK + (ch ^ (r & 7)) * 4) * 4;
      } else {
        src[i] = base + (k_first + r) * ld + (ok ? mn : mn0);
        dst[i] = (r * Rows + ch * 4) * 4;
      }
    }
    step = KContig ? TileK : TileK * ld;
  }

  // Copies k-tile `kt` (relative to k_first; k0 = its first absolute k).
  __device__ __forceinline__ void load(float* stage, int kt, int64_t k0, int64_t k_extent) const {
    const uint32_t sbase = static_cast<uint32_t>(__cvta_generic_to_shared(stage));
    const int64_t off = kt * step;
    const auto copy = [&](int i, int j, const float* from, bool pred) {
      if constexpr (Chunks16) split_gemm::detail::cp_async_16(sbase + dst[i], from, pred);
      else split_gemm::detail::cp_async_4(sbase + dst[i] + 4 * j, from, pred);
    };
    if (k0 + TileK <= k_extent) {
#pragma unroll
      for (int i = 0; i < PerThread; ++i)
#pragma unroll
        for (int j = 0; j < Copies; ++j) copy(i, j, src[i] + off + j, (row_ok >> (i * Copies + j)) & 1);
    } else {  // the last k-tile of a K that is not a multiple of TileK: each copy's own k
#pragma unroll
      for (int i = 0; i < PerThread; ++i) {
        int r, ch;
        chunk(i, tid, r, ch);
#pragma unroll
        for (int j = 0; j < Copies; ++j) {
          const bool pred = ((row_ok >> (i * Copies + j)) & 1) && k0 + (KContig ? 4 * ch + j : r) < k_extent;
          copy(i, j, pred ? src[i] + off + j : src[i], pred);
        }
      }
    }
  }
};

using split_gemm::detail::warp_max;  // operand_image.cuh

// Named barrier `id` (default 1; 0 is __syncthreads) over NP producer threads.
template <int NP>
__device__ __forceinline__ void producer_sync(int id = 1) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "n"(NP) : "memory");
}

// Tile exponents of Ops operand tiles (PartsFp16Scaled) from every producer warp's max
// |x| (warp_max of its threads' Units::absmax): the warp maxima go to per-warp `slots`
// (operand o in [o * W, (o + 1) * W), W = NP / 32), one named barrier for all Ops
// operands, then every producer thread reduces the slots in the same order, so the
// exponents are uniform over the producers. No thread may still be reading `slots` from
// their previous use (a barrier in between, or alternating sets: convert_operand). NP
// threads (tid < NP) meet at named barrier `barrier`.
template <int NP, int Ops>
__device__ __forceinline__ void tile_exponents(const float (&m)[Ops], float* slots, int tid, int (&e)[Ops],
                                               int barrier = 1) {
  constexpr int W = NP / 32;
  if (tid % 32 == 0) {
#pragma unroll
    for (int o = 0; o < Ops; ++o) slots[o * W + tid / 32] = m[o];
  }
  producer_sync<NP>(barrier);  // every producer warp's maxima of the Ops operand tiles are in the slots
  float t[Ops];
#pragma unroll
  for (int o = 0; o < Ops; ++o) t[o] = slots[o * W];
#pragma unroll
  for (int w = 1; w < W; ++w)
#pragma unroll
    for (int o = 0; o < Ops; ++o) t[o] = fmaxf(t[o], slots[o * W + w]);
#pragma unroll
  for (int o = 0; o < Ops; ++o) e[o] = split_gemm::detail::tile_exponent(t[o]);
}

// Converts one landed operand stage of the fp32 ring into its parts (the NP threads of
// one producer group, tid < NP) and returns its tile exponent (0 for PartsBf16).
// PartsFp16Scaled: read the units, the tile max over the group's warps (tile_exponents,
// named barrier `barrier`; slots: this operand's, not the previous k-tile's of this group,
// which a thread may still read after the barrier), last_read(), empty_wait(), split and
// store. PartsBf16: read, empty_wait(), split and store, then (Sync) the barrier and
// last_read(). last_read is the caller's hook for "every thread of the group has read the
// stage" (its refill by TMA): it must follow a barrier that every thread reaches only after
// its loaded values were consumed (the max, or the part stores), else an LDS still in
// flight could return the refill's data (seen once on the H100: bf16x6 hybrid, 4096^3).
// Pass a no-op where a later operand still reads the stage.
template <int NP, class U, int Parts, bool Fp16, bool Sync, class Elem, class Layout, class EmptyWait, class LastRead>
__device__ __forceinline__ int convert_operand(const float* stage, Elem* buf, Layout layout, int slot, float* slots,
                                               int tid, int barrier, EmptyWait empty_wait, LastRead last_read) {
  float v[U::N][8];
  U::read(stage, v, tid);
  if constexpr (Fp16) {
    int e[1];
    const float m[1] = {warp_max(U::absmax(v))};
    tile_exponents<NP>(m, slots, tid, e, barrier);
    last_read();
    empty_wait();
    U::template store<Parts, true>(v, buf, layout, slot, split_gemm::detail::pow2(14 - e[0]), tid);
    return e[0];
  } else {
    empty_wait();
    U::template store<Parts, false>(v, buf, layout, slot, 1.f, tid);
    if constexpr (Sync) producer_sync<NP>(barrier);
    last_read();
    return 0;
  }
}

// One work item's k-loop of one group of TMA-fed converting producers (group g of
// Cfg::ProducerGroups, its threads gtid 0..GroupThreads-1). Ring positions run on across a
// persistent CTA's work items: k-tile kt of this item is ring position r = it0 + kt (fp32
// stage r % LoadStages, part stage r % Stages); the group converts the positions r = g
// mod G. Stage ls of the fp32 ring belongs to group ls % G (LoadStages % G == 0), so it is
// waited on only by its group, in order, one phase at a time: a group refills its stage
// only after reading it, so loaded[ls] never runs two phases ahead. The caller loads the
// first LoadStages positions; `refill(ls)` (the group's thread 0) loads the group's next
// position (r + LoadStages) into stage ls, which the group has just read.
// `convert(ls, s, parity, empty_wait, stage_read)` turns fp32 stage ls into part stage s,
// calling empty_wait() before its first write to part stage s and stage_read() once every
// thread of the group has read stage ls; parity alternates over the group's positions (its
// two sets of max slots). `publish(kt, s)` arrives on full[s] after this thread's fence.
template <class Cfg, int LoadStages, class Refill, class Convert, class Publish>
__device__ __forceinline__ void produce_tma(int it0, int nk, uint64_t* empty, uint64_t* loaded, int group, int gtid,
                                            Refill refill, Convert convert, Publish publish) {
  constexpr int S = Cfg::Stages, LS = LoadStages, G = Cfg::ProducerGroups;
  static_assert(LS % G == 0, "each ring stage belongs to one producer group");
  for (int kt = (group - it0 % G + G) % G; kt < nk; kt += G) {
    const int r = it0 + kt;
    const int ls = r % LS;
    cutlass::arch::ClusterTransactionBarrier::wait(&loaded[ls], (r / LS) & 1);  // position r's fp32 tiles landed
    const int s = r % S;
    // Part stage s is free once both consumer warpgroups' wgmma on position r - S
    // completed (phase parity starts at 1: a fresh barrier passes it).
    const auto empty_wait = [&] { cutlass::arch::ClusterBarrier::wait(&empty[s], ((r / S) & 1) ^ 1); };
    const auto stage_read = [&] {
      if (gtid == 0) refill(ls);
    };
    convert(ls, s, (r / G) & 1, empty_wait, stage_read);
    // The part stores are generic-proxy writes that wgmma reads through the async proxy:
    // each writer fences its own stores before its release-arrive on full[s].
    cutlass::arch::fence_view_async_shared();
    publish(kt, s);
  }
}

// TMA descriptor of one fp32 operand for the stage loads of split_gemm_kernel_ws: boxes
// of Rows x TileK elements of the logical (mn, k) operand (plus batch), landing in
// StageLoader's layout: KContig: [mn][TileK] rows of 128 bytes, 16-byte chunk c of row r
// at c ^ (r & 7) (the TMA 128-byte swizzle); else [TileK][Rows] (no swizzle). Outside the
// problem the box is zero-filled. `batched`: whether the map has a batch mode (batch > 1
// and a nonzero batch stride; else every batch entry reads the same matrix).
template <int Rows, int TileK, bool KContig>
int encode_stage_map(CUtensorMap* map, const float* base, int64_t ld, int64_t batch_stride, int64_t mn_extent,
                     int64_t k_extent, int64_t batch, bool& batched, const char* operand, std::string& why) {
  batched = batch > 1 && batch_stride != 0;
  const cuuint32_t rank = batched ? 3 : 2;
  const cuuint64_t dims[3] = {cuuint64_t(KContig ? k_extent : mn_extent), cuuint64_t(KContig ? mn_extent : k_extent),
                              cuuint64_t(batch)};
  const cuuint64_t strides[2] = {cuuint64_t(ld) * 4, cuuint64_t(batch_stride) * 4};  // bytes, modes 1 and 2
  const cuuint32_t box[3] = {cuuint32_t(KContig ? TileK : Rows), cuuint32_t(KContig ? Rows : TileK), 1};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  const CUresult r = CUTLASS_CUDA_DRIVER_WRAPPER_CALL(cuTensorMapEncodeTiled)(
      map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, rank, const_cast<float*>(base), dims, strides, box, element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, KContig ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    why = std::string("split_gemm_ws: cuTensorMapEncodeTiled failed for ") + operand + " (CUresult " +
          std::to_string(int(r)) + "; extents " + std::to_string(dims[0]) + " x " + std::to_string(dims[1]) +
          ", row stride " + std::to_string(strides[0]) + " B, batch stride " + std::to_string(strides[1]) + " B)";
    return 1;
  }
  return 0;
}

// The launch's prepare step of the TMA-fed kernels: encodes B's stage map and, with
// LoadsA, A's into the parameters (split_gemm::detail::launch).
template <class Cfg, bool LoadsA>
struct StageMaps {
  int64_t batch;
  int operator()(Params& p, std::string& why) const {
    bool batched_a = false, batched_b = false;
    if constexpr (LoadsA) {
      if (int code = encode_stage_map<Cfg::TileM, Cfg::TileK, Cfg::ARowMajor>(&p.stage_map_a, p.a, p.ld_a,
                                                                                p.batch_stride_a, p.m, p.k, batch,
                                                                                batched_a, "A", why))
        return code;
    }
    if (int code = encode_stage_map<Cfg::TileN, Cfg::TileK, !Cfg::BRowMajor>(&p.stage_map_b, p.b, p.ld_b,
                                                                              p.batch_stride_b, p.n, p.k, batch,
                                                                              batched_b, "B", why))
      return code;
    p.stage_maps_batched = (batched_a ? 1 : 0) | (batched_b ? 2 : 0);
    return 0;
  }
};

// Thread 0's TMA copy of one operand's fp32 tile (mn0, k0, batch) into `stage`, completing
// on `bar` (encode_stage_map's coordinate order; 32-bit coordinates: can_implement).
template <bool KContig>
__device__ __forceinline__ void load_stage_tile(const CUtensorMap* map, bool batched, uint64_t* bar, float* stage,
                                                int mn0, int k0, int batch) {
  const uint64_t hint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_NORMAL);
  const int c0 = KContig ? k0 : mn0, c1 = KContig ? mn0 : k0;
  if (batched)
    cute::SM90_TMA_LOAD_3D::copy(map, bar, hint, stage, c0, c1, batch);
  else
    cute::SM90_TMA_LOAD_2D::copy(map, bar, hint, stage, c0, c1);
}

// The 16-bit part ring of a warp-specialized split kernel (this one,
// split_gemm_pre_sm90.cuh and split_gemm_hybrid_sm90.cuh): (rows, k, stage * Parts + part), K-major, 64B swizzle, the
// wgmma operands. Slot q starts Rows * TileK elements after slot q - 1.
template <class Cfg>
struct PartRing {
  using Elem = typename split_gemm::detail::Types<typename Cfg::Base>::Bf16;
  using LayoutA = decltype(tile_to_shape(GMMA::Layout_K_SW64_Atom<Elem>{},
                                         make_shape(Int<Cfg::TileM>{}, Int<Cfg::TileK>{},
                                                    Int<Cfg::Stages * Cfg::Parts>{})));
  using LayoutB = decltype(tile_to_shape(GMMA::Layout_K_SW64_Atom<Elem>{},
                                         make_shape(Int<Cfg::TileN>{}, Int<Cfg::TileK>{},
                                                    Int<Cfg::Stages * Cfg::Parts>{})));
};

// The consumers' default epilogue: D through split_gemm::detail::store_tile.
template <class Cfg>
struct TileStore {
  template <class Acc, class Coords>
  __device__ __forceinline__ void operator()(const Params& p, const split_gemm::detail::TileCoord& tc, int64_t m0,
                                             int64_t n0, Acc& acc, const Coords& tCcC, int ctid) const {
    split_gemm::detail::store_tile<Cfg>(p, tc, m0, n0, acc, tCcC, Cfg::ConsumerThreads, ctid);
  }
};

// The consumer warpgroups of a warp-specialized split kernel (ctid 0..255, the base
// kernel's MMA thread index): for each of the nk k-tiles, wait full[s], issue the part
// products of stage s into a `part` accumulator, wait for them, release the stage on
// empty[s] (every consumer thread arrives), promote with the stage's exponents
// `exponents(s)` (read before the release: the producer rewrites them after it); then the
// tile store, or the split-K partial in the base kernel's layout (split_gemm_reduce<Base>
// sums it).
// Cfg::PartAccumulators = 1: issue, wait, promote; the tensor cores idle while both
// warpgroups promote unless their k-tiles drift apart. = 2 (acc + 2 parts: 192 registers
// at TileN 128, so only where setmaxnreg gives the consumers ~232): k-tile kt + 1 is
// issued into the other accumulator before kt is waited for (wgmma wait<1>), so the
// tensor cores run kt + 1 while kt is promoted. Promotion order (kt ascending) and
// arithmetic are the same either way: the output is bit-identical.
// it0: ring passes before this tile's first k-tile (a persistent CTA's earlier tiles):
// k-tile kt uses stage (it0 + kt) % Stages in phase ((it0 + kt) / Stages) & 1.
// store: the epilogue, called by every consumer thread with the finished accumulator
// (TileStore: D; the pre kernel's operand-image epilogue otherwise).
template <class Cfg, class Elem, class Exponents, class Store = TileStore<Cfg>>
__device__ __forceinline__ void consume(const Params& p, const split_gemm::detail::TileCoord& tc, int64_t m0,
                                        int64_t n0, int nk, Elem* partA, Elem* partB, uint64_t* full,
                                        uint64_t* empty, Exponents exponents, int ctid, int it0 = 0,
                                        Store store = {}) {
  using T = split_gemm::detail::Types<typename Cfg::Base>;
  using Barrier = cutlass::arch::ClusterBarrier;
  constexpr int TM = Cfg::TileM, TN = Cfg::TileN, S = Cfg::Stages, P = Cfg::Parts;
  constexpr bool F16 = Cfg::Format == PartsFp16Scaled;
  static_assert(Cfg::PartAccumulators == 1 || Cfg::PartAccumulators == 2, "one or two part accumulators");
  typename T::TiledMma mma;
  auto thr = mma.get_slice(ctid);
  Tensor sA = make_tensor(make_smem_ptr(partA), typename PartRing<Cfg>::LayoutA{});
  Tensor sB = make_tensor(make_smem_ptr(partB), typename PartRing<Cfg>::LayoutB{});
  Tensor tCsA = thr.partition_A(sA);  // (MMA, MMA_M, MMA_K, S*P)
  Tensor tCsB = thr.partition_B(sB);  // (MMA, MMA_N, MMA_K, S*P)
  Tensor tCrA = thr.make_fragment_A(tCsA);
  Tensor tCrB = thr.make_fragment_B(tCsB);
  Tensor acc = partition_fragment_C(mma, Shape<Int<TM>, Int<TN>>{});
  Tensor part = partition_fragment_C(mma, Shape<Int<TM>, Int<TN>>{});
  clear(acc);

  // Waits for k-tile kt's stage, reads its exponents and issues its products into `into`
  // (one committed wgmma batch).
  auto issue = [&](int kt, auto& into) {
    const int s = (it0 + kt) % S;
    Barrier::wait(&full[s], ((it0 + kt) / S) & 1);  // parts and exponents of tile kt are in stage s
    const int2 e2 = exponents(s);
    warpgroup_fence_operand(into);
    warpgroup_arrive();
    split_gemm::detail::issue_part_products<P>(mma, tCrA, tCrB, into, s);
    warpgroup_commit_batch();
    return e2;
  };
  // After k-tile kt's batch completed: release its stage, promote `from`.
  auto retire = [&](int kt, auto& from, int2 e2) {
    warpgroup_fence_operand(from);
    Barrier::arrive(&empty[(it0 + kt) % S]);
    split_gemm::detail::promote<F16>(acc, from, e2.x, e2.y);
  };

  if constexpr (Cfg::PartAccumulators == 1) {
    for (int kt = 0; kt < nk; ++kt) {
      const int2 e2 = issue(kt, part);
      warpgroup_wait<0>();
      retire(kt, part, e2);
    }
  } else {
    // Even k-tiles in `part`, odd ones in `part2`; at most two batches in flight. Straight
    // paths with one state per point (loop head: exactly k-tile kt in flight, in `part`),
    // so that ptxas sees which accumulator is busy and does not serialize the wgmmas.
    Tensor part2 = partition_fragment_C(mma, Shape<Int<TM>, Int<TN>>{});
    if (nk > 0) {
      int kt = 0;
      int2 e_even = issue(0, part);
      for (; kt + 2 < nk; kt += 2) {
        const int2 e_odd = issue(kt + 1, part2);
        warpgroup_wait<1>();
        retire(kt, part, e_even);
        e_even = issue(kt + 2, part);
        warpgroup_wait<1>();
        retire(kt + 1, part2, e_odd);
      }
      if (kt + 1 < nk) {  // two k-tiles left
        const int2 e_odd = issue(kt + 1, part2);
        warpgroup_wait<1>();
        retire(kt, part, e_even);
        warpgroup_wait<0>();
        retire(kt + 1, part2, e_odd);
      } else {
        warpgroup_wait<0>();
        retire(kt, part, e_even);
      }
    }
  }

  Tensor cC = make_identity_tensor(Shape<Int<TM>, Int<TN>>{});
  Tensor tCcC = thr.partition_C(cC);
  store(p, tc, m0, n0, acc, tCcC, ctid);
}

// Work item idx's output tile and its k-tiles [kt_begin, kt_begin + nk) in its split.
struct TileWork {
  split_gemm::detail::TileCoord tc;
  int64_t m0, n0;
  int kt_begin, nk;
};
template <class Cfg>
__device__ __forceinline__ TileWork tile_work(const Params& p, int64_t idx) {
  TileWork w;
  w.tc = split_gemm::detail::decode(p, idx);
  w.m0 = int64_t(w.tc.tm) * Cfg::TileM;
  w.n0 = int64_t(w.tc.tn) * Cfg::TileN;
  w.kt_begin = static_cast<int>(int64_t(p.k_tiles) * w.tc.split / p.splits);
  w.nk = static_cast<int>(int64_t(p.k_tiles) * (w.tc.split + 1) / p.splits) - w.kt_begin;
  return w;
}

// Thread 0 initialises the part ring's mbarriers (full[s]: full_arrivals, empty[s]: one
// arrival per consumer thread) before the CTA barrier, the kernel's only one.
template <class Cfg>
__device__ __forceinline__ void init_ring(uint64_t* full, uint64_t* empty, uint32_t full_arrivals) {
  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < Cfg::Stages; ++s) {
      cutlass::arch::ClusterBarrier::init(&full[s], full_arrivals);
      cutlass::arch::ClusterBarrier::init(&empty[s], Cfg::ConsumerThreads);
    }
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();
}

// A ring position of this CTA: the CTA walks work items blockIdx.x, + gridDim.x, ... (one
// when the grid has a CTA per item, several when it is persistent), each item's k-tiles in
// order, and producers and consumers count positions the same way. Holds the work item
// (past the last one, work >= p.work), k-tile kt in it, and what a TMA load of it needs,
// in 32 bits (can_implement: m, n, k and batch below 2^31) so that a producer thread keeps
// it in a few registers.
template <class Cfg>
struct RingCursor {
  int64_t work;
  int kt, nk;
  int k_tile0, m0, n0, batch;  // the item's first k-tile, its output tile's origin, batch
  __device__ __forceinline__ RingCursor(const Params& p, int position)
      : work(blockIdx.x), kt(position) {
    enter(p);
    settle(p);
  }
  __device__ __forceinline__ bool valid(const Params& p) const { return work < p.work; }
  __device__ __forceinline__ void advance(const Params& p, int positions) {
    kt += positions;
    settle(p);
  }

 private:
  __device__ __forceinline__ void enter(const Params& p) {
    if (work >= p.work) return;
    const TileWork w = tile_work<Cfg>(p, work);
    nk = w.nk, k_tile0 = w.kt_begin;
    m0 = static_cast<int>(w.m0), n0 = static_cast<int>(w.n0), batch = static_cast<int>(w.tc.batch);
  }
  __device__ __forceinline__ void settle(const Params& p) {
    while (work < p.work && kt >= nk) {
      kt -= nk;
      work += gridDim.x;
      enter(p);
    }
  }
};

// The TMA-fed producers' loads (split_gemm_ws's A and B, split_gemm_hybrid's B): group 0's
// thread 0 loads the first LoadStages ring positions; each group's thread 0 then keeps a
// cursor on its next refill (position group + LoadStages, then every G-th).
// load(cursor, ls) loads the cursor's k-tile into fp32 stage ls.
template <class Cfg, int LoadStages, class Load>
__device__ __forceinline__ void load_first_stages(const Params& p, int group, int gtid, Load load) {
  if (group == 0 && gtid == 0) {
    RingCursor<Cfg> c(p, 0);
    for (int ls = 0; ls < LoadStages && c.valid(p); ++ls, c.advance(p, 1)) load(c, ls);
  }
}

// p is __grid_constant__: the TMA copies read the descriptors in p where they are (param
// space), never from a local copy.
template <class Cfg>
__global__ void __launch_bounds__(Cfg::Threads, 1) split_gemm_kernel_ws(const __grid_constant__ Params p) {
  using Elem = typename PartRing<Cfg>::Elem;
  using LayoutA = typename PartRing<Cfg>::LayoutA;
  using LayoutB = typename PartRing<Cfg>::LayoutB;
  using Barrier = cutlass::arch::ClusterBarrier;
  constexpr int TM = Cfg::TileM, TN = Cfg::TileN, TK = Cfg::TileK, S = Cfg::Stages, LS = Cfg::LoadStages;
  constexpr int P = Cfg::Parts, NP = Cfg::ProducerThreads;
  constexpr bool F16 = Cfg::Format == PartsFp16Scaled;
  constexpr bool AK = Cfg::ARowMajor;   // A is K-contiguous
  constexpr bool BK = !Cfg::BRowMajor;  // B is K-contiguous

  // Ownership: partA/partB stage s is written by the producer between empty[s] and
  // full[s] and read by the consumers' wgmma between full[s] and empty[s]; the fp32
  // ring and max slots belong to the producer; exps[s] has part stage s's ownership.
  // The 1024-byte alignment is applied by pointer arithmetic on smem_raw (not through an
  // integer) so that the compiler keeps the shared state space: LDS/STS, 32-bit addresses.
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t misalign = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) & 1023u;
  Elem* partA = reinterpret_cast<Elem*>(smem_raw + ((1024u - misalign) & 1023u));
  Elem* partB = partA + S * P * TM * TK;
  float* ring = reinterpret_cast<float*>(partB + S * P * TN * TK);
  float* max_slots = ring + LS * Cfg::StageFloats;  // [group][k-tile parity][A, B][group warp]
  int2* exps = reinterpret_cast<int2*>(max_slots + 4 * Cfg::ProducerWarps);
  uint64_t* full = reinterpret_cast<uint64_t*>(exps + S);  // producer group -> consumers, one arrival per thread
  uint64_t* empty = full + S;                              // consumers -> producer, one arrival per consumer thread
  uint64_t* loaded = empty + S;                            // TMA -> producers: the loader's arrival + the bytes

  const int tid = threadIdx.x;
  if (tid == 0) {
#pragma unroll
    for (int ls = 0; ls < LS; ++ls) cutlass::arch::ClusterTransactionBarrier::init(&loaded[ls], 1);
    // (init_ring's fence_barrier_init and CTA barrier publish these inits too.)
  }
  init_ring<Cfg>(full, empty, Cfg::GroupThreads);  // full[s]: the converting group's threads

  if (tid < NP) {
    // ---------------- producer warpgroups ----------------
    cutlass::arch::warpgroup_reg_dealloc<Cfg::ProducerRegs>();
    auto stageA = [&](int ls) { return ring + ls * Cfg::StageFloats; };
    auto stageB = [&](int ls) { return ring + ls * Cfg::StageFloats + TM * TK; };
    constexpr int GT = Cfg::GroupThreads, G = Cfg::ProducerGroups;
    using UA = Units<TM, TK, GT, AK>;
    using UB = Units<TN, TK, GT, BK>;
    LayoutA sLA;
    LayoutB sLB;
    const int group = tid / GT, gtid = tid % GT;
    // 32-bit TMA coordinates (can_implement bounds m, n and k below 2^31).
    const auto load = [&](const RingCursor<Cfg>& c, int ls) {
      const int k0 = (c.k_tile0 + c.kt) * TK;
      cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&loaded[ls],
                                                                     static_cast<uint32_t>(Cfg::Fp32StageBytes));
      load_stage_tile<AK>(&p.stage_map_a, p.stage_maps_batched & 1, &loaded[ls], stageA(ls), c.m0, k0, c.batch);
      load_stage_tile<BK>(&p.stage_map_b, p.stage_maps_batched & 2, &loaded[ls], stageB(ls), c.n0, k0, c.batch);
    };
    load_first_stages<Cfg, LS>(p, group, gtid, load);
    RingCursor<Cfg> next(p, group + LS);
    int it0 = 0;
    for (int64_t work = blockIdx.x; work < p.work; work += gridDim.x) {
      const int nk = tile_work<Cfg>(p, work).nk;
      produce_tma<Cfg, LS>(
          it0, nk, empty, loaded, group, gtid,
          [&](int ls) {
            if (next.valid(p)) load(next, ls);
            next.advance(p, G);
          },
          [&](int ls, int s, int parity, const auto& empty_wait, const auto& stage_read) {
            float* slots = max_slots + (group * 2 + parity) * 2 * (GT / 32);  // [A, B][group warp]
            const int bar = 1 + group;
            const int ea = convert_operand<GT, UA, P, F16, false>(stageA(ls), partA, sLA, s * P, slots, gtid, bar,
                                                                  empty_wait, [] {});
            const int eb = convert_operand<GT, UB, P, F16, true>(stageB(ls), partB, sLB, s * P, slots + GT / 32,
                                                                 gtid, bar, [] {}, stage_read);
            if (gtid == 0) exps[s] = make_int2(ea, eb);
          },
          [&](int, int s) { Barrier::arrive(&full[s]); });
      it0 += nk;
    }
    return;
  }

  // ---------------- consumer warpgroups ----------------
  cutlass::arch::warpgroup_reg_alloc<Cfg::ConsumerRegs>();
  int it0 = 0;
  for (int64_t work = blockIdx.x; work < p.work; work += gridDim.x) {
    const TileWork w = tile_work<Cfg>(p, work);
    consume<Cfg>(p, w.tc, w.m0, w.n0, w.nk, partA, partB, full, empty, [&](int s) { return exps[s]; }, tid - NP,
                 it0);
    it0 += w.nk;
  }
}

}  // namespace detail

// The requirements of the TMA-fed kernels (this one and split_gemm_hybrid_sm90.cuh): the
// base kernel's (16-byte aligned operands, leading dimensions and batch strides multiples
// of 4 floats: also what TMA needs; the 32-bit tile grid) plus the TMA coordinates' 32 bits.
template <class Cfg>
struct BaseRequirements {
  static int can_implement(const FactGemmProblem& pr, std::string& why) {
    if (int code = split_gemm::Operation<typename Cfg::Base>::can_implement(pr, why)) return code;
    constexpr int64_t Max = (int64_t(1) << 31) - 1;
    if (pr.m > Max || pr.n > Max || pr.k > Max || pr.batch > Max) {
      why = "split_gemm_ws: m, n, k and batch must be below 2^31 (32-bit TMA coordinates)";
      return 1;
    }
    return 0;
  }
};

template <class Cfg>
struct Operation : BaseRequirements<Cfg> {
  using Base = typename Cfg::Base;

  static size_t workspace_size(const FactGemmProblem& pr) {
    return split_gemm::detail::make_plan<Base>(pr).workspace;
  }

  static int run(const FactGemmProblem& pr, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                 std::string& why) {
    // Plan, split-K reduction and parameters are the base kernel's: the consumers
    // write partials in its layout.
    return split_gemm::detail::launch<Base>(pr, workspace, workspace_bytes, stream, why,
                                            detail::split_gemm_kernel_ws<Cfg>, Cfg::Threads, Cfg::SmemBytes,
                                            "split_gemm_ws", {}, false, {}, detail::StageMaps<Cfg, true>{pr.batch});
  }
};

}  // namespace fact::split_gemm::ws
