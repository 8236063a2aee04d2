// FACT fp32-faithful GEMM for Hopper (sm90a) with the operands split in a pre-pass (v3
// "pre"). Same arithmetic, results and Operation<Config> interface as
// templates/split_gemm_ws_sm90.cuh (fp32 operands split into 16-bit parts, Terms
// products per multiply-add on wgmma, fp32 promotion after every 32-wide k-tile,
// PartsFp16Scaled: a power-of-two scale per 128 x 32 operand tile), but no CTA converts:
//
//   pre-pass (split_operand_tiles, once per operand and call): each (batch, 128-row tile,
//       k-tile) block of the operand becomes Parts 16-bit slots laid out byte for byte as a
//       part-ring stage expects (K-major, GMMA 64B-swizzled), plus its tile exponent,
//       zero-filled outside the problem. Same tile maxima, exponents and split8 as the
//       in-kernel conversion, so the GEMM's output is bit-identical to split_gemm_ws's.
//   main kernel: CTA = 3 warpgroups (384 threads), 1 CTA per SM; one CTA per output tile
//       (Operation) or one persistent CTA per SM looping over the tiles
//       (PersistentOperation; which is faster depends on the shape, within ±8% on the
//       H100: realize offers both). One producer thread per k-tile waits empty[s], then issues four
//       bulk copies (cp.async.bulk: A's parts, B's parts, their two exponents) completing
//       on full[s]'s transaction count. The two consumer warpgroups are split_gemm_ws's
//       (ws::detail::consume) with two `part` accumulators (setmaxnreg 40 / 232).
//
// Why: the in-kernel conversion re-splits every A tile N / 128 times and every B tile
// M / 128 times, and one k-tile's conversion (~1540 warp instructions) is what limits
// split_gemm_ws (docs/notes/split_gemm.md, "Where the in-load split runs out"). The
// pre-pass splits each element once, at the cost of one pass over both operands (read
// 4 bytes, write 4 bytes per element): worth it where the GEMM re-reads its operands
// many times (square, batched, the transformer's linears), not at M = N = 256 with
// K = 524288, where split_gemm_ws stays the better kernel.
//
// Workspace: the base kernel's split-K partials, then A's and B's part images and
// exponents (workspace_size). Requirements: the base kernel's (can_implement).
#pragma once

#include "cute/arch/copy_sm90_tma.hpp"
#include "split_gemm_ws_sm90.cuh"

namespace fact::split_gemm::pre {

// Stages: part ring depth (bulk copies in flight).
template <int TileM_, int TileN_, int TileK_, int Terms_, bool ARowMajor_, bool BRowMajor_,
          int Epilogue_, int Stages_, int Format_ = PartsBf16, class Chain_ = void>
struct Config
    : ws::ConsumerConfig<TileM_, TileN_, TileK_, Terms_, ARowMajor_, BRowMajor_, Epilogue_, Stages_, Format_, Chain_> {
  using C = ws::ConsumerConfig<TileM_, TileN_, TileK_, Terms_, ARowMajor_, BRowMajor_, Epilogue_, Stages_, Format_, Chain_>;
  static constexpr int ProducerThreads = 128;  // one thread issues; a whole warpgroup keeps the consumers aligned
  static constexpr int Threads = ProducerThreads + C::ConsumerThreads;
  // The producer warpgroup needs few registers: setmaxnreg gives the consumers room for acc
  // + two `part` accumulators (ws::detail::consume: k-tile kt + 1 runs on the tensor cores
  // while kt is promoted).
  static constexpr int ProducerRegs = 40;
  static constexpr int ConsumerRegs = 232;
  static constexpr int PartAccumulators = 2;
  static_assert(ProducerRegs + 2 * ConsumerRegs <= 512,
                "setmaxnreg split over the register file (64K registers / 128 threads per warpgroup)");
  static_assert(C::TileM * C::TileN / C::ConsumerThreads <= 64,
                "acc + two part accumulators must fit ConsumerRegs: TileM x TileN <= 128 x 128");
  // The operand-image epilogue's block maxima (detail::store_image_tile): per image block
  // of an output tile and consumer warp, double buffered over a CTA's tiles.
  static constexpr int ImageBlocksPerTile = C::TileN / C::TileK;
  static constexpr int ImageSlots = 2 * ImageBlocksPerTile * (C::ConsumerThreads / 32);
  // Part ring, exponents int4 expA[Stages] + expB[Stages] (one bulk copy each: 16 bytes),
  // mbarriers full[Stages] + empty[Stages], image slots, alignment slack.
  static constexpr size_t SmemBytes =
      C::Stages * C::PartStageBytes + 2 * C::Stages * 16 + 2 * C::Stages * 8 + ImageSlots * 4 + 1024;
  static_assert(SmemBytes <= 227 * 1024, "shared memory over the sm90 limit: fewer Stages");
};

namespace detail {

using namespace cute;
using split_gemm::detail::Params;

// One operand's pre-split image (operand_image.cuh): Image, ImageSize, ImageBlockLayout.
using split_gemm::Image;
template <class Cfg, int Rows>
using ImageSize = split_gemm::ImageSize<Cfg::Parts, Rows, Cfg::TileK>;

// Threads of a pre-pass CTA.
constexpr int SplitThreads = 256;
// fp32 stages of a pre-pass CTA: the cp.async copies of its next block are in flight while
// it splits the current one (2 x 16 KB of static shared memory for 128-row blocks).
constexpr int SplitStages = 2;
// Pre-pass CTAs resident per SM (the kernel's launch bounds: <= 64 registers; 4 x ~33 KB
// of shared memory) and the pre-pass grid per SM: one wave, every CTA walking its share
// of the blocks. 4 x 16 KB of reads in flight per SM is ~3x what HBM needs at ~2 us of
// loaded latency; 5 or 6 CTAs would need <= 48 / 40 registers, and ptxas then spills
// the hoisted StageLoader offsets (24-56 bytes).
constexpr int SplitCtasPerSm = 4;

// The thread index under which pre-pass thread `tid` reads its Units from the stage and
// stores their parts (a permutation of [0, SplitThreads); read and store must use the
// same one). KContig: tid itself (a warp's units are 8 rows x the 4 k-chunks: LDS.128
// without bank conflicts, 512 contiguous bytes per part store). Else, under Units' mapping
// (unit u: row u % Rows, k-chunk u / Rows): a warp takes 16 rows x the chunk pair
// {2c, 2c + 1}, whose 16-byte part vectors share one 32-byte sector of their row under
// the SW64 swizzle, so every part store writes whole sectors (tid itself gives 32 rows x
// one chunk: half sectors). Cost: a 2-way bank conflict on the stage reads (both chunks of
// a row sit in the same bank of the [TileK][Rows] stage).
template <int Rows, bool KContig>
__device__ __forceinline__ int unit_thread(int tid) {
  if constexpr (KContig) {
    return tid;
  } else {
    constexpr int RowGroups = Rows / 16;  // warps that share a chunk pair
    static_assert(Rows % 16 == 0 && (SplitThreads / 32) % RowGroups == 0 && SplitThreads % (2 * Rows) == 0,
                  "warps do not tile the rows x chunk pairs");
    const int w = tid / 32, lane = tid % 32;
    return Rows * (2 * (w / RowGroups) + lane / 16) + 16 * (w % RowGroups) + lane % 16;
  }
}

// Issues this thread's cp.async copies of image block `block` (< blocks: see
// split_operand_tiles) into `stage` in ws::detail::StageLoader's layout, zero-filled
// outside the problem; none for block >= blocks. Commits one group either way, so the
// wait counts stay uniform. Chunks16: 16-byte copies (chunks16_ok), else 4-byte ones.
template <int Rows, int TileK, bool KContig, bool Chunks16>
__device__ __forceinline__ void load_block(float* stage, const float* x, int64_t ld, int64_t batch_stride,
                                           int64_t rows, int64_t k, int row_tiles, int k_tiles, uint32_t block,
                                           uint32_t blocks, int tid) {
  if (block < blocks) {
    const uint32_t rest = block / k_tiles;
    const int64_t k0 = int64_t(block % k_tiles) * TileK;
    const ws::detail::StageLoader<Rows, TileK, SplitThreads, KContig, Chunks16> loader(
        x + int64_t(rest / row_tiles) * batch_stride, ld, int64_t(rest % row_tiles) * Rows, rows, k0, tid);
    loader.load(stage, 0, k0, k);
  }
  split_gemm::detail::cp_async_commit();
}

// Whether the operand of split_operand_tiles may be copied in 16-byte chunks (StageLoader's
// Chunks16): its base, leading dimension, batch stride and contiguous extent (k when
// KContig, else rows) all multiples of 4 floats. Else the 4-byte copies read any fp32
// operand (irregular shapes), with the same image.
inline bool chunks16_ok(const void* x, int64_t ld, int64_t batch_stride, int64_t contiguous_extent) {
  return reinterpret_cast<uintptr_t>(x) % 16 == 0 && ld % 4 == 0 && batch_stride % 4 == 0 &&
         contiguous_extent % 4 == 0;
}

// Splits the (Rows x TileK) blocks of one fp32 operand into its image (Cfg gives TileK,
// Parts and Format). KContig: element (mn, k) at mn * ld + k, else at k * ld + mn; batch
// entry b starts batch_stride elements after entry b - 1. `blocks` = batch * row_tiles *
// k_tiles. Chunks16: the copies' width (chunks16_ok must hold for true).
// One wave of CTAs (SplitCtasPerSm per SM); CTA c splits blocks c, c + gridDim.x, ...
// (so the CTAs in flight together cover consecutive blocks: consecutive k-tiles of the
// same rows), with the next block's cp.async copies (16-byte chunks along K or MN) in
// flight while it splits the current one. The !KContig operand is transposed by the
// stage: copied MN-contiguous, read as 8 consecutive k per unit.
// Per block `it` (CTA-local index; stage it % S, S = SplitStages): wait for this thread's
// copies of it, barrier A(it), issue the copies of block it + S - 1, read the units, then
// (PartsFp16Scaled) warp maxima, barrier B(it), exponent; split and store. The units are
// read after the copy issue, so that they are not live across it (register pressure: the
// loader's per-thread offsets are hoisted out of the loop).
// Ownership and hazards:
//  - stage it % S: written by block it's copies (issued after A(it - S + 1), or in the
//    prologue), read by every thread after A(it), each thread having waited for its own
//    copies first; free once every thread passed A(it + 1) (all reads of it come before),
//    after which block it + S's copies are issued into it;
//  - warp_maxima: written for block it after A(it), read after B(it); rewritten for it + 1
//    only after A(it + 1), which every reader passes after its reads.
// Pending at exit: only empty groups (blocks past `blocks`).
template <class Cfg, int Rows, bool KContig, bool Chunks16, class Elem>
__global__ void __launch_bounds__(SplitThreads, SplitCtasPerSm)
    split_operand_tiles(const float* x, int64_t ld, int64_t batch_stride, int64_t rows, int64_t k, int row_tiles,
                        int k_tiles, uint32_t blocks, Image<Elem> image) {
  constexpr int TK = Cfg::TileK, P = Cfg::Parts, NT = SplitThreads, S = SplitStages;
  constexpr bool F16 = Cfg::Format == PartsFp16Scaled;
  using U = ws::detail::Units<Rows, TK, NT, KContig>;
  using Layout = ImageBlockLayout<Elem, Rows, TK, P>;
  static_assert(S >= 2, "the next block's copies need a stage of their own");
  __shared__ __align__(128) float ring[S][Rows * TK];
  __shared__ float warp_maxima[NT / 32];

  const int tid = threadIdx.x, ut = unit_thread<Rows, KContig>(tid);
  // blocks <= 2^31 - 1 (split_and_launch), so block + (S - 1) * step cannot wrap.
  const uint32_t step = gridDim.x;
  uint32_t block = blockIdx.x;
  const auto load = [&](uint32_t b, int s) {
    load_block<Rows, TK, KContig, Chunks16>(ring[s], x, ld, batch_stride, rows, k, row_tiles, k_tiles, b, blocks, tid);
  };
#pragma unroll
  for (int s = 0; s < S - 1; ++s) load(block + s * step, s);

  for (int it = 0; block < blocks; block += step, ++it) {
    split_gemm::detail::cp_async_wait<S - 2>();  // this thread's copies of block it
    __syncthreads();  // A(it): everyone's; every thread is done with block it - 1
    load(block + (S - 1) * step, (it + S - 1) % S);
    float v[U::N][8];
    U::read(ring[it % S], v, ut);
    int e = 0;
    if constexpr (F16) {
      const float m = ws::detail::warp_max(U::absmax(v));
      if (tid % 32 == 0) warp_maxima[tid / 32] = m;
      __syncthreads();  // B(it): every warp's maximum
      float t = warp_maxima[0];
#pragma unroll
      for (int w = 1; w < NT / 32; ++w) t = fmaxf(t, warp_maxima[w]);
      e = split_gemm::detail::tile_exponent(t);
    }
    if (tid == 0) image.exps[block] = make_int4(e, 0, 0, 0);
    U::template store<P, F16>(v, image.parts + int64_t(block) * (P * Rows * TK), Layout{}, 0,
                              split_gemm::detail::pow2(14 - e), ut);
  }
}

// Named barrier 2 over the 256 consumer threads (0 is __syncthreads; the pre kernel's
// producer warpgroup never joins it).
template <class Cfg>
__device__ __forceinline__ void consumer_sync() {
  asm volatile("bar.sync 2, %0;\n" ::"n"(Cfg::ConsumerThreads) : "memory");
}

// 4 x 4 transpose of 32-bit words over the quad of lanes 4k..4k+3 (lane = its place q in
// it): before, w[t] of lane q is element (q, t); after, element (t, q). Two butterfly
// rounds of shuffles; every lane of the warp must call it.
__device__ __forceinline__ void transpose_quad(uint32_t (&w)[4], int lane) {
#pragma unroll
  for (int bit = 1; bit <= 2; bit *= 2) {
    const bool high = lane & bit;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      if (t & bit) continue;  // pairs (t, t + bit)
      const uint32_t send = high ? w[t] : w[t + bit];
      const uint32_t recv = __shfl_xor_sync(0xffffffffu, send, bit);
      if (high) w[t] = recv;
      else w[t + bit] = recv;
    }
  }
}

// Operand hand-off (p.image_out): the consumers write their output tile through the
// epilogue chain as the pre-split A image of the GEMM that reads this D, block for block
// what split_operand_tiles would make of D (same values, tile maxima, exponents, split2
// and layout: bit-identical, so the next GEMM's result is too), instead of writing D.
// Needs TileM = the image's row tile (the same Config family: the image format key) and
// one K split (can_implement). A 128 x TileN tile covers TileN / TileK whole image blocks
// (k-tiles n0 / TileK ...); each block's maximum is a reduction over both consumer
// warpgroups: per-warp maxima to `slots` ([block][warp], this tile's half of the double
// buffer), one consumer barrier, every thread reduces them in the same order.
// Elements outside the problem are written as zeros (the pre-pass's zero fill); blocks
// past the image's last k-tile (n0 + c * TileK >= n rounded up) are not written.
// Hazard: slots of tile t are rewritten by tile t + 2, after every consumer passed tile
// t + 1's barrier, which follows its reads of tile t's slots.
template <class Cfg, class Acc, class Coords>
__device__ __forceinline__ void store_image_tile(const Params& p, const split_gemm::detail::TileCoord& tc,
                                                 int64_t m0, int64_t n0, Acc& acc, const Coords& tCcC,
                                                 float* slots, int ctid) {
  using Elem = typename ws::detail::PartRing<Cfg>::Elem;
  constexpr int TM = Cfg::TileM, TN = Cfg::TileN, TK = Cfg::TileK, P = Cfg::Parts;
  constexpr int Blocks = Cfg::ImageBlocksPerTile, Warps = Cfg::ConsumerThreads / 32;
  constexpr bool F16 = Cfg::Format == PartsFp16Scaled;
  constexpr int N = decltype(size(acc))::value;
  using Chain = typename Cfg::EpilogueChain;
  using Layout = ImageBlockLayout<Elem, TM, TK, P>;
  static_assert(TN % TK == 0, "an output tile must cover whole image blocks");
  static_assert(N % 2 == 0, "accumulator fragments come in column pairs");
  // Fragment i sits at (row0 + dr(i), col0 + dc(i)): the thread's first fragment plus a
  // compile-time offset. wgmma's accumulator layout: a quad (4 threads) shares two rows,
  // thread q of it holds columns 8j + 2q, 8j + 2q + 1 of every 8-column group j, so
  // fragment i lies in image block dc(i) / TK of the tile (a compile-time index: a run-time
  // one into mx[] or e[] would move them to local memory). Checked here (the compile-time
  // parts fold to one compare).
  int row0 = get<0>(tCcC(0)), col0 = get<1>(tCcC(0));
  const auto dr = [&](int i) { return get<0>(tCcC(i)) - get<0>(tCcC(0)); };
  const auto dc = [&](int i) { return get<1>(tCcC(i)) - get<1>(tCcC(0)); };
  // The pair of row half h (rows row0, row0 + 8) and 8-column group j: fragments
  // ((2 columns, 2 row halves, TN / 8 groups)), wgmma's F32 accumulator.
  const auto fragment = [](int h, int j) { return 2 * h + 4 * j; };
  static_assert(N == 4 * (TN / 8), "two rows x TN / 8 column pairs per thread");
  bool layout_ok = col0 % 8 == 2 * (ctid % 4);
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int j = 0; j < TN / 8; ++j) {
      const int i = fragment(h, j);
      layout_ok = layout_ok && dr(i) == 8 * h && dr(i + 1) == 8 * h && dc(i) == 8 * j && dc(i + 1) == 8 * j + 1;
    }
  // The quad shares its rows and its column groups (transpose_quad exchanges within it).
  const int leader = (ctid % 32) & ~3;
  layout_ok = layout_ok && __shfl_sync(0xffffffffu, row0, leader) == row0 &&
              __shfl_sync(0xffffffffu, col0 - 2 * (ctid % 4), leader) == col0 - 2 * (ctid % 4);
  if (!layout_ok) __trap();
  // Opaque per tile: keeps the 32 per-fragment image offsets from being hoisted out of the
  // persistent tile loop (live across the mainloop, they spill).
  asm volatile("" : "+r"(row0), "+r"(col0));

  // 1. The epilogue chain's values, in place (zeros outside the problem).
  if (Chain::pairs_aligned(p) && m0 + TM <= p.m && n0 + TN <= p.n) {
#pragma unroll
    for (int i = 0; i < N; i += 2) {
      const float2 v = Chain::apply2(p, tc.batch, m0 + row0 + dr(i), n0 + col0 + dc(i), acc(i), acc(i + 1));
      acc(i) = v.x;
      acc(i + 1) = v.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const int64_t m = m0 + row0 + dr(i), n = n0 + col0 + dc(i);
      acc(i) = m < p.m && n < p.n ? Chain::apply(p, tc.batch, m, n, acc(i)) : 0.f;
    }
  }

  // 2. Block exponents (PartsFp16Scaled): max |x| ignoring NaN, as the pre-pass's.
  int e[Blocks];
#pragma unroll
  for (int c = 0; c < Blocks; ++c) e[c] = 0;
  if constexpr (F16) {
    float mx[Blocks];
#pragma unroll
    for (int c = 0; c < Blocks; ++c) mx[c] = 0.f;
#pragma unroll
    for (int i = 0; i < N; ++i) mx[dc(i) / TK] = fmaxf(mx[dc(i) / TK], fabsf(acc(i)));
#pragma unroll
    for (int c = 0; c < Blocks; ++c) {
      const float w = ws::detail::warp_max(mx[c]);
      if (ctid % 32 == 0) slots[c * Warps + ctid / 32] = w;
    }
    consumer_sync<Cfg>();  // every consumer warp's block maxima
#pragma unroll
    for (int c = 0; c < Blocks; ++c) {
      float t = slots[c * Warps];
#pragma unroll
      for (int w = 1; w < Warps; ++w) t = fmaxf(t, slots[c * Warps + w]);
      e[c] = split_gemm::detail::tile_exponent(t);
    }
  }

  // 3. Parts into the image: block (batch, tm, n0 / TK + c), element (row, k) of part q at
  // Layout(row, k, q). The four threads of a quad hold the same rows, each one column pair
  // of every 8-column chunk; a 4 x 4 transpose over the quad (transpose_quad) gives each
  // thread one whole chunk (16 bytes, contiguous under the 16-byte-chunk swizzle), so a
  // warp stores 8 whole 64-byte rows of a part per instruction instead of 8 x 4 bytes.
  const split_gemm::detail::ImageOut& out = p.image_out;
  const int64_t first_block = (tc.batch * p.tiles_m + tc.tm) * int64_t(out.k_tiles) + n0 / TK;
  const int64_t blocks_here = out.k_tiles - n0 / TK;  // >= 1; fewer than Blocks at the right edge
  Elem* parts = static_cast<Elem*>(out.parts);
  const int quad_lane = ctid % 4;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int c = 0; c < Blocks; ++c) {
      if (c >= blocks_here) continue;  // (uniform over the CTA: the quad shuffles stay convergent)
      uint32_t w[P][4];
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        const int i = fragment(h, (TK / 8) * c + t);
        uint32_t pair[P];
        split_gemm::detail::split2<P, F16>(acc(i), acc(i + 1), split_gemm::detail::pow2(14 - e[c]), pair);
#pragma unroll
        for (int q = 0; q < P; ++q) w[q][t] = pair[q];
      }
      Elem* block = parts + (first_block + c) * (P * TM * TK);
      const int off = cute::as_position_independent_swizzle_layout(Layout{})(row0 + 8 * h, 8 * quad_lane, 0);
#pragma unroll
      for (int q = 0; q < P; ++q) {
        transpose_quad(w[q], quad_lane);
        *reinterpret_cast<uint4*>(block + off + q * (TM * TK)) = make_uint4(w[q][0], w[q][1], w[q][2], w[q][3]);
      }
    }
  }
  // Thread c < blocks_here writes block c's exponent (a select chain: an index into e[]
  // would put it in local memory).
  int mine = e[0];
#pragma unroll
  for (int c = 1; c < Blocks; ++c) mine = ctid == c ? e[c] : mine;
  if (ctid < Blocks && ctid < blocks_here) out.exps[first_block + ctid] = make_int4(mine, 0, 0, 0);
}

template <class Cfg>
__global__ void __launch_bounds__(Cfg::Threads, 1) split_gemm_kernel_pre(const Params p) {
  using Elem = typename ws::detail::PartRing<Cfg>::Elem;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  constexpr int TM = Cfg::TileM, TN = Cfg::TileN, TK = Cfg::TileK, S = Cfg::Stages, P = Cfg::Parts;

  // Ownership: stage s (its part slots and expA[s], expB[s]) is written by the bulk copies
  // issued after empty[s] and read by the consumers between full[s] and empty[s].
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t misalign = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) & 1023u;
  Elem* partA = reinterpret_cast<Elem*>(smem_raw + ((1024u - misalign) & 1023u));
  Elem* partB = partA + S * P * TM * TK;
  int4* expA = reinterpret_cast<int4*>(partB + S * P * TN * TK);
  int4* expB = expA + S;
  uint64_t* full = reinterpret_cast<uint64_t*>(expB + S);  // 1 arrival + the stage's bytes
  uint64_t* empty = full + S;                              // one arrival per consumer thread
  float* image_slots = reinterpret_cast<float*>(empty + S);  // store_image_tile's block maxima

  const int tid = threadIdx.x;
  ws::detail::init_ring<Cfg>(full, empty, 1);

  // The CTA walks work items blockIdx.x, + gridDim.x, ...: one item when the grid has one
  // CTA per item, several when it is persistent (one CTA per SM). Producer and consumers
  // count the same ring passes (`it`: stage it % S, phase (it / S) & 1) across items, so
  // while the consumers store tile i the producer already fills the stages they released
  // with tile i + 1's first k-tiles.
  if (tid < Cfg::ProducerThreads) {
    cutlass::arch::warpgroup_reg_dealloc<Cfg::ProducerRegs>();
    if (tid == 0) {
      const auto* imgA = static_cast<const Elem*>(p.images.a);
      const auto* imgB = static_cast<const Elem*>(p.images.b);
      constexpr uint32_t BytesA = P * Cfg::SlotBytesA, BytesB = P * Cfg::SlotBytesB;
      int it = 0;
      for (int64_t work = blockIdx.x; work < p.work; work += gridDim.x) {
        const ws::detail::TileWork w = ws::detail::tile_work<Cfg>(p, work);
        const split_gemm::detail::TileCoord& tc = w.tc;
        const int64_t blockA = (tc.batch * p.tiles_m + tc.tm) * int64_t(p.k_tiles) + w.kt_begin;
        const int64_t blockB = (tc.batch * p.tiles_n + tc.tn) * int64_t(p.k_tiles) + w.kt_begin;
        for (int kt = 0; kt < w.nk; ++kt, ++it) {
          const int s = it % S;
          // Phase parity starts at 1 on empty: a fresh barrier passes it.
          Barrier::wait(&empty[s], ((it / S) & 1) ^ 1);
          Barrier::arrive_and_expect_tx(&full[s], BytesA + BytesB + 2 * 16);
          cute::SM90_BULK_COPY_G2S::copy(imgA + (blockA + kt) * (P * TM * TK), &full[s], partA + s * P * TM * TK,
                                         BytesA);
          cute::SM90_BULK_COPY_G2S::copy(imgB + (blockB + kt) * (P * TN * TK), &full[s], partB + s * P * TN * TK,
                                         BytesB);
          cute::SM90_BULK_COPY_G2S::copy(p.images.exp_a + blockA + kt, &full[s], expA + s, 16);
          cute::SM90_BULK_COPY_G2S::copy(p.images.exp_b + blockB + kt, &full[s], expB + s, 16);
        }
      }
    }
    return;
  }

  cutlass::arch::warpgroup_reg_alloc<Cfg::ConsumerRegs>();
  int it = 0, tile = 0;
  for (int64_t work = blockIdx.x; work < p.work; work += gridDim.x, ++tile) {
    const ws::detail::TileWork w = ws::detail::tile_work<Cfg>(p, work);
    // D, or the next GEMM's A image when the problem asks for one (uniform over the grid).
    // Captures by value: a captured reference would keep the loop counters in memory.
    float* const slots = image_slots + (tile & 1) * (Cfg::ImageSlots / 2);
    auto store = [slots](const Params& q, const split_gemm::detail::TileCoord& tc, int64_t m0, int64_t n0, auto& acc,
                         const auto& tCcC, int ctid) {
      if (q.image_out.parts != nullptr)
        store_image_tile<Cfg>(q, tc, m0, n0, acc, tCcC, slots, ctid);
      else
        split_gemm::detail::store_tile<Cfg>(q, tc, m0, n0, acc, tCcC, Cfg::ConsumerThreads, ctid);
    };
    ws::detail::consume<Cfg>(p, w.tc, w.m0, w.n0, w.nk, partA, partB, full, empty,
                             [&](int s) { return make_int2(expA[s].x, expB[s].x); }, tid - Cfg::ProducerThreads, it,
                             store);
    it += w.nk;
  }
}

// The base plan and the workspace: the base plan's split-K partials, then A's image
// (none when the problem passes it: a_image) and B's (none for SplitB = false:
// split_gemm_hybrid_sm90.cuh splits B in its producers).
template <class Cfg, bool SplitB = true>
struct WorkspaceLayout {
  split_gemm::detail::Plan plan;
  ImageSize<Cfg, Cfg::TileM> image_a;
  ImageSize<Cfg, Cfg::TileN> image_b;
  bool a_given;
  size_t offset_a = 0, offset_b = 0, total = 0;  // byte offsets of the images; total size

  explicit WorkspaceLayout(const FactGemmProblem& pr)
      : plan(split_gemm::detail::make_plan<typename Cfg::Base>(pr)),
        image_a(pr.batch, pr.m, pr.k),
        image_b(SplitB ? pr.batch : 0, pr.n, pr.k),
        a_given(pr.a_image != nullptr) {
    offset_a = ImageSize<Cfg, Cfg::TileM>::align(plan.workspace);  // the partials come first
    offset_b = offset_a + (a_given ? 0 : image_a.total);
    total = offset_b + image_b.total;
  }
};

// Host side shared by this kernel and split_gemm_hybrid_sm90.cuh: checks the workspace,
// splits A (unless the problem passes its image) and B (where SplitB) into their images,
// then launches `kernel` with them through the base kernel's launch (plan, parameters,
// split-K reduce; D as an image when the problem asks for one). `tag` names the kernel in
// error messages. persistent: one CTA per SM (`kernel` must loop over p.work). prepare:
// the base launch's last step on the parameters (split_gemm::detail::launch).
template <class Cfg, bool SplitB, class Prepare = split_gemm::detail::NoPrepare>
int split_and_launch(const FactGemmProblem& pr, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                     std::string& why, void (*kernel)(Params), const char* tag, bool persistent,
                     Prepare prepare = {}) {
  using Elem = typename ws::detail::PartRing<Cfg>::Elem;
  const WorkspaceLayout<Cfg, SplitB> w(pr);
  if (w.total > workspace_bytes || (w.total > 0 && workspace == nullptr)) {
    why = std::string(tag) + ": workspace too small (" + std::to_string(workspace_bytes) + " < " +
          std::to_string(w.total) + " bytes)";
    return 1;
  }
  const split_gemm::detail::Plan& pl = w.plan;
  auto* base = static_cast<unsigned char*>(workspace);
  const Image<Elem> a = w.a_given ? w.image_a.template at<Elem>(const_cast<void*>(pr.a_image))
                                  : w.image_a.template at<Elem>(base + w.offset_a);
  const Image<Elem> b = w.image_b.template at<Elem>(base + w.offset_b);
  const int64_t blocks_a = w.a_given ? 0 : w.image_a.blocks, blocks_b = w.image_b.blocks;
  if (blocks_a > 0x7fffffff || blocks_b > 0x7fffffff) {
    why = std::string(tag) + ": pre-pass grid too large";
    return 1;
  }
  // One wave of pre-pass CTAs (any grid splits every block; without the SM count, one CTA
  // per block). The copies are 16-byte wide where the operand allows (chunks16_ok).
  const int sms = split_gemm::detail::sm_count();
  const auto split = [&](auto rows_tag, auto kcontig_tag, const float* x, int64_t ld, int64_t batch_stride,
                         int64_t rows, int row_tiles, int64_t blocks, const Image<Elem>& image) {
    constexpr int Rows = decltype(rows_tag)::value;
    constexpr bool KContig = decltype(kcontig_tag)::value;
    const unsigned grid =
        static_cast<unsigned>(sms > 0 ? std::min<int64_t>(blocks, int64_t(sms) * SplitCtasPerSm) : blocks);
    const auto kernel16 = split_operand_tiles<Cfg, Rows, KContig, true, Elem>;
    const auto kernel4 = split_operand_tiles<Cfg, Rows, KContig, false, Elem>;
    (chunks16_ok(x, ld, batch_stride, KContig ? pr.k : rows) ? kernel16 : kernel4)<<<grid, SplitThreads, 0, stream>>>(
        x, ld, batch_stride, rows, pr.k, row_tiles, pl.k_tiles, static_cast<uint32_t>(blocks), image);
  };
  // A is (m, k): K-contiguous when row-major. B is (k, n) as (n, k): K-contiguous when
  // column-major.
  if (blocks_a > 0) {
    split(cute::Int<Cfg::TileM>{}, cute::bool_constant<Cfg::ARowMajor>{}, static_cast<const float*>(pr.a), pr.ld_a,
          pr.batch_stride_a, pr.m, pl.tiles_m, blocks_a, a);
  }
  if constexpr (SplitB) {
    if (blocks_b > 0) {
      split(cute::Int<Cfg::TileN>{}, cute::bool_constant<!Cfg::BRowMajor>{}, static_cast<const float*>(pr.b),
            pr.ld_b, pr.batch_stride_b, pr.n, pl.tiles_n, blocks_b, b);
    }
  }
  if (int code = kernel_launch::launch_status(why, tag, ": pre-pass launch: ")) return code;
  split_gemm::detail::PreSplitImages images{a.parts, SplitB ? b.parts : nullptr, a.exps, SplitB ? b.exps : nullptr};
  split_gemm::detail::ImageOut image_out;
  if (pr.d_image != nullptr) {
    // D (m x n) as the A image of a GEMM with M = m, K = n.
    const ImageSize<Cfg, Cfg::TileM> d(pr.batch, pr.m, pr.n);
    const Image<Elem> di = d.template at<Elem>(pr.d_image);
    image_out = {di.parts, di.exps, static_cast<int>((pr.n + Cfg::TileK - 1) / Cfg::TileK)};
  }
  return split_gemm::detail::launch<typename Cfg::Base>(pr, workspace, workspace_bytes, stream, why, kernel,
                                                        Cfg::Threads, Cfg::SmemBytes, tag, images, persistent,
                                                        image_out, prepare);
}

}  // namespace detail

// Persistent: one CTA per SM looping over the output tiles instead of one CTA per tile.
// Operand hand-off: the pre kernels read A from FactGemmProblem::a_image and write D to
// d_image (store_image_tile) in the format image_format() names; a GEMM's D image is
// the next GEMM's A image when both variants name the same format.
template <class Cfg, bool Persistent>
struct LaunchedAs {
  using Elem = typename ws::detail::PartRing<Cfg>::Elem;

  static int can_implement(const FactGemmProblem& pr, std::string& why) {
    return split_gemm::Operation<typename Cfg::Base>::check(pr, why, true);
  }

  static size_t workspace_size(const FactGemmProblem& pr) { return detail::WorkspaceLayout<Cfg>(pr).total; }

  // The image format: part type and count, rows x k per block, swizzle, layout revision.
  static const char* image_format() {
    static const std::string format = image_format_name(Cfg::Format, Cfg::Parts, Cfg::TileM, Cfg::TileK);
    return format.c_str();
  }
  // Bytes of A's image (role 0) or of D's image as the A of the next GEMM (role 1).
  static size_t image_bytes(const FactGemmProblem& pr, int role) {
    if (role == 0) return detail::ImageSize<Cfg, Cfg::TileM>(pr.batch, pr.m, pr.k).total;
    if (role == 1) return detail::ImageSize<Cfg, Cfg::TileM>(pr.batch, pr.m, pr.n).total;
    return 0;
  }

  static int run(const FactGemmProblem& pr, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                 std::string& why) {
    return detail::split_and_launch<Cfg, true>(pr, workspace, workspace_bytes, stream, why,
                                               detail::split_gemm_kernel_pre<Cfg>, "split_gemm_pre", Persistent);
  }
};

template <class Cfg>
using Operation = LaunchedAs<Cfg, false>;
template <class Cfg>
using PersistentOperation = LaunchedAs<Cfg, true>;

}  // namespace fact::split_gemm::pre
