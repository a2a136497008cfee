#![allow(unused_variables)]
use fencelock::{distributed_lock, Locker};

#[distributed_lock(resource = "product:{id", locker = locker)]
async fn job(locker: &Locker, id: u64) {}

fn main() {}
