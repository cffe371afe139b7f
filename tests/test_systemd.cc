// systemd/awqd.service and awqd@.service: `systemd-analyze verify` accepts them without a single
// message, and they keep the properties the daemon relies on (Type=notify, hardening, state
// directory, restart on failure).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "tests/daemon_harness.h"

namespace awqd {
namespace {

namespace fs = std::filesystem;

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A copy of the unit whose ExecStart runs the binary just built (verify checks it exists).
void install(const std::string& unit, const fs::path& dir, const fs::path& as) {
  const std::string text = read(fs::path(AWQD_SOURCE_DIR) / "systemd" / unit);
  std::ofstream(dir / as) << std::regex_replace(text, std::regex("/usr/local/bin/awqd"),
                                                AWQD_BINARY);
}

TEST(Systemd, UnitsVerifyCleanly) {
  if (test::run_command({"sh", "-c", "command -v systemd-analyze"}) != 0)
    GTEST_SKIP() << "no systemd-analyze";
  test::TempDir dir;
  install("awqd.service", dir.path, "awqd.service");
  install("awqd@.service", dir.path, "awqd@.service");
  fs::create_symlink("awqd@.service", dir.path / "awqd@gpu0.service");
  std::string out;
  const int rc = test::run_command(
      {"systemd-analyze", "verify", "--man=no", (dir.path / "awqd.service").string(),
       (dir.path / "awqd@gpu0.service").string()},
      &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(out, "") << "systemd-analyze has something to say";
}

TEST(Systemd, UnitsKeepWhatTheDaemonNeeds) {
  for (const char* unit : {"awqd.service", "awqd@.service"}) {
    const std::string text = read(fs::path(AWQD_SOURCE_DIR) / "systemd" / unit);
    for (const char* line :
         {"Type=notify", "NoNewPrivileges=yes", "ProtectSystem=strict", "Restart=on-failure",
          "WatchdogSec=", "TimeoutStopSec=", "CapabilityBoundingSet=\n", "PrivateTmp=yes"}) {
      EXPECT_NE(text.find(line), std::string::npos) << unit << " lacks " << line;
    }
    EXPECT_EQ(text.find("PrivateDevices=yes"), std::string::npos)
        << unit << ": the GPUs must stay visible";
    EXPECT_NE(text.find("StateDirectory=awqd"), std::string::npos) << unit;
    EXPECT_NE(text.find("RuntimeDirectory=awqd"), std::string::npos) << unit;
  }
  EXPECT_NE(read(fs::path(AWQD_SOURCE_DIR) / "systemd" / "awqd@.service").find("--consumer %H-%i"),
            std::string::npos);
}

}  // namespace
}  // namespace awqd
