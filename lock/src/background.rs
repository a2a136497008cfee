//! The runtime that owns this crate's long-lived I/O: the pub/sub drivers and the pooled
//! connections' I/O tasks. One background thread per process, with a current-thread runtime.
//!
//! Not the runtime of whichever caller came first: that may be an actix worker (or a test)
//! whose runtime stops long before the locker does, taking every connection made on it down
//! with it; and a busy worker would delay every other worker's Redis replies and wake-ups.

use std::sync::LazyLock;
use tokio::runtime::Handle;

/// The background runtime, started on first use; it lives as long as the process. Tasks on it
/// end with what they serve (a driver with its locker, a connection with its pool).
pub(crate) fn runtime() -> &'static Handle {
    static BACKGROUND: LazyLock<Handle> = LazyLock::new(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime for dlock's background I/O");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("dlock-io".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("spawn the dlock-io thread");
        handle
    });
    &BACKGROUND
}
