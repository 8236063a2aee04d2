// The C++ side of the worker protocol (docs/CONTRACTS.md §5): write a job
// file, run `python3 -m fact.worker --job JOB.json` (PYTHONPATH=<source>/python),
// read its JSON lines, and survive candidates that kill the worker.
// Contract: a worker that exits after {"event":"begin"} without the matching
// result marks that candidate "crash" with the exit description; a new worker
// is started for the candidates not yet tried. A worker that dies before
// beginning anything marks the rest "worker_error". Never throws for worker
// failures.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fact {

struct WorkerCandidate {
  std::string name, library, math;
};

struct WorkerJob {
  std::string ir;             // absolute path of graph.json
  nlohmann::json pattern;     // one plan pattern
  double tolerance = 1e-4;
  int trials = 5;
  int warmup = 10, reps = 100;
  std::vector<WorkerCandidate> candidates;
};

struct CandidateResult {
  std::string name;
  std::string status;  // ok | wrong | cant_implement | launch_error | crash | worker_error | ...
  std::string reason;
  std::optional<double> median_ms, mean_ms, baseline_median_ms, max_abs_err, fail_frac;
  nlohmann::json raw;  // the result line as the worker wrote it (null for crash / worker_error)
};

struct WorkerCommand {
  std::vector<std::string> argv;           // "--job PATH" is appended
  std::map<std::string, std::string> env;  // added to the environment
  double base_timeout_s = 180;             // per worker start ...
  double per_candidate_timeout_s = 120;    // ... plus this per candidate it is given
};

// FACT_PYTHON -m fact.worker with PYTHONPATH=<source>/python prepended.
WorkerCommand default_worker_command();

// The job file contents (§5).
nlohmann::json worker_job_json(const WorkerJob& job);

// Runs the job to completion (restarting the worker after crashes). `job_dir`
// receives the job files (removed afterwards unless FACT_LOG=debug). Results
// are in candidate order. on_result is called
// as each candidate finishes (also for crashes).
std::vector<CandidateResult> run_worker_job(const WorkerJob& job, const WorkerCommand& command,
                                            const std::string& job_dir,
                                            const std::function<void(const CandidateResult&)>& on_result = nullptr);

}  // namespace fact
