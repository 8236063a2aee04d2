// GEMM + elementwise epilogue: the elementwise ops that follow a GEMM become one
// expression DAG ("epilogue_chain", docs/CONTRACTS.md §2.1) an emitter turns into a
// CUTLASS epilogue (EVT on sm90), instead of picking from a fixed list.
//
// The region grows from the GEMM output D over elementwise nodes whose tensor inputs
// are D, values already in the region, python scalars, or leaf tensors available
// before the GEMM runs (bias, residual). It must have one result: every other value
// is read only inside the region. Written-out activations (tanh-GELU term by term)
// are absorbed because they are elementwise DAGs over D, whatever their spelling; a
// numeric probe then names the unary function they compute when there is one
// ("unary_equivalent"), as a hint only — the DAG is the contract.
//
// Guards (one reason each, recorded in Match::notes for the first node left out):
// same float dtype as D everywhere, static shapes, results of D's shape (no growing
// broadcast), leaves broadcastable to D with unit stride in the last dim unless that
// dim is broadcast, leaves produced before the GEMM.
#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <set>

#include <fmt/format.h>

#include "fact/rules.hpp"
#include "rule_util.hpp"

#include <xxhash.h>

namespace fact {
namespace {

using nlohmann::json;
using namespace rules_detail;

// Canonical elementwise op of a node, "" when it is not one the chain supports.
std::string elementwise_op(const Node& n) {
  static const std::set<std::string> kCanonical = {"add", "sub", "mul", "div", "neg", "relu", "gelu", "tanh",
                                                   "sigmoid", "silu", "exp", "pow"};
  if (kCanonical.count(n.op)) return n.op;
  if (op_is_any(n.op, {"other:torch.clamp", "other:Tensor.clamp", "other:torch.clip", "other:Tensor.clip"})) return "clamp";
  if (op_is_any(n.op, {"other:torch.erf", "other:torch.special.erf", "other:Tensor.erf"})) return "erf";
  if (op_is_any(n.op, {"other:torch.sqrt", "other:Tensor.sqrt"})) return "sqrt";
  if (op_is_any(n.op, {"other:torch.abs", "other:Tensor.abs"})) return "abs";
  std::string why;
  if (is_dropout_op(n.op) && dropout_is_identity(n, &why)) return "identity";
  return "";
}

struct Region {
  std::vector<const Node*> nodes;          // graph order
  std::set<std::string> values;            // tensors produced in the region, plus D
};

// Checks one candidate node; returns "" when it can join the region.
std::string admit(const Graph& g, const Node& n, const Region& r, const Tensor& d, size_t gemm_index) {
  const std::string op = elementwise_op(n);
  if (op.empty()) return fmt::format("{} '{}' is not an elementwise op the epilogue supports", n.op, n.id);
  if (n.outputs.size() != 1) return fmt::format("{} '{}' has {} outputs", n.op, n.id, n.outputs.size());
  const Tensor& out = g.tensor(n.outputs[0]);
  if (out.dtype != d.dtype) {
    return fmt::format("{} '{}' produces {}, the GEMM output is {} (no casts in the epilogue)", n.op, n.id,
                       dtype_name(out.dtype), dtype_name(d.dtype));
  }
  if (out.shape != d.shape) {
    return fmt::format("{} '{}' result {} is not the GEMM output's shape {}", n.op, n.id, format_dims(out.shape),
                       format_dims(d.shape));
  }
  if (n.op == "gelu") {
    auto a = n.attrs.find("approximate");
    if (a != n.attrs.end() && a->is_string() && *a != "none" && *a != "tanh") {
      return fmt::format("gelu '{}' approximate='{}'", n.id, a->get<std::string>());
    }
  }
  if ((n.op == "add" || n.op == "sub") && n.attrs.contains("alpha") && !json_number(n.attrs["alpha"])) {
    return fmt::format("{} '{}' alpha is not a number", n.op, n.id);
  }
  if (n.op == "div" && n.attrs.contains("rounding_mode") && !n.attrs["rounding_mode"].is_null()) {
    return fmt::format("div '{}' rounds ({}), not a true division", n.id, n.attrs["rounding_mode"].dump());
  }
  bool reads_region = false;
  for (const auto& in : n.inputs) {
    if (r.values.count(in)) {
      reads_region = true;
      continue;
    }
    const Tensor& t = g.tensor(in);
    if (t.kind == TensorKind::Const) {
      if (!json_number(t.value)) return fmt::format("{} '{}' argument '{}' is not a number", n.op, n.id, in);
      continue;
    }
    // A leaf tensor.
    if (t.dtype != d.dtype) {
      return fmt::format("{} '{}' reads '{}' of dtype {}, the GEMM output is {}", n.op, n.id, in, dtype_name(t.dtype),
                         dtype_name(d.dtype));
    }
    if (t.has_dynamic_dim()) return fmt::format("{} '{}' reads '{}' of dynamic shape", n.op, n.id, in);
    auto bs = broadcast_shapes(t.shape, d.shape);
    if (!bs || *bs != d.shape) {
      return fmt::format("{} '{}' reads '{}' {} that does not broadcast to the GEMM output {}", n.op, n.id, in,
                         format_dims(t.shape), format_dims(d.shape));
    }
    if (!t.shape.empty() && t.shape.back() != 1 && t.strides.back() != 1) {
      return fmt::format("{} '{}' reads '{}' with last-dim stride {}; the epilogue loads rows with unit stride", n.op,
                         n.id, in, t.strides.back());
    }
    if (const Node* p = g.producer(in)) {
      if (g.node_index(p->id) > gemm_index) {
        return fmt::format("{} '{}' reads '{}', produced after the GEMM by '{}'", n.op, n.id, in, p->id);
      }
    }
  }
  if (!reads_region) return fmt::format("{} '{}' does not read the GEMM result", n.op, n.id);
  if (op == "clamp" && n.inputs.size() != 1) return fmt::format("clamp '{}' has tensor bounds", n.id);
  return "";
}

// Broadcast strides of a leaf over the output shape (0 on broadcast dims).
std::vector<int64_t> broadcast_strides(const Tensor& t, const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size(), 0);
  const size_t off = shape.size() - t.shape.size();
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (t.shape[i] != 1) s[off + i] = t.strides[i];
  }
  return s;
}

// ---- numeric probe: does the DAG compute a known unary function of D? ----

double gelu_tanh(double x) { return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }
double gelu_erf(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

double eval_op(const std::string& op, const std::vector<double>& a, const json& attrs) {
  auto num = [&](const char* k, double dflt) {
    if (!attrs.contains(k)) return dflt;
    return json_number(attrs[k]).value_or(dflt);
  };
  if (op == "add") return a[0] + num("alpha", 1.0) * a[1];
  if (op == "sub") return a[0] - num("alpha", 1.0) * a[1];
  if (op == "mul") return a[0] * a[1];
  if (op == "div") return a[0] / a[1];
  if (op == "neg") return -a[0];
  if (op == "relu") return a[0] > 0 ? a[0] : 0.0;
  if (op == "gelu") return attrs.value("approximate", std::string("none")) == "tanh" ? gelu_tanh(a[0]) : gelu_erf(a[0]);
  if (op == "tanh") return std::tanh(a[0]);
  if (op == "sigmoid") return 1.0 / (1.0 + std::exp(-a[0]));
  if (op == "silu") return a[0] / (1.0 + std::exp(-a[0]));
  if (op == "exp") return std::exp(a[0]);
  if (op == "pow") return std::pow(a[0], a[1]);
  if (op == "erf") return std::erf(a[0]);
  if (op == "sqrt") return std::sqrt(a[0]);
  if (op == "abs") return std::fabs(a[0]);
  if (op == "identity") return a[0];
  if (op == "clamp") {
    double v = a[0];
    if (a.size() > 1 && !std::isnan(a[1])) v = std::max(v, a[1]);
    if (a.size() > 2 && !std::isnan(a[2])) v = std::min(v, a[2]);
    return v;
  }
  return NAN;
}

}  // namespace

EpilogueChain find_epilogue_chain(const Graph& g, const Node& gemm_node, std::string* why) {
  EpilogueChain chain;
  const Tensor& d = g.tensor(gemm_node.outputs[0]);
  const size_t gemm_index = g.node_index(gemm_node.id);
  Region r;
  r.values.insert(d.id);
  std::string first_refusal;

  // Grow in graph order: a node joins when it is elementwise over region values.
  for (size_t i = gemm_index + 1; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    bool touches = std::any_of(n.inputs.begin(), n.inputs.end(), [&](const std::string& t) { return r.values.count(t) > 0; });
    if (!touches) continue;
    std::string refusal = admit(g, n, r, d, gemm_index);
    if (!refusal.empty()) {
      if (first_refusal.empty()) first_refusal = refusal;
      continue;
    }
    r.nodes.push_back(&n);
    r.values.insert(n.outputs[0]);
  }

  // Pick the latest sink whose ancestors form a closed region (nothing but the sink escapes).
  std::vector<const Node*> best;
  std::string best_sink;
  for (size_t s = r.nodes.size(); s-- > 0 && best.empty();) {
    const Node* sink = r.nodes[s];
    // ancestors of sink inside the region
    std::set<std::string> anc_vals = {sink->outputs[0]};
    std::vector<const Node*> members;
    for (size_t j = s + 1; j-- > 0;) {
      const Node* n = r.nodes[j];
      if (!anc_vals.count(n->outputs[0])) continue;
      members.push_back(n);
      for (const auto& in : n->inputs) {
        if (r.values.count(in)) anc_vals.insert(in);
      }
    }
    std::reverse(members.begin(), members.end());
    std::set<std::string> member_ids;
    for (const Node* n : members) member_ids.insert(n->id);
    bool closed = true;
    std::string escape;
    for (const auto& v : anc_vals) {
      if (v == sink->outputs[0]) continue;
      if (g.is_graph_output(v)) {
        closed = false;
        escape = fmt::format("'{}' is a graph output", v);
      }
      for (const Node* c : g.consumers(v)) {
        if (!member_ids.count(c->id)) {
          closed = false;
          escape = fmt::format("'{}' is also read by {} '{}'", v, c->op, c->id);
        }
      }
      if (!closed) break;
    }
    if (closed) {
      best = members;
      best_sink = sink->outputs[0];
    } else if (first_refusal.empty()) {
      first_refusal = fmt::format("chain ending at '{}' not absorbed: {}", sink->outputs[0], escape);
    }
  }
  if (best.empty()) {
    if (why) {
      *why = !first_refusal.empty() ? first_refusal
                                    : fmt::format("GEMM output '{}' feeds no elementwise op", d.id);
    }
    return chain;
  }
  // Nodes of the region not in the chosen chain: explain the first.
  for (const Node* n : r.nodes) {
    if (std::find(best.begin(), best.end(), n) == best.end()) {
      if (why && first_refusal.empty()) {
        first_refusal = fmt::format("{} '{}' is elementwise over the GEMM result but its chain has another reader", n->op, n->id);
      }
      break;
    }
  }
  if (why) *why = first_refusal;

  // ---- the expression DAG (SSA) ----
  json values = json::array();
  json leaves = json::object();
  std::map<std::string, std::string> name_of = {{d.id, "acc"}};
  std::string canon;
  double ops = 0.0;
  for (const Node* n : best) {
    const std::string op = elementwise_op(*n);
    json args = json::array();
    std::vector<std::string> arg_ids = n->inputs;
    if (op == "identity" || op == "clamp") arg_ids.resize(std::min<size_t>(arg_ids.size(), 1));
    for (const auto& in : arg_ids) {
      if (name_of.count(in)) {
        args.push_back({{"ref", name_of[in]}});
        continue;
      }
      const Tensor& t = g.tensor(in);
      if (t.kind == TensorKind::Const) {
        args.push_back({{"const", *json_number(t.value)}});
        continue;
      }
      const std::string leaf = fmt::format("l{}", leaves.size());
      leaves[leaf] = {{"tensor", t.id}, {"shape", t.shape}, {"strides", broadcast_strides(t, d.shape)}};
      name_of[in] = leaf;
      chain.leaves.push_back(t.id);
      args.push_back({{"leaf", leaf}});
    }
    json inst = {{"id", fmt::format("v{}", values.size())}, {"op", op}, {"args", args}, {"node", n->id}};
    if (op == "clamp") {
      // clamp(x, min=None, max=None): scalars live in attrs args/kwargs of an "other:" node.
      inst["args"] = json::array({args.empty() ? json{{"ref", "acc"}} : args[0]});
      for (auto [pos, key] : {std::pair<size_t, const char*>{1, "min"}, {2, "max"}}) {
        auto v = json_number(other_arg(*n, pos, key));
        inst["args"].push_back(v ? json{{"const", *v}} : json{{"const", nullptr}});
      }
    }
    if (op == "add" || op == "sub") {
      double alpha = n->attrs.contains("alpha") ? json_number(n->attrs["alpha"]).value_or(1.0) : 1.0;
      if (alpha != 1.0) inst["alpha"] = alpha;
    }
    if (op == "gelu") inst["approximate"] = n->attrs.value("approximate", std::string("none"));
    name_of[n->outputs[0]] = inst["id"];
    canon += inst.dump() + ";";
    if (op != "identity") ops += (op == "gelu" || op == "silu" || op == "sigmoid" || op == "tanh" || op == "erf") ? 8.0 : 1.0;
    values.push_back(inst);
    chain.nodes.push_back(n->id);
  }
  // The key hashes the DAG without node ids (same math -> same key).
  json canon_values = values;
  for (auto& v : canon_values) v.erase("node");
  json canon_leaves = leaves;
  for (auto& [k, l] : canon_leaves.items()) l.erase("tensor");
  const std::string text = canon_values.dump() + canon_leaves.dump();
  XXH128_hash_t h = XXH3_128bits(text.data(), text.size());
  chain.key = fmt::format("{:016x}", h.high64);

  // Numeric probe for a unary equivalent (only when the DAG reads no leaf).
  json unary = nullptr;
  if (leaves.empty()) {
    std::map<std::string, std::function<double(double)>> known = {
        {"gelu_tanh", gelu_tanh}, {"gelu_erf", gelu_erf}, {"relu", [](double x) { return x > 0 ? x : 0.0; }},
        {"silu", [](double x) { return x / (1.0 + std::exp(-x)); }},
        {"sigmoid", [](double x) { return 1.0 / (1.0 + std::exp(-x)); }},
        {"tanh", [](double x) { return std::tanh(x); }}};
    auto eval = [&](double x) {
      std::map<std::string, double> val = {{"acc", x}};
      double last = NAN;
      for (const auto& inst : values) {
        std::vector<double> a;
        for (const auto& arg : inst["args"]) {
          if (arg.contains("ref")) a.push_back(val[arg["ref"].get<std::string>()]);
          else a.push_back(arg["const"].is_null() ? NAN : arg["const"].get<double>());
        }
        json attrs = inst;
        last = eval_op(inst["op"], a, attrs);
        val[inst["id"].get<std::string>()] = last;
      }
      return last;
    };
    for (const auto& [name, f] : known) {
      double worst = 0.0;
      for (double x = -6.0; x <= 6.0; x += 0.37) worst = std::max(worst, std::fabs(eval(x) - f(x)) / (1.0 + std::fabs(f(x))));
      if (worst < 1e-6) {
        unary = name;
        break;
      }
    }
  }

  chain.output = best_sink;
  chain.ops_per_element = ops;
  chain.payload = {{"accumulator", d.id},
                   {"output", best_sink},
                   {"shape", d.shape},
                   {"element", dtype_name(d.dtype)},
                   {"leaves", leaves},
                   {"values", values},
                   {"result", values.back()["id"]},
                   {"nodes", chain.nodes},
                   {"unary_equivalent", unary},
                   {"key", chain.key}};
  return chain;
}

namespace {

MatchOutcome match_gemm_with_epilogue(const Rule& base, const Graph& g, const Node& node) {
  MatchOutcome o = base.match(g, node);
  if (!o.match) return o;
  Match& m = *o.match;
  std::string why;
  // The GEMM's output must be exactly what the chain reads (no absorbed transposes after it).
  EpilogueChain chain = find_epilogue_chain(g, node, &why);
  if (chain.nodes.empty()) {
    if (!why.empty() && !g.consumers(node.outputs[0]).empty()) {
      const Node* first = g.consumers(node.outputs[0])[0];
      if (!elementwise_op(*first).empty()) m.notes[first->id] = "not absorbed into the GEMM epilogue: " + why;
    }
    return o;
  }
  if (!why.empty()) {
    // A node the region refused: say why next to the first such consumer.
    for (const Node* c : g.consumers(chain.output)) {
      if (!elementwise_op(*c).empty()) {
        m.notes[c->id] = "not absorbed into the GEMM epilogue: " + why;
        break;
      }
    }
  }
  m.nodes.insert(m.nodes.end(), chain.nodes.begin(), chain.nodes.end());
  std::sort(m.nodes.begin(), m.nodes.end(),
            [&](const std::string& a, const std::string& b) { return g.node_index(a) < g.node_index(b); });
  for (const auto& l : chain.leaves) {
    if (std::find(m.inputs.begin(), m.inputs.end(), l) == m.inputs.end()) m.inputs.push_back(l);
  }
  m.outputs = {chain.output};
  m.problem_key += ":evt=" + chain.key;
  m.shape_class += ":evt=" + chain.key;
  m.payload["epilogue_chain"] = chain.payload;
  m.payload["epilogue_chain"]["ops_per_element"] = chain.ops_per_element;
  return o;
}

}  // namespace

Rule make_gemm_epilogue_rule() {
  Rule base = make_gemm_rule();
  Rule rule = base;
  rule.description = base.description + "; the elementwise DAG after it becomes a generated epilogue (epilogue_chain)";
  rule.match = [base](const Graph& g, const Node& node) { return match_gemm_with_epilogue(base, g, node); };
  rule.estimate = [base](const Match& m) {
    Workload w = base.estimate(m);
    auto it = m.payload.find("epilogue_chain");
    if (it == m.payload.end()) return w;
    const json& c = *it;
    double elements = 1.0;
    for (const auto& s : c["shape"]) elements *= s.get<double>();
    double leaf_bytes = 0.0;
    for (const auto& [k, l] : c["leaves"].items()) {
      double n = 1.0;
      for (size_t i = 0; i < l["shape"].size(); ++i) n *= l["shape"][i].get<double>();
      leaf_bytes += n * dtype_bytes(m.dtype);
    }
    int eager_kernels = 0;  // an identity dropout launches nothing in eager either
    for (const auto& v : c["values"]) eager_kernels += v["op"] != "identity" ? 1 : 0;
    return add_epilogue_work(w, elements, c["ops_per_element"].get<double>(), leaf_bytes, eager_kernels);
  };
  return rule;
}

}  // namespace fact
