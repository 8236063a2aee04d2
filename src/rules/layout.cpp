// Layout reasoning shared by rules: which ops are views, which transposes can
// become an operand layout, and how strides map to row/col and batch strides.
#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "fact/rules.hpp"

namespace fact {

bool is_view_op(const std::string& op) {
  static const std::set<std::string> kViews = {"view", "reshape", "getitem", "contiguous", "t",
                                               "transpose", "permute", "split", "chunk"};
  return kViews.count(op) > 0;
}

namespace {

// Reads an integer attribute; nullopt when absent or not an integer.
std::optional<int64_t> int_attr(const Node& node, const char* name) {
  auto it = node.attrs.find(name);
  if (it == node.attrs.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
}

int64_t normalize_dim(int64_t dim, int64_t rank) { return dim < 0 ? dim + rank : dim; }

}  // namespace

bool swaps_last_two_dims(const Graph& g, const Node& node, std::string* why) {
  auto fail = [&](std::string reason) {
    if (why) *why = std::move(reason);
    return false;
  };
  if (node.op != "t" && node.op != "transpose" && node.op != "permute") {
    return fail(fmt::format("op '{}' is not a transpose", node.op));
  }
  if (node.inputs.size() != 1 || node.outputs.size() != 1) {
    return fail(fmt::format("{} '{}' has {} inputs and {} outputs, expected 1 and 1", node.op, node.id,
                            node.inputs.size(), node.outputs.size()));
  }
  const Tensor& in = g.tensor(node.inputs[0]);
  const int64_t rank = in.rank();
  if (rank < 2) return fail(fmt::format("{} '{}' of a {}-D tensor is not a matrix transpose", node.op, node.id, rank));
  if (node.op == "t") {
    if (rank != 2) return fail(fmt::format("t '{}' of a {}-D tensor", node.id, rank));
    return true;
  }
  if (node.op == "transpose") {
    auto d0 = int_attr(node, "dim0");
    auto d1 = int_attr(node, "dim1");
    if (!d0 || !d1) return fail(fmt::format("transpose '{}' lacks integer attrs dim0/dim1", node.id));
    int64_t a = normalize_dim(*d0, rank), b = normalize_dim(*d1, rank);
    if (std::min(a, b) != rank - 2 || std::max(a, b) != rank - 1) {
      return fail(fmt::format("transpose '{}' swaps dims {} and {} of a {}-D tensor, not the last two", node.id, *d0,
                              *d1, rank));
    }
    return true;
  }
  auto it = node.attrs.find("dims");
  if (it == node.attrs.end() || !it->is_array() || static_cast<int64_t>(it->size()) != rank) {
    return fail(fmt::format("permute '{}' lacks a 'dims' attr with {} entries", node.id, rank));
  }
  for (int64_t i = 0; i < rank; ++i) {
    const auto& entry = (*it)[static_cast<size_t>(i)];
    if (!entry.is_number_integer()) return fail(fmt::format("permute '{}' has a non-integer dim", node.id));
    int64_t d = normalize_dim(entry.get<int64_t>(), rank);
    int64_t expected = i < rank - 2 ? i : (i == rank - 2 ? rank - 1 : rank - 2);
    if (d != expected) {
      return fail(fmt::format("permute '{}' with dims {} moves more than the last two dims", node.id, it->dump()));
    }
  }
  return true;
}

OperandView transposed(OperandView view) {
  const size_t r = view.shape.size();
  if (r >= 2) {
    std::swap(view.shape[r - 1], view.shape[r - 2]);
    std::swap(view.strides[r - 1], view.strides[r - 2]);
  }
  return view;
}

OperandView look_through_transposes(const Graph& g, const std::string& tensor_id) {
  OperandView view;
  const Tensor& t = g.tensor(tensor_id);
  view.tensor = tensor_id;
  view.shape = t.shape;
  view.strides = t.strides;
  view.dtype = t.dtype;
  // Each absorbed transpose flips the view once more; the logical shape stays that of
  // the value the GEMM reads, the strides become those of the source seen transposed.
  bool flipped = false;
  for (int guard = 0; guard < 64; ++guard) {
    const Node* p = g.producer(view.tensor);
    if (!p) break;
    std::string why;
    if (!swaps_last_two_dims(g, *p, &why)) break;
    if (!g.single_use(view.tensor)) {
      view.notes[p->id] = fmt::format(
          "{} '{}' is not absorbed into a GEMM operand layout: its output '{}' has {} readers{}", p->op, p->id,
          view.tensor, g.consumers(view.tensor).size(), g.is_graph_output(view.tensor) ? " and is a graph output" : "");
      break;
    }
    view.absorbed.push_back(p->id);
    view.tensor = p->inputs[0];
    flipped = !flipped;
  }
  if (flipped) {
    const Tensor& src = g.tensor(view.tensor);
    view.strides = src.strides;
    const size_t r = view.strides.size();
    std::swap(view.strides[r - 1], view.strides[r - 2]);
  } else if (view.tensor != tensor_id) {
    view.strides = g.tensor(view.tensor).strides;
  }
  std::reverse(view.absorbed.begin(), view.absorbed.end());  // graph order
  return view;
}

MatrixLayout classify_matrix(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
  MatrixLayout out;
  // A size-1 dimension's stride is arbitrary in PyTorch; it never constrains the layout.
  if (col_stride == 1 || cols == 1) {
    if (rows <= 1 || row_stride >= cols) {
      out.ok = true;
      out.layout = "row";
      out.ld = rows <= 1 ? cols : row_stride;
      return out;
    }
  }
  if (row_stride == 1 || rows == 1) {
    if (cols <= 1 || col_stride >= rows) {
      out.ok = true;
      out.layout = "col";
      out.ld = cols <= 1 ? rows : col_stride;
      return out;
    }
  }
  return out;
}

std::optional<std::vector<int64_t>> broadcast_shapes(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  const size_t r = std::max(a.size(), b.size());
  std::vector<int64_t> out(r, 1);
  for (size_t i = 0; i < r; ++i) {
    int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da != db && da != 1 && db != 1) return std::nullopt;
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::optional<int64_t> collapse_batch_stride(const std::vector<int64_t>& batch_shape,
                                             const std::vector<int64_t>& operand_batch_dims,
                                             const std::vector<int64_t>& operand_batch_strides) {
  const size_t r = batch_shape.size();
  const size_t offset = r - std::min(r, operand_batch_dims.size());
  // (size, effective stride) of every batch dim that has extent > 1.
  std::vector<std::pair<int64_t, int64_t>> dims;
  for (size_t i = 0; i < r; ++i) {
    if (batch_shape[i] == 1) continue;
    int64_t stride = 0;
    if (i >= offset) {
      size_t j = i - offset;
      if (operand_batch_dims[j] != 1) stride = operand_batch_strides[j];
    }
    dims.emplace_back(batch_shape[i], stride);
  }
  if (dims.empty()) return 0;
  for (size_t i = 0; i + 1 < dims.size(); ++i) {
    if (dims[i].second != dims[i + 1].second * dims[i + 1].first) return std::nullopt;
  }
  return dims.back().second;
}

}  // namespace fact
