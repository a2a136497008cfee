DROP TABLE idempotency_keys;
DROP TABLE job_runs;
DROP TABLE queue_tokens;
DROP TABLE seat_reservations;
DROP TABLE balance_ledger;
DROP TABLE balances;
DROP TABLE stock_ledger;
DROP TABLE products;
