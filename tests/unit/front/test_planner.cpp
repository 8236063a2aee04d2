// Planner and cost model: numbers from the ceilings table, tolerance classes,
// priorities by gain, registry look-ups replacing estimates, unmatched accounting,
// and every captured fixture (if the capture engineer added any) planning cleanly.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "fact/discover.hpp"
#include "fact/registry.hpp"
#include "test_util.hpp"

namespace fact {
namespace {

using nlohmann::json;

json plan_for(const std::string& fixture, std::optional<double> tol = std::nullopt, const Registry* reg = nullptr,
              const std::string& arch = "sm90a") {
  DiscoverOptions o;
  o.tolerance = tol;
  o.arch = arch;
  return build_plan(load_graph(test::fixture(fixture)), o, reg);
}

TEST(CostModel, Square4096Numbers) {
  json plan = plan_for("mm_square_4096.json");
  ASSERT_EQ(plan["patterns"].size(), 1u);
  const json& c = plan["patterns"][0]["cost"];
  EXPECT_NEAR(c["flops"].get<double>(), 1.374e11, 0.001e11);
  EXPECT_DOUBLE_EQ(c["flops"].get<double>(), 2.0 * 4096.0 * 4096.0 * 4096.0);
  EXPECT_DOUBLE_EQ(c["bytes"].get<double>(), 3.0 * 4096 * 4096 * 4);
  // fp32 SIMT at 51 TFLOP/s; the 1e-4 class runs a split mode at 250 TFLOP/s.
  EXPECT_NEAR(c["eager_ms_est"].get<double>(), 1.374e11 / 51e12 * 1e3, 1e-3);
  EXPECT_NEAR(c["best_ms_est"].get<double>(), 1.374e11 / 250e12 * 1e3, 1e-3);
  EXPECT_EQ(c["best_math"], "f16x3");
  EXPECT_NEAR(c["expected_gain_ms"].get<double>(),
              c["eager_ms_est"].get<double>() - c["best_ms_est"].get<double>(), 1e-12);
  EXPECT_EQ(plan["tolerance"].get<double>(), 1e-4);
}

TEST(CostModel, ToleranceClasses) {
  Workload w{2.0 * 4096 * 4096 * 4096, 3.0 * 4096 * 4096 * 4, DType::Float32};
  const DeviceCeilings* h100 = ceilings_for("sm90a");
  ASSERT_NE(h100, nullptr);
  CostEstimate loose = estimate_cost(w, 1e-2, *h100);
  EXPECT_EQ(loose.best_math, "bf16");
  EXPECT_NEAR(loose.best_ms, w.flops / 751e12 * 1e3, 1e-6);
  CostEstimate tight = estimate_cost(w, 1e-4, *h100);
  EXPECT_EQ(tight.best_math, "f16x3");
  CostEstimate strict = estimate_cost(w, 1e-6, *h100);
  EXPECT_EQ(strict.best_math, "f32");
  EXPECT_NEAR(strict.gain_ms, 0.0, 1e-12);
  // 16-bit inputs: eager is already on tensor cores, so no gain is promised.
  Workload half = w;
  half.dtype = DType::BFloat16;
  half.bytes /= 2;
  CostEstimate h = estimate_cost(half, 1e-2, *h100);
  EXPECT_NEAR(h.gain_ms, 0.0, 1e-12);
  EXPECT_EQ(h.eager_math, "bf16");
  EXPECT_FALSE(h.memory_bound) << "4096^3 is compute-bound in any mode";
}

// A matrix-vector product (2048 x 65536 times a vector) is bound by reading A in eager
// and in any kernel: no gain, memory-bound; realize then builds nothing for it.
TEST(CostModel, MatrixVectorIsMemoryBoundWithoutGain) {
  const double m = 2048, k = 65536;
  Workload w{2.0 * m * k, (m * k + k + m) * 4, DType::Float32};
  const DeviceCeilings* h100 = ceilings_for("sm90a");
  ASSERT_NE(h100, nullptr);
  CostEstimate c = estimate_cost(w, 1e-4, *h100);
  EXPECT_TRUE(c.memory_bound);
  EXPECT_NEAR(c.gain_ms, 0.0, 1e-12);
  EXPECT_FALSE(estimate_cost(Workload{2.0 * 4096 * 4096 * 4096, 3.0 * 4096 * 4096 * 4, DType::Float32}, 1e-4, *h100)
                   .memory_bound);
}

TEST(CostModel, MemoryBoundLargeK) {
  json plan = plan_for("largek_256x256x524288.json");
  const json& c = plan["patterns"][0]["cost"];
  const double bytes = (256.0 * 524288 * 2 + 256.0 * 256) * 4;
  EXPECT_DOUBLE_EQ(c["bytes"].get<double>(), bytes);
  // At 250 TFLOP/s the compute takes 0.27 ms; reading 1 GiB at 2.9 TB/s takes 0.37 ms.
  EXPECT_NEAR(c["best_ms_est"].get<double>(), bytes / 2.9e12 * 1e3, 1e-9);
}

TEST(CostModel, ArchTables) {
  json h100 = plan_for("mm_square_4096.json", 1e-4, nullptr, "sm90a");
  json a100 = plan_for("mm_square_4096.json", 1e-4, nullptr, "sm80");
  EXPECT_NEAR(a100["patterns"][0]["cost"]["eager_ms_est"].get<double>(), 1.374e11 / 19.5e12 * 1e3, 1e-2);
  EXPECT_EQ(a100["patterns"][0]["cost"]["best_math"], "tf32x3");
  EXPECT_GT(a100["patterns"][0]["cost"]["eager_ms_est"].get<double>(),
            h100["patterns"][0]["cost"]["eager_ms_est"].get<double>());
  EXPECT_THROW(plan_for("mm_square_4096.json", 1e-4, nullptr, "sm75"), PlanError);
  EXPECT_THROW(plan_for("mm_square_4096.json", -1.0), PlanError);
}

TEST(Planner, DefaultToleranceFollowsOutputDtype) {
  EXPECT_DOUBLE_EQ(plan_for("mm_square_4096.json")["tolerance"].get<double>(), 1e-4);
  EXPECT_DOUBLE_EQ(plan_for("mlp_fp16.json")["tolerance"].get<double>(), 1e-2);
  EXPECT_DOUBLE_EQ(plan_for("mm_square_4096.json", 1e-2)["tolerance"].get<double>(), 1e-2);
}

TEST(Planner, PrioritiesOrderedByGain) {
  // Two GEMMs of different size: the bigger one must come first whatever the graph order.
  test::IrBuilder b;
  b.input("x", {256, 256}).input("y", {2048, 2048});
  b.node("small", "mm", {"x", "x"}, {256, 256}).node("big", "mm", {"y", "y"}, {2048, 2048});
  b.node("sm", "softmax", {"big"}, {2048, 2048}, {{"dim", -1}}).output("small").output("sm");
  DiscoverOptions o;
  json plan = build_plan(parse_graph(b.doc), o, nullptr);
  ASSERT_EQ(plan["patterns"].size(), 2u);
  EXPECT_EQ(plan["patterns"][0]["root"], "big");
  EXPECT_EQ(plan["patterns"][0]["priority"], 0);
  EXPECT_EQ(plan["patterns"][0]["id"], "p1");  // ids follow graph order
  EXPECT_EQ(plan["patterns"][1]["root"], "small");
  EXPECT_EQ(plan["patterns"][1]["priority"], 1);
  EXPECT_GT(plan["patterns"][0]["cost"]["expected_gain_ms"].get<double>(),
            plan["patterns"][1]["cost"]["expected_gain_ms"].get<double>());
  EXPECT_EQ(plan["patterns"][0]["inputs"], json({"y"}));  // x @ x reads x once
  ASSERT_EQ(plan["unmatched"].size(), 1u);
  EXPECT_EQ(plan["unmatched"][0]["reason"], "no rule has root op 'softmax'");
}

TEST(Planner, PlanShapeFollowsContract) {
  json plan = plan_for("mm_x_wt.json");
  EXPECT_EQ(plan["fact_plan"], 1);
  EXPECT_EQ(plan["arch"], "sm90a");
  const json& p = plan["patterns"][0];
  for (const char* key : {"id", "rule", "root", "nodes", "inputs", "outputs", "dtype", "arch", "priority",
                          "problem_key", "shape_class", "gemm", "cost", "registry"}) {
    EXPECT_TRUE(p.contains(key)) << key;
  }
  for (const char* key : {"flops", "bytes", "eager_ms_est", "best_ms_est", "expected_gain_ms"}) {
    EXPECT_TRUE(p["cost"].contains(key)) << key;
  }
  EXPECT_EQ(p["registry"], json({{"known", false}}));
  EXPECT_EQ(p["gemm"]["epilogue"]["tensor"], nullptr);
  EXPECT_EQ(p["nodes"], json({"t", "mm"}));
  EXPECT_TRUE(plan["unmatched"].empty());
  EXPECT_TRUE(plan["rejections"].empty());
}

TEST(Planner, UnmatchedAndRejections) {
  json plan = plan_for("unsupported_ops.json");
  EXPECT_TRUE(plan["patterns"].empty());
  ASSERT_EQ(plan["unmatched"].size(), 4u);
  EXPECT_EQ(plan["unmatched"][0], json({{"node", "view"}, {"op", "view"}, {"reason", "view op, runs in PyTorch"}}));
  EXPECT_EQ(plan["unmatched"][1]["reason"], "no rule has root op 'other:torch.cumsum'");
  EXPECT_EQ(plan["unmatched"][3]["reason"], "no rule has root op 'softmax'");

  // A rule that rejects says why, in the rejections and on the unmatched op.
  json fp64 = plan_for("fp64_mm.json");
  ASSERT_EQ(fp64["rejections"].size(), 1u);
  EXPECT_EQ(fp64["rejections"][0], json({{"node", "mm"}, {"rule", "gemm"},
                                         {"reason", "dtype float64 is not supported (float32, float16, bfloat16)"}}));
  ASSERT_EQ(fp64["unmatched"].size(), 1u);
  EXPECT_EQ(fp64["unmatched"][0]["reason"], "dtype float64 is not supported (float32, float16, bfloat16)");
  // Misaligned extents are left to realize's variants: the GEMM is planned.
  EXPECT_EQ(plan_for("misaligned_k.json")["patterns"].size(), 1u);

  json shared = plan_for("transpose_shared.json");
  ASSERT_EQ(shared["patterns"].size(), 1u);
  ASSERT_EQ(shared["unmatched"].size(), 2u);
  EXPECT_EQ(shared["unmatched"][0]["node"], "t");
  const std::string why = shared["unmatched"][0]["reason"];
  EXPECT_EQ(why.rfind("view op, runs in PyTorch", 0), 0u) << why;
  EXPECT_NE(why.find("2 readers"), std::string::npos) << why;
}

TEST(Planner, RegistryWinnerReplacesEstimate) {
  test::TempDir dir;
  Registry reg(dir.file("r.sqlite"));
  json before = plan_for("mm_square_4096.json", 1e-4, &reg);
  EXPECT_EQ(before["patterns"][0]["registry"]["known"], false);

  Winner w;
  w.rule = "gemm";
  w.dtype = "float32";
  w.arch = "sm90a";
  w.problem_key = before["patterns"][0]["problem_key"];
  w.shape_class = before["patterns"][0]["shape_class"];
  w.tolerance = 1e-4;
  w.variant = "gemm_sm90split_bf16x3_f32_128x256x64_c2x1_coop_persistent_sauto_tt_none";
  w.math = "bf16x3";
  w.median_ms = 0.8;
  w.baseline_ms = 2.77;
  reg.record_winner(w);

  json after = plan_for("mm_square_4096.json", 1e-4, &reg);
  const json& p = after["patterns"][0];
  EXPECT_EQ(p["registry"]["known"], true);
  EXPECT_EQ(p["registry"]["match"], "problem_key");
  EXPECT_EQ(p["registry"]["variant"], w.variant);
  EXPECT_DOUBLE_EQ(p["registry"]["median_ms"].get<double>(), 0.8);
  EXPECT_DOUBLE_EQ(p["cost"]["best_ms_est"].get<double>(), 0.8);
  EXPECT_DOUBLE_EQ(p["cost"]["eager_ms_est"].get<double>(), 2.77);
  EXPECT_NEAR(p["cost"]["expected_gain_ms"].get<double>(), 1.97, 1e-9);
  EXPECT_EQ(p["cost"]["source"], "registry");

  // A winner verified only at the looser 1e-2 does not qualify for a 1e-4 plan.
  test::TempDir dir2;
  Registry loose(dir2.file("r.sqlite"));
  w.tolerance = 1e-2;
  loose.record_winner(w);
  EXPECT_EQ(plan_for("mm_square_4096.json", 1e-4, &loose)["patterns"][0]["registry"]["known"], false);
  EXPECT_EQ(plan_for("mm_square_4096.json", 1e-2, &loose)["patterns"][0]["registry"]["known"], true);
}

TEST(Planner, RegistryShapeClassFallback) {
  test::TempDir dir;
  Registry reg(dir.file("r.sqlite"));
  Winner w;
  w.rule = "gemm";
  w.dtype = "float32";
  w.arch = "sm90a";
  w.problem_key = "gemm:f32:b1:m4000:n4000:k4000:a=row:b=row:ep=none";
  w.shape_class = "gemm:f32:b1:m4k:n4k:k4k";
  w.tolerance = 1e-4;
  w.variant = "v";
  w.math = "bf16x3";
  w.median_ms = 0.7;
  w.baseline_ms = 2.5;
  reg.record_winner(w);
  json plan = plan_for("mm_square_4096.json", 1e-4, &reg);
  const json& p = plan["patterns"][0];
  EXPECT_EQ(p["registry"]["known"], true);
  EXPECT_EQ(p["registry"]["match"], "shape_class");
  EXPECT_EQ(p["registry"]["problem_key"], w.problem_key);
  EXPECT_EQ(p["cost"]["source"], "model");  // another problem's time is not this problem's time
  EXPECT_NE(p["cost"]["best_ms_est"].get<double>(), 0.7);
}

TEST(Planner, RunDiscoverWritesPlanAndReportsErrors) {
  test::TempDir dir;
  DiscoverOptions o;
  o.use_registry = false;
  ASSERT_EQ(run_discover(test::fixture("linear_bias.json"), dir.file("sub/plan.json"), o), 0);
  std::ifstream in(dir.file("sub/plan.json"));
  json plan = json::parse(in);
  EXPECT_EQ(plan["patterns"][0]["gemm"]["epilogue"]["kind"], "bias");
  EXPECT_TRUE(std::filesystem::path(plan["ir"].get<std::string>()).is_absolute());
  EXPECT_EQ(run_discover(dir.file("missing.json"), dir.file("p.json"), o), 2);
  o.arch = "sm75";
  EXPECT_EQ(run_discover(test::fixture("linear_bias.json"), dir.file("p.json"), o), 2);
}

// Every fixture, hand-written or captured, must parse and plan without error,
// and every node must be accounted for exactly once (pattern or unmatched).
TEST(Planner, AllFixturesPlanAndAccountForEveryNode) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (const auto& dir : {test::fixture(""), test::fixture("captured")}) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.path().extension() == ".json") files.push_back(entry.path());
    }
  }
  ASSERT_GE(files.size(), 15u);
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    Graph g = load_graph(f.string());
    json plan;
    ASSERT_NO_THROW(plan = build_plan(g, DiscoverOptions{}, nullptr));
    std::map<std::string, int> seen;
    for (const auto& p : plan["patterns"]) {
      for (const auto& n : p["nodes"]) seen[n.get<std::string>()]++;
      GemmProblem::from_json(p["gemm"]);  // throws if the plan breaks the contract
    }
    for (const auto& u : plan["unmatched"]) {
      seen[u["node"].get<std::string>()]++;
      EXPECT_FALSE(u["reason"].get<std::string>().empty());
    }
    EXPECT_EQ(seen.size(), g.nodes.size());
    for (const auto& [node, count] : seen) EXPECT_EQ(count, 1) << node;
  }
}

}  // namespace
}  // namespace fact
