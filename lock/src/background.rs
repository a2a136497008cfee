//! The runtime for work that must not depend on any caller's runtime: every Redis call and all
//! connection I/O (pooled and pub/sub), releases (of dropped guards and by `release()`), the
//! auto-extend watchdog, leaving a fair queue, bb8's reaper. One per process: a current-thread
//! runtime on a thread of its own (a multi-thread one measured slower on the hot key here).
//!
//! Not a caller's runtime: a runtime that shuts down drops its tasks, and with them their
//! guards, and a runtime that blocks (an actix worker in a blocking call) stalls whatever I/O
//! it runs — before, that was every call routed over a connection it had made, other
//! runtimes' and the watchdogs' included. Callers' futures only wait for answers from here.

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
