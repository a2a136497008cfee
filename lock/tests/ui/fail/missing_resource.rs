#![allow(unused_variables)]
use fencelock::{distributed_lock, Locker};

#[distributed_lock(locker = locker, ttl_ms = 1000)]
async fn job(locker: &Locker) {}

fn main() {}
