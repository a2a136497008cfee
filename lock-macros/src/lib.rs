//! The `#[distributed_lock]` attribute. Use it through the `dlock` crate, which re-exports it
//! (`use dlock::distributed_lock;`) and documents it in full.
//!
//! This crate only rewrites syntax: it knows nothing about Redis. The generated code calls
//! `::dlock::__private`, so the runtime decides what acquiring and releasing mean.

mod args;
mod expand;
mod template;

use proc_macro::TokenStream;

/// Wraps an async fn in acquire → guard → release of a distributed lock.
///
/// See the `dlock` crate's documentation of `distributed_lock` for the arguments, the failure
/// mapping and the code this generates.
#[proc_macro_attribute]
pub fn distributed_lock(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::distributed_lock(args.into(), item.into()).into()
}
