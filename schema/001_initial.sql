-- awqd store, version 1 (SPEC section 5). Applied once, in a transaction, by daemon/store.cc;
-- PRAGMA user_version records it. Never edit a shipped migration: add 002_*.sql instead.
--
-- Times are milliseconds since the Unix epoch (UTC). JSON columns hold compact JSON text.

-- One row per job id. A job delivered again (after a crash, a retry, or a new submission with
-- the same id) updates its row; a `done` row is final and is never overwritten.
CREATE TABLE jobs (
  id                   TEXT PRIMARY KEY,   -- the caller's `id`, else the stream entry id
  stream               TEXT NOT NULL,      -- stream key the job came from (awqd:jobs, ...)
  entry_id             TEXT NOT NULL,      -- stream entry of the latest delivery
  batch                TEXT,
  status               TEXT NOT NULL
                       CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
  priority             INTEGER NOT NULL DEFAULT 0,
  attempts             INTEGER NOT NULL DEFAULT 0,   -- the stream's delivery count
  prompt_kind          TEXT CHECK (prompt_kind IN ('text', 'messages', 'token_ids')),
  prompt               TEXT,               -- the text, or the JSON of messages / token ids
  params               TEXT,               -- JSON: the sampling parameters as run
  metadata             TEXT,               -- JSON: the caller's metadata, echoed in the result
  result_text          TEXT,
  token_ids            TEXT,               -- JSON array of generated ids
  logprobs             TEXT,               -- JSON, only when the job asked for logprobs
  finish_reason        TEXT,               -- stop | length | cancelled | error
  error_code           TEXT,
  error_message        TEXT,
  queued_at            INTEGER,            -- the XADD time (from the stream entry id)
  started_at           INTEGER,            -- admitted to the engine
  first_token_at       INTEGER,
  finished_at          INTEGER,
  prompt_tokens        INTEGER,
  cached_prompt_tokens INTEGER,            -- served from the prefix cache
  completion_tokens    INTEGER,
  model                TEXT,
  model_hash           TEXT,
  engine_version       TEXT,
  seed                 INTEGER,
  instance             TEXT                -- the consumer name of the daemon that ran it
);
-- Batch progress and export read by batch. No other index: each costs every one of the three
-- writes a job makes, and the other reads (recent jobs, counts by status) are rare.
CREATE INDEX jobs_batch_status ON jobs (batch, status);

-- Token statistics per job, derived from the job rows.
CREATE VIEW job_stats AS
SELECT id, batch, status, prompt_tokens, cached_prompt_tokens, completion_tokens,
       started_at - queued_at AS queued_ms,
       first_token_at - started_at AS ttft_ms,
       finished_at - queued_at AS total_ms,
       CASE WHEN finished_at > first_token_at AND completion_tokens > 1
            THEN (completion_tokens - 1) * 1000.0 / (finished_at - first_token_at) END
         AS decode_tokens_per_s
FROM jobs;

-- Per-minute engine rollups, one row per (minute, instance); a minute written in several
-- pieces (a restart, a flush) is summed.
CREATE TABLE minute_stats (
  minute              INTEGER NOT NULL,    -- start of the minute, ms since the epoch
  instance            TEXT NOT NULL,
  prompt_tokens       INTEGER NOT NULL DEFAULT 0,  -- tokens prefilled (computed, not cached)
  generated_tokens    INTEGER NOT NULL DEFAULT 0,
  steps               INTEGER NOT NULL DEFAULT 0,
  seqs_sum            INTEGER NOT NULL DEFAULT 0,  -- sum over steps of sequences in the step
  seqs_max            INTEGER NOT NULL DEFAULT 0,
  max_num_seqs        INTEGER NOT NULL DEFAULT 0,  -- capacity, for occupancy = seqs / capacity
  kv_blocks_used_sum  INTEGER NOT NULL DEFAULT 0,  -- sum over steps of KV blocks in use
  kv_blocks_used_max  INTEGER NOT NULL DEFAULT 0,
  kv_blocks_total     INTEGER NOT NULL DEFAULT 0,
  preemptions         INTEGER NOT NULL DEFAULT 0,
  step_ms_sum         REAL NOT NULL DEFAULT 0,
  PRIMARY KEY (minute, instance)
);

-- Batch progress, derived from the job rows this daemon has seen.
CREATE VIEW batches AS
SELECT batch AS name,
       count(*) AS jobs,
       sum(status = 'queued') AS queued,
       sum(status = 'running') AS running,
       sum(status = 'done') AS done,
       sum(status = 'failed') AS failed,
       sum(status = 'cancelled') AS cancelled,
       sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens,
       min(queued_at) AS first_queued_at,
       min(started_at) AS first_started_at,
       max(finished_at) AS last_finished_at
FROM jobs WHERE batch IS NOT NULL GROUP BY batch;
