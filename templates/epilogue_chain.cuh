// The inputs of a generated epilogue chain (docs/CONTRACTS.md §2.1) and its
// per-element evaluation, for kernels that write their output element by element
// (FACT's split kernels, templates/split_gemm_sm90.cuh):
//
//   D(b, m, n) = Fn::apply(alpha, beta, acc, input_0(b, m, n), input_1(b, m, n), ...)
//
// Each input names where its tensor comes from (GemmSource = the problem's e,
// Leaf<i> = problem.leaves[i], kernel ABI version 2) and how it broadcasts over D
// (its Kind): RowVector ptr[b * bs + n], ColVector ptr[b * bs + m], Scalar ptr[0],
// Matrix ptr[b * bs + m * ld + n]. The sources read any struct with the ABI's field
// names (FactGemmProblem on the host, a kernel's Params on the device).
// templates/epilogue_chain_sm90.cuh builds CUTLASS's EVT from the same inputs.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include "epilogue_chain_ops.cuh"
#include "fact/kernel_abi.h"

namespace fact::epilogue_chain {

// ---- input kinds and sources ---------------------------------------------------
struct RowVector {};
struct ColVector {};
struct Scalar {};
struct Matrix {};

template <class Kind>
struct GemmSource {
  using kind = Kind;
  template <class P>
  FACT_CHAIN_HD static const void* ptr(const P& p) { return p.e; }
  template <class P>
  FACT_CHAIN_HD static int64_t ld(const P& p) { return p.ld_e; }
  // Elements between batch entries as stored (a batch-1 problem may leave it unset).
  template <class P>
  FACT_CHAIN_HD static int64_t raw_batch_stride(const P& p) { return p.batch_stride_e; }
  static int64_t batch_stride(const FactGemmProblem& p) { return p.batch > 1 ? p.batch_stride_e : 0; }
  static std::string label() { return "e"; }
};

template <int I, class Kind>
struct Leaf {
  static_assert(I >= 0 && I < FACT_GEMM_MAX_LEAVES, "leaf index outside the ABI's leaves array");
  using kind = Kind;
  template <class P>
  FACT_CHAIN_HD static const void* ptr(const P& p) { return p.leaves[I].ptr; }
  template <class P>
  FACT_CHAIN_HD static int64_t ld(const P& p) { return p.leaves[I].ld; }
  template <class P>
  FACT_CHAIN_HD static int64_t raw_batch_stride(const P& p) { return p.leaves[I].batch_stride; }
  static int64_t batch_stride(const FactGemmProblem& p) { return p.batch > 1 ? p.leaves[I].batch_stride : 0; }
  static std::string label() { return "leaves[" + std::to_string(I) + "]"; }
};

// The value of input `Input` at (batch entry b, row m, column n). b is 0 for a batch-1
// problem, so an unset batch stride is never multiplied by anything else.
template <class Input, class P>
FACT_CHAIN_HD float load(const P& p, int64_t b, int64_t m, int64_t n) {
  using Kind = typename Input::kind;
  const float* x = static_cast<const float*>(Input::ptr(p));
  if constexpr (std::is_same_v<Kind, Scalar>) {
    return x[0];
  } else {
    const int64_t base = b * Input::raw_batch_stride(p);
    if constexpr (std::is_same_v<Kind, RowVector>) {
      return x[base + n];
    } else if constexpr (std::is_same_v<Kind, ColVector>) {
      return x[base + m];
    } else {
      static_assert(std::is_same_v<Kind, Matrix>, "unknown epilogue input kind");
      return x[base + m * Input::ld(p) + n];
    }
  }
}

// 0 when Check<Input>::check(p, why) passes for every input, else the first failure's
// status (its reason in `why`), checking in input order.
template <template <class> class Check, class... Inputs>
int check_inputs(const FactGemmProblem& p, std::string& why) {
  int status = 0;
  (void)((status = status ? status : Check<Inputs>::check(p, why)), ...);
  return status;
}

template <class Input>
struct IsLeaf : std::false_type {};
template <int I, class Kind>
struct IsLeaf<Leaf<I, Kind>> : std::true_type {};

// ---- the element-wise chain -----------------------------------------------------
// Fn: the generated functor (FactChainFn::apply(alpha, beta, acc, inputs...)).
template <class Fn_, class... Inputs>
struct ElementwiseChain {
  using Fn = Fn_;
  static constexpr int kLeaves = (0 + ... + int(IsLeaf<Inputs>::value));

  // D at (b, m, n) from the accumulator `acc` (A·B, before alpha).
  template <class P>
  FACT_CHAIN_HD static float apply(const P& p, int64_t b, int64_t m, int64_t n, float acc) {
    return Fn::apply(p.alpha, p.beta, acc, load<Inputs>(p, b, m, n)...);
  }

  // Host check of the inputs (element-wise loads: 4-byte alignment, a full matrix's ld
  // covers a row); 0 = ok, else 1 with `why`.
  static int can_implement(const FactGemmProblem& p, std::string& why) {
    return check_inputs<InputCheck, Inputs...>(p, why);
  }

 private:
  template <class Input>
  struct InputCheck {
    static int check(const FactGemmProblem& p, std::string& why) {
      const void* ptr = Input::ptr(p);
      if (ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % 4 != 0) {
        why = "epilogue input " + Input::label() + " is null or not 4-byte aligned";
        return 1;
      }
      if (std::is_same_v<typename Input::kind, Matrix> && Input::ld(p) < p.n) {
        why = "epilogue input " + Input::label() + " (full matrix) has ld < n";
        return 1;
      }
      return 0;
    }
  };
};

}  // namespace fact::epilogue_chain
