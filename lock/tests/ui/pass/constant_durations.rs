// Durations named once, as constants (a service's TTL shared by its handlers and its tools).
use fencelock::{distributed_lock, Locker};

pub const LOCK_TTL_MS: u64 = 5000;

mod limits {
    pub const WAIT_MS: u64 = 250;
}

struct Jobs;

impl Jobs {
    const HOLD_MS: u64 = 100;

    #[distributed_lock(resource = "job:{tick}", locker = locker, ttl_ms = LOCK_TTL_MS, wait_ms = limits::WAIT_MS, min_hold_ms = Self::HOLD_MS)]
    async fn run(locker: &Locker, tick: u64) {
        let _ = tick;
    }
}

fn main() {
    let _ = Jobs::run;
}
