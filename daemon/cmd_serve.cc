// awqd serve: the daemon.
#include <memory>
#include <stdexcept>

#include "daemon/cli.h"
#include "daemon/commands.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/logging.h"

namespace awqd::cli {

CLI::App* add_serve_command(CLI::App& app, RunnerFactoryFor runners) {
  auto* sub = app.add_subcommand(
      "serve",
      "Run the daemon: jobs from the Redis stream through the engine to Redis results and SQLite");
  auto options = std::make_shared<ConfigOptions>(sub, ConfigScope::kServe);
  set_action(sub, [options, runners = std::move(runners)] {
    const DaemonConfig config = options->load();
    setup_logging(config.log_level);
    if (config.model.empty()) {
      throw std::invalid_argument("no model: set `model` in the config file or pass --model DIR");
    }
    Daemon daemon(config, runners(config));
    return daemon.run();
  });
  return sub;
}

}  // namespace awqd::cli
