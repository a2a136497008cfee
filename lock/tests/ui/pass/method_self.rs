// A method with `&self`: the Locker and the resource come from the receiver.
use fencelock::{distributed_lock, LockError, Locker};

struct Inventory {
    locker: Locker,
    warehouse: String,
}

impl Inventory {
    #[distributed_lock(resource = "inventory:{self.warehouse}:{sku}", locker = self.locker)]
    pub async fn recount(&self, sku: u32) -> Result<u32, LockError> {
        Ok(sku + self.warehouse.len() as u32)
    }
}

fn main() {
    let _ = Inventory::recount;
}
