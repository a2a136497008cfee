#![allow(unused_variables)]
use fencelock::{distributed_lock, Locker};

#[distributed_lock(resource = "a", locker = locker, auto_extend = 1)]
async fn job(locker: &Locker) {}

fn main() {}
