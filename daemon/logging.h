// Logging for the daemon and the CLI. Under systemd (stderr connected to the journal, as
// $JOURNAL_STREAM says) records go to journald with their priority and no timestamp of our own;
// elsewhere to stderr with time and level.
#pragma once

#include <string>

namespace awqd {

// `level`: trace | debug | info | warn | error. `ident` is the journal's SYSLOG_IDENTIFIER.
void setup_logging(const std::string& level, const std::string& ident = "awqd");

}  // namespace awqd
