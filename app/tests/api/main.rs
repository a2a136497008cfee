//! The reference service end to end: three instances in this process share one real
//! PostgreSQL database and one real Redis, requests are spread across them.

mod bad_input;
mod balancer;
mod contract;
mod faults;
mod helpers;
mod honest;
mod http;
mod scenarios;
mod secrets;
mod tls;
mod transfer;
