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
//   WG0, WG1 (producers, setmaxnreg down to ProducerRegs): split_gemm_ws's two producer
//       groups (ws::detail::produce_tma; WG g converts the k-tiles kt = g mod 2) for B
//       alone: fp32 B tiles by TMA (zero-fill) into a LoadStages-deep fp32 ring; per
//       k-tile: read the units, PartsFp16Scaled: B's tile max (REDUX + the group's named
//       barrier), refill of the ring stage, wait empty[s], split8, K-major GMMA-swizzled
//       stores into B's half of part stage s, the group's thread 0 writes expB[s]; every
//       thread of the group fences (proxy.async) and arrives on full[s]. The group's
//       thread 0 arrives with expect_tx for A's bytes and issues two bulk copies
//       (cp.async.bulk: A's parts into A's half of stage s, A's exponent record into
//       expA[s]) completing on full[s].
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
// A's slots and expA[s] by the bulk copies that the converting group's thread 0 issues after
// its empty[s] wait)
// and read by the consumers between full[s] and empty[s]. The fp32 ring and the max
// slots belong to the producers.
//
// Hazards:
// - full[s] counts GroupThreads arrivals plus A's bytes. The group's thread 0 makes its single
//   arrival with arrive_and_expect_tx after its own B stores and fence (an arrival before
//   them would release stage s without them) and issues the bulk copies after it (the
//   phase cannot complete before the expected bytes are counted: tx-count > 0 until the
//   copies land).
// - B's part stores are generic-proxy writes read by wgmma (async proxy): each writer's
//   fence.proxy.async precedes its arrival. The bulk copies write through the async
//   proxy and complete on the mbarrier; they need no fence.
// - cp.async.bulk needs 16-byte aligned source, destination and size: A's image blocks
//   are Parts * TileM * TileK * 2 bytes after a 256-byte aligned workspace offset, the
//   exponent records are int4, and expA sits 16-byte aligned after the fp32 ring.
// - Large K with M = N = 256 (each A tile used by 2 CTAs): the pre-pass costs a pass over
//   A for almost no saving; split_gemm_ws stays the better kernel there.
//
// Workspace: the base kernel's split-K partials, then A's image and exponents
// (pre::detail::WorkspaceLayout<Cfg, false>). Requirements: ws::BaseRequirements (the base
// kernel's, and 32-bit TMA coordinates). Measured (H100, session 11, f16x3): bmm
// 128 x 512 x 2048 x 1024 2.09-2.12 ms persistent against pre's 2.22-2.25; 4096^3 0.89
// against pre's 0.66, so realize offers it only where B is re-read by few row tiles.
#pragma once

#include "split_gemm_pre_sm90.cuh"

namespace fact::split_gemm::hybrid {

// Stages: part ring depth. LoadStages (B's fp32 ring) is 4 where it fits, else 2 (a
// multiple of the producer groups).
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
  // empty[Stages] + loaded[up to 4], expB int[Stages], B's per-warp maxima [group][k-tile
  // parity][group warp], alignment slack.
  static constexpr size_t FixedBytes =
      C::Stages * C::PartStageBytes + C::Stages * (16 + 2 * 8 + 4) + 4 * 8 + 2 * ProducerWarps * 4 + 1024;
  static constexpr int LoadStages = FixedBytes + 4 * Fp32StageBytes <= 227 * 1024 ? 4 : 2;
  static_assert(LoadStages % ProducerGroups == 0, "each ring stage belongs to one producer group");
  static constexpr size_t SmemBytes = FixedBytes + LoadStages * Fp32StageBytes;
  static_assert(SmemBytes <= 227 * 1024, "shared memory over the sm90 limit: fewer Stages");
};

namespace detail {

using namespace cute;
using split_gemm::detail::Params;

// p is __grid_constant__: the TMA copies read B's descriptor in p where it is.
template <class Cfg>
__global__ void __launch_bounds__(Cfg::Threads, 1) split_gemm_kernel_hybrid(const __grid_constant__ Params p) {
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
  uint64_t* full = reinterpret_cast<uint64_t*>(expA + S);  // the group's arrivals + A's bytes
  uint64_t* empty = full + S;                              // one arrival per consumer thread
  uint64_t* loaded = empty + S;                            // TMA -> producers (B's ring)
  int* expB = reinterpret_cast<int*>(loaded + LS);
  float* max_slots = reinterpret_cast<float*>(expB + S);  // [group][k-tile parity][group warp]

  const int tid = threadIdx.x;
  if (tid == 0) {
#pragma unroll
    for (int ls = 0; ls < LS; ++ls) Barrier::init(&loaded[ls], 1);
    // (init_ring's fence_barrier_init and CTA barrier publish these inits too.)
  }
  ws::detail::init_ring<Cfg>(full, empty, Cfg::GroupThreads);  // full[s]: the converting group's threads + A's bytes

  // The CTA walks work items blockIdx.x, + gridDim.x, ... (ws::detail::RingCursor): one
  // per CTA (Operation) or several (PersistentOperation: while the consumers store tile
  // i, the producers already fill the stages they released with tile i + 1's k-tiles).
  if (tid < NP) {
    // ---------------- producer warpgroups ----------------
    cutlass::arch::warpgroup_reg_dealloc<Cfg::ProducerRegs>();
    constexpr int GT = Cfg::GroupThreads, G = Cfg::ProducerGroups;
    auto stageB = [&](int ls) { return ring + ls * Cfg::StageFloats; };
    using UB = ws::detail::Units<TN, TK, GT, BK>;
    LayoutB sLB;
    const int group = tid / GT, gtid = tid % GT;
    // 32-bit TMA coordinates (can_implement bounds n and k below 2^31).
    const auto load = [&](const ws::detail::RingCursor<Cfg>& c, int ls) {
      Barrier::arrive_and_expect_tx(&loaded[ls], static_cast<uint32_t>(Cfg::Fp32StageBytes));
      ws::detail::load_stage_tile<BK>(&p.stage_map_b, p.stage_maps_batched & 2, &loaded[ls], stageB(ls), c.n0,
                                      (c.k_tile0 + c.kt) * TK, c.batch);
    };
    ws::detail::load_first_stages<Cfg, LS>(p, group, gtid, load);
    ws::detail::RingCursor<Cfg> next(p, group + LS);
    int it0 = 0;
    for (int64_t work = blockIdx.x; work < p.work; work += gridDim.x) {
      const ws::detail::TileWork w = ws::detail::tile_work<Cfg>(p, work);
      const split_gemm::detail::TileCoord& tc = w.tc;
      // A's image blocks of this tile's k-range (each group's thread 0 copies its k-tiles').
      const int64_t blockA = (tc.batch * p.tiles_m + tc.tm) * int64_t(p.k_tiles) + w.kt_begin;
      const Elem* imgA = static_cast<const Elem*>(p.images.a) + blockA * (P * TM * TK);
      const int4* img_expA = p.images.exp_a + blockA;
      ws::detail::produce_tma<Cfg, LS>(
          it0, w.nk, empty, loaded, group, gtid,
          [&](int ls) {
            if (next.valid(p)) load(next, ls);
            next.advance(p, G);
          },
          [&](int ls, int s, int parity, const auto& empty_wait, const auto& stage_read) {
            const int e = ws::detail::convert_operand<GT, UB, P, F16, true>(
                stageB(ls), partB, sLB, s * P, max_slots + (group * 2 + parity) * (GT / 32), gtid, 1 + group,
                empty_wait, stage_read);
            if (gtid == 0) expB[s] = e;
          },
          [&](int kt, int s) {
            if (gtid == 0) {
              Barrier::arrive_and_expect_tx(&full[s], Cfg::ImageBytesA + 16);
              cute::SM90_BULK_COPY_G2S::copy(imgA + int64_t(kt) * (P * TM * TK), &full[s], partA + s * P * TM * TK,
                                             Cfg::ImageBytesA);
              cute::SM90_BULK_COPY_G2S::copy(img_expA + kt, &full[s], expA + s, 16);
            } else {
              Barrier::arrive(&full[s]);
            }
          });
      it0 += w.nk;
    }
    return;
  }

  // ---------------- consumer warpgroups ----------------
  cutlass::arch::warpgroup_reg_alloc<Cfg::ConsumerRegs>();
  int it0 = 0;
  for (int64_t work = blockIdx.x; work < p.work; work += gridDim.x) {
    const ws::detail::TileWork w = ws::detail::tile_work<Cfg>(p, work);
    ws::detail::consume<Cfg>(p, w.tc, w.m0, w.n0, w.nk, partA, partB, full, empty,
                             [&](int s) { return make_int2(expA[s].x, expB[s]); }, tid - NP, it0);
    it0 += w.nk;
  }
}

}  // namespace detail

// One CTA per output tile (Operation) or one persistent CTA per SM looping over the tiles
// (PersistentOperation).
template <class Cfg, bool Persistent>
struct LaunchedAs : ws::BaseRequirements<Cfg> {
  static size_t workspace_size(const FactGemmProblem& pr) {
    return pre::detail::WorkspaceLayout<Cfg, false>(pr).total;
  }

  static int run(const FactGemmProblem& pr, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                 std::string& why) {
    return pre::detail::split_and_launch<Cfg, false>(pr, workspace, workspace_bytes, stream, why,
                                                     detail::split_gemm_kernel_hybrid<Cfg>, "split_gemm_hybrid",
                                                     Persistent, ws::detail::StageMaps<Cfg, false>{pr.batch});
  }
};
template <class Cfg>
using Operation = LaunchedAs<Cfg, false>;
template <class Cfg>
using PersistentOperation = LaunchedAs<Cfg, true>;

}  // namespace fact::split_gemm::hybrid
