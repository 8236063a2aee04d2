// realized.json writer (docs/CONTRACTS.md §6).
#include "fact/realized.hpp"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <fmt/format.h>

namespace fs = std::filesystem;
using nlohmann::json;

namespace fact {
namespace {

json opt(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

}  // namespace

json realized_to_json(const RealizedFile& f) {
  json patterns = json::array();
  for (const auto& p : f.patterns) {
    json candidates = json::array();
    for (const auto& c : p.candidates) {
      json cj = {{"name", c.name}, {"status", c.status}, {"reason", c.reason}, {"median_ms", opt(c.median_ms)}};
      if (c.max_abs_err) cj["max_abs_err"] = *c.max_abs_err;
      if (c.fail_frac) cj["fail_frac"] = *c.fail_frac;
      if (!c.library.empty()) cj["library"] = c.library;
      candidates.push_back(cj);
    }
    patterns.push_back({{"id", p.id},
                        {"status", p.status},
                        {"reason", p.reason},
                        {"variant", p.variant},
                        {"library", p.library},
                        {"math", p.math},
                        {"median_ms", opt(p.median_ms)},
                        {"baseline_median_ms", opt(p.baseline_median_ms)},
                        {"max_abs_err", opt(p.max_abs_err)},
                        {"fail_frac", opt(p.fail_frac)},
                        {"from_registry", p.from_registry},
                        {"verification_reused", p.verification_reused},
                        {"rule", p.rule},
                        {"problem_key", p.problem_key},
                        {"candidates", candidates}});
    if (!p.bound_nodes.empty()) {
      patterns.back()["nodes"] = p.bound_nodes;
      patterns.back()["outputs"] = p.bound_outputs;
      patterns.back()["left_to_pytorch"] = p.left_to_pytorch;
    }
    if (!p.fused_epilogue.is_null()) patterns.back()["fused_epilogue"] = p.fused_epilogue;
  }
  return {{"fact_realized", 1},
          {"plan", f.plan},
          {"ir", f.ir},
          {"tolerance", f.tolerance},
          {"patterns", patterns},
          {"timings", {{"compile_s", f.compile_s}, {"verify_s", f.verify_s}, {"total_s", f.total_s}}}};
}

void write_realized(const RealizedFile& file, const std::string& path) {
  const fs::path target = fs::absolute(path);
  std::error_code ec;
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  const fs::path tmp = target.string() + fmt::format(".tmp-{}", ::getpid());
  {
    std::ofstream out(tmp);
    out << realized_to_json(file).dump(2) << "\n";
    if (!out) throw std::runtime_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, target, ec);
  if (ec) throw std::runtime_error(fmt::format("cannot write {}: {}", target.string(), ec.message()));
}

std::string fallback_reason_from_candidates(const std::vector<RealizedCandidate>& candidates) {
  std::map<std::string, std::pair<int, std::string>> by_status;
  int tried = 0;
  for (const auto& c : candidates) {
    if (c.status == "skipped") continue;
    ++tried;
    auto& entry = by_status[c.status];
    if (entry.first++ == 0) entry.second = c.name + ": " + c.reason.substr(0, c.reason.find('\n'));
  }
  if (tried == 0) return "no candidate could be tried";
  std::string out = fmt::format("no candidate passed ({} tried):", tried);
  for (const auto& [status, entry] : by_status)
    out += fmt::format(" {} x{} (e.g. {});", status, entry.first, entry.second);
  out.pop_back();
  return out;
}

}  // namespace fact
