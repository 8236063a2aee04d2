// The one hand-off between the ops that spell a GEMM (mm ... baddbmm, einsum) and the
// GEMM rule's shared path (dtypes, layouts, leading dims, batch strides, epilogue,
// batch folding -> GemmProblem in gemm_rule.cpp). An op front end only says what the
// operands are as matmul-style views; it never derives a layout itself.
#pragma once

#include <optional>
#include <string>

#include "fact/rules.hpp"

namespace fact::rules_detail {

// A GEMM in matmul form: A is [batch..., m, k], B is [batch..., k, n] (batch dims
// broadcast by numpy rules, a missing or size-1 dim has stride 0), D is the node's
// output seen as [batch..., m, n].
//
// Contract for the runtime (python/fact/kernel.py strides_match): the plan binds
// `a.tensor`, `b.tensor` and `d.id` whole, so the view's dims, outermost first, must
// cover the bound tensor's dims in the tensor's own order (a view dim may span
// several consecutive tensor dims; an absorbed transpose swaps the last two).
struct GemmViews {
  OperandView a, b;
  Tensor d;                   // the output tensor with the view's shape and strides
  std::string e;              // epilogue input E ("" = none): D = alpha * A.B + beta * E
  double alpha = 1.0, beta = 0.0;
  size_t expected_rank_a = 0, expected_rank_b = 0;  // 0 = any >= 2
  bool equal_batch = false;   // bmm / baddbmm: batch shapes must be equal, no broadcast
};

// Two-operand torch.einsum (`node.op` is kEinsumOp) as matmul views; nullopt with the
// reason in *why when the contraction is not one GEMM (src/rules/einsum.cpp).
inline constexpr const char* kEinsumOp = "other:torch.einsum";
std::optional<GemmViews> einsum_gemm_views(const Graph& g, const Node& node, std::string* why);

}  // namespace fact::rules_detail
