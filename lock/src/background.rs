//! The runtime for work that must outlive its caller: the release of a dropped guard, the
//! auto-extend watchdog, leaving a fair queue, bb8's reaper. One background thread per process,
//! with a current-thread runtime.
//!
//! Not the caller's runtime: a runtime that shuts down drops its tasks, and with them their
//! guards; a release spawned there would never run and the lock would wait out its TTL.
//!
//! The hot path stays off this thread: pooled connections and pub/sub drivers run on the
//! callers' runtimes (no thread hop per call), and are replaced when their runtime stops
//! (see `node.rs` and `notify.rs`).

use std::sync::LazyLock;
use tokio::runtime::Handle;

/// The background runtime, started on first use; it lives as long as the process.
pub(crate) fn runtime() -> &'static Handle {
    static BACKGROUND: LazyLock<Handle> = LazyLock::new(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime for fencelock's background I/O");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("fencelock-background".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("spawn the fencelock-background thread");
        handle
    });
    &BACKGROUND
}
