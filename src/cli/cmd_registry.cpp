// `fact registry show [--problem KEY]`: what the registry knows.
#include <filesystem>
#include <memory>

#include <fmt/format.h>

#include "commands.hpp"
#include "fact/log.hpp"
#include "fact/registry.hpp"

namespace fact::cli {

namespace {

std::string ms(const std::optional<double>& v) { return v ? fmt::format("{:.4f}", *v) : std::string("-"); }

int show(const std::string& path_arg, const std::string& problem, int limit) {
  const std::string path = path_arg.empty() ? Registry::default_path() : path_arg;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    fmt::print("registry {} does not exist yet (nothing has been realized)\n", path);
    return 0;
  }
  std::unique_ptr<Registry> registry;
  try {
    registry = std::make_unique<Registry>(path);
  } catch (const std::exception& e) {
    log::error("{}", e.what());
    return 2;
  }
  fmt::print("registry {} (schema version {})\n", path, registry->schema_version());
  const auto winners = registry->winners(problem);
  fmt::print("\nwinners{}: {}\n", problem.empty() ? "" : " of " + problem, winners.size());
  for (const auto& w : winners) {
    const double speedup = w.median_ms > 0.0 && w.baseline_ms > 0.0 ? w.baseline_ms / w.median_ms : 0.0;
    fmt::print("  {}  tol {:g}  {}  [{}]  {:.4f} ms vs eager {:.4f} ms ({:.2f}x)  {} {}\n", w.problem_key, w.tolerance,
               w.variant, w.math, w.median_ms, w.baseline_ms, speedup, w.arch, w.updated_at);
  }
  const auto outcomes = problem.empty() ? registry->recent_outcomes(limit) : registry->outcomes_for(problem);
  fmt::print("\n{}: {}\n", problem.empty() ? fmt::format("most recent outcomes (up to {})", limit) : "outcomes",
             outcomes.size());
  for (const auto& o : outcomes) {
    fmt::print("  {}  {}  {}  tol {:g}  {}  [{}]  median {} ms  eager {} ms  max_abs_err {}  fail_frac {}{}\n",
               o.created_at, o.problem_key, o.status, o.tolerance, o.variant, o.math, ms(o.median_ms),
               ms(o.baseline_ms), o.max_abs_err ? fmt::format("{:.3g}", *o.max_abs_err) : "-",
               o.fail_frac ? fmt::format("{:.3g}", *o.fail_frac) : "-", o.reason.empty() ? "" : "  reason: " + o.reason);
  }
  return 0;
}

}  // namespace

void register_registry(CLI::App& app, int* exit_code) {
  struct Args {
    std::string path, problem;
    int limit = 30;
  };
  auto a = std::make_shared<Args>();
  CLI::App* reg = app.add_subcommand("registry", "Inspect the SQLite registry of outcomes and winners");
  reg->require_subcommand(1);
  CLI::App* sub = reg->add_subcommand("show", "List winners and outcomes");
  sub->add_option("--problem", a->problem, "only this problem_key (as in plan.json)");
  sub->add_option("--limit", a->limit, "outcomes to list without --problem")->capture_default_str()->check(
      CLI::PositiveNumber);
  sub->add_option("--registry", a->path, "registry database (default $FACT_REGISTRY)");
  sub->callback([a, exit_code] { *exit_code = show(a->path, a->problem, a->limit); });
}

}  // namespace fact::cli
