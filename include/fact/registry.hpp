// The SQLite registry: every candidate outcome of every realize run, and the
// winner per rule x dtype x arch x problem x tolerance (docs/CONTRACTS.md §8).
// Contract: opening creates or migrates the schema; a database written by a
// newer schema version is refused with a clear error rather than misread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace fact {

inline constexpr int kRegistrySchemaVersion = 1;

// One candidate's outcome in one realize run.
struct CandidateOutcome {
  std::string rule, dtype, arch, problem_key, shape_class;
  double tolerance = 0.0;
  std::string variant, math;
  std::string status;  // winner | ok | wrong | compile_error | cant_implement | launch_error | crash
  std::string reason;
  std::optional<double> median_ms, mean_ms, baseline_ms, max_abs_err, fail_frac;
  std::string toolchain;  // CUTLASS commit + nvcc version: a winner is only valid for its toolchain
  std::string created_at;  // filled when read back (UTC, "YYYY-MM-DD HH:MM:SS"); ignored on write
};

struct Winner {
  std::string rule, dtype, arch, problem_key, shape_class;
  double tolerance = 0.0;
  std::string variant, math;
  double median_ms = 0.0, baseline_ms = 0.0;
  std::string toolchain;   // optional; "" when unknown
  std::string updated_at;  // filled when read back; ignored on write
};

class Registry {
 public:
  // Opens (creating parent folders and schema as needed). Throws std::runtime_error
  // with the path and SQLite's message on failure.
  explicit Registry(const std::string& path);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  static std::string default_path();  // $FACT_REGISTRY or $FACT_CACHE_DIR/registry.sqlite

  void record_outcome(const CandidateOutcome& outcome);
  // Replaces the winner for (rule, dtype, arch, problem_key, tolerance).
  void record_winner(const Winner& winner);

  std::optional<Winner> find_winner(const std::string& rule, const std::string& dtype,
                                    const std::string& arch, const std::string& problem_key,
                                    double tolerance) const;
  // Best known winner of the same shape class (any tolerance <= the given one is not
  // enough: only winners verified at a tolerance at least as tight qualify).
  std::optional<Winner> find_similar(const std::string& rule, const std::string& dtype,
                                     const std::string& arch, const std::string& shape_class,
                                     double tolerance) const;
  std::vector<CandidateOutcome> outcomes_for(const std::string& problem_key) const;
  int schema_version() const;

  // For `fact registry show`: winners (all, or of one problem_key), newest first, and
  // the most recent outcomes of all problems.
  std::vector<Winner> winners(const std::string& problem_key = "") const;
  std::vector<CandidateOutcome> recent_outcomes(int limit) const;
  const std::string& path() const { return path_; }

 private:
  struct Statements;  // prepared statements, finalized before the database closes
  sqlite3* db_ = nullptr;
  std::string path_;
  std::unique_ptr<Statements> stmts_;
};

}  // namespace fact
