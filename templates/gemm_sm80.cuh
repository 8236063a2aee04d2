// FACT sm80 GEMM template: CUTLASS 2.x GemmUniversal on fp32 operands, the
// fallback family (runs on A100 and, slowly, on Hopper):
//   MathSimt    fp32 FFMA (OpClassSimt), exact fp32 accumulation.
//   MathTf32x3  3xTF32 (OpMultiplyAddFastF32): each operand split into big +
//               small TF32 parts, three tensor-core products, fp32-faithful.
// Scheduling: data-parallel tiles, or serial split-K (Splits > 1; partials are
// reduced in fp32 through D under a semaphore in the workspace). Batched
// problems use GemmUniversalMode::kBatched; split-K is single-batch only.
// Epilogue: none (beta = 0, C unread), bias (C = the bias vector with ldc = 0:
// a row broadcast), c (full matrix).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "cutlass/cutlass.h"
#include "cutlass/epilogue/thread/linear_combination.h"
#include "cutlass/gemm/device/gemm_universal.h"
#include "cutlass/gemm/threadblock/threadblock_swizzle.h"
#include "cutlass/layout/matrix.h"

#include "cutlass_launch.cuh"
#include "fact/kernel_abi.h"

namespace fact::gemm_sm80 {

struct MathSimt {
  using OpClass = cutlass::arch::OpClassSimt;
  using Operator = cutlass::arch::OpMultiplyAdd;
  using Instruction = cutlass::gemm::GemmShape<1, 1, 1>;
  static constexpr int kAlign = 1;  // 4-byte cp.async: any fp32 address
  template <int TM, int TN, int TK>
  using Warp = cutlass::gemm::GemmShape<32, 64, TK>;
};

struct MathTf32x3 {
  using OpClass = cutlass::arch::OpClassTensorOp;
  using Operator = cutlass::arch::OpMultiplyAddFastF32;
  using Instruction = cutlass::gemm::GemmShape<16, 8, 8>;
  static constexpr int kAlign = 4;  // 16-byte cp.async
  template <int TM, int TN, int TK>
  using Warp = cutlass::gemm::GemmShape<TM / 2, TN / 2, TK>;
};

template <class Math_, int TileM_, int TileN_, int TileK_, int Stages_, int Splits_, class LayoutA_, class LayoutB_,
          int Epilogue_>
struct Config {
  using Math = Math_;
  static constexpr int kTileM = TileM_, kTileN = TileN_, kTileK = TileK_;
  static constexpr int kStages = Stages_;
  static constexpr int kSplits = Splits_;  // 1 = data-parallel
  using LayoutA = LayoutA_;
  using LayoutB = LayoutB_;
  static constexpr int kEpilogue = Epilogue_;
};

template <class Cfg>
struct Operation {
  using Math = typename Cfg::Math;
  static constexpr int kAlign = Math::kAlign;
  using EpilogueOp = cutlass::epilogue::thread::LinearCombination<float, kAlign, float, float>;
  using Gemm = cutlass::gemm::device::GemmUniversal<
      float, typename Cfg::LayoutA, float, typename Cfg::LayoutB, float, cutlass::layout::RowMajor, float,
      typename Math::OpClass, cutlass::arch::Sm80,
      cutlass::gemm::GemmShape<Cfg::kTileM, Cfg::kTileN, Cfg::kTileK>,
      typename Math::template Warp<Cfg::kTileM, Cfg::kTileN, Cfg::kTileK>, typename Math::Instruction, EpilogueOp,
      cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<>, Cfg::kStages, kAlign, kAlign,
      typename Math::Operator>;

  static typename Gemm::Arguments make_arguments(const FactGemmProblem& p) {
    const bool split = Cfg::kSplits > 1;
    const auto mode = split ? cutlass::gemm::GemmUniversalMode::kGemm
                            : (p.batch > 1 ? cutlass::gemm::GemmUniversalMode::kBatched
                                           : cutlass::gemm::GemmUniversalMode::kGemm);
    const int batch_count = split ? Cfg::kSplits : static_cast<int>(p.batch);
    const float beta = Cfg::kEpilogue == FACT_EPILOGUE_NONE ? 0.f : p.beta;
    // With beta = 0 the source is never read; D stands in for it.
    const void* c = Cfg::kEpilogue == FACT_EPILOGUE_NONE ? p.d : p.e;
    const int64_t ldc = Cfg::kEpilogue == FACT_EPILOGUE_BIAS ? 0
                        : Cfg::kEpilogue == FACT_EPILOGUE_C  ? p.ld_e
                                                             : p.ld_d;
    const int64_t bsc = Cfg::kEpilogue == FACT_EPILOGUE_NONE ? p.batch_stride_d : p.batch_stride_e;
    return typename Gemm::Arguments(
        mode, cutlass::gemm::GemmCoord(static_cast<int>(p.m), static_cast<int>(p.n), static_cast<int>(p.k)),
        batch_count, typename EpilogueOp::Params(p.alpha, beta), p.a, p.b, c, p.d, p.batch_stride_a,
        p.batch_stride_b, bsc, p.batch_stride_d, p.ld_a, p.ld_b, ldc, p.ld_d);
  }

  static int can_implement(const FactGemmProblem& p, std::string& why) {
    if (p.batch < 1 || p.m < 1 || p.n < 1 || p.k < 1) {
      why = "batch, m, n and k must be positive";
      return 1;
    }
    if (p.m > INT32_MAX || p.n > INT32_MAX || p.k > INT32_MAX || p.batch > INT32_MAX) {
      why = "a problem extent exceeds 2^31-1";
      return 1;
    }
    if (p.a == nullptr || p.b == nullptr || p.d == nullptr) {
      why = "null operand pointer";
      return 1;
    }
    if (Cfg::kSplits > 1 && p.batch > 1) {
      why = "split-K variants run single-batch problems only";
      return 1;
    }
    if (Cfg::kEpilogue != FACT_EPILOGUE_NONE && p.e == nullptr) {
      why = "this variant's epilogue reads E, but E is null";
      return 1;
    }
    const size_t bytes = 4u * kAlign;
    auto aligned = [&](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; };
    if (!aligned(p.a) || !aligned(p.b) || !aligned(p.d) || (p.e != nullptr && !aligned(p.e))) {
      why = "operand pointers must be " + std::to_string(bytes) + "-byte aligned";
      return 1;
    }
    if (p.batch > 1 && (p.batch_stride_a % kAlign || p.batch_stride_b % kAlign || p.batch_stride_d % kAlign ||
                        (Cfg::kEpilogue != FACT_EPILOGUE_NONE && p.batch_stride_e % kAlign))) {
      why = "batch strides must be multiples of " + std::to_string(kAlign);
      return 1;
    }
    cutlass::Status status = Gemm::can_implement(make_arguments(p));
    if (status != cutlass::Status::kSuccess) {
      why = std::string("CUTLASS can_implement: ") + cutlassGetStatusString(status) +
            " (alignment: contiguous extents and leading dimensions must be multiples of " +
            std::to_string(kAlign) + ")";
      return 1;
    }
    return 0;
  }

  static size_t workspace_size(const FactGemmProblem& p) { return Gemm::get_workspace_size(make_arguments(p)); }

  static int run(const FactGemmProblem& p, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                 std::string& why) {
    auto args = make_arguments(p);
    const size_t need = Gemm::get_workspace_size(args);
    if (need > 0 && (workspace == nullptr || workspace_bytes < need)) {
      why = "workspace too small: need " + std::to_string(need) + " bytes, got " + std::to_string(workspace_bytes);
      return 2;
    }
    return fact::cutlass_launch::initialize_and_run<Gemm>(args, need ? workspace : nullptr, stream, why);
  }
};

}  // namespace fact::gemm_sm80
