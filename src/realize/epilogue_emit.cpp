// Epilogue-chain emitter: plan pattern `epilogue_chain` (docs/CONTRACTS.md §2.1)
// -> classified epilogue inputs + a generated scalar functor + the thin sm90
// translation unit that instantiates templates/epilogue_chain_sm90.cuh with it.
#include "fact/epilogue_emit.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "fact/emit.hpp"
#include "spelling.hpp"

namespace fact {
namespace {

using nlohmann::json;

constexpr std::array<Spelling<ChainInputKind>, 4> kKind{{
    {ChainInputKind::RowVector, "row", "fact::epilogue_chain::RowVector"},
    {ChainInputKind::ColVector, "col", "fact::epilogue_chain::ColVector"},
    {ChainInputKind::Scalar, "scalar", "fact::epilogue_chain::Scalar"},
    {ChainInputKind::Matrix, "matrix", "fact::epilogue_chain::Matrix"},
}};

const char* kind_cpp(ChainInputKind k) { return lookup(kKind, k, "unknown chain input kind").cpp; }

std::string dims_text(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// Numeric suffix of a leaf name "l<k>"; -1 when the name has another form.
int leaf_index(const std::string& name) {
  if (name.size() < 2 || name[0] != 'l' || name.size() > 4) return -1;
  for (size_t i = 1; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return -1;
  return std::stoi(name.substr(1));
}

// Classifies one leaf from its broadcast strides over D's shape; "" on success.
// D's shape is [batch, m..., n] when batch > 1, else [m..., n] (leading dims fold into m).
// `unit`: elements per 16 bytes of the chain's element type.
std::string classify_leaf(const std::vector<int64_t>& d_shape, const std::vector<int64_t>& strides,
                          const GemmProblemDesc& g, int unit, ChainInput& out) {
  const size_t r = d_shape.size();
  if (strides.size() != r)
    return fmt::format("has {} strides for the {}-D GEMM output", strides.size(), r);
  const size_t m_first = g.batch > 1 ? 1 : 0;
  const int64_t n_stride = strides[r - 1];
  const bool n_unit = n_stride == 1 || g.n == 1, n_zero = n_stride == 0 || g.n == 1;
  out.batch_stride = g.batch > 1 ? strides[0] : 0;
  // The m dims: all broadcast, or one folded stride (inner non-1 dim stride x extents).
  std::vector<size_t> live;
  for (size_t d = m_first; d + 1 < r; ++d)
    if (d_shape[d] != 1) live.push_back(d);
  bool m_broadcast = true, m_folds = true;
  int64_t m_stride = 0;
  for (size_t d : live) m_broadcast = m_broadcast && strides[d] == 0;
  if (!m_broadcast && !live.empty()) {
    m_stride = strides[live.back()];
    int64_t span = m_stride;
    for (size_t i = live.size(); i-- > 0;) {
      if (strides[live[i]] != span || span == 0) m_folds = false;
      span *= d_shape[live[i]];
    }
  }
  if (m_broadcast && n_zero && out.batch_stride == 0) {
    out.kind = ChainInputKind::Scalar;
  } else if (m_broadcast && n_unit) {
    out.kind = ChainInputKind::RowVector;
  } else if (!m_broadcast && m_folds && m_stride == 1 && n_zero) {
    out.kind = ChainInputKind::ColVector;
  } else if (!m_broadcast && m_folds && n_unit && m_stride >= g.n) {
    out.kind = ChainInputKind::Matrix;
    out.ld = m_stride;
  } else {
    return fmt::format("strides {} over the GEMM output {} are neither a row vector [n], a column vector [m], "
                       "a scalar nor a full m x n matrix with unit column stride",
                       dims_text(strides), dims_text(d_shape));
  }
  if (out.kind == ChainInputKind::Matrix && (out.ld % unit != 0 || out.batch_stride % unit != 0))
    return fmt::format("is a full matrix with ld {} / batch stride {}: the C source is read by TMA and needs "
                       "multiples of {} (16 bytes)", out.ld, out.batch_stride, unit);
  if ((out.kind == ChainInputKind::RowVector || out.kind == ChainInputKind::ColVector) &&
      out.batch_stride % unit != 0)
    return fmt::format("is a broadcast vector with batch stride {}; vector loads need a multiple of {} (16 bytes)",
                       out.batch_stride, unit);
  return "";
}

// ---- SSA -> C++ -------------------------------------------------------------

const std::set<std::string> kUnary = {"neg", "relu", "gelu", "tanh", "sigmoid", "silu", "exp",
                                      "erf", "sqrt", "abs",  "identity"};
const std::set<std::string> kBinary = {"add", "sub", "mul", "div", "pow"};

struct ArgText {
  std::string text;
  std::optional<double> constant;  // set for {"const": number}
  bool null_const = false;         // {"const": null} (an absent clamp bound)
};

ArgText arg_text(const json& arg, const std::set<std::string>& defined, const std::set<std::string>& inputs,
                 const std::string& where) {
  if (!arg.is_object()) throw std::invalid_argument(where + ": argument is not an object");
  if (arg.contains("ref")) {
    const std::string ref = arg.at("ref").get<std::string>();
    if (ref == "acc") return {"d", std::nullopt, false};
    if (!defined.count(ref)) throw std::invalid_argument(fmt::format("{}: reads '{}' before it is defined", where, ref));
    return {ref, std::nullopt, false};
  }
  if (arg.contains("leaf")) {
    const std::string leaf = arg.at("leaf").get<std::string>();
    if (!inputs.count(leaf)) throw std::invalid_argument(fmt::format("{}: unknown leaf '{}'", where, leaf));
    return {leaf, std::nullopt, false};
  }
  if (arg.contains("const")) {
    const json& c = arg.at("const");
    if (c.is_null()) return {"", std::nullopt, true};
    if (!c.is_number()) throw std::invalid_argument(fmt::format("{}: constant {} is not a number", where, c.dump()));
    return {float_literal(c.get<double>()), c.get<double>(), false};
  }
  throw std::invalid_argument(fmt::format("{}: argument {} is none of ref / leaf / const", where, arg.dump()));
}

std::string expression(const json& value, const std::set<std::string>& defined, const std::set<std::string>& inputs) {
  const std::string id = value.value("id", std::string("?"));
  const std::string op = value.value("op", std::string());
  const std::string where = fmt::format("epilogue value {} ({})", id, op);
  if (!value.contains("args") || !value.at("args").is_array())
    throw std::invalid_argument(where + ": no args");
  std::vector<ArgText> a;
  for (const auto& arg : value.at("args")) a.push_back(arg_text(arg, defined, inputs, where));
  auto need = [&](size_t n) {
    if (a.size() != n) throw std::invalid_argument(fmt::format("{}: {} arguments, expected {}", where, a.size(), n));
    for (const auto& x : a)
      if (x.null_const) throw std::invalid_argument(where + ": a null constant outside a clamp bound");
  };
  const std::string ns = "fact::epilogue_chain::ops::";
  if (kUnary.count(op)) {
    need(1);
    if (op == "identity") return a[0].text;
    if (op == "neg") return "-" + a[0].text;
    if (op == "gelu") {
      const std::string approx = value.value("approximate", std::string("none"));
      if (approx == "none") return ns + "gelu_erf(" + a[0].text + ")";
      if (approx == "tanh") return ns + "gelu_tanh(" + a[0].text + ")";
      throw std::invalid_argument(fmt::format("{}: approximate='{}'", where, approx));
    }
    return ns + op + "(" + a[0].text + ")";
  }
  if (kBinary.count(op)) {
    need(2);
    if (op == "add" || op == "sub") {
      const char* sign = op == "add" ? " + " : " - ";
      if (value.contains("alpha") && !value.at("alpha").is_null()) {
        if (!value.at("alpha").is_number()) throw std::invalid_argument(where + ": alpha is not a number");
        // torch.add / torch.sub(a, b, alpha): a ± alpha·b
        return a[0].text + sign + float_literal(value.at("alpha").get<double>()) + " * " + a[1].text;
      }
      return a[0].text + sign + a[1].text;
    }
    if (op == "mul") return a[0].text + " * " + a[1].text;
    if (op == "div") return a[0].text + " / " + a[1].text;
    // pow: PyTorch evaluates these exponents by multiplication / sqrt, not powf.
    if (a[1].constant) {
      const double e = *a[1].constant;
      if (e == 1.0) return a[0].text;
      if (e == 2.0) return ns + "square(" + a[0].text + ")";
      if (e == 3.0) return ns + "cube(" + a[0].text + ")";
      if (e == 0.5) return ns + "sqrt(" + a[0].text + ")";
    }
    return ns + "pow(" + a[0].text + ", " + a[1].text + ")";
  }
  if (op == "clamp") {
    if (a.empty() || a.size() > 3 || a[0].null_const)
      throw std::invalid_argument(where + ": clamp takes (x, min|null, max|null)");
    std::string x = a[0].text;
    if (a.size() > 1 && !a[1].null_const) x = ns + "clamp_min(" + x + ", " + a[1].text + ")";
    if (a.size() > 2 && !a[2].null_const) x = ns + "clamp_max(" + x + ", " + a[2].text + ")";
    return x;
  }
  throw std::invalid_argument(fmt::format("{}: op '{}' is not an epilogue op of docs/CONTRACTS.md §2.1", where, op));
}

}  // namespace

const char* token(ChainInputKind kind) {
  const Spelling<ChainInputKind>* s = find_spelling(kKind, kind);
  return s ? s->token : "?";
}

std::string float_literal(double value) {
  const float f = static_cast<float>(value);
  if (std::isnan(f)) return "__builtin_nanf(\"\")";
  if (std::isinf(f)) return f > 0 ? "__builtin_inff()" : "(-__builtin_inff())";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%a", static_cast<double>(std::fabs(f)));
  const std::string text = std::string(buf) + "f";
  return std::signbit(f) ? "(-" + text + ")" : text;
}

ChainPlan plan_chain_epilogue(const json& pattern) {
  ChainPlan plan;
  if (!pattern.contains("epilogue_chain") || !pattern.at("epilogue_chain").is_object())
    throw std::runtime_error("pattern has no epilogue_chain payload");
  if (!pattern.contains("gemm")) throw std::runtime_error("pattern has no gemm payload");
  const json& c = pattern.at("epilogue_chain");
  plan.chain = c;
  for (const char* key : {"key", "output", "shape", "values", "result", "leaves"})
    if (!c.contains(key)) throw std::runtime_error(fmt::format("epilogue_chain lacks field '{}'", key));
  const std::string key = c.at("key").get<std::string>();
  if (key.size() < 8 || !std::all_of(key.begin(), key.begin() + 8, [](char ch) {
        return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
      }))
    throw std::runtime_error(fmt::format("epilogue_chain key '{}' is not lowercase hex", key));
  plan.key8 = key.substr(0, 8);
  plan.output = c.at("output").get<std::string>();
  const GemmProblemDesc g = gemm_problem_from_json(pattern.at("gemm"));
  plan.gemm_epilogue = g.epilogue;
  auto skip = [&](std::string why) {
    plan.skip_reason = std::move(why);
    return plan;
  };
  const std::string element = c.value("element", std::string("float32"));
  const std::optional<IoType> io = io_type_of(element);
  if (!io)
    return skip(fmt::format("the chain computes {}; the sm90 EVT epilogue reads and writes float32, float16 or "
                            "bfloat16",
                            element));
  plan.element = *io;
  const int unit = 16 / io_element_bytes(*io);
  const auto shape = c.at("shape").get<std::vector<int64_t>>();
  if (shape.size() < 2 || shape.back() != g.n)
    return skip(fmt::format("chain shape {} does not end in the GEMM's n = {}", dims_text(shape), g.n));
  int64_t m_extent = 1;
  for (size_t d = g.batch > 1 ? 1 : 0; d + 1 < shape.size(); ++d) m_extent *= shape[d];
  if ((g.batch > 1 && (shape.size() != 3 || shape[0] != g.batch)) || m_extent != g.m)
    return skip(fmt::format("chain shape {} does not map onto batch {} x m {} x n {}", dims_text(shape), g.batch, g.m,
                            g.n));

  const json& e_spec = pattern.at("gemm").at("epilogue");
  const std::string e_tensor =
      e_spec.contains("tensor") && e_spec.at("tensor").is_string() ? e_spec.at("tensor").get<std::string>() : "";
  if (g.epilogue == EpilogueKind::Bias) {
    plan.inputs.push_back({"e", e_tensor, ChainInputKind::RowVector, 0, g.batch > 1 ? g.batch_stride_e : 0, -1});
  } else if (g.epilogue == EpilogueKind::C) {
    plan.inputs.push_back({"e", e_tensor, ChainInputKind::Matrix, g.ld_e, g.batch > 1 ? g.batch_stride_e : 0, -1});
  }
  std::vector<std::pair<int, std::string>> leaves;
  for (const auto& [name, leaf] : c.at("leaves").items()) {
    const int index = leaf_index(name);
    if (index < 0) throw std::runtime_error(fmt::format("epilogue_chain leaf name '{}' is not l<k>", name));
    leaves.emplace_back(index, name);
  }
  std::sort(leaves.begin(), leaves.end());
  if (leaves.size() > static_cast<size_t>(kMaxChainLeaves))
    return skip(fmt::format("the chain reads {} leaf tensors; the kernel ABI passes at most {}", leaves.size(),
                            kMaxChainLeaves));
  for (size_t i = 0; i < leaves.size(); ++i) {
    const json& leaf = c.at("leaves").at(leaves[i].second);
    ChainInput in;
    in.name = leaves[i].second;
    in.tensor = leaf.value("tensor", std::string());
    in.abi_leaf = static_cast<int>(i);
    const std::string why = classify_leaf(shape, leaf.at("strides").get<std::vector<int64_t>>(), g, unit, in);
    if (!why.empty()) return skip(fmt::format("leaf {} ('{}') {}", in.name, in.tensor, why));
    plan.inputs.push_back(in);
  }
  std::vector<std::string> matrices;
  for (const auto& in : plan.inputs)
    if (in.kind == ChainInputKind::Matrix) matrices.push_back(fmt::format("{} ('{}')", in.name, in.tensor));
  if (matrices.size() > 1)
    return skip(fmt::format("{} full-size inputs ({}): the sm90 epilogue has one C source", matrices.size(),
                            fmt::format("{}", fmt::join(matrices, ", "))));
  try {
    (void)emit_chain_functor(plan);
  } catch (const std::invalid_argument& e) {
    return skip(std::string("cannot emit the chain: ") + e.what());
  }
  return plan;
}

std::string emit_chain_functor(const ChainPlan& plan, const std::string& struct_name) {
  const json& c = plan.chain;
  std::set<std::string> inputs, defined;
  std::string params = "float alpha, float beta, float acc";
  for (const auto& in : plan.inputs) {
    inputs.insert(in.name);
    params += ", float " + in.name;
  }
  std::string body;
  const bool has_e = std::any_of(plan.inputs.begin(), plan.inputs.end(), [](const ChainInput& in) { return in.name == "e"; });
  body += has_e ? "    const float d = alpha * acc + beta * e;  // the GEMM payload's own epilogue\n"
                : "    (void)beta;\n    const float d = alpha * acc;\n";
  if (!c.at("values").is_array() || c.at("values").empty())
    throw std::invalid_argument("epilogue_chain has no values");
  for (const auto& value : c.at("values")) {
    const std::string id = value.value("id", std::string());
    if (id.size() < 2 || id[0] != 'v' || !std::all_of(id.begin() + 1, id.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
      throw std::invalid_argument(fmt::format("epilogue value id '{}' is not v<k>", id));
    const std::string expr = expression(value, defined, inputs);
    // Only the op in the comment: node and tensor ids differ between patterns that run
    // the same chain, and the source is the kernel's cache identity.
    body += fmt::format("    const float {} = {};  // {}\n", id, expr, value.value("op", std::string()));
    defined.insert(id);
  }
  const std::string result = c.at("result").get<std::string>();
  if (!defined.count(result)) throw std::invalid_argument(fmt::format("epilogue result '{}' is not a value", result));
  body += "    return " + result + ";\n";
  return fmt::format(
      "// Generated from epilogue_chain {}: the SSA values, one float per step.\n"
      "struct {} {{\n"
      "  FACT_CHAIN_HD static float apply({}) {{\n"
      "{}"
      "  }}\n"
      "}};\n",
      c.at("key").get<std::string>(), struct_name, params, body);
}

std::string emit_chain_variant_source(const GemmVariant& v, const ChainPlan& plan) {
  if (!plan.skip_reason.empty())
    throw std::invalid_argument("the chain cannot be emitted: " + plan.skip_reason);
  if (v.arch != KernelArch::Sm90 && v.arch != KernelArch::Sm90Split)
    throw std::invalid_argument(
        fmt::format("{}: only the sm90 and sm90split families run an epilogue chain", v.name()));
  if (v.chain_key != plan.key8)
    throw std::invalid_argument(fmt::format("{}: chain key '{}' is not the pattern's '{}'", v.name(), v.chain_key,
                                            plan.key8));
  if (v.io != plan.element)
    throw std::invalid_argument(fmt::format("{}: {} I/O, the chain computes {}", v.name(), token(v.io),
                                            io_dtype_name(plan.element)));
  if (v.epilogue != plan.gemm_epilogue)
    throw std::invalid_argument(fmt::format("{}: epilogue '{}' differs from the pattern's", v.name(), token(v.epilogue)));
  std::string input_list;
  for (const auto& in : plan.inputs) {
    input_list += ",\n    ";
    input_list += in.abi_leaf < 0 ? fmt::format("fact::epilogue_chain::GemmSource<{}>", kind_cpp(in.kind))
                                  : fmt::format("fact::epilogue_chain::Leaf<{}, {}>", in.abi_leaf, kind_cpp(in.kind));
    input_list += fmt::format("  /* {} */", in.name);
  }
  // sm90: CUTLASS's EVT runs the functor (epilogue_chain_sm90.cuh); sm90split: the split
  // kernel's element-wise store does (epilogue_chain.cuh, included by the split kernels).
  const bool evt = v.arch == KernelArch::Sm90;
  const std::string header = template_header(v);
  const std::string chain_header = evt ? "epilogue_chain_sm90.cuh" : "epilogue_chain.cuh";
  std::map<std::string, std::string> values{
      {"name", v.name()},
      {"functor", emit_chain_functor(plan)},
      {"inputs", input_list},
      {"header", header},
      {"chain_header", chain_header},
      {"chain", evt ? "Chain" : "ElementwiseChain"},
      {"config", evt ? sm90_config(v, ",\n    FactChain") : split_config(v, ",\n    FactChain")},
      {"operation", evt ? "fact::gemm_sm90::Operation" : split_operation(v)}};
  constexpr const char* kSource =
      "// Generated by `fact realize` (src/realize/epilogue_emit.cpp) from templates/${header} and\n"
      "// templates/${chain_header}. Do not edit: the functor below is the plan's epilogue_chain\n"
      "// written out; everything else lives in the templates.\n"
      "// Variant: ${name}\n"
      "\n"
      "#include \"${header}\"\n"
      "#include \"${chain_header}\"\n"
      "#include \"fact_export.cuh\"\n"
      "\n"
      "${functor}"
      "\n"
      "// Epilogue inputs in kernel-ABI order (GemmSource = the problem's e; Leaf<i> = leaves[i]).\n"
      "using FactChain = fact::epilogue_chain::${chain}<\n"
      "    FactChainFn${inputs}>;\n"
      "\n"
      "${config}"
      "\n"
      "FACT_EXPORT_GEMM(${operation}<FactConfig>, \"${name}\")\n";
  return fill_placeholders(kSource, values);
}

Enumeration chain_variants(const Enumeration& gemm_only, const ChainPlan& plan) {
  Enumeration out;
  out.skipped = gemm_only.skipped;
  for (auto v : gemm_only.variants) {
    if (v.arch != KernelArch::Sm90 && v.arch != KernelArch::Sm90Split) {
      out.skipped.push_back({v.name(), fmt::format("the {} family cannot run the epilogue chain (sm90's EVT epilogue "
                                                   "and the sm90split kernels' element-wise store take it); the "
                                                   "sm90 and sm90split candidates realize the whole chain",
                                                   token(v.arch))});
      continue;
    }
    v.chain_key = plan.key8;
    out.variants.push_back(v);
  }
  if (out.variants.empty())
    out.reason = !gemm_only.reason.empty() ? gemm_only.reason
                                           : std::string("no sm90 or sm90split variant is legal for this problem, and "
                                                         "only they run the epilogue chain");
  return out;
}

json fused_epilogue_json(const ChainPlan& plan) {
  json inputs = json::array();
  for (const auto& in : plan.inputs)
    inputs.push_back({{"name", in.name},
                      {"tensor", in.tensor},
                      {"kind", token(in.kind)},
                      {"ld", in.ld},
                      {"batch_stride", in.batch_stride},
                      {"abi_leaf", in.abi_leaf}});
  return {{"key", plan.chain.at("key")}, {"output", plan.output}, {"inputs", inputs}};
}

}  // namespace fact
