// GEMM + epilogue chain on sm90: the CUTLASS 3.x EVT (epilogue visitor tree)
// that runs a FACT-generated scalar functor per output element.
//
//   D = Fn::apply(alpha, beta, acc, input_0, input_1, ...)      per element, in float
//
// as the tree
//   Sm90EVT<Sm90Compute<PerElement<Fn>, Element, float, RN>,
//           Sm90ScalarBroadcast alpha, Sm90ScalarBroadcast beta, Sm90AccFetch,
//           one node per input...>
// where Element is the GEMM's I/O type (gemm_sm90.cuh Config::ElementIo: float, half_t
// or bfloat16_t): the inputs are read in it and converted to float, the functor runs in
// float, and its result is rounded once to D's Element. Each input is read by the node
// its kind calls for:
//   RowVector  Sm90RowBroadcast  (n elements, batch stride dynamic)
//   ColVector  Sm90ColBroadcast  (m elements, batch stride dynamic)
//   Scalar     Sm90ScalarBroadcast through a device pointer
//   Matrix     Sm90SrcFetch: the collective's C source (ptr_C / dC), so at most one
// and comes from the kernel ABI (include/fact/kernel_abi.h, version 2):
// GemmSource<Kind> = the problem's e (ld_e, batch_stride_e), Leaf<i, Kind> =
// problem.leaves[i] (epilogue_chain.cuh, shared with the split kernels' element-wise
// chain). The generated translation unit (src/realize/epilogue_emit.cpp)
// defines Fn and the Chain<Fn, inputs...> list; gemm_sm90.cuh's Operation takes
// the Chain as its Config's last parameter.
//
// alpha: the problem's alpha, or the device-computed one of the scaled (f16x3)
// math modes (alpha_ptr), exactly as the plain epilogues read it.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include "cute/tensor.hpp"
#include "cutlass/array.h"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_compute_tma_warpspecialized.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_load_tma_warpspecialized.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp"

#include "epilogue_chain.cuh"

namespace fact::epilogue_chain {

// Input kinds and sources (RowVector ... Matrix, GemmSource, Leaf): epilogue_chain.cuh.

// ---- the per-element compute node ------------------------------------------------
// Sm90Compute's ComputeFn<Array<float, N>>: applies Fn::apply lane by lane.
template <class Fn, class T>
struct PerElement;

template <class Fn, int N>
struct PerElement<Fn, cutlass::Array<float, N>> {
  template <class... Arrays>
  CUTLASS_HOST_DEVICE cutlass::Array<float, N> operator()(Arrays const&... inputs) const {
    cutlass::Array<float, N> out;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) out[i] = Fn::apply(inputs[i]...);
    return out;
  }
};

template <class Fn>
struct Bind {
  template <class T>
  using type = PerElement<Fn, T>;
};

// ---- nodes per kind ----------------------------------------------------------------
// Element: the type the input is stored in (the GEMM's I/O type).
template <class Kind, class CtaTile, class Element>
struct NodeOf;

template <class CtaTile, class Element>
struct NodeOf<RowVector, CtaTile, Element> {
  using type = cutlass::epilogue::fusion::Sm90RowBroadcast<0, CtaTile, Element, float,
                                                           cute::Stride<cute::_0, cute::_1, int64_t>>;
  template <class Source>
  static typename type::Arguments arguments(const FactGemmProblem& p) {
    return {static_cast<const Element*>(Source::ptr(p)), Element(0), {cute::_0{}, cute::_1{}, Source::batch_stride(p)}};
  }
};

template <class CtaTile, class Element>
struct NodeOf<ColVector, CtaTile, Element> {
  using type = cutlass::epilogue::fusion::Sm90ColBroadcast<0, CtaTile, Element, float,
                                                           cute::Stride<cute::_1, cute::_0, int64_t>>;
  template <class Source>
  static typename type::Arguments arguments(const FactGemmProblem& p) {
    return {static_cast<const Element*>(Source::ptr(p)), Element(0), {cute::_1{}, cute::_0{}, Source::batch_stride(p)}};
  }
};

template <class CtaTile, class Element>
struct NodeOf<Scalar, CtaTile, Element> {
  using type = cutlass::epilogue::fusion::Sm90ScalarBroadcast<Element>;
  template <class Source>
  static typename type::Arguments arguments(const FactGemmProblem& p) {
    typename type::Arguments args{};
    args.scalar_ptrs[0] = static_cast<const Element*>(Source::ptr(p));
    return args;
  }
};

template <class CtaTile, class Element>
struct NodeOf<Matrix, CtaTile, Element> {
  using type = cutlass::epilogue::fusion::Sm90SrcFetch<Element>;
  template <class Source>
  static typename type::Arguments arguments(const FactGemmProblem&) {
    return {};  // the collective reads C through ptr_C / dC (Operation::make_arguments)
  }
};

// ---- the chain -------------------------------------------------------------------------
template <class Fn_, class... Inputs>
struct Chain {
  using Fn = Fn_;
  // Leaves this chain reads: problem.leaves[0 .. kLeaves-1] (the emitter numbers them densely).
  static constexpr int kLeaves = (0 + ... + int(IsLeaf<Inputs>::value));
  static constexpr int kMatrices = (0 + ... + int(std::is_same_v<typename Inputs::kind, Matrix>));
  static_assert(kMatrices <= 1, "the sm90 epilogue has one C source: at most one Matrix input");
  static constexpr bool kReadsC = kMatrices == 1;
  // ElementC of the collective: the I/O type when an input is the C source, else void (no C load).
  template <class Element>
  using ElementC = std::conditional_t<kReadsC, Element, void>;

  // The root node: the functor in float, its result rounded once to D's Element.
  template <class Element>
  using Root = cutlass::epilogue::fusion::Sm90Compute<Bind<Fn>::template type, Element, float,
                                                      cutlass::FloatRoundStyle::round_to_nearest>;

  template <class CtaTile, class Element>
  using Callbacks = cutlass::epilogue::fusion::Sm90EVT<
      Root<Element>,
      cutlass::epilogue::fusion::Sm90ScalarBroadcast<float>,  // alpha
      cutlass::epilogue::fusion::Sm90ScalarBroadcast<float>,  // beta
      cutlass::epilogue::fusion::Sm90AccFetch,
      typename NodeOf<typename Inputs::kind, CtaTile, Element>::type...>;

  // alpha_ptr (device, may be null): read instead of p.alpha (scaled math modes).
  template <class CtaTile, class Element>
  static typename Callbacks<CtaTile, Element>::Arguments arguments(const FactGemmProblem& p, const float* alpha_ptr) {
    using Scalar = cutlass::epilogue::fusion::Sm90ScalarBroadcast<float>;
    typename Scalar::Arguments alpha{}, beta{};
    alpha.scalars[0] = p.alpha;
    alpha.scalar_ptrs[0] = alpha_ptr;
    beta.scalars[0] = p.beta;
    return typename Callbacks<CtaTile, Element>::Arguments{
        alpha, beta, typename cutlass::epilogue::fusion::Sm90AccFetch::Arguments{},
        NodeOf<typename Inputs::kind, CtaTile, Element>::template arguments<Inputs>(p)...,
        typename Root<Element>::Arguments{}};
  }

  // The C source (Matrix input): pointer, ld and batch stride; null / 0 when none.
  static const void* c_pointer(const FactGemmProblem& p) {
    const void* ptr = nullptr;
    ((ptr = std::is_same_v<typename Inputs::kind, Matrix> ? Inputs::ptr(p) : ptr), ...);
    return ptr;
  }
  static int64_t c_ld(const FactGemmProblem& p) {
    int64_t ld = 0;
    ((ld = std::is_same_v<typename Inputs::kind, Matrix> ? Inputs::ld(p) : ld), ...);
    return ld;
  }
  static int64_t c_batch_stride(const FactGemmProblem& p) {
    int64_t bs = 0;
    ((bs = std::is_same_v<typename Inputs::kind, Matrix> ? Inputs::batch_stride(p) : bs), ...);
    return bs;
  }

  // Host check of the inputs' pointers and strides for inputs stored as Element; 0 = ok,
  // else 1 with `why`.
  template <class Element>
  static int can_implement(const FactGemmProblem& p, std::string& why) {
    return check_inputs<Checks<Element>::template InputCheck, Inputs...>(p, why);
  }

 private:
  template <class Element>
  struct Checks {
    static constexpr int64_t kUnit = 16 / sizeof(Element);  // elements per 16 bytes
    template <class Input>
    struct InputCheck {
      static int check(const FactGemmProblem& p, std::string& why) {
        using Kind = typename Input::kind;
        const void* ptr = Input::ptr(p);
        if (ptr == nullptr) {
          why = "epilogue input " + Input::label() + " is null";
          return 1;
        }
        const bool aligned16 = reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
        const std::string unit = std::to_string(kUnit);
        if constexpr (std::is_same_v<Kind, Scalar>) {
          if (reinterpret_cast<uintptr_t>(ptr) % sizeof(Element) != 0) {
            why = "epilogue input " + Input::label() + " (scalar) is not " + std::to_string(sizeof(Element)) +
                  "-byte aligned";
            return 1;
          }
        } else if constexpr (std::is_same_v<Kind, Matrix>) {
          if (!aligned16 || Input::ld(p) < p.n || Input::ld(p) % kUnit != 0 || Input::batch_stride(p) % kUnit != 0) {
            why = "epilogue input " + Input::label() + " (full matrix, the C source) needs ld >= n, ld and batch " +
                  "stride multiples of " + unit + " and a 16-byte aligned pointer (TMA load)";
            return 1;
          }
        } else {
          if (!aligned16 || Input::batch_stride(p) % kUnit != 0) {
            why = "epilogue input " + Input::label() +
                  " (broadcast vector) needs a 16-byte aligned pointer and a batch stride that is a multiple of " +
                  unit;
            return 1;
          }
        }
        return 0;
      }
    };
  };
};

}  // namespace fact::epilogue_chain
