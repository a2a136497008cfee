// A scheduled job: no waiting, a minimum hold so a fast run cannot repeat within its tick,
// and `()` as return type (a busy lock means another instance runs it: skip quietly).
use fencelock::{distributed_lock, Locker};

#[distributed_lock(resource = "job:stock-report:{tick}", locker = locker, wait_ms = 0, min_hold_ms = 5000)]
pub(crate) async fn stock_report(locker: &Locker, tick: u64) {
    let _ = tick;
}

fn main() {
    let _ = stock_report;
}
