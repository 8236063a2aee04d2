// nvcc driver and content-addressed kernel cache.
#include "fact/build.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "fact/content_hash.hpp"
#include "fact/env.hpp"
#include "fact/log.hpp"
#include "fact/process.hpp"

namespace fs = std::filesystem;

namespace fact {
namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Writes `text` to `path` through a temporary file and a rename, so a reader
// never sees a half-written file (several realize runs may share the cache).
void write_atomically(const fs::path& path, const std::string& text) {
  static std::atomic<unsigned> counter{0};
  const fs::path tmp = path.string() + fmt::format(".tmp-{}-{}", ::getpid(), counter++);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write " + tmp.string());
    out << text;
    if (!out) throw std::runtime_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, path);
}

std::string nvcc_release(const std::string& version_text) {
  const auto pos = version_text.find("release ");
  if (pos == std::string::npos) return "unknown";
  const auto end = version_text.find_first_of(",\n", pos);
  return version_text.substr(pos + 8, end == std::string::npos ? std::string::npos : end - pos - 8);
}

}  // namespace

std::string Toolchain::id() const {
  return fmt::format("cutlass {} nvcc {}", cutlass_commit, nvcc_release(nvcc_version));
}

std::optional<Toolchain> resolve_toolchain(std::string* why) {
  Toolchain tc;
  tc.nvcc = env::nvcc();
  tc.source_dir = source_dir();
  std::vector<std::string> missing;
  ProcessOptions opts;
  opts.timeout_s = 60;
  ProcessResult version = run_process({tc.nvcc, "--version"}, opts);
  if (!version.ok()) {
    missing.push_back(fmt::format(
        "nvcc: `{} --version` failed ({}). Install the CUDA toolkit (>= 12.4; e.g. Debian/Ubuntu: NVIDIA's "
        "cuda-toolkit package) and put its bin/ on PATH, or set FACT_NVCC=/path/to/nvcc",
        tc.nvcc, version.started ? version.describe() : version.error));
  } else {
    tc.nvcc_version = version.output;
  }
  std::string cutlass_why;
  if (auto dir = find_cutlass_dir(&cutlass_why)) {
    tc.cutlass_dir = *dir;
    tc.cutlass_commit = cutlass_commit(*dir);
    if (tc.cutlass_commit.empty()) {
      // No recorded commit: identify the headers by their version file instead.
      const std::string version_h = read_file(fs::path(*dir) / "include" / "cutlass" / "version.h");
      tc.cutlass_commit = "unrecorded:" + ContentHash().add(version_h).hex().substr(0, 16);
    }
  } else {
    missing.push_back("CUTLASS: " + cutlass_why);
  }
  if (!missing.empty()) {
    if (why) {
      *why = "cannot compile kernels:";
      for (const auto& m : missing) *why += "\n  - " + m;
    }
    return std::nullopt;
  }
  return tc;
}

std::vector<std::string> nvcc_flags(KernelArch family, const std::string& target_arch) {
  std::vector<std::string> flags{"-std=c++17", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr", "-Xcompiler=-fPIC",
                                 "-shared"};
  if (family == KernelArch::Sm80) {
    // compute_80 code; SASS for the target (sm_80 SASS does not load on sm_90).
    std::string sass = "sm_80";
    if (target_arch.rfind("sm", 0) == 0 && target_arch.size() >= 4) {
      std::string digits;
      for (char c : target_arch.substr(2))
        if (c >= '0' && c <= '9') digits += c;
      if (digits.size() >= 2 && digits >= "80") sass = "sm_" + digits;
    }
    flags.push_back("-gencode=arch=compute_80,code=" + sass);
  } else {
    flags.push_back("-gencode=arch=compute_90a,code=sm_90a");
  }
  return flags;
}

std::vector<std::string> nvcc_command(const Toolchain& tc, const std::vector<std::string>& flags,
                                      const std::string& source_path, const std::string& output_path) {
  std::vector<std::string> argv{tc.nvcc};
  argv.insert(argv.end(), flags.begin(), flags.end());
  for (const auto& inc : {(fs::path(tc.source_dir) / "include").string(),
                          (fs::path(tc.source_dir) / "templates").string(),
                          (fs::path(tc.cutlass_dir) / "include").string(),
                          (fs::path(tc.cutlass_dir) / "tools" / "util" / "include").string(),
                          // the FMHA example headers (templates/attention_sm80.cuh includes
                          // "41_fused_multi_head_attention/kernel_forward.h")
                          (fs::path(tc.cutlass_dir) / "examples").string()})
    argv.push_back("-I" + inc);
  argv.push_back("-o");
  argv.push_back(output_path);
  argv.push_back(source_path);
  return argv;
}

std::string templates_digest(const std::string& source_dir, const std::string& source) {
  // The FACT headers the source reaches through quoted #includes, transitively:
  // templates/ first, then include/ (a quoted include found in neither, such as an
  // example header of CUTLASS, is covered by the CUTLASS commit in the key).
  const fs::path roots[] = {fs::path(source_dir) / "templates", fs::path(source_dir) / "include"};
  std::set<fs::path> reached;
  std::vector<std::string> pending{source};
  while (!pending.empty()) {
    std::istringstream text(std::move(pending.back()));
    pending.pop_back();
    std::string line;
    while (std::getline(text, line)) {
      const size_t hash = line.find_first_not_of(" \t");
      if (hash == std::string::npos || line[hash] != '#') continue;
      const size_t inc = line.find("include", hash + 1);
      const size_t open = line.find('"', hash + 1);
      if (inc == std::string::npos || open == std::string::npos || open < inc) continue;
      if (line.find_first_not_of(" \t", hash + 1) != inc) continue;
      const size_t close = line.find('"', open + 1);
      if (close == std::string::npos) continue;
      const std::string name = line.substr(open + 1, close - open - 1);
      for (const fs::path& root : roots) {
        std::error_code ec;
        const fs::path file = root / name;
        if (!fs::is_regular_file(file, ec)) continue;
        if (reached.insert(file.lexically_normal()).second) {
          std::ifstream in(file, std::ios::binary);
          std::ostringstream body;
          body << in.rdbuf();
          pending.push_back(body.str());
        }
        break;
      }
    }
  }
  ContentHash digest;
  for (const auto& f : reached) digest.add(f.lexically_relative(source_dir).generic_string()).add_file(f.string());
  return digest.hex();
}

std::string kernel_cache_key(const std::string& cutlass_commit, const std::string& nvcc_version,
                             const std::vector<std::string>& flags, const std::string& source,
                             const std::string& templates_digest) {
  ContentHash key;
  key.add("fact-kernel-cache-v1").add(cutlass_commit).add(nvcc_version).add(std::to_string(flags.size()));
  for (const auto& f : flags) key.add(f);
  return key.add(source).add(templates_digest).hex();
}

std::string kernel_dir(const std::string& cache_root, const std::string& key) {
  return (fs::path(cache_root) / "kernels" / key).string();
}

std::string cached_library_path(const std::string& cache_root, const std::string& key, const std::string& name) {
  return (fs::path(kernel_dir(cache_root, key)) / ("lib" + name + ".so")).string();
}

std::string first_error_lines(const std::string& log, int max_lines) {
  std::istringstream in(log);
  std::string line, out;
  int n = 0;
  while (n < max_lines && std::getline(in, line)) {
    if (line.find("error") == std::string::npos && line.find("Error") == std::string::npos) continue;
    if (!out.empty()) out += "\n";
    out += line.size() > 400 ? line.substr(0, 400) + "..." : line;
    ++n;
  }
  if (out.empty()) {
    // No line says "error": give the log's tail instead.
    out = log.size() > 600 ? log.substr(log.size() - 600) : log;
  }
  return out;
}

namespace {

CompileResult compile_one(const Toolchain& tc, const std::string& cache_root, const CompileJob& job,
                          const std::string& digest) {
  CompileResult r;
  r.name = job.name;
  r.key = kernel_cache_key(tc.cutlass_commit, tc.nvcc_version, job.flags, job.source, digest);
  const fs::path dir = kernel_dir(cache_root, r.key);
  const fs::path lib = cached_library_path(cache_root, r.key, job.name);
  const fs::path log_path = dir / "compile.log";
  const fs::path failure = dir / "compile_error.txt";
  r.log_path = log_path.string();
  std::error_code ec;
  if (fs::exists(lib, ec)) {
    r.ok = r.cached = true;
    r.library = lib.string();
    return r;
  }
  if (fs::exists(failure, ec)) {
    r.cached = true;
    r.reason = read_file(failure);
    return r;
  }
  log::Stopwatch clock;
  try {
    fs::create_directories(dir);
    const fs::path source = dir / (job.name + ".cu");
    write_atomically(source, job.source);
    static std::atomic<unsigned> counter{0};
    const fs::path tmp_lib = lib.string() + fmt::format(".tmp-{}-{}", ::getpid(), counter++);
    ProcessOptions opts;
    opts.timeout_s = 1800;
    ProcessResult pr = run_process(nvcc_command(tc, job.flags, source.string(), tmp_lib.string()), opts);
    r.seconds = clock.seconds();
    std::string log_text = fmt::format("$ nvcc ... {}\n{}\n[{} in {:.1f} s]\n", source.string(), pr.output,
                                       pr.started ? pr.describe() : pr.error, pr.seconds);
    write_atomically(log_path, log_text);
    if (pr.ok() && fs::exists(tmp_lib, ec)) {
      fs::rename(tmp_lib, lib);
      r.ok = true;
      r.library = lib.string();
      return r;
    }
    fs::remove(tmp_lib, ec);
    if (!pr.started) {
      r.reason = "nvcc could not be started: " + pr.error;
    } else if (pr.signaled || pr.timed_out) {
      // Not deterministic (memory pressure, time limit): not cached.
      r.reason = "nvcc " + pr.describe() + " (not cached; may be memory pressure: lower FACT_JOBS)";
    } else {
      r.reason = first_error_lines(pr.output);
      write_atomically(failure, r.reason);
    }
  } catch (const std::exception& e) {
    r.reason = std::string("compile setup failed: ") + e.what();
  }
  return r;
}

}  // namespace

std::vector<CompileResult> compile_all(const Toolchain& tc, const std::string& cache_root,
                                       const std::vector<CompileJob>& jobs_in, int jobs,
                                       const CompileProgress& progress) {
  std::vector<CompileResult> results(jobs_in.size());
  if (jobs_in.empty()) return results;
  if (jobs <= 0) jobs = env::jobs();
  jobs = std::max(1, std::min<int>(jobs, static_cast<int>(jobs_in.size())));
  std::atomic<size_t> next{0};
  std::mutex mutex;
  int finished = 0;
  auto worker = [&] {
    for (;;) {
      const size_t i = next++;
      if (i >= jobs_in.size()) return;
      CompileResult r = compile_one(tc, cache_root, jobs_in[i], templates_digest(tc.source_dir, jobs_in[i].source));
      std::lock_guard<std::mutex> lock(mutex);
      results[i] = r;
      ++finished;
      if (progress) progress(results[i], finished, static_cast<int>(jobs_in.size()));
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < jobs; ++t) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  return results;
}

}  // namespace fact
