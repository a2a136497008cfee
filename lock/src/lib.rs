//! Distributed locks on Redis for Rust web services.
//!
//! - **Single node or Redlock quorum**: one Redis URL, or three or more independent nodes of
//!   which a majority must agree ([`LockerConfig`]).
//! - **Owner-checked**: Lua scripts only ever release, extend or hand off the caller's own lock.
//! - **Fencing tokens**: every acquisition returns a [`Guard::fence`] strictly greater than all
//!   fences issued before for that resource, to reject writes from a holder that lost its lock.
//! - **Fast handoff**: releases are announced over pub/sub, and waiters in the same process get
//!   the lock passed to them directly, so a hot lock moves in one round trip.
//! - **Auto-extend** watchdog, **fair** (FIFO) mode and **min_hold** for once-per-tick jobs.
//! - **Release on drop**: a panic or a cancelled request frees the lock at once.
//! - The [`distributed_lock`] attribute wraps a handler or any async fn in all of this.
//!
//! ```no_run
//! use dlock::{Locker, LockerConfig, LockOptions};
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), dlock::LockError> {
//! let locker = Locker::new(LockerConfig::new(["redis://127.0.0.1:6379/"]))?;
//! let options = LockOptions::new().ttl(Duration::from_secs(5)).auto_extend(true);
//! let guard = locker.acquire("product:42", &options).await?;
//! // ... read, compute, write with `guard.fence()` ...
//! let still_ours = guard.release().await?;
//! assert!(still_ours);
//! # Ok(()) }
//! ```

#[cfg(feature = "actix")]
mod actix;
mod error;
mod failure;
mod guard;
mod local;
mod locker;
mod node;
mod notify;
pub mod observe;
mod options;
mod quorum;
mod resource;
mod scripts;

#[cfg(feature = "actix")]
pub use actix::AppLocker;
pub use dlock_macros::distributed_lock;
pub use error::{LockError, NodeError, NodeErrors};
pub use failure::FromLockError;
pub use guard::Guard;
pub use locker::{Health, Locker, Mode};
pub use options::{LockOptions, LockerConfig};
pub use resource::{validate_resource, MAX_RESOURCE_LEN};

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
