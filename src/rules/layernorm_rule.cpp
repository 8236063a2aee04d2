// The normalisation rule: LayerNorm and RMSNorm over the last dim, one family (one
// payload "layernorm", one realizer, one kernel template), told apart by the payload's
// "norm" ("layer" | "rms"), the problem key's prefix and the variant name's prefix.
//   LayerNorm: layer_norm (F.layer_norm / nn.LayerNorm) with optional weight/bias.
//   RMSNorm:   rms_norm (F.rms_norm / nn.RMSNorm), or written out, recognised by structure
//              from its square: x * rsqrt(mean(x^2, -1, keepdim) + eps) * w with the square
//              as pow(x, 2) / x * x / torch.square(x), the mean as mean or sum / C, the root as
//              rsqrt / 1 / sqrt / pow(., -0.5) / x / sqrt(.), eps added before the root (or
//              none), the weight on either side, and float casts around it (x.float() ...
//              .type_as(x)). The weight multiply is absorbed when the weight is a [C] vector;
//              otherwise it stays in PyTorch with a note saying why.
// Both absorb the residual add feeding them (y = norm(a + b), the sum also written when
// others read it).
//
// Guards (one reason each): float dtype alike for input, weight, bias and output; static
// shapes; the statistic over the last dim only (normalized_shape == [last dim], or a
// keepdim mean over dim -1); eps a scalar constant; unit stride of the last dim and rows
// that flatten into one row stride (a kernel reads whole rows); weight/bias contiguous
// vectors of that length; every intermediate of a written-out norm read only inside it.
// The residual add is absorbed only when it is an add of two same-shape, same-dtype
// tensors with alpha 1 and no GEMM epilogue would absorb it already (a GEMM before it in
// graph order claims it first; the note says so).
#include <algorithm>
#include <limits>
#include <map>
#include <tuple>

#include <fmt/format.h>

#include "fact/rules.hpp"
#include "rule_util.hpp"

namespace fact {
namespace {

using nlohmann::json;
using namespace rules_detail;

// The GEMM rule's root ops are the one list of GEMM spellings (einsum included).
bool is_gemm_op(const std::string& op) {
  static const std::vector<std::string> gemm_ops = make_gemm_rule().root_ops;
  return std::find(gemm_ops.begin(), gemm_ops.end(), op) != gemm_ops.end();
}

// One stride per row when every dim but the last walks memory uniformly; nullopt otherwise.
std::optional<int64_t> row_stride(const Tensor& t) {
  const size_t r = t.shape.size();
  if (r < 2) return int64_t{0};
  std::vector<int64_t> dims(t.shape.begin(), t.shape.end() - 1), strides(t.strides.begin(), t.strides.end() - 1);
  auto s = collapse_batch_stride(dims, dims, strides);
  return s;
}

// True when a GEMM earlier in the graph would absorb `add` into its epilogue chain.
bool claimed_by_gemm(const Graph& g, const Node& add, std::string* which) {
  for (const auto& in : add.inputs) {
    // Walk up single-reader elementwise producers to a GEMM op.
    std::string cur = in;
    for (int guard = 0; guard < 32; ++guard) {
      const Node* p = g.producer(cur);
      if (!p) break;
      if (is_gemm_op(p->op)) {
        static const Rule gemm_rule = make_gemm_rule();
        if (!gemm_rule.match(g, *p).match) break;  // that GEMM stays in PyTorch: nothing absorbs the add
        std::string why;
        EpilogueChain c = find_epilogue_chain(g, *p, &why);
        if (std::find(c.nodes.begin(), c.nodes.end(), add.id) != c.nodes.end()) {
          *which = p->id;
          return true;
        }
        break;
      }
      if (p->inputs.empty()) break;
      cur = p->inputs[0];
    }
  }
  return false;
}

enum class Norm { Layer, Rms };

// What a spelling matcher found; finish_norm applies the guards every spelling shares
// and builds the match.
struct NormFound {
  Norm norm = Norm::Layer;
  std::string x;                   // the normalised tensor (before any absorbed cast)
  std::string y;                   // the result
  std::string weight, bias;        // "" when absent
  double eps = 0.0;
  std::vector<std::string> nodes;  // covered nodes but the residual add
  int eager_passes = 0;            // written-out RMSNorm: row-sized tensors eager reads + writes
  std::map<std::string, std::string> notes;
};

// Why `id` cannot be a norm's weight/bias (a contiguous [cols] vector of the input's dtype).
std::optional<std::string> vector_operand_problem(const Graph& g, const char* role, const std::string& id,
                                                  int64_t cols, DType dtype) {
  const Tensor& t = g.tensor(id);
  if (t.dtype != dtype) return fmt::format("{} '{}' is {}, input is {}", role, id, dtype_name(t.dtype), dtype_name(dtype));
  if (t.shape != std::vector<int64_t>{cols} || (cols > 1 && t.strides[0] != 1))
    return fmt::format("{} '{}' {} is not a contiguous vector of {}", role, id, format_dims(t.shape), cols);
  return std::nullopt;
}

MatchOutcome finish_norm(const Graph& g, const Node& root, NormFound f) {
  using R = MatchOutcome;
  const bool rms = f.norm == Norm::Rms;
  const Tensor& x = g.tensor(f.x);
  const Tensor& y = g.tensor(f.y);
  if (!is_float_dtype(x.dtype)) {
    return R::reject(fmt::format("input '{}' is {}: {} supports float32, float16, bfloat16", x.id, dtype_name(x.dtype),
                                 rms ? "RMSNorm" : "layer_norm"));
  }
  if (y.dtype != x.dtype) return R::reject(fmt::format("output dtype {} differs from input {}", dtype_name(y.dtype), dtype_name(x.dtype)));
  if (x.has_dynamic_dim()) return R::reject(fmt::format("input '{}' has a dynamic shape {}", x.id, format_dims(x.shape)));
  if (x.rank() < 1) return R::reject(fmt::format("{} of a scalar", rms ? "RMSNorm" : "layer_norm"));
  if (y.shape != x.shape) {
    return R::reject(fmt::format("output {} has not the input's shape {} (a broadcast)", format_dims(y.shape),
                                 format_dims(x.shape)));
  }
  const int64_t cols = x.shape.back();
  for (const auto& [role, id] : {std::pair<const char*, std::string>{"weight", f.weight}, {"bias", f.bias}}) {
    if (id.empty()) continue;
    if (auto why = vector_operand_problem(g, role, id, cols, x.dtype)) return R::reject(*why);
  }
  if (!y.is_contiguous()) return R::reject(fmt::format("output is not contiguous: strides {}", format_dims(y.strides)));

  auto check_rows = [&](const Tensor& t, std::string* why) {
    if (cols > 1 && t.strides.back() != 1) {
      *why = fmt::format("'{}' has last-dim stride {}; the kernel reads whole rows", t.id, t.strides.back());
      return std::optional<int64_t>();
    }
    auto rs = row_stride(t);
    if (!rs) *why = fmt::format("'{}' rows {} with strides {} do not flatten into one row stride", t.id,
                                format_dims(t.shape), format_dims(t.strides));
    return rs;
  };
  std::string why;
  const int64_t rows = cols > 0 ? x.numel() / cols : 0;

  Match m;
  m.rule = "layernorm";
  m.root = root.id;
  m.dtype = x.dtype;
  m.notes = std::move(f.notes);
  json p = {{"norm", rms ? "rms" : "layer"}, {"rows", rows}, {"cols", cols}, {"eps", f.eps},
            {"element", dtype_name(x.dtype)},
            {"weight", f.weight.empty() ? json(nullptr) : json(f.weight)},
            {"bias", f.bias.empty() ? json(nullptr) : json(f.bias)},
            {"y", {{"tensor", y.id}, {"row_stride", cols}}},
            {"eager_passes", f.eager_passes > 0 ? json(f.eager_passes) : json(nullptr)}};

  // x is read again when a node outside the pattern (or the module's output) reads it.
  auto read_outside = [&](const std::string& id) {
    if (g.is_graph_output(id)) return true;
    for (const Node* c : g.consumers(id))
      if (std::find(f.nodes.begin(), f.nodes.end(), c->id) == f.nodes.end()) return true;
    return false;
  };

  // Residual add feeding the norm.
  json residual = nullptr;
  std::vector<std::string> nodes;
  std::vector<std::string> inputs;
  const Node* add = g.producer(x.id);
  bool absorbed = false;
  if (add && add->op == "add" && add->inputs.size() == 2) {
    const Tensor& a = g.tensor(add->inputs[0]);
    const Tensor& b = g.tensor(add->inputs[1]);
    std::string gemm;
    std::string refuse;
    const double alpha = add->attrs.contains("alpha") ? json_number(add->attrs["alpha"]).value_or(NAN) : 1.0;
    if (alpha != 1.0) refuse = fmt::format("add '{}' has alpha {}", add->id, alpha);
    else if (a.kind == TensorKind::Const || b.kind == TensorKind::Const) refuse = fmt::format("add '{}' adds a scalar", add->id);
    else if (a.shape != x.shape || b.shape != x.shape) refuse = fmt::format("add '{}' broadcasts", add->id);
    else if (a.dtype != x.dtype || b.dtype != x.dtype) refuse = fmt::format("add '{}' mixes dtypes", add->id);
    else if (claimed_by_gemm(g, *add, &gemm)) {
      refuse = fmt::format("add '{}' is absorbed into the epilogue of GEMM '{}'", add->id, gemm);
    }
    std::optional<int64_t> ra, rb;
    if (refuse.empty()) {
      ra = check_rows(a, &refuse);
      if (ra) rb = check_rows(b, &refuse);
    }
    if (refuse.empty() && ra && rb) {
      const bool writes_sum = read_outside(x.id);
      residual = {{"node", add->id}, {"a", {{"tensor", a.id}, {"row_stride", *ra}}},
                  {"b", {{"tensor", b.id}, {"row_stride", *rb}}},
                  {"sum", writes_sum ? json{{"tensor", x.id}, {"row_stride", cols}} : json(nullptr)}};
      nodes.push_back(add->id);
      inputs = {a.id, b.id};
      if (writes_sum) m.outputs.push_back(x.id);
      absorbed = true;
    } else if (!refuse.empty()) {
      m.notes[add->id] = fmt::format("residual add not fused into {} '{}': {}", rms ? "rmsnorm" : "layernorm",
                                     root.id, refuse);
    }
  }
  if (!absorbed) {
    auto rs = check_rows(x, &why);
    if (!rs) return R::reject(why);
    p["x"] = {{"tensor", x.id}, {"row_stride", *rs}};
    inputs = {x.id};
  } else {
    p["x"] = nullptr;
  }
  p["residual"] = residual;
  nodes.insert(nodes.end(), f.nodes.begin(), f.nodes.end());
  std::sort(nodes.begin(), nodes.end(),
            [&](const std::string& l, const std::string& r) { return g.node_index(l) < g.node_index(r); });
  m.nodes = nodes;
  m.inputs = inputs;
  if (!f.weight.empty()) m.inputs.push_back(f.weight);
  if (!f.bias.empty()) m.inputs.push_back(f.bias);
  m.outputs.push_back(y.id);
  m.payload["layernorm"] = p;
  const std::string flags = fmt::format("{}{}{}", f.weight.empty() ? "" : "w", f.bias.empty() ? "" : "b",
                                        absorbed ? (residual["sum"].is_null() ? "r" : "rs") : "");
  const char* family = rms ? "rmsnorm" : "layernorm";
  m.problem_key = fmt::format("{}:{}:rows{}:cols{}:{}", family, dtype_short(x.dtype), rows, cols, flags.empty() ? "-" : flags);
  m.shape_class = fmt::format("{}:{}:rows{}:cols{}:{}", family, dtype_short(x.dtype), size_bucket(rows),
                              size_bucket(cols), flags.empty() ? "-" : flags);
  MatchOutcome o;
  o.match = std::move(m);
  return o;
}

// The tensor ids of a canonical node's optional weight/bias inputs (absent: attrs say null).
std::pair<std::string, std::string> affine_inputs(const Node& n, bool has_bias) {
  std::string weight, bias;
  size_t next = 1;
  auto absent = [&](const char* k) { return n.attrs.contains(k) && n.attrs[k].is_null(); };
  if (!absent("weight") && next < n.inputs.size()) weight = n.inputs[next++];
  if (has_bias && !absent("bias") && next < n.inputs.size()) bias = n.inputs[next++];
  return {weight, bias};
}

// normalized_shape == [last dim of x]; the reason otherwise.
std::optional<std::string> last_dim_shape_problem(const Node& n, const Tensor& x, const char* what) {
  const int64_t cols = x.shape.back();
  auto ns = n.attrs.find("normalized_shape");
  if (ns == n.attrs.end() || !ns->is_array() || ns->size() != 1 || !(*ns)[0].is_number_integer() ||
      (*ns)[0].get<int64_t>() != cols) {
    return fmt::format("normalized_shape {} is not the last dim [{}]: only last-dim {} is fused",
                       ns == n.attrs.end() ? "?" : ns->dump(), cols, what);
  }
  return std::nullopt;
}

// layer_norm / rms_norm: the fused ops (canonical, docs/CONTRACTS.md §1).
MatchOutcome match_norm_op(const Graph& g, const Node& n) {
  using R = MatchOutcome;
  const bool rms = n.op == "rms_norm";
  if (n.inputs.empty() || n.outputs.size() != 1) return R::reject(fmt::format("{} '{}' has no input", n.op, n.id));
  const Tensor& x = g.tensor(n.inputs[0]);
  if (x.rank() < 1) return R::reject(fmt::format("{} of a scalar", n.op));
  if (auto why = last_dim_shape_problem(n, x, rms ? "RMSNorm" : "LayerNorm")) return R::reject(*why);
  NormFound f;
  f.norm = rms ? Norm::Rms : Norm::Layer;
  f.x = x.id;
  f.y = n.outputs[0];
  std::tie(f.weight, f.bias) = affine_inputs(n, !rms);
  // rms_norm's eps=None is the input dtype's machine epsilon (capture writes it out).
  f.eps = rms ? std::numeric_limits<float>::epsilon() : 1e-5;
  if (auto e = n.attrs.find("eps"); e != n.attrs.end() && !e->is_null()) {
    auto v = json_number(*e);
    if (!v) return R::reject(fmt::format("eps {} is not a number", e->dump()));
    f.eps = *v;
  } else if (rms && x.dtype != DType::Float32) {
    return R::reject(fmt::format("rms_norm '{}' has eps None: the IR does not say the {} epsilon", n.id,
                                 dtype_name(x.dtype)));
  }
  f.nodes = {n.id};
  return finish_norm(g, n, std::move(f));
}

// ---- the written-out RMSNorm ----

// The tensor the node squares (pow(t, 2), t * t, torch.square(t)); "" when it squares nothing.
std::string squared_tensor(const Graph& g, const Node& n) {
  if (n.op == "pow" && n.inputs.size() == 2 && !const_scalar(g, n.inputs[0]) && const_scalar(g, n.inputs[1]) == 2.0)
    return n.inputs[0];
  if (n.op == "mul" && n.inputs.size() == 2 && n.inputs[0] == n.inputs[1]) return n.inputs[0];
  if (op_is_any(n.op, {"other:torch.square", "other:Tensor.square"}) && n.inputs.size() == 1) return n.inputs[0];
  return "";
}

// A mean or sum over given dims of its first input: Tensor.mean(dim, keepdim) / torch.mean(t, dim, keepdim).
struct Reduction {
  bool mean = true;
  json dim, keepdim, dtype;
};
std::optional<Reduction> reduction_of(const Node& n) {
  const bool method = op_is_any(n.op, {"other:Tensor.mean", "other:Tensor.sum"});
  const bool function = op_is_any(n.op, {"other:torch.mean", "other:torch.sum"});
  if (!method && !function) return std::nullopt;
  const size_t first = method ? 0 : 1;  // a method's self is not among its args
  Reduction r;
  r.mean = n.op.size() >= 4 && n.op.compare(n.op.size() - 4, 4, "mean") == 0;
  r.dim = other_arg(n, first, "dim");
  r.keepdim = other_arg(n, first + 1, "keepdim");
  r.dtype = other_arg(n, first + 2, "dtype");
  return r;
}

// A div without rounding_mode.
bool true_division(const Node& n) {
  return n.op == "div" && (!n.attrs.contains("rounding_mode") || n.attrs["rounding_mode"].is_null());
}

bool is_rsqrt(const Graph& g, const Node& n) {
  return op_is_any(n.op, {"other:torch.rsqrt", "other:Tensor.rsqrt"}) ||
         (n.op == "pow" && n.inputs.size() == 2 && const_scalar(g, n.inputs[1]) == -0.5);
}
bool is_sqrt(const Graph& g, const Node& n) {
  return op_is_any(n.op, {"other:torch.sqrt", "other:Tensor.sqrt"}) ||
         (n.op == "pow" && n.inputs.size() == 2 && const_scalar(g, n.inputs[1]) == 0.5);
}
bool is_reciprocal(const Graph& g, const Node& n, const std::string& of) {
  if (op_is_any(n.op, {"other:torch.reciprocal", "other:Tensor.reciprocal"})) return true;
  return n.op == "div" && n.inputs.size() == 2 && n.inputs[1] == of && const_scalar(g, n.inputs[0]) == 1.0 &&
         true_division(n);
}

// A cast of its first input to a float dtype and nothing else (x.float(), x.to(torch.float32),
// x.type_as(t), x.half(), x.bfloat16()); `dtype_of` is the tensor type_as reads ("" otherwise).
bool is_float_cast(const Graph& g, const Node& n, std::string* dtype_of) {
  dtype_of->clear();
  if (n.inputs.empty() || n.outputs.size() != 1) return false;
  const Tensor& out = g.tensor(n.outputs[0]);
  if (!is_float_dtype(out.dtype) || out.shape != g.tensor(n.inputs[0]).shape) return false;
  const json args = n.attrs.value("args", json::array());
  const json kwargs = n.attrs.value("kwargs", json::object());
  if (op_is_any(n.op, {"other:Tensor.float", "other:Tensor.half", "other:Tensor.bfloat16"}))
    return args.empty() && kwargs.empty();
  if (n.op == "other:Tensor.type_as") {
    *dtype_of = other_tensor_arg(n, 0, "other");
    return args.size() == 1 && kwargs.empty() && !dtype_of->empty();
  }
  if (n.op == "other:Tensor.to") {
    // to(dtype) only: a device, copy=True or memory_format is more than a cast.
    const json dtype = other_arg(n, 0, "dtype");
    return args.size() + kwargs.size() == 1 && dtype.is_string() && parse_dtype(dtype.get<std::string>()) &&
           is_float_dtype(*parse_dtype(dtype.get<std::string>()));
  }
  return false;
}

// The one node reading `t`, or nullptr with *why when none or several do (or it is a module output).
const Node* sole_reader(const Graph& g, const std::string& t, std::string* why) {
  const auto readers = g.consumers(t);
  if (g.is_graph_output(t)) {
    *why = fmt::format("intermediate '{}' is also a module output", t);
    return nullptr;
  }
  if (readers.size() != 1) {
    *why = fmt::format("intermediate '{}' is read by {} nodes", t, readers.size());
    return nullptr;
  }
  return readers[0];
}

std::string other_input(const Node& n, const std::string& one) {
  if (n.inputs.size() != 2) return "";
  return n.inputs[0] == one ? n.inputs[1] : n.inputs[0];
}

// Row-sized tensors an eager node reads and writes (a cast to the same dtype is free).
int row_passes(const Graph& g, const Node& n, int64_t numel) {
  std::string dtype_of;
  if (is_float_cast(g, n, &dtype_of) && g.tensor(n.outputs[0]).dtype == g.tensor(n.inputs[0]).dtype) return 0;
  int passes = g.tensor(n.outputs[0]).numel() == numel ? 1 : 0;
  std::vector<std::string> seen;
  for (const auto& in : n.inputs) {
    if (std::find(seen.begin(), seen.end(), in) != seen.end()) continue;
    seen.push_back(in);
    if (n.op == "other:Tensor.type_as" && in != n.inputs[0]) continue;  // reads only the dtype
    if (g.tensor(in).numel() == numel) ++passes;
  }
  return passes;
}

// Rooted at the square: square -> mean (or sum / C) over the last dim -> + eps -> rsqrt
// (or 1 / sqrt) -> * x (or x / sqrt) -> casts and the weight multiply, in any order.
MatchOutcome match_written_rms_norm(const Graph& g, const Node& sq) {
  using R = MatchOutcome;
  const std::string xs = squared_tensor(g, sq);  // the tensor squared, maybe a cast of x
  if (xs.empty() || sq.outputs.size() != 1) return R::not_applicable(fmt::format("'{}' squares nothing", sq.id));
  const Node* red = nullptr;
  for (const Node* c : g.consumers(sq.outputs[0]))
    if (reduction_of(*c)) red = c;
  if (!red)
    return R::not_applicable(fmt::format("no mean or sum reads the square '{}': not an RMSNorm", sq.id));
  std::string why;
  if (sole_reader(g, sq.outputs[0], &why) != red) return R::reject(why);
  const Tensor& xt = g.tensor(xs);
  if (xt.rank() < 1) return R::reject("RMSNorm of a scalar");
  const int64_t cols = xt.shape.back();
  const int64_t rank = xt.rank();

  // mean(x^2) over the last dim, keepdim.
  const Reduction r = *reduction_of(*red);
  if (red->inputs.empty() || red->inputs[0] != sq.outputs[0])
    return R::reject(fmt::format("'{}' does not reduce the square as its input", red->id));
  std::optional<int64_t> dim;
  if (r.dim.is_number_integer()) dim = r.dim.get<int64_t>();
  else if (r.dim.is_array() && r.dim.size() == 1 && r.dim[0].is_number_integer()) dim = r.dim[0].get<int64_t>();
  if (r.dim.is_null()) return R::reject(fmt::format("'{}' reduces over every dim, not the last dim only", red->id));
  if (!dim || (*dim != -1 && *dim != rank - 1))
    return R::reject(fmt::format("'{}' reduces over dim {}, not the last dim only (rank {})", red->id, r.dim.dump(), rank));
  if (!(r.keepdim.is_boolean() && r.keepdim.get<bool>()))
    return R::reject(fmt::format("'{}' has keepdim={}: the statistic must keep the reduced dim to scale each row",
                                 red->id, r.keepdim.dump()));
  if (!r.dtype.is_null()) return R::reject(fmt::format("'{}' accumulates in dtype {}", red->id, r.dtype.dump()));
  std::vector<std::string> nodes = {sq.id, red->id};
  std::string stat = red->outputs[0];
  const Node* next = sole_reader(g, stat, &why);
  if (!next) return R::reject(why);
  if (!r.mean) {  // sum / C or sum * (1 / C)
    const std::string k = other_input(*next, stat);
    const auto kv = k.empty() ? std::nullopt : const_scalar(g, k);
    const bool divides = next->op == "div" && next->inputs.size() == 2 && next->inputs[0] == stat && kv &&
                         *kv == static_cast<double>(cols) && true_division(*next);
    const bool scales = next->op == "mul" && kv && std::fabs(*kv * static_cast<double>(cols) - 1.0) < 1e-6;
    if (!divides && !scales)
      return R::reject(fmt::format("the sum of squares '{}' is not divided by the row length {} ('{}' is {}): "
                                   "not a mean square", red->id, cols, next->id, next->op));
    nodes.push_back(next->id);
    stat = next->outputs[0];
    if (!(next = sole_reader(g, stat, &why))) return R::reject(why);
  }
  // + eps (a python scalar), or no eps at all.
  double eps = 0.0;
  if (next->op == "add") {
    const std::string e = other_input(*next, stat);
    const double alpha = next->attrs.contains("alpha") ? json_number(next->attrs["alpha"]).value_or(NAN) : 1.0;
    const auto ev = e.empty() ? std::nullopt : const_scalar(g, e);
    if (!ev) {
      return R::reject(fmt::format("eps '{}' added by '{}' is not a scalar constant ({} {})", e, next->id,
                                   e.empty() ? "?" : tensor_kind_name(g.tensor(e).kind),
                                   e.empty() ? "" : format_dims(g.tensor(e).shape)));
    }
    if (alpha != 1.0 || !(*ev >= 0.0)) return R::reject(fmt::format("'{}' adds {} x {}, not a non-negative eps", next->id, alpha, *ev));
    eps = *ev;
    nodes.push_back(next->id);
    stat = next->outputs[0];
    if (!(next = sole_reader(g, stat, &why))) return R::reject(why);
  }
  // The root: rsqrt, or sqrt then its reciprocal or a division of x by it.
  const Node* core = nullptr;
  std::string scale;  // 1 / sqrt(ms + eps)
  if (is_rsqrt(g, *next) && next->inputs[0] == stat) {
    nodes.push_back(next->id);
    scale = next->outputs[0];
  } else if (is_sqrt(g, *next) && next->inputs[0] == stat) {
    nodes.push_back(next->id);
    const std::string root = next->outputs[0];
    if (!(next = sole_reader(g, root, &why))) return R::reject(why);
    if (next->op == "add" || next->op == "sub")
      return R::reject(fmt::format("'{}' adds to the square root: eps must be added before the root", next->id));
    if (is_reciprocal(g, *next, root)) {
      nodes.push_back(next->id);
      scale = next->outputs[0];
    } else if (true_division(*next) && next->inputs.size() == 2 && next->inputs[1] == root) {
      if (next->inputs[0] != xs)
        return R::reject(fmt::format("'{}' divides '{}', not the squared tensor '{}'", next->id, next->inputs[0], xs));
      core = next;
    } else {
      return R::reject(fmt::format("the root '{}' feeds '{}' ({}), which neither divides the input by it nor inverts it",
                                   root, next->id, next->op));
    }
  } else {
    return R::reject(fmt::format("the mean square '{}' feeds '{}' ({}), not a square root or rsqrt", stat, next->id,
                                 next->op));
  }
  if (!core) {
    if (!(next = sole_reader(g, scale, &why))) return R::reject(why);
    if (next->op != "mul") return R::reject(fmt::format("the reciprocal root '{}' feeds '{}' ({}), not a multiply",
                                                        scale, next->id, next->op));
    if (other_input(*next, scale) != xs)
      return R::reject(fmt::format("'{}' scales '{}', not the squared tensor '{}'", next->id, other_input(*next, scale), xs));
    core = next;
  }
  nodes.push_back(core->id);

  // The input: x, or x.float() when that cast is read only by the norm.
  NormFound f;
  f.norm = Norm::Rms;
  f.eps = eps;
  f.x = xs;
  std::string dtype_of;
  if (const Node* cast = g.producer(xs); cast && is_float_cast(g, *cast, &dtype_of) && dtype_of.empty()) {
    const DType from = g.tensor(cast->inputs[0]).dtype;
    const DType to = xt.dtype;
    if (to != DType::Float32 && to != from)
      return R::reject(fmt::format("'{}' casts the input from {} to {} before the norm", cast->id, dtype_name(from),
                                   dtype_name(to)));
    bool inside = !g.is_graph_output(xs);
    for (const Node* c : g.consumers(xs)) inside = inside && (c == &sq || c == core);
    if (inside) {
      nodes.push_back(cast->id);
      f.x = cast->inputs[0];
    }
  }
  const DType in_dtype = g.tensor(f.x).dtype;

  // The tail: float casts and one weight multiply, in any order.
  std::string y = core->outputs[0];
  for (;;) {
    const auto readers = g.consumers(y);
    if (readers.size() != 1 || g.is_graph_output(y)) break;
    const Node& c = *readers[0];
    if (is_float_cast(g, c, &dtype_of) && c.inputs[0] == y) {
      const DType to = g.tensor(c.outputs[0]).dtype;
      if (to != DType::Float32 && to != in_dtype) {
        f.notes[c.id] = fmt::format("not fused into rmsnorm '{}': it casts to {}, neither float32 nor the input's {}",
                                    sq.id, dtype_name(to), dtype_name(in_dtype));
        break;
      }
      if (!dtype_of.empty() && dtype_of != f.x && dtype_of != xs) {
        f.notes[c.id] = fmt::format("not fused into rmsnorm '{}': type_as reads '{}', a tensor outside the norm",
                                    sq.id, dtype_of);
        break;
      }
      nodes.push_back(c.id);
      y = c.outputs[0];
      continue;
    }
    if (c.op == "mul" && f.weight.empty() && c.inputs.size() == 2 && c.inputs[0] != c.inputs[1]) {
      const std::string w = other_input(c, y);
      if (g.tensor(w).kind == TensorKind::Const) break;  // a scalar scale, not a weight
      if (auto bad = vector_operand_problem(g, "weight", w, cols, in_dtype)) {
        f.notes[c.id] = fmt::format("weight multiply not fused into rmsnorm '{}': {}", sq.id, *bad);
        break;
      }
      f.weight = w;
      nodes.push_back(c.id);
      y = c.outputs[0];
      continue;
    }
    break;
  }
  f.y = y;
  const int64_t numel = xt.numel();
  for (const auto& id : nodes) f.eager_passes += row_passes(g, *g.find_node(id), numel);
  f.nodes = std::move(nodes);
  return finish_norm(g, sq, std::move(f));
}

MatchOutcome match_norm(const Graph& g, const Node& n) {
  if (n.op == "layer_norm" || n.op == "rms_norm") return match_norm_op(g, n);
  return match_written_rms_norm(g, n);
}

Workload estimate_layernorm(const Match& m) {
  const json& p = m.payload.at("layernorm");
  const bool residual = !p["residual"].is_null();
  const json passes = p.value("eager_passes", json());
  return layernorm_work(p["rows"], p["cols"], !p["weight"].is_null() || !p["bias"].is_null(), residual,
                        residual && !p["residual"]["sum"].is_null(), m.dtype,
                        passes.is_number_integer() ? passes.get<int>() : 0);
}

}  // namespace

Rule make_layernorm_rule() {
  Rule rule;
  rule.name = "layernorm";
  // layer_norm / rms_norm, and the square a written-out RMSNorm starts from.
  rule.root_ops = {"layer_norm", "rms_norm", "pow", "mul", "other:torch.square", "other:Tensor.square"};
  rule.description =
      "LayerNorm / RMSNorm (fused or written out) over the last dim with weight/bias, fusing the residual add "
      "that feeds it";
  rule.match = match_norm;
  rule.estimate = estimate_layernorm;
  return rule;
}

}  // namespace fact
