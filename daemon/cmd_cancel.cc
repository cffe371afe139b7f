// awqd cancel JOB_ID... | --batch NAME: SET <prefix>cancel:<id> (or cancel-batch:<name>). A
// queued job then never starts; a running one stops within an engine step, keeping its text.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "daemon/cli.h"
#include "daemon/commands.h"
#include "daemon/config.h"
#include "daemon/redis.h"

namespace awqd::cli {
namespace {

struct CancelArgs {
  std::vector<std::string> ids;
  std::string batch;
};

int cancel(const DaemonConfig& c, const CancelArgs& a) {
  RedisSync redis(parse_redis_url(c.redis));
  const RedisKeys keys{c.prefix};
  const std::string ttl = std::to_string(c.result_ttl_s);
  if (!a.batch.empty()) {
    redis.command({"SET", keys.cancel_batch(a.batch), "1", "EX", ttl});
    std::printf(
        "cancel requested for batch %s: its queued jobs will not start, running ones stop\n",
        a.batch.c_str());
  }
  // Every cancel key in one transaction: the daemon polls the keys of its jobs with one MGET, so
  // it sees all of these or none. (Set one by one, a poll between two SETs could stop the running
  // job and start the next queued one before its key arrived.)
  int rc = 0;
  if (a.ids.empty()) return rc;
  std::vector<std::vector<std::string>> commands{{"MULTI"}};
  for (const auto& id : a.ids) commands.push_back({"SET", keys.cancel(id), "1", "EX", ttl});
  commands.push_back({"EXEC"});
  for (const auto& id : a.ids) commands.push_back({"GET", keys.status(id)});
  const auto replies = redis.pipeline(commands);
  for (std::size_t i = 0; i < a.ids.size(); ++i) {
    const std::string& id = a.ids[i];
    const RedisReply& status = replies[a.ids.size() + 2 + i];
    const std::string state = status.nil() ? "" : status.str;
    if (state == "done" || state == "failed" || state == "cancelled") {
      std::printf("%s: already finished (%s); nothing to cancel\n", id.c_str(), state.c_str());
      rc = 1;
    } else {
      std::printf("%s: cancel requested (%s)\n", id.c_str(),
                  state.empty() ? "not seen by a daemon yet" : state.c_str());
    }
  }
  return rc;
}

}  // namespace

void add_cancel_command(CLI::App& app) {
  auto* sub =
      app.add_subcommand("cancel", "Cancel jobs (queued ones never start; running ones stop)");
  auto options = std::make_shared<ConfigOptions>(sub, ConfigScope::kClient);
  auto args = std::make_shared<CancelArgs>();
  auto* ids = sub->add_option("JOB_ID", args->ids, "ids of the jobs to cancel");
  auto* batch = sub->add_option("--batch", args->batch, "cancel every job of this batch");
  set_action(sub, [options, args, ids, batch] {
    if (ids->count() == 0 && batch->count() == 0) throw CLI::RequiredError("JOB_ID or --batch");
    return cancel(options->load(), *args);
  });
}

}  // namespace awqd::cli
