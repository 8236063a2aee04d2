// fact compose on hand-made realized/plan/IR files in a temporary folder.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "fact/compose.hpp"
#include "../../../src/compose/report.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string slurp(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void spit(const fs::path& path, const std::string& text) { std::ofstream(path) << text; }

class ComposeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("fact_compose_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "cache");
    spit(dir_ / "model.py", "class Model: pass\n");
    spit(dir_ / "cache" / "libgemm_a.so", "not really a library");
    json ir = {{"fact_ir", 1}, {"module", "Model"}, {"source", (dir_ / "model.py").string()},
               {"tensors", json::object()}, {"nodes", json::array()}, {"outputs", json::array()}};
    json gemm = {{"batch", 1}, {"m", 64}, {"n", 32}, {"k", 16},
                 {"a", {{"tensor", "x"}, {"layout", "row"}, {"ld", 16}, {"batch_stride", 0}}},
                 {"b", {{"tensor", "w"}, {"layout", "col"}, {"ld", 16}, {"batch_stride", 0}}},
                 {"d", {{"tensor", "y"}, {"ld", 32}, {"batch_stride", 0}}},
                 {"epilogue", {{"kind", "none"}}}};
    json plan = {{"fact_plan", 1}, {"ir", (dir_ / "graph.json").string()}, {"arch", "sm90a"}, {"tolerance", 1e-4},
                 {"patterns", {{{"id", "p0"}, {"rule", "gemm"}, {"nodes", {"mm"}}, {"gemm", gemm}},
                               {{"id", "p1"}, {"rule", "gemm"}, {"nodes", {"mm_1"}}, {"gemm", gemm}}}},
                 {"unmatched", {{{"node", "cumsum"}, {"op", "other:torch.cumsum"}, {"reason", "no rule has root op"}}}},
                 {"rejections", json::array()}};
    realized_ = {{"fact_realized", 1}, {"plan", (dir_ / "plan.json").string()},
                 {"ir", (dir_ / "graph.json").string()}, {"tolerance", 1e-4},
                 {"patterns",
                  {{{"id", "p0"}, {"status", "realized"}, {"variant", "gemm_a"}, {"math", "bf16x3"},
                    {"library", (dir_ / "cache" / "libgemm_a.so").string()}, {"median_ms", 0.5},
                    {"baseline_median_ms", 2.0}, {"max_abs_err", 1e-6}, {"fail_frac", 0.0},
                    {"candidates", {{{"name", "gemm_a"}, {"status", "ok"}, {"median_ms", 0.5}},
                                    {{"name", "gemm_b"}, {"status", "wrong"}, {"reason", "fail_frac 0.3 > 0.001"}}}}},
                   {{"id", "p1"}, {"status", "fallback"}, {"reason", "no candidate passed 1e-4"},
                    {"candidates", json::array()}}}}};
    spit(dir_ / "graph.json", ir.dump());
    spit(dir_ / "plan.json", plan.dump());
    spit(dir_ / "realized.json", realized_.dump());
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
  json realized_;
};

TEST_F(ComposeTest, WritesSelfContainedModuleFolder) {
  ASSERT_EQ(fact::run_compose({(dir_ / "realized.json").string(), (dir_ / "out").string()}), 0);
  const fs::path out = dir_ / "out";
  EXPECT_TRUE(fs::exists(out / "libs" / "libgemm_a.so"));
  EXPECT_EQ(slurp(out / "model_source.py"), "class Model: pass\n");

  const std::string model_new = slurp(out / "ModelNew.py");
  EXPECT_NE(model_new.find("class ModelNew(_original.Model):"), std::string::npos);
  EXPECT_NE(model_new.find("fact.runtime.install(self"), std::string::npos);
  EXPECT_NE(model_new.find("get_inputs = _original.get_inputs"), std::string::npos);

  json manifest = json::parse(slurp(out / "fact_manifest.json"));
  EXPECT_EQ(manifest["fact_manifest"], 1);
  ASSERT_EQ(manifest["patterns"].size(), 1u) << "only realized patterns are bound";
  EXPECT_EQ(manifest["patterns"][0]["id"], "p0");
  EXPECT_EQ(manifest["patterns"][0]["library"], "libs/libgemm_a.so");
  EXPECT_EQ(manifest["patterns"][0]["math"], "bf16x3");
  EXPECT_EQ(manifest["patterns"][0]["gemm"]["b"]["layout"], "col");

  const std::string report = slurp(out / "report.md");
  EXPECT_NE(report.find("bf16x3"), std::string::npos);
  EXPECT_NE(report.find("4.00×"), std::string::npos) << report;
  EXPECT_NE(report.find("no candidate passed 1e-4"), std::string::npos);
  EXPECT_NE(report.find("fail_frac 0.3 > 0.001"), std::string::npos);
  EXPECT_NE(report.find("| gemm_b | wrong | – |"), std::string::npos) << "a failed candidate has no time";
  EXPECT_NE(report.find("other:torch.cumsum"), std::string::npos);
}

TEST_F(ComposeTest, GemmCoreBindingOverridesThePlanPatternNodes) {
  realized_["patterns"][0]["nodes"] = {"mm"};
  realized_["patterns"][0]["outputs"] = {"y"};
  realized_["patterns"][0]["left_to_pytorch"] = {"add", "gelu"};
  spit(dir_ / "realized.json", realized_.dump());
  ASSERT_EQ(fact::run_compose({(dir_ / "realized.json").string(), (dir_ / "out").string()}), 0);
  json manifest = json::parse(slurp(dir_ / "out" / "fact_manifest.json"));
  EXPECT_EQ(manifest["patterns"][0]["nodes"], json({"mm"}));
  EXPECT_EQ(manifest["patterns"][0]["outputs"], json({"y"}));
  const std::string report = slurp(dir_ / "out" / "report.md");
  EXPECT_NE(report.find("epilogue chain `add`, `gelu` runs in PyTorch"), std::string::npos) << report;
}

TEST_F(ComposeTest, FusedEpilogueChainIsCarriedIntoTheManifestAndReported) {
  const json fused = {{"key", "b45b31c661a89d7e"},
                      {"output", "y"},
                      {"inputs", json::array({{{"name", "l0"}, {"tensor", "x"}, {"kind", "matrix"}, {"ld", 64},
                                               {"batch_stride", 0}, {"abi_leaf", 0}}})}};
  realized_["patterns"][0]["fused_epilogue"] = fused;
  spit(dir_ / "realized.json", realized_.dump());
  ASSERT_EQ(fact::run_compose({(dir_ / "realized.json").string(), (dir_ / "out").string()}), 0);
  json manifest = json::parse(slurp(dir_ / "out" / "fact_manifest.json"));
  EXPECT_EQ(manifest["patterns"][0]["fused_epilogue"], fused);
  EXPECT_FALSE(manifest["patterns"][0].contains("left_to_pytorch"));
  const std::string report = slurp(dir_ / "out" / "report.md");
  EXPECT_NE(report.find("Epilogue chain fused"), std::string::npos) << report;
  EXPECT_NE(report.find("`x` (matrix)"), std::string::npos) << report;
}

TEST_F(ComposeTest, MissingSourceFileIsAClearError) {
  fs::remove(dir_ / "model.py");
  testing::internal::CaptureStderr();
  EXPECT_NE(fact::run_compose({(dir_ / "realized.json").string(), (dir_ / "out").string()}), 0);
  EXPECT_NE(testing::internal::GetCapturedStderr().find("no longer exists"), std::string::npos);
}

TEST_F(ComposeTest, RealizedPatternMissingFromPlanIsRefused) {
  realized_["patterns"][0]["id"] = "p9";
  spit(dir_ / "realized.json", realized_.dump());
  testing::internal::CaptureStderr();
  EXPECT_NE(fact::run_compose({(dir_ / "realized.json").string(), (dir_ / "out").string()}), 0);
  EXPECT_NE(testing::internal::GetCapturedStderr().find("'p9' is not in the plan"), std::string::npos);
}

TEST_F(ComposeTest, WrongVersionIsRefused) {
  realized_["fact_realized"] = 2;
  spit(dir_ / "realized.json", realized_.dump());
  testing::internal::CaptureStderr();
  EXPECT_NE(fact::run_compose({(dir_ / "realized.json").string(), (dir_ / "out").string()}), 0);
  EXPECT_NE(testing::internal::GetCapturedStderr().find("not a version-1 file"), std::string::npos);
}

}  // namespace

namespace fact {
namespace {

// The report names each pattern's problem in its own terms, not just its rule.
TEST(ComposeReport, AttentionAndLayerNormProblemsAreDescribed) {
  const nlohmann::json plan = {
      {"arch", "sm90a"},
      {"patterns",
       {{{"id", "a"}, {"rule", "attention"},
         {"attention", {{"batch", 128}, {"heads", 8}, {"seq_q", 512}, {"seq_k", 512}, {"head_dim", 96}, {"causal", true}}}},
        {{"id", "l"}, {"rule", "layernorm"},
         {"layernorm", {{"rows", 65536}, {"cols", 768}, {"residual", {{"node", "add"}}}}}}}}};
  const nlohmann::json realized = {
      {"tolerance", 1e-4},
      {"patterns", {{{"id", "a"}, {"status", "realized"}, {"candidates", nlohmann::json::array()}},
                    {{"id", "l"}, {"status", "realized"}, {"candidates", nlohmann::json::array()}}}}};
  const std::string md = compose_report(nlohmann::json::object(), plan, realized, nlohmann::json::object());
  EXPECT_NE(md.find("batch 128, 8 heads, 512×512 tokens, head dim 96, causal"), std::string::npos) << md;
  EXPECT_NE(md.find("65536 rows × 768 (residual add fused)"), std::string::npos) << md;
}

}  // namespace
}  // namespace fact
