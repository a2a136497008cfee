-- Products and their stock. `fence` is the highest lock fence that wrote the row: a write that
-- carries a smaller fence comes from a holder that lost its lock and is rejected.
-- There is deliberately no CHECK (stock >= 0): the `none` strategy must be able to show the
-- damage an unlocked read-modify-write does.
CREATE TABLE products (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    stock BIGINT NOT NULL,
    fence BIGINT NOT NULL DEFAULT 0
);

-- One row per successful deduction, written in the same transaction as the stock change:
-- stock = initial - sum(quantity) must hold after any run.
CREATE TABLE stock_ledger (
    id BIGSERIAL PRIMARY KEY,
    product_id BIGINT NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    quantity BIGINT NOT NULL,
    strategy TEXT NOT NULL,
    instance TEXT NOT NULL,
    fence BIGINT,
    -- How long the lock had been held when the row was written (the hold's start is
    -- created_at - hold_us); NULL for strategies without a lock.
    hold_us BIGINT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX stock_ledger_product ON stock_ledger (product_id);

CREATE TABLE balances (
    user_id BIGINT PRIMARY KEY,
    balance BIGINT NOT NULL,
    fence BIGINT NOT NULL DEFAULT 0
);

-- balance = sum(charge) - sum(use) must hold after any run.
CREATE TABLE balance_ledger (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('charge', 'use')),
    amount BIGINT NOT NULL,
    instance TEXT NOT NULL,
    fence BIGINT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX balance_ledger_user ON balance_ledger (user_id);

CREATE TABLE seat_reservations (
    concert_id BIGINT NOT NULL,
    seat_no INT NOT NULL,
    user_id BIGINT NOT NULL,
    instance TEXT NOT NULL,
    fence BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (concert_id, seat_no)
);

CREATE TABLE queue_tokens (
    concert_id BIGINT NOT NULL,
    position INT NOT NULL,
    user_id BIGINT NOT NULL,
    token TEXT NOT NULL,
    instance TEXT NOT NULL,
    fence BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (concert_id, position)
);

-- One row per run of a scheduled job. No unique (job, tick) on purpose: "exactly one run per
-- tick" is the lock's promise, and the tests count rows to check it.
CREATE TABLE job_runs (
    id BIGSERIAL PRIMARY KEY,
    job TEXT NOT NULL,
    tick BIGINT NOT NULL,
    instance TEXT NOT NULL,
    fence BIGINT NOT NULL,
    products BIGINT NOT NULL,
    total_stock BIGINT NOT NULL,
    ran_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX job_runs_job_tick ON job_runs (job, tick);

-- Idempotency-Key: the first response to (scope, key), replayed for repeats.
CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    status INT NOT NULL,
    body TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (scope, key)
);
