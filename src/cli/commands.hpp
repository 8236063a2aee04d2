// Sub-command registration for the `fact` CLI. Each register_* adds one group of
// sub-commands to the root app; a sub-command's callback stores its exit status
// in *exit_code (0 ok, 2 bad input, 1 anything else).
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace fact::cli {

void register_capture(CLI::App& app, int* exit_code);
void register_pipeline(CLI::App& app, int* exit_code);  // discover, realize, compose, optimize
void register_registry(CLI::App& app, int* exit_code);
void register_env(CLI::App& app, int* exit_code);       // env, doctor

// Runs `$FACT_PYTHON -m fact.capture FILE -o OUT` and validates what it wrote.
int run_capture(const std::string& file, const std::string& output);

// One clear line for an input file that is missing or not a regular file; true if usable.
bool check_input_file(const std::string& command, const std::string& path);

}  // namespace fact::cli
