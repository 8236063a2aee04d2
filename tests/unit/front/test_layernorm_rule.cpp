// The LayerNorm rule: last-dim layer_norm with weight/bias, the residual add it
// absorbs (writing the sum when others read it), the add it leaves to a GEMM
// epilogue, and its guard reasons.
#include <gtest/gtest.h>

#include "rules3_util.hpp"

namespace fact {
namespace {

using nlohmann::json;
using test3::captured3;

json ln_payload(const Graph& g, const std::string& node, Match* m = nullptr) {
  MatchOutcome o = test3::run_at(g, node, "layernorm");
  EXPECT_TRUE(o.match) << o.reason;
  if (!o.match) return json();
  if (m) *m = *o.match;
  return o.match->payload["layernorm"];
}

TEST(LayerNormRule, MinGptBlockFirstLayerNorm) {
  Graph g = captured3("block_mingpt");
  Match m;
  json p = ln_payload(g, "ln_1", &m);
  EXPECT_EQ(p["rows"], 32);
  EXPECT_EQ(p["cols"], 32);
  EXPECT_DOUBLE_EQ(p["eps"].get<double>(), 1e-5);
  EXPECT_EQ(p["weight"], "ln_1_weight");
  EXPECT_EQ(p["bias"], "ln_1_bias");
  EXPECT_EQ(p["x"], json({{"tensor", "x"}, {"row_stride", 32}}));
  EXPECT_TRUE(p["residual"].is_null());
  EXPECT_EQ(m.nodes, (std::vector<std::string>{"ln_1"}));
  EXPECT_EQ(m.problem_key, "layernorm:f32:rows32:cols32:wb");
}

TEST(LayerNormRule, ResidualAddClaimedByTheGemmEpilogueIsLeftThere) {
  // x + dropout(attn.c_proj(y)): the c_proj GEMM's epilogue absorbs dropout(p=0) and the add.
  Graph g = captured3("block_mingpt");
  Match m;
  json p = ln_payload(g, "ln_2", &m);
  EXPECT_TRUE(p["residual"].is_null());
  ASSERT_TRUE(m.notes.count("add"));
  EXPECT_NE(m.notes["add"].find("absorbed into the epilogue of GEMM 'attn_c_proj'"), std::string::npos)
      << m.notes["add"];
  json plan = test3::plan_checked(g);
  EXPECT_EQ(test3::patterns_of(plan, "layernorm").size(), 2u);
  EXPECT_EQ(test3::patterns_of(plan, "attention").size(), 1u);
  EXPECT_EQ(test3::patterns_of(plan, "gemm").size(), 4u);
  EXPECT_TRUE(plan["unmatched"].empty()) << plan["unmatched"].dump(1);
}

TEST(LayerNormRule, AbsorbsAResidualAddAndWritesTheSumWhenItIsReadAgain) {
  test::IrBuilder b;
  b.input("a", {4, 16, 64}).input("r", {4, 16, 64}).param("w", {64}).param("bias", {64});
  b.node("s", "add", {"a", "r"}, {4, 16, 64}, {{"alpha", 1}});
  b.node("ln", "layer_norm", {"s", "w", "bias"}, {4, 16, 64}, {{"normalized_shape", {64}}, {"eps", 1e-6}});
  b.output("ln");
  Graph single = parse_graph(b.doc);
  Match m;
  json p = ln_payload(single, "ln", &m);
  EXPECT_EQ(p["residual"]["a"], json({{"tensor", "a"}, {"row_stride", 64}}));
  EXPECT_TRUE(p["residual"]["sum"].is_null());  // nobody else reads the sum
  EXPECT_TRUE(p["x"].is_null());
  EXPECT_EQ(m.nodes, (std::vector<std::string>{"s", "ln"}));
  EXPECT_EQ(m.outputs, (std::vector<std::string>{"ln"}));

  b.output("s");  // pre-LN: the sum is the residual stream of the next block
  Graph twice = parse_graph(b.doc);
  json q = ln_payload(twice, "ln", &m);
  EXPECT_EQ(q["residual"]["sum"], json({{"tensor", "s"}, {"row_stride", 64}}));
  EXPECT_EQ(m.outputs, (std::vector<std::string>{"s", "ln"}));
  EXPECT_EQ(m.problem_key, "layernorm:f32:rows64:cols64:wbrs");
  test3::plan_checked(twice);
}

TEST(LayerNormRule, Guards) {
  auto reason = [](const test::IrBuilder& b) {
    Graph g = parse_graph(b.doc);
    MatchOutcome o = test3::run_at(g, "ln", "layernorm");
    EXPECT_FALSE(o.match);
    return o.reason;
  };
  test::IrBuilder two;
  two.input("x", {4, 16, 64}).node("ln", "layer_norm", {"x"}, {4, 16, 64},
                                   {{"normalized_shape", {16, 64}}, {"weight", nullptr}, {"bias", nullptr}});
  EXPECT_EQ(reason(two), "normalized_shape [16,64] is not the last dim [64]: only last-dim LayerNorm is fused");

  test::IrBuilder strided;
  strided.input("x", {16, 64}, "float32", {1, 16})
      .node("ln", "layer_norm", {"x"}, {16, 64}, {{"normalized_shape", {64}}, {"weight", nullptr}, {"bias", nullptr}});
  EXPECT_EQ(reason(strided), "'x' has last-dim stride 16; the kernel reads whole rows");

  test::IrBuilder half;
  half.input("x", {16, 64}, "float16").param("w", {64})
      .node("ln", "layer_norm", {"x", "w"}, {16, 64}, {{"normalized_shape", {64}}, {"bias", nullptr}}, {}, "float16");
  EXPECT_EQ(reason(half), "weight 'w' is float32, input is float16");
}

TEST(LayerNormRule, CostCountsTheResidualTraffic) {
  Workload plain = layernorm_work(32, 32, true, false, false, DType::Float32);
  Workload fused = layernorm_work(32, 32, true, true, true, DType::Float32);
  EXPECT_DOUBLE_EQ(plain.bytes, 2.0 * 32 * 32 * 4 + 2.0 * 32 * 4);
  EXPECT_DOUBLE_EQ(fused.bytes, 4.0 * 32 * 32 * 4 + 2.0 * 32 * 4);
  EXPECT_GT(fused.eager_bytes, fused.bytes);
}

}  // namespace
}  // namespace fact
