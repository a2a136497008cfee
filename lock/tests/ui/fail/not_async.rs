#![allow(unused_variables)]
use fencelock::{distributed_lock, Locker};

#[distributed_lock(resource = "a", locker = locker)]
fn job(locker: &Locker) {}

fn main() {}
