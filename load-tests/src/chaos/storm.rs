//! The hang-up storm: clients that send a deduction and hang up 30–100 ms later, over raw TCP
//! so that the hang-up is exactly what we say: half of them close (FIN), the other half reset
//! the connection (RST, zero linger). A response that comes back before the hang-up is counted,
//! not awaited.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};

/// The shortest and longest time a storm client waits before it hangs up.
pub const HANG_UP_MS: (u64, u64) = (30, 100);
/// Connections per client at most (a bound; a client makes ~15 a second).
const MAX_CONNECTIONS_PER_CLIENT: usize = 10_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What one target's storm clients did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// Hung up before any answer came.
    pub hung_up: u64,
    /// An answer (or the server's close) came first.
    pub answered: u64,
    /// Could not connect or send.
    pub failed: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.hung_up += other.hung_up;
        self.answered += other.answered;
        self.failed += other.failed;
    }
}

/// A storm in progress.
#[derive(Debug)]
pub struct Storm {
    stop: Arc<AtomicBool>,
    targets: Vec<String>,
    handles: Vec<(usize, JoinHandle<Tally>)>,
}

impl Storm {
    /// `clients` storm clients against each (label, address), deducting from `product`. Every
    /// client draws its delays from its own generator, seeded from `seed`.
    pub fn start(
        targets: &[(String, SocketAddr)],
        clients: usize,
        product: i64,
        seed: u64,
    ) -> Storm {
        let stop = Arc::new(AtomicBool::new(false));
        let body = super::driver::DEDUCT_BODY;
        let mut handles = Vec::new();
        for (index, (_, addr)) in targets.iter().enumerate() {
            let request = format!(
                "POST /product/{product}/deduct HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            for client in 0..clients {
                let rng = Rng::new(seed ^ ((index as u64) << 32 | client as u64));
                handles.push((
                    index,
                    tokio::spawn(client_loop(
                        *addr,
                        request.clone().into_bytes(),
                        rng,
                        Arc::clone(&stop),
                    )),
                ));
            }
        }
        Storm {
            stop,
            targets: targets.iter().map(|(label, _)| label.clone()).collect(),
            handles,
        }
    }

    /// Stops the clients; what each target got.
    pub async fn stop(mut self) -> Vec<(String, Tally)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut tallies = vec![Tally::default(); self.targets.len()];
        for (index, handle) in std::mem::take(&mut self.handles) {
            if let Ok(tally) = handle.await {
                tallies[index].add(tally);
            }
        }
        std::mem::take(&mut self.targets)
            .into_iter()
            .zip(tallies)
            .collect()
    }
}

impl Drop for Storm {
    /// Dropped without [`Storm::stop`] (a failed or interrupted drill): the clients stop anyway.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn client_loop(
    addr: SocketAddr,
    request: Vec<u8>,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    for _ in 0..MAX_CONNECTIONS_PER_CLIENT {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let draw = rng.next();
        let delay = HANG_UP_MS.0 + draw % (HANG_UP_MS.1 - HANG_UP_MS.0 + 1);
        let reset = (draw >> 32) & 1 == 1;
        match hang_up(addr, &request, Duration::from_millis(delay), reset).await {
            Some(false) => tally.hung_up += 1,
            Some(true) => tally.answered += 1,
            None => {
                tally.failed += 1;
                // Do not spin on a port that refuses.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tally
}

/// Sends `request`, waits up to `delay` for any answer, then drops the connection (with RST if
/// `reset`). `Some(true)`: an answer came first; `Some(false)`: hung up; `None`: no connection.
async fn hang_up(addr: SocketAddr, request: &[u8], delay: Duration, reset: bool) -> Option<bool> {
    let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let deadline = Instant::now() + delay;
    let mut written = 0;
    // Each turn either writes or waits for the socket, all within the deadline.
    while written < request.len() {
        match timeout_at(deadline, stream.writable()).await {
            Err(_) => break,
            Ok(Err(_)) => return None,
            Ok(Ok(())) => match stream.try_write(&request[written..]) {
                Ok(n) => written += n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            },
        }
    }
    let mut buffer = [0u8; 512];
    let answered = loop {
        match timeout_at(deadline, stream.readable()).await {
            Err(_) => break false,
            Ok(Err(_)) => break true,
            Ok(Ok(())) => match stream.try_read(&mut buffer) {
                Ok(_) => break true,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break true,
            },
        }
    };
    if reset {
        let _ = stream.set_zero_linger();
    }
    drop(stream);
    Some(answered)
}

/// xorshift64*: enough randomness for delays, and no dependency.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Never zero (xorshift stays at zero), and different seeds spread out.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_seeded_and_never_stuck() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let draws: Vec<u64> = (0..100).map(|_| a.next()).collect();
        assert_eq!(draws, (0..100).map(|_| b.next()).collect::<Vec<_>>());
        assert!(draws.iter().all(|d| *d != 0));
        assert_ne!(Rng::new(0).next(), 0);
    }
}
