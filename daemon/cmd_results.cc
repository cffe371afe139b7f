// awqd results --batch NAME: a batch's results as JSON lines (one result document per line, keyed
// by its "id", sorted by id), from Redis (every instance's work) or this daemon's database.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "daemon/cli.h"
#include "daemon/commands.h"
#include "daemon/config.h"
#include "daemon/record.h"
#include "daemon/redis.h"
#include "daemon/store.h"

namespace awqd::cli {
namespace {

struct ResultsArgs {
  std::string batch;
  std::string source = "redis";
};

int from_redis(const DaemonConfig& c, const ResultsArgs& a) {
  RedisSync redis(parse_redis_url(c.redis));
  const RedisKeys keys{c.prefix};
  std::vector<std::string> ids;
  std::string cursor = "0";
  do {
    const RedisReply r = redis.command({"SSCAN", keys.batch_ids(a.batch), cursor, "COUNT", "1000"});
    if (r.elements.size() != 2) throw std::runtime_error("unexpected SSCAN reply: " + r.str);
    cursor = r.elements[0].str;
    for (const auto& e : r.elements[1].elements) ids.push_back(e.str);
  } while (cursor != "0");
  std::sort(ids.begin(), ids.end());
  std::size_t printed = 0;
  for (std::size_t i = 0; i < ids.size(); i += 1000) {
    std::vector<std::string> args{"MGET"};
    for (std::size_t k = i; k < std::min(ids.size(), i + 1000); ++k)
      args.push_back(keys.result(ids[k]));
    for (const auto& r : redis.command(args).elements) {
      if (r.nil()) continue;  // expired (result_ttl_s)
      std::fwrite(r.str.data(), 1, r.str.size(), stdout);
      std::fputc('\n', stdout);
      ++printed;
    }
  }
  std::fflush(stdout);  // the summary goes after the data even when both streams share a pipe
  std::fprintf(stderr, "%zu result(s) of batch %s\n", printed, a.batch.c_str());
  return printed > 0 ? 0 : 1;
}

int from_db(const DaemonConfig& c, const ResultsArgs& a) {
  if (!std::filesystem::exists(c.db))
    throw std::runtime_error("no database at " + c.db + " (set --db)");
  Store store(c.db, /*read_only=*/true);
  std::size_t printed = 0;
  store.for_each_job_of_batch(a.batch, [&](const JobRecord& r) {
    if (!is_final(r.status)) return;
    std::printf("%s\n", result_text(r).c_str());
    ++printed;
  });
  std::fflush(stdout);
  std::fprintf(stderr, "%zu result(s) of batch %s in %s\n", printed, a.batch.c_str(), c.db.c_str());
  return printed > 0 ? 0 : 1;
}

}  // namespace

void add_results_command(CLI::App& app) {
  auto* sub = app.add_subcommand("results", "Export a batch's results as JSON lines");
  auto options = std::make_shared<ConfigOptions>(sub, ConfigScope::kClient);
  auto args = std::make_shared<ResultsArgs>();
  sub->add_option("--batch", args->batch, "the batch")->required();
  sub->add_option("--source", args->source, "redis (every instance) or db (this daemon's SQLite)")
      ->check(CLI::IsMember({"redis", "db"}))
      ->capture_default_str();
  set_action(sub, [options, args] {
    const DaemonConfig config = options->load();
    return args->source == "db" ? from_db(config, *args) : from_redis(config, *args);
  });
}

}  // namespace awqd::cli
