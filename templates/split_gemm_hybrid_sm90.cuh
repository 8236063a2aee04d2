// FACT fp32-faithful GEMM for Hopper (sm90a), v3 "hybrid": A split once by a pre-pass,
// B split in the kernel. Same arithmetic, results and Operation<Config> interface as
// templates/split_gemm_ws_sm90.cuh and templates/split_gemm_pre_sm90.cuh (fp32 operands
// split into 16-bit parts, Terms products per multiply-add on wgmma, fp32 promotion after
// every 32-wide k-tile, PartsFp16Scaled: a power-of-two scale per 128 x 32 operand tile):
//
//   pre-pass (pre::detail::split_operand_tiles, A only): each (batch, 128-row tile,
//       k-tile) block of A becomes Parts 16-bit slots laid out byte for byte as the A half
//       of a part-ring stage, plus its tile exponent (16 bytes), zero-filled outside the
//       problem.
//   main kernel: CTA = 4 warpgroups (512 threads), one 128 x TileN output tile, 1 CTA/SM.
//   WG0, WG1 (producers, setmaxnreg down to ProducerRegs): split_gemm_ws's producers for
//       B alone (ws::detail::produce): cp.async fp32 B tiles (zero-fill) into a private
//       LoadStages-deep fp32 ring; per k-tile: read their 8-wide units, PartsFp16Scaled:
//       B's tile max (REDUX + named barrier 1), wait empty[s], split8, K-major
//       GMMA-swizzled stores into B's half of part stage s, thread 0 writes expB[s]; every
//       producer thread fences (proxy.async) and arrives on full[s]. Thread 0 arrives
//       with expect_tx for A's bytes and issues two bulk copies (cp.async.bulk: A's parts
//       into A's half of stage s, A's exponent record into expA[s]) completing on
//       full[s]. Then each producer thread issues its copies of B tile kt + LoadStages - 1
//       (late loads, below).
//   WG2, WG3 (consumers): split_gemm_ws's (ws::detail::consume), exponents (expA[s].x,
//       expB[s]).
//
// Why: split_gemm_pre splits both operands once, which pays where the GEMM re-reads them
// often, but on the batched shape (B is 1 GiB fp32, each B tile re-read only M / 128 = 4
// times) its pre-pass writes and the main kernel re-reads B's image for little gain,
// while split_gemm_ws re-converts every A tile N / 128 = 16 times and is latency-bound in
// its producers. Here the operand re-converted most (A on the square and batched shapes)
// is split once, and the producers convert half of what split_gemm_ws's convert
// (docs/notes/split_gemm.md, "v3 hybrid").
//
// Bit-identical to split_gemm_ws and split_gemm_pre: the same 128 x 32 tiles and zero
// fill, tile maxima, exponents, split8, products, promotion and epilogue.
//
// Ownership: part stage s (A's slots, B's slots, expA[s], expB[s]) is written between
// empty[s] and full[s] (B's slots and expB[s] by the producer threads' generic stores,
// A's slots and expA[s] by the bulk copies that thread 0 issues after its empty[s] wait)
// and read by the consumers between full[s] and empty[s]. The fp32 ring and the max
// slots belong to the producers.
//
// Hazards:
// - full[s] counts ProducerThreads arrivals plus A's bytes. Thread 0 makes its single
//   arrival with arrive_and_expect_tx after its own B stores and fence (an arrival before
//   them would release stage s without them) and issues the bulk copies after it (the
//   phase cannot complete before the expected bytes are counted: tx-count > 0 until the
//   copies land).
// - B's part stores are generic-proxy writes read by wgmma (async proxy): each writer's
//   fence.proxy.async precedes its arrival. The bulk copies write through the async
//   proxy and complete on the mbarrier; they need no fence.
// - The proxy fence compiles to MEMBAR.ALL.CTA + FENCE.VIEW.ASYNC.S. If the MEMBAR waits
//   for the thread's in-flight cp.async (unmeasured; a candidate for split_gemm_ws's
//   ~0.9 us per k-tile that its conversion does not explain), copies issued before the
//   conversion would put a global load latency into every k-tile; issued after the
//   arrival, they are one conversion old when the next fence meets them. Thread 0's
//   bulk copies come after its fence for the same reason.
// - cp.async.bulk needs 16-byte aligned source, destination and size: A's image blocks
//   are Parts * TileM * TileK * 2 bytes after a 256-byte aligned workspace offset, the
//   exponent records are int4, and expA sits 16-byte aligned after the fp32 ring.
// - Large K with M = N = 256 (each A tile used by 2 CTAs): the pre-pass costs a pass over
//   A for almost no saving; split_gemm_ws stays the better kernel there.
//
// Workspace: the base kernel's split-K partials, then A's image and exponents
// (pre::detail::WorkspaceLayout<Cfg, false>). Requirements: the base kernel's.
#pragma once

#include "split_gemm_pre_sm90.cuh"

namespace fact::split_gemm::hybrid {

// Stages: part ring depth. LoadStages (B's fp32 ring) is the deepest of 4, 3, 2 that fits.
template <int TileM_, int TileN_, int TileK_, int Terms_, bool ARowMajor_, bool BRowMajor_,
          int Epilogue_, int Stages_, int Format_ = PartsBf16, class Chain_ = void>
struct Config
    : ws::ConsumerConfig<TileM_, TileN_, TileK_, Terms_, ARowMajor_, BRowMajor_, Epilogue_, Stages_, Format_, Chain_>,
      ws::ConvertingProducers {
  using C =
      ws::ConsumerConfig<TileM_, TileN_, TileK_, Terms_, ARowMajor_, BRowMajor_, Epilogue_, Stages_, Format_, Chain_>;
  static constexpr int Threads = ProducerThreads + C::ConsumerThreads;
  static constexpr uint32_t ImageBytesA = uint32_t(C::Parts * C::SlotBytesA);  // one bulk copy per k-tile
  static_assert(ImageBytesA % 16 == 0, "cp.async.bulk copies multiples of 16 bytes");

  static constexpr int StageFloats = C::TileN * C::TileK;  // B only
  static constexpr size_t Fp32StageBytes = size_t(StageFloats) * 4;
  // Part ring, expA int4[Stages] (bulk-copy destinations), mbarriers full[Stages] +
  // empty[Stages], expB int[Stages], B's per-warp maxima [ProducerWarps], alignment slack.
  static constexpr size_t FixedBytes =
      C::Stages * C::PartStageBytes + C::Stages * (16 + 2 * 8 + 4) + ProducerWarps * 4 + 1024;
  static constexpr int LoadStages = FixedBytes + 4 * Fp32StageBytes <= 227 * 1024   ? 4
                                    : FixedBytes + 3 * Fp32StageBytes <= 227 * 1024 ? 3
                                                                                    : 2;
  static constexpr size_t SmemBytes = FixedBytes + LoadStages * Fp32StageBytes;
  static_assert(SmemBytes <= 227 * 1024, "shared memory over the sm90 limit: fewer Stages");
};

namespace detail {

using namespace cute;
using split_gemm::detail::Params;

// Converts the landed B stage of the fp32 ring into its parts (all NP producer threads)
// and returns its tile exponent (0 for PartsBf16): ws::detail::convert_operands for one
// operand.
template <int NP, class U, int Parts, bool Fp16, class Elem, class Layout, class EmptyWait>
__device__ __forceinline__ int convert_operand(const float* stage, Elem* buf, Layout layout, int slot, float* slots,
                                               int tid, EmptyWait empty_wait) {
  float v[U::N][8];
  U::read(stage, v, tid);
  int e[1] = {0};
  if constexpr (Fp16) {
    const float m[1] = {ws::detail::warp_max(U::absmax(v))};
    ws::detail::tile_exponents<NP>(m, slots, tid, e);
  }
  empty_wait();
  U::template store<Parts, Fp16>(v, buf, layout, slot, split_gemm::detail::pow2(14 - e[0]), tid);
  return e[0];
}

template <class Cfg>
__global__ void __launch_bounds__(Cfg::Threads, 1) split_gemm_kernel_hybrid(const Params p) {
  using Elem = typename ws::detail::PartRing<Cfg>::Elem;
  using LayoutB = typename ws::detail::PartRing<Cfg>::LayoutB;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  constexpr int TM = Cfg::TileM, TN = Cfg::TileN, TK = Cfg::TileK, S = Cfg::Stages, LS = Cfg::LoadStages;
  constexpr int P = Cfg::Parts, NP = Cfg::ProducerThreads;
  constexpr bool F16 = Cfg::Format == PartsFp16Scaled;
  constexpr bool BK = !Cfg::BRowMajor;  // B is K-contiguous

  // Layout (ownership: see the header comment). 1024-byte alignment by pointer arithmetic
  // on smem_raw, as in split_gemm_ws (keeps the shared state space).
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t misalign = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) & 1023u;
  Elem* partA = reinterpret_cast<Elem*>(smem_raw + ((1024u - misalign) & 1023u));
  Elem* partB = partA + S * P * TM * TK;
  float* ring = reinterpret_cast<float*>(partB + S * P * TN * TK);  // B's fp32 stages
  int4* expA = reinterpret_cast<int4*>(ring + LS * Cfg::StageFloats);
  uint64_t* full = reinterpret_cast<uint64_t*>(expA + S);  // NP arrivals + A's bytes
  uint64_t* empty = full + S;                              // one arrival per consumer thread
  int* expB = reinterpret_cast<int*>(empty + S);
  float* max_slots = reinterpret_cast<float*>(expB + S);  // [producer warp]

  const int tid = threadIdx.x;
  const ws::detail::TileWork w = ws::detail::begin_tile<Cfg>(p, full, empty, NP);
  const split_gemm::detail::TileCoord& tc = w.tc;

  if (tid < NP) {
    // ---------------- producer warpgroups ----------------
    cutlass::arch::warpgroup_reg_dealloc<Cfg::ProducerRegs>();
    const float* B = p.b + tc.batch * p.batch_stride_b;
    const int64_t k_first = int64_t(w.kt_begin) * TK;
    const ws::detail::StageLoader<TN, TK, NP, BK> loadB(B, p.ld_b, w.n0, p.n, k_first, tid);
    auto stageB = [&](int ls) { return ring + ls * Cfg::StageFloats; };
    using UB = ws::detail::Units<TN, TK, NP, BK>;
    LayoutB sLB;
    // A's image blocks of this tile's k-range (thread 0 copies them).
    const int64_t blockA = (tc.batch * p.tiles_m + tc.tm) * int64_t(p.k_tiles) + w.kt_begin;
    const Elem* imgA = static_cast<const Elem*>(p.images.a) + blockA * (P * TM * TK);
    const int4* img_expA = p.images.exp_a + blockA;
    // Late loads: see the fence hazard in the header comment.
    ws::detail::produce<Cfg, LS, true>(
        w.nk, k_first, empty, [&](int kt, int ls, int64_t k0) { loadB.load(stageB(ls), kt, k0, p.k); },
        [&](int ls, int s, const auto& empty_wait) {
          const int e = convert_operand<NP, UB, P, F16>(stageB(ls), partB, sLB, s * P, max_slots, tid, empty_wait);
          if (tid == 0) expB[s] = e;
        },
        [&](int kt, int s) {
          if (tid == 0) {
            Barrier::arrive_and_expect_tx(&full[s], Cfg::ImageBytesA + 16);
            cute::SM90_BULK_COPY_G2S::copy(imgA + int64_t(kt) * (P * TM * TK), &full[s], partA + s * P * TM * TK,
                                           Cfg::ImageBytesA);
            cute::SM90_BULK_COPY_G2S::copy(img_expA + kt, &full[s], expA + s, 16);
          } else {
            Barrier::arrive(&full[s]);
          }
        });
    return;
  }

  // ---------------- consumer warpgroups ----------------
  cutlass::arch::warpgroup_reg_alloc<Cfg::ConsumerRegs>();
  ws::detail::consume<Cfg>(p, tc, w.m0, w.n0, w.nk, partA, partB, full, empty,
                           [&](int s) { return make_int2(expA[s].x, expB[s]); }, tid - NP);
}

}  // namespace detail

template <class Cfg>
struct Operation : ws::BaseRequirements<Cfg> {
  static size_t workspace_size(const FactGemmProblem& pr) {
    return pre::detail::WorkspaceLayout<Cfg, false>(pr).total;
  }

  static int run(const FactGemmProblem& pr, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                 std::string& why) {
    return pre::detail::split_and_launch<Cfg, false>(pr, workspace, workspace_bytes, stream, why,
                                                     detail::split_gemm_kernel_hybrid<Cfg>, "split_gemm_hybrid",
                                                     /*persistent*/ false);
  }
};

}  // namespace fact::split_gemm::hybrid
