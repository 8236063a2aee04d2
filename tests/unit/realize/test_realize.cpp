// run_realize end to end with a fake nvcc and a fake worker: statuses, winner,
// registry recording, warm path, fallback reasons in realized.json.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>

#include <nlohmann/json.hpp>

#include "fact/realize.hpp"
#include "fact/realized.hpp"
#include "fact/registry.hpp"
#include "realize_test_util.hpp"

namespace fact {
namespace {

using nlohmann::json;

json gemm_pattern(const std::string& id, const std::string& dtype = "float32") {
  return json::parse(R"({"id": ")" + id + R"(", "rule": "gemm", "root": "mm", "nodes": ["mm"],
    "inputs": ["x", "w"], "outputs": ["mm"], "dtype": "float32", "arch": "sm90a", "priority": 0,
    "problem_key": "gemm:f32:b1:m256:n256:k256:a=row:b=col:ep=none:)" + id + R"(",
    "shape_class": "gemm:f32:b1:m256:n256:k256",
    "gemm": {"batch": 1, "m": 256, "n": 256, "k": 256,
      "a": {"tensor": "x", "layout": "row", "ld": 256, "batch_stride": 0},
      "b": {"tensor": "w", "layout": "col", "ld": 256, "batch_stride": 0},
      "d": {"tensor": "mm", "ld": 256, "batch_stride": 0},
      "epilogue": {"kind": "none", "tensor": null, "ld": 0, "batch_stride": 0, "alpha": 1.0, "beta": 0.0},
      "element_a": ")" + dtype + R"(", "element_b": ")" + dtype + R"(", "element_d": "float32"}})");
}

struct Fixture {
  TempDir t;
  EnvGuard env;
  fs::path plan, out, registry;
  RealizeOptions base;
  Fixture(const std::string& worker_rules, const json& patterns) {
    fake_realize_toolchain(t.path, env, worker_rules, /*jobs=*/2,
                           "if grep -q split_gemm_sm90 \"$src\"; then echo \"$src(1): error: cannot open source file "
                           "\\\"split_gemm_sm90.cuh\\\"\"; exit 1; fi\n");
    env.set("FAKE_WORKER_LOG", (t.path / "worker_starts").string());
    base = write_fake_plan(t.path, patterns);
    plan = base.plan_path;
    out = base.output_path;
    registry = base.registry_path;
  }
  RealizeOptions options() const { return base; }
  json realized() const {
    std::ifstream in(out);
    return json::parse(in);
  }
  int lines(const char* file) const {
    std::ifstream in(t.path / file);
    int n = 0;
    std::string s;
    while (std::getline(in, s)) ++n;
    return n;
  }
};

const json* candidate(const json& pattern, const std::string& substring) {
  for (const auto& c : pattern["candidates"])
    if (c["name"].get<std::string>().find(substring) != std::string::npos) return &c;
  return nullptr;
}

// Candidates within 1% of the fastest tie (timing noise): the most accurate of them wins;
// outside the tie the fastest wins whatever its error.
TEST(Realize, TimingTiesGoToTheMoreAccurateCandidate) {
  const std::string fast = "gemm_sm90split_f16x3_f32_128x128x32_c1x1_pre_dp";
  const std::string accurate = "gemm_sm90_f16x3_f32_128x128x64_c1x1_coop_persistent";
  for (const auto& [accurate_ms, winner] : {std::pair{"1.008", accurate}, std::pair{"1.02", fast}}) {
    Fixture f(R"([[")" + fast + R"(", "ok:1.0:1e-3"], [")" + accurate + R"(", "ok:)" + accurate_ms +
                  R"(:1e-5"], ["gemm", "ok:5.0"]])",
              json::array({gemm_pattern("p0")}));
    ASSERT_EQ(run_realize(f.options()), 0);
    const json p0 = f.realized()["patterns"][0];
    EXPECT_EQ(p0["variant"].get<std::string>().rfind(winner, 0), 0u) << accurate_ms << " ms: " << p0["variant"];
  }
}

// At 1e-2 a relaxed-only math mode is compiled and verified once (its probe, a split-family
// kernel) before its other candidates: a mode whose probe fails verification is skipped
// with the probe named, a mode whose probe passes is compiled in full.
TEST(Realize, RelaxedModesAreProbedBeforeTheirOtherCandidatesCompile) {
  for (const bool bf16_fails : {true, false}) {
    TempDir t;
    EnvGuard env;
    fake_realize_toolchain(t.path, env, bf16_fails ? R"([["_bf16_f32_", "wrong"], ["gemm", "ok:1.0"]])"
                                                   : R"([["gemm", "ok:1.0"]])",
                           /*jobs=*/2, "");
    RealizeOptions o = write_fake_plan(t.path, json::array({gemm_pattern("p0")}));
    o.tolerance = 1e-2;
    ASSERT_EQ(run_realize(o), 0);
    std::ifstream in(o.output_path);
    const json p0 = json::parse(in)["patterns"][0];
    int probes = 0, skipped = 0, bf16 = 0, f16_run = 0;
    std::string probe;
    for (const auto& c : p0["candidates"]) {
      const std::string name = c["name"], status = c["status"];
      if (name.find("_f16_f32_") != std::string::npos) f16_run += status == "ok" || status == "winner";
      if (name.find("_bf16_f32_") == std::string::npos) continue;
      ++bf16;
      if (status == "skipped") {
        ++skipped;
        EXPECT_NE(c["reason"].get<std::string>().find("math mode bf16 failed this pattern's verification with"),
                  std::string::npos) << c["reason"];
      } else if (status == "wrong") {
        ++probes;
        probe = name;
      }
    }
    ASSERT_GE(bf16, 3) << p0.dump(1);
    EXPECT_GE(f16_run, 2) << "another relaxed mode whose probe passed runs in full";
    if (bf16_fails) {
      EXPECT_EQ(probes, 1) << p0.dump(1);
      EXPECT_EQ(probe.rfind("gemm_sm90split_", 0), 0u) << "the probe is the cheap split-family kernel: " << probe;
      EXPECT_EQ(skipped, bf16 - 1);
    } else {
      EXPECT_EQ(probes, 0);
      EXPECT_EQ(skipped, 0) << p0.dump(1);
    }
  }
}

TEST(Realize, ColdRunRecordsEveryOutcomeAndWarmRunReusesOrReverifiesOnlyTheWinner) {
  const std::string fastest = "gemm_sm90_f16x3_f32_128x128x64_c1x1_coop_persistent_sauto_tt_none";
  const std::string crashing = "gemm_sm90split_f16x3_f32_128x128x32_c1x1_coop";
  Fixture f(R"([[")" + fastest + R"(", "ok:0.5"], [")" + crashing + R"(", "segv"], ["sm80_f32", "wrong"]])",
            json::array({gemm_pattern("p0"), json{{"id", "p1"}, {"rule", "layer_norm"}, {"dtype", "float32"}},
                         gemm_pattern("p2", "float16")}));
  ASSERT_EQ(run_realize(f.options()), 0);
  json r = f.realized();
  EXPECT_EQ(r["fact_realized"], 1);
  EXPECT_EQ(r["ir"], (f.t.path / "graph.json").string());
  EXPECT_EQ(r["tolerance"], 1e-4);
  ASSERT_EQ(r["patterns"].size(), 3u);
  const json& p0 = r["patterns"][0];
  EXPECT_EQ(p0["status"], "realized");
  EXPECT_EQ(p0["variant"], fastest);
  EXPECT_EQ(p0["math"], "f16x3");
  EXPECT_EQ(p0["median_ms"], 0.5);
  EXPECT_EQ(p0["baseline_median_ms"], 2.0);
  EXPECT_EQ(p0["from_registry"], false);
  EXPECT_NE(p0["library"].get<std::string>().find("lib" + fastest + ".so"), std::string::npos);
  EXPECT_EQ((*candidate(p0, fastest))["status"], "winner");
  const json* crashed = candidate(p0, crashing);
  ASSERT_NE(crashed, nullptr);
  EXPECT_EQ((*crashed)["status"], "crash");
  EXPECT_NE((*crashed)["reason"].get<std::string>().find("signal 11"), std::string::npos);
  const json* split = candidate(p0, "sm90split_bf16x6_f32_128x128x32_c1x1_ws");  // v2: split_gemm_sm90.cuh
  ASSERT_NE(split, nullptr);
  EXPECT_EQ((*split)["status"], "compile_error");
  EXPECT_NE((*split)["reason"].get<std::string>().find("split_gemm_sm90.cuh"), std::string::npos);
  EXPECT_EQ((*candidate(p0, "sm80_f32"))["status"], "wrong");
  EXPECT_EQ(r["patterns"][1]["status"], "fallback");
  EXPECT_NE(r["patterns"][1]["reason"].get<std::string>().find("layer_norm"), std::string::npos);
  EXPECT_EQ(r["patterns"][2]["status"], "fallback");
  EXPECT_NE(r["patterns"][2]["reason"].get<std::string>().find("float16"), std::string::npos);
  int crashes = 0;
  for (const auto& c : p0["candidates"]) crashes += c["status"] == "crash" ? 1 : 0;
  EXPECT_GE(crashes, 1);
  EXPECT_EQ(f.lines("worker_starts"), 1 + crashes) << "one worker, one replacement per crash";

  {
    Registry reg(f.registry.string());
    auto w = reg.find_winner("gemm", "float32", "sm90a", p0["problem_key"], 1e-4);
    ASSERT_TRUE(w.has_value());
    EXPECT_EQ(w->variant, fastest);
    std::map<std::string, int> statuses;
    for (const auto& o : reg.outcomes_for(p0["problem_key"])) {
      ++statuses[o.status];
      EXPECT_FALSE(o.toolchain.empty());
    }
    EXPECT_EQ(statuses["winner"], 1);
    EXPECT_GE(statuses["crash"], 1);
    EXPECT_GE(statuses["compile_error"], 1);
    EXPECT_GE(statuses["wrong"], 1);
    EXPECT_GE(statuses["ok"], 1);
  }

  // Warm: the recorded winner's library is cached -> no compile, no worker: the
  // winner keeps the verification and timing recorded for that binary.
  const int compiles = f.lines("nvcc_calls");
  size_t outcomes_before = 0;
  {
    Registry reg(f.registry.string());
    outcomes_before = reg.outcomes_for(p0["problem_key"]).size();
  }
  ASSERT_EQ(run_realize(f.options()), 0);
  EXPECT_EQ(f.lines("nvcc_calls"), compiles);
  EXPECT_EQ(f.lines("worker_starts"), 1 + crashes) << "a reused verification starts no worker";
  json reused = f.realized();
  const json& u0 = reused["patterns"][0];
  EXPECT_EQ(u0["status"], "realized");
  EXPECT_EQ(u0["from_registry"], true);
  EXPECT_EQ(u0["verification_reused"], true);
  EXPECT_EQ(u0["median_ms"], 0.5);
  EXPECT_EQ(u0["baseline_median_ms"], 2.0);
  EXPECT_NE((*candidate(u0, fastest))["reason"].get<std::string>().find("recorded in the registry on"),
            std::string::npos);
  {
    Registry reg(f.registry.string());
    EXPECT_EQ(reg.outcomes_for(p0["problem_key"]).size(), outcomes_before) << "nothing new measured, nothing recorded";
  }

  // --reverify: the one cached winner is verified and timed again.
  RealizeOptions again = f.options();
  again.reverify = true;
  ASSERT_EQ(run_realize(again), 0);
  EXPECT_EQ(f.lines("nvcc_calls"), compiles);
  json warm = f.realized();
  const json& w0 = warm["patterns"][0];
  EXPECT_EQ(w0["status"], "realized");
  EXPECT_EQ(w0["from_registry"], true);
  EXPECT_EQ(w0["verification_reused"], false);
  EXPECT_EQ(w0["variant"], fastest);
  EXPECT_EQ((*candidate(w0, fastest))["status"], "winner");
  EXPECT_EQ((*candidate(w0, fastest))["reason"], "") << "the winner was verified again in this run";
  // The report still shows what the winner was chosen over, from the registry.
  const json* recorded_crash = candidate(w0, crashing);
  ASSERT_NE(recorded_crash, nullptr);
  EXPECT_EQ((*recorded_crash)["status"], "crash");
  EXPECT_NE((*recorded_crash)["reason"].get<std::string>().find("recorded in the registry"), std::string::npos);
  EXPECT_EQ((*candidate(w0, "sm80_f32"))["status"], "wrong");
  int winners = 0;
  for (const auto& c : w0["candidates"]) winners += c["status"] == "winner" ? 1 : 0;
  EXPECT_EQ(winners, 1);
  EXPECT_EQ(f.lines("worker_starts"), 2 + crashes);
}

TEST(Realize, NoPassingCandidateFallsBackWithReasons) {
  Fixture f(R"([["gemm", "wrong"]])", json::array({gemm_pattern("p0")}));
  ASSERT_EQ(run_realize(f.options()), 0);
  json r = f.realized();
  const json& p0 = r["patterns"][0];
  EXPECT_EQ(p0["status"], "fallback");
  const std::string reason = p0["reason"];
  EXPECT_NE(reason.find("no candidate passed"), std::string::npos) << reason;
  EXPECT_NE(reason.find("wrong"), std::string::npos) << reason;
  EXPECT_NE(reason.find("compile_error"), std::string::npos) << reason;
  EXPECT_TRUE(p0["median_ms"].is_null());
  Registry reg(f.registry.string());
  EXPECT_FALSE(reg.find_winner("gemm", "float32", "sm90a", p0["problem_key"], 1e-4).has_value());
}

TEST(Realize, PatternWithAnEpilogueChainIsRealizedAsItsGemmCore) {
  json chained = gemm_pattern("p0");
  chained["nodes"] = {"t", "mm", "add", "relu"};
  chained["outputs"] = {"relu"};  // an epilogue chain follows D
  Fixture f(R"([])", json::array({chained}));
  ASSERT_EQ(run_realize(f.options()), 0);
  json r = f.realized();
  const json& p0 = r["patterns"][0];
  EXPECT_EQ(p0["status"], "realized");
  EXPECT_EQ(p0["nodes"], json({"t", "mm"}));
  EXPECT_EQ(p0["outputs"], json({"mm"}));
  EXPECT_EQ(p0["left_to_pytorch"], json({"add", "relu"}));
}

// A GEMM pattern followed by `+ bias` (a row-vector leaf) and a relu, as discover
// writes it (docs/CONTRACTS.md §2.1). `leaf_strides` [256, 1] twice makes the chain
// unsupported (two full-size leaves).
json chained_pattern(const json& leaf_strides = json::array({json::array({0, 1})})) {
  json p = gemm_pattern("p0");
  p["nodes"] = {"mm", "add", "relu"};
  p["outputs"] = {"relu"};
  json leaves = json::object();
  json values = json::array();
  std::string last = "acc";
  for (size_t i = 0; i < leaf_strides.size(); ++i) {
    const std::string l = "l" + std::to_string(i), v = "v" + std::to_string(i);
    leaves[l] = {{"tensor", "bias" + std::to_string(i)}, {"shape", {256, 256}}, {"strides", leaf_strides[i]}};
    values.push_back({{"id", v}, {"op", "add"}, {"args", {{{"ref", last}}, {{"leaf", l}}}}, {"node", "add"}});
    p["inputs"].push_back("bias" + std::to_string(i));
    last = v;
  }
  const std::string result = "v" + std::to_string(values.size());
  values.push_back({{"id", result}, {"op", "relu"}, {"args", {{{"ref", last}}}}, {"node", "relu"}});
  p["epilogue_chain"] = {{"accumulator", "mm"}, {"output", "relu"}, {"shape", {256, 256}}, {"element", "float32"},
                         {"leaves", leaves}, {"values", values}, {"result", result}, {"nodes", {"add", "relu"}},
                         {"key", "00112233aabbccdd"}};
  p["problem_key"] = p["problem_key"].get<std::string>() + ":evt=00112233aabbccdd";
  return p;
}

// sm90 (EVT) and sm90split (element-wise store) variants run the chain; sm80 cannot.
TEST(Realize, EpilogueChainIsFusedIntoSm90AndSplitVariants) {
  Fixture f(R"([])", json::array({chained_pattern()}));
  ASSERT_EQ(run_realize(f.options()), 0);
  const json p0 = f.realized()["patterns"][0];
  EXPECT_EQ(p0["status"], "realized");
  const std::string variant = p0["variant"];
  EXPECT_TRUE(variant.rfind("gemm_sm90_", 0) == 0 || variant.rfind("gemm_sm90split_", 0) == 0) << variant;
  EXPECT_NE(variant.find("_evt00112233"), std::string::npos) << variant;
  EXPECT_FALSE(p0.contains("left_to_pytorch")) << "the kernel computes the whole chain";
  ASSERT_TRUE(p0.contains("fused_epilogue"));
  EXPECT_EQ(p0["fused_epilogue"]["output"], "relu");
  EXPECT_EQ(p0["fused_epilogue"]["inputs"][0]["kind"], "row");
  int evt = 0, split_evt = 0;
  for (const auto& c : p0["candidates"]) {
    const std::string name = c["name"];
    if (c["status"] == "skipped") {
      if (name.rfind("gemm_sm80_", 0) == 0)
        EXPECT_NE(c["reason"].get<std::string>().find("cannot run the epilogue chain"), std::string::npos) << name;
      continue;
    }
    EXPECT_NE(name.find("_evt00112233"), std::string::npos) << "only chained variants are tried: " << name;
    ++evt;
    split_evt += name.rfind("gemm_sm90split_", 0) == 0;
  }
  EXPECT_GE(evt, 1);
  EXPECT_GE(split_evt, 1) << "the split kernels take the chain too";
  // Warm: the recorded EVT winner is rebuilt from the plan's chain, found cached, verified alone.
  const int compiles = f.lines("nvcc_calls");
  ASSERT_EQ(run_realize(f.options()), 0);
  EXPECT_EQ(f.lines("nvcc_calls"), compiles);
  const json warm = f.realized()["patterns"][0];
  EXPECT_EQ(warm["from_registry"], true);
  EXPECT_EQ(warm["variant"], variant);
  EXPECT_TRUE(warm.contains("fused_epilogue"));
}

TEST(Realize, FailingEvtCandidatesFallBackToTheGemmCore) {
  Fixture f(R"([["_evt", "wrong"]])", json::array({chained_pattern()}));
  ASSERT_EQ(run_realize(f.options()), 0);
  const json p0 = f.realized()["patterns"][0];
  EXPECT_EQ(p0["status"], "realized");
  EXPECT_EQ(p0["variant"].get<std::string>().find("_evt"), std::string::npos);
  EXPECT_EQ(p0["nodes"], json({"mm"}));
  EXPECT_EQ(p0["outputs"], json({"mm"}));
  EXPECT_EQ(p0["left_to_pytorch"], json({"add", "relu"}));
  EXPECT_FALSE(p0.contains("fused_epilogue"));
  int wrong = 0;
  for (const auto& c : p0["candidates"])
    if (c["name"].get<std::string>().find("_evt00112233") != std::string::npos)
      wrong += c["status"] == "wrong";  // (the fake nvcc fails v2 split sources: compile_error)
  EXPECT_GE(wrong, 1) << "the chained candidates stay in the report";
}

TEST(Realize, ChainWithNoLegalChainedVariantRealizesItsCoreOnAnotherFamily) {
  json p = chained_pattern();
  p["arch"] = "sm80";  // only the sm80 family, which runs no epilogue chain
  Fixture f(R"([])", json::array({p}));
  ASSERT_EQ(run_realize(f.options()), 0);
  const json p0 = f.realized()["patterns"][0];
  EXPECT_EQ(p0["status"], "realized") << p0.dump(1);
  EXPECT_EQ(p0["variant"].get<std::string>().rfind("gemm_sm80_", 0), 0u) << p0["variant"];
  EXPECT_EQ(p0["left_to_pytorch"], json({"add", "relu"}));
  EXPECT_FALSE(p0.contains("fused_epilogue"));
}

TEST(Realize, UnsupportedChainKeepsTheGemmCorePath) {
  Fixture f(R"([])", json::array({chained_pattern(json::array({json::array({256, 1}), json::array({256, 1})}))}));
  ASSERT_EQ(run_realize(f.options()), 0);
  const json p0 = f.realized()["patterns"][0];
  EXPECT_EQ(p0["status"], "realized");
  EXPECT_EQ(p0["left_to_pytorch"], json({"add", "relu"}));
  for (const auto& c : p0["candidates"]) EXPECT_EQ(c["name"].get<std::string>().find("_evt"), std::string::npos);
}

TEST(Realize, PlainPatternCarriesNoBindingOverride) {
  Fixture f(R"([])", json::array({gemm_pattern("p0")}));
  ASSERT_EQ(run_realize(f.options()), 0);
  EXPECT_FALSE(f.realized()["patterns"][0].contains("left_to_pytorch"));
}

TEST(Realize, CompileOnlyNeedsNoWorker) {
  Fixture f(R"([["gemm", "exit"]])", json::array({gemm_pattern("p0")}));
  auto o = f.options();
  o.compile_only = true;
  ASSERT_EQ(run_realize(o), 0);
  json r = f.realized();
  EXPECT_EQ(r["patterns"][0]["status"], "fallback");
  EXPECT_NE(r["patterns"][0]["reason"].get<std::string>().find("compile-only"), std::string::npos);
  EXPECT_EQ(f.lines("worker_starts"), 0);
  EXPECT_EQ((*candidate(r["patterns"][0], "sm80_f32"))["status"], "compiled");
}

TEST(Realize, FilterAndBadInputs) {
  Fixture f(R"([])", json::array({gemm_pattern("p0")}));
  auto o = f.options();
  o.filter = "sm80_tf32x3";
  ASSERT_EQ(run_realize(o), 0);
  json r = f.realized();
  for (const auto& c : r["patterns"][0]["candidates"])
    if (c["status"] != "skipped") EXPECT_NE(c["name"].get<std::string>().find("sm80_tf32x3"), std::string::npos);
  EXPECT_EQ(r["patterns"][0]["status"], "realized");

  // '|' separates alternatives: either substring keeps a variant.
  o.filter = "no-such-variant|sm80_tf32x3";
  ASSERT_EQ(run_realize(o), 0);
  r = f.realized();
  EXPECT_EQ(r["patterns"][0]["status"], "realized");
  for (const auto& c : r["patterns"][0]["candidates"])
    if (c["status"] != "skipped") EXPECT_NE(c["name"].get<std::string>().find("sm80_tf32x3"), std::string::npos);

  o.filter = "no-such-variant|";
  ASSERT_EQ(run_realize(o), 0);
  EXPECT_NE(f.realized()["patterns"][0]["reason"].get<std::string>().find("filter"), std::string::npos);

  o.plan_path = (f.t.path / "missing.json").string();
  EXPECT_NE(run_realize(o), 0);
  write(f.t.path / "notaplan.json", R"({"hello": 1})");
  o.plan_path = (f.t.path / "notaplan.json").string();
  EXPECT_NE(run_realize(o), 0);

  f.env.set("FACT_NVCC", (f.t.path / "no-nvcc").string());
  o.plan_path = f.plan.string();
  o.filter.clear();
  EXPECT_NE(run_realize(o), 0) << "no nvcc: nothing can be attempted";
}

// A pattern whose fastest verified kernel is not faster than PyTorch (the fake worker's
// eager baseline: 2 ms) stays in PyTorch, with both times in the reason; its winner is
// recorded all the same, so the warm run reuses it, and FACT_SLOWER=keep binds it.
TEST(Realize, KernelNotFasterThanPyTorchFallsBack) {
  Fixture f(R"([["", "ok:2.5"]])", json::array({gemm_pattern("p0")}));
  ASSERT_EQ(run_realize(f.options()), 0);
  json p0 = f.realized()["patterns"][0];
  EXPECT_EQ(p0["status"], "fallback");
  const std::string reason = p0["reason"];
  EXPECT_EQ(reason.rfind("PyTorch is faster on this pattern: eager 2.0000 ms, the fastest verified kernel (", 0), 0u)
      << reason;
  EXPECT_NE(reason.find(") 2.5000 ms"), std::string::npos) << reason;

  f.env.set("FACT_SLOWER", "keep");
  ASSERT_EQ(run_realize(f.options()), 0);
  p0 = f.realized()["patterns"][0];
  EXPECT_EQ(p0["status"], "realized") << p0.dump(1);
  EXPECT_TRUE(p0.value("from_registry", false)) << "the recorded winner is reused";
  EXPECT_DOUBLE_EQ(p0["median_ms"].get<double>(), 2.5);
}

// A pattern the cost model calls memory-bound with no gain gets no kernel built (nothing
// compiled or timed) unless FACT_SLOWER=keep.
TEST(Realize, MemoryBoundPatternWithoutGainBuildsNothing) {
  json p = gemm_pattern("p0");
  p["cost"] = {{"memory_bound", true}, {"expected_gain_ms", 0.0}, {"eager_ms_est", 0.185}, {"best_ms_est", 0.185}};
  Fixture f(R"([])", json::array({p}));
  ASSERT_EQ(run_realize(f.options()), 0);
  json p0 = f.realized()["patterns"][0];
  EXPECT_EQ(p0["status"], "fallback");
  EXPECT_NE(p0["reason"].get<std::string>().find("memory-bound and eager already moves its bytes (cost model: eager "
                                                 "0.185 ms, best kernel 0.185 ms)"),
            std::string::npos)
      << p0["reason"];
  EXPECT_FALSE(fs::exists(f.t.path / "nvcc_calls")) << "nothing may be compiled";

  f.env.set("FACT_SLOWER", "keep");
  ASSERT_EQ(run_realize(f.options()), 0);
  EXPECT_EQ(f.realized()["patterns"][0]["status"], "realized");
}

TEST(Realize, FallbackReasonSummary) {
  std::vector<RealizedCandidate> c{{"a", "wrong", "too far\nmore", {}, {}, {}, ""},
                                   {"b", "wrong", "x", {}, {}, {}, ""},
                                   {"c", "crash", "signal 11", {}, {}, {}, ""},
                                   {"d", "skipped", "alignment", {}, {}, {}, ""}};
  const std::string s = fallback_reason_from_candidates(c);
  EXPECT_NE(s.find("3 tried"), std::string::npos) << s;
  EXPECT_NE(s.find("wrong x2 (e.g. a: too far)"), std::string::npos) << s;
  EXPECT_NE(s.find("crash x1 (e.g. c: signal 11)"), std::string::npos) << s;
  EXPECT_EQ(fallback_reason_from_candidates({c[3]}), "no candidate could be tried");
}

}  // namespace
}  // namespace fact
