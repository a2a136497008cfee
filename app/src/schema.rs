//! Diesel's view of the tables in `migrations/` (written by hand to match them).

diesel::table! {
    products (id) {
        id -> Int8,
        name -> Text,
        stock -> Int8,
        fence -> Int8,
    }
}

diesel::table! {
    stock_ledger (id) {
        id -> Int8,
        product_id -> Int8,
        quantity -> Int8,
        strategy -> Text,
        instance -> Text,
        fence -> Nullable<Int8>,
        hold_us -> Nullable<Int8>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    balances (user_id) {
        user_id -> Int8,
        balance -> Int8,
        fence -> Int8,
    }
}

diesel::table! {
    balance_ledger (id) {
        id -> Int8,
        user_id -> Int8,
        kind -> Text,
        amount -> Int8,
        instance -> Text,
        fence -> Nullable<Int8>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    seat_reservations (concert_id, seat_no) {
        concert_id -> Int8,
        seat_no -> Int4,
        user_id -> Int8,
        instance -> Text,
        fence -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    queue_tokens (concert_id, position) {
        concert_id -> Int8,
        position -> Int4,
        user_id -> Int8,
        token -> Text,
        instance -> Text,
        fence -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    job_runs (id) {
        id -> Int8,
        job -> Text,
        tick -> Int8,
        instance -> Text,
        fence -> Int8,
        products -> Int8,
        total_stock -> Int8,
        ran_at -> Timestamptz,
    }
}

diesel::table! {
    idempotency_keys (key) {
        scope -> Text,
        key -> Text,
        status -> Int4,
        body -> Text,
        created_at -> Timestamptz,
        fingerprint -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(products, stock_ledger);

diesel::table! {
    lock_fences (resource) {
        resource -> Text,
        fence -> Int8,
    }
}
