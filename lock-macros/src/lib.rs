//! The `#[distributed_lock]` attribute. Use it through the `fencelock` crate, which re-exports it
//! (`use fencelock::distributed_lock;`) and documents it in full.
//!
//! This crate only rewrites syntax: it knows nothing about Redis. The generated code calls
//! `::fencelock::__private`, so the runtime decides what acquiring and releasing mean.

#![deny(missing_docs)]

mod args;
mod expand;
mod template;

use proc_macro::TokenStream;

/// Wraps an async fn in acquire → guard → release of a distributed lock.
///
/// ```text
/// #[distributed_lock(resource = "product:{id}", ttl_ms = 5000, wait_ms = 0, auto_extend,
///                    fair, min_hold_ms = 1000, guard = lock, locker = self.locker)]
/// ```
///
/// The `fencelock` crate documents the arguments, what a lock failure returns for each return type,
/// and the exact code this generates ("the same handler written without the macro").
#[proc_macro_attribute]
pub fn distributed_lock(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::distributed_lock(args.into(), item.into()).into()
}
