// torch.einsum front end of the GEMM rule: a two-operand contraction becomes the
// matmul views of gemm_views.hpp, so dtypes, layouts, batch strides and batch
// folding come from the same code as for matmul.
//
// Every index is one of: batch (in both operands and the output), m (first operand
// and output), n (second operand and output), k (both operands, not the output).
// Each of m, n, k becomes one GEMM dimension whose indices must merge into one
// stride; batch indices stay separate dims the GEMM path flattens (or folds into M).
//
// Guards (one reason each): exactly two tensor operands, an equation string, no
// index repeated inside one operand (a diagonal), no index summed in one operand
// only (a reduction), non-empty m, n and k, equal k extents, a contiguous output
// whose subscript lists batch, then m, then n indices (or batch, n, m: the operands
// swap, D^T = B^T A^T), and operands that list their dims as batch, then the two
// GEMM index runs in either order. The last two are the runtime binding's contract:
// it addresses each operand in its own dim order (see GemmViews).
#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include <fmt/format.h>

#include "gemm_views.hpp"

namespace fact {

std::string einsum_labels(const std::vector<int>& labels) {
  std::string out;
  for (int l : labels) {
    out += l >= kEinsumEllipsisLabel ? fmt::format("[e{}]", l - kEinsumEllipsisLabel)
                                     : std::string(1, static_cast<char>(l));
  }
  return out;
}

std::optional<EinsumSubscripts> parse_einsum(const std::string& equation, const std::vector<size_t>& operand_ranks,
                                             std::string* why) {
  std::string eq;
  for (char c : equation) {
    if (!std::isspace(static_cast<unsigned char>(c))) eq += c;
  }
  const size_t arrow = eq.find("->");
  const bool explicit_output = arrow != std::string::npos;
  const std::string lhs = eq.substr(0, arrow);
  const std::string rhs = explicit_output ? eq.substr(arrow + 2) : "";
  auto fail = [&](std::string reason) -> std::optional<EinsumSubscripts> {
    *why = fmt::format("einsum equation '{}': {}", equation, reason);
    return std::nullopt;
  };

  // One term: its letters (ASCII labels) around at most one "..." marker.
  struct Term {
    std::vector<int> before, after;
    bool ellipsis = false;
  };
  // "" when `s` parses into *t, else what is wrong with it.
  auto parse_term = [](const std::string& s, Term* t) -> std::string {
    for (size_t i = 0; i < s.size(); ++i) {
      if (s.compare(i, 3, "...") == 0) {
        if (t->ellipsis) return fmt::format("'{}' has two ellipses", s);
        t->ellipsis = true;
        i += 2;
      } else if (std::isalpha(static_cast<unsigned char>(s[i]))) {
        (t->ellipsis ? t->after : t->before).push_back(static_cast<unsigned char>(s[i]));
      } else {
        return fmt::format("'{}' has the character '{}'; subscripts are letters and '...'", s, s[i]);
      }
    }
    return "";
  };

  std::vector<Term> terms;
  for (size_t start = 0;;) {
    const size_t comma = lhs.find(',', start);
    Term t;
    const std::string bad = parse_term(lhs.substr(start, comma - start), &t);
    if (!bad.empty()) return fail(bad);
    terms.push_back(t);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (terms.size() != operand_ranks.size()) {
    return fail(fmt::format("{} operand subscripts for {} operands", terms.size(), operand_ranks.size()));
  }
  Term out_term;
  const std::string bad_output = explicit_output ? parse_term(rhs, &out_term) : "";
  if (!bad_output.empty()) return fail(bad_output);

  // Ellipsis dims are right-aligned: the widest ellipsis sets the broadcast width.
  std::vector<size_t> widths(terms.size(), 0);
  size_t width = 0;
  for (size_t i = 0; i < terms.size(); ++i) {
    const size_t letters = terms[i].before.size() + terms[i].after.size();
    if (terms[i].ellipsis ? letters > operand_ranks[i] : letters != operand_ranks[i]) {
      return fail(fmt::format("operand {} has {} dims, its subscript names {}", i, operand_ranks[i], letters));
    }
    widths[i] = operand_ranks[i] - letters;
    width = std::max(width, widths[i]);
  }
  auto ellipsis_labels = [&](size_t w) {
    std::vector<int> labels;
    for (size_t j = width - w; j < width; ++j) labels.push_back(kEinsumEllipsisLabel + static_cast<int>(j));
    return labels;
  };
  auto expand = [&](const Term& t, size_t w) {
    std::vector<int> labels = t.before;
    if (t.ellipsis) {
      for (int l : ellipsis_labels(w)) labels.push_back(l);
    }
    labels.insert(labels.end(), t.after.begin(), t.after.end());
    return labels;
  };

  EinsumSubscripts s;
  std::map<int, int> count;
  for (size_t i = 0; i < terms.size(); ++i) {
    s.operands.push_back(expand(terms[i], widths[i]));
    for (int l : s.operands.back()) count[l]++;
  }
  if (explicit_output) {
    s.output = expand(out_term, width);
    std::set<int> seen;
    for (int l : s.output) {
      if (!seen.insert(l).second) return fail(fmt::format("output index '{}' appears twice", einsum_labels({l})));
      if (!count.count(l)) return fail(fmt::format("output index '{}' is in no operand", einsum_labels({l})));
    }
  } else {
    // torch's implicit output: the ellipsis dims, then the letters used once, sorted.
    s.output = ellipsis_labels(width);
    for (auto [label, n] : count) {
      if (label < kEinsumEllipsisLabel && n == 1) s.output.push_back(label);
    }
  }
  return s;
}

namespace rules_detail {
namespace {

// One einsum operand (or the output): its labels and the extent and stride of each.
struct Indexed {
  std::string name;  // "operand 0 'bij'", for reasons
  const Tensor* tensor = nullptr;
  std::vector<int> labels;
  std::map<int, size_t> position;

  bool has(int label) const { return position.count(label) > 0; }
  // An absent label broadcasts: extent 1, stride 0.
  int64_t extent(int label) const { return has(label) ? tensor->shape[position.at(label)] : 1; }
  int64_t stride(int label) const { return has(label) ? tensor->strides[position.at(label)] : 0; }
  // The labels of `run` that address memory here (present, extent > 1).
  std::vector<int> addressed(const std::vector<int>& run) const {
    std::vector<int> out;
    for (int l : run) {
      if (has(l) && extent(l) != 1) out.push_back(l);
    }
    return out;
  }
};

Indexed indexed(std::string name, const Tensor& t, const std::vector<int>& labels) {
  Indexed x{std::move(name), &t, labels, {}};
  for (size_t i = 0; i < labels.size(); ++i) x.position[labels[i]] = i;
  return x;
}

std::vector<int> concat(std::initializer_list<std::vector<int>> parts) {
  std::vector<int> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// The extents and strides of a run of indices in `x`.
struct RunDims {
  std::vector<int64_t> extents, strides;
};
RunDims run_dims(const Indexed& x, const std::vector<int>& run) {
  RunDims dims;
  for (int l : run) {
    dims.extents.push_back(x.extent(l));
    dims.strides.push_back(x.stride(l));
  }
  return dims;
}

// A run of indices as one GEMM dim: extent = product, stride = that of the innermost
// addressed index; nullopt when the run does not walk memory uniformly.
struct MergedDim {
  int64_t extent = 1, stride = 0;
};
std::optional<MergedDim> merge_run(const Indexed& x, const std::vector<int>& run) {
  const RunDims dims = run_dims(x, run);
  auto stride = collapse_batch_stride(dims.extents, dims.extents, dims.strides);
  if (!stride) return std::nullopt;
  MergedDim d{1, *stride};
  for (int64_t e : dims.extents) d.extent *= e;
  return d;
}

}  // namespace

std::optional<GemmViews> einsum_gemm_views(const Graph& g, const Node& node, std::string* why) {
  auto fail = [&](std::string reason) -> std::optional<GemmViews> {
    *why = std::move(reason);
    return std::nullopt;
  };

  // ---- arguments: einsum(equation, a, b) or einsum(equation, [a, b]) ----
  const nlohmann::json args = node.attrs.contains("args") ? node.attrs["args"] : nlohmann::json::array();
  if (!args.is_array() || args.empty() || !args[0].is_string()) {
    return fail(fmt::format("einsum '{}' has no equation string as its first argument (the sublist form "
                            "einsum(a, [0, 1], b, [1, 2]) is not supported)", node.id));
  }
  const std::string equation = args[0].get<std::string>();
  nlohmann::json operand_args(args.begin() + 1, args.end());
  if (operand_args.size() == 1 && operand_args[0].is_array()) operand_args = nlohmann::json(operand_args[0]);
  std::vector<std::string> ids;
  for (const auto& arg : operand_args) {
    if (!arg.is_object() || !arg.contains("tensor") || !arg["tensor"].is_string()) {
      return fail(fmt::format("einsum '{}' operand {} is not a tensor: {}", node.id, ids.size(), arg.dump()));
    }
    ids.push_back(arg["tensor"].get<std::string>());
  }
  if (ids.size() != 2) {
    return fail(fmt::format("einsum '{}' has {} operands; only a two-operand contraction is a GEMM", node.id,
                            ids.size()));
  }
  const Tensor& out = g.tensor(node.outputs[0]);
  const Tensor* tensors[2] = {&g.tensor(ids[0]), &g.tensor(ids[1])};
  for (const Tensor* t : {tensors[0], tensors[1], &out}) {
    if (t->has_dynamic_dim()) return fail(fmt::format("einsum '{}': '{}' has a dynamic shape {}", node.id, t->id,
                                                      format_dims(t->shape)));
  }

  auto parsed = parse_einsum(equation, {tensors[0]->shape.size(), tensors[1]->shape.size()}, why);
  if (!parsed) return std::nullopt;
  std::vector<Indexed> operand;
  for (size_t i = 0; i < 2; ++i) {
    operand.push_back(indexed(fmt::format("operand {} '{}'", i, einsum_labels(parsed->operands[i])), *tensors[i],
                              parsed->operands[i]));
  }
  const Indexed d = indexed(fmt::format("output '{}'", einsum_labels(parsed->output)), out, parsed->output);
  if (parsed->output.size() != out.shape.size()) {
    return fail(fmt::format("einsum '{}': equation '{}' has {} output dims, the output is {}", node.id, equation,
                            parsed->output.size(), format_dims(out.shape)));
  }

  // ---- index roles ----
  for (const Indexed& x : operand) {
    for (int l : x.labels) {
      if (std::count(x.labels.begin(), x.labels.end(), l) > 1) {
        return fail(fmt::format("einsum '{}': index '{}' repeats in {}: a diagonal is not a GEMM", node.id,
                                einsum_labels({l}), x.name));
      }
    }
  }
  std::vector<int> batch, m, n, k;  // batch, m, n in output order
  for (int l : parsed->output) {
    const bool in0 = operand[0].has(l), in1 = operand[1].has(l);
    (in0 && in1 ? batch : in0 ? m : n).push_back(l);
  }
  for (const Indexed& x : operand) {
    for (int l : x.labels) {
      if (d.has(l)) continue;
      const Indexed& other = operand[&x == &operand[0] ? 1 : 0];
      if (!other.has(l)) {
        return fail(fmt::format("einsum '{}': index '{}' is only in {} and not in the output: summing over it is a "
                                "reduction, not a GEMM", node.id, einsum_labels({l}), x.name));
      }
      if (&x == &operand[0]) k.push_back(l);
      if (x.extent(l) != other.extent(l)) {
        return fail(fmt::format("einsum '{}': contracted index '{}' has extent {} in {} and {} in {}", node.id,
                                einsum_labels({l}), x.extent(l), x.name, other.extent(l), other.name));
      }
    }
  }
  if (k.empty()) return fail(fmt::format("einsum '{}' contracts no index: an outer product is not a GEMM", node.id));
  if (m.empty() || n.empty()) {
    return fail(fmt::format("einsum '{}': {} has no index of its own in the output: a matrix-vector product is not "
                            "a GEMM", node.id, operand[m.empty() ? 0 : 1].name));
  }

  // ---- output: D is written dense as [batch..., rows..., cols...] ----
  if (!out.is_contiguous()) {
    return fail(fmt::format("einsum '{}' output is not contiguous row-major (strides {}): torch returned a permuted "
                            "result, the kernel writes D densely", node.id, format_dims(out.strides)));
  }
  // Output [batch, n, m] is D^T = B^T A^T: operand 1 becomes the GEMM's A.
  const std::vector<int> out_addressed = d.addressed(parsed->output);
  const auto first_own = std::find_if(out_addressed.begin(), out_addressed.end(),
                                      [&](int l) { return std::find(batch.begin(), batch.end(), l) == batch.end(); });
  const bool swap = first_own != out_addressed.end() && std::find(n.begin(), n.end(), *first_own) != n.end();
  const Indexed& a = operand[swap ? 1 : 0];
  const Indexed& b = operand[swap ? 0 : 1];
  std::vector<int> rows = swap ? n : m, cols = swap ? m : n;
  if (out_addressed != d.addressed(concat({batch, rows, cols}))) {
    return fail(fmt::format("einsum '{}': {} does not list batch, then m, then n indices (m from operand 0, n from "
                            "operand 1, or n before m); the kernel writes D as [batch..., m..., n...]", node.id, d.name));
  }
  // k runs in the GEMM A's order; B must list the same run.
  std::vector<int> k_in_a_order;
  for (int l : a.labels) {
    if (std::find(k.begin(), k.end(), l) != k.end()) k_in_a_order.push_back(l);
  }
  k = k_in_a_order;

  // ---- operands: batch..., then the two GEMM runs, each run one stride ----
  // The binding (kernel.strides_match) walks a tensor's dims in the tensor's own order,
  // so the run an operand lists last must be its matrix's inner (unit-stride) dim.
  std::vector<int> rows_as_batch;  // A's m indices kept as batch dims that B broadcasts
  auto operand_runs = [&](const Indexed& x, std::vector<int>* rows, const std::vector<int>& cols,
                          MergedDim* rows_dim, MergedDim* cols_dim) -> std::optional<std::string> {
    const std::vector<int> own = x.addressed(x.labels);
    const bool rows_first = own == x.addressed(concat({batch, *rows, cols}));
    if (!rows_first && own != x.addressed(concat({batch, cols, *rows}))) {
      return fmt::format("einsum '{}': {} does not list its dims as {}the runs '{}' and '{}' in either order", node.id,
                         x.name, batch.empty() ? "" : fmt::format("batch '{}', then ", einsum_labels(batch)),
                         einsum_labels(*rows), einsum_labels(cols));
    }
    std::optional<MergedDim> r = merge_run(x, *rows);
    // Rows that do not merge stay batch dims (as matmul of a [x, i, k] view by a [k, n]
    // matrix) when they come before the inner run.
    if (!r && &x == &a && rows_first && rows->size() > 1) {
      rows_as_batch.assign(rows->begin(), rows->end() - 1);
      *rows = {rows->back()};
      r = merge_run(x, *rows);
    }
    const std::optional<MergedDim> c = merge_run(x, cols);
    using RunRef = std::pair<const std::optional<MergedDim>*, const std::vector<int>*>;
    for (auto [merged, run] : {RunRef{&r, rows}, RunRef{&c, &cols}}) {
      if (!*merged) {
        const RunDims dims = run_dims(x, *run);
        return fmt::format("einsum '{}': indices '{}' of {} (extents {} strides {}) do not merge into one stride",
                           node.id, einsum_labels(*run), x.name, format_dims(dims.extents), format_dims(dims.strides));
      }
    }
    MatrixLayout layout = classify_matrix(r->extent, c->extent, r->stride, c->stride);
    if (layout.ok && !x.addressed(*rows).empty() && !x.addressed(cols).empty() &&
        (layout.layout == "row") != rows_first) {
      return fmt::format("einsum '{}': {} is {}-major by its strides {} but lists '{}' last; the run listed last "
                         "must be the unit-stride one", node.id, x.name, layout.layout, format_dims(x.tensor->strides),
                         einsum_labels(rows_first ? cols : *rows));
    }
    *rows_dim = *r;
    *cols_dim = *c;
    return std::nullopt;
  };
  MergedDim a_rows, a_k, b_k, b_cols;
  std::vector<int> b_rows = k;
  if (auto bad = operand_runs(a, &rows, k, &a_rows, &a_k)) return fail(*bad);
  if (auto bad = operand_runs(b, &b_rows, cols, &b_k, &b_cols)) return fail(*bad);

  // ---- the matmul views ----
  GemmViews v;
  auto view_of = [&](const Indexed& x, MergedDim rows_dim, MergedDim cols_dim) {
    OperandView view;
    view.tensor = x.tensor->id;
    view.dtype = x.tensor->dtype;
    for (int l : concat({batch, rows_as_batch})) {
      view.shape.push_back(x.extent(l));
      view.strides.push_back(x.stride(l));
    }
    view.shape.insert(view.shape.end(), {rows_dim.extent, cols_dim.extent});
    view.strides.insert(view.strides.end(), {rows_dim.stride, cols_dim.stride});
    return view;
  };
  v.a = view_of(a, a_rows, a_k);
  v.b = view_of(b, b_k, b_cols);
  v.d = out;
  v.d.shape.clear();
  for (int l : concat({batch, rows_as_batch})) v.d.shape.push_back(d.extent(l));
  v.d.shape.insert(v.d.shape.end(), {a_rows.extent, b_cols.extent});
  v.d.strides = contiguous_strides(v.d.shape);  // out is contiguous and lists its dims in this order
  return v;
}

}  // namespace rules_detail
}  // namespace fact
