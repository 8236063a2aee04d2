// `fact`: one sub-command per pipeline stage plus tooling (docs/CONTRACTS.md).
// Exit codes: 0 ok, 2 bad input or usage (one clear line on stderr), 1 other failures.
#include <exception>

#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "fact/log.hpp"

int main(int argc, char** argv) {
  CLI::App app{"FACT: Framework for Agentic CUTLASS Transpilation.\n"
               "Turns a PyTorch module into verified, auto-tuned CUTLASS kernels: capture -> discover -> "
               "realize -> compose.",
               "fact"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("fact 0.1.0"));
  int exit_code = 0;
  fact::cli::register_capture(app, &exit_code);
  fact::cli::register_pipeline(app, &exit_code);
  fact::cli::register_registry(app, &exit_code);
  fact::cli::register_env(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // prints the message and usage hint
    return 2;
  } catch (const std::exception& e) {
    fact::log::error("{}", e.what());
    return 1;
  }
  return exit_code;
}
