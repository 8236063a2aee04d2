// The LayerNorm rule: layer_norm over the last dim with optional weight/bias, and the
// residual add feeding it (y = LN(a + b), the sum also written when others read it).
//
// Guards (one reason each): float dtype alike for input, weight, bias; static
// shapes; normalized_shape == [last dim]; unit stride of the last dim and rows that
// flatten into one row stride (a kernel reads whole rows); weight/bias contiguous
// vectors of that length. The residual add is absorbed only when it is an add of two
// same-shape, same-dtype tensors with alpha 1 and no GEMM epilogue would absorb it
// already (a GEMM before it in graph order claims it first; the note says so).
#include <algorithm>

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

MatchOutcome match_layernorm(const Graph& g, const Node& n) {
  using R = MatchOutcome;
  if (n.inputs.empty() || n.outputs.size() != 1) return R::reject(fmt::format("layer_norm '{}' has no input", n.id));
  const Tensor& x = g.tensor(n.inputs[0]);
  const Tensor& y = g.tensor(n.outputs[0]);
  // weight / bias: present as inputs unless attrs say None.
  std::string weight, bias;
  size_t next = 1;
  auto absent = [&](const char* k) { return n.attrs.contains(k) && n.attrs[k].is_null(); };
  if (!absent("weight") && next < n.inputs.size()) weight = n.inputs[next++];
  if (!absent("bias") && next < n.inputs.size()) bias = n.inputs[next++];
  if (!is_float_dtype(x.dtype)) {
    return R::reject(fmt::format("input '{}' is {}: layer_norm supports float32, float16, bfloat16", x.id, dtype_name(x.dtype)));
  }
  if (y.dtype != x.dtype) return R::reject(fmt::format("output dtype {} differs from input {}", dtype_name(y.dtype), dtype_name(x.dtype)));
  if (x.has_dynamic_dim()) return R::reject(fmt::format("input '{}' has a dynamic shape {}", x.id, format_dims(x.shape)));
  if (x.rank() < 1) return R::reject("layer_norm of a scalar");
  const int64_t cols = x.shape.back();
  auto ns = n.attrs.find("normalized_shape");
  if (ns == n.attrs.end() || !ns->is_array() || ns->size() != 1 || !(*ns)[0].is_number_integer() ||
      (*ns)[0].get<int64_t>() != cols) {
    return R::reject(fmt::format("normalized_shape {} is not the last dim [{}]: only last-dim LayerNorm is fused",
                                 ns == n.attrs.end() ? "?" : ns->dump(), cols));
  }
  for (const auto& [name, id] : {std::pair<const char*, std::string>{"weight", weight}, {"bias", bias}}) {
    if (id.empty()) continue;
    const Tensor& t = g.tensor(id);
    if (t.dtype != x.dtype) {
      return R::reject(fmt::format("{} '{}' is {}, input is {}", name, id, dtype_name(t.dtype), dtype_name(x.dtype)));
    }
    if (t.shape != std::vector<int64_t>{cols} || (cols > 1 && t.strides[0] != 1)) {
      return R::reject(fmt::format("{} '{}' {} is not a contiguous vector of {}", name, id, format_dims(t.shape), cols));
    }
  }
  double eps = 1e-5;
  if (auto e = n.attrs.find("eps"); e != n.attrs.end() && !e->is_null()) {
    auto v = json_number(*e);
    if (!v) return R::reject(fmt::format("eps {} is not a number", e->dump()));
    eps = *v;
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
  m.root = n.id;
  m.dtype = x.dtype;
  json p = {{"rows", rows}, {"cols", cols}, {"eps", eps}, {"element", dtype_name(x.dtype)},
            {"weight", weight.empty() ? json(nullptr) : json(weight)},
            {"bias", bias.empty() ? json(nullptr) : json(bias)},
            {"y", {{"tensor", y.id}, {"row_stride", cols}}}};

  // Residual add feeding the LayerNorm.
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
      const bool writes_sum = !g.single_use(x.id);
      residual = {{"node", add->id}, {"a", {{"tensor", a.id}, {"row_stride", *ra}}},
                  {"b", {{"tensor", b.id}, {"row_stride", *rb}}},
                  {"sum", writes_sum ? json{{"tensor", x.id}, {"row_stride", cols}} : json(nullptr)}};
      nodes.push_back(add->id);
      inputs = {a.id, b.id};
      if (writes_sum) m.outputs.push_back(x.id);
      absorbed = true;
    } else if (!refuse.empty()) {
      m.notes[add->id] = "residual add not fused into layernorm '" + n.id + "': " + refuse;
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
  nodes.push_back(n.id);
  m.nodes = nodes;
  m.inputs = inputs;
  if (!weight.empty()) m.inputs.push_back(weight);
  if (!bias.empty()) m.inputs.push_back(bias);
  m.outputs.push_back(y.id);
  m.payload["layernorm"] = p;
  const std::string flags = fmt::format("{}{}{}", weight.empty() ? "" : "w", bias.empty() ? "" : "b",
                                        absorbed ? (residual["sum"].is_null() ? "r" : "rs") : "");
  m.problem_key = fmt::format("layernorm:{}:rows{}:cols{}:{}", dtype_short(x.dtype), rows, cols, flags.empty() ? "-" : flags);
  m.shape_class = fmt::format("layernorm:{}:rows{}:cols{}:{}", dtype_short(x.dtype), size_bucket(rows), size_bucket(cols),
                              flags.empty() ? "-" : flags);
  MatchOutcome o;
  o.match = std::move(m);
  return o;
}

Workload estimate_layernorm(const Match& m) {
  const json& p = m.payload.at("layernorm");
  const bool residual = !p["residual"].is_null();
  return layernorm_work(p["rows"], p["cols"], !p["weight"].is_null() || !p["bias"].is_null(), residual,
                        residual && !p["residual"]["sum"].is_null(), m.dtype);
}

}  // namespace

Rule make_layernorm_rule() {
  Rule rule;
  rule.name = "layernorm";
  rule.root_ops = {"layer_norm"};
  rule.description = "LayerNorm over the last dim with weight/bias, fusing the residual add that feeds it";
  rule.match = match_layernorm;
  rule.estimate = estimate_layernorm;
  return rule;
}

}  // namespace fact
