//! `spawn_cluster()`: a fresh database and lock prefix, three instances on random ports.

use fencelock::{LockOptions, Locker, LockerConfig};
use fencelock_app::configuration::Settings;
use fencelock_app::startup::Application;
use fencelock_testkit::{shared_redis, PostgresServer};
use reqwest::{Client, Response};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// One PostgreSQL per test binary; each test gets its own database in it.
pub fn postgres() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(PostgresServer::start)
}

/// A running cluster of instances and a client that spreads requests over them.
pub struct Cluster {
    pub ports: Vec<u16>,
    pub instances: Vec<String>,
    pub database: String,
    /// The instances' lock key prefix (one per cluster, so clusters never share locks).
    pub lock_prefix: String,
    /// The instances' Redis.
    pub redis_url: String,
    pub client: Client,
    next: AtomicUsize,
}

pub struct Options {
    pub instances: usize,
    pub allow_reset: bool,
    pub job_interval_ms: u64,
    /// A database on a PostgreSQL of the test's own (tests that stop it; `Cluster::sql` does
    /// not reach it); `None`: a fresh database on the binary's shared server.
    pub database_url: Option<String>,
    /// A Redis of the test's own; `None`: the shared one.
    pub redis_url: Option<String>,
    /// `REDIS_TLS_CA` for a `rediss://` Redis.
    pub redis_tls_ca: Option<std::path::PathBuf>,
    /// `BATCH_QUEUE_LIMIT`, if not the default.
    pub batch_queue_limit: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            instances: 3,
            allow_reset: true,
            job_interval_ms: 0,
            database_url: None,
            redis_url: None,
            redis_tls_ca: None,
            batch_queue_limit: None,
        }
    }
}

pub async fn spawn_cluster() -> Cluster {
    spawn_cluster_with(Options::default()).await
}

pub async fn spawn_cluster_with(options: Options) -> Cluster {
    let database = format!("test_{}", uuid::Uuid::new_v4().simple());
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let database_url = options.database_url.clone().unwrap_or_else(|| {
        postgres().create_database(&database);
        postgres().url(&database)
    });
    let redis_url = options.redis_url.unwrap_or_else(|| shared_redis().url());
    // All instances start (and migrate) at once, as a real rollout of three would.
    let builds = (0..options.instances).map(|i| {
        let mut vars: HashMap<&str, String> = HashMap::from([
            ("DATABASE_URL", database_url.clone()),
            ("REDIS_URLS", redis_url.clone()),
            ("BIND", "127.0.0.1:0".into()),
            ("INSTANCE_ID", format!("app{}", i + 1)),
            ("LOCK_PREFIX", prefix.clone()),
            ("ALLOW_RESET", options.allow_reset.to_string()),
            ("JOB_INTERVAL_MS", options.job_interval_ms.to_string()),
            ("WORKERS", "2".into()),
            ("DB_POOL_SIZE", "12".into()),
        ]);
        if let Some(limit) = options.batch_queue_limit {
            vars.insert("BATCH_QUEUE_LIMIT", limit.to_string());
        }
        if let Some(ca) = &options.redis_tls_ca {
            vars.insert("REDIS_TLS_CA", ca.display().to_string());
        }
        let settings =
            Settings::from_lookup(|name| vars.get(name).cloned()).expect("valid test settings");
        Application::build(settings)
    });
    let applications: Vec<Application> = futures_util::future::join_all(builds)
        .await
        .into_iter()
        .map(|built| built.expect("instance starts"))
        .collect();
    let ports = applications.iter().map(Application::port).collect();
    let instances = applications
        .iter()
        .map(|app| app.instance().to_string())
        .collect();
    for application in applications {
        tokio::spawn(application.run_until_stopped());
    }
    Cluster {
        ports,
        instances,
        database,
        lock_prefix: prefix,
        redis_url,
        client: Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
        next: AtomicUsize::new(0),
    }
}

/// A response, read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub instance: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    async fn from(response: Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let instance = headers
            .get("x-instance")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            instance,
            headers,
            body,
            text,
        }
    }

    pub fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

impl Cluster {
    /// The next instance's base URL, round robin.
    pub fn url(&self, path: &str) -> String {
        let port = self.ports[self.next.fetch_add(1, Ordering::Relaxed) % self.ports.len()];
        format!("http://127.0.0.1:{port}{path}")
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Reply {
        let mut request = self.client.post(self.url(path));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        Reply::from(request.send().await.expect("request")).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.post(self.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Reply::from(request.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        Reply::from(
            self.client
                .get(self.url(path))
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    /// One SQL query's single value, read straight from the database.
    pub fn sql(&self, query: &str) -> String {
        postgres().psql(&self.database, query)
    }

    pub fn sql_i64(&self, query: &str) -> i64 {
        self.sql(query)
            .parse()
            .unwrap_or_else(|_| panic!("not a number from {query}"))
    }

    /// A user's balance as its ledger adds up: Σ charge + Σ transfer_in − Σ use −
    /// Σ transfer_out (0 for a user without rows).
    pub fn ledger_balance(&self, user_id: i64) -> i64 {
        self.sql_i64(&format!(
            "SELECT {LEDGER_SUM} FROM balance_ledger WHERE user_id = {user_id}"
        ))
    }

    /// Takes the instances' lock on `resource` for `ttl`, as another holder would.
    pub async fn hold_lock(&self, resource: &str, ttl: Duration) -> fencelock::Guard {
        let locker = Locker::new(
            LockerConfig::new([self.redis_url.clone()]).prefix(self.lock_prefix.clone()),
        )
        .unwrap();
        locker
            .acquire(resource, &LockOptions::new().ttl(ttl))
            .await
            .unwrap()
    }

    /// Resets to one product with `stock` and returns its id.
    pub async fn reset(&self, stock: i64) -> i64 {
        let reply = self
            .post("/product/reset", Some(serde_json::json!({"stock": stock})))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.body["id"].as_i64().unwrap()
    }
}

/// The SQL that adds up a user's `balance_ledger` rows into the balance they must equal (the
/// table's CHECK allows only these four kinds).
pub const LEDGER_SUM: &str = "COALESCE(SUM(CASE kind \
     WHEN 'charge' THEN amount WHEN 'transfer_in' THEN amount \
     WHEN 'use' THEN -amount WHEN 'transfer_out' THEN -amount END), 0)";

/// Counts replies by status.
pub fn by_status(replies: &[Reply]) -> HashMap<u16, usize> {
    let mut counts = HashMap::new();
    for reply in replies {
        *counts.entry(reply.status).or_default() += 1;
    }
    counts
}

/// A lock holder's write for one request (`fenced_deduct` with a batch of one), as a test
/// plays a holder by hand.
pub async fn deduct_one(
    conn: &mut diesel_async::AsyncPgConnection,
    instance: &str,
    product: i64,
    quantity: i64,
    fence: i64,
    held_since: tokio::time::Instant,
) -> Result<fencelock_app::idempotency::Stored, fencelock_app::error::AppError> {
    let request = fencelock_app::routes::product::Requested {
        quantity,
        key: None,
    };
    let mut answers = fencelock_app::routes::product::fenced_deduct(
        conn,
        instance,
        product,
        &[request],
        fence,
        held_since,
    )
    .await?;
    answers.remove(0)
}
