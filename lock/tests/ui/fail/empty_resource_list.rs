use fencelock::distributed_lock;

#[distributed_lock(resource = [], locker = locker)]
async fn nothing(locker: &fencelock::Locker) {}

fn main() {}
