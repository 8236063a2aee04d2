// stderr logging and the live progress line. One mutex orders log lines and
// progress redraws so a log line never lands in the middle of a status line.
#include "fact/log.hpp"

#include <unistd.h>

#include <cstdio>
#include <mutex>

#include "fact/env.hpp"

namespace fact::log {
namespace {

std::mutex& output_mutex() {
  static std::mutex m;
  return m;
}

// The status line currently drawn on the terminal ("" = none).
std::string& drawn_progress() {
  static std::string text;
  return text;
}

void put(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stderr);
  std::fflush(stderr);
}

}  // namespace

bool enabled(Level level) {
  if (level != Level::Debug) return true;
  static const bool debug = env::debug_logging();
  return debug;
}

void write(Level level, const std::string& message) {
  if (!enabled(level)) return;
  const char* prefix = "";
  switch (level) {
    case Level::Debug: prefix = "fact: debug: "; break;
    case Level::Info: prefix = ""; break;
    case Level::Warn: prefix = "fact: warning: "; break;
    case Level::Error: prefix = "fact: error: "; break;
  }
  std::lock_guard<std::mutex> lock(output_mutex());
  std::string line;
  if (!drawn_progress().empty()) line += "\r\x1b[K";
  line += prefix + message + "\n";
  if (!drawn_progress().empty()) line += drawn_progress();
  put(line);
}

std::string format_seconds(double seconds) {
  if (seconds < 60.0) return fmt::format("{:.1f} s", seconds);
  int total = static_cast<int>(seconds + 0.5);
  return fmt::format("{} min {:02d} s", total / 60, total % 60);
}

ProgressLine::ProgressLine(double min_interval_s) : tty_(isatty(STDERR_FILENO) != 0), min_interval_s_(min_interval_s) {}

ProgressLine::~ProgressLine() {
  if (open_) finish();
}

void ProgressLine::update(const std::string& text) {
  last_text_ = text;
  std::lock_guard<std::mutex> lock(output_mutex());
  if (tty_) {
    drawn_progress() = text;
    open_ = true;
    put("\r\x1b[K" + text);
    return;
  }
  const double now = clock_.seconds();
  if (now - last_print_ >= min_interval_s_) {
    last_print_ = now;
    put(text + "\n");
  }
}

void ProgressLine::finish(const std::string& text) {
  const std::string final_text = text.empty() ? last_text_ : text;
  std::lock_guard<std::mutex> lock(output_mutex());
  if (tty_) {
    drawn_progress().clear();
    put("\r\x1b[K" + final_text + "\n");
  } else if (!final_text.empty()) {
    put(final_text + "\n");
  }
  open_ = false;
}

}  // namespace fact::log
