//! The shared-memory primitives of the in-process waiter queue (`local.rs`).
//!
//! Built with `RUSTFLAGS="--cfg fencelock_loom"` they are loom's models instead, so that
//! `local::model` can run the real queue under loom, which explores the interleavings of its
//! threads at every lock, atomic and channel operation (`cargo xtask test` runs it; see
//! ARCHITECTURE.md). Nothing else changes in that build.

#[cfg(fencelock_loom)]
pub(crate) use loom::sync::{atomic::AtomicU64, Arc as Shared, Mutex};
#[cfg(not(fencelock_loom))]
pub(crate) use std::sync::{atomic::AtomicU64, Arc as Shared, Mutex};
#[cfg(not(fencelock_loom))]
pub(crate) use tokio::sync::oneshot;

/// tokio's `oneshot`, as much of it as the queue uses, over loom's mutex: loom cannot see
/// inside tokio's channel (its atomics are std's), so a send, a close or a receive would be
/// one step to it, and a window between the queue's lock and a channel operation would go
/// unexplored.
#[cfg(fencelock_loom)]
pub(crate) mod oneshot {
    use super::{Mutex, Shared};
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    struct State<T> {
        value: Option<T>,
        sender_gone: bool,
        receiver_gone: bool,
        waker: Option<Waker>,
    }

    pub(crate) struct Sender<T>(Shared<Mutex<State<T>>>);
    pub(crate) struct Receiver<T>(Shared<Mutex<State<T>>>);

    #[derive(Debug)]
    pub(crate) struct RecvError;

    pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
        let state = Shared::new(Mutex::new(State {
            value: None,
            sender_gone: false,
            receiver_gone: false,
            waker: None,
        }));
        (Sender(Shared::clone(&state)), Receiver(state))
    }

    impl<T> Sender<T> {
        pub(crate) fn send(self, value: T) -> Result<(), T> {
            let mut state = self.0.lock().unwrap();
            if state.receiver_gone {
                return Err(value);
            }
            state.value = Some(value);
            if let Some(waker) = state.waker.take() {
                waker.wake();
            }
            Ok(())
        }

        pub(crate) fn is_closed(&self) -> bool {
            self.0.lock().unwrap().receiver_gone
        }
    }

    impl<T> Drop for Sender<T> {
        fn drop(&mut self) {
            let mut state = self.0.lock().unwrap();
            state.sender_gone = true;
            if let Some(waker) = state.waker.take() {
                waker.wake();
            }
        }
    }

    impl<T> Receiver<T> {
        pub(crate) fn try_recv(&mut self) -> Result<T, RecvError> {
            self.0.lock().unwrap().value.take().ok_or(RecvError)
        }
    }

    impl<T> Future for Receiver<T> {
        type Output = Result<T, RecvError>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let mut state = self.0.lock().unwrap();
            if let Some(value) = state.value.take() {
                Poll::Ready(Ok(value))
            } else if state.sender_gone {
                Poll::Ready(Err(RecvError))
            } else {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    impl<T> Drop for Receiver<T> {
        fn drop(&mut self) {
            let mut state = self.0.lock().unwrap();
            state.receiver_gone = true;
            let value = state.value.take();
            // What was sent and never received is dropped outside the channel's lock.
            drop(state);
            drop(value);
        }
    }

    impl<T> std::fmt::Debug for Sender<T> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Sender")
        }
    }

    impl<T> std::fmt::Debug for Receiver<T> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Receiver")
        }
    }
}
