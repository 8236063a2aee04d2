// Worker orchestration: job files, JSON-line parsing, crash handling.
#include "fact/worker_client.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include <fmt/format.h>

#include "fact/env.hpp"
#include "fact/log.hpp"
#include "fact/process.hpp"

namespace fs = std::filesystem;

namespace fact {
namespace {

std::optional<double> number(const nlohmann::json& obj, const char* key) {
  if (!obj.contains(key) || !obj.at(key).is_number()) return std::nullopt;
  return obj.at(key).get<double>();
}

std::string tail_lines(const std::string& text, int lines) {
  size_t pos = text.size();
  while (pos > 0 && (text[pos - 1] == '\n' || text[pos - 1] == ' ')) --pos;
  const size_t end = pos;
  int seen = 0;
  while (pos > 0) {
    if (text[pos - 1] == '\n' && ++seen == lines) break;
    --pos;
  }
  std::string out = text.substr(pos, end - pos);
  if (out.size() > 1500) out = "..." + out.substr(out.size() - 1500);
  return out;
}

CandidateResult parse_result(const nlohmann::json& line) {
  CandidateResult r;
  r.name = line.value("name", std::string());
  r.status = line.value("status", std::string("worker_error"));
  r.reason = line.contains("reason") && line.at("reason").is_string() ? line.at("reason").get<std::string>() : "";
  r.median_ms = number(line, "median_ms");
  r.mean_ms = number(line, "mean_ms");
  r.baseline_median_ms = number(line, "baseline_median_ms");
  r.max_abs_err = number(line, "max_abs_err");
  r.fail_frac = number(line, "fail_frac");
  r.raw = line;
  return r;
}

}  // namespace

WorkerCommand default_worker_command() {
  WorkerCommand c;
  c.argv = {env::python(), "-m", "fact.worker"};
  std::string path = (fs::path(source_dir()) / "python").string();
  if (const char* existing = std::getenv("PYTHONPATH"); existing && *existing) path += std::string(":") + existing;
  c.env["PYTHONPATH"] = path;
  return c;
}

nlohmann::json worker_job_json(const WorkerJob& job) {
  nlohmann::json candidates = nlohmann::json::array();
  for (const auto& c : job.candidates)
    candidates.push_back({{"name", c.name}, {"library", c.library}, {"math", c.math}});
  return {{"fact_job", 1},
          {"ir", job.ir},
          {"pattern", job.pattern},
          {"tolerance", job.tolerance},
          {"trials", job.trials},
          {"timing", {{"warmup", job.warmup}, {"reps", job.reps}}},
          {"candidates", candidates}};
}

std::vector<CandidateResult> run_worker_job(const WorkerJob& job, const WorkerCommand& command,
                                            const std::string& job_dir,
                                            const std::function<void(const CandidateResult&)>& on_result) {
  static std::atomic<unsigned> counter{0};
  std::map<std::string, CandidateResult> done;
  std::vector<WorkerCandidate> remaining = job.candidates;
  auto finish = [&](CandidateResult r) {
    if (done.count(r.name)) return;
    if (on_result) on_result(r);
    done[r.name] = std::move(r);
  };

  while (!remaining.empty()) {
    WorkerJob part = job;
    part.candidates = remaining;
    const std::string pattern_id = job.pattern.is_object() ? job.pattern.value("id", std::string("job")) : "job";
    const fs::path job_path =
        fs::path(job_dir) / fmt::format("job-{}-{}-{}.json", pattern_id, ::getpid(), counter++);
    std::error_code ec;
    fs::create_directories(job_dir, ec);
    {
      std::ofstream out(job_path);
      out << worker_job_json(part).dump(2);
      if (!out) {
        for (const auto& c : remaining)
          finish({c.name, "worker_error", "cannot write job file " + job_path.string(), {}, {}, {}, {}, {}, {}});
        break;
      }
    }
    std::set<std::string> wanted;
    for (const auto& c : remaining) wanted.insert(c.name);
    std::string begun;  // candidate begun and not yet finished

    std::vector<std::string> argv = command.argv;
    argv.push_back("--job");
    argv.push_back(job_path.string());
    ProcessOptions opts;
    opts.env = command.env;
    opts.timeout_s = command.base_timeout_s + command.per_candidate_timeout_s * static_cast<double>(remaining.size());
    ProcessResult pr = run_process_streaming(argv, opts, [&](const std::string& text) {
      nlohmann::json line = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (!line.is_object() || !line.contains("event")) {
        if (!text.empty()) log::debug("worker: {}", text);
        return;
      }
      const std::string event = line.value("event", std::string());
      const std::string name = line.value("name", std::string());
      if (event == "begin") {
        begun = name;
      } else if (event == "result") {
        if (!wanted.count(name)) {
          log::warn("worker reported a result for unknown candidate '{}'", name);
          return;
        }
        finish(parse_result(line));
        if (begun == name) begun.clear();
      }
    });

    // Job files are kept only for debugging (FACT_LOG=debug).
    if (!env::debug_logging()) fs::remove(job_path, ec);

    std::vector<WorkerCandidate> next;
    for (const auto& c : remaining)
      if (!done.count(c.name)) next.push_back(c);
    const std::string stderr_tail = tail_lines(pr.error_output, 6);
    if (!begun.empty() && !done.count(begun)) {
      const std::string how = pr.started ? pr.describe() : pr.error;
      finish({begun, "crash",
              fmt::format("worker {} while running this candidate{}{}", how.empty() ? "exited" : how,
                          stderr_tail.empty() ? "" : ": ", stderr_tail),
              {}, {}, {}, {}, {}, {}});
      std::vector<WorkerCandidate> rest;
      for (const auto& c : next)
        if (c.name != begun) rest.push_back(c);
      next = rest;
      if (!next.empty()) log::warn("worker crashed on {}; starting a new worker for {} remaining candidate(s)", begun,
                                   next.size());
    } else if (!next.empty()) {
      // The worker stopped without beginning these: it cannot make progress.
      const std::string how = pr.started ? pr.describe() : ("could not start: " + pr.error);
      const std::string reason =
          fmt::format("worker {} before trying this candidate{}{}", how,
                      stderr_tail.empty() ? "" : ": ", stderr_tail);
      for (const auto& c : next) finish({c.name, "worker_error", reason, {}, {}, {}, {}, {}, {}});
      next.clear();
    }
    remaining = next;
  }

  std::vector<CandidateResult> out;
  for (const auto& c : job.candidates) {
    auto it = done.find(c.name);
    out.push_back(it != done.end() ? it->second
                                   : CandidateResult{c.name, "worker_error", "no result", {}, {}, {}, {}, {}, {}});
  }
  return out;
}

}  // namespace fact
