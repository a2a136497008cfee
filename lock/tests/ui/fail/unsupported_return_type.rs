#![allow(unused_variables)]
use fencelock::{distributed_lock, Locker};

#[distributed_lock(resource = "a", locker = locker)]
async fn job(locker: &Locker) -> String {
    String::new()
}

fn main() {}
