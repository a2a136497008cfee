//! Faults made by talking to Redis directly (`CLIENT PAUSE`, `FLUSHALL`, a foreign holder's
//! key), and ways to watch what a node was sent or still holds afterwards.

use super::{connection, lock_key};
use redis::AsyncCommands;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

/// One command on the server at `url`, whose reply must be `OK`.
pub async fn command(url: &str, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    let () = cmd.query_async(&mut connection(url).await).await.unwrap();
}

/// `CLIENT PAUSE ms ALL` on the server at `url`: every client's commands queue until it ends.
pub async fn pause_clients(url: &str, ms: u64) {
    let mut conn = connection(url).await;
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("ALL")
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Another owner holds `resource`'s lock on the nodes at `urls` for `px_ms`.
pub async fn held_by_someone_else(urls: &[String], resource: &str, px_ms: u64) {
    for url in urls {
        let mut conn = connection(url).await;
        let () = redis::cmd("SET")
            .arg(lock_key(resource))
            .arg("someone-else")
            .arg("PX")
            .arg(px_ms)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// Polls until `key` is gone, for at most `within`; returns whether it went.
pub async fn gone_within(url: &str, key: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut conn = connection(url).await;
    loop {
        let exists: bool = conn.exists(key).await.unwrap();
        if !exists {
            return true;
        }
        if Instant::now() >= deadline {
            let pttl: i64 = conn.pttl(key).await.unwrap();
            eprintln!("{key} still there, PTTL {pttl} ms");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Redis MONITOR on a thread of its own; `stop` returns the lines seen.
pub struct Monitor {
    stream: std::net::TcpStream,
    lines: std::thread::JoinHandle<Vec<String>>,
}

/// Starts watching the server on `port`: every command it runs from now on.
pub fn monitor(port: u16) -> Monitor {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"MONITOR\r\n").unwrap();
    let reader = BufReader::new(stream.try_clone().unwrap());
    let lines = std::thread::spawn(move || reader.lines().map_while(Result::ok).collect());
    // Wait for +OK so that nothing sent after this returns is missed.
    std::thread::sleep(Duration::from_millis(50));
    Monitor { stream, lines }
}

impl Monitor {
    pub fn stop(self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(50));
        self.stream.shutdown(std::net::Shutdown::Both).unwrap();
        self.lines.join().unwrap()
    }
}

/// `call` again while it answers `Unavailable` (a failover in progress, a replica that just
/// resumed and is catching up), for at most `within`; then its answer, whatever it is.
pub async fn retry_while_unavailable<T, F, Fut>(
    within: std::time::Duration,
    mut call: F,
) -> Result<T, fencelock::LockError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, fencelock::LockError>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        match call().await {
            Err(fencelock::LockError::Unavailable { .. })
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            outcome => return outcome,
        }
    }
}
