#![allow(unused_variables)]
use fencelock::{distributed_lock, Locker};

#[distributed_lock(resource = "a", locker = locker, ttl_ms = ttl)]
async fn job(locker: &Locker, ttl: u64) {}

fn main() {}
