// The GEMM epilogue chain: elementwise DAGs after a GEMM become an expression IR
// (values / leaves / consts) with a canonical key; written-out activations are
// absorbed by structure and identified numerically; chains that cannot be absorbed
// stop with a reason and leave their nodes unmatched.
#include <gtest/gtest.h>

#include "rules3_util.hpp"

namespace fact {
namespace {

using nlohmann::json;
using test3::captured3;

Match gemm_at(const Graph& g, const std::string& node) {
  return test3::match_at(g, node, "gemm");
}

std::vector<std::string> ops_of(const json& chain) {
  std::vector<std::string> out;
  for (const auto& v : chain["values"]) out.push_back(v["op"]);
  return out;
}

TEST(EpilogueChain, WrittenOutTanhGeluIsAbsorbedByStructure) {
  // minGPT's NewGELU: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * pow(x, 3)))).
  Graph g = captured3("block_mingpt");
  Match m = gemm_at(g, "c_fc");
  ASSERT_TRUE(m.payload.contains("epilogue_chain"));
  const json& c = m.payload["epilogue_chain"];
  EXPECT_EQ(c["accumulator"], "c_fc");
  EXPECT_EQ(c["output"], "mul_4");
  EXPECT_EQ(c["unary_equivalent"], "gelu_tanh");
  EXPECT_EQ(c["values"].size(), 8u);
  EXPECT_TRUE(c["leaves"].empty());
  EXPECT_EQ(m.outputs, (std::vector<std::string>{"mul_4"}));
  EXPECT_EQ(m.nodes.front(), "c_fc");
  EXPECT_EQ(m.nodes.size(), 9u);
  // The GEMM payload itself is unchanged (linear with bias).
  EXPECT_EQ(m.gemm->epilogue.kind, "bias");
  EXPECT_NE(m.problem_key.find(":evt="), std::string::npos);
}

TEST(EpilogueChain, CubedSpellingWithExplicitBiasIsTheSameFunction) {
  // (x @ w + b) then y * 0.5 * (tanh(k*y + k*0.044715*(y*y*y)) + 1): different ops, same GELU.
  Graph g = captured3("mlp_gelu_cubed");
  Match m = gemm_at(g, "matmul");
  const json& c = m.payload["epilogue_chain"];
  EXPECT_EQ(c["output"], "mul_5");
  ASSERT_EQ(c["leaves"].size(), 1u);
  EXPECT_EQ(c["leaves"]["l0"]["tensor"], "b");
  EXPECT_EQ(c["leaves"]["l0"]["strides"], json({0, 1}));  // a row vector broadcast over rows
  EXPECT_EQ(c["values"][0]["op"], "add");
  EXPECT_EQ(c["values"][0]["args"], json({{{"ref", "acc"}}, {{"leaf", "l0"}}}));
  // With a leaf the DAG is not a unary function of the accumulator: no name is claimed.
  EXPECT_TRUE(c["unary_equivalent"].is_null());
  json plan = test3::plan_checked(g);
  ASSERT_EQ(plan["patterns"].size(), 1u);
  EXPECT_TRUE(plan["unmatched"].empty());
}

TEST(EpilogueChain, GeluModuleResidualScaleClampSigmoid) {
  Graph g = captured3("block_gelu_module");
  Match fc = gemm_at(g, "fc");
  EXPECT_EQ(ops_of(fc.payload["epilogue_chain"]), std::vector<std::string>{"gelu"});
  EXPECT_EQ(fc.payload["epilogue_chain"]["values"][0]["approximate"], "tanh");
  EXPECT_EQ(fc.payload["epilogue_chain"]["unary_equivalent"], "gelu_tanh");

  Match proj = gemm_at(g, "proj");  // residual add of x
  const json& pc = proj.payload["epilogue_chain"];
  EXPECT_EQ(ops_of(pc), std::vector<std::string>{"add"});
  EXPECT_EQ(pc["leaves"]["l0"]["tensor"], "x");
  EXPECT_EQ(pc["leaves"]["l0"]["strides"], json({512, 32, 1}));

  Match gate = gemm_at(g, "gate");  // clamp(g * 0.5 + h, -3, 3) -> sigmoid
  const json& gc = gate.payload["epilogue_chain"];
  EXPECT_EQ(ops_of(gc), (std::vector<std::string>{"mul", "add", "clamp", "sigmoid"}));
  EXPECT_EQ(gc["values"][0]["args"][1], json({{"const", 0.5}}));
  EXPECT_EQ(gc["values"][2]["args"], json({{{"ref", "v1"}}, {{"const", -3.0}}, {{"const", 3.0}}}));
  EXPECT_EQ(gate.outputs, (std::vector<std::string>{"sigmoid"}));
  test3::plan_checked(g);
}

TEST(EpilogueChain, KeyDependsOnTheMathNotTheNames) {
  auto build = [](const std::string& act, const std::string& prefix, double k) {
    test::IrBuilder b;
    b.input("x", {64, 32}).param("w", {32, 64});
    b.node(prefix + "mm", "mm", {"x", "w"}, {64, 64});
    b.doc["tensors"][prefix + "k"] = {{"shape", json::array()}, {"dtype", "float32"}, {"strides", json::array()},
                                      {"kind", "const"}, {"value", k}};
    b.node(prefix + "s", "mul", {prefix + "mm", prefix + "k"}, {64, 64});
    b.node(prefix + "a", act, {prefix + "s"}, {64, 64}).output(prefix + "a");
    return parse_graph(b.doc);
  };
  Graph g1 = build("relu", "", 2.0), g2 = build("relu", "other_", 2.0), g3 = build("relu", "", 3.0),
        g4 = build("tanh", "", 2.0);
  std::string k1 = gemm_at(g1, "mm").payload["epilogue_chain"]["key"];
  EXPECT_EQ(k1, gemm_at(g2, "other_mm").payload["epilogue_chain"]["key"].get<std::string>());
  EXPECT_NE(k1, gemm_at(g3, "mm").payload["epilogue_chain"]["key"].get<std::string>());
  EXPECT_NE(k1, gemm_at(g4, "mm").payload["epilogue_chain"]["key"].get<std::string>());
}

TEST(EpilogueChain, StridedResidualIsNotAbsorbed) {
  // transpose_shared: mm + t where t is column-major: the epilogue needs unit last-dim stride.
  Graph g = load_graph(test::fixture("transpose_shared.json"));
  Match m = gemm_at(g, "mm");
  EXPECT_FALSE(m.payload.contains("epilogue_chain"));
  EXPECT_EQ(m.nodes, (std::vector<std::string>{"mm"}));
  ASSERT_TRUE(m.notes.count("add"));
  EXPECT_NE(m.notes["add"].find("last-dim stride 64"), std::string::npos) << m.notes["add"];
  std::string why;
  EpilogueChain c = find_epilogue_chain(g, *g.find_node("mm"), &why);
  EXPECT_TRUE(c.nodes.empty());
  EXPECT_EQ(why, "add 'add' reads 't' with last-dim stride 64; the epilogue loads rows with unit stride");
}

TEST(EpilogueChain, IntermediateWithASecondReaderStopsTheChain) {
  // mm -> relu -> mul(2); relu is also a graph output: only relu can be absorbed
  // (it is the chain's result); mul stays outside with the reason recorded.
  test::IrBuilder b;
  b.input("x", {64, 32}).param("w", {32, 64});
  b.node("mm", "mm", {"x", "w"}, {64, 64});
  b.node("r", "relu", {"mm"}, {64, 64});
  b.doc["tensors"]["two"] = {{"shape", json::array()}, {"dtype", "float32"}, {"strides", json::array()},
                             {"kind", "const"}, {"value", 2.0}};
  b.node("m2", "mul", {"r", "two"}, {64, 64}).output("r").output("m2");
  Graph g = parse_graph(b.doc);
  Match m = gemm_at(g, "mm");
  EXPECT_EQ(m.nodes, (std::vector<std::string>{"mm", "r"}));
  EXPECT_EQ(m.outputs, (std::vector<std::string>{"r"}));
  std::string why;
  find_epilogue_chain(g, *g.find_node("mm"), &why);
  EXPECT_EQ(why, "chain ending at 'm2' not absorbed: 'r' is a graph output");
  json plan = test3::plan_checked(g);
  EXPECT_EQ(plan["unmatched"].size(), 1u);
}

TEST(EpilogueChain, DtypeChangeAndGrowingBroadcastStop) {
  test::IrBuilder b;
  b.input("x", {64, 32}).param("w", {32, 64}).input("big", {4, 64, 64});
  b.node("mm", "mm", {"x", "w"}, {64, 64});
  b.node("grow", "add", {"mm", "big"}, {4, 64, 64}, {{"alpha", 1}}).output("grow");
  Graph g = parse_graph(b.doc);
  std::string why;
  EpilogueChain c = find_epilogue_chain(g, *g.find_node("mm"), &why);
  EXPECT_TRUE(c.nodes.empty());
  EXPECT_EQ(why, "add 'grow' result [4, 64, 64] is not the GEMM output's shape [64, 64]");
}

TEST(EpilogueChain, CostCountsEagerKernelsButNotFusedOnes) {
  Workload gemm;
  gemm.flops = 1e9;
  gemm.bytes = 1e6;
  Workload w = add_epilogue_work(gemm, 1000.0, 3.0, 400.0, 3);
  EXPECT_DOUBLE_EQ(w.flops, 1e9 + 3000.0);
  EXPECT_DOUBLE_EQ(w.bytes, 1e6 + 400.0);
  EXPECT_DOUBLE_EQ(w.eager_bytes, 1e6 + 400.0 + 2.0 * 3 * 1000.0 * 4);
}

}  // namespace
}  // namespace fact
