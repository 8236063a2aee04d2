// The `fact` binary's error paths and the discover/capture/registry commands,
// run as a child process (FACT_BINARY). Errors must be one clear line and exit 2,
// never an abort or an uncaught exception.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "../front/test_util.hpp"
#include "fact/process.hpp"
#include "fact/registry.hpp"

namespace fact {
namespace {

using nlohmann::json;

struct CliRun {
  ProcessResult result;
  std::string out;  // stdout + stderr
};

CliRun fact_cli(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
  args.insert(args.begin(), FACT_BINARY);
  ProcessOptions o;
  o.env = std::move(env);
  // Isolate from the developer's registry.
  if (!o.env.count("FACT_REGISTRY")) o.env["FACT_REGISTRY"] = "/nonexistent-fact-test/registry.sqlite";
  o.timeout_s = 120;
  CliRun r;
  r.result = run_process(args, o);
  r.out = r.result.output;
  return r;
}

// A clean failure: exit 2, no crash, and none of the signs of an unhandled exception.
void expect_clean_error(const CliRun& r, const std::string& fragment) {
  EXPECT_TRUE(r.result.started) << r.result.error;
  EXPECT_FALSE(r.result.signaled) << r.out;
  EXPECT_EQ(r.result.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find(fragment), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("terminate called"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("what():"), std::string::npos) << r.out;
}

std::string write_script(const test::TempDir& dir, const std::string& name, const std::string& body) {
  const std::string path = dir.file(name);
  std::ofstream(path) << "#!/bin/sh\n" << body;
  ::chmod(path.c_str(), 0755);
  return path;
}

TEST(Cli, HelpAndUsage) {
  CliRun help = fact_cli({"--help"});
  EXPECT_EQ(help.result.exit_code, 0);
  for (const char* cmd : {"capture", "discover", "realize", "compose", "optimize", "registry", "env", "doctor"}) {
    EXPECT_NE(help.out.find(cmd), std::string::npos) << cmd;
  }
  CliRun none = fact_cli({});
  EXPECT_EQ(none.result.exit_code, 2);
  CliRun unknown_option = fact_cli({"discover", "--bogus"});
  EXPECT_EQ(unknown_option.result.exit_code, 2);
}

TEST(Cli, DiscoverMissingFile) {
  expect_clean_error(fact_cli({"discover", "/nonexistent/graph.json", "-o", "/tmp/x.json"}), "no such file");
}

TEST(Cli, DiscoverMalformedJson) {
  test::TempDir dir;
  std::ofstream(dir.file("bad.json")) << "{\"fact_ir\": 1, \"tensors\": [";
  expect_clean_error(fact_cli({"discover", dir.file("bad.json"), "-o", dir.file("p.json")}), "malformed JSON");
  EXPECT_FALSE(std::filesystem::exists(dir.file("p.json")));
}

TEST(Cli, DiscoverWrongVersionAndInvalidIr) {
  test::TempDir dir;
  std::ofstream(dir.file("v9.json")) << "{\"fact_ir\": 9, \"tensors\": {}, \"nodes\": [], \"outputs\": []}";
  expect_clean_error(fact_cli({"discover", dir.file("v9.json"), "-o", dir.file("p.json")}), "version 9");
  std::ofstream(dir.file("bad_node.json"))
      << "{\"fact_ir\": 1, \"tensors\": {}, \"nodes\": [{\"id\": \"n\", \"op\": \"mm\", \"inputs\": [\"x\"], "
         "\"outputs\": []}], \"outputs\": []}";
  expect_clean_error(fact_cli({"discover", dir.file("bad_node.json"), "-o", dir.file("p.json")}), "node 'n'");
}

TEST(Cli, DiscoverBadOptions) {
  test::TempDir dir;
  const std::string ir = test::fixture("mm_square_4096.json");
  expect_clean_error(fact_cli({"discover", ir, "-o", dir.file("p.json"), "--arch", "sm75"}), "no cost table");
  CliRun negative = fact_cli({"discover", ir, "-o", dir.file("p.json"), "--tolerance", "-1"});
  EXPECT_EQ(negative.result.exit_code, 2) << negative.out;
}

TEST(Cli, DiscoverWritesValidPlan) {
  test::TempDir dir;
  CliRun r = fact_cli({"discover", test::fixture("linear_bias.json"), "-o", dir.file("plan.json"), "--arch", "sm90a"});
  ASSERT_EQ(r.result.exit_code, 0) << r.out;
  std::ifstream in(dir.file("plan.json"));
  json plan = json::parse(in);
  EXPECT_EQ(plan["fact_plan"], 1);
  EXPECT_EQ(plan["arch"], "sm90a");
  EXPECT_DOUBLE_EQ(plan["tolerance"].get<double>(), 1e-4);
  ASSERT_EQ(plan["patterns"].size(), 1u);
  EXPECT_EQ(plan["patterns"][0]["gemm"]["b"]["layout"], "col");
  EXPECT_NE(r.out.find("1 pattern(s)"), std::string::npos) << r.out;

  CliRun loose = fact_cli({"discover", test::fixture("linear_bias.json"), "-o", dir.file("plan2.json"), "--arch",
                        "sm90a", "--tolerance", "0.01"});
  ASSERT_EQ(loose.result.exit_code, 0) << loose.out;
  std::ifstream in2(dir.file("plan2.json"));
  EXPECT_EQ(json::parse(in2)["patterns"][0]["cost"]["best_math"], "bf16");
}

TEST(Cli, DiscoverUsesRegistryWinner) {
  test::TempDir dir;
  const std::string reg_path = dir.file("reg.sqlite");
  {
    Registry reg(reg_path);
    Winner w;
    w.rule = "gemm";
    w.dtype = "float32";
    w.arch = "sm90a";
    w.problem_key = "gemm:f32:b1:m4096:n4096:k4096:a=row:b=row:ep=none";
    w.shape_class = "gemm:f32:b1:m4k:n4k:k4k";
    w.tolerance = 1e-4;
    w.variant = "some_variant";
    w.math = "bf16x3";
    w.median_ms = 0.9;
    w.baseline_ms = 2.8;
    reg.record_winner(w);
  }
  CliRun r = fact_cli({"discover", test::fixture("mm_square_4096.json"), "-o", dir.file("p.json"), "--arch", "sm90a"},
                   {{"FACT_REGISTRY", reg_path}});
  ASSERT_EQ(r.result.exit_code, 0) << r.out;
  std::ifstream in(dir.file("p.json"));
  json plan = json::parse(in);
  EXPECT_EQ(plan["patterns"][0]["registry"]["variant"], "some_variant");
  CliRun off = fact_cli({"discover", test::fixture("mm_square_4096.json"), "-o", dir.file("p2.json"), "--arch", "sm90a",
                      "--no-registry"},
                     {{"FACT_REGISTRY", reg_path}});
  ASSERT_EQ(off.result.exit_code, 0) << off.out;
  std::ifstream in2(dir.file("p2.json"));
  EXPECT_EQ(json::parse(in2)["patterns"][0]["registry"]["known"], false);
}

TEST(Cli, OtherStagesRejectMissingInputs) {
  expect_clean_error(fact_cli({"realize", "/nonexistent/plan.json", "-o", "/tmp/r.json"}), "no such file");
  expect_clean_error(fact_cli({"compose", "/nonexistent/realized.json", "-o", "/tmp/out"}), "no such file");
  expect_clean_error(fact_cli({"capture", "/nonexistent/model.py", "-o", "/tmp/g.json"}), "no such file");
  expect_clean_error(fact_cli({"optimize", "/nonexistent/model.py"}), "no such file");
}

TEST(Cli, LaterStagesRejectMalformedJson) {
  test::TempDir dir;
  std::ofstream(dir.file("bad.json")) << "{not json";
  CliRun realize = fact_cli({"realize", dir.file("bad.json"), "-o", dir.file("r.json")});
  EXPECT_EQ(realize.result.exit_code, 2) << realize.out;
  EXPECT_FALSE(realize.result.signaled);
  CliRun compose = fact_cli({"compose", dir.file("bad.json"), "-o", dir.file("out")});
  EXPECT_EQ(compose.result.exit_code, 2) << compose.out;
  EXPECT_FALSE(compose.result.signaled);
}

TEST(Cli, OptimizeStopsAtFailingCapture) {
  test::TempDir dir;
  std::ofstream(dir.file("model.py")) << "x = 1\n";
  const std::string python = write_script(dir, "python", "echo \"$3 has no class Model\" >&2\nexit 1\n");
  CliRun r = fact_cli({"optimize", dir.file("model.py"), "-o", dir.file("out")}, {{"FACT_PYTHON", python}});
  EXPECT_EQ(r.result.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("[1/4] capture"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("has no class Model"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("capture failed"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("[2/4]"), std::string::npos) << r.out;
  EXPECT_TRUE(std::filesystem::is_directory(dir.file("out/work")));
}

TEST(Cli, CaptureRelaysPythonMessage) {
  test::TempDir dir;
  std::ofstream(dir.file("model.py")) << "x = 1\n";
  const std::string python = write_script(dir, "python", "echo \"$3 has no class Model\" >&2\nexit 1\n");
  CliRun r = fact_cli({"capture", dir.file("model.py"), "-o", dir.file("g.json")}, {{"FACT_PYTHON", python}});
  expect_clean_error(r, "model.py has no class Model");
}

TEST(Cli, CaptureValidatesWhatPythonWrote) {
  test::TempDir dir;
  std::ofstream(dir.file("model.py")) << "x = 1\n";
  // A stand-in capture: checks the contract's command line and writes a fixture.
  const std::string good = write_script(
      dir, "python_good",
      "[ \"$1\" = -m ] && [ \"$2\" = fact.capture ] && [ \"$4\" = -o ] || exit 9\n"
      "case \"$PYTHONPATH\" in *python*) ;; *) exit 8;; esac\n"
      "cp " + test::fixture("mm_x_wt.json") + " \"$5\"\n");
  CliRun ok = fact_cli({"capture", dir.file("model.py"), "-o", dir.file("g.json")}, {{"FACT_PYTHON", good}});
  EXPECT_EQ(ok.result.exit_code, 0) << ok.out;
  EXPECT_TRUE(std::filesystem::exists(dir.file("g.json")));

  const std::string broken = write_script(dir, "python_broken", "echo '{\"fact_ir\": 1}' > \"$5\"\n");
  CliRun bad = fact_cli({"capture", dir.file("model.py"), "-o", dir.file("g2.json")}, {{"FACT_PYTHON", broken}});
  EXPECT_EQ(bad.result.exit_code, 1) << bad.out;
  EXPECT_NE(bad.out.find("invalid graph"), std::string::npos) << bad.out;

  CliRun missing = fact_cli({"capture", dir.file("model.py"), "-o", dir.file("g3.json")},
                         {{"FACT_PYTHON", "/nonexistent/python3"}});
  expect_clean_error(missing, "FACT_PYTHON");
}

TEST(Cli, EnvListsKnobs) {
  CliRun r = fact_cli({"env"}, {{"FACT_JOBS", "3"}});
  EXPECT_EQ(r.result.exit_code, 0);
  EXPECT_NE(r.out.find("FACT_JOBS=3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("FACT_CACHE_DIR="), std::string::npos);
  EXPECT_NE(r.out.find("CUTLASS_DIR="), std::string::npos);
}

TEST(Cli, RegistryShow) {
  test::TempDir dir;
  const std::string reg_path = dir.file("reg.sqlite");
  CliRun empty = fact_cli({"registry", "show"}, {{"FACT_REGISTRY", reg_path}});
  EXPECT_EQ(empty.result.exit_code, 0) << empty.out;
  EXPECT_NE(empty.out.find("does not exist yet"), std::string::npos) << empty.out;
  {
    Registry reg(reg_path);
    Winner w;
    w.rule = "gemm";
    w.dtype = "float32";
    w.arch = "sm90a";
    w.problem_key = "key-one";
    w.shape_class = "c";
    w.tolerance = 1e-4;
    w.variant = "the_winning_variant";
    w.math = "bf16x3";
    w.median_ms = 1.0;
    w.baseline_ms = 3.0;
    reg.record_winner(w);
    CandidateOutcome o;
    o.problem_key = "key-one";
    o.variant = "a_loser";
    o.status = "wrong";
    o.reason = "fail_frac too high";
    reg.record_outcome(o);
  }
  CliRun all = fact_cli({"registry", "show"}, {{"FACT_REGISTRY", reg_path}});
  EXPECT_EQ(all.result.exit_code, 0) << all.out;
  EXPECT_NE(all.out.find("the_winning_variant"), std::string::npos) << all.out;
  EXPECT_NE(all.out.find("3.00x"), std::string::npos) << all.out;
  EXPECT_NE(all.out.find("fail_frac too high"), std::string::npos) << all.out;
  CliRun one = fact_cli({"registry", "show", "--problem", "other-key"}, {{"FACT_REGISTRY", reg_path}});
  EXPECT_EQ(one.result.exit_code, 0);
  EXPECT_EQ(one.out.find("the_winning_variant"), std::string::npos) << one.out;
}

TEST(Cli, DoctorReportsEachComponent) {
  CliRun r = fact_cli({"doctor"}, {{"CUTLASS_DIR", "/nonexistent/cutlass"}});
  EXPECT_FALSE(r.result.signaled);
  EXPECT_EQ(r.result.exit_code, 1) << r.out;  // CUTLASS is missing by construction
  for (const char* what : {"nvcc", "CUTLASS", "GPU", "python"}) EXPECT_NE(r.out.find(what), std::string::npos) << what;
  EXPECT_NE(r.out.find("cutlass-extract"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace fact
