// The problem checks every attention template makes (attention_sm80.cuh, attention_sm90.cuh)
// before its own: positive sizes, head dims within what the variant compiled, non-null
// operands, a causal flag of 0 or 1. Host code only.
#pragma once

#include <cstdint>
#include <string>

#include "fact/kernel_abi.h"

namespace fact::attention {

inline bool fits_int32(int64_t v) { return v >= INT32_MIN && v <= INT32_MAX; }

// 0 when the checks hold; else 2 with the reason in `why`. `max_dim` bounds head_dim and
// head_dim_v; `dim_name` is what the variant calls it in the reason ("kMaxK", "head dim").
inline int check_problem(const FactAttentionProblem& p, int64_t max_dim, const char* dim_name, std::string& why) {
  if (p.batch <= 0 || p.heads <= 0 || p.seq_q <= 0 || p.seq_k <= 0 || p.head_dim <= 0 || p.head_dim_v <= 0) {
    why = "batch, heads, seq_q, seq_k, head_dim and head_dim_v must be positive";
    return 2;
  }
  if (p.head_dim > max_dim || p.head_dim_v > max_dim) {
    why = "head_dim " + std::to_string(p.head_dim) + " / head_dim_v " + std::to_string(p.head_dim_v) +
          " exceed this variant's " + dim_name + " " + std::to_string(max_dim);
    return 2;
  }
  if (!p.q || !p.k || !p.v || !p.o) {
    why = "q, k, v and o must be non-null";
    return 2;
  }
  if (p.causal != 0 && p.causal != 1) {
    why = "causal must be 0 or 1, got " + std::to_string(p.causal);
    return 2;
  }
  return 0;
}

}  // namespace fact::attention
