// The RMSNorm side of the normalisation rule (src/rules/layernorm_rule.cpp) on captured
// IR: four written-out spellings (tests/fixtures/modules3/rms_llama.py), the fused
// F.rms_norm / nn.RMSNorm (rms_fused.py), the guards' reasons (neg_rms.py and built
// graphs), and what keeps RMSNorm apart from LayerNorm in keys and payloads.
#include <gtest/gtest.h>

#include <limits>

#include "rules3_util.hpp"

namespace fact {
namespace {

using nlohmann::json;
using test3::captured3;

Match rms_match(const Graph& g, const std::string& node) {
  return test3::match_at(g, node, "layernorm");
}

std::string rms_reason(const Graph& g, const std::string& node) {
  MatchOutcome o = test3::run_at(g, node, "layernorm");
  EXPECT_FALSE(o.match) << node;
  EXPECT_TRUE(o.applicable) << node << ": " << o.reason;
  return o.reason;
}

TEST(RmsNormRule, PowRsqrtTimesWeight) {
  // x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight on a GEMM's output.
  Graph g = captured3("rms_llama");
  Match m = rms_match(g, "pow_2");
  const json p = m.payload["layernorm"];
  EXPECT_EQ(p["norm"], "rms");
  EXPECT_EQ(p["rows"], 32);
  EXPECT_EQ(p["cols"], 64);
  EXPECT_DOUBLE_EQ(p["eps"].get<double>(), 1e-6);
  EXPECT_EQ(p["weight"], "n1_weight");
  EXPECT_TRUE(p["bias"].is_null());
  EXPECT_EQ(p["x"], json({{"tensor", "fc2"}, {"row_stride", 64}}));
  EXPECT_EQ(p["y"], json({{"tensor", "mul_3"}, {"row_stride", 64}}));
  EXPECT_TRUE(p["residual"].is_null());
  // pow (read x, write x^2) 2 + mean 1 + x * r 2 + * weight 2.
  EXPECT_EQ(p["eager_passes"], 7);
  EXPECT_EQ(m.nodes, (std::vector<std::string>{"pow_2", "mean_1", "add_2", "rsqrt_1", "mul_2", "mul_3"}));
  EXPECT_EQ(m.inputs, (std::vector<std::string>{"fc2", "n1_weight"}));
  EXPECT_EQ(m.outputs, (std::vector<std::string>{"mul_3"}));
  EXPECT_EQ(m.problem_key, "rmsnorm:f32:rows32:cols64:w");
  EXPECT_EQ(m.shape_class, "rmsnorm:f32:rows32:cols64:w");
}

TEST(RmsNormRule, LlamaFloatTypeAsAbsorbsTheResidualAndWritesTheSum) {
  // _norm(x.float()).type_as(x) * weight on s = x + r, which a later add reads again.
  Graph g = captured3("rms_llama");
  Match m = rms_match(g, "pow_1");
  const json p = m.payload["layernorm"];
  EXPECT_DOUBLE_EQ(p["eps"].get<double>(), 1e-5);
  EXPECT_TRUE(p["x"].is_null());
  EXPECT_EQ(p["residual"]["a"], json({{"tensor", "x"}, {"row_stride", 64}}));
  EXPECT_EQ(p["residual"]["b"], json({{"tensor", "r"}, {"row_stride", 64}}));
  EXPECT_EQ(p["residual"]["sum"], json({{"tensor", "add"}, {"row_stride", 64}}));
  EXPECT_EQ(m.nodes, (std::vector<std::string>{"add", "float_1", "pow_1", "mean", "add_1", "rsqrt", "mul", "type_as",
                                               "mul_1"}));
  EXPECT_EQ(m.outputs, (std::vector<std::string>{"add", "mul_1"}));
  EXPECT_EQ(m.problem_key, "rmsnorm:f32:rows32:cols64:wrs");
}

TEST(RmsNormRule, MulSelfTorchMeanDivideBySqrtWeightOnTheLeft) {
  // weight * (x / torch.sqrt(torch.mean(x * x, dim=-1, keepdim=True) + eps)); x is the
  // fc1 GEMM's residual add, which that GEMM's epilogue keeps.
  Graph g = captured3("rms_llama");
  Match m = rms_match(g, "mul_4");
  const json p = m.payload["layernorm"];
  EXPECT_EQ(p["weight"], "n3_weight");
  EXPECT_EQ(p["x"]["tensor"], "add_3");
  EXPECT_TRUE(p["residual"].is_null());
  ASSERT_TRUE(m.notes.count("add_3"));
  EXPECT_NE(m.notes["add_3"].find("absorbed into the epilogue of GEMM 'fc1'"), std::string::npos) << m.notes["add_3"];
  EXPECT_EQ(m.nodes, (std::vector<std::string>{"mul_4", "mean_2", "add_4", "sqrt", "truediv", "mul_5"}));
  EXPECT_EQ(m.outputs, (std::vector<std::string>{"mul_5"}));
}

TEST(RmsNormRule, SquareSumOverCReciprocalSqrtWithoutWeight) {
  // x * (1.0 / torch.sqrt(torch.square(x).sum(-1, keepdim=True) / C + eps)).
  Graph g = captured3("rms_llama");
  Match m = rms_match(g, "square");
  const json p = m.payload["layernorm"];
  EXPECT_TRUE(p["weight"].is_null());
  EXPECT_DOUBLE_EQ(p["eps"].get<double>(), 1e-6);
  EXPECT_EQ(m.nodes,
            (std::vector<std::string>{"square", "sum_1", "truediv_1", "add_5", "sqrt_1", "truediv_2", "mul_6"}));
  EXPECT_EQ(m.problem_key, "rmsnorm:f32:rows32:cols64:-");
}

TEST(RmsNormRule, PlanCoversEveryWrittenOutNormOnce) {
  Graph g = captured3("rms_llama");
  json plan = test3::plan_checked(g);
  const auto norms = test3::patterns_of(plan, "layernorm");
  ASSERT_EQ(norms.size(), 4u);
  for (const auto& n : norms) EXPECT_EQ(n["layernorm"]["norm"], "rms") << n.dump();
  EXPECT_EQ(test3::patterns_of(plan, "gemm").size(), 4u);
  EXPECT_TRUE(plan["unmatched"].empty()) << plan["unmatched"].dump(1);
  // The core multiply and the weight multiply are not roots of their own: no rejections.
  for (const auto& r : plan["rejections"]) ADD_FAILURE() << r.dump();
  // Written out, eager moves every intermediate: the cost model sees a gain.
  for (const auto& n : norms) EXPECT_GT(n["cost"]["expected_gain_ms"].get<double>(), 0.0) << n.dump();
}

TEST(RmsNormRule, FusedRmsNormOpsAndModule) {
  Graph g = captured3("rms_fused");
  json plan = test3::plan_checked(g);
  EXPECT_EQ(test3::patterns_of(plan, "layernorm").size(), 3u);
  Match module = rms_match(g, "norm");  // nn.RMSNorm(C): eps None is float32's epsilon
  EXPECT_EQ(module.payload["layernorm"]["norm"], "rms");
  EXPECT_DOUBLE_EQ(module.payload["layernorm"]["eps"].get<double>(), std::numeric_limits<float>::epsilon());
  EXPECT_EQ(module.payload["layernorm"]["weight"], "norm_weight");
  EXPECT_TRUE(module.payload["layernorm"]["eager_passes"].is_null());
  Match weighted = rms_match(g, "rms_norm");
  EXPECT_DOUBLE_EQ(weighted.payload["layernorm"]["eps"].get<double>(), 1e-6);
  EXPECT_EQ(weighted.payload["layernorm"]["weight"], "w");
  EXPECT_EQ(weighted.problem_key, "rmsnorm:f32:rows32:cols64:w");
  Match bare = rms_match(g, "rms_norm_1");
  EXPECT_TRUE(bare.payload["layernorm"]["weight"].is_null());
  EXPECT_EQ(bare.problem_key, "rmsnorm:f32:rows32:cols64:-");
}

TEST(RmsNormRule, KeysNeverConfuseRmsNormWithLayerNorm) {
  test::IrBuilder b;
  b.input("x", {32, 64}).param("w", {64});
  b.node("ln", "layer_norm", {"x", "w"}, {32, 64}, {{"normalized_shape", {64}}, {"bias", nullptr}, {"eps", 1e-6}});
  b.node("rms", "rms_norm", {"ln", "w"}, {32, 64}, {{"normalized_shape", {64}}, {"eps", 1e-6}});
  b.output("rms");
  Graph g = parse_graph(b.doc);
  Match ln = rms_match(g, "ln");
  Match rms = rms_match(g, "rms");
  EXPECT_EQ(ln.payload["layernorm"]["norm"], "layer");
  EXPECT_EQ(rms.payload["layernorm"]["norm"], "rms");
  EXPECT_EQ(ln.problem_key, "layernorm:f32:rows32:cols64:w");
  EXPECT_EQ(rms.problem_key, "rmsnorm:f32:rows32:cols64:w");
  EXPECT_NE(ln.shape_class, rms.shape_class);
}

TEST(RmsNormRule, CapturedRejectionsSayWhy) {
  Graph g = captured3("neg_rms");
  EXPECT_EQ(rms_reason(g, "pow_1"), "'mean' reduces over dim 1, not the last dim only (rank 3)");
  EXPECT_EQ(rms_reason(g, "pow_2"), "eps 'eps' added by 'add_1' is not a scalar constant (buffer [1])");
  EXPECT_EQ(rms_reason(g, "pow_3"), "'add_2' adds to the square root: eps must be added before the root");
  EXPECT_EQ(rms_reason(g, "pow_4"),
            "the sum of squares 'sum_1' is not divided by the row length 64 ('add_3' is add): not a mean square");
  // A [T, C] weight: the norm is fused, the multiply stays in PyTorch with the reason.
  Match m = rms_match(g, "pow_5");
  EXPECT_TRUE(m.payload["layernorm"]["weight"].is_null());
  EXPECT_EQ(m.outputs, (std::vector<std::string>{"mul_2"}));
  json plan = test3::plan_checked(g);
  EXPECT_EQ(test3::patterns_of(plan, "layernorm").size(), 1u);
  EXPECT_EQ(test3::unmatched_reason(plan, "mul_3"),
            "weight multiply not fused into rmsnorm 'pow_5': weight 'w_rows' [16, 64] is not a contiguous vector of 64");
  EXPECT_EQ(test3::unmatched_reason(plan, "pow_1"), "'mean' reduces over dim 1, not the last dim only (rank 3)");
}

// x [4, 8, 64] -> square -> mean(attrs) -> + 1e-6 -> rsqrt -> x * r; `x_dtype` / `y_dtype` set
// the input's dtype and the result's (a cast to float32 in between when they differ).
test::IrBuilder written(const json& mean_kwargs, const std::string& x_dtype = "float32",
                        const std::string& y_dtype = "float32") {
  test::IrBuilder b;
  const std::vector<int64_t> s = {4, 8, 64};
  b.input("x", s, x_dtype);
  b.doc["tensors"]["two"] = {{"shape", json::array()}, {"dtype", "int64"}, {"strides", json::array()},
                             {"kind", "const"}, {"value", 2}};
  b.doc["tensors"]["eps"] = {{"shape", json::array()}, {"dtype", "float32"}, {"strides", json::array()},
                             {"kind", "const"}, {"value", 1e-6}};
  std::string in = "x";
  if (x_dtype != y_dtype) {
    b.node("xf", "other:Tensor.float", {"x"}, s, {{"args", json::array()}, {"kwargs", json::object()}}, {}, y_dtype);
    in = "xf";
  }
  const bool keep = mean_kwargs.value("keepdim", false);
  const std::vector<int64_t> stat = keep ? std::vector<int64_t>{4, 8, 1} : std::vector<int64_t>{4, 8};
  b.node("sq", "pow", {in, "two"}, s, {}, {}, y_dtype);
  b.node("ms", "other:Tensor.mean", {"sq"}, stat, {{"args", json::array()}, {"kwargs", mean_kwargs}}, {}, y_dtype);
  b.node("v", "add", {"ms", "eps"}, stat, {{"alpha", 1}}, {}, y_dtype);
  b.node("r", "other:torch.rsqrt", {"v"}, stat, {{"args", {{{"tensor", "v"}}}}, {"kwargs", json::object()}}, {}, y_dtype);
  b.node("y", "mul", {in, "r"}, s, {}, {}, y_dtype);
  b.output("y");
  return b;
}

TEST(RmsNormRule, BuiltGuards) {
  {
    Graph g = parse_graph(written({{"dim", -1}, {"keepdim", true}}).doc);
    Match m = rms_match(g, "sq");
    EXPECT_EQ(m.nodes, (std::vector<std::string>{"sq", "ms", "v", "r", "y"}));
  }
  {
    Graph g = parse_graph(written({{"dim", 2}, {"keepdim", true}}).doc);  // dim 2 of rank 3 is the last
    EXPECT_TRUE(test3::run_at(g, "sq", "layernorm").match);
  }
  Graph nokeep = parse_graph(written({{"dim", -1}}).doc);
  EXPECT_EQ(rms_reason(nokeep, "sq"),
            "'ms' has keepdim=null: the statistic must keep the reduced dim to scale each row");
  Graph all = parse_graph(written({{"keepdim", true}}).doc);
  EXPECT_EQ(rms_reason(all, "sq"), "'ms' reduces over every dim, not the last dim only");
  Graph two_dims = parse_graph(written({{"dim", {1, 2}}, {"keepdim", true}}).doc);
  EXPECT_EQ(rms_reason(two_dims, "sq"), "'ms' reduces over dim [1,2], not the last dim only (rank 3)");
  Graph acc = parse_graph(written({{"dim", -1}, {"keepdim", true}, {"dtype", "float64"}}).doc);
  EXPECT_EQ(rms_reason(acc, "sq"), "'ms' accumulates in dtype \"float64\"");
  // x.float() of a float16 x without the cast back: the result is float32.
  Graph upcast = parse_graph(written({{"dim", -1}, {"keepdim", true}}, "float16", "float32").doc);
  EXPECT_EQ(rms_reason(upcast, "sq"), "output dtype float32 differs from input float16");
  // An intermediate the module also returns cannot be fused away.
  test::IrBuilder out = written({{"dim", -1}, {"keepdim", true}});
  out.output("r");
  Graph shared = parse_graph(out.doc);
  EXPECT_EQ(rms_reason(shared, "sq"), "intermediate 'r' is also a module output");
  // An integer tensor squared is not normalised.
  Graph ints = parse_graph(written({{"dim", -1}, {"keepdim", true}}, "int64", "int64").doc);
  EXPECT_EQ(rms_reason(ints, "sq"), "input 'x' is int64: RMSNorm supports float32, float16, bfloat16");
}

TEST(RmsNormRule, SquaresThatFeedNoReductionAreNotApplicable) {
  test::IrBuilder b;
  b.input("x", {8, 64});
  b.node("sq", "mul", {"x", "x"}, {8, 64});
  b.node("y", "mul", {"sq", "x"}, {8, 64});
  b.output("y");
  Graph g = parse_graph(b.doc);
  for (const char* node : {"sq", "y"}) {
    MatchOutcome o = test3::run_at(g, node, "layernorm");
    EXPECT_FALSE(o.match);
    EXPECT_FALSE(o.applicable) << node << ": " << o.reason;
  }
}

TEST(RmsNormRule, WeightOfAnotherDtypeStaysInPyTorch) {
  test::IrBuilder b = written({{"dim", -1}, {"keepdim", true}});
  b.param("w16", {64}, "float16");
  b.doc["outputs"] = json::array();
  b.node("yw", "mul", {"y", "w16"}, {4, 8, 64});
  b.output("yw");
  Graph g = parse_graph(b.doc);
  Match m = rms_match(g, "sq");
  EXPECT_EQ(m.outputs, (std::vector<std::string>{"y"}));
  ASSERT_TRUE(m.notes.count("yw"));
  EXPECT_EQ(m.notes["yw"], "weight multiply not fused into rmsnorm 'sq': weight 'w16' is float16, input is float32");
}

TEST(RmsNormRule, EagerCostOfAWrittenOutNormExceedsTheFusedOp) {
  Workload fused = layernorm_work(32, 64, true, false, false, DType::Float32);
  Workload written = layernorm_work(32, 64, true, false, false, DType::Float32, 7);
  EXPECT_DOUBLE_EQ(fused.bytes, written.bytes);
  EXPECT_DOUBLE_EQ(fused.eager_bytes, fused.bytes);
  EXPECT_DOUBLE_EQ(written.eager_bytes, 7.0 * 32 * 64 * 4 + 2.0 * 64 * 4);
}

}  // namespace
}  // namespace fact
