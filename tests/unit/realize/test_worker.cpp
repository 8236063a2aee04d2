// Worker protocol: results, crash of one candidate, a worker that cannot start.
#include <gtest/gtest.h>

#include <cstdlib>

#include "fact/worker_client.hpp"
#include "realize_test_util.hpp"

namespace fact {
namespace {

WorkerCommand fake_command(const std::string& rules, const fs::path& log) {
  WorkerCommand c;
  c.argv = {"python3", data_file("fake_worker.py")};
  c.env["FAKE_WORKER_RULES"] = rules;
  c.env["FAKE_WORKER_LOG"] = log.string();
  c.base_timeout_s = 60;
  return c;
}

WorkerJob job_of(const std::vector<std::string>& names) {
  WorkerJob job;
  job.ir = "/abs/graph.json";
  job.pattern = {{"id", "p0"}, {"rule", "gemm"}};
  for (const auto& n : names) job.candidates.push_back({n, "/cache/lib" + n + ".so", "bf16x6"});
  return job;
}

int lines(const fs::path& p) {
  std::ifstream in(p);
  int n = 0;
  std::string s;
  while (std::getline(in, s)) ++n;
  return n;
}

TEST(Worker, JobFileFollowsContract) {
  auto j = worker_job_json(job_of({"gemm_a"}));
  EXPECT_EQ(j["fact_job"], 1);
  EXPECT_EQ(j["ir"], "/abs/graph.json");
  EXPECT_EQ(j["trials"], 5);
  EXPECT_EQ(j["timing"]["warmup"], 10);
  EXPECT_EQ(j["timing"]["reps"], 100);
  EXPECT_EQ(j["candidates"][0]["library"], "/cache/libgemm_a.so");
  EXPECT_EQ(j["candidates"][0]["math"], "bf16x6");
  EXPECT_EQ(j["pattern"]["id"], "p0");
}

TEST(Worker, CrashMarksOnlyTheBegunCandidateAndANewWorkerFinishes) {
  TempDir t;
  const fs::path log = t.path / "starts.log";
  std::vector<std::string> seen;
  auto results = run_worker_job(job_of({"gemm_a", "gemm_b_faults", "gemm_c", "gemm_d_wrong"}),
                                fake_command(R"([["faults", "segv"], ["wrong", "wrong"], ["gemm_c", "ok:0.25"]])", log),
                                (t.path / "jobs").string(), [&](const CandidateResult& r) { seen.push_back(r.name); });
  ASSERT_EQ(results.size(), 4u);
  EXPECT_EQ(results[0].status, "ok");
  EXPECT_EQ(results[0].median_ms.value_or(-1), 1.0);
  EXPECT_EQ(results[1].status, "crash");
  EXPECT_NE(results[1].reason.find("signal 11"), std::string::npos) << results[1].reason;
  EXPECT_NE(results[1].reason.find("illegal memory access"), std::string::npos) << "stderr tail in the reason";
  EXPECT_EQ(results[2].status, "ok");
  EXPECT_EQ(results[2].median_ms.value_or(-1), 0.25);
  EXPECT_EQ(results[3].status, "wrong");
  EXPECT_EQ(results[3].fail_frac.value_or(-1), 0.3);
  EXPECT_EQ(lines(log), 2) << "exactly one replacement worker";
  EXPECT_EQ(seen.size(), 4u);
  // The replacement worker got only the candidates not yet tried.
  std::ifstream in(log);
  std::string first, second;
  std::getline(in, first);
  std::getline(in, second);
  EXPECT_EQ(second, "gemm_c gemm_d_wrong");
}

TEST(Worker, CrashOnLastCandidateStartsNoNewWorker) {
  TempDir t;
  const fs::path log = t.path / "starts.log";
  auto results = run_worker_job(job_of({"gemm_a", "gemm_z_faults"}), fake_command(R"([["faults", "segv"]])", log),
                                (t.path / "jobs").string());
  EXPECT_EQ(results[0].status, "ok");
  EXPECT_EQ(results[1].status, "crash");
  EXPECT_EQ(lines(log), 1);
}

TEST(Worker, WorkerThatCannotStartMarksRemainingCandidates) {
  TempDir t;
  const fs::path log = t.path / "starts.log";
  auto results = run_worker_job(job_of({"gemm_a", "gemm_b"}), fake_command(R"([["gemm", "exit"]])", log),
                                (t.path / "jobs").string());
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    EXPECT_EQ(r.status, "worker_error");
    EXPECT_NE(r.reason.find("exit 1"), std::string::npos) << r.reason;
    EXPECT_NE(r.reason.find("cannot import torch"), std::string::npos) << r.reason;
  }
  EXPECT_EQ(lines(log), 1) << "a worker that makes no progress is not restarted";

  WorkerCommand missing;
  missing.argv = {(t.path / "no-such-python").string()};
  auto none = run_worker_job(job_of({"gemm_a"}), missing, (t.path / "jobs").string());
  EXPECT_EQ(none[0].status, "worker_error");
}

TEST(Worker, DefaultCommandUsesSourcePython) {
  auto c = default_worker_command();
  ASSERT_GE(c.argv.size(), 3u);
  EXPECT_EQ(c.argv[1], "-m");
  EXPECT_EQ(c.argv[2], "fact.worker");
  EXPECT_EQ(c.env["PYTHONPATH"].rfind(std::string(FACT_SOURCE_DIR) + "/python", 0), 0u);
}

}  // namespace
}  // namespace fact
