// `fact capture FILE.py -o graph.json`: runs the Python capture module (the C++
// side never imports Python) and checks that what it wrote is a valid IR.
#include <algorithm>
#include <filesystem>
#include <memory>
#include <sstream>
#include <vector>

#include <fmt/format.h>

#include "commands.hpp"
#include "fact/content_hash.hpp"
#include "fact/env.hpp"
#include "fact/ir.hpp"
#include "fact/log.hpp"
#include "fact/process.hpp"

namespace fact::cli {

namespace fs = std::filesystem;

bool check_input_file(const std::string& command, const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    log::error("{}: {}: no such file", command, path);
    return false;
  }
  if (!fs::is_regular_file(path, ec)) {
    log::error("{}: {}: not a regular file", command, path);
    return false;
  }
  return true;
}

namespace {

// The last `count` non-empty lines of a child's output, for relaying its message.
std::vector<std::string> tail_lines(const std::string& text, size_t count) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(line);
  }
  if (lines.size() > count) lines.erase(lines.begin(), lines.end() - static_cast<std::ptrdiff_t>(count));
  return lines;
}

// Where a capture of `file` is kept: keyed by the file's path and bytes, the
// capture code (python/fact/*.py) and the Python that runs it. Hazard: modules
// the file imports are not part of the key; editing only those needs
// FACT_CACHE_DIR cleared (or the file touched).
fs::path capture_cache_path(const std::string& file, const std::string& python_dir, const std::string& python) {
  ContentHash key;
  key.add("fact-capture-v1").add(fs::absolute(file).string()).add_file(file).add(python);
  std::vector<fs::path> capture_sources;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(python_dir) / "fact", ec))
    if (entry.path().extension() == ".py") capture_sources.push_back(entry.path());
  std::sort(capture_sources.begin(), capture_sources.end());
  for (const auto& source : capture_sources) key.add_file(source.string());
  return fs::path(env::cache_dir()) / "ir" / (key.hex() + ".json");
}

}  // namespace

int run_capture(const std::string& file, const std::string& output) {
  if (!check_input_file("fact capture", file)) return 2;
  std::error_code ec;
  const fs::path out(output);
  if (out.has_parent_path()) fs::create_directories(out.parent_path(), ec);

  const std::string python_dir = (fs::path(source_dir()) / "python").string();
  const fs::path cached = capture_cache_path(file, python_dir, env::python());
  if (fs::exists(cached, ec)) {
    try {
      Graph g = load_graph(cached.string());
      fs::copy_file(cached, out, fs::copy_options::overwrite_existing);
      log::info("fact capture: {} -> {} (cached capture {}, {} nodes)", file, output, cached.filename().string(),
                g.nodes.size());
      return 0;
    } catch (const std::exception& e) {
      log::warn("fact capture: ignoring unreadable cached capture {}: {}", cached.string(), e.what());
    }
  }
  ProcessOptions options;
  const std::string existing = env_raw("PYTHONPATH").value_or("");
  options.env["PYTHONPATH"] = existing.empty() ? python_dir : python_dir + ":" + existing;
  // Capturing instantiates the model on the CPU; a large one takes a while, a hung one must not block forever.
  options.timeout_s = 1800.0;
  const std::string python = env::python();
  ProcessResult r = run_process({python, "-m", "fact.capture", file, "-o", output}, options);
  if (!r.started) {
    log::error("fact capture: cannot run Python ({}): set FACT_PYTHON to a python3 with torch installed", r.error);
    return 2;
  }
  if (!r.ok()) {
    const auto lines = tail_lines(r.output, 20);
    for (size_t i = 0; i + 1 < lines.size(); ++i) log::info("  {}", lines[i]);
    log::error("fact capture: {} ({})", lines.empty() ? std::string("capture failed") : lines.back(), r.describe());
    // A Python that exited with a message rejected the input; a crash or timeout is not the input's fault.
    return r.signaled || r.timed_out ? 1 : 2;
  }
  for (const auto& line : tail_lines(r.output, 50)) log::debug("capture: {}", line);
  try {
    Graph g = load_graph(output);
    log::info("fact capture: {} -> {} ({} nodes, {} tensors, module {})", file, output, g.nodes.size(),
              g.tensors.size(), g.module.empty() ? "?" : g.module);
    // Written beside and renamed: a concurrent reader never sees half a file.
    fs::create_directories(cached.parent_path(), ec);
    const fs::path partial = cached.string() + ".partial";
    fs::copy_file(out, partial, fs::copy_options::overwrite_existing, ec);
    if (!ec) fs::rename(partial, cached, ec);
    if (ec) log::warn("fact capture: could not keep the capture in {}: {}", cached.string(), ec.message());
  } catch (const std::exception& e) {
    log::error("fact capture: the capture wrote an invalid graph: {}", e.what());
    return 1;
  }
  return 0;
}

void register_capture(CLI::App& app, int* exit_code) {
  struct Args {
    std::string file, output = "graph.json";
  };
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("capture", "Trace a KernelBench-format file (class Model, get_inputs, "
                                                "get_init_inputs) into graph IR JSON");
  sub->add_option("file", args->file, "Python file defining class Model")->required();
  sub->add_option("-o,--output", args->output, "graph IR to write")->capture_default_str();
  sub->callback([args, exit_code] { *exit_code = run_capture(args->file, args->output); });
}

}  // namespace fact::cli
