-- Lua scripts the daemon runs in Redis (EVALSHA), one per "-- name:" block. A script runs
-- atomically, which is what makes publishing a result exactly once possible.

-- name: publish_result
-- Publishes a job's final result (SPEC section 4): the result key, the status key, a notice on
-- the results stream, and the batch's counters and id set. Returns 1 when published, 0 when it
-- was not: the id already has a `done` result (results are exactly once), or this very
-- delivery was published before (a retry after a lost reply).
--   KEYS[1] result key, KEYS[2] status key, KEYS[3] notice stream,
--   KEYS[4] batch hash, KEYS[5] batch id set (both only when the job has a batch)
--   ARGV[1] result JSON, ARGV[2] status, ARGV[3] job id, ARGV[4] stream entry id,
--   ARGV[5] TTL in seconds, ARGV[6] notice stream MAXLEN, ARGV[7] batch name ('' when none),
--   ARGV[8] prompt tokens, ARGV[9] completion tokens, ARGV[10] finish time (ms since the epoch)
local old = redis.call('GET', KEYS[1])
if old then
  local ok, prev = pcall(cjson.decode, old)
  if ok and type(prev) == 'table' then
    if prev.status == 'done' or prev.entry == ARGV[4] then return 0 end
    -- A failed or cancelled job submitted again under its id: take back what it counted.
    if ARGV[7] ~= '' and prev.batch == ARGV[7] and type(prev.status) == 'string' then
      redis.call('HINCRBY', KEYS[4], prev.status, -1)
      local usage = type(prev.usage) == 'table' and prev.usage or {}
      redis.call('HINCRBY', KEYS[4], 'prompt_tokens', -(tonumber(usage.prompt_tokens) or 0))
      redis.call('HINCRBY', KEYS[4], 'completion_tokens', -(tonumber(usage.completion_tokens) or 0))
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[5])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[5])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'id', ARGV[3], 'status', ARGV[2])
if ARGV[7] ~= '' then
  redis.call('HINCRBY', KEYS[4], ARGV[2], 1)
  redis.call('HINCRBY', KEYS[4], 'prompt_tokens', ARGV[8])
  redis.call('HINCRBY', KEYS[4], 'completion_tokens', ARGV[9])
  redis.call('HSETNX', KEYS[4], 'first_finished_at', ARGV[10])
  redis.call('HSET', KEYS[4], 'last_finished_at', ARGV[10])
  redis.call('SADD', KEYS[5], ARGV[3])
  redis.call('EXPIRE', KEYS[4], ARGV[5])
  redis.call('EXPIRE', KEYS[5], ARGV[5])
end
return 1
