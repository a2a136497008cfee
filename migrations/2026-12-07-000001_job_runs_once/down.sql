DROP INDEX job_runs_job_tick;
CREATE INDEX job_runs_job_tick ON job_runs (job, tick);
