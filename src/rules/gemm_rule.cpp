// The GEMM rule: mm, bmm, matmul, linear, addmm, baddbmm and two-operand einsum ->
// one (batched) GEMM D = alpha * A.B + beta * E with layouts, leading dims and batch
// strides taken from the IR's strides. Single-use transposes of the last two dims
// feeding an operand are absorbed into that operand's layout (no copy). Each op
// spelling only maps its arguments to matmul views (GemmViews, gemm_views.hpp;
// einsum in einsum.cpp); everything below the views is one shared path.
//
// Guards (each rejection states why): float dtypes supported by the kernels
// (float32/float16/bfloat16, A and B alike), static shapes, row- or column-major
// operands, batch dims that flatten into one stride, row-major contiguous output.
// Alignment is not a guard here: it depends on the kernel (TMA and 16-byte copies need
// 16-byte rows, the pre-split kernels and the sm80 SIMT kernel read any fp32 element),
// so realize's variant_illegal_reason rules out each variant a shape misaligns and the
// pattern falls back to PyTorch only where none is left.
#include <algorithm>
#include <array>
#include <tuple>

#include <fmt/format.h>

#include "fact/rules.hpp"
#include "gemm_views.hpp"

namespace fact {
namespace {

using rules_detail::GemmViews;

struct Roles {
  std::string a, b, e;      // tensor ids as the node reads them ("" = absent)
  bool b_is_weight = false; // linear: B is weight^T
  double alpha = 1.0, beta = 0.0;
  size_t expected_rank_a = 0, expected_rank_b = 0;  // 0 = any >= 2
};

std::optional<double> number_attr(const Node& node, const char* name) {
  auto it = node.attrs.find(name);
  if (it == node.attrs.end() || it->is_null()) return std::nullopt;
  if (it->is_number()) return it->get<double>();
  if (it->is_boolean()) return it->get<bool>() ? 1.0 : 0.0;
  return std::nullopt;
}

// A "None" argument captured as a const tensor with a null value.
bool is_none(const Graph& g, const std::string& id) {
  const Tensor* t = g.find_tensor(id);
  return t && t->kind == TensorKind::Const && t->value.is_null();
}

// Maps the op's arguments to GEMM roles, or explains why it cannot.
std::optional<Roles> assign_roles(const Graph& g, const Node& node, std::string* why) {
  const auto& in = node.inputs;
  Roles r;
  auto need = [&](size_t lo, size_t hi) {
    if (in.size() < lo || in.size() > hi) {
      *why = lo == hi ? fmt::format("{} '{}' has {} tensor inputs, expected {}", node.op, node.id, in.size(), lo)
                      : fmt::format("{} '{}' has {} tensor inputs, expected {} to {}", node.op, node.id, in.size(), lo, hi);
      return false;
    }
    return true;
  };
  if (node.op == "mm" || node.op == "bmm" || node.op == "matmul") {
    if (!need(2, 2)) return std::nullopt;
    r.a = in[0];
    r.b = in[1];
    if (node.op == "mm") r.expected_rank_a = r.expected_rank_b = 2;
    if (node.op == "bmm") r.expected_rank_a = r.expected_rank_b = 3;
  } else if (node.op == "linear") {
    if (!need(2, 3)) return std::nullopt;
    r.a = in[0];
    r.b = in[1];
    r.b_is_weight = true;
    r.expected_rank_b = 2;
    if (in.size() == 3 && !is_none(g, in[2])) {
      r.e = in[2];
      r.beta = 1.0;
    }
  } else if (node.op == "addmm" || node.op == "baddbmm") {
    if (!need(3, 3)) return std::nullopt;
    r.e = in[0];
    r.a = in[1];
    r.b = in[2];
    r.alpha = number_attr(node, "alpha").value_or(1.0);
    r.beta = number_attr(node, "beta").value_or(1.0);
    size_t rank = node.op == "addmm" ? 2 : 3;
    r.expected_rank_a = r.expected_rank_b = rank;
    // torch: with beta == 0 the input is ignored (its NaN/Inf do not propagate).
    if (r.beta == 0.0) r.e.clear();
  } else {
    *why = fmt::format("op '{}' is not a GEMM op", node.op);
    return std::nullopt;
  }
  return r;
}

bool supported_dtype(DType d) { return d == DType::Float32 || d == DType::Float16 || d == DType::BFloat16; }

int64_t product(const std::vector<int64_t>& v) {
  int64_t p = 1;
  for (int64_t x : v) p *= x;
  return p;
}

std::vector<int64_t> head(const std::vector<int64_t>& v, size_t drop) {
  return std::vector<int64_t>(v.begin(), v.end() - static_cast<std::ptrdiff_t>(std::min(drop, v.size())));
}

// The matmul views of an aten-style GEMM op (mm ... baddbmm), or why it has none.
std::optional<GemmViews> op_gemm_views(const Graph& g, const Node& node, std::string* why) {
  auto roles = assign_roles(g, node, why);
  if (!roles) return std::nullopt;
  GemmViews v;
  v.a = look_through_transposes(g, roles->a);
  v.b = look_through_transposes(g, roles->b);
  if (roles->b_is_weight) v.b = transposed(v.b);
  v.d = g.tensor(node.outputs[0]);
  v.e = roles->e;
  v.alpha = roles->alpha;
  v.beta = roles->beta;
  v.expected_rank_a = roles->expected_rank_a;
  v.expected_rank_b = roles->expected_rank_b;
  v.equal_batch = node.op == "bmm" || node.op == "baddbmm";
  return v;
}

// GemmOperand::order of an operand bound to `tensor` through `view`: "rows_cols" where a
// column-major view has the tensor's own last two dims (the tensor itself is the
// transposed view), "cols_rows" where a row-major view has them swapped, "" otherwise
// (the order `layout` implies, or a view whose dims do not map one to one).
std::string unconventional_order(const Tensor& tensor, const OperandView& view, const std::string& layout) {
  const size_t rt = tensor.shape.size(), rv = view.shape.size();
  if (rt < 2 || rv < 2 || tensor.strides.size() != rt || view.strides.size() != rv) return "";
  const std::array<int64_t, 4> own{tensor.shape[rt - 2], tensor.shape[rt - 1], tensor.strides[rt - 2],
                                   tensor.strides[rt - 1]};
  const std::array<int64_t, 4> seen{view.shape[rv - 2], view.shape[rv - 1], view.strides[rv - 2],
                                    view.strides[rv - 1]};
  const std::array<int64_t, 4> swapped{own[1], own[0], own[3], own[2]};
  if (own == swapped) return "";  // a square view whose two strides agree: no order to tell
  if (layout == "col" && seen == own) return "rows_cols";
  if (layout == "row" && seen == swapped) return "cols_rows";
  return "";
}

// The shared path: matmul views -> GemmProblem and the Match that covers `node`.
MatchOutcome match_gemm_views(const Graph& g, const Node& node, const GemmViews& views) {
  using R = MatchOutcome;
  const OperandView& a = views.a;
  const OperandView& b = views.b;
  const Tensor& out = views.d;

  // ---- dtype guards ----
  if (!supported_dtype(a.dtype)) {
    return R::reject(fmt::format("dtype {} is not supported (float32, float16, bfloat16)", dtype_name(a.dtype)));
  }
  if (!supported_dtype(b.dtype)) {
    return R::reject(fmt::format("dtype {} is not supported (float32, float16, bfloat16)", dtype_name(b.dtype)));
  }
  if (a.dtype != b.dtype) {
    return R::reject(fmt::format("operand dtypes differ: a is {}, b is {}", dtype_name(a.dtype), dtype_name(b.dtype)));
  }
  if (out.dtype != a.dtype) {
    return R::reject(fmt::format("output dtype {} differs from operand dtype {}", dtype_name(out.dtype),
                                 dtype_name(a.dtype)));
  }

  // ---- rank and static-shape guards ----
  using RankCheck = std::tuple<const char*, const OperandView*, size_t>;
  for (auto [name, view, expected] : std::array<RankCheck, 2>{RankCheck{"a", &a, views.expected_rank_a},
                                                             RankCheck{"b", &b, views.expected_rank_b}}) {
    if (view->shape.size() < 2) {
      return R::reject(fmt::format("operand {} is {}-D: a matrix-vector product is not a GEMM", name,
                                   view->shape.size()));
    }
    if (expected && view->shape.size() != expected) {
      return R::reject(fmt::format("{} operand {} is {}-D, expected {}-D", node.op, name, view->shape.size(), expected));
    }
    for (int64_t d : view->shape) {
      if (d < 0) return R::reject(fmt::format("operand {} has a dynamic shape {}", name, format_dims(view->shape)));
    }
  }
  if (out.has_dynamic_dim()) return R::reject(fmt::format("output has a dynamic shape {}", format_dims(out.shape)));

  const size_t ra = a.shape.size(), rb = b.shape.size();
  const int64_t m = a.shape[ra - 2], k = a.shape[ra - 1];
  const int64_t kb = b.shape[rb - 2], n = b.shape[rb - 1];
  if (k != kb) return R::reject(fmt::format("inner dimensions differ: a is {}, b is {}", format_dims(a.shape),
                                            format_dims(b.shape)));
  if (m == 0 || n == 0 || k == 0) return R::reject(fmt::format("empty problem m={} n={} k={}", m, n, k));

  // ---- batch ----
  const std::vector<int64_t> a_batch = head(a.shape, 2), b_batch = head(b.shape, 2);
  if (views.equal_batch) {
    if (a_batch != b_batch) {
      return R::reject(fmt::format("{} batch sizes differ: {} vs {}", node.op, format_dims(a_batch), format_dims(b_batch)));
    }
  }
  auto batch_shape = broadcast_shapes(a_batch, b_batch);
  if (!batch_shape) {
    return R::reject(fmt::format("batch dims {} and {} do not broadcast", format_dims(a_batch), format_dims(b_batch)));
  }
  std::vector<int64_t> expected_out = *batch_shape;
  expected_out.push_back(m);
  expected_out.push_back(n);
  if (out.shape != expected_out) {
    return R::reject(fmt::format("output shape {} is not the expected {}", format_dims(out.shape),
                                 format_dims(expected_out)));
  }
  int64_t batch = product(*batch_shape);

  GemmProblem p;
  p.m = m;
  p.n = n;
  p.k = k;
  p.element_a = a.dtype;
  p.element_b = b.dtype;
  p.element_d = out.dtype;
  p.a.tensor = a.tensor;
  p.b.tensor = b.tensor;
  p.d.tensor = out.id;

  using OperandSlot = std::tuple<const char*, const OperandView*, GemmOperand*>;
  for (auto [name, view, op] : std::array<OperandSlot, 2>{OperandSlot{"a", &a, &p.a}, OperandSlot{"b", &b, &p.b}}) {
    const size_t r = view->shape.size();
    auto bs = collapse_batch_stride(*batch_shape, head(view->shape, 2), head(view->strides, 2));
    if (!bs) {
      return R::reject(fmt::format("operand {}'s batch dims {} with strides {} do not flatten into one batch stride",
                                   name, format_dims(head(view->shape, 2)), format_dims(head(view->strides, 2))));
    }
    MatrixLayout layout = classify_matrix(view->shape[r - 2], view->shape[r - 1], view->strides[r - 2],
                                          view->strides[r - 1]);
    if (!layout.ok) {
      return R::reject(fmt::format("operand {} is not row- or column-major: strides {}", name,
                                   format_dims(view->strides)));
    }
    op->layout = layout.layout;
    op->ld = layout.ld;
    op->batch_stride = *bs;
    op->order = unconventional_order(g.tensor(view->tensor), *view, layout.layout);
  }

  // Output D must be exactly what the kernel writes: contiguous row-major.
  if (!out.is_contiguous()) {
    return R::reject(fmt::format("output d is not contiguous row-major: strides {}", format_dims(out.strides)));
  }
  p.d.ld = n;
  p.d.batch_stride = m * n;

  // ---- epilogue ----
  p.epilogue.alpha = views.alpha;
  p.epilogue.beta = views.e.empty() ? 0.0 : views.beta;
  if (!views.e.empty()) {
    const Tensor& e = g.tensor(views.e);
    if (e.dtype != out.dtype) {
      return R::reject(fmt::format("epilogue input '{}' is {}, output is {}", e.id, dtype_name(e.dtype),
                                   dtype_name(out.dtype)));
    }
    if (e.has_dynamic_dim()) return R::reject(fmt::format("epilogue input '{}' has a dynamic shape", e.id));
    if (e.rank() == 0) return R::reject(fmt::format("epilogue input '{}' is a scalar; no epilogue adds a scalar", e.id));
    if (static_cast<size_t>(e.rank()) > batch_shape->size() + 2) {
      return R::reject(fmt::format("epilogue input '{}' {} has more dims than the output", e.id, format_dims(e.shape)));
    }
    const size_t re = e.shape.size();
    const int64_t e_cols = e.shape[re - 1];
    const int64_t e_rows = re >= 2 ? e.shape[re - 2] : 1;
    const int64_t col_stride = e.strides[re - 1];
    const int64_t row_stride = re >= 2 ? e.strides[re - 2] : 0;
    if (e_cols != n) {
      return R::reject(fmt::format("epilogue input '{}' {} broadcasts along columns; only a row vector of {} or a "
                                   "matrix is supported", e.id, format_dims(e.shape), n));
    }
    std::vector<int64_t> e_batch_dims = re > 2 ? head(e.shape, 2) : std::vector<int64_t>{};
    std::vector<int64_t> e_batch_strides = re > 2 ? head(e.strides, 2) : std::vector<int64_t>{};
    auto ebs = collapse_batch_stride(*batch_shape, e_batch_dims, e_batch_strides);
    if (!ebs) return R::reject(fmt::format("epilogue input '{}' batch dims do not flatten into one stride", e.id));
    if (n > 1 && col_stride != 1) {
      return R::reject(fmt::format("epilogue input '{}' is not row-major: strides {}", e.id, format_dims(e.strides)));
    }
    p.epilogue.tensor = e.id;
    if (e_rows == 1) {
      if (*ebs != 0 && batch > 1) {
        return R::reject(fmt::format("epilogue input '{}' {} is a per-batch bias; only a bias shared by all batches "
                                     "is supported", e.id, format_dims(e.shape)));
      }
      p.epilogue.kind = "bias";
      p.epilogue.ld = 0;
      p.epilogue.batch_stride = 0;
    } else if (e_rows == m) {
      if (row_stride < n) {
        return R::reject(fmt::format("epilogue input '{}' is not row-major: strides {}", e.id, format_dims(e.strides)));
      }
      p.epilogue.kind = "c";
      p.epilogue.ld = row_stride;
      p.epilogue.batch_stride = *ebs;
    } else {
      return R::reject(fmt::format("epilogue input '{}' {} does not broadcast to {}", e.id, format_dims(e.shape),
                                   format_dims(expected_out)));
    }
  }

  // ---- batch folding and canonical batch strides ----
  // A contiguous-rows A with a shared B (3-D x 2-D matmul, linear on [B, T, C])
  // is one GEMM with M = batch * m: rows of consecutive batches are ld apart.
  if (batch > 1 && p.b.batch_stride == 0 && p.a.layout == "row" && p.a.batch_stride == m * p.a.ld &&
      p.d.batch_stride == m * p.d.ld &&
      (p.epilogue.kind != "c" || p.epilogue.batch_stride == m * p.epilogue.ld)) {
    p.m = m * batch;
    batch = 1;
  }
  p.batch = batch;
  if (batch == 1) {
    p.a.batch_stride = p.b.batch_stride = p.d.batch_stride = p.epilogue.batch_stride = 0;
  }

  Match match;
  match.rule = "gemm";
  match.root = node.id;
  std::vector<std::string> covered = a.absorbed;
  covered.insert(covered.end(), b.absorbed.begin(), b.absorbed.end());
  covered.push_back(node.id);
  std::sort(covered.begin(), covered.end(),
            [&](const std::string& x, const std::string& y) { return g.node_index(x) < g.node_index(y); });
  covered.erase(std::unique(covered.begin(), covered.end()), covered.end());
  match.nodes = covered;
  for (const std::string& t : {p.a.tensor, p.b.tensor, p.epilogue.tensor}) {
    if (!t.empty() && std::find(match.inputs.begin(), match.inputs.end(), t) == match.inputs.end()) {
      match.inputs.push_back(t);
    }
  }
  match.outputs = {out.id};
  match.dtype = a.dtype;
  match.problem_key = p.problem_key();
  match.shape_class = p.shape_class();
  match.notes = a.notes;
  match.notes.insert(b.notes.begin(), b.notes.end());
  match.gemm = p;
  MatchOutcome outcome;
  outcome.match = std::move(match);
  return outcome;
}

MatchOutcome match_gemm(const Graph& g, const Node& node) {
  if (node.outputs.size() != 1) {
    return MatchOutcome::reject(fmt::format("{} '{}' has {} outputs, expected 1", node.op, node.id,
                                            node.outputs.size()));
  }
  std::string why;
  auto views = node.op == rules_detail::kEinsumOp ? rules_detail::einsum_gemm_views(g, node, &why)
                                                  : op_gemm_views(g, node, &why);
  if (!views) return MatchOutcome::reject(why);
  return match_gemm_views(g, node, *views);
}

// Work of an ideal kernel: every operand element read once (a shared operand once
// for all batches), D written once, E read once.
Workload estimate_gemm(const Match& match) {
  Workload w;
  const GemmProblem& p = *match.gemm;
  const double batch = static_cast<double>(p.batch);
  const double m = static_cast<double>(p.m), n = static_cast<double>(p.n), k = static_cast<double>(p.k);
  w.dtype = p.element_a;
  w.flops = 2.0 * batch * m * n * k;
  const double a_elems = (p.batch > 1 && p.a.batch_stride != 0 ? batch : 1.0) * m * k;
  const double b_elems = (p.batch > 1 && p.b.batch_stride != 0 ? batch : 1.0) * k * n;
  const double d_elems = batch * m * n;
  double e_elems = 0.0;
  if (p.epilogue.kind == "bias") e_elems = n;
  if (p.epilogue.kind == "c") e_elems = (p.batch > 1 && p.epilogue.batch_stride != 0 ? batch : 1.0) * m * n;
  w.bytes = (a_elems * dtype_bytes(p.element_a) + b_elems * dtype_bytes(p.element_b) +
             (d_elems + e_elems) * dtype_bytes(p.element_d));
  return w;
}

}  // namespace

Rule make_gemm_rule() {
  Rule rule;
  rule.name = "gemm";
  rule.root_ops = {"mm", "bmm", "matmul", "linear", "addmm", "baddbmm", rules_detail::kEinsumOp};
  rule.description =
      "(batched) GEMM with bias / C epilogue, and two-operand einsum contractions; single-use transposes of the "
      "last two dims become operand layouts";
  rule.match = match_gemm;
  rule.estimate = estimate_gemm;
  return rule;
}

}  // namespace fact
