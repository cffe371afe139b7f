// awqd: batch inference daemon for 4-bit AWQ models. This file only assembles the subcommands;
// each lives in its own file (SPEC section 6).
#include <cstdio>
#include <exception>
#include <string>

#include "daemon/cli.h"
#include "daemon/commands.h"
#include "engine/version.h"

namespace awqd::cli {

int& exit_code() {
  static int code = 0;
  return code;
}

void set_action(CLI::App* sub, std::function<int()> body) {
  sub->callback([sub, body = std::move(body)] {
    try {
      exit_code() = body();
    } catch (const CLI::Error&) {
      throw;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "awqd %s: error: %s\n", sub->get_name().c_str(), e.what());
      exit_code() = 1;
    }
  });
}

}  // namespace awqd::cli

int main(int argc, char** argv) {
  CLI::App app{"awqd: batch inference daemon for 4-bit AWQ models (Redis queue -> CUDA engine -> SQLite)"};
  app.set_version_flag("--version", std::string("awqd ") + awqd::kVersion);
  app.require_subcommand(1);
  awqd::cli::add_serve_command(app);
  awqd::cli::add_status_command(app);
  awqd::cli::add_submit_command(app);
  awqd::cli::add_cancel_command(app);
  awqd::cli::add_results_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  return awqd::cli::exit_code();
}
