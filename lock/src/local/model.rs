//! The in-process queue under loom: real threads over the real `LocalQueues`, with loom
//! exploring every interleaving of their lock and atomic operations (every schedule up to its
//! preemption bound, which is where concurrency bugs live in practice), where the exhaustive
//! test in `local.rs` can only order whole calls.
//!
//! Run by `cargo xtask test` as
//! `RUSTFLAGS="--cfg fencelock_loom" cargo test -p fencelock --lib local::model`.
//!
//! One lock, three threads. The holder ends its hold as `guard.rs`'s `finish` does: it hands
//! the lock to the next waiter (and, if that one gave up meanwhile, to the one after, or
//! releases it for real when none is left or the streak is used up), or its handoff fails and
//! the waiter is put back, or its task dies half-way (the runtime shut down: the waiter's
//! sender is dropped, nothing else runs). The lock travels in a hand-over (`Parcel`, as
//! `guard::Handover`); in the second test a fourth thread, the take-back after the hand-over
//! bound, races the waiter for it, and a waiter that finds it empty queues again. Two waiters queue, look for the lock, take it, work,
//! and end their own hold the same way (so a lock can travel down the queue and back), and
//! may leave — drop their ticket, as a cancelled `acquire` does — at any point. A lock sent to
//! a waiter that left is dropped in its channel; then, as `Drop for Guard` does, it is released
//! by `finish` (run by the checker after the threads, like the background task would).
//!
//! Checked, for every interleaving: never two holders at once; every lock sent is taken,
//! taken back, returned or dropped untaken, exactly once; no waiter left behind (one still waiting is queued exactly
//! once, and is handed the lock or reaches Redis); the queue never holds a waiter that left;
//! the streak stays within its bound; and once everyone is gone nothing is left of the
//! resource (except after a dead `finish`, whose streak the next real release ends).

use super::*;
use futures_util::FutureExt;
use loom::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;

const RESOURCE: &str = "r";

/// What happened to the lock, in order.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    SentTo(u64, usize),
    TakenBy(u64, usize),
    /// Its recipient left with it in the channel: released by the guard's drop.
    DroppedUntaken(usize),
    /// Its recipient had left before it was sent: the holder has it back.
    Returned(usize),
    /// Its recipient did not take it in time: the releaser took it back (and passed it on).
    TakenBack(usize),
    Released,
}

/// The model's shared record: the events, how many hold the lock now, and the number the
/// next lock sent gets.
#[derive(Debug, Clone)]
struct Record {
    events: Shared<Mutex<Vec<Event>>>,
    holders: Shared<AtomicUsize>,
    sent: Shared<AtomicUsize>,
}

impl Record {
    fn new(holders: usize) -> Self {
        Record {
            events: Shared::new(Mutex::new(Vec::new())),
            holders: Shared::new(AtomicUsize::new(holders)),
            sent: Shared::new(AtomicUsize::new(0)),
        }
    }

    fn note(&self, event: Event) {
        self.events.lock().unwrap().push(event);
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// A critical section starts with a lock handed over (or, without one, taken in Redis):
    /// nobody else may be in one.
    fn start_holding(&self, by: u64, lock: Option<&mut Lock>) {
        if let Some(lock) = lock {
            let number = lock.take();
            self.note(Event::TakenBy(by, number));
        }
        let before = self.holders.fetch_add(1, SeqCst);
        assert_eq!(before, 0, "two holders at once: {:?}", self.events());
    }

    fn stop_holding(&self) {
        self.holders.fetch_sub(1, SeqCst);
    }
}

/// The lock as handed over (a `Guard` in the crate). Dropped without being taken — its
/// recipient left with it in the channel — it notes so, as `Drop for Guard` releases.
#[derive(Debug)]
struct Lock {
    number: usize,
    taken: bool,
    record: Record,
}

impl Lock {
    fn take(&mut self) -> usize {
        self.taken = true;
        self.number
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if !self.taken {
            self.record.note(Event::DroppedUntaken(self.number));
        }
    }
}

/// What the queue carries: the lock in a hand-over, emptied by whoever takes it first — the
/// waiter, or the releaser taking it back (`guard::Handover`).
type Parcel = Shared<Mutex<Option<Lock>>>;

fn unwrap(parcel: &Parcel) -> Option<Lock> {
    parcel.lock().unwrap().take()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum HolderEnd {
    HandsOver,
    /// Hands over, and a take-back (a thread of its own) races the waiter for the lock.
    HandsOverAndTakesBack,
    HandoffFails,
    Dies,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Leaves {
    AfterFirstLook,
    Never,
}

/// `finish` in guard.rs, with `end` deciding how each handoff goes. Returns the hand-over
/// sent, if any.
fn finish(
    queues: &LocalQueues<Parcel>,
    record: &Record,
    end: HolderEnd,
    max_streak: u32,
) -> Option<Parcel> {
    while let Some(waiter) = queues.next_for_handoff(RESOURCE, max_streak) {
        match end {
            HolderEnd::HandsOver | HolderEnd::HandsOverAndTakesBack => {
                let number = record.sent.fetch_add(1, SeqCst);
                let parcel = Shared::new(Mutex::new(Some(Lock {
                    number,
                    taken: false,
                    record: record.clone(),
                })));
                record.note(Event::SentTo(waiter.id, number));
                match waiter.grant.send(Shared::clone(&parcel)) {
                    Ok(()) => return Some(parcel),
                    // The waiter gave up meanwhile: ours again, on to the next one.
                    Err(_) => {
                        unwrap(&parcel).unwrap().take();
                        record.note(Event::Returned(number));
                    }
                }
            }
            HolderEnd::HandoffFails => {
                queues.handoff_failed(RESOURCE, waiter);
                record.note(Event::Released);
                return None;
            }
            HolderEnd::Dies => {
                drop(waiter);
                return None;
            }
        }
    }
    queues.end_streak(RESOURCE, Duration::ZERO);
    record.note(Event::Released);
    None
}

/// The releaser's take-back after the hand-over bound: if the waiter has not taken the lock,
/// it is dropped — which, as `Drop for Guard` does, ends the hold with `finish`.
fn take_back(queues: &LocalQueues<Parcel>, record: &Record, parcel: &Parcel, max_streak: u32) {
    if let Some(mut lock) = unwrap(parcel) {
        let number = lock.take();
        record.note(Event::TakenBack(number));
        finish(queues, record, HolderEnd::HandsOver, max_streak);
    }
}

/// A waiter's thread: queue, look for the lock twice (leaving after the first look if so
/// told); with the lock, work and end the hold; finding its hand-over taken back, queue again.
/// Returns the ticket if still waiting.
fn waiter(
    queues: &LocalQueues<Parcel>,
    record: &Record,
    leaves: Leaves,
    max_streak: u32,
) -> (u64, Option<LocalTicket<Parcel>>) {
    let enqueue = || queues.enqueue(&Arc::from(RESOURCE), LockOptions::new());
    let mut ticket = Some(enqueue());
    let mut id = ticket.as_ref().map(|ticket| ticket.id).unwrap();
    for look in 0..2 {
        if let Some(parcel) = LocalTicket::granted(&mut ticket).now_or_never() {
            let Some(mut lock) = unwrap(&parcel) else {
                let again = enqueue();
                id = again.id;
                ticket = Some(again);
                continue;
            };
            drop(ticket.take());
            record.start_holding(id, Some(&mut lock));
            record.stop_holding();
            finish(queues, record, HolderEnd::HandsOver, max_streak);
            return (id, None);
        }
        if look == 0 && leaves == Leaves::AfterFirstLook {
            return (id, None);
        }
        loom::thread::yield_now();
    }
    (id, ticket)
}

fn model(end: HolderEnd, max_streak: u32, leaves: Vec<Leaves>, preemptions: usize) {
    let case = format!("{end:?}, streak {max_streak}, {leaves:?}");
    let mut builder = loom::model::Builder::new();
    // Four preemptions for three threads: the fewest that reach a waiter leaving between the
    // queue's lock and its channel's close while the holder puts it back (closing the receiver
    // after unlocking the queue is found at 4, not at 3). Those 36 cases take about 2 minutes
    // in a debug build; with a fourth thread (a take-back) the bound is lower, or it would
    // take hours.
    builder.preemption_bound = Some(preemptions);
    builder.check(move || {
        let queues = Shared::new(LocalQueues::<Parcel>::default());
        let record = Record::new(1);
        let waiters: Vec<_> = leaves
            .iter()
            .map(|&leaves| {
                let (queues, record) = (Shared::clone(&queues), record.clone());
                loom::thread::spawn(move || waiter(&queues, &record, leaves, max_streak))
            })
            .collect();
        record.stop_holding();
        let sent = finish(&queues, &record, end, max_streak);
        let taking_back = sent
            .filter(|_| end == HolderEnd::HandsOverAndTakesBack)
            .map(|parcel| {
                let (queues, record) = (Shared::clone(&queues), record.clone());
                loom::thread::spawn(move || take_back(&queues, &record, &parcel, max_streak))
            });
        let mut waiting: Vec<(u64, LocalTicket<Parcel>)> = waiters
            .into_iter()
            .filter_map(|thread| match thread.join().unwrap() {
                (id, Some(ticket)) => Some((id, ticket)),
                (_, None) => None,
            })
            .collect();
        if let Some(thread) = taking_back {
            thread.join().unwrap();
        }
        check_queue(&queues, &waiting, &case);
        settle(&queues, &record, &mut waiting, max_streak, &case);
        check_history(&record.events(), end, &case);
        let map = queues.by_resource.lock().unwrap();
        if end == HolderEnd::Dies {
            // The dead finish's streak is ended by the next real release of this process.
            assert!(map.values().all(|queue| queue.waiters.is_empty()), "{case}");
        } else {
            assert!(
                map.is_empty(),
                "an entry is left once everyone is gone: {case}"
            );
        }
    });
}

/// The queue after the threads: exactly the waiters still waiting, once each.
fn check_queue(queues: &LocalQueues<Parcel>, waiting: &[(u64, LocalTicket<Parcel>)], case: &str) {
    let map = queues.by_resource.lock().unwrap();
    let queued: Vec<u64> = map
        .get(RESOURCE)
        .map(|queue| {
            assert!(queue.streak <= 2, "streak over its bound: {case}");
            queue.waiters.iter().map(|waiter| waiter.id).collect()
        })
        .unwrap_or_default();
    for id in &queued {
        assert!(
            waiting.iter().any(|(waiter, _)| waiter == id),
            "a waiter that left is queued: {case}"
        );
    }
    for (id, _) in waiting {
        let places = queued.iter().filter(|queued| *queued == id).count();
        // A waiter whose handoff is in flight is out of the queue (its lock in its channel).
        assert!(places <= 1, "a waiter queued twice: {case}");
    }
}

/// What the rest of the program would do once the threads are done: a lock dropped untaken is
/// released by `finish` (the guard's drop), a waiting waiter takes what it was sent, or — the
/// lock being free — reaches Redis and takes it there (its ticket dropped as it returns).
fn settle(
    queues: &LocalQueues<Parcel>,
    record: &Record,
    waiting: &mut Vec<(u64, LocalTicket<Parcel>)>,
    max_streak: u32,
    case: &str,
) {
    let mut settled_untaken = 0;
    for _ in 0..8 {
        let untaken = record
            .events()
            .iter()
            .filter(|event| matches!(event, Event::DroppedUntaken(_)))
            .count();
        if untaken > settled_untaken {
            settled_untaken = untaken;
            finish(queues, record, HolderEnd::HandsOver, max_streak);
            continue;
        }
        let Some((id, ticket)) = waiting.pop() else {
            return;
        };
        let mut ticket = Some(ticket);
        let handed = LocalTicket::granted(&mut ticket)
            .now_or_never()
            .and_then(|parcel| unwrap(&parcel));
        match handed {
            Some(mut lock) => {
                drop(ticket);
                record.start_holding(id, Some(&mut lock));
            }
            None => {
                assert!(
                    !sent_and_unanswered(record, id),
                    "a lock sent to a waiter that stayed did not reach it: {case}"
                );
                drop(ticket);
                record.start_holding(id, None);
            }
        }
        record.stop_holding();
        finish(queues, record, HolderEnd::HandsOver, max_streak);
    }
    panic!("the lock never settled: {case}");
}

/// The fates of lock `number`: taken, dropped untaken, or returned to its sender.
fn fates(events: &[Event], number: usize) -> usize {
    events
        .iter()
        .filter(|event| match event {
            Event::TakenBy(_, n)
            | Event::DroppedUntaken(n)
            | Event::Returned(n)
            | Event::TakenBack(n) => *n == number,
            _ => false,
        })
        .count()
}

fn sent_and_unanswered(record: &Record, id: u64) -> bool {
    let events = record.events();
    events.iter().any(|event| {
        matches!(event, Event::SentTo(to, number) if *to == id && fates(&events, *number) == 0)
    })
}

/// Every lock sent met exactly one fate; and unless the holder died, it was released in the end.
fn check_history(events: &[Event], end: HolderEnd, case: &str) {
    for event in events {
        if let Event::SentTo(_, number) = event {
            assert_eq!(
                fates(events, *number),
                1,
                "a lock sent did not meet exactly one fate: {case} {events:?}"
            );
        }
    }
    if end != HolderEnd::Dies {
        assert!(
            events.contains(&Event::Released),
            "the lock was never released: {case} {events:?}"
        );
    }
}

#[test]
fn every_interleaving_of_a_holder_and_two_waiters() {
    let ends = [
        HolderEnd::HandsOver,
        HolderEnd::HandoffFails,
        HolderEnd::Dies,
    ];
    let leaves = [Leaves::AfterFirstLook, Leaves::Never];
    for end in ends {
        for max_streak in 0..=2 {
            for first in leaves {
                for second in leaves {
                    model(end, max_streak, vec![first, second], 4);
                }
            }
        }
    }
}

/// The take-back after the hand-over bound (a fourth thread) races the waiter for the lock:
/// exactly one of them has it, a waiter that finds its hand-over empty queues again, and a
/// lock taken back goes on to the next waiter or is released.
#[test]
fn a_take_back_races_the_waiter() {
    let leaves = [Leaves::AfterFirstLook, Leaves::Never];
    for (waiters, preemptions) in [(1, 5), (2, 3)] {
        for max_streak in 1..=2 {
            for first in leaves {
                for second in leaves {
                    let leaves = [first, second][..waiters].to_vec();
                    model(
                        HolderEnd::HandsOverAndTakesBack,
                        max_streak,
                        leaves,
                        preemptions,
                    );
                }
            }
        }
    }
}
