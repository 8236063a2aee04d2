// Running child processes (nvcc, the Python capture and worker) without a shell.
// Contract: never throws for a failing child; the result says how it ended.
// Hazard: argv is passed to execvp as is; nothing is shell-expanded.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace fact {

struct ProcessOptions {
  std::string working_dir;                   // "" = inherit
  std::map<std::string, std::string> env;    // added to (overriding) the inherited environment
  double timeout_s = 0.0;                    // 0 = none; on expiry the child's process group is killed
};

struct ProcessResult {
  int exit_code = -1;       // valid when !signaled && !timed_out && started
  bool started = false;     // false: exec failed (error says why)
  bool signaled = false;    // killed by a signal (term_signal)
  int term_signal = 0;
  bool timed_out = false;
  std::string output;       // stdout (or, for run_process, stdout and stderr interleaved)
  std::string error_output; // stderr, for run_process_streaming
  std::string error;        // why it could not be started
  double seconds = 0.0;
  bool ok() const { return started && !signaled && !timed_out && exit_code == 0; }
  std::string describe() const;  // "exit 1", "killed by signal 11 (Segmentation fault)", "timed out after 30 s", ...
};

// Runs argv to completion, collecting stdout and stderr together.
ProcessResult run_process(const std::vector<std::string>& argv, const ProcessOptions& options = {});

// Runs argv, calling on_line for each stdout line as it arrives (without the newline);
// stderr is collected into error_output. on_line runs on the calling thread.
ProcessResult run_process_streaming(const std::vector<std::string>& argv, const ProcessOptions& options,
                                    const std::function<void(const std::string&)>& on_line);

}  // namespace fact
