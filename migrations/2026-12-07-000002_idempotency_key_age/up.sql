-- Expired idempotency records are found (on lookup and by the instances' pruning) by age.
-- IF NOT EXISTS: an earlier build of this change created it under the previous version.
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at ON idempotency_keys (created_at);
