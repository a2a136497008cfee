//! Distributed locks on Redis for Rust web services.
//!
//! ```toml
//! [dependencies]
//! fencelock = { version = "0.1", features = ["actix"] }  # or "axum"; add "tls" for rediss://
//! ```
//!
//! ```no_run
//! use fencelock::{distributed_lock, LockError, Locker, LockerConfig};
//!
//! #[distributed_lock(resource = "product:{id}", locker = locker, ttl_ms = 5000)]
//! async fn deduct(locker: &Locker, id: u64) -> Result<(), LockError> {
//!     // Runs only while this call holds `product:<id>`, in every process.
//!     Ok(())
//! }
//! # async fn run() -> Result<(), LockError> {
//! let locker = Locker::new(LockerConfig::new(["redis://127.0.0.1:6379/"]))?;
//! deduct(&locker, 42).await
//! # }
//! ```
//!
//! - **Single node or Redlock quorum**: one Redis, or three or more independent nodes of
//!   which a majority must agree ([`LockerConfig`]); from URLs or your own `redis::Client`s.
//! - **Owner-checked**: Lua scripts only ever release, extend or hand off the caller's own lock.
//! - **Fencing tokens**: every acquisition returns a [`Guard::fence`] strictly greater than all
//!   fences issued before for that resource, to reject writes from a holder that lost its lock.
//! - **Fast handoff**: releases are announced over pub/sub, and waiters in the same process get
//!   the lock passed to them directly — within a streak without a round trip at all (the
//!   acquisition reserved the fences they get). Processes take
//!   turns: one that just had a streak of handoffs lets a waiting process go next.
//! - **Auto-extend** watchdog, **fair** (FIFO) mode and **min_hold** for once-per-tick jobs;
//!   [`Guard::extend`] by hand.
//! - **Several resources at once** ([`Locker::acquire_many`]): taken in one global order, so
//!   two transfers in opposite directions cannot deadlock; each resource keeps its own fence.
//! - **Operators**: [`Locker::inspect`] (locked? until when? last fence?) and
//!   [`Locker::force_unlock`].
//! - **Release on drop**: a panic or a cancelled request frees the lock at once.
//! - The [`distributed_lock`] attribute wraps an actix-web or axum handler, or any async fn,
//!   in all of this.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `metrics` | on | counters and histograms through the `metrics` facade ([`observe`]); costs nothing until your application installs a recorder |
//! | `actix` | off | [`LockError`] as an actix-web response; the attribute finds the [`Locker`] in app data |
//! | `axum` | off | [`LockError`] as an axum response (same status codes and JSON); the attribute's `axum` flag finds the [`Locker`] in a request extension (built on `axum-core`) |
//! | `tls` | off | `rediss://` through redis-rs' rustls support, with the `ring` crypto provider; custom roots or client certificates through [`LockerConfig::from_clients`] |
//!
//! Why these defaults: the lock itself needs no web framework, and each framework pulls a large
//! tree of crates, so you name the one you use; metrics are on because the facade is a few
//! atomics' worth of code and dashboards expect them; TLS is off because it builds a crypto
//! library (C and assembly) that a Redis on a private network does not need. With `tls`, rustls
//! picks the `ring` provider by itself; if your build also enables rustls' `aws-lc-rs`, install
//! a process-wide `CryptoProvider` at start-up, as rustls asks.
//!
//! # Locking by hand
//!
//! ```no_run
//! use fencelock::{Locker, LockerConfig, LockOptions};
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), fencelock::LockError> {
//! let locker = Locker::new(LockerConfig::new(["redis://127.0.0.1:6379/"]))?;
//! let options = LockOptions::new().ttl(Duration::from_secs(5)).auto_extend(true);
//! let guard = locker.acquire("product:42", &options).await?;
//! // ... read, compute, write with `guard.fence()` ...
//! let still_ours = guard.release().await?;
//! assert!(still_ours);
//! # Ok(()) }
//! ```
//!
//! # Cancel safety
//!
//! Every future this crate returns may be dropped at any await point — a client hangs up, a
//! `select!` takes another branch, a timeout fires — without leaving a lock behind:
//!
//! - [`Locker::acquire`]: a round already sent is undone on the connection it went out on, so
//!   the undo runs after it whenever it runs (also when Redis answers only later); a waiter's
//!   place in the local queue and, in fair mode, in the Redis queue is given up.
//! - [`Guard::release`]: it runs on the crate's background runtime (its future only waits for
//!   the answer), so it finishes if the future is dropped or the caller's runtime stops.
//! - A dropped [`Guard`] is released from the background at once.
//! - The attribute's generated code is made of the above.
//!
//! Once Redis answers, such a lock is gone within a round trip or two (a release to a node that
//! does not answer is resent until it does, or until the lock has expired anyway). Nothing
//! panics and no local queue is left with a waiter that is gone. A future that is alive but
//! not polled is another matter: see [`Locker::acquire`] for what it holds.
//!
//! # Runtimes
//!
//! Every Redis call, connection and pub/sub subscription runs on the crate's own background
//! runtime (one thread); callers' futures only wait for answers. A caller's runtime that blocks
//! (an actix worker in a blocking call) or shuts down affects only its own tasks: not other
//! runtimes' calls, not watchdogs, not a release it started.
//!
//! # Faults
//!
//! In quorum mode a round decides as soon as a majority said yes or the refusals alone rule one
//! out; "refused" (and so [`Guard::lost`], and `release()`'s `Ok(false)`) is said only then,
//! never because an answer came late — an undecided round is an error, which auto-extension
//! retries within the lock's validity. A node that does not answer in time is skipped (and
//! probed in the background) until it does: a hung minority costs (almost) nothing.
//!
//! A lock deleted behind a process's back (by [`Locker::force_unlock`], or a Redis restart that
//! lost it) is noticed at the process's next round trip. A lock passed on in-process without a
//! round trip is confirmed by the releaser right after (one call per node, off the recipient's
//! path: [`LockerConfig::confirm_pass_on`]), so the releaser's `Ok(true)` means Redis confirmed
//! nobody else was granted the lock during its hold, and a recipient of a lock Redis had lost
//! is declared lost within a round trip. Until then it works with a fence below the new
//! holder's: fenced writes are what keeps the data right. [`Guard::lost`] fires no later than
//! the validity runs out.
//!
//! Fences never decrease for a resource, across Redis restarts without persistence, flushes,
//! counter expiry and failover, under the clock assumption stated with `NEXT_FENCE` in
//! `scripts.rs` (server clocks do not step back; in quorum mode they differ by less than a
//! minute). A fence is the server's time in µs × 1000 plus a sequence: about 1.8 × 10^18 —
//! above 2^53, so JavaScript and other double-based JSON readers must treat it as a string or
//! a big integer.
//!
//! # The `#[distributed_lock]` attribute
//!
//! On an actix-web handler (feature `actix`; `examples/axum.rs` shows axum):
//!
//! ```no_run
//! # #[cfg(feature = "actix")] mod example {
//! use actix_web::{post, web, App, HttpResponse, HttpServer};
//! use fencelock::{distributed_lock, LockError, Locker, LockerConfig};
//!
//! #[post("/product/{id}/deduct")]
//! #[distributed_lock(resource = "product:{id}", ttl_ms = 5000, auto_extend)]
//! async fn deduct(id: web::Path<i64>) -> Result<HttpResponse, LockError> {
//!     // Runs only while this request holds `product:<id>`, in every instance.
//!     Ok(HttpResponse::Ok().finish())
//! }
//!
//! #[actix_web::main]
//! pub async fn main() -> std::io::Result<()> {
//!     let locker = Locker::new(LockerConfig::new(["redis://127.0.0.1:6379/"])).unwrap();
//!     let locker = web::Data::new(locker);
//!     HttpServer::new(move || App::new().app_data(locker.clone()).service(deduct))
//!         // Let actix drop a handler whose client hung up, so its lock is freed at once.
//!         .h1_allow_half_closed(false)
//!         .bind(("127.0.0.1", 8080))?
//!         .run()
//!         .await
//! }
//! # }
//! # fn main() {}
//! ```
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `resource = "..."` | required | template of the lock name: `{name}` is a parameter (or a name a parameter's pattern binds, like `id` in `Path(id): Path<u64>`), `{name.field}` / `{name.0}` a field of one, formatted with `Display`; `{{` and `}}` are literal braces. Unknown names are compile errors. |
//! | `resource = ["...", "..."]` | | several templates: the locks are held together ([`Locker::acquire_many`]: one global order, one wait budget) |
//! | `ttl_ms = N` | `10000` | lock lifetime in Redis; must be > 0. `N` (here and in `wait_ms`, `min_hold_ms`) is an integer literal or the path of a `u64` constant (`ttl_ms = LOCK_TTL_MS`), evaluated at compile time (a constant TTL of 0 fails `cargo build`, and is refused at run time as [`LockError::InvalidOptions`]) |
//! | `wait_ms = N` | `5000` | wait budget for a busy lock; `0` = one attempt |
//! | `auto_extend` | off | extend every `ttl / 3` while the body runs |
//! | `fair` | off | FIFO among waiters (single-node mode) |
//! | `min_hold_ms = N` | `0` | keep the resource locked at least this long after acquisition |
//! | `cancel_on_lost` | off | stop the body (drop it at its current await point) as soon as the lock is lost — an extension refused, or its validity run out — and return [`LockError::Lost`] (`409 lock_lost` for handlers) |
//! | `guard = ident` | none | bind the [`Guard`] (with a list: the [`MultiGuard`]) as `ident` in the body (`ident.fence()`, `ident.lost()`) |
//! | `locker = expr` | app data | where the [`Locker`] comes from (`self.locker`, `state.locker` — also names bound by patterns such as `State(state)`); without it the function must be a handler and the `Locker` is taken from actix app data (`web::Data<Locker>` or `Locker`), or with `axum` from a request extension (`Extension(locker)`), answering `500 lock_not_configured` if it is missing |
//! | `axum` | off | the function is an axum handler: the `Locker` comes from a request extension unless `locker =` says otherwise, and an `impl IntoResponse` return gets axum's lock-failure response |
//! | `crate = "path"` | `::fencelock` | path to this crate, if renamed |
//!
//! ## What a lock failure returns
//!
//! - `Result<T, E>` with `E: From<LockError>`: `Err(E::from(error))`.
//! - `HttpResponse`, or `impl Responder` (through `actix_web::Either`), and with `axum`
//!   `axum::response::Response` or `impl IntoResponse`: the [`LockError`] response:
//!   `423 Locked` with `Retry-After` and `{"error":"lock_busy","resource":…}`; `503` with
//!   `Retry-After` and `{"error":"lock_unavailable"}`; `400` for an invalid resource.
//! - `()` (jobs): the run is skipped and logged.
//! - anything else: implement [`FromLockError`] for it.
//!
//! The lock is released when the body's future completes, including early `return` and `?`.
//! If the future is dropped (panic, cancelled request), the guard's `Drop` releases it in a
//! spawned task. actix-web only drops a handler whose client hung up when half-closed
//! connections are off: `HttpServer::h1_allow_half_closed(false)`.
//!
//! ## The same handler written without the macro
//!
//! This is what the attribute generates for `deduct` above, with the calls into the crate's
//! hidden helper module spelled out (and without the unreachable line that pins the body's
//! return type so `?` converts errors as it would in the function):
//!
//! ```no_run
//! # #[cfg(feature = "actix")] mod example {
//! # use actix_web::{web, HttpResponse};
//! # use fencelock::LockError;
//! async fn deduct(
//!     id: web::Path<i64>,
//!     __dl_app_locker: fencelock::AppLocker, // an extra extractor: the Locker from app data
//! ) -> Result<HttpResponse, LockError> {
//!     let __dl_resource = format!("product:{}", &id);
//!     let options = fencelock::LockOptions::new()
//!         .ttl(std::time::Duration::from_millis(5000))
//!         .wait(std::time::Duration::from_millis(5000))
//!         .auto_extend(true);
//!     let __dl_guard = match __dl_app_locker.acquire(&__dl_resource, &options).await {
//!         Ok(guard) => guard,
//!         Err(error) => return Err(LockError::from(error)),
//!     };
//!     let span = tracing::info_span!(
//!         "fencelock.hold",
//!         resource = __dl_guard.resource(),
//!         fence = __dl_guard.fence()
//!     );
//!     let __dl_output = tracing::Instrument::instrument(
//!         async move { Ok(HttpResponse::Ok().finish()) },
//!         span,
//!     )
//!     .await;
//!     let _ = __dl_guard.release().await; // a lost lock is logged
//!     __dl_output
//! }
//! # }
//! ```

#![deny(missing_docs)]

#[cfg(feature = "actix")]
mod actix;
#[cfg(feature = "axum")]
mod axum;
mod background;
mod endpoint;
mod error;
mod failure;
mod fair;
mod guard;
mod hold;
#[cfg(any(feature = "actix", feature = "axum"))]
mod http;
mod inspect;
mod local;
mod locker;
mod multi;
mod node;
mod notify;
pub mod observe;
mod options;
mod protocol;
mod quorum;
mod resource;
mod rounds;
mod scripts;
mod sync;
mod wait;
mod watchdog;

#[cfg(feature = "actix")]
pub use actix::AppLocker;
#[cfg(feature = "axum")]
pub use axum::AxumLocker;
pub use error::{LockError, NodeError, NodeErrors};
pub use failure::FromLockError;
pub use fencelock_macros::distributed_lock;
pub use guard::Guard;
pub use inspect::LockState;
pub use locker::{Health, Locker, Mode};
pub use multi::MultiGuard;
pub use options::{redact_url, LockOptions, LockerConfig, MAX_LOCAL_HANDOFFS_LIMIT};
pub use resource::{validate_resource, MAX_RESOURCE_LEN};

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
