// `resource = [..]` holds several locks together; `guard` binds the `MultiGuard`, whose
// `fence(resource)` gives each resource's own fence.
use fencelock::{distributed_lock, LockError, Locker};

struct Accounts {
    locker: Locker,
}

impl Accounts {
    #[distributed_lock(
        resource = ["balance:{from}", "balance:{to}"],
        locker = self.locker,
        auto_extend,
        cancel_on_lost,
        guard = both,
    )]
    async fn transfer(&self, from: u64, to: u64, amount: u64) -> Result<u64, LockError> {
        let from_fence = both.fence(&format!("balance:{from}")).unwrap_or_default();
        Ok(from_fence + amount + to)
    }
}

fn main() {
    let _ = Accounts::transfer;
}
