// Pipeline sub-commands: discover, realize, compose, and optimize (all of them,
// capture included, into one output folder with the intermediate files in work/).
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "commands.hpp"
#include "fact/compose.hpp"
#include "fact/discover.hpp"
#include "fact/env.hpp"
#include "fact/log.hpp"
#include "fact/realize.hpp"

namespace fact::cli {

namespace fs = std::filesystem;

namespace {

void add_tolerance(CLI::App* sub, std::optional<double>& tolerance) {
  sub->add_option("--tolerance", tolerance,
                  "atol = rtol the result must meet (default: KernelBench's rule, 1e-4 for float32 outputs, "
                  "1e-2 for float16/bfloat16)")
      ->check(CLI::PositiveNumber);
}

void add_variants(CLI::App* sub, std::string& variants) {
  sub->add_option("--variants", variants, "variant set per pattern (default: $FACT_VARIANTS or 'default')")
      ->check(CLI::IsMember({"default", "all"}));
}

std::string choose_arch(const std::string& given) { return given.empty() ? env::arch() : given; }

}  // namespace

void register_pipeline(CLI::App& app, int* exit_code) {
  // ---- discover ----
  {
    struct Args {
      std::string ir, plan = "plan.json", arch, registry;
      std::optional<double> tolerance;
      bool no_registry = false;
    };
    auto a = std::make_shared<Args>();
    CLI::App* sub = app.add_subcommand("discover", "Match rules on a graph IR and write a prioritised plan");
    sub->add_option("graph", a->ir, "graph IR (graph.json)")->required();
    sub->add_option("-o,--output", a->plan, "plan to write")->capture_default_str();
    add_tolerance(sub, a->tolerance);
    sub->add_option("--arch", a->arch, fmt::format("target arch ({}; default $FACT_ARCH or detected)", known_archs()));
    sub->add_option("--registry", a->registry, "registry database (default $FACT_REGISTRY)");
    sub->add_flag("--no-registry", a->no_registry, "plan from the cost model only");
    sub->callback([a, exit_code] {
      if (!check_input_file("fact discover", a->ir)) {
        *exit_code = 2;
        return;
      }
      DiscoverOptions o;
      o.tolerance = a->tolerance;
      o.arch = choose_arch(a->arch);
      o.use_registry = !a->no_registry;
      o.registry_path = a->registry;
      *exit_code = run_discover(a->ir, a->plan, o);
    });
  }

  // ---- realize ----
  {
    struct Args {
      RealizeOptions o;
      std::string variants;
      bool no_registry = false;
    };
    auto a = std::make_shared<Args>();
    a->o.output_path = "realized.json";
    CLI::App* sub = app.add_subcommand(
        "realize", "Emit, compile (parallel, cached), verify and tune kernels for a plan; write realized.json");
    sub->add_option("plan", a->o.plan_path, "plan.json from fact discover")->required();
    sub->add_option("-o,--output", a->o.output_path, "realized.json to write")->capture_default_str();
    add_tolerance(sub, a->o.tolerance);
    sub->add_option("-j,--jobs", a->o.jobs, "parallel nvcc jobs (default $FACT_JOBS or memory-aware)")
        ->check(CLI::PositiveNumber);
    sub->add_flag("--compile-only", a->o.compile_only, "emit and compile only; no GPU needed");
    add_variants(sub, a->variants);
    sub->add_option("--filter", a->o.filter, "only variants whose name contains one of these '|'-separated substrings");
    sub->add_flag("--no-registry", a->no_registry, "do not reuse recorded winners");
    sub->add_flag("--reverify", a->o.reverify, "verify and time a reused registry winner again");
    sub->add_option("--registry", a->o.registry_path, "registry database (default $FACT_REGISTRY)");
    sub->callback([a, exit_code] {
      if (!check_input_file("fact realize", a->o.plan_path)) {
        *exit_code = 2;
        return;
      }
      a->o.use_registry = !a->no_registry;
      a->o.variant_set = a->variants.empty() ? env::variants() : a->variants;
      *exit_code = run_realize(a->o);
    });
  }

  // ---- compose ----
  {
    auto o = std::make_shared<ComposeOptions>();
    CLI::App* sub = app.add_subcommand("compose", "Write the drop-in ModelNew module, kernel libraries and report");
    sub->add_option("realized", o->realized_path, "realized.json from fact realize")->required();
    sub->add_option("-o,--output", o->output_dir, "output folder")->required();
    sub->callback([o, exit_code] {
      if (!check_input_file("fact compose", o->realized_path)) {
        *exit_code = 2;
        return;
      }
      *exit_code = run_compose(*o);
    });
  }

  // ---- optimize ----
  {
    struct Args {
      std::string file, out, arch, variants, filter;
      std::optional<double> tolerance;
      int jobs = 0;
      bool compile_only = false, no_registry = false, reverify = false;
    };
    auto a = std::make_shared<Args>();
    CLI::App* sub = app.add_subcommand("optimize", "capture -> discover -> realize -> compose in one go");
    sub->add_option("file", a->file, "KernelBench-format Python file")->required();
    sub->add_option("-o,--output", a->out, "output folder (default out/<file stem>/)");
    add_tolerance(sub, a->tolerance);
    sub->add_option("-j,--jobs", a->jobs, "parallel nvcc jobs")->check(CLI::PositiveNumber);
    sub->add_flag("--compile-only", a->compile_only, "realize compiles but does not verify (no GPU needed)");
    add_variants(sub, a->variants);
    sub->add_option("--filter", a->filter, "only variants whose name contains one of these '|'-separated substrings");
    sub->add_option("--arch", a->arch, "target arch (default $FACT_ARCH or detected)");
    sub->add_flag("--no-registry", a->no_registry, "ignore recorded winners");
    sub->add_flag("--reverify", a->reverify, "verify and time reused registry winners again");
    sub->callback([a, exit_code] {
      log::Stopwatch total;
      if (!check_input_file("fact optimize", a->file)) {
        *exit_code = 2;
        return;
      }
      const fs::path out = a->out.empty() ? fs::path("out") / fs::path(a->file).stem() : fs::path(a->out);
      const fs::path work = out / "work";
      std::error_code ec;
      fs::create_directories(work, ec);
      if (ec) {
        log::error("fact optimize: cannot create {}: {}", work.string(), ec.message());
        *exit_code = 2;
        return;
      }
      const std::string graph = (work / "graph.json").string();
      const std::string plan = (work / "plan.json").string();
      const std::string realized = (work / "realized.json").string();

      // Runs one stage with its banner and elapsed time; false stops the pipeline.
      auto stage = [&](int index, const char* name, const std::function<int()>& body) {
        log::info("[{}/4] {} ...", index, name);
        log::Stopwatch clock;
        int rc = body();
        if (rc != 0) {
          log::error("fact optimize: {} failed (exit {}) after {:.2f} s; total {:.2f} s", name, rc, clock.seconds(),
                     total.seconds());
          *exit_code = rc;
          return false;
        }
        log::info("[{}/4] {} done in {:.2f} s", index, name, clock.seconds());
        return true;
      };

      if (!stage(1, "capture", [&] { return run_capture(a->file, graph); })) return;
      if (!stage(2, "discover", [&] {
            DiscoverOptions o;
            o.tolerance = a->tolerance;
            o.arch = choose_arch(a->arch);
            o.use_registry = !a->no_registry;
            return run_discover(graph, plan, o);
          })) {
        return;
      }
      if (!stage(3, "realize", [&] {
            RealizeOptions o;
            o.plan_path = plan;
            o.output_path = realized;
            o.tolerance = a->tolerance;
            o.jobs = a->jobs;
            o.compile_only = a->compile_only;
            o.use_registry = !a->no_registry;
            o.reverify = a->reverify;
            o.variant_set = a->variants.empty() ? env::variants() : a->variants;
            o.filter = a->filter;
            return run_realize(o);
          })) {
        return;
      }
      if (!stage(4, "compose", [&] {
            ComposeOptions o;
            o.realized_path = realized;
            o.output_dir = out.string();
            return run_compose(o);
          })) {
        return;
      }
      log::info("fact optimize: wrote {} (intermediate files in {})", out.string(), work.string());
      // stdout, so a harness timing the optimizer can parse it without the progress chatter on stderr.
      fmt::print("fact optimize: done in {:.2f} s\n", total.seconds());
      std::fflush(stdout);
      *exit_code = 0;
    });
  }
}

}  // namespace fact::cli
