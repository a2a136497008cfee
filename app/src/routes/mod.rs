//! HTTP routes, one module per area.

pub mod balance;
pub mod health;
pub mod product;
pub mod queue;
pub mod seats;
