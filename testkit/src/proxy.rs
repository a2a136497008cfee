//! A TCP fault proxy: sits between a client and a real server on loopback and, on demand, adds
//! latency, stalls the link (a black hole: bytes are held, nothing is answered, connections stay
//! open) or resets every connection (RST, as a crashed middlebox would).
//!
//! It runs on a thread and runtime of its own, so it keeps working whatever the test does with
//! its runtimes, and stops when dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// What the proxy does to the bytes it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward at once.
    #[default]
    None,
    /// Hold every chunk this long before forwarding it (each direction).
    Latency(Duration),
    /// Hold only what the server sends back this long: requests arrive at once, replies late.
    ReplyLatency(Duration),
    /// Forward nothing until the fault is lifted; held bytes are delivered then (a link that
    /// hangs, then heals). New connections are accepted but stall too.
    Blackhole,
}

#[derive(Debug)]
struct Control {
    fault: watch::Sender<Fault>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
    /// Bumped to hang every open connection for good.
    hangs: watch::Sender<u64>,
}

/// A running proxy in front of `127.0.0.1:<upstream>`. Dropping it stops it.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    control: Arc<Control>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    connections: Arc<Mutex<u64>>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let control = Arc::new(Control {
            fault: watch::channel(Fault::None).0,
            resets: watch::channel(0).0,
            hangs: watch::channel(0).0,
        });
        let connections = Arc::new(Mutex::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream_port));
        let thread_control = Arc::clone(&control);
        let thread_connections = Arc::clone(&connections);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fault proxy runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        () = accept_loop(listener, upstream, thread_control, thread_connections) => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("spawn the fault proxy thread");
        FaultProxy {
            port,
            control,
            stop: Some(stop),
            thread: Some(thread),
            connections,
        }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<proxy port>/`, for a proxy in front of Redis.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Applies `fault` from now on (to open connections too).
    pub fn set(&self, fault: Fault) {
        self.control.fault.send_replace(fault);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self.control.fault.borrow()
    }

    /// Resets every open connection (RST to both sides); new connections are served as usual.
    pub fn reset_connections(&self) {
        self.control.resets.send_modify(|resets| *resets += 1);
    }

    /// Hangs every open connection for good — half-open, as when the peer vanished without a
    /// FIN or RST: the sockets stay open and nothing more goes through them, either way. New
    /// connections are served as usual.
    pub fn hang_open_connections(&self) {
        self.control.hangs.send_modify(|hangs| *hangs += 1);
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        *self.connections.lock().expect("connection count")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    control: Arc<Control>,
    connections: Arc<Mutex<u64>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        *connections.lock().expect("connection count") += 1;
        let control = Arc::clone(&control);
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                reset(&client);
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let mut resets = control.resets.subscribe();
            resets.borrow_and_update();
            let mut hangs = control.hangs.subscribe();
            hangs.borrow_and_update();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = pump(client_read, server_write, control.fault.subscribe(), false);
            let down = pump(server_read, client_write, control.fault.subscribe(), true);
            let pumps = async { tokio::join!(up, down) };
            tokio::pin!(pumps);
            tokio::select! {
                _ = &mut pumps => {}
                _ = resets.changed() => {
                    // Dropping the halves with linger 0 (set below) sends RST to both sides.
                }
                _ = hangs.changed() => {
                    // Stop copying but keep the pumps, and so both sockets, until the proxy
                    // stops.
                    std::future::pending::<()>().await;
                }
            }
        });
    }
}

/// Copies one direction (`replies`: server to client) until EOF or error. A delay counts from
/// when a chunk was read, so chunks in flight are delayed side by side, not one after another
/// (a link with latency, not a queue).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
    replies: bool,
) {
    // Linger 0: when a reset drops the halves, the kernel sends RST instead of FIN (loopback
    // sockets close at once, so nothing blocks).
    let _ = to.as_ref().set_zero_linger();
    let _ = from.as_ref().set_zero_linger();
    let (chunks, mut in_flight) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(read @ 1..) = from.read(&mut buffer).await {
            if chunks
                .send((Instant::now(), buffer[..read].to_vec()))
                .is_err()
            {
                return;
            }
        }
    };
    let write = async move {
        while let Some((read_at, chunk)) = in_flight.recv().await {
            loop {
                let current = *fault.borrow_and_update();
                match current {
                    Fault::None => break,
                    Fault::Latency(delay) => {
                        tokio::time::sleep_until(read_at + delay).await;
                        break;
                    }
                    Fault::ReplyLatency(delay) => {
                        if replies {
                            tokio::time::sleep_until(read_at + delay).await;
                        }
                        break;
                    }
                    Fault::Blackhole => {
                        if fault.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}
