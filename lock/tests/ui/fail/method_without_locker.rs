#![allow(unused_variables)]
use fencelock::distributed_lock;

struct Service;

impl Service {
    #[distributed_lock(resource = "a")]
    async fn run(&self) {}
}

fn main() {}
