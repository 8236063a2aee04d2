// Plan-level checks of the issue-3 payloads (needs the planner to write Match::payload
// and to skip MatchOutcome::applicable == false; see build/rules3/planner_payload.patch).
#include <gtest/gtest.h>

#include "rules3_util.hpp"

namespace fact {
namespace {

using nlohmann::json;

TEST(PlanPayloads, BlockPlanCarriesAttentionLayerNormAndEpilogueChains) {
  Graph g = test3::captured3("block_mingpt");
  json plan = test3::plan_checked(g);
  auto att = test3::patterns_of(plan, "attention");
  ASSERT_EQ(att.size(), 1u);
  EXPECT_EQ(att[0]["attention"]["heads"], 4);
  EXPECT_EQ(att[0]["attention"]["q"]["tensor"], "attn_c_attn");
  for (const auto& ln : test3::patterns_of(plan, "layernorm")) EXPECT_TRUE(ln.contains("layernorm"));
  int chains = 0;
  for (const auto& p : test3::patterns_of(plan, "gemm")) {
    ASSERT_TRUE(p.contains("gemm"));
    if (p.contains("epilogue_chain")) {
      ++chains;
      EXPECT_EQ(p["outputs"], json::array({p["epilogue_chain"]["output"]}));
    }
  }
  EXPECT_EQ(chains, 3);
  EXPECT_TRUE(plan["rejections"].empty()) << plan["rejections"].dump(1);
}

TEST(PlanPayloads, NotApplicableTransposesAreNotRejectionsButGuardsAre) {
  json sdpa = test3::plan_checked(test3::captured3("attn_sdpa"));
  EXPECT_TRUE(sdpa["rejections"].empty()) << sdpa["rejections"].dump(1);
  json neg = test3::plan_checked(test3::captured3("neg_softmax_dim0"));
  bool found = false;
  for (const auto& r : neg["rejections"]) {
    if (r["rule"] == "attention") found = true;
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(test3::unmatched_reason(neg, "transpose_4"), "view op, runs in PyTorch");
}

TEST(PlanPayloads, ChainRefusalReachesTheUnmatchedReason) {
  json plan = test3::plan_checked(load_graph(test::fixture("transpose_shared.json")));
  EXPECT_EQ(test3::unmatched_reason(plan, "add"),
            "not absorbed into the GEMM epilogue: add 'add' reads 't' with last-dim stride 64; the epilogue loads rows "
            "with unit stride");
}

}  // namespace
}  // namespace fact
