// The attention rule on captured spelling variants of minGPT causal self-attention
// (tests/fixtures/modules3, captured with python -m fact.capture): which nodes it
// covers, the strides it derives from the head split/merge views, the scale and the
// mask it reads, and the guard reason of each negative case.
#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>

#include "rules3_util.hpp"

namespace fact {
namespace {

using nlohmann::json;
using test3::captured3;

json attention_payload(const std::string& fixture, Match* match = nullptr) {
  Graph g = captured3(fixture);
  json plan = test3::plan_checked(g);
  auto pats = test3::patterns_of(plan, "attention");
  EXPECT_EQ(pats.size(), 1u) << fixture << ": " << plan["rejections"].dump();
  if (pats.size() != 1) return json();
  Match m = test3::rematch(g, pats[0]);
  EXPECT_EQ(json(m.nodes), pats[0]["nodes"]);
  if (match) *match = m;
  return m.payload.value("attention", json());
}

json strides(int64_t b, int64_t h, int64_t s, int64_t d) {
  return json{{"batch", b}, {"head", h}, {"seq", s}, {"dim", d}};
}

void expect_mingpt_shape(const json& a) {
  EXPECT_EQ(a["batch"], 2);
  EXPECT_EQ(a["heads"], 4);
  EXPECT_EQ(a["seq_q"], 16);
  EXPECT_EQ(a["seq_k"], 16);
  EXPECT_EQ(a["head_dim"], 8);
  EXPECT_EQ(a["head_dim_v"], 8);
  EXPECT_NEAR(a["scale"].get<double>(), 1.0 / std::sqrt(8.0), 1e-12);
  EXPECT_EQ(a["causal"], true);
  EXPECT_EQ(a["element"], "float32");
}

TEST(AttentionRule, MinGptExplicitFormFoldsViewsIntoStrides) {
  Match m;
  json a = attention_payload("attn_mingpt", &m);
  ASSERT_TRUE(a.is_object());
  expect_mingpt_shape(a);
  EXPECT_EQ(a["form"], "explicit");
  // q, k, v read the c_attn output [2, 16, 96] at column offsets 0, 32, 64.
  EXPECT_EQ(a["q"], json({{"tensor", "c_attn"}, {"offset", 0}, {"strides", strides(1536, 8, 96, 1)}}));
  EXPECT_EQ(a["k"], json({{"tensor", "c_attn"}, {"offset", 32}, {"strides", strides(1536, 8, 96, 1)}}));
  EXPECT_EQ(a["v"], json({{"tensor", "c_attn"}, {"offset", 64}, {"strides", strides(1536, 8, 96, 1)}}));
  // The output is written straight into the merged [B, T, C] layout (no transpose copy).
  EXPECT_EQ(a["o"], json({{"tensor", "view_3"}, {"offset", 0}, {"strides", strides(512, 8, 32, 1)}}));
  EXPECT_EQ(a["mask"]["kind"], "masked_fill");
  EXPECT_EQ(a["mask"]["buffer"], "bias");
  EXPECT_EQ(a["mask"]["keep"], "nonzero");
  EXPECT_EQ(a["mask"]["fill"], "-inf");
  EXPECT_EQ(a["dropout"]["node"], "dropout");
  for (const char* n : {"split", "transpose_3", "matmul", "mul", "eq", "masked_fill", "softmax", "dropout", "matmul_1",
                        "contiguous", "view_3"}) {
    EXPECT_NE(std::find(m.nodes.begin(), m.nodes.end(), n), m.nodes.end()) << n;
  }
  EXPECT_EQ(m.inputs, (std::vector<std::string>{"c_attn", "bias"}));
  EXPECT_EQ(m.outputs, (std::vector<std::string>{"view_3"}));
  EXPECT_EQ(m.problem_key, "attention:f32:b2:h4:q16:k16:d8:dv8:causal");
}

TEST(AttentionRule, MatmulReshapePermuteChunkDivideVariant) {
  json a = attention_payload("attn_matmul_permute_chunk");
  ASSERT_TRUE(a.is_object());
  expect_mingpt_shape(a);  // scale from dividing by sqrt(d)
  EXPECT_EQ(a["q"]["offset"], 0);
  EXPECT_EQ(a["k"]["offset"], 32);
  EXPECT_EQ(a["v"]["offset"], 64);
  EXPECT_EQ(a["o"]["tensor"], "reshape_3");
  EXPECT_EQ(a["mask"]["keep"], "nonzero");
  EXPECT_TRUE(a["dropout"].is_null());
}

TEST(AttentionRule, BmmWithHeadsFoldedIntoBatchAndAdditiveMask) {
  json a = attention_payload("attn_bmm_additive");
  ASSERT_TRUE(a.is_object());
  // The [B*H, T, d] reshape copies in eager; here it becomes batch and head strides.
  expect_mingpt_shape(a);
  EXPECT_EQ(a["q"]["strides"], strides(1536, 8, 96, 1));
  EXPECT_EQ(a["o"]["strides"], strides(512, 8, 32, 1));
  EXPECT_EQ(a["o"]["tensor"], "view_4");
  EXPECT_EQ(a["mask"]["kind"], "additive");
  EXPECT_EQ(a["mask"]["buffer"], "neg_mask");
  EXPECT_EQ(a["mask"]["keep"], "zero");
}

TEST(AttentionRule, PackedQkvIndexingBoolMaskAndSoftmaxModule) {
  json a = attention_payload("attn_bool_mask_softmax_module");
  ASSERT_TRUE(a.is_object());
  expect_mingpt_shape(a);
  // qkv.view(B, T, 3, H, d).permute(2, 0, 3, 1, 4)[i]: offsets i * C.
  EXPECT_EQ(a["k"], json({{"tensor", "qkv"}, {"offset", 32}, {"strides", strides(1536, 8, 96, 1)}}));
  EXPECT_EQ(a["mask"]["kind"], "masked_fill");
  EXPECT_EQ(a["mask"]["buffer"], "causal");
  EXPECT_EQ(a["mask"]["keep"], "nonzero");  // ~tril: masked where the buffer is false
}

TEST(AttentionRule, MaskBuiltInForwardFromTrilOfOnesNeedsNoVerification) {
  Match m;
  json a = attention_payload("attn_tril_inline", &m);
  ASSERT_TRUE(a.is_object());
  expect_mingpt_shape(a);
  EXPECT_EQ(a["mask"]["source"], "tril(ones)");
  EXPECT_TRUE(a["mask"]["buffer"].is_null());
  EXPECT_FALSE(a["mask"].contains("must_verify"));
  EXPECT_EQ(a["o"]["strides"], strides(512, 8, 32, 1));
  for (const char* n : {"ones", "tril", "invert"}) {
    EXPECT_NE(std::find(m.nodes.begin(), m.nodes.end(), n), m.nodes.end()) << n;
  }
  EXPECT_EQ(m.inputs, (std::vector<std::string>{"qkv"}));
}

TEST(AttentionRule, ScaledDotProductAttention) {
  json a = attention_payload("attn_sdpa");
  ASSERT_TRUE(a.is_object());
  expect_mingpt_shape(a);  // default scale 1/sqrt(d)
  EXPECT_EQ(a["form"], "sdpa");
  EXPECT_EQ(a["mask"], json({{"kind", "is_causal"}}));
  EXPECT_EQ(a["v"]["offset"], 64);
  EXPECT_EQ(a["o"]["tensor"], "view_3");
}

TEST(AttentionRule, MinGptBlockAttentionFires) {
  json a = attention_payload("block_mingpt");
  ASSERT_TRUE(a.is_object());
  expect_mingpt_shape(a);
  EXPECT_EQ(a["q"]["tensor"], "attn_c_attn");
}

// Negative cases: the rule must not fire, and the reason names the guard.
void expect_rejected(const std::string& fixture, const std::string& needle) {
  Graph g = captured3(fixture);
  json plan = test3::plan_checked(g);
  EXPECT_TRUE(test3::patterns_of(plan, "attention").empty()) << fixture;
  bool found = false;
  for (const auto& r : plan["rejections"]) {
    if (r["rule"] == "attention" && r["reason"].get<std::string>().find(needle) != std::string::npos) found = true;
  }
  EXPECT_TRUE(found) << fixture << " lacks '" << needle << "' in " << plan["rejections"].dump(1);
  // The same reason is the unmatched reason of the root it was tried at.
  EXPECT_NE(test3::unmatched_reason(plan, "transpose").find(needle), std::string::npos) << fixture;
}

TEST(AttentionRule, RejectsSoftmaxOverTheWrongDim) {
  expect_rejected("neg_softmax_dim0", "softmax 'softmax' is over dim 0, not the last (key) dim");
}

TEST(AttentionRule, RejectsMaskOverTheWrongDims) {
  expect_rejected("neg_mask_transposed", "passes through transpose 'transpose_4'");
}

TEST(AttentionRule, RejectsAnIntermediateWithASecondReader) {
  expect_rejected("neg_scores_second_reader", "intermediate 'dropout'");
}

TEST(AttentionRule, RejectsDropoutModuleWithUnknownP) {
  expect_rejected("neg_nn_dropout", "nn.Dropout module 'attn_drop'");
}

TEST(AttentionRule, ScaleByATensorIsRejected) {
  test::IrBuilder b;
  b.input("q", {2, 4, 16, 8}).input("k", {2, 4, 16, 8}).input("v", {2, 4, 16, 8}).input("s", {1});
  b.node("kt", "transpose", {"k"}, {2, 4, 8, 16}, {{"dim0", -2}, {"dim1", -1}}, {512, 128, 1, 8});
  b.node("qk", "matmul", {"q", "kt"}, {2, 4, 16, 16});
  b.node("sc", "mul", {"qk", "s"}, {2, 4, 16, 16});
  b.node("sm", "softmax", {"sc"}, {2, 4, 16, 16}, {{"dim", -1}, {"dtype", nullptr}});
  b.node("o", "matmul", {"sm", "v"}, {2, 4, 16, 8}).output("o");
  Graph g = parse_graph(b.doc);
  MatchOutcome o = test3::run_at(g, "kt", "attention");
  ASSERT_FALSE(o.match);
  EXPECT_EQ(o.reason, "mul 'sc' scales the score by a tensor, not a python scalar");
}

TEST(AttentionRule, NonCausalPlainInputsAndTransposeFeedingAGemmIsNotAttention) {
  test::IrBuilder b;
  b.input("q", {2, 4, 16, 8}).input("k", {2, 4, 16, 8}).input("v", {2, 4, 16, 8});
  b.node("kt", "transpose", {"k"}, {2, 4, 8, 16}, {{"dim0", -2}, {"dim1", -1}}, {512, 128, 1, 8});
  b.node("qk", "matmul", {"q", "kt"}, {2, 4, 16, 16});
  b.node("sc", "div", {"qk", "c"}, {2, 4, 16, 16}, {{"rounding_mode", nullptr}});
  b.doc["tensors"]["c"] = {{"shape", json::array()}, {"dtype", "float32"}, {"strides", json::array()},
                           {"kind", "const"}, {"value", 2.0}};
  b.node("sm", "softmax", {"sc"}, {2, 4, 16, 16}, {{"dim", 3}, {"dtype", nullptr}});
  b.node("o", "matmul", {"sm", "v"}, {2, 4, 16, 8}).output("o");
  Graph g = parse_graph(b.doc);
  MatchOutcome o = test3::run_at(g, "kt", "attention");
  ASSERT_TRUE(o.match) << o.reason;
  const json& a = o.match->payload["attention"];
  EXPECT_EQ(a["causal"], false);
  EXPECT_TRUE(a["mask"].is_null());
  EXPECT_DOUBLE_EQ(a["scale"].get<double>(), 0.5);
  EXPECT_EQ(a["k"]["strides"], strides(512, 128, 8, 1));
  EXPECT_EQ(o.match->problem_key, "attention:f32:b2:h4:q16:k16:d8:dv8:full");

  test::IrBuilder plain;
  plain.input("x", {4, 16, 8}).input("w", {4, 16, 8});
  plain.node("wt", "transpose", {"w"}, {4, 8, 16}, {{"dim0", 1}, {"dim1", 2}}, {128, 1, 8});
  plain.node("mm", "matmul", {"x", "wt"}, {4, 16, 16}).output("mm");
  Graph pg = parse_graph(plain.doc);
  MatchOutcome n = test3::run_at(pg, "wt", "attention");
  EXPECT_FALSE(n.match);
  EXPECT_FALSE(n.applicable) << n.reason;
}

TEST(AttentionRule, FoundFromTheValueTransposeWithMaskAddedFirst) {
  // v's head-split transpose comes first in graph order: the rule reaches P.V, walks
  // back through softmax and an additive mask written as mask + score to the score.
  test::IrBuilder b;
  b.input("q", {2, 4, 16, 8}).input("kt", {2, 4, 8, 16}, "float32", {512, 128, 1, 8}).input("vin", {2, 16, 4, 8});
  b.doc["tensors"]["m"] = {{"shape", {32, 32}}, {"dtype", "float32"}, {"strides", {32, 1}}, {"kind", "buffer"},
                           {"target", "m"}};
  b.node("vt", "transpose", {"vin"}, {2, 4, 16, 8}, {{"dim0", 1}, {"dim1", 2}}, {512, 8, 32, 1});
  b.node("qk", "matmul", {"q", "kt"}, {2, 4, 16, 16});
  b.node("ms", "getitem", {"m"}, {16, 16},
         {{"index", json::array({{{"slice", {nullptr, 16, nullptr}}}, {{"slice", {nullptr, 16, nullptr}}}})}}, {32, 1});
  b.node("sc", "add", {"ms", "qk"}, {2, 4, 16, 16}, {{"alpha", 1}});
  b.node("sm", "softmax", {"sc"}, {2, 4, 16, 16}, {{"dim", -1}, {"dtype", nullptr}});
  b.node("o", "matmul", {"sm", "vt"}, {2, 4, 16, 8}).output("o");
  Graph g = parse_graph(b.doc);
  MatchOutcome o = test3::run_at(g, "vt", "attention");
  ASSERT_TRUE(o.match) << o.reason;
  const json& a = o.match->payload["attention"];
  EXPECT_EQ(a["v"], json({{"tensor", "vin"}, {"offset", 0}, {"strides", strides(512, 8, 32, 1)}}));
  EXPECT_EQ(a["k"], json({{"tensor", "kt"}, {"offset", 0}, {"strides", strides(512, 128, 8, 1)}}));
  EXPECT_EQ(a["mask"]["kind"], "additive");
  EXPECT_EQ(a["mask"]["buffer"], "m");
  EXPECT_DOUBLE_EQ(a["scale"].get<double>(), 1.0);
  EXPECT_EQ(o.match->nodes, (std::vector<std::string>{"vt", "qk", "ms", "sc", "sm", "o"}));
}

TEST(AttentionRule, HeadDimMustHaveUnitStride) {
  // k stored d-major ([.., d, T] contiguous): a kernel loading rows of d cannot read it.
  test::IrBuilder b;
  b.input("q", {2, 4, 16, 8}).input("kt", {2, 4, 8, 16}).input("v", {2, 4, 16, 8});
  b.node("qt", "transpose", {"q"}, {2, 16, 4, 8}, {{"dim0", 1}, {"dim1", 2}}, {512, 8, 128, 1});
  b.node("qb", "transpose", {"qt"}, {2, 4, 16, 8}, {{"dim0", 1}, {"dim1", 2}}, {512, 128, 8, 1});
  b.node("qk", "matmul", {"qb", "kt"}, {2, 4, 16, 16});
  b.node("sm", "softmax", {"qk"}, {2, 4, 16, 16}, {{"dim", -1}, {"dtype", nullptr}});
  b.node("o", "matmul", {"sm", "v"}, {2, 4, 16, 8}).output("o");
  Graph g = parse_graph(b.doc);
  MatchOutcome o = test3::run_at(g, "qt", "attention");
  ASSERT_FALSE(o.match);
  EXPECT_EQ(o.reason, "k's head dim has stride 16; a kernel needs unit stride (contiguous rows of d)");
}

TEST(TransformerRules, EveryCaptured3FixturePlansEachNodeExactlyOnce) {
  const std::string dir = std::string(FACT_TEST_DATA_DIR) + "/fixtures/ir/captured3";
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    Graph g = load_graph(entry.path().string());
    json plan = test3::plan_checked(g);
    for (const auto& p : plan["patterns"]) EXPECT_FALSE(p["nodes"].empty()) << entry.path();
    ++count;
  }
  EXPECT_GE(count, 13);
}

TEST(AttentionRule, CostHalvesFlopsWhenCausal) {
  Workload causal = attention_work(2, 4, 16, 16, 8, 8, true, 7, DType::Float32);
  Workload full = attention_work(2, 4, 16, 16, 8, 8, false, 7, DType::Float32);
  EXPECT_DOUBLE_EQ(full.flops, 4.0 * 2 * 4 * 16 * 16 * 8);
  EXPECT_DOUBLE_EQ(causal.flops, full.flops / 2);
  EXPECT_DOUBLE_EQ(causal.bytes, 4.0 * 2 * 4 * 16 * 8 * 4);  // q, k, v, o once
  EXPECT_GT(causal.eager_bytes, causal.bytes);
  EXPECT_DOUBLE_EQ(causal.eager_flops, full.flops);
}

}  // namespace
}  // namespace fact
