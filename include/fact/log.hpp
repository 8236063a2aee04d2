// Logging and progress to stderr (stdout stays for machine-readable output).
// FACT_LOG=debug enables debug lines. Safe to call from several threads: each
// line is written with one fwrite.
#pragma once

#include <chrono>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace fact::log {

enum class Level { Debug, Info, Warn, Error };

bool enabled(Level level);
void write(Level level, const std::string& message);

template <class... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Debug)) write(Level::Debug, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::Info, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::Warn, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::Error, fmt::format(f, std::forward<Args>(args)...));
}

// Wall-clock seconds since construction.
class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  void reset() { start_ = std::chrono::steady_clock::now(); }

 private:
  std::chrono::steady_clock::time_point start_;
};

// "12.3 s", "4 min 05 s"
std::string format_seconds(double seconds);

// A live status line: on a terminal it is rewritten in place; otherwise a line
// is printed at most every `min_interval_s` (and always by finish()), so logs
// captured to a file stay short.
class ProgressLine {
 public:
  explicit ProgressLine(double min_interval_s = 5.0);
  ~ProgressLine();
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;
  void update(const std::string& text);
  void finish(const std::string& text = "");

 private:
  bool tty_;
  bool open_ = false;
  double min_interval_s_;
  double last_print_ = -1e9;
  Stopwatch clock_;
  std::string last_text_;
};

}  // namespace fact::log
