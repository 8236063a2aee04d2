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

// Reads of epilogue inputs. In device code through the read-only path (ld.global.nc):
// a kernel never writes its epilogue inputs (D does not overlap them), and nc loads may
// be scheduled above the epilogue's stores, so a tile's input loads overlap instead of
// each waiting behind the previous store.
FACT_CHAIN_HD float read_input(const float* x) {
#ifdef __CUDA_ARCH__
  return __ldg(x);
#else
  return *x;
#endif
}
FACT_CHAIN_HD float2 read_input2(const float* x) {
#ifdef __CUDA_ARCH__
  return __ldg(reinterpret_cast<const float2*>(x));
#else
  return *reinterpret_cast<const float2*>(x);
#endif
}

// The address of input `Input`'s value at (batch entry b, row m, column n). b is 0 for a
// batch-1 problem, so an unset batch stride is never multiplied by anything else.
template <class Input, class P>
FACT_CHAIN_HD const float* input_address(const P& p, int64_t b, int64_t m, int64_t n) {
  using Kind = typename Input::kind;
  const float* x = static_cast<const float*>(Input::ptr(p));
  if constexpr (std::is_same_v<Kind, Scalar>) {
    return x;
  } else {
    const int64_t base = b * Input::raw_batch_stride(p);
    if constexpr (std::is_same_v<Kind, RowVector>) {
      return x + base + n;
    } else if constexpr (std::is_same_v<Kind, ColVector>) {
      return x + base + m;
    } else {
      static_assert(std::is_same_v<Kind, Matrix>, "unknown epilogue input kind");
      return x + base + m * Input::ld(p) + n;
    }
  }
}

// The value of input `Input` at (b, m, n).
template <class Input, class P>
FACT_CHAIN_HD float load(const P& p, int64_t b, int64_t m, int64_t n) {
  return read_input(input_address<Input>(p, b, m, n));
}

// Whether input `Input` can be read as (n, n + 1) pairs with one 8-byte load
// (load2) for every even n: its pointer, row pitch and batch stride keep pairs
// 8-byte aligned. Device-side and uniform over the kernel.
template <class Input, class P>
FACT_CHAIN_HD bool pair_aligned(const P& p) {
  using Kind = typename Input::kind;
  if constexpr (std::is_same_v<Kind, Scalar> || std::is_same_v<Kind, ColVector>) {
    return true;  // one value per pair
  } else {
    const bool ptr_ok = reinterpret_cast<uintptr_t>(Input::ptr(p)) % 8 == 0;
    const bool batch_ok = Input::raw_batch_stride(p) % 2 == 0;
    if constexpr (std::is_same_v<Kind, RowVector>) {
      return ptr_ok && batch_ok;
    } else {
      return ptr_ok && batch_ok && Input::ld(p) % 2 == 0;
    }
  }
}

// The values of input `Input` at (b, m, n) and (b, m, n + 1), n even; Matrix and
// RowVector inputs in one 8-byte load (the caller checked pair_aligned<Input>).
template <class Input, class P>
FACT_CHAIN_HD float2 load2(const P& p, int64_t b, int64_t m, int64_t n) {
  using Kind = typename Input::kind;
  if constexpr (std::is_same_v<Kind, Scalar> || std::is_same_v<Kind, ColVector>) {
    const float v = load<Input>(p, b, m, n);
    return make_float2(v, v);
  } else {
    return read_input2(input_address<Input>(p, b, m, n));
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

  // D at (b, m, n) and (b, m, n + 1), n even, from two accumulators: the same
  // arithmetic per element as apply, inputs read in pairs (pairs_aligned(p) must hold).
  template <class P>
  FACT_CHAIN_HD static float2 apply2(const P& p, int64_t b, int64_t m, int64_t n, float acc0, float acc1) {
    return apply_pair(p, acc0, acc1, load2<Inputs>(p, b, m, n)...);
  }
  template <class P>
  FACT_CHAIN_HD static bool pairs_aligned(const P& p) {
    return (true && ... && pair_aligned<Inputs>(p));
  }

  // Host check of the inputs (element-wise loads: 4-byte alignment, a full matrix's ld
  // covers a row); 0 = ok, else 1 with `why`.
  static int can_implement(const FactGemmProblem& p, std::string& why) {
    return check_inputs<InputCheck, Inputs...>(p, why);
  }

 private:
  template <class P, class... Pairs>
  FACT_CHAIN_HD static float2 apply_pair(const P& p, float acc0, float acc1, Pairs... in) {
    return make_float2(Fn::apply(p.alpha, p.beta, acc0, in.x...), Fn::apply(p.alpha, p.beta, acc1, in.y...));
  }

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

// ---- the built-in epilogues as chains ------------------------------------------------
// D = alpha * acc, or alpha * acc + beta * E with E the problem's e as a row vector (bias)
// or a full matrix (C): FactEpilogueKind's three epilogues, evaluated by the same
// element-wise machinery as a generated chain (the kernels that take either read only
// their Config's chain).
struct AlphaBetaFn {
  FACT_CHAIN_HD static float apply(float alpha, float, float acc) { return alpha * acc; }
  FACT_CHAIN_HD static float apply(float alpha, float beta, float acc, float e) {
    float out = alpha * acc;
    out += beta * e;
    return out;
  }
};
template <int Epilogue>
using BuiltinChain = std::conditional_t<
    Epilogue == FACT_EPILOGUE_BIAS, ElementwiseChain<AlphaBetaFn, GemmSource<RowVector>>,
    std::conditional_t<Epilogue == FACT_EPILOGUE_C, ElementwiseChain<AlphaBetaFn, GemmSource<Matrix>>,
                       ElementwiseChain<AlphaBetaFn>>>;

}  // namespace fact::epilogue_chain
