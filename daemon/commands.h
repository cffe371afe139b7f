// The daemon's subcommands (SPEC section 6). Each lives in its own cmd_*.cc file and adds itself
// to the app; main.cc calls these. They are in the awqd_daemon library, which has no engine
// code, so that tests can build an awqd with a test double in the engine's place.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

#include "daemon/config.h"
#include "daemon/runner.h"

namespace awqd::cli {

// awqd serve. `runners` picks what runs the jobs: the engine in the product
// (engine_runner_factory), a test double in tests/fake_awqd.cc. Returns the subcommand, for
// extra flags.
using RunnerFactoryFor = std::function<RunnerFactory(const DaemonConfig&)>;
CLI::App* add_serve_command(CLI::App& app, RunnerFactoryFor runners);
void add_status_command(CLI::App& app);   // awqd status [JOB_ID] [--batch NAME] [--json] [--watch]
void add_submit_command(CLI::App& app);   // awqd submit (--prompt TEXT | --file jobs.jsonl) ...
void add_cancel_command(CLI::App& app);   // awqd cancel JOB_ID... | --batch NAME
void add_results_command(CLI::App& app);  // awqd results --batch NAME

}  // namespace awqd::cli
