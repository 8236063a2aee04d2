// Registry on a real temporary SQLite file: round trips, winner replacement,
// tolerance qualification, shape-class look-up, and refusal of a newer schema.
#include <gtest/gtest.h>

#include <sqlite3.h>

#include <filesystem>
#include <fstream>

#include "fact/registry.hpp"
#include "test_util.hpp"

namespace fact {
namespace {

Winner make_winner(const std::string& key, double median, double tol = 1e-4) {
  Winner w;
  w.rule = "gemm";
  w.dtype = "float32";
  w.arch = "sm90a";
  w.problem_key = key;
  w.shape_class = "gemm:f32:b1:m4k:n4k:k4k";
  w.tolerance = tol;
  w.variant = "variant_" + std::to_string(median);
  w.math = "bf16x3";
  w.median_ms = median;
  w.baseline_ms = 2.7;
  w.toolchain = "cutlass dcf215af nvcc 13.0";
  return w;
}

TEST(Registry, CreatesSchemaAndParentFolders) {
  test::TempDir dir;
  const std::string path = dir.file("a/b/registry.sqlite");
  {
    Registry reg(path);
    EXPECT_EQ(reg.schema_version(), kRegistrySchemaVersion);
  }
  EXPECT_TRUE(std::filesystem::exists(path));
  Registry again(path);  // reopening an existing database works
  EXPECT_EQ(again.schema_version(), 1);
}

TEST(Registry, OutcomeRoundTrip) {
  test::TempDir dir;
  Registry reg(dir.file("r.sqlite"));
  CandidateOutcome o;
  o.rule = "gemm";
  o.dtype = "float32";
  o.arch = "sm90a";
  o.problem_key = "k1";
  o.shape_class = "c1";
  o.tolerance = 1e-4;
  o.variant = "gemm_sm90_bf16_f32_128x128x64_c1x1_coop_persistent_sauto_tn_none";
  o.math = "bf16";
  o.status = "wrong";
  o.reason = "fail_frac 0.78 > eager 0.0 + 0.001";
  o.median_ms = 0.25;
  o.max_abs_err = 3e-3;
  o.fail_frac = 0.78;
  o.toolchain = "t";
  reg.record_outcome(o);
  CandidateOutcome c = o;
  c.status = "compile_error";
  c.median_ms.reset();
  c.max_abs_err.reset();
  c.fail_frac.reset();
  reg.record_outcome(c);

  auto rows = reg.outcomes_for("k1");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].status, "wrong");
  EXPECT_EQ(rows[0].reason, o.reason);
  EXPECT_EQ(rows[0].variant, o.variant);
  ASSERT_TRUE(rows[0].median_ms.has_value());
  EXPECT_DOUBLE_EQ(*rows[0].median_ms, 0.25);
  EXPECT_FALSE(rows[0].mean_ms.has_value());
  EXPECT_DOUBLE_EQ(*rows[0].fail_frac, 0.78);
  EXPECT_DOUBLE_EQ(rows[0].tolerance, 1e-4);
  EXPECT_FALSE(rows[0].created_at.empty());
  EXPECT_EQ(rows[1].status, "compile_error");
  EXPECT_FALSE(rows[1].median_ms.has_value());
  EXPECT_TRUE(reg.outcomes_for("other").empty());
  EXPECT_EQ(reg.recent_outcomes(1).size(), 1u);
  EXPECT_EQ(reg.recent_outcomes(1)[0].status, "compile_error");  // newest first
}

TEST(Registry, WinnerReplacementAndLookup) {
  test::TempDir dir;
  Registry reg(dir.file("r.sqlite"));
  EXPECT_FALSE(reg.find_winner("gemm", "float32", "sm90a", "k", 1e-4).has_value());
  reg.record_winner(make_winner("k", 0.9));
  reg.record_winner(make_winner("k", 0.8));  // same key and tolerance: replaces
  auto w = reg.find_winner("gemm", "float32", "sm90a", "k", 1e-4);
  ASSERT_TRUE(w.has_value());
  EXPECT_DOUBLE_EQ(w->median_ms, 0.8);
  EXPECT_EQ(w->variant, "variant_0.800000");
  EXPECT_EQ(w->toolchain, "cutlass dcf215af nvcc 13.0");
  EXPECT_EQ(reg.winners().size(), 1u);
  EXPECT_EQ(reg.winners("k").size(), 1u);
  EXPECT_TRUE(reg.winners("nope").empty());

  // Another arch / dtype / rule does not match.
  EXPECT_FALSE(reg.find_winner("gemm", "float32", "sm80", "k", 1e-4).has_value());
  EXPECT_FALSE(reg.find_winner("gemm", "float16", "sm90a", "k", 1e-4).has_value());
  EXPECT_FALSE(reg.find_winner("attention", "float32", "sm90a", "k", 1e-4).has_value());
}

TEST(Registry, ToleranceQualification) {
  test::TempDir dir;
  Registry reg(dir.file("r.sqlite"));
  reg.record_winner(make_winner("k", 0.2, 1e-2));
  reg.record_winner(make_winner("k", 0.8, 1e-4));
  // At 1e-2 both qualify; the faster one wins.
  EXPECT_DOUBLE_EQ(reg.find_winner("gemm", "float32", "sm90a", "k", 1e-2)->median_ms, 0.2);
  // At 1e-4 only the winner verified at 1e-4 qualifies.
  EXPECT_DOUBLE_EQ(reg.find_winner("gemm", "float32", "sm90a", "k", 1e-4)->median_ms, 0.8);
  EXPECT_FALSE(reg.find_winner("gemm", "float32", "sm90a", "k", 1e-5).has_value());
  EXPECT_EQ(reg.winners("k").size(), 2u);
}

TEST(Registry, FindSimilarByShapeClass) {
  test::TempDir dir;
  Registry reg(dir.file("r.sqlite"));
  Winner slow = make_winner("k1", 1.0);
  slow.baseline_ms = 2.0;  // 2x
  Winner fast = make_winner("k2", 1.0);
  fast.baseline_ms = 4.0;  // 4x
  fast.variant = "best";
  reg.record_winner(slow);
  reg.record_winner(fast);
  auto w = reg.find_similar("gemm", "float32", "sm90a", "gemm:f32:b1:m4k:n4k:k4k", 1e-4);
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->variant, "best");
  EXPECT_FALSE(reg.find_similar("gemm", "float32", "sm90a", "gemm:f32:b1:m1k:n1k:k1k", 1e-4).has_value());
}

TEST(Registry, RefusesNewerSchema) {
  test::TempDir dir;
  const std::string path = dir.file("r.sqlite");
  { Registry reg(path); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value = '2' WHERE key = 'schema_version'", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  try {
    Registry reg(path);
    FAIL() << "a newer schema must be refused";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("schema version 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
  }
}

TEST(Registry, UnopenablePathThrowsWithPath) {
  test::TempDir dir;
  const std::string blocker = dir.file("file");
  { std::ofstream(blocker) << "x"; }
  try {
    Registry reg(blocker + "/sub/r.sqlite");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(blocker), std::string::npos) << e.what();
  }
}

TEST(Registry, DefaultPathFollowsEnvironment) {
  {
    test::ScopedEnv reg("FACT_REGISTRY", "/tmp/x/reg.sqlite");
    EXPECT_EQ(Registry::default_path(), "/tmp/x/reg.sqlite");
  }
  test::ScopedEnv unset("FACT_REGISTRY", "");
  test::ScopedEnv cache("FACT_CACHE_DIR", "/tmp/cachedir");
  EXPECT_EQ(Registry::default_path(), "/tmp/cachedir/registry.sqlite");
}

}  // namespace
}  // namespace fact
