// FACT sm90a GEMM template: CUTLASS 3.x, TMA warp-specialized (cooperative /
// ping-pong), cluster shapes, persistent / stream-K / split-K tile scheduling,
// epilogues none / bias (row broadcast) / c (full matrix).
//
// I/O (Config::ElementIo, the variant name's 4th field): the element type of A, B,
// E (bias / C), the epilogue chain's inputs and D in memory.
//   float         fp32 I/O; the math modes below convert the operands.
//   half_t,       16-bit I/O: A and B are read by TMA as they are and multiplied by
//   bfloat16_t    wgmma of their own type (math f16 / bf16, no pre-pass) with fp32
//                 accumulation; the epilogue computes in fp32 (bias / C / chain inputs
//                 converted on load) and rounds once to D's type, as cuBLAS does for
//                 torch's fp16 / bf16 matmul. 16-byte units are 8 elements.
//
// Math modes on fp32 inputs (docs/CONTRACTS.md §3):
//   tf32          fp32 operands fed to TF32 wgmma directly. TF32 wgmma reads
//                 K-major operands only, so A must be row-major and B
//                 column-major (a static_assert; the enumerator never emits
//                 others: an N-contiguous B returned non-finite values).
//   bf16, f16     a pre-pass (convert_split.cuh) rounds each operand into a
//                 workspace, then a 16-bit GEMM accumulates in fp32.
//   f16x3         as bf16x3 with fp16 parts of power-of-two scaled operands
//                 (22 operand bits at the 16-bit rate; the unscale is in alpha).
//   bf16x3, x6    the pre-pass splits each operand into 2 / 3 bf16 parts laid
//                 side by side along K; ONE bf16 GEMM over K' = 3Kp / 6Kp
//                 sums the part products. Its mainloop is CUTLASS's FP8 one
//                 (MainloopSm90TmaGmmaWarpSpecializedFP8 -> GmmaFP8Accumulation),
//                 which adds the tensor-core partial sum into fp32 registers
//                 every mma_promotion_interval MMAs; we set that to one k-tile,
//                 so no tensor-core accumulation runs longer than TileK terms
//                 (long-K accuracy, BASELINES.md). It is used with bf16
//                 operands: nothing in it depends on FP8 element types.
//
// The generated translation unit instantiates Operation<Config<...>> and
// exports it with FACT_EXPORT_GEMM (templates/fact_export.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/sm90_mma_tma_gmma_ss_warpspecialized_fp8.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/gemm/kernel/tile_scheduler.hpp"
#include "cutlass/kernel_hardware_info.h"
#include "cutlass/numeric_types.h"
#include "cutlass/util/packed_stride.hpp"

#include "convert_split.cuh"
#include "cutlass_launch.cuh"
#include "fact/kernel_abi.h"

namespace fact::gemm_sm90 {

// ---- math modes -------------------------------------------------------------
// Element: the GEMM's operand type. Split: the pre-pass's part type. Terms:
// pre-pass segments (0 = no pre-pass). Promote: FP8-style promotion mainloop.
// Scaled: parts of the operand times a power of two (see MathF16x3).
template <class Element_, class Split_, int Terms, bool Promote, bool Scaled>
struct MathMode {
  using Element = Element_;
  using Split = Split_;
  static constexpr int kTerms = Terms;
  static constexpr bool kPromote = Promote;
  static constexpr bool kScaled = Scaled;
};

using MathTf32 = MathMode<float, float, 0, false, false>;
using MathBf16 = MathMode<cutlass::bfloat16_t, __nv_bfloat16, 1, false, false>;
using MathF16 = MathMode<cutlass::half_t, __half, 1, false, false>;
using MathBf16x3 = MathMode<cutlass::bfloat16_t, __nv_bfloat16, 3, true, false>;
using MathBf16x6 = MathMode<cutlass::bfloat16_t, __nv_bfloat16, 6, true, false>;
// hi = fp16(x * 2^s), lo = fp16(x * 2^s - hi) with a per-operand power of two
// 2^s from the operand's largest magnitude (fp16's range is narrow); the
// epilogue's alpha is divided by 2^(s_a + s_b) on the device.
using MathF16x3 = MathMode<cutlass::half_t, __half, 3, true, true>;

// Splits: >1 forces a split-K decomposition of the stream-K scheduler.
// Chain_: void, or a fact::epilogue_chain::Chain (epilogue_chain_sm90.cuh) whose
// generated functor replaces the none / bias / c epilogue; Epilogue_ then only
// says what the problem's e is (the chain reads it as its GemmSource input).
template <class Math_, class ElementIo_, int TileM_, int TileN_, int TileK_, int ClusterM_, int ClusterN_,
          class KernelSchedule_, class EpilogueSchedule_, class TileScheduler_, int Splits_, int Stages_,
          class LayoutA_, class LayoutB_, int Epilogue_, class Chain_ = void>
struct Config {
  using Math = Math_;
  using ElementIo = ElementIo_;
  static constexpr int kTileM = TileM_, kTileN = TileN_, kTileK = TileK_;
  static constexpr int kClusterM = ClusterM_, kClusterN = ClusterN_;
  using KernelSchedule = KernelSchedule_;
  using EpilogueSchedule = EpilogueSchedule_;
  using TileScheduler = TileScheduler_;
  static constexpr int kSplits = Splits_;
  static constexpr int kStages = Stages_;  // 0 = as many as fit (builder carve-out)
  using LayoutA = LayoutA_;
  using LayoutB = LayoutB_;
  static constexpr int kEpilogue = Epilogue_;
  using Chain = Chain_;
};

namespace detail {

template <class Stride>
Stride make_stride(int64_t ld, int64_t batch_stride) {
  // K-major (or row-major D/C): (ld, 1, batch); MN-major: (1, ld, batch).
  if constexpr (cute::is_static_v<cute::remove_cvref_t<decltype(cute::get<0>(Stride{}))>>) {
    return Stride{cute::Int<1>{}, ld, batch_stride};
  } else {
    return Stride{ld, cute::Int<1>{}, batch_stride};
  }
}

// D = alpha * acc + beta * bias[n] (bias broadcast over rows, batch stride dynamic),
// computed in fp32 and rounded once to D's type; the bias has D's type (ElementIo).
template <class CtaTile, class ElementIo>
using BiasCallbacks = cutlass::epilogue::fusion::Sm90EVT<
    cutlass::epilogue::fusion::Sm90Compute<cutlass::homogeneous_multiply_add, ElementIo, float,
                                           cutlass::FloatRoundStyle::round_to_nearest>,
    cutlass::epilogue::fusion::Sm90ScalarBroadcast<float>,
    cutlass::epilogue::fusion::Sm90RowBroadcast<0, CtaTile, ElementIo, float,
                                                cute::Stride<cute::_0, cute::_1, int64_t>>,
    cutlass::epilogue::fusion::Sm90EVT<
        cutlass::epilogue::fusion::Sm90Compute<cutlass::multiplies, float, float,
                                               cutlass::FloatRoundStyle::round_to_nearest>,
        cutlass::epilogue::fusion::Sm90ScalarBroadcast<float>, cutlass::epilogue::fusion::Sm90AccFetch>>;

// Re-declares the builder's mainloop with the promotion (FP8) dispatch policy,
// keeping every layout / copy / MMA choice the builder made for the operand type.
template <class Built, class ClusterShape, class KernelSchedule>
using PromotedMainloop = cutlass::gemm::collective::CollectiveMma<
    cutlass::gemm::MainloopSm90TmaGmmaWarpSpecializedFP8<Built::DispatchPolicy::Stages, ClusterShape, KernelSchedule>,
    typename Built::TileShape, typename Built::ElementA, typename Built::StrideA, typename Built::ElementB,
    typename Built::StrideB, typename Built::TiledMma, typename Built::GmemTiledCopyA,
    typename Built::SmemLayoutAtomA, typename Built::SmemCopyAtomA, typename Built::TransformA,
    typename Built::GmemTiledCopyB, typename Built::SmemLayoutAtomB, typename Built::SmemCopyAtomB,
    typename Built::TransformB>;

inline size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

inline int sm_count_of_current_device() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  // Cached per device: the query costs a driver call on every launch otherwise.
  static int cached[64] = {};
  if (device >= 0 && device < 64) {
    if (cached[device] == 0) cached[device] = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(device);
    return cached[device];
  }
  return cutlass::KernelHardwareInfo::query_device_multiprocessor_count(device);
}

}  // namespace detail

template <class Cfg>
struct Operation {
  using Math = typename Cfg::Math;
  using Element = typename Math::Element;  // what wgmma multiplies
  using ElementIo = typename Cfg::ElementIo;
  static constexpr bool kIo16 = !std::is_same_v<ElementIo, float>;
  static_assert(!kIo16 || (std::is_same_v<ElementIo, Element> && !Math::kPromote && !Math::kScaled),
                "16-bit I/O runs the single-product math mode of its own type (MathF16 / MathBf16)");
  static constexpr int kTerms = Math::kTerms;
  // 16-bit I/O reads A and B as they are; fp32 I/O converts them unless the math is tf32.
  static constexpr bool kPrepass = kTerms > 0 && !kIo16;
  static constexpr bool kAKmajor = std::is_same_v<typename Cfg::LayoutA, cutlass::layout::RowMajor>;     // A K-major
  static constexpr bool kBKmajor = std::is_same_v<typename Cfg::LayoutB, cutlass::layout::ColumnMajor>;  // B K-major
  static_assert(kPrepass || kIo16 || (kAKmajor && kBKmajor),
                "TF32 wgmma needs K-major operands (A row-major, B column-major)");

  using TileShape = cute::Shape<cute::Int<Cfg::kTileM>, cute::Int<Cfg::kTileN>, cute::Int<Cfg::kTileK>>;
  using ClusterShape = cute::Shape<cute::Int<Cfg::kClusterM>, cute::Int<Cfg::kClusterN>, cute::_1>;
  using LayoutD = cutlass::layout::RowMajor;
  static constexpr int kAlignAB = 128 / cutlass::sizeof_bits<Element>::value;
  // Elements per 16 bytes of A and B as read from memory (TMA), and of D, C and bias.
  static constexpr int kAlignIn = kPrepass ? 1 : kAlignAB;
  static constexpr int kAlignD = 128 / cutlass::sizeof_bits<ElementIo>::value;
  static constexpr const char* kIoName = !kIo16 ? "fp32" : std::is_same_v<ElementIo, cutlass::half_t> ? "fp16" : "bf16";

  using Chain = typename Cfg::Chain;
  static constexpr bool kChain = !std::is_void_v<Chain>;
  template <class C, bool = kChain>
  struct ChainTypes {
    using ElementC = typename C::template ElementC<ElementIo>;
    using FusionOp = typename C::template Callbacks<TileShape, ElementIo>;
  };
  template <class C>
  struct ChainTypes<C, false> {
    using ElementC = std::conditional_t<Cfg::kEpilogue == FACT_EPILOGUE_C, ElementIo, void>;
    using FusionOp =
        std::conditional_t<Cfg::kEpilogue == FACT_EPILOGUE_BIAS, detail::BiasCallbacks<TileShape, ElementIo>,
                           cutlass::epilogue::fusion::LinearCombination<ElementIo, float, ElementC, float>>;
  };
  using ElementC = typename ChainTypes<Chain>::ElementC;
  using FusionOp = typename ChainTypes<Chain>::FusionOp;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, ElementC, LayoutD, kAlignD, ElementIo, LayoutD,
      kAlignD, typename Cfg::EpilogueSchedule, FusionOp>::CollectiveOp;

  using StageCount = std::conditional_t<
      Cfg::kStages == 0,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      cutlass::gemm::collective::StageCount<(Cfg::kStages > 0 ? Cfg::kStages : 2)>>;

  using BuiltMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, typename Cfg::LayoutA, kAlignAB, Element,
      typename Cfg::LayoutB, kAlignAB, float, TileShape, ClusterShape, StageCount,
      typename Cfg::KernelSchedule>::CollectiveOp;

  using CollectiveMainloop =
      std::conditional_t<Math::kPromote,
                         detail::PromotedMainloop<BuiltMainloop, ClusterShape, typename Cfg::KernelSchedule>,
                         BuiltMainloop>;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, CollectiveMainloop,
                                                      CollectiveEpilogue, typename Cfg::TileScheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  using StrideA = typename Gemm::GemmKernel::StrideA;
  using StrideB = typename Gemm::GemmKernel::StrideB;
  using StrideC = typename Gemm::GemmKernel::StrideC;
  using StrideD = typename Gemm::GemmKernel::StrideD;

  // Promotion once per k-tile: TileK / 16 bf16 MMAs (the FP8 mainloop requires a
  // multiple of the MMAs issued per k-tile).
  static constexpr uint32_t kPromotionInterval = Cfg::kTileK / 16;
  // Segment length of the pre-pass image: a multiple of TileK so no k-tile
  // straddles two segments.
  static constexpr int64_t kKAlign = Cfg::kTileK;

  static fact::split::SplitGeometry geometry_a(const FactGemmProblem& p) {
    fact::split::SplitGeometry g{};
    g.rows = p.m; g.k = p.k; g.k_major = kAKmajor; g.ld = p.ld_a; g.batch_stride = p.batch_stride_a;
    g.batches = p.batch; g.kp = fact::split::SplitGeometry::round_up(p.k, kKAlign); g.segments = kTerms;
    return g;
  }
  static fact::split::SplitGeometry geometry_b(const FactGemmProblem& p) {
    fact::split::SplitGeometry g{};
    g.rows = p.n; g.k = p.k; g.k_major = kBKmajor; g.ld = p.ld_b; g.batch_stride = p.batch_stride_b;
    g.batches = p.batch; g.kp = fact::split::SplitGeometry::round_up(p.k, kKAlign); g.segments = kTerms;
    return g;
  }
  static size_t image_bytes(const fact::split::SplitGeometry& g) {
    return detail::align_up(static_cast<size_t>(g.dst_batch_elems() * g.batches) * sizeof(Element), 256);
  }

  // Arguments of the CUTLASS GEMM on the operands it actually reads (the
  // pre-pass images, or the inputs as they are for tf32 and 16-bit I/O).
  // alpha_ptr (device, may be null): the scaled modes' alpha, read instead of p.alpha.
  static typename Gemm::Arguments make_arguments(const FactGemmProblem& p, const Element* a, const Element* b,
                                                 const float* alpha_ptr = nullptr) {
    int64_t k_eff = p.k, lda = p.ld_a, ldb = p.ld_b, bsa = p.batch_stride_a, bsb = p.batch_stride_b;
    if constexpr (kPrepass) {
      const auto ga = geometry_a(p), gb = geometry_b(p);
      k_eff = ga.kp * kTerms;
      lda = ga.dst_ld(); bsa = ga.dst_batch_elems();
      ldb = gb.dst_ld(); bsb = gb.dst_batch_elems();
    }
    typename Gemm::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    args.problem_shape = cute::make_shape(static_cast<int>(p.m), static_cast<int>(p.n), static_cast<int>(k_eff),
                                          static_cast<int>(p.batch));
    args.mainloop.ptr_A = a;
    args.mainloop.dA = detail::make_stride<StrideA>(lda, bsa);
    args.mainloop.ptr_B = b;
    args.mainloop.dB = detail::make_stride<StrideB>(ldb, bsb);
    if constexpr (Math::kPromote) args.mainloop.mma_promotion_interval = kPromotionInterval;

    args.epilogue.ptr_D = static_cast<ElementIo*>(p.d);
    args.epilogue.dD = detail::make_stride<StrideD>(p.ld_d, p.batch_stride_d);
    if constexpr (kChain) {
      args.epilogue.thread = Chain::template arguments<TileShape, ElementIo>(p, alpha_ptr);
      if constexpr (Chain::kReadsC) {
        args.epilogue.ptr_C = static_cast<const ElementIo*>(Chain::c_pointer(p));
        args.epilogue.dC = detail::make_stride<StrideC>(Chain::c_ld(p), Chain::c_batch_stride(p));
      } else {
        args.epilogue.ptr_C = nullptr;
        args.epilogue.dC = detail::make_stride<StrideC>(p.ld_d, p.batch_stride_d);
      }
    } else if constexpr (Cfg::kEpilogue == FACT_EPILOGUE_BIAS) {
      args.epilogue.thread = {
          {{p.beta}},
          {static_cast<const ElementIo*>(p.e), ElementIo(0), {cute::_0{}, cute::_1{}, p.batch_stride_e}},
          {{{p.alpha}, {alpha_ptr}}, {}, {}},
          {}};
      args.epilogue.ptr_C = nullptr;
      args.epilogue.dC = detail::make_stride<StrideC>(p.ld_d, p.batch_stride_d);
    } else if constexpr (Cfg::kEpilogue == FACT_EPILOGUE_C) {
      args.epilogue.thread.alpha = p.alpha;
      args.epilogue.thread.alpha_ptr = alpha_ptr;
      args.epilogue.thread.beta = p.beta;
      args.epilogue.ptr_C = static_cast<const ElementIo*>(p.e);
      args.epilogue.dC = detail::make_stride<StrideC>(p.ld_e, p.batch_stride_e);
    } else {
      args.epilogue.thread.alpha = p.alpha;
      args.epilogue.thread.alpha_ptr = alpha_ptr;
      args.epilogue.thread.beta = 0.f;
      args.epilogue.ptr_C = nullptr;
      args.epilogue.dC = detail::make_stride<StrideC>(p.ld_d, p.batch_stride_d);
    }

    int device = 0;
    cudaGetDevice(&device);
    args.hw_info.device_id = device;
    args.hw_info.sm_count = detail::sm_count_of_current_device();
    if constexpr (std::is_same_v<typename Cfg::TileScheduler, cutlass::gemm::StreamKScheduler>) {
      using Mode = cutlass::gemm::kernel::detail::DecompositionMode;
      args.scheduler.splits = Cfg::kSplits;
      args.scheduler.decomposition_mode = Cfg::kSplits > 1 ? Mode::SplitK : Mode::StreamK;
    }
    return args;
  }

  static int can_implement(const FactGemmProblem& p, std::string& why) {
    auto aligned16 = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
    if (p.batch < 1 || p.m < 1 || p.n < 1 || p.k < 1) {
      why = "batch, m, n and k must be positive";
      return 1;
    }
    const int64_t limit = INT32_MAX;
    const int64_t k_eff = kPrepass ? fact::split::SplitGeometry::round_up(p.k, kKAlign) * kTerms : p.k;
    if (p.m > limit || p.n > limit || k_eff > limit || p.batch > limit) {
      why = "a problem extent (m, n, k x terms, batch) exceeds 2^31-1";
      return 1;
    }
    if (p.a == nullptr || p.b == nullptr || p.d == nullptr) {
      why = "null operand pointer";
      return 1;
    }
    const std::string units = std::to_string(kAlignD) + " (" + kIoName + ")";
    if (p.ld_d < p.n || p.ld_d % kAlignD != 0 || (p.batch > 1 && p.batch_stride_d % kAlignD != 0) || !aligned16(p.d)) {
      why = "D needs ld_d >= n, ld_d and batch_stride_d multiples of " + units +
            " and a 16-byte aligned pointer (TMA store)";
      return 1;
    }
    if (Cfg::kEpilogue != FACT_EPILOGUE_NONE && p.e == nullptr) {
      why = "this variant's epilogue reads E, but E is null";
      return 1;
    }
    if (Cfg::kEpilogue == FACT_EPILOGUE_BIAS && (!aligned16(p.e) || (p.batch > 1 && p.batch_stride_e % kAlignD != 0))) {
      why = "bias vector needs a 16-byte aligned pointer and a batch stride that is a multiple of " + units;
      return 1;
    }
    if (Cfg::kEpilogue == FACT_EPILOGUE_C && (p.ld_e < p.n || p.ld_e % kAlignD != 0 ||
                                              (p.batch > 1 && p.batch_stride_e % kAlignD != 0) || !aligned16(p.e))) {
      why = "C needs ld_e >= n, ld_e and batch_stride_e multiples of " + units +
            " and a 16-byte aligned pointer (TMA load)";
      return 1;
    }
    if constexpr (kChain) {
      if (p.num_leaves < Chain::kLeaves) {
        why = "this variant's epilogue chain reads " + std::to_string(Chain::kLeaves) + " leaf tensor(s), the problem "
              "passes " + std::to_string(p.num_leaves);
        return 1;
      }
      if (Chain::template can_implement<ElementIo>(p, why) != 0) return 1;
    }
    if (p.ld_a < (kAKmajor ? p.k : p.m) || p.ld_b < (kBKmajor ? p.k : p.n)) {
      why = "leading dimension of A or B is smaller than its contiguous extent";
      return 1;
    }
    if constexpr (!kPrepass) {
      // A and B are read by TMA as they are (tf32, 16-bit I/O): 16-byte aligned rows and
      // batches. The contiguous extent of a K-major operand is k, of an MN-major one m / n.
      const std::string in_units = std::to_string(kAlignIn) + " (" + kIoName + ")";
      const int64_t a_contig = kAKmajor ? p.k : p.m, b_contig = kBKmajor ? p.k : p.n;
      if (!aligned16(p.a) || !aligned16(p.b) || p.ld_a % kAlignIn != 0 || p.ld_b % kAlignIn != 0 ||
          a_contig % kAlignIn != 0 || b_contig % kAlignIn != 0) {
        why = "A and B are read by TMA as they are: they need 16-byte aligned pointers, ld and contiguous extents "
              "multiples of " + in_units;
        return 1;
      }
      if (p.batch > 1 && (p.batch_stride_a % kAlignIn != 0 || p.batch_stride_b % kAlignIn != 0 ||
                          p.batch_stride_a == 0 || p.batch_stride_b == 0)) {
        why = "A and B are read by TMA as they are: batch strides must be non-zero multiples of " + in_units +
              " (an operand shared across the batch is not supported by this variant)";
        return 1;
      }
    }
    Gemm gemm;
    auto args = make_arguments(p, nullptr, nullptr);
    // Pre-pass images are 256-byte aligned workspace slices: null stands in for them
    // here because CUTLASS's check looks at extents and strides only.
    cutlass::Status status = gemm.can_implement(args);
    if (status != cutlass::Status::kSuccess) {
      why = std::string("CUTLASS can_implement: ") + cutlassGetStatusString(status);
      return 1;
    }
    return 0;
  }

  // Scaled modes: [amax bits of A, amax bits of B, alpha / 2^(s_a + s_b)].
  static constexpr size_t kScalarBytes = 256;

  static size_t gemm_workspace_bytes(const FactGemmProblem& p) {
    return Gemm::get_workspace_size(make_arguments(p, nullptr, nullptr));
  }

  static size_t workspace_size(const FactGemmProblem& p) {
    size_t bytes = 0;
    if constexpr (kPrepass) bytes += image_bytes(geometry_a(p)) + image_bytes(geometry_b(p));
    if constexpr (Math::kScaled) bytes += kScalarBytes;
    return bytes + detail::align_up(gemm_workspace_bytes(p), 256);
  }

  static int run(const FactGemmProblem& p, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                 std::string& why) {
    const size_t need = workspace_size(p);
    if (need > 0 && (workspace == nullptr || workspace_bytes < need)) {
      why = "workspace too small: need " + std::to_string(need) + " bytes, got " + std::to_string(workspace_bytes);
      return 2;
    }
    if (need > 0 && reinterpret_cast<uintptr_t>(workspace) % 256 != 0) {
      why = "workspace must be 256-byte aligned";
      return 2;
    }
    char* cursor = static_cast<char*>(workspace);
    float* alpha_ptr = nullptr;
    const Element* a = static_cast<const Element*>(p.a);
    const Element* b = static_cast<const Element*>(p.b);
    if constexpr (kPrepass) {
      using Split = typename Math::Split;
      static_assert(sizeof(Split) == sizeof(Element), "pre-pass type must match the GEMM operand type");
      const auto ga = geometry_a(p), gb = geometry_b(p);
      auto* image_a = reinterpret_cast<Split*>(cursor);
      cursor += image_bytes(ga);
      auto* image_b = reinterpret_cast<Split*>(cursor);
      cursor += image_bytes(gb);
      unsigned* amax = nullptr;
      cudaError_t err = cudaSuccess;
      if constexpr (Math::kScaled) {
        amax = reinterpret_cast<unsigned*>(cursor);
        alpha_ptr = reinterpret_cast<float*>(cursor + 2 * sizeof(unsigned));
        cursor += kScalarBytes;
        err = cudaMemsetAsync(amax, 0, 2 * sizeof(unsigned), stream);
        if (err == cudaSuccess) err = fact::split::operand_amax(static_cast<const float*>(p.a), ga, amax, stream);
        if (err == cudaSuccess) err = fact::split::operand_amax(static_cast<const float*>(p.b), gb, amax + 1, stream);
        if (err == cudaSuccess) {
          fact::split::scaled_alpha_kernel<<<1, 1, 0, stream>>>(p.alpha, amax, alpha_ptr);
          err = cudaGetLastError();
        }
      }
      if (err == cudaSuccess)
        err = fact::split::split_operand<Split, kTerms>(static_cast<const float*>(p.a), ga, image_a, true, stream,
                                                        amax);
      if (err == cudaSuccess)
        err = fact::split::split_operand<Split, kTerms>(static_cast<const float*>(p.b), gb, image_b, false, stream,
                                                        amax ? amax + 1 : nullptr);
      if (err != cudaSuccess) {
        why = std::string("operand pre-pass launch: ") + cudaGetErrorString(err);
        return static_cast<int>(err);
      }
      a = reinterpret_cast<const Element*>(image_a);
      b = reinterpret_cast<const Element*>(image_b);
    }
    auto args = make_arguments(p, a, b, alpha_ptr);
    cutlass::Status status = Gemm::can_implement(args);
    if (status != cutlass::Status::kSuccess) {
      why = std::string("CUTLASS can_implement: ") + cutlassGetStatusString(status);
      return 3;
    }
    const size_t gemm_bytes = Gemm::get_workspace_size(args);
    return fact::cutlass_launch::initialize_and_run<Gemm>(args, gemm_bytes ? cursor : nullptr, stream, why);
  }
};

}  // namespace fact::gemm_sm90
