//! [`MultiGuard`]: several resources held together (a transfer between two balances).
//!
//! Deadlock freedom comes from order, not from timeouts: every caller takes its resources in
//! one global order (sorted by name, duplicates removed), so no two callers can each hold what
//! the other waits for. Each resource is an ordinary lock with its own fence; the guards are
//! released together, and a failure part-way gives back what was taken.

use crate::guard::Guard;
use crate::locker::Locker;
use crate::options::LockOptions;
use crate::LockError;
use std::time::Duration;
use tokio::time::Instant;

/// Several held locks, taken in one global order by [`Locker::acquire_many`]. Dropping it
/// releases every lock (from the background, like a dropped [`Guard`]).
#[derive(Debug)]
#[must_use = "dropping the guard releases the locks at once"]
pub struct MultiGuard {
    /// Sorted by resource name: the order they were taken in.
    guards: Vec<Guard>,
}

impl Locker {
    /// Acquires every resource in `resources` and holds them together.
    ///
    /// They are taken one after another in sorted order (duplicates count once), whatever the
    /// order given, so that two callers asking for the same resources in opposite orders cannot
    /// deadlock. `options.wait` bounds the whole acquisition, not each lock; the TTL counts
    /// from each lock's own acquisition, so with long waits prefer `auto_extend`.
    ///
    /// # Errors
    /// Like [`Locker::acquire`], for the first resource that could not be taken; the ones already
    /// taken are released before this returns. [`LockError::Busy`] also when a lock taken
    /// earlier ran out while a later one was awaited (a TTL shorter than the wait): the guard
    /// returned never holds a lock that is already gone. An empty list is
    /// [`LockError::InvalidResource`].
    ///
    /// Cancel-safe: dropping the future releases whatever it had taken so far.
    ///
    /// ```no_run
    /// # async fn run(locker: fencelock::Locker) -> Result<(), fencelock::LockError> {
    /// use fencelock::LockOptions;
    /// let both = locker
    ///     .acquire_many(&["balance:7", "balance:3"], &LockOptions::new())
    ///     .await?;
    /// let (from_fence, to_fence) = (both.fence("balance:7"), both.fence("balance:3"));
    /// // ... write each balance with its own fence ...
    /// both.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn acquire_many<S: AsRef<str>>(
        &self,
        resources: &[S],
        options: &LockOptions,
    ) -> Result<MultiGuard, LockError> {
        let mut names: Vec<&str> = resources.iter().map(AsRef::as_ref).collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            return Err(LockError::InvalidResource {
                resource: String::new(),
                reason: "no resource given",
            });
        }
        for name in &names {
            crate::resource::validate_resource(name)?;
        }
        options.check()?;
        let started = Instant::now();
        let deadline = started + options.wait;
        // Taken so far: held by a MultiGuard from the start, so that a dropped future releases
        // them (on drop); a failure releases them before returning.
        let mut taken = MultiGuard {
            guards: Vec::with_capacity(names.len()),
        };
        for name in names {
            let wait = deadline.saturating_duration_since(Instant::now());
            let options = options.clone().wait(wait);
            // A lock taken earlier may run out while this one is awaited (a TTL shorter than
            // the wait, no auto-extend): then the whole acquisition fails rather than return a
            // guard with a lock already gone.
            let outcome = tokio::select! {
                biased;
                () = taken.lost(), if !taken.guards.is_empty() => Err(LockError::Busy {
                    resource: name.to_string(),
                    waited: started.elapsed(),
                    retry_after: None,
                }),
                outcome = self.acquire(name, &options) => outcome,
            };
            match outcome {
                Ok(guard) => taken.guards.push(guard),
                Err(error) => {
                    // Their release failing changes nothing for the caller: they expire.
                    let _ = taken.release().await;
                    return Err(error);
                }
            }
        }
        if let Some(resource) = taken.lost_resource().map(str::to_string) {
            let _ = taken.release().await;
            return Err(LockError::Busy {
                resource,
                waited: started.elapsed(),
                retry_after: None,
            });
        }
        Ok(taken)
    }
}

impl MultiGuard {
    /// The guards, sorted by resource name.
    pub fn guards(&self) -> &[Guard] {
        &self.guards
    }

    /// The fence of `resource`'s lock, if it is one of them. Each resource has its own fence:
    /// write each resource's data with its own.
    pub fn fence(&self, resource: &str) -> Option<u64> {
        self.guard(resource).map(Guard::fence)
    }

    /// The guard of `resource`, if it is one of them.
    pub fn guard(&self, resource: &str) -> Option<&Guard> {
        self.guards
            .binary_search_by(|guard| guard.resource().cmp(resource))
            .ok()
            .map(|index| &self.guards[index])
    }

    /// Whether any of the locks may be lost (see [`Guard::is_lost`]).
    pub fn is_lost(&self) -> bool {
        self.guards.iter().any(Guard::is_lost)
    }

    /// Until when all the locks are certainly held: the earliest validity among them.
    pub fn valid_until(&self) -> Instant {
        self.guards
            .iter()
            .map(Guard::valid_until)
            .min()
            .expect("a MultiGuard holds at least one lock")
    }

    /// Resolves when any of the locks is lost.
    pub async fn lost(&self) {
        futures_util::future::select_all(self.guards.iter().map(|guard| Box::pin(guard.lost())))
            .await;
    }

    /// The resource of the first lock that may be lost (see [`Guard::is_lost`]), if any: for
    /// error messages such as [`LockError::Lost`].
    pub fn lost_resource(&self) -> Option<&str> {
        self.guards
            .iter()
            .find(|guard| guard.is_lost())
            .map(Guard::resource)
    }

    /// Extends every lock to `by` from now (see [`Guard::extend`]). `Ok(true)` when all were
    /// still ours.
    ///
    /// # Errors
    /// [`LockError::Unavailable`] for the first lock Redis could not be asked about.
    pub async fn extend(&self, by: Duration) -> Result<bool, LockError> {
        let outcomes =
            futures_util::future::join_all(self.guards.iter().map(|guard| guard.extend(by))).await;
        let mut all_ours = true;
        for outcome in outcomes {
            all_ours &= outcome?;
        }
        Ok(all_ours)
    }

    /// Releases every lock, in reverse order of acquisition, and reports whether all were still
    /// ours. Every release is tried even when one fails; the first error is returned.
    ///
    /// Cancel-safe like [`Guard::release`]: what is not released yet is released on drop.
    ///
    /// # Errors
    /// [`LockError::Unavailable`] when Redis could not be told about one of them.
    pub async fn release(mut self) -> Result<bool, LockError> {
        let mut all_ours = true;
        let mut first_error = None;
        while let Some(guard) = self.guards.pop() {
            match guard.release().await {
                Ok(ours) => all_ours &= ours,
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(all_ours),
        }
    }
}
