// `awqd serve`: Redis stream -> engine threads -> Redis results + SQLite (SPEC sections 4-6, 9).
// The threading contract is in docs/ARCHITECTURE.md ("Daemon threads"); the protocol in
// README.md ("The Redis protocol").
#pragma once

#include <memory>

#include "daemon/config.h"
#include "daemon/runner.h"

namespace awqd {

class Daemon {
 public:
  // Builds nothing yet: run() does the work, so that errors surface there with an exit code.
  Daemon(DaemonConfig config, RunnerFactory factory);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Serves until SIGTERM/SIGINT (or request_stop()) and the drain that follows are done.
  // Returns the exit code: 0 after a clean drain, 1 after a fatal error (logged).
  int run();

  // Starts the drain, as SIGTERM does. Thread-safe; a no-op before run() or after it returned.
  void request_stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace awqd
