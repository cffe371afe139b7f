-- The statements of the SQLite store (daemon/store.cc), one per "-- name:" block. The schema
-- they run against is schema/*.sql. Times are ms since the epoch; JSON columns are JSON text.

-- name: job_queued
-- A job read from the stream. A `done` row is final and stays as it is.
INSERT INTO jobs (id, stream, entry_id, batch, status, priority, attempts, prompt_kind, prompt,
                  params, metadata, queued_at, instance)
VALUES (:id, :stream, :entry_id, :batch, 'queued', :priority, :attempts, :prompt_kind, :prompt,
        :params, :metadata, :queued_at, :instance)
ON CONFLICT (id) DO UPDATE SET
  stream = excluded.stream, entry_id = excluded.entry_id, batch = excluded.batch,
  status = 'queued', priority = excluded.priority, attempts = excluded.attempts,
  prompt_kind = excluded.prompt_kind, prompt = excluded.prompt, params = excluded.params,
  metadata = excluded.metadata, queued_at = excluded.queued_at, instance = excluded.instance,
  started_at = NULL, first_token_at = NULL, finished_at = NULL, result_text = NULL,
  token_ids = NULL, logprobs = NULL, finish_reason = NULL, error_code = NULL,
  error_message = NULL
WHERE jobs.status <> 'done';

-- name: job_started
UPDATE jobs SET status = 'running', started_at = :started_at, seed = :seed, model = :model,
                model_hash = :model_hash, engine_version = :engine_version
WHERE id = :id AND status IN ('queued', 'running');

-- name: job_finished
-- The final record: done, failed or cancelled. Also writes rows this store never saw queued
-- (a result found in Redis for a job another instance ran).
INSERT INTO jobs (id, stream, entry_id, batch, status, priority, attempts, prompt_kind, prompt,
                  params, metadata, result_text, token_ids, logprobs, finish_reason, error_code,
                  error_message, queued_at, started_at, first_token_at, finished_at,
                  prompt_tokens, cached_prompt_tokens, completion_tokens, model, model_hash,
                  engine_version, seed, instance)
VALUES (:id, :stream, :entry_id, :batch, :status, :priority, :attempts, :prompt_kind, :prompt,
        :params, :metadata, :result_text, :token_ids, :logprobs, :finish_reason, :error_code,
        :error_message, :queued_at, :started_at, :first_token_at, :finished_at,
        :prompt_tokens, :cached_prompt_tokens, :completion_tokens, :model, :model_hash,
        :engine_version, :seed, :instance)
ON CONFLICT (id) DO UPDATE SET
  stream = excluded.stream, entry_id = excluded.entry_id, batch = excluded.batch,
  status = excluded.status, priority = excluded.priority, attempts = excluded.attempts,
  prompt_kind = coalesce(excluded.prompt_kind, jobs.prompt_kind),
  prompt = coalesce(excluded.prompt, jobs.prompt),
  params = coalesce(excluded.params, jobs.params),
  metadata = coalesce(excluded.metadata, jobs.metadata),
  result_text = excluded.result_text, token_ids = excluded.token_ids,
  logprobs = excluded.logprobs, finish_reason = excluded.finish_reason,
  error_code = excluded.error_code, error_message = excluded.error_message,
  queued_at = excluded.queued_at, started_at = excluded.started_at,
  first_token_at = excluded.first_token_at, finished_at = excluded.finished_at,
  prompt_tokens = excluded.prompt_tokens, cached_prompt_tokens = excluded.cached_prompt_tokens,
  completion_tokens = excluded.completion_tokens, model = excluded.model,
  model_hash = excluded.model_hash, engine_version = excluded.engine_version,
  seed = excluded.seed, instance = excluded.instance
WHERE jobs.status <> 'done';

-- name: minute_add
INSERT INTO minute_stats (minute, instance, prompt_tokens, generated_tokens, steps, seqs_sum,
                          seqs_max, max_num_seqs, kv_blocks_used_sum, kv_blocks_used_max,
                          kv_blocks_total, preemptions, step_ms_sum)
VALUES (:minute, :instance, :prompt_tokens, :generated_tokens, :steps, :seqs_sum, :seqs_max,
        :max_num_seqs, :kv_blocks_used_sum, :kv_blocks_used_max, :kv_blocks_total, :preemptions,
        :step_ms_sum)
ON CONFLICT (minute, instance) DO UPDATE SET
  prompt_tokens = prompt_tokens + excluded.prompt_tokens,
  generated_tokens = generated_tokens + excluded.generated_tokens,
  steps = steps + excluded.steps,
  seqs_sum = seqs_sum + excluded.seqs_sum,
  seqs_max = max(seqs_max, excluded.seqs_max),
  max_num_seqs = max(max_num_seqs, excluded.max_num_seqs),
  kv_blocks_used_sum = kv_blocks_used_sum + excluded.kv_blocks_used_sum,
  kv_blocks_used_max = max(kv_blocks_used_max, excluded.kv_blocks_used_max),
  kv_blocks_total = max(kv_blocks_total, excluded.kv_blocks_total),
  preemptions = preemptions + excluded.preemptions,
  step_ms_sum = step_ms_sum + excluded.step_ms_sum;

-- name: job_by_id
SELECT * FROM jobs WHERE id = :id;

-- name: recent_jobs
-- The jobs received last (rowid order is arrival order; a job delivered again keeps its row).
SELECT * FROM jobs ORDER BY rowid DESC LIMIT :limit;

-- name: jobs_of_batch
SELECT * FROM jobs WHERE batch = :batch ORDER BY queued_at, id;

-- name: batch_progress
SELECT * FROM batches WHERE name = :batch;

-- name: status_counts
SELECT status, count(*) AS n FROM jobs GROUP BY status;
