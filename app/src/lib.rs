//! The reference service: product stock, balances, seats and queue tokens behind
//! `#[distributed_lock]`, on PostgreSQL through Diesel + diesel-async, with a scheduled job
//! that runs exactly once per tick across instances.
//!
//! Start it with `cargo run -p fencelock-app` (settings: [`configuration::Settings`]).
//!
//! The modules form layers, lowest first, and each imports only from the layers below it:
//! [`error`], [`schema`], [`configuration`], [`input`], [`contract`] → [`db`] (PostgreSQL; it
//! knows no lock guard) → [`fencing`] (where a held lock meets the database) →
//! [`state`] → [`idempotency`] → [`routes`], [`job`] → [`api`] → [`startup`]; [`telemetry`]
//! sits beside them and needs only [`configuration`].

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
