-- Lua scripts the daemon runs in Redis (EVALSHA), one per "-- name:" block. A script runs
-- atomically, which is what makes publishing a result exactly once possible.

-- name: publish_results
-- Publishes the final results of a batch of jobs (SPEC section 4), each with: the result key,
-- the status key, a notice on the results stream, and the counters and id set of its batch.
-- Returns one reply per job: 1 when published, 0 when not, because the id already has a `done`
-- result (results are exactly once) or this very delivery was published before (a retry
-- after a lost reply).
--   ARGV[1] TTL in seconds, ARGV[2] notice stream MAXLEN; then 8 values per job:
--     result JSON, status, job id, stream entry id, batch name ('' when none),
--     prompt tokens, completion tokens, finish time (ms since the epoch)
--   KEYS[1] the notice stream; then 4 keys per job:
--     result key, status key, batch hash, batch id set (the last two unused without a batch)
local ttl, maxlen = ARGV[1], ARGV[2]
local published = {}
for job = 0, (#ARGV - 2) / 8 - 1 do
  local a, k = 2 + 8 * job, 1 + 4 * job
  local result, status, id, entry, batch = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local result_key, status_key, batch_key, ids_key = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local publish = 1
  local old = redis.call('GET', result_key)
  if old then
    local ok, prev = pcall(cjson.decode, old)
    if ok and type(prev) == 'table' then
      if prev.status == 'done' or prev.entry == entry then
        publish = 0
      elseif batch ~= '' and prev.batch == batch and type(prev.status) == 'string' then
        -- A failed or cancelled job submitted again under its id: take back what it counted.
        local usage = type(prev.usage) == 'table' and prev.usage or {}
        redis.call('HINCRBY', batch_key, prev.status, -1)
        redis.call('HINCRBY', batch_key, 'prompt_tokens', -(tonumber(usage.prompt_tokens) or 0))
        redis.call('HINCRBY', batch_key, 'completion_tokens', -(tonumber(usage.completion_tokens) or 0))
      end
    end
  end
  if publish == 1 then
    redis.call('SET', result_key, result, 'EX', ttl)
    redis.call('SET', status_key, status, 'EX', ttl)
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'id', id, 'status', status)
    if batch ~= '' then
      redis.call('HINCRBY', batch_key, status, 1)
      redis.call('HINCRBY', batch_key, 'prompt_tokens', ARGV[a + 6])
      redis.call('HINCRBY', batch_key, 'completion_tokens', ARGV[a + 7])
      redis.call('HSETNX', batch_key, 'first_finished_at', ARGV[a + 8])
      redis.call('HSET', batch_key, 'last_finished_at', ARGV[a + 8])
      redis.call('SADD', ids_key, id)
      redis.call('EXPIRE', batch_key, ttl)
      redis.call('EXPIRE', ids_key, ttl)
    end
  end
  published[job + 1] = publish
end
return published
