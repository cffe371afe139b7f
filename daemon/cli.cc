#include "daemon/cli.h"

#include <cstdio>
#include <exception>

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

int run_app(CLI::App& app, int argc, char** argv) {
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
  return exit_code();
}

}  // namespace awqd::cli
