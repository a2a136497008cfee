//! The reference service: product stock, balances, seats and queue tokens behind
//! `#[distributed_lock]`, on PostgreSQL through Diesel + diesel-async, with a scheduled job
//! that runs exactly once per tick across instances.
//!
//! Start it with `cargo run -p fencelock-app` (settings: [`configuration::Settings`]).

pub mod api;
pub mod configuration;
pub mod contract;
pub mod db;
pub mod error;
pub mod fencing;
pub mod idempotency;
pub mod input;
pub mod job;
pub mod routes;
pub mod schema;
pub mod startup;
pub mod state;
pub mod telemetry;
