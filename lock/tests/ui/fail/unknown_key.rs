#![allow(unused_variables)]
use fencelock::{distributed_lock, Locker};

#[distributed_lock(resource = "a", locker = locker, tll_ms = 5000)]
async fn job(locker: &Locker) {}

fn main() {}
