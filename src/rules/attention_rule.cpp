// The attention rule: fused multi-head attention O = softmax(scale * Q.K^T + mask) . V
// from the explicit form or from F.scaled_dot_product_attention.
//
// The head split / merge views (view, reshape, transpose, permute, split/chunk +
// getitem, basic slicing, contiguous) around q, k, v and the output are folded into
// (batch, head, seq, dim) strides of the tensor the kernel reads or writes, using a
// strided-view algebra ("atoms": (size, stride) runs in row-major order), so a
// reshape that copies in eager (merging batch and head of a transposed tensor)
// still becomes strides. Guards, each with one reason: float dtypes alike, static
// shapes, single-use intermediates, softmax over the last dim, scale by python
// scalars, a causal mask read from a buffer's top-left [Tq, Tk] block, dropout that
// is the identity, unit stride of every head dim (a kernel loads rows of d).
//
// Hazard: mask buffer values are not in the IR (capture runs on `meta`). The payload
// says which entries must be kept ("mask.keep") and that the kept region must be the
// lower triangle; realize must verify the buffer before using a causal kernel.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <set>

#include <fmt/format.h>

#include "fact/rules.hpp"
#include "rule_util.hpp"

namespace fact {
namespace {

using nlohmann::json;
using namespace rules_detail;

// ---------------------------------------------------------------------------
// Strided-view algebra

struct Atom {
  int64_t size = 1;
  int64_t stride = 0;
};

// A logical tensor as element offsets into `tensor`: dim i is the row-major product of
// its atoms, so a merged (batch*head) dim of a transposed source stays exact.
struct View {
  std::string tensor;
  int64_t offset = 0;
  std::vector<std::vector<Atom>> dims;

  std::vector<int64_t> shape() const {
    std::vector<int64_t> s;
    for (const auto& d : dims) {
      int64_t n = 1;
      for (const Atom& a : d) n *= a.size;
      s.push_back(n);
    }
    return s;
  }
};

View base_view(const Tensor& t) {
  View v;
  v.tensor = t.id;
  for (size_t i = 0; i < t.shape.size(); ++i) v.dims.push_back({Atom{t.shape[i], t.strides[i]}});
  return v;
}

// Drops size-1 atoms and merges runs that are one stride (a.stride == b.stride * b.size).
std::vector<Atom> normalize(const std::vector<Atom>& atoms) {
  std::vector<Atom> out;
  for (const Atom& a : atoms) {
    if (a.size == 1) continue;
    if (!out.empty() && out.back().stride == a.stride * a.size) {
      out.back().size *= a.size;
      out.back().stride = a.stride;
    } else {
      out.push_back(a);
    }
  }
  return out;
}

// Re-carves the row-major atom sequence into `shape`; false when a target dim would
// need part of an atom that does not divide.
bool reshape(View& v, const std::vector<int64_t>& shape, std::string* why) {
  std::vector<Atom> flat;
  for (const auto& d : v.dims) {
    for (const Atom& a : d) {
      if (a.size != 1) flat.push_back(a);
    }
  }
  std::vector<std::vector<Atom>> dims;
  size_t i = 0;
  for (int64_t want : shape) {
    std::vector<Atom> dim;
    int64_t left = want;
    while (left > 1) {
      if (i >= flat.size()) {
        *why = fmt::format("reshape to {} needs more elements than the view has", format_dims(shape));
        return false;
      }
      Atom& a = flat[i];
      if (left % a.size == 0) {
        dim.push_back(a);
        left /= a.size;
        ++i;
      } else if (a.size % left == 0) {
        dim.push_back(Atom{left, a.stride * (a.size / left)});
        a.size /= left;
        left = 1;
      } else {
        *why = fmt::format("reshape to {} splits a run of {} elements by {}", format_dims(shape), a.size, left);
        return false;
      }
    }
    if (dim.empty()) dim.push_back(Atom{1, 0});
    dims.push_back(dim);
  }
  if (i != flat.size()) {
    *why = fmt::format("reshape to {} drops elements of the view", format_dims(shape));
    return false;
  }
  v.dims = dims;
  return true;
}

int64_t norm_dim(int64_t d, int64_t rank) { return d < 0 ? d + rank : d; }

bool permute(View& v, const std::vector<int64_t>& order, std::string* why) {
  const int64_t r = static_cast<int64_t>(v.dims.size());
  if (static_cast<int64_t>(order.size()) != r) {
    *why = fmt::format("permute of {} dims on a {}-D view", order.size(), r);
    return false;
  }
  std::vector<std::vector<Atom>> out;
  std::set<int64_t> seen;
  for (int64_t d : order) {
    d = norm_dim(d, r);
    if (d < 0 || d >= r || !seen.insert(d).second) {
      *why = "permute dims are not a permutation";
      return false;
    }
    out.push_back(v.dims[static_cast<size_t>(d)]);
  }
  v.dims = out;
  return true;
}

bool swap_dims(View& v, int64_t a, int64_t b, std::string* why) {
  const int64_t r = static_cast<int64_t>(v.dims.size());
  a = norm_dim(a, r);
  b = norm_dim(b, r);
  if (a < 0 || b < 0 || a >= r || b >= r) {
    *why = fmt::format("transpose of dims {} and {} on a {}-D view", a, b, r);
    return false;
  }
  std::swap(v.dims[static_cast<size_t>(a)], v.dims[static_cast<size_t>(b)]);
  return true;
}

// Keeps elements start, start+step, ... (count of them) of dim `d`; the dim must be one run.
bool narrow(View& v, int64_t d, int64_t start, int64_t count, int64_t step, std::string* why) {
  auto atoms = normalize(v.dims[static_cast<size_t>(d)]);
  if (atoms.size() > 1) {
    *why = fmt::format("slicing dim {} that merges non-uniform strides", d);
    return false;
  }
  const int64_t stride = atoms.empty() ? 0 : atoms[0].stride;
  v.offset += start * stride;
  v.dims[static_cast<size_t>(d)] = {Atom{count, stride * step}};
  return true;
}

std::optional<int64_t> int_attr(const Node& n, const char* name) {
  auto it = n.attrs.find(name);
  if (it == n.attrs.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
}

// Applies one view node (forward direction) to `v`; `out` is the node's output tensor.
bool apply_forward(const Graph& g, const Node& n, const Node* split_parent, View& v, std::string* why) {
  const Tensor& out = g.tensor(n.outputs[0]);
  if (n.op == "view" || n.op == "reshape") return reshape(v, out.shape, why);
  if (n.op == "contiguous") return true;  // same elements; the copy is what we avoid
  if (n.op == "t") return swap_dims(v, 0, 1, why);
  if (n.op == "transpose") {
    auto a = int_attr(n, "dim0"), b = int_attr(n, "dim1");
    if (!a || !b) {
      *why = fmt::format("transpose '{}' lacks integer dim0/dim1", n.id);
      return false;
    }
    return swap_dims(v, *a, *b, why);
  }
  if (n.op == "permute") {
    auto it = n.attrs.find("dims");
    if (it == n.attrs.end() || !it->is_array()) {
      *why = fmt::format("permute '{}' lacks dims", n.id);
      return false;
    }
    std::vector<int64_t> order;
    for (const auto& d : *it) {
      if (!d.is_number_integer()) {
        *why = fmt::format("permute '{}' has a non-integer dim", n.id);
        return false;
      }
      order.push_back(d.get<int64_t>());
    }
    return permute(v, order, why);
  }
  if (n.op == "getitem" && split_parent) {
    // Element `index` of split/chunk along `dim`: a narrow with the element's extent.
    auto index = int_attr(n, "index");
    auto dim = int_attr(*split_parent, "dim");
    if (!index || !dim) {
      *why = fmt::format("getitem '{}' of {} '{}' lacks an integer index/dim", n.id, split_parent->op, split_parent->id);
      return false;
    }
    const int64_t r = static_cast<int64_t>(v.dims.size());
    const int64_t d = norm_dim(*dim, r);
    if (d < 0 || d >= r || out.rank() != r) {
      *why = fmt::format("getitem '{}' of {} '{}': dim {} out of range", n.id, split_parent->op, split_parent->id, *dim);
      return false;
    }
    // Element `index` starts at index * piece: split/chunk pieces are equal except the last.
    const int64_t whole = v.shape()[static_cast<size_t>(d)];
    int64_t piece = 0;
    if (split_parent->op == "split") {
      auto s = split_parent->attrs.find("split_size_or_sections");
      if (s != split_parent->attrs.end() && s->is_number_integer()) {
        piece = s->get<int64_t>();
      } else if (s != split_parent->attrs.end() && s->is_array()) {
        int64_t start = 0;
        for (int64_t i = 0; i < *index && i < static_cast<int64_t>(s->size()); ++i) start += (*s)[i].get<int64_t>();
        return narrow(v, d, start, out.shape[static_cast<size_t>(d)], 1, why);
      }
    } else {
      auto c = int_attr(*split_parent, "chunks");
      if (c && *c > 0) piece = (whole + *c - 1) / *c;
    }
    if (piece <= 0) {
      *why = fmt::format("getitem '{}': cannot size the pieces of {} '{}'", n.id, split_parent->op, split_parent->id);
      return false;
    }
    return narrow(v, d, *index * piece, out.shape[static_cast<size_t>(d)], 1, why);
  }
  if (n.op == "getitem") {
    // Basic slicing: a list of {"slice": [start, stop, step]} (or one slice), one per leading dim.
    json index = n.attrs.contains("index") ? n.attrs["index"] : json(nullptr);
    if (index.is_object() || index.is_number_integer()) index = json::array({index});
    if (!index.is_array()) {
      *why = fmt::format("getitem '{}' index is not a slice list", n.id);
      return false;
    }
    if (index.size() > v.dims.size()) {
      *why = fmt::format("getitem '{}' indexes {} dims of a {}-D view", n.id, index.size(), v.dims.size());
      return false;
    }
    // Slices narrow a dim; an integer selects one element and drops the dim.
    std::vector<std::vector<Atom>> kept;
    for (size_t d = 0; d < v.dims.size(); ++d) {
      if (d >= index.size()) {
        kept.push_back(v.dims[d]);
        continue;
      }
      const json& e = index[d];
      const int64_t size = v.shape()[d];
      if (e.is_number_integer()) {
        int64_t i = e.get<int64_t>();
        if (i < 0) i += size;
        if (!narrow(v, static_cast<int64_t>(d), i, 1, 1, why)) return false;
        continue;
      }
      if (!e.is_object() || !e.contains("slice")) {
        *why = fmt::format("getitem '{}' index {} is not a slice or an integer", n.id, e.dump());
        return false;
      }
      const json& s = e["slice"];
      int64_t start = s[0].is_number_integer() ? s[0].get<int64_t>() : 0;
      int64_t stop = s[1].is_number_integer() ? s[1].get<int64_t>() : size;
      const int64_t step = s[2].is_number_integer() ? s[2].get<int64_t>() : 1;
      if (start < 0) start += size;
      if (stop < 0) stop += size;
      start = std::clamp<int64_t>(start, 0, size);
      stop = std::clamp<int64_t>(stop, start, size);
      if (step != 1) {
        *why = fmt::format("getitem '{}' slices with step {}", n.id, step);
        return false;
      }
      if (!narrow(v, static_cast<int64_t>(d), start, stop - start, 1, why)) return false;
      kept.push_back(v.dims[d]);
    }
    v.dims = kept;
    if (v.shape() != out.shape) {
      *why = fmt::format("getitem '{}' gives {}, the IR says {}", n.id, format_dims(v.shape()), format_dims(out.shape));
      return false;
    }
    return true;
  }
  *why = fmt::format("op '{}' is not a view the rule folds into strides", n.op);
  return false;
}

// The inverse of one view node: `v` has the node's output shape, the result its input's.
bool apply_inverse(const Graph& g, const Node& n, View& v, std::string* why) {
  const Tensor& in = g.tensor(n.inputs[0]);
  if (n.op == "view" || n.op == "reshape") return reshape(v, in.shape, why);
  if (n.op == "contiguous") return true;
  if (n.op == "t" || n.op == "transpose") return apply_forward(g, n, nullptr, v, why);  // self-inverse
  if (n.op == "permute") {
    const auto& dims = n.attrs["dims"];
    const int64_t r = static_cast<int64_t>(dims.size());
    std::vector<int64_t> inverse(static_cast<size_t>(r));
    for (int64_t i = 0; i < r; ++i) inverse[static_cast<size_t>(norm_dim(dims[static_cast<size_t>(i)].get<int64_t>(), r))] = i;
    return permute(v, inverse, why);
  }
  *why = fmt::format("op '{}' after the attention output cannot be folded into output strides", n.op);
  return false;
}

bool is_fold_view(const std::string& op) {
  return op_is_any(op, {"view", "reshape", "transpose", "permute", "t", "contiguous", "getitem"});
}

// Producer chain of view nodes above `tensor` (graph order, source first) and the
// split/chunk parents of getitems (recorded as extra nodes). Stops at a non-view.
struct InputChain {
  std::string source;                 // tensor the kernel reads
  std::vector<std::string> nodes;     // view nodes, source side first (split parents included)
  std::vector<std::pair<std::string, std::string>> steps;  // (view node, split parent or "")
};

InputChain input_chain(const Graph& g, const std::string& tensor) {
  InputChain c;
  std::string cur = tensor;
  for (int guard = 0; guard < 64; ++guard) {
    const Node* p = g.producer(cur);
    if (!p || !is_fold_view(p->op) || p->inputs.empty()) break;
    const Node* split = nullptr;
    std::string next = p->inputs[0];
    if (p->op == "getitem") {
      const Node* pp = g.producer(p->inputs[0]);
      if (pp && (pp->op == "split" || pp->op == "chunk")) {
        split = pp;
        next = pp->inputs[0];
      }
      // A getitem of a tuple other than split/chunk: not a view this rule can size.
      if (!split && g.tensor(p->inputs[0]).shape.empty()) break;
    }
    c.steps.insert(c.steps.begin(), {p->id, split ? split->id : ""});
    c.nodes.insert(c.nodes.begin(), p->id);
    if (split) c.nodes.insert(c.nodes.begin(), split->id);
    cur = next;
  }
  c.source = cur;
  return c;
}

// Drops the chain's source side up to the last node whose output escapes the pattern
// (read by a node outside `covered` or a graph output): the kernel then reads that
// escaping view instead. Returns true when it changed anything.
bool trim_escaping(const Graph& g, InputChain& c, const std::set<std::string>& covered) {
  for (size_t i = c.steps.size(); i-- > 0;) {
    const Node& n = *g.find_node(c.steps[i].first);
    std::vector<std::string> outs = {n.outputs[0]};
    if (!c.steps[i].second.empty()) outs.push_back(g.find_node(c.steps[i].second)->outputs[0]);
    bool escapes = false;
    for (const auto& t : outs) {
      if (g.is_graph_output(t)) escapes = true;
      for (const Node* r : g.consumers(t)) {
        if (!covered.count(r->id)) escapes = true;
      }
    }
    if (!escapes) continue;
    // Keep steps after i; the kernel reads step i's output.
    InputChain t;
    t.source = n.outputs[0];
    t.steps.assign(c.steps.begin() + static_cast<std::ptrdiff_t>(i) + 1, c.steps.end());
    for (const auto& [v, sp] : t.steps) {
      if (!sp.empty()) t.nodes.push_back(sp);
      t.nodes.push_back(v);
    }
    c = t;
    return true;
  }
  return false;
}

std::optional<View> view_of_chain(const Graph& g, const InputChain& c, std::string* why) {
  View v = base_view(g.tensor(c.source));
  for (const auto& [id, split] : c.steps) {
    const Node& n = *g.find_node(id);
    if (!apply_forward(g, n, split.empty() ? nullptr : g.find_node(split), v, why)) {
      *why = fmt::format("'{}' ({}): {}", n.id, n.op, *why);
      return std::nullopt;
    }
  }
  return v;
}

// Strides of an operand as [batch, head, seq, dim] (+ its shape) or a reason.
struct Operand4 {
  std::string tensor;
  int64_t offset = 0;
  int64_t seq = 0, dim = 0;
  int64_t s_batch = 0, s_head = 0, s_seq = 0, s_dim = 0;
  json to_json() const {
    return json{{"tensor", tensor},
                {"offset", offset},
                {"strides", {{"batch", s_batch}, {"head", s_head}, {"seq", s_seq}, {"dim", s_dim}}}};
  }
};

std::optional<int64_t> one_stride(const std::vector<Atom>& atoms, int64_t size) {
  auto n = normalize(atoms);
  if (n.empty()) return size <= 1 ? std::optional<int64_t>(0) : std::nullopt;
  if (n.size() != 1) return std::nullopt;
  return n[0].stride;
}

std::optional<Operand4> to_bhsd(const char* name, const View& v, int64_t B, int64_t H, std::string* why) {
  const size_t r = v.dims.size();
  if (r < 2) {
    *why = fmt::format("{} is {}-D", name, r);
    return std::nullopt;
  }
  std::vector<Atom> batch_atoms;
  for (size_t i = 0; i + 2 < r; ++i) batch_atoms.insert(batch_atoms.end(), v.dims[i].begin(), v.dims[i].end());
  View bh;
  bh.dims = {batch_atoms};
  std::string w;
  if (!reshape(bh, {B, H}, &w)) {
    *why = fmt::format("{}'s batch dims do not split into batch {} x heads {}: {}", name, B, H, w);
    return std::nullopt;
  }
  Operand4 o;
  o.tensor = v.tensor;
  o.offset = v.offset;
  const auto shape = v.shape();
  o.seq = shape[r - 2];
  o.dim = shape[r - 1];
  auto sb = one_stride(bh.dims[0], B), sh = one_stride(bh.dims[1], H);
  auto ss = one_stride(v.dims[r - 2], o.seq), sd = one_stride(v.dims[r - 1], o.dim);
  if (!sb || !sh || !ss || !sd) {
    *why = fmt::format("{}'s {} dim is not one uniform stride", name, !sb ? "batch" : !sh ? "head" : !ss ? "seq" : "head-dim");
    return std::nullopt;
  }
  o.s_batch = *sb;
  o.s_head = *sh;
  o.s_seq = *ss;
  o.s_dim = *sd;
  if (o.dim > 1 && o.s_dim != 1) {
    *why = fmt::format("{}'s head dim has stride {}; a kernel needs unit stride (contiguous rows of d)", name, o.s_dim);
    return std::nullopt;
  }
  return o;
}

// ---------------------------------------------------------------------------
// The pattern

struct Core {
  std::string q, kt_or_k, v;      // tensors as the core reads them
  bool k_transposed = false;      // explicit form reads k^T
  std::string out;                // tensor the core produces ([.., Tq, dv])
  std::vector<std::string> nodes; // core nodes (matmuls, scale, mask ops, softmax, dropout / sdpa)
  double scale = 1.0;
  bool scale_default = false;     // SDPA without scale: 1/sqrt(d)
  bool causal = false;
  json mask = nullptr;
  json dropout = nullptr;
  std::string form;               // "explicit" | "sdpa"
  int score_passes = 0;           // materialised [B,H,Tq,Tk] tensors in eager
};

bool is_matmul(const std::string& op) { return op == "matmul" || op == "bmm"; }

bool is_eq_op(const std::string& op) { return op_is_any(op, {"eq", "other:operator.eq", "other:torch.eq", "other:Tensor.eq"}); }
bool is_ne_op(const std::string& op) { return op_is_any(op, {"ne", "other:operator.ne", "other:torch.ne", "other:Tensor.ne"}); }
bool is_not_op(const std::string& op) {
  return op_is_any(op, {"logical_not", "other:operator.invert", "other:torch.logical_not", "other:Tensor.logical_not",
                        "other:torch.bitwise_not", "other:Tensor.bitwise_not"});
}

// The mask source: a buffer sliced at its top-left [Tq, Tk] block. Adds covered nodes.
bool mask_buffer(const Graph& g, const std::string& tensor, int64_t tq, int64_t tk, std::vector<std::string>* nodes,
                 json* out, std::string* why) {
  std::string cur = tensor;
  for (int guard = 0; guard < 8; ++guard) {
    const Node* p = g.producer(cur);
    if (!p) break;
    if (p->op == "other:torch.tril") break;  // checked below
    if (p->op != "getitem") {
      *why = fmt::format("mask '{}' passes through {} '{}': a causal mask reads the buffer's [query, key] block "
                         "directly (only slicing is allowed)", tensor, p->op, p->id);
      return false;
    }
    InputChain c;
    c.source = p->inputs[0];
    c.steps = {{p->id, ""}};
    std::string w;
    if (!view_of_chain(g, c, &w)) {
      *why = fmt::format("mask slice '{}': {}", p->id, w);
      return false;
    }
    // Every slice must start at 0 (the top-left block of a tril buffer).
    json index = p->attrs.contains("index") ? p->attrs["index"] : json(nullptr);
    if (index.is_object()) index = json::array({index});
    for (const auto& e : index) {
      if (e.is_object() && e.contains("slice") && e["slice"][0].is_number_integer() && e["slice"][0].get<int64_t>() != 0) {
        *why = fmt::format("mask slice '{}' starts at {}, not at the buffer's top-left block", p->id, e.dump());
        return false;
      }
    }
    nodes->push_back(p->id);
    cur = p->inputs[0];
  }
  // A mask built in forward() as torch.tril(torch.ones(...)): causal by construction.
  if (const Node* tril = g.producer(cur); tril && tril->op == "other:torch.tril") {
    auto diagonal = json_number(other_arg(*tril, 1, "diagonal"));
    const std::string ones_id = other_tensor_arg(*tril, 0, "input");
    const Node* ones = ones_id.empty() ? nullptr : g.producer(ones_id);
    if (diagonal.value_or(0.0) != 0.0) {
      *why = fmt::format("mask tril '{}' has diagonal {}: not the causal triangle", tril->id, *diagonal);
      return false;
    }
    if (!ones || ones->op != "other:torch.ones" || !g.single_use(ones_id) || !g.single_use(cur)) {
      *why = fmt::format("mask tril '{}' is not of a single-use torch.ones(...)", tril->id);
      return false;
    }
    nodes->push_back(ones->id);
    nodes->push_back(tril->id);
    (*out)["buffer"] = nullptr;
    (*out)["source"] = "tril(ones)";
  } else {
    const Tensor& buf = g.tensor(cur);
    if (buf.kind != TensorKind::Buffer && buf.kind != TensorKind::Param) {
      *why = fmt::format("mask source '{}' is a {} tensor, not a module buffer or tril(ones): causality cannot be "
                         "checked", cur, tensor_kind_name(buf.kind));
      return false;
    }
    (*out)["buffer"] = cur;
  }
  const Tensor& m = g.tensor(tensor);
  const size_t r = m.shape.size();
  if (r < 2 || m.shape[r - 2] != tq || m.shape[r - 1] != tk) {
    *why = fmt::format("mask {} does not end in [query {}, key {}]: a mask over the wrong dims", format_dims(m.shape),
                       tq, tk);
    return false;
  }
  for (size_t i = 0; i + 2 < r; ++i) {
    if (m.shape[i] != 1) {
      *why = fmt::format("mask {} varies over batch/head dims; only one causal [Tq, Tk] mask is supported",
                         format_dims(m.shape));
      return false;
    }
  }
  (*out)["rows"] = json::array({0, tq});
  (*out)["cols"] = json::array({0, tk});
  return true;
}

// Single-use check for a core intermediate.
bool single_reader(const Graph& g, const std::string& t, std::string* why) {
  if (g.single_use(t)) return true;
  *why = fmt::format("intermediate '{}' has {} readers{}; fusing would drop a value another node needs", t,
                     g.consumers(t).size(), g.is_graph_output(t) ? " and is a graph output" : "");
  return false;
}

// Explicit form from the score matmul S: S -> {scale, mask}* -> softmax -> dropout? -> P.V
std::optional<Core> explicit_core(const Graph& g, const Node& s, std::string* why) {
  Core c;
  c.form = "explicit";
  c.q = s.inputs[0];
  c.kt_or_k = s.inputs[1];
  c.k_transposed = true;
  c.nodes.push_back(s.id);
  const Tensor& st = g.tensor(s.outputs[0]);
  if (st.rank() < 2) {
    *why = "score is not a matrix";
    return std::nullopt;
  }
  const int64_t tq = st.shape[st.shape.size() - 2], tk = st.shape.back();
  c.score_passes = 1;
  std::string cur = s.outputs[0];
  bool have_mask = false;
  const Node* softmax = nullptr;
  for (int guard = 0; guard < 16 && !softmax; ++guard) {
    if (!single_reader(g, cur, why)) return std::nullopt;
    const Node& n = *g.consumers(cur)[0];
    const Tensor& nt = g.tensor(n.outputs[0]);
    if (nt.shape != st.shape) {
      *why = fmt::format("{} '{}' changes the score shape {} to {}", n.op, n.id, format_dims(st.shape), format_dims(nt.shape));
      return std::nullopt;
    }
    if (n.op == "mul" || n.op == "div") {
      const std::string other = n.inputs[0] == cur ? (n.inputs.size() > 1 ? n.inputs[1] : "") : n.inputs[0];
      auto k = const_scalar(g, other);
      if (!k || (n.op == "div" && n.inputs[0] != cur)) {
        *why = fmt::format("{} '{}' scales the score by a tensor, not a python scalar", n.op, n.id);
        return std::nullopt;
      }
      if (n.op == "div" && n.attrs.contains("rounding_mode") && !n.attrs["rounding_mode"].is_null()) {
        *why = fmt::format("div '{}' rounds", n.id);
        return std::nullopt;
      }
      if (*k == 0.0 || !std::isfinite(*k)) {
        *why = fmt::format("{} '{}' scales by {}", n.op, n.id, *k);
        return std::nullopt;
      }
      c.scale *= n.op == "mul" ? *k : 1.0 / *k;
    } else if (n.op == "masked_fill" || (n.op == "add" && !have_mask)) {
      if (have_mask) {
        *why = fmt::format("second mask '{}': only one causal mask is supported", n.id);
        return std::nullopt;
      }
      json mask;
      std::string mask_tensor;
      if (n.op == "masked_fill") {
        if (n.inputs.size() != 3 || n.inputs[0] != cur) {
          *why = fmt::format("masked_fill '{}' does not fill the score", n.id);
          return std::nullopt;
        }
        auto fill = const_scalar(g, n.inputs[2]);
        if (!fill || !(*fill <= -1e4)) {
          *why = fmt::format("masked_fill '{}' fills with {}, not -inf (or a value <= -1e4 that exp() flushes to 0)",
                             n.id, g.tensor(n.inputs[2]).value.dump());
          return std::nullopt;
        }
        mask["kind"] = "masked_fill";
        mask["fill"] = std::isinf(*fill) ? json("-inf") : json(*fill);
        // The bool mask: buffer == 0 / buffer != 0 / ~buffer / buffer (bool).
        std::string m = n.inputs[1];
        std::string keep = "zero";  // kept where the buffer is 0 (masked where it is nonzero / true)
        const Node* mp = g.producer(m);
        std::vector<std::string> mnodes;
        if (mp && (is_eq_op(mp->op) || is_ne_op(mp->op))) {
          std::string src = mp->inputs.empty() ? "" : mp->inputs[0];
          std::optional<double> rv;
          std::string rhs_text;
          if (mp->op.rfind("other:", 0) == 0) {
            json rhs = other_arg(*mp, 1, "other");
            rhs_text = rhs.dump();
            if (mp->inputs.size() == 1) rv = json_number(rhs);  // compared with a python scalar
          } else if (mp->inputs.size() == 2) {
            rv = const_scalar(g, mp->inputs[1]);
            rhs_text = mp->inputs[1];
          }
          if (!rv || *rv != 0.0) {
            *why = fmt::format("mask '{}' compares with {}, not with the scalar 0", mp->id, rhs_text);
            return std::nullopt;
          }
          keep = is_eq_op(mp->op) ? "nonzero" : "zero";
          if (!single_reader(g, m, why)) return std::nullopt;
          mnodes.push_back(mp->id);
          m = src;
        } else if (mp && is_not_op(mp->op)) {
          keep = "nonzero";
          if (!single_reader(g, m, why)) return std::nullopt;
          mnodes.push_back(mp->id);
          m = mp->inputs.empty() ? "" : mp->inputs[0];
        } else if (g.tensor(m).dtype != DType::Bool) {
          *why = fmt::format("masked_fill '{}' mask '{}' is {}, not a bool mask or a comparison of a buffer with 0",
                             n.id, m, dtype_name(g.tensor(m).dtype));
          return std::nullopt;
        }
        if (m.empty()) {
          *why = fmt::format("masked_fill '{}': mask has no source tensor", n.id);
          return std::nullopt;
        }
        const Node* slice = g.producer(m);
        if (slice && !g.single_use(m)) {
          *why = fmt::format("mask slice '{}' has other readers", m);
          return std::nullopt;
        }
        if (!mask_buffer(g, m, tq, tk, &mnodes, &mask, why)) return std::nullopt;
        mask["keep"] = keep;
        c.nodes.insert(c.nodes.end(), mnodes.begin(), mnodes.end());
      } else {
        // Additive mask: score + buffer, -inf (or <= -1e4) where masked, 0 where kept.
        if (n.attrs.contains("alpha") && json_number(n.attrs["alpha"]).value_or(1.0) != 1.0) {
          *why = fmt::format("add '{}' has alpha != 1", n.id);
          return std::nullopt;
        }
        const std::string m = n.inputs[0] == cur ? n.inputs[1] : n.inputs[0];
        if (const_scalar(g, m)) {
          *why = fmt::format("add '{}' adds a scalar to the score, not a mask", n.id);
          return std::nullopt;
        }
        if (g.producer(m) && !g.single_use(m)) {
          *why = fmt::format("mask slice '{}' has other readers", m);
          return std::nullopt;
        }
        std::vector<std::string> mnodes;
        mask["kind"] = "additive";
        if (!mask_buffer(g, m, tq, tk, &mnodes, &mask, why)) return std::nullopt;
        mask["keep"] = "zero";
        mask["fill"] = "-inf";
        c.nodes.insert(c.nodes.end(), mnodes.begin(), mnodes.end());
      }
      if (mask["buffer"].is_string()) {
        mask["must_verify"] = "the kept entries of buffer[rows, cols] are exactly col <= row (causal, top-left aligned)";
      } else if (mask["keep"] != "nonzero") {
        *why = fmt::format("mask '{}' keeps the entries where tril(ones) is zero: the strict upper triangle, not causal",
                           n.id);
        return std::nullopt;
      }
      c.mask = mask;
      c.causal = true;
      have_mask = true;
    } else if (n.op == "softmax") {
      auto dim = int_attr(n, "dim");
      if (!dim || norm_dim(*dim, st.rank()) != st.rank() - 1) {
        *why = fmt::format("softmax '{}' is over dim {}, not the last (key) dim", n.id,
                           n.attrs.contains("dim") ? n.attrs["dim"].dump() : "?");
        return std::nullopt;
      }
      if (n.attrs.contains("dtype") && !n.attrs["dtype"].is_null() && n.attrs["dtype"] != dtype_name(st.dtype)) {
        *why = fmt::format("softmax '{}' casts to {}", n.id, n.attrs["dtype"].dump());
        return std::nullopt;
      }
      softmax = &n;
    } else {
      *why = fmt::format("score '{}' is followed by {} '{}': not a scale, causal mask or softmax", s.id, n.op, n.id);
      return std::nullopt;
    }
    c.nodes.push_back(n.id);
    c.score_passes += 2;  // each materialised step reads and writes the score
    cur = n.outputs[0];
  }
  if (!softmax) {
    *why = fmt::format("no softmax after score '{}'", s.id);
    return std::nullopt;
  }
  if (!single_reader(g, cur, why)) return std::nullopt;
  const Node* n = g.consumers(cur)[0];
  if (is_dropout_op(n->op)) {
    if (!dropout_is_identity(*n, why)) return std::nullopt;
    c.dropout = json{{"node", n->id}, {"p", n->op == "dropout" ? n->attrs.value("p", json(nullptr)) : other_arg(*n, 1, "p")},
                     {"training", n->op == "dropout" ? n->attrs.value("training", json(nullptr))
                                                     : other_arg(*n, 2, n->op == "other:torch.dropout" ? "train" : "training")}};
    c.nodes.push_back(n->id);
    c.score_passes += 2;
    cur = n->outputs[0];
    if (!single_reader(g, cur, why)) return std::nullopt;
    n = g.consumers(cur)[0];
  }
  if (!is_matmul(n->op) || n->inputs.size() != 2 || n->inputs[0] != cur || n->inputs[1] == cur) {
    *why = fmt::format("softmax output feeds {} '{}', not the probabilities operand of P @ V", n->op, n->id);
    return std::nullopt;
  }
  c.score_passes += 1;
  c.nodes.push_back(n->id);
  c.v = n->inputs[1];
  c.out = n->outputs[0];
  return c;
}

std::optional<Core> sdpa_core(const Node& n, std::string* why) {
  Core c;
  c.form = "sdpa";
  c.q = other_tensor_arg(n, 0, "query");
  c.kt_or_k = other_tensor_arg(n, 1, "key");
  c.v = other_tensor_arg(n, 2, "value");
  if (c.q.empty() || c.kt_or_k.empty() || c.v.empty()) {
    *why = fmt::format("scaled_dot_product_attention '{}': query/key/value are not all tensors", n.id);
    return std::nullopt;
  }
  json mask = other_arg(n, 3, "attn_mask");
  if (!mask.is_null()) {
    *why = fmt::format("scaled_dot_product_attention '{}' has an explicit attn_mask tensor (only is_causal is fused)", n.id);
    return std::nullopt;
  }
  json p = other_arg(n, 4, "dropout_p");
  if (!p.is_null() && json_number(p).value_or(1.0) != 0.0) {
    *why = fmt::format("scaled_dot_product_attention '{}' has dropout_p={}", n.id, p.dump());
    return std::nullopt;
  }
  json causal = other_arg(n, 5, "is_causal");
  c.causal = causal.is_boolean() && causal.get<bool>();
  json scale = other_arg(n, 6, "scale");
  if (scale.is_null()) {
    c.scale_default = true;
  } else if (auto sv = json_number(scale)) {
    c.scale = *sv;
  } else {
    *why = fmt::format("scaled_dot_product_attention '{}' scale {} is not a number", n.id, scale.dump());
    return std::nullopt;
  }
  json gqa = other_arg(n, 7, "enable_gqa");
  if (gqa.is_boolean() && gqa.get<bool>()) {
    *why = fmt::format("scaled_dot_product_attention '{}' uses enable_gqa", n.id);
    return std::nullopt;
  }
  if (c.causal) c.mask = json{{"kind", "is_causal"}};
  c.nodes.push_back(n.id);
  c.out = n.outputs[0];
  c.score_passes = 0;
  return c;
}

// Finds the score matmul of the explicit pattern that the view `root` feeds, walking
// forward through single-reader views to a matmul (score, or P.V whose probabilities
// lead back to the score).
const Node* find_score(const Graph& g, const Node& root, std::string* why) {
  // Breadth-first through view ops (a packed qkv tensor fans out to three getitems).
  std::vector<std::string> frontier = {root.outputs[0]};
  const Node* mm = nullptr;
  std::string last_stop;
  for (int depth = 0; depth < 16 && !mm && !frontier.empty(); ++depth) {
    std::vector<std::string> next;
    for (const auto& t : frontier) {
      for (const Node* r : g.consumers(t)) {
        if (is_matmul(r->op)) {
          if (!mm || g.node_index(r->id) < g.node_index(mm->id)) mm = r;
        } else if (is_fold_view(r->op) || r->op == "split" || r->op == "chunk") {
          next.push_back(r->outputs[0]);
        } else if (last_stop.empty()) {
          last_stop = fmt::format("{} '{}'", r->op, r->id);
        }
      }
    }
    frontier = next;
  }
  if (!mm) {
    *why = last_stop.empty() ? fmt::format("{} '{}' feeds no matmul", root.op, root.id)
                             : fmt::format("{} '{}' leads to {}, not to an attention matmul", root.op, root.id, last_stop);
    return nullptr;
  }
  // P.V: its first operand comes (through an identity dropout) from a softmax.
  std::string a = mm->inputs[0];
  const Node* pa = g.producer(a);
  if (pa && is_dropout_op(pa->op) && !pa->inputs.empty()) pa = g.producer(pa->inputs[0]);
  if (pa && pa->op == "softmax") {
    // Back from the softmax through scale / mask ops (either operand) to the score matmul.
    std::function<const Node*(const std::string&, int)> above = [&](const std::string& t, int depth) -> const Node* {
      const Node* p = g.producer(t);
      if (!p || depth > 8) return nullptr;
      if (is_matmul(p->op)) return p;
      if (!op_is_any(p->op, {"mul", "div", "masked_fill", "add"})) return nullptr;
      for (const auto& in : p->inputs) {
        if (const Node* found = above(in, depth + 1)) return found;
      }
      return nullptr;
    };
    if (const Node* score = above(pa->inputs[0], 0)) return score;
    *why = fmt::format("softmax '{}' before matmul '{}' is not fed by a score matmul", pa->id, mm->id);
    return nullptr;
  }
  return mm;
}

MatchOutcome match_attention(const Graph& g, const Node& root) {
  using R = MatchOutcome;
  std::string why;
  std::optional<Core> core;
  if (root.op == "transpose" || root.op == "permute") {
    const Node* s = find_score(g, root, &why);
    if (!s) return R::not_applicable(why);
    // One attention is judged once: from the first transpose/permute (graph order) of
    // the views feeding its score matmul; the other roots defer to it, so a rejection
    // is reported on one node instead of on every head-split view.
    const Node* first = nullptr;
    for (const std::string& operand : s->inputs) {
      for (const auto& [id, split] : input_chain(g, operand).steps) {
        const Node* v = g.find_node(id);
        if ((v->op == "transpose" || v->op == "permute") && (!first || g.node_index(id) < g.node_index(first->id))) {
          first = v;
        }
      }
    }
    if (first && first->id != root.id && g.node_index(first->id) < g.node_index(root.id)) {
      return R::not_applicable(fmt::format("the attention at score '{}' is judged from {} '{}'", s->id, first->op, first->id));
    }
    core = explicit_core(g, *s, &why);
    if (!core) {
      // A matmul that is not followed by softmax is a plain GEMM: not an attention at all.
      const Node* next = g.consumers(s->outputs[0]).empty() ? nullptr : g.consumers(s->outputs[0])[0];
      bool looks_like_attention = false;
      for (std::string cur = s->outputs[0]; next;) {
        if (next->op == "softmax") looks_like_attention = true;
        if (!op_is_any(next->op, {"mul", "div", "masked_fill", "add", "softmax"})) break;
        auto rs = g.consumers(next->outputs[0]);
        if (next->op == "softmax" || rs.size() != 1) break;
        next = rs[0];
      }
      if (!looks_like_attention) {
        return R::not_applicable(fmt::format("matmul '{}' fed by {} '{}' is not followed by a softmax: not attention",
                                             s->id, root.op, root.id));
      }
      return R::reject(why);
    }
  } else {
    core = sdpa_core(root, &why);
    if (!core) return R::reject(why);
  }

  // ---- dtypes and static shapes ----
  const Tensor& qt = g.tensor(core->q);
  const Tensor& kt = g.tensor(core->kt_or_k);
  const Tensor& vt = g.tensor(core->v);
  const Tensor& ot = g.tensor(core->out);
  for (const Tensor* t : {&qt, &kt, &vt, &ot}) {
    if (!is_float_dtype(t->dtype)) {
      return R::reject(fmt::format("'{}' is {}: attention supports float32, float16, bfloat16", t->id, dtype_name(t->dtype)));
    }
    if (t->dtype != qt.dtype) {
      return R::reject(fmt::format("dtypes differ: '{}' is {}, '{}' is {}", qt.id, dtype_name(qt.dtype), t->id,
                                   dtype_name(t->dtype)));
    }
    if (t->has_dynamic_dim()) return R::reject(fmt::format("'{}' has a dynamic shape {}", t->id, format_dims(t->shape)));
    if (t->rank() < 3 || t->rank() > 4) {
      return R::reject(fmt::format("'{}' is {}-D; attention takes [B*H, T, d] or [B, H, T, d]", t->id, t->rank()));
    }
  }
  if (qt.rank() != kt.rank() || qt.rank() != vt.rank()) {
    return R::reject(fmt::format("q, k, v ranks differ ({}, {}, {})", qt.rank(), kt.rank(), vt.rank()));
  }

  // ---- views -> strides ----
  InputChain cq = input_chain(g, core->q), ck = input_chain(g, core->kt_or_k), cv = input_chain(g, core->v);
  // Output side: follow single-reader views forward from the core output.
  std::vector<std::string> out_chain;
  std::string final_out = core->out;
  for (int guard = 0; guard < 16; ++guard) {
    auto rs = g.consumers(final_out);
    if (rs.size() != 1 || g.is_graph_output(final_out)) break;
    const Node* r = rs[0];
    if (!op_is_any(r->op, {"view", "reshape", "transpose", "permute", "contiguous"})) break;
    out_chain.push_back(r->id);
    final_out = r->outputs[0];
  }
  std::set<std::string> covered(core->nodes.begin(), core->nodes.end());
  for (auto* c : {&cq, &ck, &cv}) covered.insert(c->nodes.begin(), c->nodes.end());
  covered.insert(out_chain.begin(), out_chain.end());
  for (int round = 0; round < 8; ++round) {
    bool changed = false;
    for (auto* c : {&cq, &ck, &cv}) changed |= trim_escaping(g, *c, covered);
    if (!changed) break;
    covered = std::set<std::string>(core->nodes.begin(), core->nodes.end());
    for (auto* c : {&cq, &ck, &cv}) covered.insert(c->nodes.begin(), c->nodes.end());
    covered.insert(out_chain.begin(), out_chain.end());
  }
  // Core intermediates must not escape (the output-side chain is single-reader by construction).
  for (const auto& id : core->nodes) {
    const Node& n = *g.find_node(id);
    if (n.outputs[0] == core->out) continue;
    if (g.is_graph_output(n.outputs[0])) {
      return R::reject(fmt::format("intermediate '{}' is a graph output", n.outputs[0]));
    }
    for (const Node* r : g.consumers(n.outputs[0])) {
      if (!covered.count(r->id)) {
        return R::reject(fmt::format("intermediate '{}' is also read by {} '{}' outside the attention", n.outputs[0],
                                     r->op, r->id));
      }
    }
  }

  auto vq = view_of_chain(g, cq, &why);
  if (!vq) return R::reject("q: " + why);
  auto vk = view_of_chain(g, ck, &why);
  if (!vk) return R::reject("k: " + why);
  if (core->k_transposed) swap_dims(*vk, -2, -1, &why);
  auto vv = view_of_chain(g, cv, &why);
  if (!vv) return R::reject("v: " + why);
  View vo = base_view(g.tensor(final_out));
  for (auto it = out_chain.rbegin(); it != out_chain.rend(); ++it) {
    const Node& n = *g.find_node(*it);
    if (!apply_inverse(g, n, vo, &why)) return R::reject(fmt::format("output '{}' ({}): {}", n.id, n.op, why));
  }
  if (vo.shape() != ot.shape) {
    return R::reject(fmt::format("output views map {} back to {}, not {}", final_out, format_dims(vo.shape()),
                                 format_dims(ot.shape)));
  }

  // ---- batch x heads ----
  const size_t r = qt.shape.size();
  int64_t B = 1, H = 1;
  if (r == 4) {
    B = qt.shape[0];
    H = qt.shape[1];
  } else {
    const int64_t bh = qt.shape[0];
    H = bh;
    for (const View* v : {&*vq, &*vk, &*vv, &vo}) {
      std::vector<Atom> atoms = normalize(v->dims[0]);
      if (atoms.size() == 2) {
        B = atoms[0].size;
        H = atoms[1].size;
        break;
      }
    }
  }
  auto oq = to_bhsd("q", *vq, B, H, &why);
  if (!oq) return R::reject(why);
  auto ok = to_bhsd("k", *vk, B, H, &why);
  if (!ok) return R::reject(why);
  auto ov = to_bhsd("v", *vv, B, H, &why);
  if (!ov) return R::reject(why);
  auto oo = to_bhsd("output", vo, B, H, &why);
  if (!oo) return R::reject(why);
  if (oq->dim != ok->dim) return R::reject(fmt::format("q head dim {} != k head dim {}", oq->dim, ok->dim));
  if (ok->seq != ov->seq) return R::reject(fmt::format("k length {} != v length {}", ok->seq, ov->seq));
  if (oo->seq != oq->seq || oo->dim != ov->dim) return R::reject("output shape does not match q and v");

  // 16-byte alignment of every row start (vectorised / TMA loads).
  const int64_t align = 16 / dtype_bytes(qt.dtype);
  for (const Operand4* o : {&*oq, &*ok, &*ov, &*oo}) {
    for (int64_t s : {o->offset, o->s_batch, o->s_head, o->s_seq}) {
      if (s % align != 0) {
        return R::reject(fmt::format("'{}' offset/stride {} is not a multiple of {} elements (16-byte alignment)",
                                     o->tensor, s, align));
      }
    }
  }
  if (oq->dim % align != 0) return R::reject(fmt::format("head dim {} is not a multiple of {}", oq->dim, align));

  const double scale = core->scale_default ? 1.0 / std::sqrt(static_cast<double>(oq->dim)) : core->scale;

  Match m;
  m.rule = "attention";
  m.root = root.id;
  covered.insert(core->nodes.begin(), core->nodes.end());
  std::vector<std::string> nodes(covered.begin(), covered.end());
  std::sort(nodes.begin(), nodes.end(), [&](const std::string& a, const std::string& b) {
    return g.node_index(a) < g.node_index(b);
  });
  m.nodes = nodes;
  for (const auto& t : {oq->tensor, ok->tensor, ov->tensor}) {
    if (std::find(m.inputs.begin(), m.inputs.end(), t) == m.inputs.end()) m.inputs.push_back(t);
  }
  if (core->mask.is_object() && core->mask.contains("buffer") && core->mask["buffer"].is_string()) {
    m.inputs.push_back(core->mask["buffer"]);
  }
  m.outputs = {final_out};
  m.dtype = qt.dtype;
  json p = {{"form", core->form},
            {"batch", B},
            {"heads", H},
            {"seq_q", oq->seq},
            {"seq_k", ok->seq},
            {"head_dim", oq->dim},
            {"head_dim_v", ov->dim},
            {"scale", scale},
            {"causal", core->causal},
            {"mask", core->mask},
            {"dropout", core->dropout},
            {"q", oq->to_json()},
            {"k", ok->to_json()},
            {"v", ov->to_json()},
            {"o", oo->to_json()},
            {"element", dtype_name(qt.dtype)},
            {"score_passes_eager", core->score_passes}};
  m.payload["attention"] = p;
  m.problem_key = fmt::format("attention:{}:b{}:h{}:q{}:k{}:d{}:dv{}:{}", dtype_short(qt.dtype), B, H, oq->seq, ok->seq,
                              oq->dim, ov->dim, core->causal ? "causal" : "full");
  m.shape_class = fmt::format("attention:{}:b{}:h{}:q{}:k{}:d{}:{}", dtype_short(qt.dtype), size_bucket(B),
                              size_bucket(H), size_bucket(oq->seq), size_bucket(ok->seq), oq->dim,
                              core->causal ? "causal" : "full");
  MatchOutcome out;
  out.match = std::move(m);
  return out;
}

Workload estimate_attention(const Match& m) {
  const json& a = m.payload.at("attention");
  return attention_work(a["batch"], a["heads"], a["seq_q"], a["seq_k"], a["head_dim"], a["head_dim_v"],
                        a["causal"].get<bool>(), a["score_passes_eager"].get<int>(), m.dtype);
}

}  // namespace

Rule make_attention_rule() {
  Rule rule;
  rule.name = "attention";
  rule.root_ops = {"transpose", "permute", "other:torch.nn.functional.scaled_dot_product_attention",
                   "other:torch._C._nn.scaled_dot_product_attention"};
  rule.description =
      "fused multi-head attention (explicit q.k^T/scale/causal mask/softmax/p=0 dropout/.v, or SDPA); head "
      "split/merge views become strides";
  rule.match = match_attention;
  rule.estimate = estimate_attention;
  return rule;
}

}  // namespace fact
