//! `strategy=lock` on a hot product: the requests this instance has queued for one product are
//! served together — one hold of the product's lock, one statement, one commit — each with its
//! own ledger row, idempotency record and answer.
//!
//! Why: with the lock held across a read and a write, every sale would cost a lock turn and a
//! durable commit of its own, and a flash sale queues hundreds of buyers on one product. Served
//! together they pay both once per batch. The answers stay exactly those of serving the
//! requests one by one in arrival order (see `fenced::fenced_deduct`).
//!
//! A worker task per product serves its queue, batch after batch, until the queue is empty.
//! It is not any request's future: a client that hangs up must not take the others' batch down
//! with it. A batch is taken once the lock is held, so it holds everything that queued while
//! the lock was awaited.
//!
//! What a request is promised, whatever happens to the others:
//! - **Its own wait budget.** A request still queued [`WAIT_BUDGET`] after it arrived leaves
//!   the queue and gets `423 lock_busy`; nothing was written. (A request that joined just
//!   after a failed lock wait does not sit through that wait and then its own.)
//! - **A bounded queue.** Past `BATCH_QUEUE_LIMIT` requests (1,024) for one product the next
//!   gets `503 overloaded` at once.
//! - **Hang-ups.** A request whose client hangs up while it is queued leaves the queue at once
//!   (with its key's share of the in-flight marker) and writes nothing. Once its batch is taken it is carried out (its Idempotency-Key stays in
//!   flight until then, and a repeat with the key learns the outcome).

use super::fenced::{fenced_deduct, Requested};
use crate::configuration::LOCK_TTL_MS;
use crate::error::AppError;
use crate::fencing::db_fence;
use crate::idempotency::{IdempotencyKey, Stored};
use crate::state::AppState;
use actix_web::web;
use fencelock::{distributed_lock, LockError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a request may wait for its batch to hold the product's lock.
pub const WAIT_BUDGET: Duration = Duration::from_secs(20);
/// The most requests one hold serves: bounds a transaction's size and time (the rest are the
/// next batch).
const MAX_BATCH: usize = 256;
/// The queues are split by product id over this many mutexes, so that hot products do not
/// contend for one.
const SHARDS: usize = 16;

/// The requests queued per product, in this instance (app data, shared by its workers).
#[derive(Debug)]
pub struct Batches {
    shards: [Mutex<HashMap<i64, Vec<Pending>>>; SHARDS],
    next_ticket: AtomicU64,
    /// The most requests one product may have queued.
    limit: usize,
}

/// A request waiting for its batch.
#[derive(Debug)]
struct Pending {
    /// Names the request in its queue, so that it can leave it.
    ticket: u64,
    quantity: i64,
    /// Carries the key's in-flight marker while the request is queued or being served.
    key: Option<IdempotencyKey>,
    answer: oneshot::Sender<Result<Stored, AppError>>,
}

impl Batches {
    /// No queues yet; at most `limit` requests per product.
    pub fn new(limit: usize) -> Batches {
        Batches {
            shards: Default::default(),
            next_ticket: AtomicU64::new(0),
            limit,
        }
    }

    /// The queues of `product_id`'s shard. A panic elsewhere while one was held leaves them
    /// usable (every change under the mutex is one `Vec`/`HashMap` call), so poisoning is
    /// ignored: this runs in `Drop` too.
    fn shard(&self, product_id: i64) -> MutexGuard<'_, HashMap<i64, Vec<Pending>>> {
        let index = product_id.rem_euclid(SHARDS as i64) as usize;
        self.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Deducts `quantity` from `product_id` under the product's lock, served with the other
    /// requests for it queued in this instance.
    pub async fn deduct(
        batches: &web::Data<Batches>,
        state: &AppState,
        product_id: i64,
        quantity: i64,
        key: Option<&IdempotencyKey>,
    ) -> Result<Stored, AppError> {
        let arrived = Instant::now();
        let ticket = batches.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (answer, mut answered) = oneshot::channel();
        let pending = Pending {
            ticket,
            quantity,
            key: key.cloned(),
            answer,
        };
        let start_worker = {
            let mut queues = batches.shard(product_id);
            match queues.get_mut(&product_id) {
                Some(queue) => {
                    if queue.len() >= batches.limit {
                        return Err(AppError::Overloaded(format!(
                            "{} requests for product {product_id} are queued already",
                            batches.limit
                        )));
                    }
                    queue.push(pending);
                    false
                }
                None => {
                    queues.insert(product_id, vec![pending]);
                    true
                }
            }
        };
        if start_worker {
            tokio::spawn(serve(web::Data::clone(batches), state.clone(), product_id));
        }
        let abandoned = || {
            // The worker is gone without answering (a panic, logged by tokio): its batch may
            // or may not have been written.
            Err(AppError::OutcomeUnknown(
                "the request's batch was abandoned".into(),
            ))
        };
        // Dropped with this future (the client hung up), the request leaves the queue at once.
        let mut queued = Queued {
            batches,
            product_id,
            ticket,
            armed: true,
        };
        let outcome = match tokio::time::timeout_at(arrived + WAIT_BUDGET, &mut answered).await {
            Ok(answer) => answer.unwrap_or_else(|_| abandoned()),
            Err(_) if batches.leave(product_id, ticket) => Err(AppError::Lock(LockError::Busy {
                resource: format!("product:{product_id}"),
                waited: arrived.elapsed(),
                retry_after: None,
            })),
            // Taken into a batch just now: its answer is on the way.
            Err(_) => answered.await.unwrap_or_else(|_| abandoned()),
        };
        queued.armed = false;
        outcome
    }

    /// Takes the request `ticket` out of `product_id`'s queue; false if it is no longer there
    /// (its batch took it).
    fn leave(&self, product_id: i64, ticket: u64) -> bool {
        let mut queues = self.shard(product_id);
        let Some(queue) = queues.get_mut(&product_id) else {
            return false;
        };
        let before = queue.len();
        queue.retain(|pending| pending.ticket != ticket);
        queue.len() < before
    }

    /// The first [`MAX_BATCH`] queued for `product_id`, less the requests nobody waits for any
    /// more; the queue's entry stays (the worker is still serving).
    fn take(&self, product_id: i64) -> Vec<Pending> {
        let mut queues = self.shard(product_id);
        let Some(queue) = queues.get_mut(&product_id) else {
            return Vec::new();
        };
        queue.retain(|pending| !pending.answer.is_closed());
        let batch = queue.len().min(MAX_BATCH);
        queue.drain(..batch).collect()
    }
}

/// Serves `product_id`'s queue until it is empty. The queue's entry stays while a batch is
/// served, so requests arriving meanwhile join the next batch instead of starting a worker; it
/// is removed (under the same mutex) only when there is nothing left.
async fn serve(batches: web::Data<Batches>, state: AppState, product_id: i64) {
    // If this task ends any other way (a panic; its runtime stopping), the queue must not
    // stay behind without a worker: every later request would wait for ever.
    let mut guard = Abandoned {
        batches: &batches,
        product_id,
        armed: true,
    };
    loop {
        {
            let mut queues = batches.shard(product_id);
            let queue = queues.entry(product_id).or_default();
            queue.retain(|pending| !pending.answer.is_closed());
            if queue.is_empty() {
                queues.remove(&product_id);
                guard.armed = false;
                return;
            }
        }
        if let Err(error) = serve_batch(&batches, &state, product_id).await {
            match error {
                // Every request waits for its own budget and leaves the queue when it is
                // spent: the queued ones get another attempt of the worker.
                AppError::Lock(LockError::Busy { .. }) => {}
                // The lock cannot be had (Redis is down): every request queued now would get
                // the same answer.
                error => {
                    for pending in batches.take_all(product_id) {
                        let _ = pending.answer.send(Err(error.clone()));
                    }
                }
            }
        }
    }
}

impl Batches {
    /// Everything queued for `product_id`.
    fn take_all(&self, product_id: i64) -> Vec<Pending> {
        let mut queues = self.shard(product_id);
        queues
            .get_mut(&product_id)
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

/// A request's place in its queue, given up when the request's future is dropped.
struct Queued<'a> {
    batches: &'a Batches,
    product_id: i64,
    ticket: u64,
    armed: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Not there any more if its batch took it: then it is carried out.
            self.batches.leave(self.product_id, self.ticket);
        }
    }
}

/// Removes a product's queue whose worker ended without emptying it. The requests still queued
/// were never taken into a batch and are told so (`503 overloaded`, nothing written); those of
/// the batch in hand get their answer channel dropped (`504 outcome_unknown`: it may have
/// committed).
struct Abandoned<'a> {
    batches: &'a Batches,
    product_id: i64,
    armed: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if self.armed {
            let queued = self.batches.shard(self.product_id).remove(&self.product_id);
            for pending in queued.unwrap_or_default() {
                let _ = pending.answer.send(Err(AppError::Overloaded(
                    "the instance stopped serving this product's queue".into(),
                )));
            }
        }
    }
}

/// One hold of the product's lock: takes what is queued *now* — all that queued while the lock
/// was awaited, less the requests whose clients hung up or whose budget ran out meanwhile —
/// and serves it in one transaction (`fenced_deduct`).
#[distributed_lock(resource = "product:{product_id}", locker = state.locker, ttl_ms = LOCK_TTL_MS, wait_ms = 20000, guard = lock)]
async fn serve_batch(batches: &Batches, state: &AppState, product_id: i64) -> Result<(), AppError> {
    let batch = batches.take(product_id);
    if batch.is_empty() {
        return Ok(());
    }
    let requests: Vec<Requested<'_>> = batch
        .iter()
        .map(|pending| Requested {
            quantity: pending.quantity,
            key: pending.key.as_ref(),
        })
        .collect();
    let deduct = async || {
        state
            .db
            .holding(lock, async |conn| {
                fenced_deduct(
                    conn,
                    &state.instance,
                    product_id,
                    &requests,
                    db_fence(lock),
                    lock.acquired_at(),
                )
                .await
            })
            .await
    };
    // A key committed elsewhere between the batch's check and its insert rolls the batch back:
    // once more, and the check sees it (that request alone is then a repeat). Each round finds
    // at least one more key answered, so there are at most as many rounds as keys.
    let mut outcome = deduct().await;
    for _ in 0..requests.len() {
        match outcome {
            Err(AppError::AlreadyApplied) => outcome = deduct().await,
            _ => break,
        }
    }
    match outcome {
        Ok(answers) => {
            for (pending, answer) in batch.into_iter().zip(answers) {
                let _ = pending.answer.send(answer);
            }
        }
        Err(error) => {
            for pending in batch {
                let answer = match (&error, &pending.key) {
                    // Conflicts to the end (keys committed elsewhere on every attempt): the
                    // batch was rolled back. A keyed request learns its key's state from the
                    // caller; a keyless one is told the truth without a word about keys.
                    (AppError::AlreadyApplied, None) => AppError::Overloaded(
                        "the batch was rolled back by key conflicts of other requests".into(),
                    ),
                    _ => error.clone(),
                };
                let _ = pending.answer.send(Err(answer));
            }
        }
    }
    Ok(())
}
