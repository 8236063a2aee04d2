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
  // Part ring, exponents int4 expA[Stages] + expB[Stages] (one bulk copy each: 16 bytes),
  // mbarriers full[Stages] + empty[Stages], alignment slack.
  static constexpr size_t SmemBytes = C::Stages * C::PartStageBytes + 2 * C::Stages * 16 + 2 * C::Stages * 8 + 1024;
  static_assert(SmemBytes <= 227 * 1024, "shared memory over the sm90 limit: fewer Stages");
};

namespace detail {

using namespace cute;
using split_gemm::detail::Params;

// One operand's pre-split image: block (batch, row tile, k-tile) =
// ((batch * row_tiles + row_tile) * k_tiles + k_tile) holds Parts slots of Rows x TileK
// 16-bit elements in part-ring order, and exps[block].x its tile exponent (0 for bf16).
template <class Elem>
struct Image {
  Elem* parts;
  int4* exps;
};

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
// wait counts stay uniform.
template <int Rows, int TileK, bool KContig>
__device__ __forceinline__ void load_block(float* stage, const float* x, int64_t ld, int64_t batch_stride,
                                           int64_t rows, int64_t k, int row_tiles, int k_tiles, uint32_t block,
                                           uint32_t blocks, int tid) {
  if (block < blocks) {
    const uint32_t rest = block / k_tiles;
    const int64_t k0 = int64_t(block % k_tiles) * TileK;
    const ws::detail::StageLoader<Rows, TileK, SplitThreads, KContig> loader(
        x + int64_t(rest / row_tiles) * batch_stride, ld, int64_t(rest % row_tiles) * Rows, rows, k0, tid);
    loader.load(stage, 0, k0, k);
  }
  split_gemm::detail::cp_async_commit();
}

// Splits the (Rows x TileK) blocks of one fp32 operand into its image (Cfg gives TileK,
// Parts and Format). KContig: element (mn, k) at mn * ld + k, else at k * ld + mn; batch
// entry b starts batch_stride elements after entry b - 1. `blocks` = batch * row_tiles *
// k_tiles.
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
template <class Cfg, int Rows, bool KContig, class Elem>
__global__ void __launch_bounds__(SplitThreads, SplitCtasPerSm)
    split_operand_tiles(const float* x, int64_t ld, int64_t batch_stride, int64_t rows, int64_t k, int row_tiles,
                        int k_tiles, uint32_t blocks, Image<Elem> image) {
  constexpr int TK = Cfg::TileK, P = Cfg::Parts, NT = SplitThreads, S = SplitStages;
  constexpr bool F16 = Cfg::Format == PartsFp16Scaled;
  using U = ws::detail::Units<Rows, TK, NT, KContig>;
  using Layout = decltype(tile_to_shape(GMMA::Layout_K_SW64_Atom<Elem>{},
                                        make_shape(Int<Rows>{}, Int<TK>{}, Int<P>{})));
  static_assert(S >= 2, "the next block's copies need a stage of their own");
  __shared__ __align__(128) float ring[S][Rows * TK];
  __shared__ float warp_maxima[NT / 32];

  const int tid = threadIdx.x, ut = unit_thread<Rows, KContig>(tid);
  // blocks <= 2^31 - 1 (split_and_launch), so block + (S - 1) * step cannot wrap.
  const uint32_t step = gridDim.x;
  uint32_t block = blockIdx.x;
  const auto load = [&](uint32_t b, int s) {
    load_block<Rows, TK, KContig>(ring[s], x, ld, batch_stride, rows, k, row_tiles, k_tiles, b, blocks, tid);
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
  int it = 0;
  for (int64_t work = blockIdx.x; work < p.work; work += gridDim.x) {
    const ws::detail::TileWork w = ws::detail::tile_work<Cfg>(p, work);
    ws::detail::consume<Cfg>(p, w.tc, w.m0, w.n0, w.nk, partA, partB, full, empty,
                             [&](int s) { return make_int2(expA[s].x, expB[s].x); }, tid - Cfg::ProducerThreads, it);
    it += w.nk;
  }
}

// The base plan, the image block counts, and where the images sit in the workspace
// (after the base plan's split-K partials). SplitB = false: A's image only
// (split_gemm_hybrid_sm90.cuh), B's parts and exponents take no bytes.
template <class Cfg, bool SplitB = true>
struct WorkspaceLayout {
  split_gemm::detail::Plan plan;
  int64_t blocks_a = 0, blocks_b = 0;                                   // pre-pass grids
  size_t parts_a = 0, parts_b = 0, exps_a = 0, exps_b = 0, total = 0;  // byte offsets; total size

  static size_t align(size_t bytes) { return (bytes + 255) & ~size_t(255); }

  explicit WorkspaceLayout(const FactGemmProblem& pr)
      : plan(split_gemm::detail::make_plan<typename Cfg::Base>(pr)),
        blocks_a(int64_t(pr.batch) * plan.tiles_m * plan.k_tiles),
        blocks_b(SplitB ? int64_t(pr.batch) * plan.tiles_n * plan.k_tiles : 0) {
    parts_a = align(plan.workspace);  // the partials come first
    parts_b = parts_a + align(blocks_a * Cfg::Parts * Cfg::SlotBytesA);
    exps_a = parts_b + align(blocks_b * Cfg::Parts * Cfg::SlotBytesB);
    exps_b = exps_a + align(blocks_a * 16);
    total = exps_b + align(blocks_b * 16);
  }
};

// Host side shared by this kernel and split_gemm_hybrid_sm90.cuh: checks the workspace,
// splits A (and B where SplitB) into their images, then launches `kernel` with them
// through the base kernel's launch (plan, parameters, split-K reduce). `tag` names the
// kernel in error messages. persistent: one CTA per SM (`kernel` must loop over p.work).
template <class Cfg, bool SplitB>
int split_and_launch(const FactGemmProblem& pr, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                     std::string& why, void (*kernel)(Params), const char* tag, bool persistent) {
  using Elem = typename ws::detail::PartRing<Cfg>::Elem;
  const WorkspaceLayout<Cfg, SplitB> w(pr);
  if (w.total > workspace_bytes || workspace == nullptr) {
    why = std::string(tag) + ": workspace too small (" + std::to_string(workspace_bytes) + " < " +
          std::to_string(w.total) + " bytes)";
    return 1;
  }
  const split_gemm::detail::Plan& pl = w.plan;
  auto* base = static_cast<unsigned char*>(workspace);
  const Image<Elem> a{reinterpret_cast<Elem*>(base + w.parts_a), reinterpret_cast<int4*>(base + w.exps_a)};
  const Image<Elem> b{reinterpret_cast<Elem*>(base + w.parts_b), reinterpret_cast<int4*>(base + w.exps_b)};
  const int64_t blocks_a = w.blocks_a, blocks_b = w.blocks_b;
  if (blocks_a > 0x7fffffff || blocks_b > 0x7fffffff) {
    why = std::string(tag) + ": pre-pass grid too large";
    return 1;
  }
  // One wave of pre-pass CTAs (any grid splits every block; without the SM count, one CTA
  // per block).
  const int sms = split_gemm::detail::sm_count();
  const auto grid = [&](int64_t blocks) {
    return static_cast<unsigned>(sms > 0 ? std::min<int64_t>(blocks, int64_t(sms) * SplitCtasPerSm) : blocks);
  };
  // A is (m, k): K-contiguous when row-major. B is (k, n) as (n, k): K-contiguous when
  // column-major.
  if (blocks_a > 0) {
    split_operand_tiles<Cfg, Cfg::TileM, Cfg::ARowMajor, Elem><<<grid(blocks_a), SplitThreads, 0, stream>>>(
        static_cast<const float*>(pr.a), pr.ld_a, pr.batch_stride_a, pr.m, pr.k, pl.tiles_m, pl.k_tiles,
        static_cast<uint32_t>(blocks_a), a);
  }
  if constexpr (SplitB) {
    if (blocks_b > 0) {
      split_operand_tiles<Cfg, Cfg::TileN, !Cfg::BRowMajor, Elem><<<grid(blocks_b), SplitThreads, 0, stream>>>(
          static_cast<const float*>(pr.b), pr.ld_b, pr.batch_stride_b, pr.n, pr.k, pl.tiles_n, pl.k_tiles,
          static_cast<uint32_t>(blocks_b), b);
    }
  }
  if (cudaError_t st = cudaGetLastError(); st != cudaSuccess) {
    why = std::string(tag) + ": pre-pass launch: " + cudaGetErrorString(st);
    return static_cast<int>(st);
  }
  split_gemm::detail::PreSplitImages images{a.parts, SplitB ? b.parts : nullptr, a.exps, SplitB ? b.exps : nullptr};
  return split_gemm::detail::launch<typename Cfg::Base>(pr, workspace, workspace_bytes, stream, why, kernel,
                                                        Cfg::Threads, Cfg::SmemBytes, tag, images, persistent);
}

}  // namespace detail

// Persistent: one CTA per SM looping over the output tiles instead of one CTA per tile.
template <class Cfg, bool Persistent>
struct LaunchedAs : ws::BaseRequirements<Cfg> {
  static size_t workspace_size(const FactGemmProblem& pr) { return detail::WorkspaceLayout<Cfg>(pr).total; }

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
