// GEMM + epilogue chain -> sm90 EVT source (src/realize/epilogue_emit.cpp):
// golden sources for chains discover really produces, the SSA -> functor
// codegen of every op checked numerically on the host (g++ compiles the
// generated functor; an independent double-precision evaluator is the
// reference), leaf classification by stride, and the skip reasons that keep
// the GEMM-core fallback.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "../front/rules3_util.hpp"
#include "fact/emit.hpp"
#include "fact/epilogue_emit.hpp"
#include "realize_test_util.hpp"

namespace fact {
namespace {

using nlohmann::json;

// ---- plan patterns -------------------------------------------------------------------

json plan_pattern(const std::string& fixture, const std::string& root) {
  json plan = test3::plan_checked(test3::captured3(fixture));
  for (const auto& p : plan["patterns"])
    if (p["root"] == root) return p;
  ADD_FAILURE() << "no pattern rooted at " << root << " in " << fixture;
  return json::object();
}

// A GEMM pattern (64 x 128 x 32, fp32, no GEMM epilogue) carrying `values` over
// acc with `leaves` ({name: strides over [64, 128]}).
json synthetic_pattern(const json& values, const json& leaves = json::object(), std::vector<int64_t> shape = {64, 128},
                       int64_t batch = 1) {
  const int64_t n = shape.back();
  int64_t m = 1;
  for (size_t i = batch > 1 ? 1 : 0; i + 1 < shape.size(); ++i) m *= shape[i];
  json chain_leaves = json::object();
  for (const auto& [name, strides] : leaves.items())
    chain_leaves[name] = {{"tensor", "t_" + name}, {"shape", shape}, {"strides", strides}};
  return {{"id", "p0"},
          {"rule", "gemm"},
          {"nodes", {"mm", "out"}},
          {"outputs", {"out"}},
          {"gemm",
           {{"batch", batch}, {"m", m}, {"n", n}, {"k", 32},
            {"a", {{"tensor", "x"}, {"layout", "row"}, {"ld", 32}, {"batch_stride", batch > 1 ? m * 32 : 0}}},
            {"b", {{"tensor", "w"}, {"layout", "col"}, {"ld", 32}, {"batch_stride", 0}}},
            {"d", {{"tensor", "mm"}, {"ld", n}, {"batch_stride", batch > 1 ? m * n : 0}}},
            {"epilogue", {{"kind", "none"}, {"tensor", nullptr}, {"ld", 0}, {"batch_stride", 0}, {"alpha", 1.0}, {"beta", 0.0}}},
            {"element_a", "float32"}, {"element_b", "float32"}, {"element_d", "float32"}}},
          {"epilogue_chain",
           {{"accumulator", "mm"}, {"output", "out"}, {"shape", shape}, {"element", "float32"},
            {"leaves", chain_leaves}, {"values", values}, {"result", values.back()["id"]},
            {"key", "0123abcd89abcdef"}}}};
}

json value(const std::string& id, const std::string& op, json args, json extra = json::object()) {
  json v = {{"id", id}, {"op", op}, {"args", std::move(args)}};
  for (const auto& [k, x] : extra.items()) v[k] = x;
  return v;
}
const json kAcc = {{"ref", "acc"}};
json vref(const std::string& id) { return {{"ref", id}}; }
json leaf(const std::string& id) { return {{"leaf", id}}; }
json cst(double x) { return {{"const", x}}; }
const json kNoBound = {{"const", nullptr}};  // an absent clamp bound

GemmVariant sm90_variant(const ChainPlan& plan, MathMode math = MathMode::F16x3) {
  GemmVariant v;
  v.arch = KernelArch::Sm90, v.math = math;
  v.tile_m = 128, v.tile_n = 128, v.tile_k = 64;
  v.schedule = Schedule::Coop, v.scheduler = SchedulerKind::Persistent;
  v.layout_a = OperandLayout::Row, v.layout_b = OperandLayout::Col;
  v.epilogue = plan.gemm_epilogue;
  v.chain_key = plan.key8;
  return v;
}

// The split kernel's chained form (schedule pre: the block's linears).
GemmVariant split_variant(const ChainPlan& plan) {
  GemmVariant v = sm90_variant(plan);
  v.arch = KernelArch::Sm90Split, v.tile_k = 32, v.schedule = Schedule::Pre, v.scheduler = SchedulerKind::Dp;
  v.stages = 6;
  return v;
}

// ---- golden sources ------------------------------------------------------------------

TEST(EpilogueEmit, GoldenSources) {
  // (a) linear -> tanh-GELU written out term by term (minGPT's NewGELU);
  // (b) linear + bias -> residual add of the block input (a full-size leaf: the C source).
  const std::vector<std::pair<std::string, std::string>> cases{{"block_mingpt", "c_fc"},
                                                               {"block_gelu_module", "proj"}};
  for (const auto& [fixture, root] : cases) {
    const json pattern = plan_pattern(fixture, root);
    ChainPlan plan = plan_chain_epilogue(pattern);
    ASSERT_TRUE(plan.skip_reason.empty()) << plan.skip_reason;
    const GemmVariant v = sm90_variant(plan);
    const std::string source = emit_chain_variant_source(v, plan);
    check_golden(v.name(), source);
    EXPECT_NE(source.find("FACT_EXPORT_GEMM(fact::gemm_sm90::Operation<FactConfig>, \"" + v.name() + "\")"),
              std::string::npos);
    EXPECT_EQ(source.find("__global__"), std::string::npos) << "logic in a generated file";
    // The split kernels run the same functor in their element-wise store.
    const GemmVariant split = split_variant(plan);
    const std::string split_source = emit_chain_variant_source(split, plan);
    check_golden(split.name(), split_source);
    EXPECT_NE(split_source.find("#include \"split_gemm_pre_sm90.cuh\""), std::string::npos);
    EXPECT_NE(split_source.find("fact::epilogue_chain::ElementwiseChain<"), std::string::npos);
    EXPECT_NE(split_source.find("fact::split_gemm::PartsFp16Scaled,\n    FactChain>;"), std::string::npos);
    EXPECT_NE(split_source.find("FACT_EXPORT_GEMM(fact::split_gemm::pre::Operation<FactConfig>, \"" + split.name() +
                                "\")"),
              std::string::npos);
    EXPECT_EQ(split_source.find("epilogue_chain_sm90.cuh"), std::string::npos) << "split source pulls in the EVT";
  }
}

// The source is the kernel's cache and compile identity and the name carries only
// the chain key: patterns that run the same chain on other tensors (minGPT's two
// residual c_proj GEMMs) must emit the same source, or they compile twice under one
// name and a warm run misses the cached winner.
TEST(EpilogueEmit, SourceDoesNotDependOnNodeOrTensorIds) {
  const json pattern = plan_pattern("block_gelu_module", "proj");
  json renamed = pattern;
  auto& chain = renamed["epilogue_chain"];
  for (auto& value : chain["values"])
    if (value.contains("node")) value["node"] = "renamed_" + value["node"].get<std::string>();
  for (auto& [id, leaf] : chain["leaves"].items()) leaf["tensor"] = "renamed_" + leaf["tensor"].get<std::string>();
  chain["output"] = "renamed_output";
  if (renamed["gemm"].contains("e") && renamed["gemm"]["e"].is_object() && renamed["gemm"]["e"].contains("tensor"))
    renamed["gemm"]["e"]["tensor"] = "renamed_bias";
  const ChainPlan a = plan_chain_epilogue(pattern), b = plan_chain_epilogue(renamed);
  ASSERT_TRUE(a.skip_reason.empty()) << a.skip_reason;
  ASSERT_TRUE(b.skip_reason.empty()) << b.skip_reason;
  EXPECT_EQ(emit_chain_variant_source(sm90_variant(a), a), emit_chain_variant_source(sm90_variant(b), b));
}

TEST(EpilogueEmit, DiscoveredChainsPlanTheirInputs) {
  // (a): the linear's bias is the GEMM source e (a row vector), no leaves; 8 SSA steps.
  ChainPlan gelu = plan_chain_epilogue(plan_pattern("block_mingpt", "c_fc"));
  ASSERT_TRUE(gelu.skip_reason.empty()) << gelu.skip_reason;
  ASSERT_EQ(gelu.inputs.size(), 1u);
  EXPECT_EQ(gelu.inputs[0].name, "e");
  EXPECT_EQ(gelu.inputs[0].kind, ChainInputKind::RowVector);
  EXPECT_EQ(gelu.output, "mul_4");
  const std::string fn = emit_chain_functor(gelu);
  EXPECT_NE(fn.find("const float d = alpha * acc + beta * e;"), std::string::npos) << fn;
  EXPECT_NE(fn.find("fact::epilogue_chain::ops::cube(d)"), std::string::npos) << fn;  // pow(x, 3.0)
  EXPECT_NE(fn.find("fact::epilogue_chain::ops::tanh("), std::string::npos) << fn;
  EXPECT_NE(fn.find("return v7;"), std::string::npos) << fn;
  // (b): the residual x [2, 16, 32] folds its leading dims into m: a matrix with ld 32.
  ChainPlan residual = plan_chain_epilogue(plan_pattern("block_gelu_module", "proj"));
  ASSERT_TRUE(residual.skip_reason.empty()) << residual.skip_reason;
  ASSERT_EQ(residual.inputs.size(), 2u);
  EXPECT_EQ(residual.inputs[1].name, "l0");
  EXPECT_EQ(residual.inputs[1].tensor, "x");
  EXPECT_EQ(residual.inputs[1].kind, ChainInputKind::Matrix);
  EXPECT_EQ(residual.inputs[1].ld, 32);
  EXPECT_EQ(residual.inputs[1].abi_leaf, 0);
  // An explicit bias after a plain matmul is a leaf (row vector), not the GEMM source.
  ChainPlan cubed = plan_chain_epilogue(plan_pattern("mlp_gelu_cubed", "matmul"));
  ASSERT_TRUE(cubed.skip_reason.empty()) << cubed.skip_reason;
  ASSERT_EQ(cubed.inputs.size(), 1u);
  EXPECT_EQ(cubed.inputs[0].kind, ChainInputKind::RowVector);
  EXPECT_EQ(cubed.inputs[0].abi_leaf, 0);
  const json fused = fused_epilogue_json(residual);
  EXPECT_EQ(fused["output"], residual.output);
  EXPECT_EQ(fused["inputs"][1], json({{"name", "l0"}, {"tensor", "x"}, {"kind", "matrix"}, {"ld", 32},
                                      {"batch_stride", 0}, {"abi_leaf", 0}}));
}

// ---- every op, numerically ---------------------------------------------------------------

struct OpCase {
  std::string name;
  json values;
  bool with_leaf;  // reads l0 (a row vector)
};

std::vector<OpCase> op_cases() {
  std::vector<OpCase> c;
  auto unary = [&](const std::string& op, json extra = json::object()) {
    c.push_back({op + (extra.empty() ? "" : "_" + extra.begin().value().get<std::string>()),
                 json::array({value("v0", op, {kAcc}, extra)}), false});
  };
  for (const char* op : {"neg", "relu", "tanh", "sigmoid", "silu", "exp", "erf", "abs", "identity"}) unary(op);
  unary("gelu", {{"approximate", "none"}});
  unary("gelu", {{"approximate", "tanh"}});
  c.push_back({"sqrt_abs", json::array({value("v0", "abs", {kAcc}), value("v1", "sqrt", {vref("v0")})}), false});
  c.push_back({"add_leaf", json::array({value("v0", "add", {kAcc, leaf("l0")})}), true});
  c.push_back({"add_alpha", json::array({value("v0", "add", {kAcc, leaf("l0")}, {{"alpha", -0.75}})}), true});
  c.push_back({"sub_leaf", json::array({value("v0", "sub", {leaf("l0"), kAcc})}), true});
  c.push_back({"sub_alpha", json::array({value("v0", "sub", {kAcc, leaf("l0")}, {{"alpha", 2.5}})}), true});
  c.push_back({"mul_const", json::array({value("v0", "mul", {cst(0.044715), kAcc})}), false});
  c.push_back({"div_leaf", json::array({value("v0", "div", {kAcc, leaf("l0")})}), true});
  c.push_back({"div_const_by_leaf", json::array({value("v0", "div", {cst(1.0), leaf("l0")}),
                                                 value("v1", "mul", {vref("v0"), kAcc})}), true});
  c.push_back({"pow_2", json::array({value("v0", "pow", {kAcc, cst(2.0)})}), false});
  c.push_back({"pow_3", json::array({value("v0", "pow", {kAcc, cst(3.0)})}), false});
  c.push_back({"pow_half", json::array({value("v0", "abs", {kAcc}), value("v1", "pow", {vref("v0"), cst(0.5)})}), false});
  c.push_back({"pow_general", json::array({value("v0", "abs", {kAcc}), value("v1", "pow", {vref("v0"), cst(2.5)})}), false});
  c.push_back({"pow_const_base", json::array({value("v0", "pow", {cst(2.0), kAcc})}), false});
  c.push_back({"clamp_both", json::array({value("v0", "clamp", {kAcc, cst(-1.5), cst(0.25)})}), false});
  c.push_back({"clamp_min_only", json::array({value("v0", "clamp", {kAcc, cst(-0.5), kNoBound})}), false});
  c.push_back({"clamp_max_only", json::array({value("v0", "clamp", {kAcc, kNoBound, cst(1.0)})}), false});
  // The tanh-GELU written out term by term, as minGPT spells it.
  c.push_back({"gelu_written_out",
               json::array({value("v0", "mul", {cst(0.5), kAcc}), value("v1", "pow", {kAcc, cst(3.0)}),
                            value("v2", "mul", {cst(0.044715), vref("v1")}), value("v3", "add", {kAcc, vref("v2")}),
                            value("v4", "mul", {cst(0.7978845608028654), vref("v3")}), value("v5", "tanh", {vref("v4")}),
                            value("v6", "add", {cst(1.0), vref("v5")}), value("v7", "mul", {vref("v0"), vref("v6")})}),
               false});
  return c;
}

// Independent double-precision semantics of the contract's ops (PyTorch's).
double reference_eval(const json& values, double acc, double l0) {
  std::map<std::string, double> env{{"acc", acc}};
  double last = NAN;
  for (const auto& v : values) {
    std::vector<double> a;
    std::vector<bool> null_arg;
    for (const auto& arg : v["args"]) {
      null_arg.push_back(arg.contains("const") && arg["const"].is_null());
      if (arg.contains("ref")) a.push_back(env.at(arg["ref"].get<std::string>()));
      else if (arg.contains("leaf")) a.push_back(l0);
      else a.push_back(arg["const"].is_null() ? 0.0 : arg["const"].get<double>());
    }
    const std::string op = v["op"];
    const double alpha = v.contains("alpha") ? v["alpha"].get<double>() : 1.0;
    const double x = a[0];
    if (op == "add") last = x + alpha * a[1];
    else if (op == "sub") last = x - alpha * a[1];
    else if (op == "mul") last = x * a[1];
    else if (op == "div") last = x / a[1];
    else if (op == "neg") last = -x;
    else if (op == "relu") last = std::max(x, 0.0);
    else if (op == "gelu" && v.value("approximate", "none") == "tanh")
      last = 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    else if (op == "gelu") last = 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    else if (op == "tanh") last = std::tanh(x);
    else if (op == "sigmoid") last = 1 / (1 + std::exp(-x));
    else if (op == "silu") last = x / (1 + std::exp(-x));
    else if (op == "exp") last = std::exp(x);
    else if (op == "pow") last = std::pow(x, a[1]);
    else if (op == "erf") last = std::erf(x);
    else if (op == "sqrt") last = std::sqrt(x);
    else if (op == "abs") last = std::fabs(x);
    else if (op == "identity") last = x;
    else if (op == "clamp") {
      last = x;
      if (a.size() > 1 && !null_arg[1]) last = std::max(last, a[1]);
      if (a.size() > 2 && !null_arg[2]) last = std::min(last, a[2]);
    } else {
      ADD_FAILURE() << "reference has no op " << op;
    }
    env[v["id"].get<std::string>()] = last;
  }
  return last;
}

std::string capture_command(const std::string& cmd) {
  std::string out;
  if (FILE* pipe = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
    ::pclose(pipe);
  }
  return out;
}

TEST(EpilogueEmit, EveryOpEvaluatesOnTheHostLikeTheReference) {
  if (std::system("g++ --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "no g++ on PATH to compile the functors";
  const auto cases = op_cases();
  const double accs[] = {-3.1, -1.0, -0.37, -0.0, 0.0, 0.2, 0.5, 1.3, 2.9};
  const double l0s[] = {0.75, -1.6};
  const double alpha = 1.25;  // the functor folds alpha·acc in front of the chain
  std::string tu = "#include <cstdio>\n#include \"epilogue_chain_ops.cuh\"\n\n";
  std::string main_body;
  for (size_t i = 0; i < cases.size(); ++i) {
    const json leaves = cases[i].with_leaf ? json{{"l0", {0, 1}}} : json::object();
    ChainPlan plan = plan_chain_epilogue(synthetic_pattern(cases[i].values, leaves));
    ASSERT_TRUE(plan.skip_reason.empty()) << cases[i].name << ": " << plan.skip_reason;
    const std::string fn = "Fn" + std::to_string(i);
    tu += emit_chain_functor(plan, fn) + "\n";
    for (double acc : accs)
      for (double l0 : l0s)
        main_body += fmt::format("  std::printf(\"%a\\n\", {}::apply({}f, 0.f, static_cast<float>({}){}));\n", fn,
                                 alpha, acc, cases[i].with_leaf ? fmt::format(", static_cast<float>({})", l0) : "");
  }
  tu += "int main() {\n" + main_body + "  return 0;\n}\n";
  TempDir t;
  write(t.path / "functors.cpp", tu);
  const std::string templates = std::string(FACT_TEST_DATA_DIR) + "/../templates";
  const std::string compile = fmt::format("g++ -std=c++17 -O1 -I{} {} -o {} 2>&1", templates,
                                          (t.path / "functors.cpp").string(), (t.path / "functors").string());
  const std::string log = capture_command(compile);
  ASSERT_TRUE(fs::exists(t.path / "functors")) << "the generated functors do not compile with g++:\n"
                                               << log << "\n" << tu;
  std::istringstream out(capture_command((t.path / "functors").string()));
  for (const auto& c : cases)
    for (double acc : accs)
      for (double l0 : l0s) {
        std::string line;
        ASSERT_TRUE(std::getline(out, line)) << "functor program stopped early at " << c.name;
        const double got = std::strtod(line.c_str(), nullptr);
        const float accf = static_cast<float>(acc), l0f = static_cast<float>(l0);
        const double want = reference_eval(c.values, static_cast<float>(alpha) * accf, c.with_leaf ? l0f : 0.0);
        if (std::isnan(want)) {
          EXPECT_TRUE(std::isnan(got)) << c.name << " at acc " << acc;
          continue;
        }
        EXPECT_NEAR(got, want, 2e-6 * (1.0 + std::fabs(want))) << c.name << " at acc " << acc << ", l0 " << l0;
      }
}

TEST(EpilogueEmit, FunctorSpellsOpsAndConstantsExactly) {
  auto functor = [](const json& values, const json& leaves = json::object()) {
    ChainPlan plan = plan_chain_epilogue(synthetic_pattern(values, leaves));
    EXPECT_TRUE(plan.skip_reason.empty()) << plan.skip_reason;
    return emit_chain_functor(plan);
  };
  const json row = {{"l0", {0, 1}}};
  EXPECT_NE(functor(json::array({value("v0", "sub", {kAcc, leaf("l0")}, {{"alpha", 2.0}})}), row)
                .find("const float v0 = d - 0x1p+1f * l0;"),
            std::string::npos);
  const std::string clamp = functor(json::array({value("v0", "clamp", {kAcc, kNoBound, cst(3.0)})}));
  EXPECT_NE(clamp.find("clamp_max(d, 0x1.8p+1f)"), std::string::npos) << clamp;
  EXPECT_EQ(clamp.find("clamp_min"), std::string::npos) << clamp;
  EXPECT_NE(functor(json::array({value("v0", "gelu", {kAcc}, {{"approximate", "tanh"}})})).find("gelu_tanh(d)"),
            std::string::npos);
  EXPECT_NE(functor(json::array({value("v0", "mul", {kAcc, cst(-0.5)})})).find("d * (-0x1p-1f)"), std::string::npos);
  // No GEMM source: beta is unused and acc is alpha·(A·B) only.
  EXPECT_NE(functor(json::array({value("v0", "relu", {kAcc})})).find("const float d = alpha * acc;"),
            std::string::npos);
}

TEST(EpilogueEmit, FloatLiteralsReadBackExactly) {
  for (double x : {0.044715, 0.7978845608028654, 1.0 / 3.0, -2.5, 1e-30, 3.4e38, 0.0, 0.5}) {
    std::string lit = float_literal(x);
    std::string digits = lit;
    digits.erase(std::remove(digits.begin(), digits.end(), '('), digits.end());
    digits.erase(std::remove(digits.begin(), digits.end(), ')'), digits.end());
    ASSERT_EQ(digits.back(), 'f') << lit;
    digits.pop_back();
    EXPECT_EQ(std::strtof(digits.c_str(), nullptr), static_cast<float>(x)) << lit;
  }
  EXPECT_EQ(float_literal(INFINITY), "__builtin_inff()");
  EXPECT_EQ(float_literal(-INFINITY), "(-__builtin_inff())");
  EXPECT_EQ(float_literal(NAN), "__builtin_nanf(\"\")");
}

// ---- leaves -----------------------------------------------------------------------------------

TEST(EpilogueEmit, LeavesAreClassifiedByTheirStrides) {
  const json add_all = json::array({value("v0", "add", {kAcc, leaf("l0")}), value("v1", "add", {vref("v0"), leaf("l1")}),
                                    value("v2", "add", {vref("v1"), leaf("l2")}),
                                    value("v3", "mul", {vref("v2"), leaf("l3")})});
  const json leaves = {{"l0", {0, 1}}, {"l1", {1, 0}}, {"l2", {128, 1}}, {"l3", {0, 0}}};
  ChainPlan plan = plan_chain_epilogue(synthetic_pattern(add_all, leaves));
  ASSERT_TRUE(plan.skip_reason.empty()) << plan.skip_reason;
  ASSERT_EQ(plan.inputs.size(), 4u);
  EXPECT_EQ(plan.inputs[0].kind, ChainInputKind::RowVector);
  EXPECT_EQ(plan.inputs[1].kind, ChainInputKind::ColVector);
  EXPECT_EQ(plan.inputs[2].kind, ChainInputKind::Matrix);
  EXPECT_EQ(plan.inputs[2].ld, 128);
  EXPECT_EQ(plan.inputs[3].kind, ChainInputKind::Scalar);
  const std::string source = emit_chain_variant_source(sm90_variant(plan), plan);
  EXPECT_NE(source.find("fact::epilogue_chain::Leaf<0, fact::epilogue_chain::RowVector>"), std::string::npos);
  EXPECT_NE(source.find("fact::epilogue_chain::Leaf<1, fact::epilogue_chain::ColVector>"), std::string::npos);
  EXPECT_NE(source.find("fact::epilogue_chain::Leaf<2, fact::epilogue_chain::Matrix>"), std::string::npos);
  EXPECT_NE(source.find("fact::epilogue_chain::Leaf<3, fact::epilogue_chain::Scalar>"), std::string::npos);
  // l10 sorts after l9 (ABI order is numeric, not lexicographic).
  json many = json::array();
  json many_leaves = json::object();
  for (int i = 0; i <= 7; ++i) many_leaves["l" + std::to_string(i)] = {0, 1};
  many.push_back(value("v0", "add", {kAcc, leaf("l0")}));
  for (int i = 1; i <= 7; ++i) many.push_back(value("v" + std::to_string(i), "add", {vref("v" + std::to_string(i - 1)), leaf("l" + std::to_string(i))}));
  ChainPlan eight = plan_chain_epilogue(synthetic_pattern(many, many_leaves));
  ASSERT_TRUE(eight.skip_reason.empty()) << eight.skip_reason;
  EXPECT_EQ(eight.inputs.back().name, "l7");
  // Batched GEMM: a per-batch row vector keeps its batch stride; a 3-D residual folds nothing.
  ChainPlan batched = plan_chain_epilogue(synthetic_pattern(json::array({value("v0", "add", {kAcc, leaf("l0")}), value("v1", "add", {vref("v0"), leaf("l1")})}),
                                                            {{"l0", {128, 0, 1}}, {"l1", {8192, 128, 1}}}, {4, 64, 128}, 4));
  ASSERT_TRUE(batched.skip_reason.empty()) << batched.skip_reason;
  EXPECT_EQ(batched.inputs[0].kind, ChainInputKind::RowVector);
  EXPECT_EQ(batched.inputs[0].batch_stride, 128);
  EXPECT_EQ(batched.inputs[1].kind, ChainInputKind::Matrix);
  EXPECT_EQ(batched.inputs[1].batch_stride, 8192);
}

TEST(EpilogueEmit, UnsupportedChainsAreSkipReasonsNotCrashes) {
  const json add2 = json::array({value("v0", "add", {kAcc, leaf("l0")}), value("v1", "add", {vref("v0"), leaf("l1")})});
  auto reason = [](const json& pattern) { return plan_chain_epilogue(pattern).skip_reason; };
  // Two full-size leaves: the sm90 epilogue has one C source.
  EXPECT_NE(reason(synthetic_pattern(add2, {{"l0", {128, 1}}, {"l1", {128, 1}}})).find("2 full-size inputs"),
            std::string::npos);
  // A GEMM C source plus a full-size leaf is two as well.
  json with_c = synthetic_pattern(json::array({value("v0", "add", {kAcc, leaf("l0")})}), {{"l0", {128, 1}}});
  with_c["gemm"]["epilogue"] = {{"kind", "c"}, {"tensor", "c"}, {"ld", 128}, {"batch_stride", 0}, {"alpha", 1.0}, {"beta", 1.0}};
  EXPECT_NE(reason(with_c).find("one C source"), std::string::npos) << reason(with_c);
  // A partial broadcast over the folded m dims ([2, 1, 128] over [2, 16, 128]).
  const std::string partial = reason(synthetic_pattern(json::array({value("v0", "add", {kAcc, leaf("l0")})}),
                                                       {{"l0", {128, 0, 1}}}, {2, 16, 128}));
  EXPECT_NE(partial.find("neither a row vector"), std::string::npos) << partial;
  // A transposed matrix (n stride not 1).
  EXPECT_NE(reason(synthetic_pattern(json::array({value("v0", "add", {kAcc, leaf("l0")})}), {{"l0", {1, 64}}}))
                .find("neither a row vector"),
            std::string::npos);
  // A full matrix whose rows are not 16-byte aligned.
  EXPECT_NE(reason(synthetic_pattern(json::array({value("v0", "add", {kAcc, leaf("l0")})}), {{"l0", {130, 1}}}))
                .find("multiples of 4"),
            std::string::npos);
  // More leaves than the ABI carries.
  json nine = json::array({value("v0", "add", {kAcc, leaf("l0")})});
  json nine_leaves = {{"l0", {0, 1}}};
  for (int i = 1; i <= 8; ++i) {
    nine.push_back(value("v" + std::to_string(i), "add", {vref("v" + std::to_string(i - 1)), leaf("l" + std::to_string(i))}));
    nine_leaves["l" + std::to_string(i)] = {0, 1};
  }
  EXPECT_NE(reason(synthetic_pattern(nine, nine_leaves)).find("at most 8"), std::string::npos);
  // An op outside the contract, and a read before definition.
  EXPECT_NE(reason(synthetic_pattern(json::array({value("v0", "softmax", {kAcc})}))).find("not an epilogue op"),
            std::string::npos);
  EXPECT_NE(reason(synthetic_pattern(json::array({value("v0", "add", {kAcc, vref("v3")})}))).find("before it is defined"),
            std::string::npos);
  // An element type no GEMM variant reads or writes.
  json wide = synthetic_pattern(json::array({value("v0", "relu", {kAcc})}));
  wide["epilogue_chain"]["element"] = "float64";
  EXPECT_NE(reason(wide).find("reads and writes float32, float16 or bfloat16"), std::string::npos) << reason(wide);
  // A malformed payload is an error, not a skip.
  json broken = synthetic_pattern(json::array({value("v0", "relu", {kAcc})}));
  broken["epilogue_chain"].erase("values");
  EXPECT_THROW(plan_chain_epilogue(broken), std::runtime_error);
  // A skipped plan cannot be emitted.
  ChainPlan skipped = plan_chain_epilogue(synthetic_pattern(add2, {{"l0", {128, 1}}, {"l1", {128, 1}}}));
  EXPECT_THROW(emit_chain_variant_source(sm90_variant(skipped), skipped), std::invalid_argument);
}

// ---- 16-bit chains --------------------------------------------------------------------------------

// `pattern` with its GEMM and chain in `dtype` (discover gives leaves, E and D one dtype).
json as_dtype(json pattern, const std::string& dtype) {
  for (const char* key : {"element_a", "element_b", "element_d"}) pattern["gemm"][key] = dtype;
  pattern["epilogue_chain"]["element"] = dtype;
  return pattern;
}

// A 16-bit chain runs on the variants of its own I/O type: the same float functor, the
// Config reading and writing the 16-bit type (leaves included), 16-byte units of 8
// elements for the leaves, and no fp32-I/O variant may take it.
TEST(EpilogueEmit, SixteenBitChainsRunOnSixteenBitIoVariants) {
  const json values = json::array({value("v0", "add", {kAcc, leaf("l0")}), value("v1", "mul", {vref("v0"), leaf("l1")}),
                                   value("v2", "gelu", {vref("v1")}, {{"approximate", "tanh"}})});
  const json leaves = {{"l0", {128, 1}}, {"l1", {0, 1}}};
  const ChainPlan plan = plan_chain_epilogue(as_dtype(synthetic_pattern(values, leaves), "bfloat16"));
  ASSERT_TRUE(plan.skip_reason.empty()) << plan.skip_reason;
  EXPECT_EQ(plan.element, IoType::BF16);
  const ChainPlan fp32 = plan_chain_epilogue(synthetic_pattern(values, leaves));
  EXPECT_EQ(fp32.element, IoType::F32);
  EXPECT_EQ(emit_chain_functor(plan), emit_chain_functor(fp32)) << "the functor computes in float either way";

  GemmVariant v = sm90_variant(plan, MathMode::BF16);
  v.io = IoType::BF16;
  const std::string source = emit_chain_variant_source(v, plan);
  check_golden(v.name(), source);
  EXPECT_EQ(v.name(), "gemm_sm90_bf16_bf16_128x128x64_c1x1_coop_persistent_sauto_tt_none_evt0123abcd");
  EXPECT_NE(source.find("fact::gemm_sm90::MathBf16, /*A, B, C, D in memory*/ cutlass::bfloat16_t,"),
            std::string::npos);
  EXPECT_NE(source.find("fact::epilogue_chain::Leaf<0, fact::epilogue_chain::Matrix>"), std::string::npos);
  GemmVariant fp32_io = v;
  fp32_io.io = IoType::F32;
  EXPECT_THROW(emit_chain_variant_source(fp32_io, plan), std::invalid_argument);
  EXPECT_THROW(emit_chain_variant_source(v, fp32), std::invalid_argument);

  // ld 132 is 16-byte aligned for fp32 rows, not for 16-bit ones.
  const json misaligned = {{"l0", {132, 1}}, {"l1", {0, 1}}};
  EXPECT_TRUE(plan_chain_epilogue(synthetic_pattern(values, misaligned)).skip_reason.empty());
  const std::string why = plan_chain_epilogue(as_dtype(synthetic_pattern(values, misaligned), "float16")).skip_reason;
  EXPECT_NE(why.find("ld 132 / batch stride 0: the C source is read by TMA and needs multiples of 8"),
            std::string::npos)
      << why;

  // The enumeration of the chained bf16 pattern: sm90 bf16-I/O variants only, each with the key.
  const GemmProblemDesc problem = gemm_problem_from_json(as_dtype(synthetic_pattern(values, leaves), "bfloat16")["gemm"]);
  const Enumeration fused = chain_variants(enumerate_gemm_variants(problem, 1e-2, "sm90a", VariantSet::Default), plan);
  ASSERT_FALSE(fused.variants.empty()) << fused.reason;
  for (const auto& f : fused.variants) {
    EXPECT_EQ(f.io, IoType::BF16) << f.name();
    EXPECT_EQ(f.chain_key, plan.key8) << f.name();
    EXPECT_NO_THROW(emit_chain_variant_source(f, plan)) << f.name();
  }
}

// ---- variants -----------------------------------------------------------------------------------

TEST(EpilogueEmit, VariantNamesCarryTheChainKeyAndOnlySm90AndSplitTakeIt) {
  ChainPlan plan = plan_chain_epilogue(plan_pattern("block_gelu_module", "proj"));
  ASSERT_TRUE(plan.skip_reason.empty());
  const GemmVariant v = sm90_variant(plan);
  const std::string name = v.name();
  EXPECT_EQ(name, "gemm_sm90_f16x3_f32_128x128x64_c1x1_coop_persistent_sauto_tt_bias_evt" + plan.key8);
  auto parsed = parse_variant_name(name);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->chain_key, plan.key8);
  EXPECT_FALSE(parse_variant_name(name.substr(0, name.size() - 1)).has_value());   // 7 hex digits
  EXPECT_FALSE(parse_variant_name(name.substr(0, name.size() - 8) + "ABCDEF01").has_value());  // upper case
  EXPECT_THROW(emit_variant_source(v), std::invalid_argument);  // needs the chain
  GemmVariant other = v;
  other.chain_key = "00000000";
  EXPECT_THROW(emit_chain_variant_source(other, plan), std::invalid_argument);

  const GemmProblemDesc problem = gemm_problem_from_json(plan_pattern("block_gelu_module", "proj")["gemm"]);
  Enumeration gemm_only = enumerate_gemm_variants(problem, 1e-4, "sm90a", VariantSet::Default);
  Enumeration chained = chain_variants(gemm_only, plan);
  ASSERT_FALSE(chained.variants.empty());
  std::set<KernelArch> chained_families;
  for (const auto& c : chained.variants) {
    chained_families.insert(c.arch);
    EXPECT_NE(c.arch, KernelArch::Sm80);
    EXPECT_EQ(c.chain_key, plan.key8);
    EXPECT_FALSE(variant_illegal_reason(c, problem).has_value()) << c.name();
    EXPECT_NO_THROW(emit_chain_variant_source(c, plan)) << c.name();
  }
  EXPECT_EQ(chained_families, (std::set<KernelArch>{KernelArch::Sm90, KernelArch::Sm90Split}));
  bool sm80_skipped = false;
  for (const auto& s : chained.skipped)
    sm80_skipped = sm80_skipped || (s.name.rfind("gemm_sm80_", 0) == 0 && s.reason.find("cannot run the epilogue chain") != std::string::npos);
  EXPECT_TRUE(sm80_skipped);
  GemmVariant sm80 = v;
  sm80.arch = KernelArch::Sm80, sm80.math = MathMode::TF32x3, sm80.schedule = Schedule::Mstage;
  sm80.scheduler = SchedulerKind::Dp, sm80.stages = 4, sm80.tile_k = 16;
  ASSERT_TRUE(variant_illegal_reason(sm80, problem).has_value());
  EXPECT_NE(variant_illegal_reason(sm80, problem)->find("cannot run an epilogue chain"), std::string::npos);
  // An sm80-only target keeps nothing: the reason says why.
  Enumeration sm80_only = chain_variants(enumerate_gemm_variants(problem, 1e-4, "sm80", VariantSet::Default), plan);
  EXPECT_TRUE(sm80_only.variants.empty());
  EXPECT_NE(sm80_only.reason.find("only they run the epilogue chain"), std::string::npos) << sm80_only.reason;
}

}  // namespace
}  // namespace fact
