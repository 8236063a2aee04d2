// plan_handoffs (src/compose/handoff.cpp): which GEMM pairs hand an operand image over,
// and the guard that names why a pair does not.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "../../../src/compose/handoff.hpp"
#include "../../../src/compose/report.hpp"

namespace fact {
namespace {

using nlohmann::json;

const char* kPre = "gemm_sm90split_f16x3_f32_128x128x32_c1x1_pre_persistent_s6_tt_bias";
const char* kPreDp = "gemm_sm90split_f16x3_f32_128x128x32_c1x1_pre_dp_s6_tt_bias";
const char* kCoop = "gemm_sm90split_f16x3_f32_128x128x32_c1x1_coop_dp_s4_tt_bias";
const char* kPreBf16x6 = "gemm_sm90split_bf16x6_f32_128x128x32_c1x1_pre_dp_s4_tt_bias";

// A bound linear pattern: rows x n = a (rows x k, row-major) . weight^T + bias.
json linear(const std::string& id, const std::string& a, const std::string& out, int64_t rows, int64_t n, int64_t k,
            const std::string& variant, const std::string& a_layout = "row") {
  return {{"id", id},
          {"rule", "gemm"},
          {"nodes", {out}},
          {"outputs", {out}},
          {"variant", variant},
          {"gemm",
           {{"batch", 1}, {"m", rows}, {"n", n}, {"k", k},
            {"a", {{"tensor", a}, {"layout", a_layout}, {"ld", a_layout == "row" ? k : rows}, {"batch_stride", 0}}},
            {"b", {{"tensor", id + "_w"}, {"layout", "col"}, {"ld", k}, {"batch_stride", 0}}},
            {"d", {{"tensor", out}, {"ld", n}, {"batch_stride", 0}}},
            {"epilogue", {{"kind", "bias"}, {"tensor", id + "_b"}, {"ld", 0}, {"batch_stride", 0}}}}}};
}

json node(const std::string& id, std::vector<std::string> inputs) {
  return {{"id", id}, {"op", "linear"}, {"inputs", inputs}, {"outputs", {id}}};
}

// x -> fc (4C) -> proj (C): the MLP shape of a transformer block.
struct Mlp {
  json ir = {{"nodes", {node("fc", {"x", "p0_w", "p0_b"}), node("proj", {"fc", "p1_w", "p1_b"})}},
             {"outputs", {"proj"}}};
  json bound = {linear("p0", "x", "fc", 512, 3072, 768, kPre), linear("p1", "fc", "proj", 512, 768, 3072, kPre)};
};

std::string only_reason(const json& result) {
  EXPECT_TRUE(result["handoffs"].empty()) << result.dump(2);
  EXPECT_EQ(result["not_handed_off"].size(), 1u) << result.dump(2);
  return result["not_handed_off"].empty() ? "" : result["not_handed_off"][0].value("reason", "");
}

TEST(Handoff, LinearIntoLinearWithPreWinnersIsHandedOff) {
  Mlp mlp;
  mlp.bound[1]["variant"] = kPreDp;  // dp and persistent launches share the image format
  const json result = plan_handoffs(mlp.ir, mlp.bound);
  ASSERT_EQ(result["handoffs"].size(), 1u) << result.dump(2);
  EXPECT_EQ(result["handoffs"][0]["producer"], "p0");
  EXPECT_EQ(result["handoffs"][0]["consumer"], "p1");
  EXPECT_EQ(result["handoffs"][0]["tensor"], "fc");
  EXPECT_EQ(result["handoffs"][0]["format"], "fact-split-image-v1:f16s:p2:r128:k32:sw64");
  EXPECT_TRUE(result["not_handed_off"].empty());
  const std::string md = compose_report(json::object(), json::object(), json::object(), result);
  EXPECT_NE(md.find("p0 → p1: p0's kernel writes `fc` as p1's pre-split A operand"), std::string::npos) << md;
}

TEST(Handoff, EachGuardNamesItsReason) {
  {
    Mlp mlp;
    mlp.bound[0]["variant"] = kCoop;
    EXPECT_NE(only_reason(plan_handoffs(mlp.ir, mlp.bound)).find("writes no operand image"), std::string::npos);
  }
  {
    Mlp mlp;
    mlp.bound[1]["variant"] = kPreBf16x6;
    EXPECT_NE(only_reason(plan_handoffs(mlp.ir, mlp.bound)).find("image formats differ"), std::string::npos);
  }
  {
    Mlp mlp;
    mlp.ir["nodes"].push_back(node("other", {"fc"}));
    EXPECT_NE(only_reason(plan_handoffs(mlp.ir, mlp.bound)).find("also read by `other`"), std::string::npos);
  }
  {
    Mlp mlp;
    mlp.ir["outputs"].push_back("fc");
    EXPECT_NE(only_reason(plan_handoffs(mlp.ir, mlp.bound)).find("output of the module"), std::string::npos);
  }
  {
    Mlp mlp;
    mlp.bound[1]["gemm"]["epilogue"]["tensor"] = "fc";  // a residual of its own A
    EXPECT_NE(only_reason(plan_handoffs(mlp.ir, mlp.bound)).find("epilogue reads `fc`"), std::string::npos);
  }
  {
    Mlp mlp;
    mlp.bound[1] = linear("p1", "fc", "proj", 512, 768, 3072, kPre, "col");
    EXPECT_NE(only_reason(plan_handoffs(mlp.ir, mlp.bound)).find("column-major"), std::string::npos);
  }
  {
    Mlp mlp;
    mlp.bound[1]["gemm"]["a"]["ld"] = 3076;  // a padded view of fc
    EXPECT_NE(only_reason(plan_handoffs(mlp.ir, mlp.bound)).find("strides"), std::string::npos);
  }
  {
    Mlp mlp;
    mlp.bound[1]["gemm"]["m"] = 256;  // (as if the consumer read half of the rows)
    EXPECT_NE(only_reason(plan_handoffs(mlp.ir, mlp.bound)).find("shapes do not chain"), std::string::npos);
  }
}

TEST(Handoff, ChainsAreNotComposed) {
  Mlp mlp;
  mlp.ir["nodes"].push_back(node("out", {"proj", "p2_w", "p2_b"}));
  mlp.ir["outputs"] = {"out"};
  mlp.bound.push_back(linear("p2", "proj", "out", 512, 768, 768, kPre));
  const json result = plan_handoffs(mlp.ir, mlp.bound);
  ASSERT_EQ(result["handoffs"].size(), 1u) << result.dump(2);
  EXPECT_EQ(result["handoffs"][0]["producer"], "p0");
  ASSERT_EQ(result["not_handed_off"].size(), 1u);
  EXPECT_EQ(result["not_handed_off"][0]["producer"], "p1");
  EXPECT_NE(result["not_handed_off"][0]["reason"].get<std::string>().find("chains are not composed"),
            std::string::npos);
}

TEST(Handoff, PatternsThatDoNotChainAreNotListed) {
  Mlp mlp;
  mlp.bound[1]["gemm"]["a"]["tensor"] = "x";  // both read x: no producer / consumer pair
  const json result = plan_handoffs(mlp.ir, mlp.bound);
  EXPECT_TRUE(result["handoffs"].empty());
  EXPECT_TRUE(result["not_handed_off"].empty());
}

}  // namespace
}  // namespace fact
