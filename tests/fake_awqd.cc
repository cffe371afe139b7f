// awqd with the fake runner (tests/fake_runner.h) in the engine's place: the same subcommands and
// the same daemon, for process-level tests (kill -9, SIGTERM, the CLI) and the daemon benchmark,
// none of which needs a model. Built with the tests, never installed.
//
//   fake_awqd serve [awqd serve flags] [--fake-step-ms N] [--fake-max-tokens N]
#include <chrono>
#include <memory>

#include "daemon/cli.h"
#include "daemon/commands.h"
#include "tests/fake_runner.h"

int main(int argc, char** argv) {
  using namespace awqd;
  CLI::App app{"awqd with a fake engine (tests only)"};
  app.require_subcommand(1);
  auto options = std::make_shared<test::FakeRunnerOptions>();
  auto step_ms = std::make_shared<double>(0);
  CLI::App* serve =
      cli::add_serve_command(app, [options, step_ms](const DaemonConfig& config) -> RunnerFactory {
        test::FakeRunnerOptions o = *options;
        o.max_num_seqs = config.max_num_seqs;
        o.step_delay = std::chrono::microseconds(static_cast<long>(*step_ms * 1000));
        return [o](int) { return std::make_unique<test::FakeRunner>(o); };
      });
  serve->add_option("--fake-step-ms", *step_ms, "milliseconds each fake engine step takes");
  serve->add_option("--fake-max-tokens", options->max_tokens_cap, "tokens per job at most");
  cli::add_status_command(app);
  cli::add_submit_command(app);
  cli::add_cancel_command(app);
  cli::add_results_command(app);
  return cli::run_app(app, argc, argv);
}
