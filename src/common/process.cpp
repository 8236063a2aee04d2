// fork/exec child processes with pipes, poll and a process-group timeout.
// Hazards handled here:
//  - realize runs many children from several threads: every pipe is O_CLOEXEC so
//    one child never inherits another's pipe (which would delay its EOF), and the
//    child only calls async-signal-safe functions between fork and exec (argv,
//    envp and the executable path are prepared before fork).
//  - nvcc spawns cicc/ptxas: the child leads its own process group and a timeout
//    kills the whole group.
//  - a grandchild that outlives the child may hold the pipes open: once the child
//    is reaped, reading stops after a short quiet period.
#include "fact/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>

#include <fmt/format.h>

extern char** environ;

namespace fact {

std::string ProcessResult::describe() const {
  if (!started) return "could not start: " + error;
  if (timed_out) return fmt::format("timed out after {:g} s", seconds);
  if (signaled) {
    const char* name = strsignal(term_signal);
    return fmt::format("killed by signal {} ({})", term_signal, name ? name : "unknown");
  }
  return fmt::format("exit {}", exit_code);
}

namespace {

using Clock = std::chrono::steady_clock;

// Resolves argv[0] against PATH (from the child's environment) like execvp would.
std::string resolve_executable(const std::string& name, const std::string& path_var) {
  if (name.find('/') != std::string::npos) return name;
  size_t start = 0;
  while (start <= path_var.size()) {
    size_t end = path_var.find(':', start);
    if (end == std::string::npos) end = path_var.size();
    std::string dir = path_var.substr(start, end - start);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + name;
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    start = end + 1;
  }
  return "";
}

struct Pipe {
  int read = -1, write = -1;
  bool open() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return false;
    read = fds[0];
    write = fds[1];
    return true;
  }
  void close_read() {
    if (read >= 0) ::close(read);
    read = -1;
  }
  void close_write() {
    if (write >= 0) ::close(write);
    write = -1;
  }
  ~Pipe() {
    close_read();
    close_write();
  }
};

struct Spawned {
  pid_t pid = -1;
  std::string error;
};

// Forks and execs; the child's stdout goes to out_fd and stderr to err_fd.
Spawned spawn(const std::vector<std::string>& argv, const ProcessOptions& options, int out_fd, int err_fd) {
  Spawned s;
  if (argv.empty()) {
    s.error = "empty command";
    return s;
  }
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string entry = *e;
    size_t eq = entry.find('=');
    if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  for (const auto& [k, v] : options.env) env[k] = v;
  const std::string exe = resolve_executable(argv[0], env.count("PATH") ? env["PATH"] : "/usr/bin:/bin");
  if (exe.empty()) {
    s.error = fmt::format("'{}' not found on PATH", argv[0]);
    return s;
  }
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> c_argv, c_env;
  for (const auto& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);
  for (const auto& e : env_strings) c_env.push_back(const_cast<char*>(e.c_str()));
  c_env.push_back(nullptr);
  const char* workdir = options.working_dir.empty() ? nullptr : options.working_dir.c_str();

  Pipe exec_status;  // the child writes errno here if exec fails; EOF means exec succeeded
  if (!exec_status.open()) {
    s.error = fmt::format("pipe: {}", std::strerror(errno));
    return s;
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    s.error = fmt::format("fork: {}", std::strerror(errno));
    return s;
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    int step = 0;  // 0: chdir failed, 1: exec failed
    if (workdir && ::chdir(workdir) != 0) {
      step = 0;
    } else {
      step = 1;
      ::execve(exe.c_str(), c_argv.data(), c_env.data());
    }
    int payload[2] = {step, errno};
    ssize_t ignored = ::write(exec_status.write, payload, sizeof(payload));
    (void)ignored;
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also from the parent: no race with a timeout kill right after fork
  exec_status.close_write();
  int payload[2] = {0, 0};
  ssize_t n;
  do {
    n = ::read(exec_status.read, payload, sizeof(payload));
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof(payload))) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    s.error = payload[0] == 0 ? fmt::format("cannot change to directory '{}': {}", options.working_dir,
                                            std::strerror(payload[1]))
                              : fmt::format("cannot execute '{}': {}", exe, std::strerror(payload[1]));
    return s;
  }
  s.pid = pid;
  return s;
}

// Reads the child's pipes until EOF (or timeout), then reaps it.
// fds[i] are read ends; on_data(i, bytes) receives what arrives.
template <class OnData>
void pump(pid_t pid, std::vector<int> fds, const ProcessOptions& options, ProcessResult& result, OnData on_data) {
  const auto start = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  bool reaped = false;
  int status = 0;
  double reaped_at = 0.0;
  char buffer[65536];
  for (;;) {
    std::vector<pollfd> polls;
    std::vector<size_t> which;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i] >= 0) {
        polls.push_back({fds[i], POLLIN, 0});
        which.push_back(i);
      }
    }
    if (polls.empty()) break;
    if (!reaped && ::waitpid(pid, &status, WNOHANG) == pid) {
      reaped = true;
      reaped_at = elapsed();
    }
    // After the child exited, a grandchild may keep the pipe open: give up after 1 s of quiet.
    if (reaped && elapsed() - reaped_at > 1.0) {
      ::kill(-pid, SIGKILL);
      break;
    }
    // The deadline holds even after the child exited, against a chatty grandchild.
    if (options.timeout_s > 0.0 && elapsed() > options.timeout_s) {
      ::kill(-pid, SIGKILL);
      if (!reaped) {
        result.timed_out = true;
        ::waitpid(pid, &status, 0);
        reaped = true;
      }
      break;
    }
    int rc = ::poll(polls.data(), polls.size(), 50);
    if (rc < 0 && errno != EINTR) break;
    if (rc <= 0) continue;
    for (size_t p = 0; p < polls.size(); ++p) {
      if (!(polls[p].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(polls[p].fd, buffer, sizeof(buffer));
      if (n > 0) {
        on_data(which[p], std::string(buffer, static_cast<size_t>(n)));
        if (reaped) reaped_at = elapsed();
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        fds[which[p]] = -1;  // EOF; the owning Pipe closes the descriptor
      }
    }
  }
  if (!reaped) {
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  result.seconds = elapsed();
  if (result.timed_out) return;
  if (WIFSIGNALED(status)) {
    result.signaled = true;
    result.term_signal = WTERMSIG(status);
  } else if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  }
}

}  // namespace

ProcessResult run_process(const std::vector<std::string>& argv, const ProcessOptions& options) {
  ProcessResult result;
  Pipe out;
  if (!out.open()) {
    result.error = fmt::format("pipe: {}", std::strerror(errno));
    return result;
  }
  Spawned s = spawn(argv, options, out.write, out.write);
  out.close_write();
  if (s.pid < 0) {
    result.error = s.error;
    return result;
  }
  result.started = true;
  pump(s.pid, {out.read}, options, result, [&](size_t, const std::string& data) { result.output += data; });
  return result;
}

ProcessResult run_process_streaming(const std::vector<std::string>& argv, const ProcessOptions& options,
                                    const std::function<void(const std::string&)>& on_line) {
  ProcessResult result;
  Pipe out, err;
  if (!out.open() || !err.open()) {
    result.error = fmt::format("pipe: {}", std::strerror(errno));
    return result;
  }
  Spawned s = spawn(argv, options, out.write, err.write);
  out.close_write();
  err.close_write();
  if (s.pid < 0) {
    result.error = s.error;
    return result;
  }
  result.started = true;
  std::string pending;
  pump(s.pid, {out.read, err.read}, options, result, [&](size_t which, const std::string& data) {
    if (which == 1) {
      result.error_output += data;
      return;
    }
    result.output += data;
    pending += data;
    size_t pos;
    while ((pos = pending.find('\n')) != std::string::npos) {
      std::string line = pending.substr(0, pos);
      pending.erase(0, pos + 1);
      if (on_line) on_line(line);
    }
  });
  if (!pending.empty() && on_line) on_line(pending);
  return result;
}

}  // namespace fact
