// awqd: batch inference daemon for 4-bit AWQ models. This file only assembles the subcommands;
// each lives in its own file (SPEC section 6).
#include <string>

#include "daemon/cli.h"
#include "daemon/commands.h"
#include "daemon/engine_runner.h"
#include "engine/version.h"

int main(int argc, char** argv) {
  CLI::App app{
      "awqd: batch inference daemon for 4-bit AWQ models (Redis queue -> CUDA engine -> SQLite)"};
  app.set_version_flag("--version", std::string("awqd ") + awqd::kVersion);
  app.require_subcommand(1);
  awqd::cli::add_serve_command(app, awqd::engine_runner_factory);
  awqd::cli::add_status_command(app);
  awqd::cli::add_submit_command(app);
  awqd::cli::add_cancel_command(app);
  awqd::cli::add_results_command(app);
  awqd::cli::add_generate_commands(app);
  awqd::cli::add_perplexity_command(app);
  awqd::cli::add_quantize_command(app);
  awqd::cli::add_synth_command(app);
  awqd::cli::add_tokenize_commands(app);
  awqd::cli::add_bench_command(app);
  return awqd::cli::run_app(app, argc, argv);
}
