// SQLite registry (docs/CONTRACTS.md §8). WAL mode and a busy timeout let a
// realize run write while another process (discover, `registry show`) reads.
// A Registry object is not meant to be shared between threads.
#include "fact/registry.hpp"

#include <sqlite3.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include <fmt/format.h>

#include "fact/env.hpp"

namespace fact {

namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outcomes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  rule TEXT NOT NULL, dtype TEXT NOT NULL, arch TEXT NOT NULL,
  problem_key TEXT NOT NULL, shape_class TEXT NOT NULL, tolerance REAL NOT NULL,
  variant TEXT NOT NULL, math TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
  median_ms REAL, mean_ms REAL, baseline_ms REAL, max_abs_err REAL, fail_frac REAL,
  toolchain TEXT NOT NULL,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%S', 'now')));
CREATE INDEX IF NOT EXISTS outcomes_by_problem ON outcomes(problem_key);
CREATE TABLE IF NOT EXISTS winners (
  rule TEXT NOT NULL, dtype TEXT NOT NULL, arch TEXT NOT NULL,
  problem_key TEXT NOT NULL, shape_class TEXT NOT NULL, tolerance REAL NOT NULL,
  variant TEXT NOT NULL, math TEXT NOT NULL,
  median_ms REAL NOT NULL, baseline_ms REAL NOT NULL, toolchain TEXT NOT NULL,
  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%S', 'now')),
  PRIMARY KEY (rule, dtype, arch, problem_key, tolerance));
CREATE INDEX IF NOT EXISTS winners_by_class ON winners(rule, dtype, arch, shape_class);
)sql";

constexpr const char* kOutcomeColumns =
    "rule, dtype, arch, problem_key, shape_class, tolerance, variant, math, status, reason, "
    "median_ms, mean_ms, baseline_ms, max_abs_err, fail_frac, toolchain, created_at";
constexpr const char* kWinnerColumns =
    "rule, dtype, arch, problem_key, shape_class, tolerance, variant, math, median_ms, baseline_ms, toolchain, "
    "updated_at";

// A tolerance read back from SQLite is the same double; the slack only guards
// values that went through a decimal text form elsewhere (JSON, CLI).
constexpr double kToleranceSlack = 1.0 + 1e-9;

}  // namespace

namespace registry_sql {

// One prepared statement; reset after every use so it can run again.
class Stmt {
 public:
  Stmt(sqlite3* db, const std::string& sql, const std::string& path) : db_(db), path_(path) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr) != SQLITE_OK) {
      throw std::runtime_error(fmt::format("registry {}: cannot prepare statement: {}", path, sqlite3_errmsg(db)));
    }
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(int i, const std::string& v) {
    check(sqlite3_bind_text(stmt_, i, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Stmt& bind(int i, double v) {
    check(sqlite3_bind_double(stmt_, i, v));
    return *this;
  }
  Stmt& bind(int i, int v) {
    check(sqlite3_bind_int(stmt_, i, v));
    return *this;
  }
  Stmt& bind(int i, const std::optional<double>& v) {
    check(v ? sqlite3_bind_double(stmt_, i, *v) : sqlite3_bind_null(stmt_, i));
    return *this;
  }
  // true while a row is available.
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    std::string msg = sqlite3_errmsg(db_);
    reset();
    throw std::runtime_error(fmt::format("registry {}: {}", path_, msg));
  }
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  std::string text(int col) const {
    const unsigned char* t = sqlite3_column_text(stmt_, col);
    return t ? reinterpret_cast<const char*>(t) : "";
  }
  double real(int col) const { return sqlite3_column_double(stmt_, col); }
  std::optional<double> opt_real(int col) const {
    if (sqlite3_column_type(stmt_, col) == SQLITE_NULL) return std::nullopt;
    return sqlite3_column_double(stmt_, col);
  }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) throw std::runtime_error(fmt::format("registry {}: bind: {}", path_, sqlite3_errmsg(db_)));
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string path_;
};

// Resets the statement on scope exit, also when a caller throws mid-iteration.
struct ResetGuard {
  Stmt& s;
  ~ResetGuard() { s.reset(); }
};

}  // namespace registry_sql

using registry_sql::ResetGuard;
using registry_sql::Stmt;

struct Registry::Statements {
  Stmt insert_outcome, upsert_winner, find_winner, find_similar, outcomes_for, winners_all, winners_for, recent;
  Statements(sqlite3* db, const std::string& path)
      : insert_outcome(db,
                       fmt::format("INSERT INTO outcomes ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
                                   "?12, ?13, ?14, ?15, ?16, strftime('%Y-%m-%d %H:%M:%S', 'now'))",
                                   kOutcomeColumns),
                       path),
        upsert_winner(db,
                      fmt::format("INSERT OR REPLACE INTO winners ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
                                  "?10, ?11, strftime('%Y-%m-%d %H:%M:%S', 'now'))",
                                  kWinnerColumns),
                      path),
        find_winner(db,
                    fmt::format("SELECT {} FROM winners WHERE rule = ?1 AND dtype = ?2 AND arch = ?3 AND "
                                "problem_key = ?4 AND tolerance <= ?5 ORDER BY median_ms ASC LIMIT 1",
                                kWinnerColumns),
                    path),
        find_similar(db,
                     fmt::format("SELECT {} FROM winners WHERE rule = ?1 AND dtype = ?2 AND arch = ?3 AND "
                                 "shape_class = ?4 AND tolerance <= ?5 ORDER BY CASE WHEN median_ms > 0 AND "
                                 "baseline_ms > 0 THEN baseline_ms / median_ms ELSE 0 END DESC, median_ms ASC LIMIT 1",
                                 kWinnerColumns),
                     path),
        outcomes_for(db, fmt::format("SELECT {} FROM outcomes WHERE problem_key = ?1 ORDER BY id", kOutcomeColumns),
                     path),
        winners_all(db, fmt::format("SELECT {} FROM winners ORDER BY updated_at DESC, problem_key", kWinnerColumns),
                    path),
        winners_for(db,
                    fmt::format("SELECT {} FROM winners WHERE problem_key = ?1 ORDER BY tolerance", kWinnerColumns),
                    path),
        recent(db, fmt::format("SELECT {} FROM outcomes ORDER BY id DESC LIMIT ?1", kOutcomeColumns), path) {}
};

namespace {

void exec(sqlite3* db, const std::string& path, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    throw std::runtime_error(fmt::format("registry {}: {}", path, msg));
  }
}

CandidateOutcome read_outcome(const Stmt& s) {
  CandidateOutcome o;
  o.rule = s.text(0);
  o.dtype = s.text(1);
  o.arch = s.text(2);
  o.problem_key = s.text(3);
  o.shape_class = s.text(4);
  o.tolerance = s.real(5);
  o.variant = s.text(6);
  o.math = s.text(7);
  o.status = s.text(8);
  o.reason = s.text(9);
  o.median_ms = s.opt_real(10);
  o.mean_ms = s.opt_real(11);
  o.baseline_ms = s.opt_real(12);
  o.max_abs_err = s.opt_real(13);
  o.fail_frac = s.opt_real(14);
  o.toolchain = s.text(15);
  o.created_at = s.text(16);
  return o;
}

Winner read_winner(const Stmt& s) {
  Winner w;
  w.rule = s.text(0);
  w.dtype = s.text(1);
  w.arch = s.text(2);
  w.problem_key = s.text(3);
  w.shape_class = s.text(4);
  w.tolerance = s.real(5);
  w.variant = s.text(6);
  w.math = s.text(7);
  w.median_ms = s.real(8);
  w.baseline_ms = s.real(9);
  w.toolchain = s.text(10);
  w.updated_at = s.text(11);
  return w;
}

// The stored schema version; 0 when the database is new (no meta table yet).
int read_schema_version(sqlite3* db) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'schema_version'", -1, &stmt, nullptr) !=
      SQLITE_OK) {
    sqlite3_finalize(stmt);
    return 0;
  }
  int version = 0;
  if (sqlite3_step(stmt) == SQLITE_ROW) {
    const unsigned char* t = sqlite3_column_text(stmt, 0);
    version = t ? std::atoi(reinterpret_cast<const char*>(t)) : 0;
  }
  sqlite3_finalize(stmt);
  return version;
}

}  // namespace

Registry::Registry(const std::string& path) : path_(path) {
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw std::runtime_error(fmt::format("registry {}: cannot open: {}", path, msg));
  }
  try {
    sqlite3_busy_timeout(db_, 10000);
    int existing = read_schema_version(db_);
    if (existing > kRegistrySchemaVersion) {
      throw std::runtime_error(fmt::format(
          "registry {} has schema version {}, newer than this fact understands ({}): upgrade fact or point "
          "FACT_REGISTRY at another file",
          path, existing, kRegistrySchemaVersion));
    }
    // WAL lets readers proceed while a realize run writes; a file system without
    // shared memory keeps the default journal, which is still correct.
    sqlite3_exec(db_, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
    exec(db_, path, "BEGIN IMMEDIATE");
    try {
      exec(db_, path, kSchema);
      exec(db_, path,
           fmt::format("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', '{}')",
                       kRegistrySchemaVersion)
               .c_str());
      exec(db_, path, "COMMIT");
    } catch (...) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
    stmts_ = std::make_unique<Statements>(db_, path);
  } catch (...) {
    stmts_.reset();
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

Registry::~Registry() {
  stmts_.reset();  // finalize before close, or sqlite3_close reports SQLITE_BUSY
  if (db_) sqlite3_close(db_);
}

std::string Registry::default_path() { return env::registry_path(); }

int Registry::schema_version() const { return read_schema_version(db_); }

void Registry::record_outcome(const CandidateOutcome& o) {
  Stmt& s = stmts_->insert_outcome;
  ResetGuard guard{s};
  s.bind(1, o.rule).bind(2, o.dtype).bind(3, o.arch).bind(4, o.problem_key).bind(5, o.shape_class);
  s.bind(6, o.tolerance).bind(7, o.variant).bind(8, o.math).bind(9, o.status).bind(10, o.reason);
  s.bind(11, o.median_ms).bind(12, o.mean_ms).bind(13, o.baseline_ms).bind(14, o.max_abs_err);
  s.bind(15, o.fail_frac).bind(16, o.toolchain);
  s.step();
}

void Registry::record_winner(const Winner& w) {
  Stmt& s = stmts_->upsert_winner;
  ResetGuard guard{s};
  s.bind(1, w.rule).bind(2, w.dtype).bind(3, w.arch).bind(4, w.problem_key).bind(5, w.shape_class);
  s.bind(6, w.tolerance).bind(7, w.variant).bind(8, w.math).bind(9, w.median_ms).bind(10, w.baseline_ms);
  s.bind(11, w.toolchain);
  s.step();
}

std::optional<Winner> Registry::find_winner(const std::string& rule, const std::string& dtype,
                                            const std::string& arch, const std::string& problem_key,
                                            double tolerance) const {
  Stmt& s = stmts_->find_winner;
  ResetGuard guard{s};
  s.bind(1, rule).bind(2, dtype).bind(3, arch).bind(4, problem_key).bind(5, tolerance * kToleranceSlack);
  if (s.step()) return read_winner(s);
  return std::nullopt;
}

std::optional<Winner> Registry::find_similar(const std::string& rule, const std::string& dtype,
                                             const std::string& arch, const std::string& shape_class,
                                             double tolerance) const {
  Stmt& s = stmts_->find_similar;
  ResetGuard guard{s};
  s.bind(1, rule).bind(2, dtype).bind(3, arch).bind(4, shape_class).bind(5, tolerance * kToleranceSlack);
  if (s.step()) return read_winner(s);
  return std::nullopt;
}

std::vector<CandidateOutcome> Registry::outcomes_for(const std::string& problem_key) const {
  Stmt& s = stmts_->outcomes_for;
  ResetGuard guard{s};
  s.bind(1, problem_key);
  std::vector<CandidateOutcome> out;
  while (s.step()) out.push_back(read_outcome(s));
  return out;
}

std::vector<Winner> Registry::winners(const std::string& problem_key) const {
  Stmt& s = problem_key.empty() ? stmts_->winners_all : stmts_->winners_for;
  ResetGuard guard{s};
  if (!problem_key.empty()) s.bind(1, problem_key);
  std::vector<Winner> out;
  while (s.step()) out.push_back(read_winner(s));
  return out;
}

std::vector<CandidateOutcome> Registry::recent_outcomes(int limit) const {
  Stmt& s = stmts_->recent;
  ResetGuard guard{s};
  s.bind(1, limit);
  std::vector<CandidateOutcome> out;
  while (s.step()) out.push_back(read_outcome(s));
  return out;
}

}  // namespace fact
