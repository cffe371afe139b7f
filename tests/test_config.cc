// Configuration: TOML file, flags, precedence, validation (SPEC section 6).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "daemon/config.h"
#include "daemon/redis.h"

namespace awqd {
namespace {

// The error a config file's text gets ("" when it loads).
std::string error_of(const std::string& toml) {
  try {
    config_from_toml(toml, "bad.toml");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(Config, ReadsEveryKindOfKey) {
  const DaemonConfig c = config_from_toml(R"(
model = "/models/llama"
redis = "redis://10.0.0.5:6380/2"
prefix = "test:"
db = "/tmp/x.db"
device = "cpu"
control_socket = "/tmp/awqd.sock"
metrics_port = 9999
consumer = "node-a"
tensor_parallel = 3
replicas = 1
gpus = [0, 1, 2]
gpu_memory_utilization = 0.8
max_attempts = 5
visibility_timeout_s = 60
result_ttl_s = 3600
prefix_caching = false
)",
                                          "test.toml");
  EXPECT_EQ(c.model, "/models/llama");
  EXPECT_EQ(c.redis, "redis://10.0.0.5:6380/2");
  EXPECT_EQ(c.prefix, "test:");
  EXPECT_EQ(c.device, "cpu");
  EXPECT_EQ(c.metrics_port, 9999);
  EXPECT_EQ(c.consumer, "node-a");
  EXPECT_EQ(c.tensor_parallel, 3);
  EXPECT_EQ(c.gpus, (std::vector<int>{0, 1, 2}));
  EXPECT_DOUBLE_EQ(c.gpu_memory_utilization, 0.8);
  EXPECT_EQ(c.max_attempts, 5);
  EXPECT_EQ(c.visibility_timeout_s, 60);
  EXPECT_EQ(c.result_ttl_s, 3600);
  EXPECT_FALSE(c.prefix_caching);
}

TEST(Config, DefaultsFollowTheSpec) {
  const DaemonConfig c = config_from_toml("", "empty.toml");
  EXPECT_EQ(c.redis, "redis://127.0.0.1:6379");
  EXPECT_EQ(c.prefix, "awqd:");
  EXPECT_EQ(c.db, "/var/lib/awqd/awqd.db");
  EXPECT_EQ(c.max_attempts, 3);
  EXPECT_EQ(c.result_ttl_s, 7 * 24 * 3600);
  EXPECT_DOUBLE_EQ(c.gpu_memory_utilization, 0.90);
  EXPECT_NE(c.consumer.find(':'), std::string::npos) << "default consumer is host:pid";
  EXPECT_NE(c.consumer.find(std::to_string(getpid())), std::string::npos);
}

TEST(Config, ClearErrors) {
  EXPECT_NE(error_of("modle = \"x\"").find("unknown key `modle`"), std::string::npos);
  EXPECT_NE(error_of("max_attempts = \"three\"").find("`max_attempts` must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of("max_attempts = 0").find("max_attempts"), std::string::npos);
  EXPECT_NE(error_of("device = \"tpu\"").find("device"), std::string::npos);
  EXPECT_NE(error_of("redis = \"http://x\"").find("bad Redis URL"), std::string::npos);
  EXPECT_NE(error_of("gpus = [0, 1]").find("gpus"), std::string::npos);
  EXPECT_NE(error_of("fp16_weight_cache = \"maybe\"").find("fp16_weight_cache"), std::string::npos);
  EXPECT_NE(error_of("model = ").find("bad.toml:1"), std::string::npos);
}

TEST(Config, GpuGroupsGiveEachReplicaItsGpus) {
  using G = std::vector<std::vector<int>>;
  EXPECT_EQ(config_from_toml("", "a.toml").engine_gpu_groups(), (G{{0}}));
  EXPECT_EQ(config_from_toml("tensor_parallel = 2\nreplicas = 2", "a.toml").engine_gpu_groups(),
            (G{{0, 1}, {2, 3}}));
  EXPECT_EQ(config_from_toml("tensor_parallel = 2\nreplicas = 2\ngpus = [3, 2, 1, 0]", "a.toml")
                .engine_gpu_groups(),
            (G{{3, 2}, {1, 0}}));
  EXPECT_EQ(config_from_toml("gpu_groups = \"[[0,1],[2]]\"", "a.toml").engine_gpu_groups(),
            (G{{0, 1}, {2}}));
  EXPECT_NE(error_of("gpu_groups = \"[[0],[0]]\"").find("more than one place"), std::string::npos);
  EXPECT_NE(error_of("gpu_groups = \"[0, 1]\"").find("gpu_groups"), std::string::npos);
  EXPECT_NE(error_of("gpu_groups = \"[[0],[1]]\"\nreplicas = 2").find("used alone"),
            std::string::npos);
}

TEST(Config, FlagsWinOverTheFile) {
  char path[] = "/tmp/awqd-config-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path)
      << "prefix = \"file:\"\nmax_attempts = 7\ncontrol_socket = \"/tmp/file.sock\"\n";
  CLI::App app;
  ConfigOptions options(&app, ConfigScope::kServe);
  const char* argv[] = {"awqd",           "--config", path, "--prefix", "flag:", "--control-socket",
                        "/tmp/flag.sock", "--gpus",   "3"};
  app.parse(static_cast<int>(std::size(argv)), const_cast<char**>(argv));
  const DaemonConfig c = options.load();
  std::filesystem::remove(path);
  EXPECT_EQ(c.prefix, "flag:");
  EXPECT_EQ(c.control_socket, "/tmp/flag.sock");
  EXPECT_EQ(c.max_attempts, 7);
  EXPECT_EQ(c.gpus, std::vector<int>{3});
}

TEST(Config, AnExplicitFileMustExist) {
  CLI::App app;
  ConfigOptions options(&app, ConfigScope::kClient);
  const char* argv[] = {"awqd", "--config", "/nonexistent/awqd.toml"};
  app.parse(3, const_cast<char**>(argv));
  EXPECT_THROW(options.load(), std::runtime_error);
}

TEST(RedisUrl, Forms) {
  auto e = parse_redis_url("redis://127.0.0.1:6379");
  EXPECT_EQ(e.host, "127.0.0.1");
  EXPECT_EQ(e.port, 6379);
  e = parse_redis_url("redis://:secret@example.org:7000/3");
  EXPECT_EQ(e.host, "example.org");
  EXPECT_EQ(e.port, 7000);
  EXPECT_EQ(e.password, "secret");
  EXPECT_EQ(e.db, 3);
  EXPECT_EQ(e.describe(), "redis://example.org:7000/3");  // no password in logs
  e = parse_redis_url("redis://localhost");
  EXPECT_EQ(e.port, 6379);
  e = parse_redis_url("unix:///run/redis/redis.sock?db=1");
  EXPECT_EQ(e.unix_path, "/run/redis/redis.sock");
  EXPECT_EQ(e.db, 1);
  EXPECT_THROW(parse_redis_url("redis://host:notaport"), std::invalid_argument);
  EXPECT_THROW(parse_redis_url("unix://relative.sock"), std::invalid_argument);
  EXPECT_THROW(parse_redis_url("tcp://x"), std::invalid_argument);
}

TEST(RedisKeys, Names) {
  const RedisKeys k{"awqd:"};
  EXPECT_EQ(k.jobs(), "awqd:jobs");
  EXPECT_EQ(k.results(), "awqd:results");
  EXPECT_EQ(k.dead(), "awqd:dead");
  EXPECT_EQ(k.result("x"), "awqd:result:x");
  EXPECT_EQ(k.status("x"), "awqd:status:x");
  EXPECT_EQ(k.cancel("x"), "awqd:cancel:x");
  EXPECT_EQ(entry_time_ms("1700000000123-7"), 1700000000123);
}

}  // namespace
}  // namespace awqd
