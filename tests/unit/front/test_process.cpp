// Process runner: exit codes, signals, timeouts that kill the whole group,
// streaming lines, environment and working directory, and exec failures.
#include <gtest/gtest.h>

#include <csignal>

#include "fact/log.hpp"
#include "fact/process.hpp"
#include "test_util.hpp"

namespace fact {
namespace {

TEST(Process, CollectsOutputAndExitCode) {
  ProcessResult r = run_process({"sh", "-c", "echo out; echo err 1>&2; exit 3"});
  EXPECT_TRUE(r.started);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_FALSE(r.signaled);
  EXPECT_NE(r.output.find("out\n"), std::string::npos);
  EXPECT_NE(r.output.find("err\n"), std::string::npos);  // run_process interleaves stderr
  EXPECT_EQ(r.describe(), "exit 3");
}

TEST(Process, Success) {
  ProcessResult r = run_process({"true"});
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.exit_code, 0);
}

TEST(Process, ReportsSignal) {
  ProcessResult r = run_process({"sh", "-c", "kill -SEGV $$"});
  EXPECT_TRUE(r.started);
  EXPECT_TRUE(r.signaled);
  EXPECT_EQ(r.term_signal, SIGSEGV);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.describe().find("killed by signal 11"), std::string::npos) << r.describe();
}

TEST(Process, TimeoutKillsTheProcessGroup) {
  test::TempDir dir;
  const std::string marker = dir.file("grandchild-survived");
  ProcessOptions o;
  o.timeout_s = 0.5;
  log::Stopwatch clock;
  // The grandchild would write the marker after 2 s unless the group is killed.
  ProcessResult r = run_process({"sh", "-c", "(sleep 2; touch " + marker + ") & sleep 30"}, o);
  EXPECT_LT(clock.seconds(), 5.0);
  EXPECT_TRUE(r.timed_out);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.describe().find("timed out"), std::string::npos);
  ::sleep(3);
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST(Process, StreamsLinesAndSeparatesStderr) {
  std::vector<std::string> lines;
  ProcessResult r = run_process_streaming({"sh", "-c", "echo a; echo warn >&2; printf 'b\\nc'"}, {},
                                          [&](const std::string& line) { lines.push_back(line); });
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(lines, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(r.error_output, "warn\n");
}

TEST(Process, StreamingLinesArriveBeforeExit) {
  // The first line must reach the callback while the child is still running.
  log::Stopwatch clock;
  double first_line_at = -1.0;
  ProcessResult r = run_process_streaming({"sh", "-c", "echo first; sleep 1; echo second"}, {},
                                          [&](const std::string&) {
                                            if (first_line_at < 0) first_line_at = clock.seconds();
                                          });
  EXPECT_TRUE(r.ok());
  EXPECT_GE(first_line_at, 0.0);
  EXPECT_LT(first_line_at, 0.8);
  EXPECT_GE(r.seconds, 0.9);
}

TEST(Process, EnvironmentAndWorkingDirectory) {
  test::TempDir dir;
  ProcessOptions o;
  o.env["FACT_TEST_VALUE"] = "hello";
  o.working_dir = dir.path();
  ProcessResult r = run_process({"sh", "-c", "echo $FACT_TEST_VALUE; pwd"}, o);
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_NE(r.output.find("hello"), std::string::npos);
  EXPECT_NE(r.output.find(std::filesystem::canonical(dir.path()).string()), std::string::npos) << r.output;
}

TEST(Process, MissingExecutableDoesNotStart) {
  ProcessResult r = run_process({"fact-no-such-program-xyz"});
  EXPECT_FALSE(r.started);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("not found"), std::string::npos) << r.error;
  EXPECT_NE(r.describe().find("could not start"), std::string::npos);

  ProcessOptions o;
  o.working_dir = "/nonexistent/dir";
  ProcessResult bad_dir = run_process({"true"}, o);
  EXPECT_FALSE(bad_dir.started);
  EXPECT_NE(bad_dir.error.find("/nonexistent/dir"), std::string::npos) << bad_dir.error;

  ProcessResult empty = run_process({});
  EXPECT_FALSE(empty.started);
}

TEST(Process, LargeOutputDoesNotDeadlock) {
  ProcessResult r = run_process({"sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' 'x'"});
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(r.output.size(), 3000000u);
}

}  // namespace
}  // namespace fact

namespace fact {
namespace {

TEST(Log, FormatSeconds) {
  EXPECT_EQ(log::format_seconds(12.34), "12.3 s");
  EXPECT_EQ(log::format_seconds(245.0), "4 min 05 s");
}

TEST(Process, DeadlineHoldsAgainstGrandchildKeepingPipeOpen) {
  // The child exits at once; a background grandchild keeps stdout open and writing.
  ProcessOptions o;
  o.timeout_s = 1.0;
  log::Stopwatch clock;
  ProcessResult r = run_process({"sh", "-c", "(while true; do echo tick; sleep 0.1; done) & exit 0"}, o);
  EXPECT_LT(clock.seconds(), 5.0);
  EXPECT_TRUE(r.started);
  EXPECT_EQ(r.exit_code, 0);  // the child itself succeeded
}

}  // namespace
}  // namespace fact
