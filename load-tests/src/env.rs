//! Where the cluster is and how to reach it: the environment `cargo xtask load|chaos` sets,
//! API calls through the load balancer, SQL through `psql`, and `cargo xtask kill|restart`.

use fencelock_testkit::Component;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Where everything is, from the environment `cargo xtask load` sets.
#[derive(Debug, Clone)]
pub struct Env {
    pub lb_url: String,
    pub database_url: String,
    pub oha: PathBuf,
    pub quorum: bool,
    pub xtask: Option<PathBuf>,
    pub client: reqwest::Client,
}

impl Env {
    pub fn from_env() -> Result<Env, String> {
        let var = |name: &str| {
            std::env::var(name)
                .map_err(|_| format!("{name} is not set; run through `cargo xtask load`"))
        };
        Ok(Env {
            lb_url: var("LB_URL")?,
            database_url: var("DATABASE_URL")?,
            oha: PathBuf::from(std::env::var("OHA").unwrap_or_else(|_| "oha".into())),
            quorum: std::env::var("CLUSTER_MODE").as_deref() == Ok("quorum"),
            xtask: std::env::var_os("XTASK").map(PathBuf::from),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                // HAProxy closes an idle keep-alive connection after `timeout http-request`
                // (10 s); reusing one it is closing fails a POST ("error sending request", seen
                // after a long scenario). Drop idle connections well before.
                .pool_idle_timeout(Duration::from_secs(4))
                .build()
                .map_err(|err| err.to_string())?,
        })
    }

    /// `POST` JSON through the load balancer; returns (status, body).
    pub async fn post(&self, path: &str, body: Value) -> Result<(u16, Value), String> {
        let response = self
            .client
            .post(format!("{}{path}", self.lb_url))
            .json(&body)
            .send()
            .await
            .map_err(|err| format!("POST {path}: {err}"))?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// `GET` through the load balancer; returns (status, body).
    pub async fn get(&self, path: &str) -> Result<(Value, u16), String> {
        let response = self
            .client
            .get(format!("{}{path}", self.lb_url))
            .send()
            .await
            .map_err(|err| format!("GET {path}: {err}"))?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((body, status))
    }

    /// Resets to one product with `stock`; returns its id.
    pub async fn reset(&self, stock: i64) -> Result<i64, String> {
        let (status, body) = self.post("/product/reset", json!({"stock": stock})).await?;
        match (status, body["id"].as_i64()) {
            (201, Some(id)) => Ok(id),
            _ => Err(format!("reset answered {status} {body}")),
        }
    }

    /// Creates a product; returns its id.
    pub async fn create_product(&self, name: &str, stock: i64) -> Result<i64, String> {
        let (status, body) = self
            .post("/product", json!({"name": name, "stock": stock}))
            .await?;
        match (status, body["id"].as_i64()) {
            (201, Some(id)) => Ok(id),
            _ => Err(format!("create product answered {status} {body}")),
        }
    }

    /// Rows of a query, tab-separated fields, via `psql`.
    pub fn sql(&self, query: &str) -> Result<Vec<Vec<String>>, String> {
        let out = Command::new("psql")
            .arg(&self.database_url)
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-F",
                "\t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                query,
            ])
            .output()
            .map_err(|err| format!("cannot run psql (package postgresql-client): {err}"))?;
        if !out.status.success() {
            return Err(format!("psql: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| line.split('\t').map(String::from).collect())
            .collect())
    }

    /// One number from a query.
    pub fn sql_i64(&self, query: &str) -> Result<i64, String> {
        let rows = self.sql(query)?;
        rows.first()
            .and_then(|row| row.first())
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("no number from {query}: {rows:?}"))
    }

    /// `cargo xtask kill|restart <component>` (fault drills in the quorum scenario).
    pub fn xtask(&self, verb: &str, component: Component) -> Result<(), String> {
        let xtask = self
            .xtask
            .as_ref()
            .ok_or("XTASK is not set; run through `cargo xtask load`")?;
        let status = Command::new(xtask)
            .args([verb, &component.to_string()])
            .status()
            .map_err(|err| err.to_string())?;
        status
            .success()
            .then_some(())
            .ok_or_else(|| format!("xtask {verb} {component} failed"))
    }
}
