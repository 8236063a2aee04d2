// Operand hand-offs between composed patterns (docs/CONTRACTS.md §7.1): where a GEMM
// pattern's output, or a LayerNorm pattern's y, is read only as the A operand of a GEMM
// pattern, and the producer's winner writes the operand-image format the consumer's
// winner reads (operand_image_format; layernorm_image_formats for a LayerNorm), the
// producer's kernel writes the consumer's pre-split A image instead of its fp32 output,
// and the consumer skips its A pre-pass. Pairs that share a pattern form a chain
// (LayerNorm -> GEMM -> GEMM: the middle GEMM reads one image and writes the next).
// Decided here from the graph and the winners; the runtime (python/fact/runtime.py)
// checks the libraries' own formats before it fuses a pair, runs each chain of fused
// pairs as one unit, and keeps a pair it cannot fuse apart (the chain splits there).
#pragma once

#include <nlohmann/json.hpp>

namespace fact {

// bound: the manifest's GEMM / LayerNorm / other patterns (plan pattern + variant,
// nodes, outputs). Returns {"handoffs": [{producer, producer_rule, consumer, tensor,
// format}], "not_handed_off": [{producer, producer_rule, consumer, tensor, reason}]}:
// every pair whose consumer's A is the producer's output (a GEMM's one output, a
// LayerNorm's y), fused or with the guard that rejected it; producer_rule is "gemm" or
// "layernorm". Every admitted pair is listed: a pattern may consume one hand-off and
// produce another (a chain); each tensor hands off at most once.
nlohmann::json plan_handoffs(const nlohmann::json& ir, const nlohmann::json& bound);

}  // namespace fact
