// Operand hand-offs between composed GEMM patterns (docs/CONTRACTS.md §7.1): where
// one GEMM pattern's output is read only as the A operand of the next, and both
// winners share an operand-image format (operand_image_format), the first kernel
// writes the second's pre-split A image instead of its fp32 output, and the second
// skips its A pre-pass. Decided here from the graph and the winners; the runtime
// (python/fact/runtime.py) checks the libraries' own formats before it fuses a pair
// and runs the pair unfused otherwise.
#pragma once

#include <nlohmann/json.hpp>

namespace fact {

// bound: the manifest's GEMM / other patterns (plan pattern + variant, nodes,
// outputs). Returns {"handoffs": [{producer, consumer, tensor, format}],
// "not_handed_off": [{producer, consumer, tensor, reason}]}: every pair whose
// consumer's A is the producer's output, fused or with the guard that rejected it.
// A pattern takes part in at most one hand-off (chains are not composed).
nlohmann::json plan_handoffs(const nlohmann::json& ir, const nlohmann::json& bound);

}  // namespace fact
