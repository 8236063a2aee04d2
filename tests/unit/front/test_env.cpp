// Environment knobs and CUTLASS resolution (with temporary folders standing in
// for CUTLASS checkouts).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "fact/env.hpp"
#include "test_util.hpp"

namespace fact {
namespace {

namespace fs = std::filesystem;

void fake_cutlass(const std::string& dir, const std::string& commit) {
  fs::create_directories(fs::path(dir) / "include" / "cutlass");
  std::ofstream(fs::path(dir) / "include" / "cutlass" / "cutlass.h") << "// fake\n";
  if (!commit.empty()) std::ofstream(fs::path(dir) / ".fact-cutlass-commit") << commit << "\n";
}

TEST(Env, KnobTableCoversContract) {
  std::set<std::string> names;
  for (const auto& k : env_knobs()) {
    names.insert(k.name);
    EXPECT_GT(std::string(k.doc).size(), 5u) << k.name;
    EXPECT_GT(std::string(k.default_doc).size(), 0u) << k.name;
  }
  for (const char* n : {"FACT_CACHE_DIR", "FACT_REGISTRY", "CUTLASS_DIR", "FACT_NVCC", "FACT_JOBS", "FACT_PYTHON",
                        "FACT_ARCH", "FACT_VARIANTS", "FACT_LOG", "FACT_PATTERNS", "FACT_HANDOFFS",
                        "FACT_SOURCE_DIR", "FACT_SLOWER"}) {
    EXPECT_EQ(names.count(n), 1u) << n;
  }
}

TEST(Env, SourceDirIsARealTreeOrTheOverride) {
  // Without an override the tree must hold what realize and capture read.
  EXPECT_TRUE(std::filesystem::is_directory(std::filesystem::path(source_dir()) / "templates")) << source_dir();
  EXPECT_TRUE(std::filesystem::is_directory(std::filesystem::path(source_dir()) / "python" / "fact")) << source_dir();
  test::ScopedEnv over("FACT_SOURCE_DIR", "/opt/fact-src");
  EXPECT_EQ(source_dir(), "/opt/fact-src");
}

TEST(Env, TypedAccessorsAndInvalidValues) {
  {
    test::ScopedEnv jobs("FACT_JOBS", "7");
    EXPECT_EQ(env::jobs(), 7);
  }
  {
    test::ScopedEnv jobs("FACT_JOBS", "seven");
    EXPECT_GE(env::jobs(), 1);  // invalid: warned, default used
    EXPECT_EQ(env::jobs(), default_jobs());
  }
  {
    test::ScopedEnv v("FACT_VARIANTS", "all");
    EXPECT_EQ(env::variants(), "all");
  }
  {
    test::ScopedEnv v("FACT_VARIANTS", "some");
    EXPECT_EQ(env::variants(), "default");
  }
  {
    test::ScopedEnv a("FACT_ARCH", "sm80");
    EXPECT_EQ(env::arch(), "sm80");
  }
  {
    test::ScopedEnv p("FACT_PYTHON", "/opt/py/bin/python3");
    EXPECT_EQ(env::python(), "/opt/py/bin/python3");
  }
  {
    test::ScopedEnv c("FACT_CACHE_DIR", "~/fact-cache");
    EXPECT_EQ(env::cache_dir(), std::string(std::getenv("HOME")) + "/fact-cache");
  }
  EXPECT_GE(default_jobs(), 1);
  EXPECT_EQ(default_jobs(1e18), 1);  // memory-bound to one job
}

TEST(Env, FindExecutable) {
  EXPECT_TRUE(find_executable("sh").has_value());
  EXPECT_FALSE(find_executable("fact-no-such-program-xyz").has_value());
  EXPECT_FALSE(find_executable("/nonexistent/bin/tool").has_value());
}

TEST(Env, CutlassFromEnvironmentVariable) {
  test::TempDir dir;
  fake_cutlass(dir.file("cutlass"), kCutlassCommit);
  test::ScopedEnv env("CUTLASS_DIR", dir.file("cutlass"));
  std::string why;
  auto found = find_cutlass_dir(&why);
  ASSERT_TRUE(found.has_value()) << why;
  EXPECT_EQ(*found, fs::weakly_canonical(dir.file("cutlass")).string());
  EXPECT_EQ(cutlass_commit(*found), kCutlassCommit);
}

TEST(Env, WrongCutlassDirIsAnErrorWithAdvice) {
  test::TempDir dir;
  test::ScopedEnv env("CUTLASS_DIR", dir.file("empty"));
  std::string why;
  EXPECT_FALSE(find_cutlass_dir(&why).has_value());
  EXPECT_NE(why.find("CUTLASS v4.7.0 not found"), std::string::npos) << why;
  EXPECT_NE(why.find("cutlass-extract"), std::string::npos) << why;
  EXPECT_NE(why.find("CUTLASS_DIR"), std::string::npos) << why;
  EXPECT_NE(why.find(dir.file("empty")), std::string::npos) << why;
}

TEST(Env, CutlassWithWrongCommitIsRejected) {
  test::TempDir dir;
  fake_cutlass(dir.file("old"), "0123456789abcdef0123456789abcdef01234567");
  test::ScopedEnv env("CUTLASS_DIR", dir.file("old"));
  std::string why;
  EXPECT_FALSE(find_cutlass_dir(&why).has_value());
  EXPECT_NE(why.find("0123456789abcdef"), std::string::npos) << why;
}

TEST(Env, CutlassSearchOrder) {
  test::ScopedEnv cache("FACT_CACHE_DIR", "/tmp/fact-cache-test");
  {
    test::ScopedEnv unset("CUTLASS_DIR", "");
    auto path = cutlass_search_path();
    ASSERT_EQ(path.size(), 2u);
    EXPECT_EQ(path[0].first, source_dir() + "/third_party/cutlass");
    EXPECT_EQ(path[1].first, "/tmp/fact-cache-test/cutlass-v4.7.0");
  }
  test::ScopedEnv set("CUTLASS_DIR", "/opt/cutlass");
  auto path = cutlass_search_path();
  ASSERT_EQ(path.size(), 3u);
  EXPECT_EQ(path[0].first, "/opt/cutlass");
  EXPECT_EQ(path[0].second, "$CUTLASS_DIR");
}

TEST(Env, CutlassFromCacheDir) {
  // Without CUTLASS_DIR, a pinned copy in the cache is found when third_party has none.
  if (fs::exists(fs::path(source_dir()) / "third_party" / "cutlass" / "include" / "cutlass" / "cutlass.h")) {
    GTEST_SKIP() << "third_party/cutlass exists and takes precedence over the cache";
  }
  test::TempDir dir;
  fake_cutlass(dir.file("cutlass-v4.7.0"), kCutlassCommit);
  test::ScopedEnv unset("CUTLASS_DIR", "");
  test::ScopedEnv cache("FACT_CACHE_DIR", dir.path());
  std::string why;
  auto found = find_cutlass_dir(&why);
  ASSERT_TRUE(found.has_value()) << why;
  EXPECT_EQ(*found, fs::weakly_canonical(dir.file("cutlass-v4.7.0")).string());
}

}  // namespace
}  // namespace fact
