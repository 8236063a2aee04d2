// GEMM + epilogue chain as a generated CUTLASS sm90 EVT epilogue.
//
// A plan pattern's `epilogue_chain` payload (docs/CONTRACTS.md §2.1: SSA
// `values` over `acc`, leaves, constants) becomes
//   * one scalar functor whose body is emitted from the SSA values
//     (FactChainFn::apply(alpha, beta, acc, inputs...)), applied per element
//     by templates/epilogue_chain_sm90.cuh inside
//     Sm90EVT<Sm90Compute<...>, alpha, beta, Sm90AccFetch, input nodes...>;
//   * a list of input nodes, one per tensor the epilogue reads: the GEMM
//     payload's own bias / C (the ABI's `e`) first, then the chain's leaves in
//     l0, l1, ... order (the ABI's `leaves[i]`), each classified by its stride
//     pattern over D: row vector, column vector, scalar or full matrix (the C
//     source; at most one).
// The GEMM payload's alpha / beta·E are folded in front of the chain:
// the chain's `acc` is alpha·(A·B) + beta·E.
//
// Pure C++: nothing here needs CUDA. Anything the emitter cannot express is a
// ChainPlan with `skip_reason` set (never an exception for a well-formed
// payload), so realize can keep the GEMM-core fallback.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fact/variant.hpp"

namespace fact {

// How the epilogue reads one input tensor, from its strides over D (m x n per batch).
enum class ChainInputKind {
  RowVector,  // n elements broadcast over rows (Sm90RowBroadcast); batch stride may be non-zero
  ColVector,  // m elements broadcast over columns (Sm90ColBroadcast)
  Scalar,     // one element (Sm90ScalarBroadcast through a device pointer)
  Matrix,     // m x n with a leading dimension (the epilogue's C source, Sm90SrcFetch)
};
const char* token(ChainInputKind kind);  // "row" "col" "scalar" "matrix"

// One tensor the fused epilogue reads, as the kernel ABI passes it.
struct ChainInput {
  std::string name;    // "e" (the GEMM payload's bias / C) or the leaf name "l0", "l1", ...
  std::string tensor;  // IR tensor id
  ChainInputKind kind = ChainInputKind::RowVector;
  int64_t ld = 0;            // Matrix: elements between rows; 0 otherwise
  int64_t batch_stride = 0;  // elements between batches (0 = shared or batch 1)
  int abi_leaf = -1;         // index into FactGemmProblem::leaves; -1 for "e"
};

struct ChainPlan {
  std::string skip_reason;  // non-empty: the chain cannot be emitted (the pattern keeps its GEMM core)
  nlohmann::json chain;     // the payload
  std::string key8;         // first 8 hex digits of the chain key (variant name suffix)
  EpilogueKind gemm_epilogue = EpilogueKind::None;
  // The chain's element ("element"): its leaves, the GEMM's E and D have it; the functor
  // computes in float either way. Only variants of this I/O type run the chain.
  IoType element = IoType::F32;
  std::vector<ChainInput> inputs;  // "e" first when the GEMM payload has one, then the leaves
  std::string output;              // the chain's result tensor (the pattern's output)
};

// Most leaves FactGemmProblem carries (FACT_GEMM_MAX_LEAVES in kernel_abi.h).
constexpr int kMaxChainLeaves = 8;

// Plans the fused epilogue of a plan pattern that carries `epilogue_chain`.
// Throws std::runtime_error only for a malformed payload (a missing field).
ChainPlan plan_chain_epilogue(const nlohmann::json& pattern);

// The generated scalar functor: `struct <struct_name> { static FACT_CHAIN_HD
// float apply(float alpha, float beta, float acc, <one float per input>) }`.
// Needs only templates/epilogue_chain_ops.cuh (host-compilable with g++).
// Throws std::invalid_argument for an op or argument the contract does not define.
std::string emit_chain_functor(const ChainPlan& plan, const std::string& struct_name = "FactChainFn");

// A float literal that reads back as exactly float(value): hex-float
// ("0x1.6e2ebp-5f"), or __builtin_inff() / __builtin_nanf("") spellings.
std::string float_literal(double value);

// The .cu source of an sm90 variant with this chain as its epilogue
// (variant.chain_key must equal plan.key8). Throws std::invalid_argument for
// a non-sm90 variant, a skipped plan or a key mismatch.
std::string emit_chain_variant_source(const GemmVariant& variant, const ChainPlan& plan);

// The enumeration for a chained pattern: sm90 variants gain the chain key
// (they realize the whole chain); other families are moved to `skipped`
// with the reason they cannot run it.
Enumeration chain_variants(const Enumeration& gemm_only, const ChainPlan& plan);

// `fused_epilogue` object realize puts into the pattern (worker job, realized.json,
// manifest; docs/CONTRACTS.md §6): {"key", "output", "inputs": [{name, tensor,
// kind, ld, batch_stride, abi_leaf}]}.
nlohmann::json fused_epilogue_json(const ChainPlan& plan);

}  // namespace fact
