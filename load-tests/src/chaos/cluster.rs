//! The running cluster as the drills see it ([`Cluster`], from the environment `cargo xtask
//! chaos` sets), whether it is whole and healthy before a drill, and how async code runs the
//! blocking tools (psql, kill, xtask) without stalling the load.

use super::driver;
use super::faults::Faults;
use crate::env::Env;
use fencelock_testkit::Component;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the cluster may take to be whole and healthy before a drill.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The running cluster as the drills see it: where its parts answer, a client for the load,
/// the nemesis that signals its processes, and the suite's seed.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub env: Env,
    /// Client for the load: per-request timeout, loopback only.
    pub client: reqwest::Client,
    /// Each app instance and its base URL: `(App(1), "http://127.0.0.1:8081")`.
    pub apps: Vec<(Component, String)>,
    /// The Redis nodes, `Redis(1)`…
    pub redis: Vec<Component>,
    pub faults: Faults,
    /// Seeds the storm's delays; printed, and `--seed` replays it.
    pub seed: u64,
}

impl Cluster {
    /// From the environment `cargo xtask chaos` sets.
    pub fn from_env(seed: u64) -> Result<Cluster, String> {
        let env = Env::from_env()?;
        let var = |name: &str| {
            std::env::var(name)
                .map_err(|_| format!("{name} is not set; run through `cargo xtask chaos`"))
        };
        socket_addr(&env.lb_url)?;
        let apps: Vec<(Component, String)> = var("APP_URLS")?
            .split(',')
            .filter(|url| !url.is_empty())
            .enumerate()
            .map(|(index, url)| {
                socket_addr(url)?;
                Ok((
                    Component::App(index + 1),
                    url.trim_end_matches('/').to_string(),
                ))
            })
            .collect::<Result<_, String>>()?;
        if apps.is_empty() {
            return Err("APP_URLS lists no instance".into());
        }
        let redis: Vec<Component> = (1..=var("REDIS_URLS")?.split(',').count())
            .map(Component::Redis)
            .collect();
        let xtask = env
            .xtask
            .clone()
            .ok_or("XTASK is not set; run through `cargo xtask chaos`")?;
        Ok(Cluster {
            faults: Faults::new(PathBuf::from(var("CLUSTER_DIR")?), xtask),
            client: reqwest::Client::builder()
                .timeout(driver::REQUEST_TIMEOUT)
                .connect_timeout(Duration::from_secs(2))
                .build()
                .map_err(|err| err.to_string())?,
            env,
            apps,
            redis,
            seed,
        })
    }
}

/// Runs blocking work (psql, kill, xtask) off the runtime, so the load keeps going meanwhile.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| format!("blocking task failed: {err}"))?
}

/// `http://127.0.0.1:PORT[/…]` → its socket address; anything but loopback is refused (the
/// drills hammer and hang up on what they are pointed at).
pub fn socket_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("{url}: no port"))?;
    let ip: IpAddr = if host == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.trim_matches(['[', ']'])
            .parse()
            .map_err(|_| format!("{url}: not an IP address"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "{url}: the chaos drills only run against loopback addresses"
        ));
    }
    let port = port.parse().map_err(|_| format!("{url}: bad port"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Whole (every component's pid alive) and healthy (each instance and the load balancer
/// answer their health check), within [`READY_TIMEOUT`].
pub async fn ready(cluster: &Cluster) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut components: Vec<Component> = cluster.apps.iter().map(|(app, _)| *app).collect();
    components.extend(cluster.redis.iter().copied());
    components.extend([Component::Postgres, Component::Lb]);
    let mut targets: Vec<(Component, String)> = cluster.apps.clone();
    targets.push((
        Component::Lb,
        cluster.env.lb_url.trim_end_matches('/').into(),
    ));
    loop {
        let mut missing: Vec<String> = components
            .iter()
            .filter(|name| !cluster.faults.running(**name))
            .map(|name| format!("{name} not running"))
            .collect();
        for (name, base) in &targets {
            if !healthy(&cluster.client, base).await {
                missing.push(format!("{name} not healthy"));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the cluster is not ready after {READY_TIMEOUT:?}: {}",
                missing.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `GET /health/ready` is 200 (or, on a service without it, `GET /health`).
async fn healthy(client: &reqwest::Client, base: &str) -> bool {
    let status = |path: &'static str| {
        let request = client
            .get(format!("{base}{path}"))
            .timeout(Duration::from_secs(3));
        async move { request.send().await.ok().map(|r| r.status().as_u16()) }
    };
    match status("/health/ready").await {
        Some(404) => status("/health").await == Some(200),
        other => other == Some(200),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_accepted() {
        assert_eq!(
            socket_addr("http://127.0.0.1:8080"),
            Ok("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            socket_addr("http://localhost:8081/"),
            Ok("127.0.0.1:8081".parse().unwrap())
        );
        assert!(socket_addr("http://10.0.0.1:8080").is_err());
        assert!(socket_addr("https://127.0.0.1:8080").is_err());
        assert!(socket_addr("http://127.0.0.1").is_err());
    }
}
