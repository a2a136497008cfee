DROP INDEX job_runs_job_tick;
CREATE INDEX job_runs_job_tick ON job_runs (job, tick);
DROP INDEX idempotency_keys_created_at;
