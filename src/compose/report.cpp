#include "report.hpp"

#include <fmt/format.h>

#include <map>
#include <string>

namespace fact {
namespace {

using nlohmann::json;

std::string number_or_dash(const json& object, const char* key, const char* format) {
  if (!object.contains(key) || !object[key].is_number()) return "–";
  return fmt::format(fmt::runtime(format), object[key].get<double>());
}

std::string speedup(const json& outcome) {
  if (!outcome.contains("median_ms") || !outcome.contains("baseline_median_ms")) return "–";
  const json& fast = outcome["median_ms"];
  const json& base = outcome["baseline_median_ms"];
  if (!fast.is_number() || !base.is_number() || fast.get<double>() <= 0.0) return "–";
  return fmt::format("{:.2f}×", base.get<double>() / fast.get<double>());
}

std::string problem_text(const json& pattern) {
  if (pattern.contains("attention") && pattern["attention"].is_object()) {
    const json& a = pattern["attention"];
    return fmt::format("batch {}, {} heads, {}×{} tokens, head dim {}{}", a.value("batch", 0), a.value("heads", 0),
                       a.value("seq_q", 0), a.value("seq_k", 0), a.value("head_dim", 0),
                       a.value("causal", false) ? ", causal" : "");
  }
  if (pattern.contains("layernorm") && pattern["layernorm"].is_object()) {
    const json& l = pattern["layernorm"];
    const bool residual = l.contains("residual") && l["residual"].is_object();
    return fmt::format("{} rows × {}{}", l.value("rows", 0), l.value("cols", 0),
                       residual ? " (residual add fused)" : "");
  }
  if (!pattern.contains("gemm")) return pattern.value("rule", "");
  const json& g = pattern["gemm"];
  return fmt::format("{}×{}×{}{} (A {}, B {}, epilogue {})", g.value("m", 0), g.value("n", 0), g.value("k", 0),
                     g.value("batch", 1) > 1 ? fmt::format(", batch {}", g.value("batch", 1)) : std::string(),
                     g["a"].value("layout", "?"), g["b"].value("layout", "?"),
                     g.contains("epilogue") ? g["epilogue"].value("kind", "none") : std::string("none"));
}

// Markdown table cells may not hold '|' or newlines.
std::string cell(std::string text) {
  for (char& c : text)
    if (c == '|' || c == '\n') c = ' ';
  return text;
}

}  // namespace

std::string compose_report(const json& ir, const json& plan, const json& realized, const json& handoffs) {
  std::map<std::string, json> plan_patterns;
  for (const json& pattern : plan.value("patterns", json::array()))
    plan_patterns[pattern.value("id", "")] = pattern;

  std::string md = fmt::format("# FACT report: {} ({})\n\n", ir.value("module", "Model"), ir.value("source", ""));
  md += fmt::format("Tolerance: {} (atol = rtol; DESIGN.md's definition of passing). Arch: {}.\n\n",
                    realized.value("tolerance", plan.value("tolerance", 0.0)), plan.value("arch", "?"));

  md += "## Patterns\n\n";
  md += "| pattern | rule | problem | status | variant | math mode | max abs err | fail frac | FACT ms | eager ms | speedup |\n";
  md += "|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const json& outcome : realized.value("patterns", json::array())) {
    const std::string id = outcome.value("id", "");
    const json& pattern = plan_patterns.count(id) ? plan_patterns[id] : json::object();
    const bool realized_ok = outcome.value("status", "") == "realized";
    md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", id, pattern.value("rule", "?"),
                      cell(problem_text(pattern)),
                      realized_ok ? "realized" : "fallback to PyTorch",
                      realized_ok ? outcome.value("variant", "") : "–",
                      realized_ok ? outcome.value("math", "") : "–", number_or_dash(outcome, "max_abs_err", "{:.2e}"),
                      number_or_dash(outcome, "fail_frac", "{:.2e}"), number_or_dash(outcome, "median_ms", "{:.3f}"),
                      number_or_dash(outcome, "baseline_median_ms", "{:.3f}"), speedup(outcome));
  }

  const json fused_pairs = handoffs.value("handoffs", json::array());
  const json unfused_pairs = handoffs.value("not_handed_off", json::array());
  if (!fused_pairs.empty() || !unfused_pairs.empty()) {
    md += "\n## Operand hand-offs\n\n";
    for (const json& h : fused_pairs)
      md += fmt::format("- {} → {}: {}'s kernel writes `{}` as {}'s pre-split A operand (image format `{}`) "
                        "instead of in fp32, and {} skips its A pre-pass. The pair runs as one unit (with the "
                        "pairs it chains with); the per-pattern times above are the separate kernels'.\n",
                        h.value("producer", ""), h.value("consumer", ""), h.value("producer", ""),
                        h.value("tensor", ""), h.value("consumer", ""), h.value("format", ""),
                        h.value("consumer", ""));
    for (const json& h : unfused_pairs)
      md += fmt::format("- {} → {} (`{}`) not handed off: {}\n", h.value("producer", ""), h.value("consumer", ""),
                        h.value("tensor", ""), cell(h.value("reason", "")));
  }

  md += "\n## Candidates\n\n";
  for (const json& outcome : realized.value("patterns", json::array())) {
    md += fmt::format("### {}\n\n", outcome.value("id", ""));
    if (outcome.value("status", "") != "realized")
      md += fmt::format("Fallback reason: {}\n\n", outcome.value("reason", "(none given)"));
    if (outcome.value("verification_reused", false))
      md += "Winner reused from the registry with the verification and timing recorded for this kernel binary "
            "(not verified again; `--reverify` does).\n\n";
    else if (outcome.value("from_registry", false))
      md += "Winner reused from the registry (verified again, not re-tuned).\n\n";
    if (outcome.contains("left_to_pytorch") && !outcome["left_to_pytorch"].empty()) {
      std::string chain;
      for (const json& node : outcome["left_to_pytorch"]) chain += (chain.empty() ? "`" : ", `") + node.get<std::string>() + "`";
      md += fmt::format("The kernel computes the GEMM core only; the epilogue chain {} runs in PyTorch (no EVT "
                        "candidate was realized for it).\n\n", chain);
    }
    if (outcome.contains("fused_epilogue") && outcome["fused_epilogue"].is_object()) {
      const json& fused = outcome["fused_epilogue"];
      std::string inputs;
      for (const json& in : fused.value("inputs", json::array()))
        inputs += fmt::format("{}`{}` ({})", inputs.empty() ? "" : ", ", in.value("tensor", ""), in.value("kind", ""));
      md += fmt::format("Epilogue chain fused: the kernel's epilogue computes the whole chain up to `{}` "
                        "(chain key {}{}).\n\n", fused.value("output", ""), fused.value("key", ""),
                        inputs.empty() ? std::string() : "; it reads " + inputs);
    }
    const json candidates = outcome.value("candidates", json::array());
    if (candidates.empty()) {
      md += "No candidates were tried.\n\n";
      continue;
    }
    md += "| candidate | status | median ms | reason |\n|---|---|---|---|\n";
    for (const json& candidate : candidates) {
      // Only a candidate that passed was timed; other statuses carry no time.
      const std::string status = candidate.value("status", "");
      const bool timed = status == "ok" || status == "winner";
      md += fmt::format("| {} | {} | {} | {} |\n", candidate.value("name", ""), status,
                        timed ? number_or_dash(candidate, "median_ms", "{:.3f}") : "–",
                        cell(candidate.value("reason", "")));
    }
    md += "\n";
  }

  md += "## Left to PyTorch\n\n";
  const json unmatched = plan.value("unmatched", json::array());
  if (unmatched.empty()) md += "Every op is covered by a pattern (the nodes of a pattern that fell back run in PyTorch).\n";
  for (const json& entry : unmatched)
    md += fmt::format("- `{}` ({}): {}\n", entry.value("node", ""), entry.value("op", ""), entry.value("reason", ""));
  const json rejections = plan.value("rejections", json::array());
  if (!rejections.empty()) {
    md += "\n### Rule guards that rejected a match\n\n";
    for (const json& entry : rejections)
      md += fmt::format("- `{}` by rule `{}`: {}\n", entry.value("node", ""), entry.value("rule", ""),
                        entry.value("reason", ""));
  }
  return md;
}

}  // namespace fact
