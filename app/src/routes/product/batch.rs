//! `strategy=lock` on a hot product: the requests this instance has queued for one product are
//! served together — one hold of the product's lock, one statement, one commit — each with its
//! own ledger row, idempotency record and answer.
//!
//! Why: with the lock held across a read and a write, every sale would cost a lock turn and a
//! durable commit of its own, and a flash sale queues hundreds of buyers on one product. Served
//! together they pay both once per batch. The answers stay exactly those of serving the
//! requests one by one in arrival order (see `product::fenced_deduct`).
//!
//! A worker task per product serves its queue, batch after batch, until the queue is empty.
//! It is not any request's future: a client that hangs up must not take the others' batch down
//! with it. A batch is taken once the lock is held, so it holds everything that queued while
//! the lock was awaited; a request whose client hung up before then is left out and writes
//! nothing (as a request cancelled while waiting for the lock never did).

use super::{fenced_deduct, Requested};
use crate::error::AppError;
use crate::idempotency::{IdempotencyKey, Stored};
use crate::state::{db_fence, AppState};
use actix_web::web;
use fencelock::distributed_lock;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The requests queued per product, in this instance (app data, shared by its workers).
#[derive(Debug, Default)]
pub struct Batches {
    queues: Mutex<HashMap<i64, Vec<Pending>>>,
}

/// A request waiting for its batch.
#[derive(Debug)]
struct Pending {
    /// When it joined the queue.
    queued_at: Instant,
    quantity: i64,
    key: Option<IdempotencyKey>,
    answer: oneshot::Sender<Result<Stored, AppError>>,
}

impl Batches {
    /// Deducts `quantity` from `product_id` under the product's lock, served with the other
    /// requests for it queued in this instance.
    pub async fn deduct(
        batches: &web::Data<Batches>,
        state: &AppState,
        product_id: i64,
        quantity: i64,
        key: Option<&IdempotencyKey>,
    ) -> Result<Stored, AppError> {
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            queued_at: Instant::now(),
            quantity,
            key: key.cloned(),
            answer,
        };
        let start_worker = {
            let mut queues = batches.queues.lock().expect("batch queues");
            match queues.get_mut(&product_id) {
                Some(queue) => {
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
        answered.await.unwrap_or_else(|_| {
            // The worker is gone without answering: it panicked (logged by tokio).
            Err(AppError::Database(
                "the request's batch was abandoned".into(),
            ))
        })
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
            let mut queues = batches.queues.lock().expect("batch queues");
            let queue = queues.entry(product_id).or_default();
            queue.retain(|pending| !pending.answer.is_closed());
            if queue.is_empty() {
                queues.remove(&product_id);
                guard.armed = false;
                return;
            }
        }
        let asked = Instant::now();
        if let Err(error) = serve_batch(&batches, &state, product_id).await {
            // The lock could not be had: those queued before we asked waited for it as long
            // as we did and get the failure; later ones get an attempt of their own.
            let mut queues = batches.queues.lock().expect("batch queues");
            if let Some(queue) = queues.get_mut(&product_id) {
                let (failed, later) = std::mem::take(queue)
                    .into_iter()
                    .partition(|pending: &Pending| pending.queued_at <= asked);
                *queue = later;
                for pending in failed {
                    let _ = pending.answer.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Removes a product's queue whose worker ended without emptying it; the requests in it get
/// their answer channel dropped (`the request's batch was abandoned`).
struct Abandoned<'a> {
    batches: &'a Batches,
    product_id: i64,
    armed: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Ok(mut queues) = self.batches.queues.lock() {
                queues.remove(&self.product_id);
            }
        }
    }
}

/// One hold of the product's lock: takes what is queued *now* — all that queued while the lock
/// was awaited, less the requests whose clients hung up meanwhile — and serves it in one
/// transaction (`fenced_deduct`).
#[distributed_lock(resource = "product:{product_id}", locker = state.locker, ttl_ms = 5000, wait_ms = 20000, guard = lock)]
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
    let outcome = match deduct().await {
        // A key committed elsewhere between the batch's check and its insert rolled the batch
        // back: once more, and the check sees it (that request alone is then a repeat).
        Err(AppError::AlreadyApplied) => deduct().await,
        outcome => outcome,
    };
    match outcome {
        Ok(answers) => {
            for (pending, answer) in batch.into_iter().zip(answers) {
                let _ = pending.answer.send(answer);
            }
        }
        Err(error) => {
            for pending in batch {
                let _ = pending.answer.send(Err(error.clone()));
            }
        }
    }
    Ok(())
}

/// The most requests one hold serves: bounds a transaction's size and time (the rest are the
/// next batch).
const MAX_BATCH: usize = 256;

impl Batches {
    /// The first [`MAX_BATCH`] queued for `product_id`, less the requests nobody waits for any
    /// more; the queue's entry stays (the worker is still serving).
    fn take(&self, product_id: i64) -> Vec<Pending> {
        let mut queues = self.queues.lock().expect("batch queues");
        let Some(queue) = queues.get_mut(&product_id) else {
            return Vec::new();
        };
        queue.retain(|pending| !pending.answer.is_closed());
        let batch = queue.len().min(MAX_BATCH);
        queue.drain(..batch).collect()
    }
}
