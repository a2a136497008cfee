//! Release notifications: one pub/sub connection per node, shared by every waiter of the process.
//!
//! Pooled (multiplexed) connections cannot SUBSCRIBE, so each node gets one dedicated pub/sub
//! connection, owned by a driver task on the background runtime (no caller's runtime, which may
//! block or stop, can stall it). Waiters hold a [`Listener`] on their
//! resource's channel; a message bumps a `watch` counter, which cannot lose a wake-up: a waiter
//! that subscribed before its last attempt sees any release that happened after it. A release
//! message carries the releasing locker's id, so a waiter can tell whether another process
//! holds this lock too (see `local.rs` on yielding a turn). All SUBSCRIBE/UNSUBSCRIBE commands
//! go through the driver, one at a time, so they can never be reordered. After a reconnect every
//! listener is woken, because messages may have been missed while the connection was down.

use crate::background;
use crate::endpoint::Endpoint;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How often channels without listeners are unsubscribed.
const IDLE_CHANNEL_SWEEP: Duration = Duration::from_secs(10);
/// Reconnect backoff bounds for the pub/sub connection.
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Channels {
    by_name: HashMap<String, Channel>,
}

#[derive(Debug)]
struct Channel {
    wakes: watch::Sender<Wakes>,
    listeners: usize,
    subscribed: bool,
}

/// What a channel has heard so far, as running counts (a count cannot miss a message the way a
/// "last message" value could).
#[derive(Debug, Clone, Copy, Default)]
struct Wakes {
    /// Release messages, and reconnects (which may have swallowed some).
    total: u64,
    /// Releases announced by other lockers (other processes).
    from_elsewhere: u64,
}

impl Channels {
    fn wake(&mut self, name: &str, from_elsewhere: bool) {
        if let Some(channel) = self.by_name.get(name) {
            channel.wakes.send_modify(|wakes| {
                wakes.total += 1;
                wakes.from_elsewhere += u64::from(from_elsewhere);
            });
        }
    }

    fn wake_all_and_forget_subscriptions(&mut self) {
        for channel in self.by_name.values_mut() {
            channel.subscribed = false;
            channel.wakes.send_modify(|wakes| wakes.total += 1);
        }
    }
}

enum Command {
    Subscribe(String, oneshot::Sender<()>),
}

/// The pub/sub side of one Redis node.
#[derive(Debug)]
pub(crate) struct Notifier {
    endpoint: Endpoint,
    /// The payload this process's releases carry (the locker id).
    own_id: Arc<str>,
    channels: Arc<Mutex<Channels>>,
    /// The driver's command queue; none until the first waiter (no pub/sub connection before).
    driver: Mutex<Option<mpsc::UnboundedSender<Command>>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Subscribe(channel, _) => write!(f, "Subscribe({channel})"),
        }
    }
}

impl Notifier {
    pub(crate) fn new(endpoint: Endpoint, own_id: Arc<str>) -> Notifier {
        Notifier {
            endpoint,
            own_id,
            channels: Arc::default(),
            driver: Mutex::new(None),
        }
    }

    /// The running driver's command queue, starting a driver if there is none yet (or the last
    /// one ended). On the background runtime, never a caller's: a caller's runtime may block
    /// or stop, and every waiter of the process, on any runtime, hears releases through this
    /// one connection.
    fn driver(&self) -> mpsc::UnboundedSender<Command> {
        let mut driver = self.driver.lock().expect("driver lock");
        if let Some(commands) = driver.as_ref().filter(|commands| !commands.is_closed()) {
            return commands.clone();
        }
        let (commands, receiver) = mpsc::unbounded_channel();
        // The new driver subscribes afresh; until it confirms, nothing is subscribed.
        self.channels
            .lock()
            .expect("channels lock")
            .wake_all_and_forget_subscriptions();
        background::runtime().spawn(drive(
            self.endpoint.clone(),
            Arc::clone(&self.own_id),
            Arc::clone(&self.channels),
            receiver,
        ));
        *driver = Some(commands.clone());
        commands
    }

    /// Starts listening on `channel`. The returned [`Subscription`] resolves once the node
    /// confirmed the SUBSCRIBE; without confirmation (node down or hung) the listener still
    /// works once the driver reconnects, and until then the waiter's timer covers.
    pub(crate) fn listen(&self, channel: &str) -> (Listener, Subscription) {
        let driver = self.driver();
        let (wakes, subscribed) = {
            let mut channels = self.channels.lock().expect("channels lock");
            let entry = channels
                .by_name
                .entry(channel.to_string())
                .or_insert_with(|| Channel {
                    wakes: watch::channel(Wakes::default()).0,
                    listeners: 0,
                    subscribed: false,
                });
            entry.listeners += 1;
            (entry.wakes.subscribe(), entry.subscribed)
        };
        let seen_from_elsewhere = wakes.borrow().from_elsewhere;
        let listener = Listener {
            wakes,
            seen_from_elsewhere,
            channel: channel.to_string(),
            channels: Arc::clone(&self.channels),
        };
        let subscription = if subscribed {
            Subscription(None)
        } else {
            let (ack, confirmed) = oneshot::channel();
            match driver.send(Command::Subscribe(channel.to_string(), ack)) {
                Ok(()) => Subscription(Some(confirmed)),
                // No driver to ask: never confirmed.
                Err(_) => Subscription(Some(oneshot::channel().1)),
            }
        };
        (listener, subscription)
    }
}

/// A SUBSCRIBE on its way to one node; `None` when the channel was subscribed already.
#[derive(Debug)]
pub(crate) struct Subscription(Option<oneshot::Receiver<()>>);

impl Subscription {
    /// Whether the node confirmed (at once if it had before); `false` if it never will.
    pub(crate) async fn confirmed(self) -> bool {
        match self.0 {
            None => true,
            Some(confirmed) => confirmed.await.is_ok(),
        }
    }
}

/// A waiter's subscription to one channel. Dropping it lets the driver unsubscribe later.
#[derive(Debug)]
pub(crate) struct Listener {
    wakes: watch::Receiver<Wakes>,
    seen_from_elsewhere: u64,
    channel: String,
    channels: Arc<Mutex<Channels>>,
}

/// A release a [`Listener`] heard.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heard {
    /// Another process released this lock since the last call: it contends for it too.
    pub from_elsewhere: bool,
}

impl Listener {
    /// Resolves when a release was announced since the last call (or since listening began).
    pub(crate) async fn released(&mut self) -> Heard {
        if self.wakes.changed().await.is_err() {
            return std::future::pending().await;
        }
        let from_elsewhere = self.wakes.borrow_and_update().from_elsewhere;
        let heard = Heard {
            from_elsewhere: from_elsewhere > self.seen_from_elsewhere,
        };
        self.seen_from_elsewhere = from_elsewhere;
        heard
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Ok(mut channels) = self.channels.lock() {
            if let Some(channel) = channels.by_name.get_mut(&self.channel) {
                channel.listeners -= 1;
            }
        }
    }
}

async fn drive(
    endpoint: Endpoint,
    own_id: Arc<str>,
    channels: Arc<Mutex<Channels>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = RECONNECT_MIN;
    loop {
        // Through the endpoint each time: after a failover, the Sentinel group's new master.
        let connect = async { endpoint.client().await?.get_async_pubsub().await };
        let connected = tokio::time::timeout(RECONNECT_MAX, connect).await;
        let Ok(Ok(pubsub)) = connected else {
            // Down: answer subscribe requests at once (the waiters' timers cover) and retry.
            let retry_at = tokio::time::Instant::now() + backoff;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(retry_at) => break,
                    command = commands.recv() => match command {
                        None => return,
                        Some(Command::Subscribe(_, ack)) => drop(ack),
                    },
                }
            }
            backoff = (backoff * 2).min(RECONNECT_MAX);
            continue;
        };
        backoff = RECONNECT_MIN;
        let (mut sink, mut stream) = pubsub.split();
        let wanted: Vec<String> = {
            let mut channels = channels.lock().expect("channels lock");
            channels.wake_all_and_forget_subscriptions();
            channels
                .by_name
                .iter()
                .filter(|(_, channel)| channel.listeners > 0)
                .map(|(name, _)| name.clone())
                .collect()
        };
        if !wanted.is_empty() {
            if sink.subscribe(&wanted).await.is_err() {
                continue;
            }
            mark_subscribed(&channels, &wanted);
        }
        let mut sweep = tokio::time::interval(IDLE_CHANNEL_SWEEP);
        sweep.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => channels.lock().expect("channels lock").wake(
                        message.get_channel_name(),
                        message.get_payload_bytes() != own_id.as_bytes(),
                    ),
                    None => {
                        tracing::debug!("pub/sub connection lost; reconnecting");
                        channels.lock().expect("channels lock").wake_all_and_forget_subscriptions();
                        break;
                    }
                },
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Subscribe(channel, ack)) => {
                        // A listener that left before its request came up, with a sweep in
                        // between, would leave a subscription no entry tracks (never swept).
                        let wanted = channels
                            .lock()
                            .expect("channels lock")
                            .by_name
                            .get(&channel)
                            .is_some_and(|entry| entry.listeners > 0);
                        if !wanted {
                            continue;
                        }
                        if sink.subscribe(&channel).await.is_ok() {
                            mark_subscribed(&channels, std::slice::from_ref(&channel));
                            let _ = ack.send(());
                        }
                    }
                },
                _ = sweep.tick() => {
                    let idle: Vec<String> = {
                        let mut channels = channels.lock().expect("channels lock");
                        let idle: Vec<String> = channels
                            .by_name
                            .iter()
                            .filter(|(_, channel)| channel.listeners == 0)
                            .map(|(name, _)| name.clone())
                            .collect();
                        for name in &idle {
                            channels.by_name.remove(name);
                        }
                        idle
                    };
                    if !idle.is_empty() && sink.unsubscribe(&idle).await.is_err() {
                        channels.lock().expect("channels lock").wake_all_and_forget_subscriptions();
                        break;
                    }
                }
            }
        }
    }
}

fn mark_subscribed(channels: &Mutex<Channels>, names: &[String]) {
    let mut channels = channels.lock().expect("channels lock");
    for name in names {
        if let Some(channel) = channels.by_name.get_mut(name) {
            channel.subscribed = true;
        }
    }
}
