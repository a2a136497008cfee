-- An Idempotency-Key names one request: the key alone is unique (not per operation), and the
-- request's fingerprint (SHA-256 of method, path with query, and body) is kept so the key
-- reused for a different request can be refused. Rows from before have no fingerprint ('').
ALTER TABLE idempotency_keys ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
DELETE FROM idempotency_keys AS older
    USING idempotency_keys AS newer
    WHERE older.key = newer.key AND older.created_at < newer.created_at;
DELETE FROM idempotency_keys AS older
    USING idempotency_keys AS newer
    WHERE older.key = newer.key AND older.scope < newer.scope;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (key);
