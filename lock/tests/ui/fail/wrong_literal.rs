#![allow(unused_variables)]
use fencelock::{distributed_lock, Locker};

#[distributed_lock(resource = "a", locker = locker, ttl_ms = "5000")]
async fn job(locker: &Locker) {}

fn main() {}
