// The daemon's subcommands (SPEC section 6). Each lives in its own cmd_*.cc file and adds itself
// to the app; main.cc calls these.
#pragma once

#include <CLI/CLI.hpp>

namespace awqd::cli {

void add_serve_command(CLI::App& app);    // awqd serve
void add_status_command(CLI::App& app);   // awqd status [JOB_ID] [--batch NAME] [--json] [--watch]
void add_submit_command(CLI::App& app);   // awqd submit (--prompt TEXT | --file jobs.jsonl) ...
void add_cancel_command(CLI::App& app);   // awqd cancel JOB_ID... | --batch NAME
void add_results_command(CLI::App& app);  // awqd results --batch NAME

}  // namespace awqd::cli
