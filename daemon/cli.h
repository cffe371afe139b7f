// Subcommand registration for the awqd executable. Each subcommand lives in its own file and
// adds itself to the CLI11 app with a callback; the callback's return value becomes the exit
// code (0 success, 1 failure). Bad usage (unknown flag, missing argument) exits 2.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace awqd {
struct EngineConfig;
struct SamplingParams;
}  // namespace awqd

namespace awqd::cli {

// Where a subcommand's callback stores its exit code (main returns it).
int& exit_code();

// Wraps a subcommand body: runs it, turns exceptions into "awqd <name>: error: ..." and exit 1.
void set_action(CLI::App* sub, std::function<int()> body);

// Parses the command line, runs the chosen subcommand, and returns the exit code: the
// subcommand's, 0 for --help/--version, 2 for bad usage.
int run_app(CLI::App& app, int argc, char** argv);

// Shared flag groups (daemon/cmd_generate.cc).
void add_engine_flags(CLI::App* sub, ::awqd::EngineConfig& config);
void add_sampling_flags(CLI::App* sub, ::awqd::SamplingParams& params);

// Subcommand registration, one function per file (cmd_*.cc).
void add_generate_commands(CLI::App& app);  // generate, import-llama2c
void add_perplexity_command(CLI::App& app);
void add_quantize_command(CLI::App& app);
void add_synth_command(CLI::App& app);
void add_tokenize_commands(CLI::App& app);  // tokenize, detokenize
void add_bench_command(CLI::App& app);      // bench

}  // namespace awqd::cli
