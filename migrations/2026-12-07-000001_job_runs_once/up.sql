-- A tick runs once: the record, not the length of a lock hold, says so (a holder whose run
-- failed gives the lock back and the next instance runs the tick).
DELETE FROM job_runs later USING job_runs earlier
WHERE later.job = earlier.job AND later.tick = earlier.tick AND later.id > earlier.id;
DROP INDEX job_runs_job_tick;
CREATE UNIQUE INDEX job_runs_job_tick ON job_runs (job, tick);
