// plan_handoffs (src/compose/handoff.cpp): which GEMM -> GEMM and LayerNorm -> GEMM pairs
// hand an operand image over, and the guard that names why a pair does not.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "../../../src/compose/handoff.hpp"
#include "../../../src/compose/report.hpp"
#include "fact/variant.hpp"

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

json node(const std::string& id, std::vector<std::string> inputs, const std::string& op = "linear") {
  return {{"id", id}, {"op", op}, {"inputs", inputs}, {"outputs", {id}}};
}

const char* kLn = "layernorm_f32_c768_w1_v4_plain";
const char* kLnResSum = "layernorm_f32_c768_w1_v4_res_sum";

// A bound LayerNorm pattern: y (rows x cols) = layer_norm(x), or of x + r writing that
// sum too when `sum` is given (a res_sum pattern: outputs sum, then y).
json layernorm(const std::string& id, const std::string& x, const std::string& y, int64_t rows, int64_t cols,
               const std::string& variant, const std::string& sum = "") {
  json ln = {{"rows", rows}, {"cols", cols}, {"eps", 1e-5}, {"element", "float32"},
             {"weight", id + "_w"}, {"bias", id + "_b"},
             {"x", {{"tensor", x}, {"row_stride", cols}}}, {"residual", nullptr},
             {"y", {{"tensor", y}, {"row_stride", cols}}}};
  json outputs = {y};
  if (!sum.empty()) {
    ln["x"] = nullptr;
    ln["residual"] = {{"node", sum},
                      {"a", {{"tensor", x}, {"row_stride", cols}}},
                      {"b", {{"tensor", "r"}, {"row_stride", cols}}},
                      {"sum", {{"tensor", sum}, {"row_stride", cols}}}};
    outputs = {sum, y};
  }
  return {{"id", id}, {"rule", "layernorm"}, {"nodes", outputs}, {"outputs", outputs},
          {"variant", variant}, {"layernorm", ln}};
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

// Appends bound linear `pattern` as the module's last node, its output the module's only one.
void append_linear(json& ir, json& bound, const json& pattern) {
  const std::string id = pattern["id"], out = pattern["outputs"][0];
  ir["nodes"].push_back(node(out, {pattern["gemm"]["a"]["tensor"].get<std::string>(), id + "_w", id + "_b"}));
  ir["outputs"] = {out};
  bound.push_back(pattern);
}

// A chain of three patterns: both pairs hand off, in consumer order: `head` (a
// `head_rule`) -> `middle`, then `middle` -> `tail`; no pair is kept apart.
void expect_chain_handed_off(const json& ir, const json& bound, const std::string& head, const std::string& head_rule,
                             const std::string& middle, const std::string& tail) {
  const json result = plan_handoffs(ir, bound);
  ASSERT_EQ(result["handoffs"].size(), 2u) << result.dump(2);
  EXPECT_TRUE(result["not_handed_off"].empty()) << result.dump(2);
  const json& first = result["handoffs"][0];
  const json& second = result["handoffs"][1];
  EXPECT_EQ(first["producer"], head);
  EXPECT_EQ(first.value("producer_rule", ""), head_rule);
  EXPECT_EQ(first["consumer"], middle);
  EXPECT_EQ(second["producer"], middle);
  EXPECT_EQ(second.value("producer_rule", ""), "gemm");
  EXPECT_EQ(second["consumer"], tail);
  EXPECT_NE(first["tensor"], second["tensor"]);
  const std::string md = compose_report(json::object(), json::object(), json::object(), result);
  EXPECT_NE(md.find(fmt::format("{} → {}: {}'s kernel writes", head, middle, head)), std::string::npos) << md;
  EXPECT_NE(md.find(fmt::format("{} → {}: {}'s kernel writes", middle, tail, middle)), std::string::npos) << md;
}

TEST(Handoff, LinearIntoLinearWithPreWinnersIsHandedOff) {
  Mlp mlp;
  mlp.bound[1]["variant"] = kPreDp;  // dp and persistent launches share the image format
  const json result = plan_handoffs(mlp.ir, mlp.bound);
  ASSERT_EQ(result["handoffs"].size(), 1u) << result.dump(2);
  EXPECT_EQ(result["handoffs"][0]["producer"], "p0");
  EXPECT_EQ(result["handoffs"][0].value("producer_rule", ""), "gemm");
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
    const json result = plan_handoffs(mlp.ir, mlp.bound);
    EXPECT_NE(only_reason(result).find("writes no operand image"), std::string::npos);
    EXPECT_EQ(result["not_handed_off"][0].value("producer_rule", ""), "gemm");
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

TEST(Handoff, GemmChainsHandOffEveryPair) {
  {  // x -> fc (3072 wide) -> proj (768) -> out: fc's pattern reads x, proj's reads fc's image and writes proj's
    Mlp mlp;
    append_linear(mlp.ir, mlp.bound, linear("p2", "proj", "out", 512, 768, 768, kPre));
    expect_chain_handed_off(mlp.ir, mlp.bound, "p0", "gemm", "p1", "p2");
  }
  {  // x -> a (768) -> fc (3072) -> proj: the smaller intermediate in front hands off too
    Mlp mlp;
    mlp.bound[0]["gemm"]["a"]["tensor"] = "a";
    json ir = mlp.ir, bound = json::array();
    ir["nodes"].insert(ir["nodes"].begin(), node("a", {"x", "p9_w", "p9_b"}));
    bound.push_back(linear("p9", "x", "a", 512, 768, 768, kPre));
    for (const json& p : mlp.bound) bound.push_back(p);
    ir["nodes"][1]["inputs"][0] = "a";
    expect_chain_handed_off(ir, bound, "p9", "gemm", "p0", "p1");
  }
}

TEST(Handoff, AChainWhoseMiddleLinkIsGuardedSplitsThere) {
  // x -> fc -> proj -> out where proj's winner writes no image: fc -> proj still hands
  // off, proj -> out is kept apart with the guard's reason.
  Mlp mlp;
  append_linear(mlp.ir, mlp.bound, linear("p2", "proj", "out", 512, 768, 768, kPre));
  mlp.bound[2]["variant"] = kPreBf16x6;
  const json result = plan_handoffs(mlp.ir, mlp.bound);
  ASSERT_EQ(result["handoffs"].size(), 1u) << result.dump(2);
  EXPECT_EQ(result["handoffs"][0]["producer"], "p0");
  EXPECT_EQ(result["handoffs"][0]["consumer"], "p1");
  ASSERT_EQ(result["not_handed_off"].size(), 1u) << result.dump(2);
  EXPECT_EQ(result["not_handed_off"][0]["producer"], "p1");
  EXPECT_NE(result["not_handed_off"][0].value("reason", "").find("image formats differ"), std::string::npos);
}

TEST(Handoff, PatternsThatDoNotChainAreNotListed) {
  Mlp mlp;
  mlp.bound[1]["gemm"]["a"]["tensor"] = "x";  // both read x: no producer / consumer pair
  const json result = plan_handoffs(mlp.ir, mlp.bound);
  EXPECT_TRUE(result["handoffs"].empty());
  EXPECT_TRUE(result["not_handed_off"].empty());
}

// x -> ln (LayerNorm, 768) -> fc (linear 768 -> 3072): a transformer block's ln_2 and c_fc.
struct LnLinear {
  json ir = {{"nodes", {node("ln", {"x", "l0_w", "l0_b"}, "layer_norm"), node("fc", {"ln", "p0_w", "p0_b"})}},
             {"outputs", {"fc"}}};
  json bound = {layernorm("l0", "x", "ln", 512, 768, kLn), linear("p0", "ln", "fc", 512, 3072, 768, kPre)};
};

std::string ln_reason(const LnLinear& pair) {
  const json result = plan_handoffs(pair.ir, pair.bound);
  const std::string reason = only_reason(result);
  if (!result["not_handed_off"].empty()) {
    EXPECT_EQ(result["not_handed_off"][0]["producer"], "l0");
    EXPECT_EQ(result["not_handed_off"][0].value("producer_rule", ""), "layernorm");
    EXPECT_EQ(result["not_handed_off"][0]["tensor"], "ln");
  }
  return reason;
}

TEST(Handoff, LayerNormIntoLinearWithPreWinnerIsHandedOff) {
  for (const char* consumer : {kPre, kPreDp, kPreBf16x6}) {
    LnLinear pair;
    pair.bound[1]["variant"] = consumer;
    const json result = plan_handoffs(pair.ir, pair.bound);
    ASSERT_EQ(result["handoffs"].size(), 1u) << consumer << "\n" << result.dump(2);
    const json& h = result["handoffs"][0];
    EXPECT_EQ(h["producer"], "l0");
    EXPECT_EQ(h.value("producer_rule", ""), "layernorm");
    EXPECT_EQ(h["consumer"], "p0");
    EXPECT_EQ(h["tensor"], "ln");
    EXPECT_EQ(h["format"], operand_image_format(*parse_variant_name(consumer)));
    EXPECT_TRUE(result["not_handed_off"].empty()) << result.dump(2);
  }
  LnLinear pair;
  const json result = plan_handoffs(pair.ir, pair.bound);
  EXPECT_EQ(result["handoffs"][0]["format"], "fact-split-image-v1:f16s:p2:r128:k32:sw64");
  const std::string md = compose_report(json::object(), json::object(), json::object(), result);
  EXPECT_NE(md.find("l0 → p0: l0's kernel writes `ln` as p0's pre-split A operand"), std::string::npos) << md;
}

TEST(Handoff, RmsNormIntoLinearWithPreWinnerIsHandedOff) {
  LnLinear pair;
  pair.bound[0]["variant"] = "rmsnorm_f32_c768_w1_v4_plain";
  pair.bound[0]["layernorm"]["norm"] = "rms";
  pair.bound[0]["layernorm"]["bias"] = nullptr;
  const json result = plan_handoffs(pair.ir, pair.bound);
  ASSERT_EQ(result["handoffs"].size(), 1u) << result.dump(2);
  EXPECT_EQ(result["handoffs"][0].value("producer_rule", ""), "layernorm");
  EXPECT_EQ(result["handoffs"][0]["format"], "fact-split-image-v1:f16s:p2:r128:k32:sw64");
}

TEST(Handoff, LayerNormProducerIsNotALayerNormVariantName) {
  LnLinear pair;
  pair.bound[0]["variant"] = kPre;
  EXPECT_NE(ln_reason(pair).find("winner '" + std::string(kPre) + "' is not a LayerNorm variant name"),
            std::string::npos);
}

TEST(Handoff, LayerNormConsumerReadsNoImage) {
  LnLinear pair;
  pair.bound[1]["variant"] = kCoop;
  EXPECT_NE(ln_reason(pair).find("reads no operand image (only the sm90split pre kernels do)"), std::string::npos);
}

TEST(Handoff, LayerNormWiderThanTheImageWriterWritesNoImage) {
  LnLinear pair;
  pair.ir["nodes"][1]["inputs"] = {"ln", "p0_w", "p0_b"};
  pair.bound = {layernorm("l0", "x", "ln", 512, 4096, "layernorm_f32_c4096_w4_v4_plain"),
                linear("p0", "ln", "fc", 512, 3072, 4096, kPre)};
  const std::string reason = ln_reason(pair);
  EXPECT_NE(reason.find("the LayerNorm winner layernorm_f32_c4096_w4_v4_plain writes no image in the format "
                        "'fact-split-image-v1:f16s:p2:r128:k32:sw64'"),
            std::string::npos)
      << reason;
  EXPECT_NE(reason.find("wider than 2048 columns"), std::string::npos) << reason;
}

TEST(Handoff, LayerNormThatWritesItsResidualSumHasTwoOutputs) {
  LnLinear pair;
  pair.ir["nodes"] = {node("add", {"x", "r"}, "add"), node("ln", {"add", "l0_w", "l0_b"}, "layer_norm"),
                      node("fc", {"ln", "p0_w", "p0_b"}), node("out", {"add", "fc"}, "add")};
  pair.ir["outputs"] = {"out"};
  pair.bound[0] = layernorm("l0", "x", "ln", 512, 768, kLnResSum, "add");
  EXPECT_NE(ln_reason(pair).find("has 2 outputs [\"add\",\"ln\"]"), std::string::npos);
}

TEST(Handoff, LayerNormYReadOutsideTheConsumer) {
  LnLinear pair;
  pair.ir["nodes"].push_back(node("other", {"ln"}));
  EXPECT_NE(ln_reason(pair).find("`ln` is also read by `other`, outside the consumer pattern"), std::string::npos);
}

TEST(Handoff, LayerNormYIsAModuleOutput) {
  LnLinear pair;
  pair.ir["outputs"].push_back("ln");
  EXPECT_NE(ln_reason(pair).find("`ln` is an output of the module"), std::string::npos);
}

TEST(Handoff, LayerNormYReadByTheConsumersEpilogue) {
  LnLinear pair;
  pair.bound[1]["gemm"]["epilogue"]["tensor"] = "ln";
  EXPECT_NE(ln_reason(pair).find("epilogue reads `ln`"), std::string::npos);
}

TEST(Handoff, LayerNormIntoAColumnMajorA) {
  LnLinear pair;
  pair.bound[1] = linear("p0", "ln", "fc", 512, 3072, 768, kPre, "col");
  EXPECT_NE(ln_reason(pair).find("column-major"), std::string::npos);
}

TEST(Handoff, LayerNormIntoABatchedConsumer) {
  LnLinear pair;
  pair.bound[1]["gemm"]["batch"] = 2;
  pair.bound[1]["gemm"]["m"] = 256;  // (the 512 rows as 2 x 256)
  pair.bound[1]["gemm"]["a"]["batch_stride"] = 256 * 768;
  EXPECT_NE(ln_reason(pair).find("batched (batch 2); the LayerNorm's image has no batch dimension"),
            std::string::npos);
}

TEST(Handoff, LayerNormShapesDoNotChain) {
  {
    LnLinear pair;
    pair.bound[1]["gemm"]["m"] = 256;  // (as if the consumer read half of the rows)
    EXPECT_NE(ln_reason(pair).find("shapes do not chain (LayerNorm y 512x768, consumer A 256x768)"),
              std::string::npos);
  }
  {
    LnLinear pair;
    pair.bound[1]["gemm"]["k"] = 384;  // (as if the consumer read half of the columns)
    EXPECT_NE(ln_reason(pair).find("shapes do not chain (LayerNorm y 512x768, consumer A 512x384)"),
              std::string::npos);
  }
}

TEST(Handoff, LayerNormRowStrideIsNotTheConsumersLd) {
  LnLinear pair;
  pair.bound[0]["layernorm"]["y"]["row_stride"] = 772;  // y written into a padded buffer
  EXPECT_NE(ln_reason(pair).find("the consumer's A stride 768 is not the LayerNorm's y row stride 772"),
            std::string::npos);
}

TEST(Handoff, LayerNormPayloadThatDoesNotParse) {
  LnLinear pair;
  pair.bound[0]["layernorm"].erase("rows");
  EXPECT_NE(ln_reason(pair).find("the LayerNorm payload is unreadable"), std::string::npos);
}

TEST(Handoff, LayerNormFcProjChainHandsOffBothPairs) {
  // x -> ln (768) -> fc (3072) -> proj: a pre-LN block's ln_2 -> c_fc -> c_proj. c_fc
  // reads ln's image and writes fc's image for c_proj.
  LnLinear pair;
  append_linear(pair.ir, pair.bound, linear("p1", "fc", "proj", 512, 768, 3072, kPre));
  expect_chain_handed_off(pair.ir, pair.bound, "l0", "layernorm", "p0", "p1");
}

}  // namespace
}  // namespace fact
