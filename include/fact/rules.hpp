// Optimization rules as data (DESIGN.md "Patterns and rules").
// A rule has a name, the root ops it can start from, a matcher written as guard
// clauses (every rejection carries a reason that ends up in plan.json and the
// report) and a work estimate (FLOPs, bytes) the cost model turns into time.
// Rules know nothing of CUDA: they describe the problem, realize builds kernels.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fact/ir.hpp"

namespace fact {

// ---- GEMM problem description (plan.json "gemm", docs/CONTRACTS.md §2) ----

struct GemmOperand {
  std::string tensor;      // tensor id the kernel reads (before any absorbed transpose)
  std::string layout;      // "row" | "col" (CONTRACTS.md §2 for what each means for A and B)
  int64_t ld = 0;
  int64_t batch_stride = 0;  // 0 with batch > 1: shared by all batches
  // The order in which `tensor` lists the operand's last two dims, where it is not the
  // one `layout` implies ("": a row-major operand's tensor lists (rows, cols), a
  // column-major one's (cols, rows): the tensor before an absorbed transpose).
  // "rows_cols": a column-major operand whose tensor is itself the column-major view
  // (a transpose with other readers, a non-contiguous input); "cols_rows": a row-major
  // operand bound through an absorbed transpose of a column-major tensor. The kernel
  // reads only layout and ld; the runtime's stride check follows the tensor's order.
  std::string order;
};

struct GemmOutput {
  std::string tensor;
  int64_t ld = 0;
  int64_t batch_stride = 0;
};

struct GemmEpilogue {
  std::string kind = "none";  // none | bias | c
  std::string tensor;         // "" when kind == none
  int64_t ld = 0;
  int64_t batch_stride = 0;
  double alpha = 1.0;
  double beta = 0.0;
};

// D[b] = alpha * A[b] . B[b] + beta * E[b]; A is m x k, B is k x n, D is m x n row-major.
struct GemmProblem {
  int64_t batch = 1, m = 0, n = 0, k = 0;
  GemmOperand a, b;
  GemmOutput d;
  GemmEpilogue epilogue;
  DType element_a = DType::Float32, element_b = DType::Float32, element_d = DType::Float32;

  nlohmann::json to_json() const;
  static GemmProblem from_json(const nlohmann::json& j);  // throws std::runtime_error naming the field
  // "gemm:f32:b1:m4096:n4096:k4096:a=row:b=col:ep=none": exact.
  std::string problem_key() const;
  // "gemm:f32:b1:m4k:n4k:k4k": every size rounded up to a power of two.
  std::string shape_class() const;
};

// 4096 -> "4k", 512 -> "512", 1<<20 -> "1M"; sizes are first rounded up to a power of two.
std::string size_bucket(int64_t size);

// ---- matches and rules ----

// What a rule found: the nodes it covers and the problem they compute.
struct Match {
  std::string rule;
  std::string root;                  // root node id
  std::vector<std::string> nodes;    // covered node ids, graph order
  std::vector<std::string> inputs;   // tensors read (after absorbed views), no duplicates
  std::vector<std::string> outputs;
  DType dtype = DType::Float32;
  std::string problem_key, shape_class;
  std::optional<GemmProblem> gemm;   // the GEMM family's payload
  // Why a neighbouring node was not absorbed (node id -> reason), for the report.
  std::map<std::string, std::string> notes;
  // Rule-specific pattern fields (docs/CONTRACTS.md §2.1): "attention", "layernorm",
  // "epilogue_chain". Each key is written into the plan pattern next to "gemm".
  nlohmann::json payload = nlohmann::json::object();
};

// Work a matched pattern does; the cost model turns it into milliseconds.
struct Workload {
  double flops = 0.0;
  double bytes = 0.0;  // unique bytes read and written by an ideal kernel
  DType dtype = DType::Float32;
  // What eager PyTorch does for the same nodes when it differs from the fused kernel
  // (it materialises intermediates, computes masked-out scores); 0 = same as above.
  double eager_flops = 0.0;
  double eager_bytes = 0.0;
};

struct MatchOutcome {
  std::optional<Match> match;
  std::string reason;  // why the rule rejected the node (empty when matched)
  // false: the root node is not the start of this rule's pattern at all (a transpose
  // that feeds no attention); the reason is informative only. A planner may omit such
  // outcomes from "rejections"; true rejections (a guard failed) keep applicable = true.
  bool applicable = true;
  static MatchOutcome reject(std::string why) {
    MatchOutcome o;
    o.reason = std::move(why);
    return o;
  }
  static MatchOutcome not_applicable(std::string why) {
    MatchOutcome o = reject(std::move(why));
    o.applicable = false;
    return o;
  }
};

struct Rule {
  std::string name;
  std::vector<std::string> root_ops;
  std::string description;
  std::function<MatchOutcome(const Graph&, const Node&)> match;
  std::function<Workload(const Match&)> estimate;
};

class RuleSet {
 public:
  void add(Rule rule);
  // Rules whose root ops include `op`, in the order they were added.
  std::vector<const Rule*> for_op(const std::string& op) const;
  const std::deque<Rule>& rules() const { return rules_; }
  // The rules FACT ships: gemm (with its epilogue chain), attention, layernorm.
  static const RuleSet& builtin();

 private:
  std::deque<Rule> rules_;  // deque: pointers handed out stay valid across add()
  std::map<std::string, std::vector<size_t>> by_root_;
};

// mm, bmm, matmul, linear, addmm, baddbmm and two-operand torch.einsum. Rule name "gemm".
Rule make_gemm_rule();

// ---- torch.einsum equations (src/rules/einsum.cpp) ----

// One label per dim: a letter is its ASCII code (so sorting labels is torch's
// alphabetical order, upper case first); dim i of the broadcast ellipsis is
// kEinsumEllipsisLabel + i, ellipses right-aligned across operands as in torch.
inline constexpr int kEinsumEllipsisLabel = 256;
struct EinsumSubscripts {
  std::vector<std::vector<int>> operands;  // one entry per operand dim
  std::vector<int> output;                 // explicit after "->", else torch's implicit order
};
// Parses `equation` (whitespace ignored) for operands of the given ranks. Syntax
// errors and rank mismatches return nullopt with *why; semantic limits (repeated
// labels inside one operand, reductions) are the caller's to judge.
std::optional<EinsumSubscripts> parse_einsum(const std::string& equation, const std::vector<size_t>& operand_ranks,
                                             std::string* why);
// "bij" for letters; an ellipsis dim prints as "[e0]", "[e1]", ...
std::string einsum_labels(const std::vector<int>& labels);

// ---- transformer-block rules (issue 3; payloads in docs/CONTRACTS.md §2.1) ----

// Fused multi-head attention, rooted at the head-split transposes/permutes of the
// explicit form (q @ k^T -> scale -> causal mask -> softmax(-1) -> dropout(p=0) -> @ v)
// and at F.scaled_dot_product_attention. Rule name "attention".
Rule make_attention_rule();
// The GEMM rule extended with the elementwise epilogue chain that follows the GEMM
// (payload "epilogue_chain"); registered instead of make_gemm_rule(). Rule name "gemm".
Rule make_gemm_epilogue_rule();
// layer_norm, rms_norm and the written-out RMSNorm (rooted at its square) over the last dim
// (+ the residual add feeding them); payload "layernorm" with "norm": "layer" | "rms".
// Rule name "layernorm".
Rule make_layernorm_rule();

// The elementwise epilogue a GEMM at `gemm_node` would absorb: the covered node ids and
// the "epilogue_chain" JSON (null when nothing is absorbed); *why says what stopped it.
struct EpilogueChain {
  std::vector<std::string> nodes;   // graph order
  std::vector<std::string> leaves;  // extra tensors read
  std::string output;               // the chain's result tensor ("" when empty)
  nlohmann::json payload;           // null when empty
  std::string key;                  // canonical hash of the expression, "" when empty
  double ops_per_element = 0.0;
};
EpilogueChain find_epilogue_chain(const Graph& g, const Node& gemm_node, std::string* why);

// Work of the new patterns (src/discover/cost_model.cpp).
// Attention: 4*B*H*Tq*Tk*d FLOPs (halved when causal), q/k/v/o bytes; eager also
// writes and re-reads the B*H*Tq*Tk score matrix once per materialised step.
Workload attention_work(int64_t batch, int64_t heads, int64_t seq_q, int64_t seq_k, int64_t head_dim,
                        int64_t head_dim_v, bool causal, int score_passes, DType dtype);
// LayerNorm / RMSNorm over rows x cols (+ residual: one more input read, the sum optionally
// written). eager_passes > 0: eager runs a written-out norm whose ops read and write that
// many row-sized tensors in all (0: one fused op reading x and writing y).
Workload layernorm_work(int64_t rows, int64_t cols, bool affine, bool residual, bool writes_sum, DType dtype,
                        int eager_passes = 0);
// A GEMM workload plus an elementwise epilogue of `elements` outputs, `ops` ops per
// element and `leaf_bytes` of extra inputs; eager runs each op as a separate kernel.
Workload add_epilogue_work(Workload gemm, double elements, double ops_per_element, double leaf_bytes,
                           int eager_kernels);

// ---- layout helpers shared by rules (src/rules/layout.cpp) ----

// Ops that only re-view memory; when no rule absorbs them they run in PyTorch.
bool is_view_op(const std::string& op);

// If `node` swaps exactly the last two dimensions of its (single) input — `t` of
// a 2-D tensor, `transpose` of the last two dims, `permute` swapping only the last
// two — returns true; otherwise false with the reason in *why.
bool swaps_last_two_dims(const Graph& g, const Node& node, std::string* why);

// A tensor seen through absorbed transposes: `tensor` is the id the kernel reads,
// shape/strides are the logical view the GEMM consumes.
struct OperandView {
  std::string tensor;
  std::vector<int64_t> shape, strides;
  DType dtype = DType::Float32;
  std::vector<std::string> absorbed;           // transpose nodes folded into the view
  std::map<std::string, std::string> notes;    // transposes seen but not absorbed, with why
};

// Follows producers that swap the last two dims while the swapped value has no
// other reader (and is not a graph output).
OperandView look_through_transposes(const Graph& g, const std::string& tensor_id);

// Swaps the last two dims of a view (linear's weight is used transposed).
OperandView transposed(OperandView view);

// Row/col classification of a rows x cols matrix with the given strides.
struct MatrixLayout {
  bool ok = false;
  std::string layout;  // "row" | "col"
  int64_t ld = 0;
};
MatrixLayout classify_matrix(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride);

// Broadcast of two batch shapes (numpy rules); nullopt when incompatible.
std::optional<std::vector<int64_t>> broadcast_shapes(const std::vector<int64_t>& a, const std::vector<int64_t>& b);

// One batch stride for an operand whose batch dims (right-aligned to `batch_shape`,
// missing or size-1 dims broadcast with stride 0) walk memory uniformly; nullopt
// when they cannot be flattened into one stride.
std::optional<int64_t> collapse_batch_stride(const std::vector<int64_t>& batch_shape,
                                             const std::vector<int64_t>& operand_batch_dims,
                                             const std::vector<int64_t>& operand_batch_strides);

}  // namespace fact
