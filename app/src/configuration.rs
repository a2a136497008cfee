//! Settings from environment variables, with defaults for a local run. A bad value fails at
//! start-up with a message that names the variable.

use std::net::SocketAddr;
use std::time::Duration;

/// The TTL of every lock a request handler takes (products, balances, seats, queues), in
/// milliseconds: 5 s, far above a handler's work, which extensions never need. Named once:
/// the handlers' `#[distributed_lock(ttl_ms = LOCK_TTL_MS)]` and the chaos drills' timelines
/// (which wait out a dead holder's lock) read it from here.
pub const LOCK_TTL_MS: u64 = 5000;

/// Everything the service needs to start. Its `Debug` shows URLs without their passwords.
#[derive(Clone)]
pub struct Settings {
    /// `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/fencelock`).
    pub database_url: String,
    /// `DB_POOL_SIZE` (default 16): pooled PostgreSQL connections per instance.
    pub db_pool_size: u32,
    /// `REDIS_URLS`, comma-separated (default `redis://127.0.0.1:6379/`): one = single node,
    /// three or more = quorum. `rediss://` for TLS.
    pub redis_urls: Vec<String>,
    /// `REDIS_TLS_CA`: a PEM file of the certificate authorities to trust for `rediss://`
    /// (a private CA, as managed Redis services use); unset = the system's roots.
    pub redis_tls_ca: Option<std::path::PathBuf>,
    /// `BIND` (default `127.0.0.1:8080`); port 0 picks a free port.
    pub bind: SocketAddr,
    /// `INSTANCE_ID` (default `<hostname>:<port>`), sent as `X-Instance` on every response.
    pub instance_id: Option<String>,
    /// `LOCK_PREFIX` (default `fencelock`): the prefix of every Redis key.
    pub lock_prefix: String,
    /// `ALLOW_RESET` (default `false`): whether `POST /product/reset` may wipe products.
    pub allow_reset: bool,
    /// `JOB_INTERVAL_MS` (default 10000); 0 turns the scheduled job off.
    pub job_interval: Duration,
    /// `LOG_FORMAT`: `pretty` (default) or `json`.
    pub log_format: LogFormat,
    /// `WORKERS` (default: the number of CPUs): actix worker threads.
    pub workers: Option<usize>,
    /// `BATCH_QUEUE_LIMIT` (default 1024): how many `strategy=lock` deductions one product may
    /// have queued in an instance; the next gets `503 overloaded`.
    pub batch_queue_limit: usize,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A variable that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {variable}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    /// The environment variable.
    pub variable: &'static str,
    /// What it was set to.
    pub value: String,
    /// Why it cannot be used.
    pub reason: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: "postgres://postgres@127.0.0.1:5432/fencelock".into(),
            db_pool_size: 16,
            redis_urls: vec!["redis://127.0.0.1:6379/".into()],
            redis_tls_ca: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            instance_id: None,
            lock_prefix: "fencelock".into(),
            allow_reset: false,
            job_interval: Duration::from_secs(10),
            log_format: LogFormat::Pretty,
            workers: None,
            batch_queue_limit: 1024,
        }
    }
}

impl Settings {
    /// Defaults overlaid with the process environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Defaults overlaid with whatever `lookup` returns (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let mut settings = Settings::default();
        if let Some(url) = lookup("DATABASE_URL") {
            if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                return Err(invalid("DATABASE_URL", url, "expected a postgres:// URL"));
            }
            settings.database_url = url;
        }
        if let Some(size) = lookup("DB_POOL_SIZE") {
            settings.db_pool_size = parse_number("DB_POOL_SIZE", &size, 1, 1000)? as u32;
        }
        if let Some(urls) = lookup("REDIS_URLS") {
            let list: Vec<String> = urls
                .split(',')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(String::from)
                .collect();
            if list.is_empty() || list.len() == 2 {
                return Err(invalid(
                    "REDIS_URLS",
                    urls,
                    "give one Redis URL (single node) or three or more (quorum)",
                ));
            }
            let redis_url =
                |url: &&String| url.starts_with("redis://") || url.starts_with("rediss://");
            if let Some(bad) = list.iter().find(|url| !redis_url(url)) {
                return Err(invalid(
                    "REDIS_URLS",
                    urls.clone(),
                    &format!(
                        "{:?} is not a redis:// or rediss:// URL",
                        fencelock::redact_url(bad)
                    ),
                ));
            }
            settings.redis_urls = list;
        }
        if let Some(path) = lookup("REDIS_TLS_CA") {
            if !std::path::Path::new(&path).is_file() {
                return Err(invalid(
                    "REDIS_TLS_CA",
                    path,
                    "not a readable file (a PEM of CA certificates)",
                ));
            }
            if !settings
                .redis_urls
                .iter()
                .all(|url| url.starts_with("rediss://"))
            {
                return Err(invalid(
                    "REDIS_TLS_CA",
                    path,
                    "set, but REDIS_URLS are not all rediss://",
                ));
            }
            settings.redis_tls_ca = Some(path.into());
        }
        if let Some(bind) = lookup("BIND") {
            settings.bind = bind.parse().map_err(|_| {
                invalid(
                    "BIND",
                    bind.clone(),
                    "expected host:port, e.g. 127.0.0.1:8080",
                )
            })?;
        }
        if let Some(id) = lookup("INSTANCE_ID") {
            if id.is_empty() || id.len() > 64 || id.chars().any(|c| c.is_control()) {
                return Err(invalid("INSTANCE_ID", id, "1 to 64 printable characters"));
            }
            settings.instance_id = Some(id);
        }
        if let Some(prefix) = lookup("LOCK_PREFIX") {
            if prefix.is_empty() || prefix.contains(['{', '}']) {
                return Err(invalid("LOCK_PREFIX", prefix, "non-empty, without braces"));
            }
            settings.lock_prefix = prefix;
        }
        if let Some(allow) = lookup("ALLOW_RESET") {
            settings.allow_reset = match allow.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" | "" => false,
                _ => return Err(invalid("ALLOW_RESET", allow, "expected true or false")),
            };
        }
        if let Some(interval) = lookup("JOB_INTERVAL_MS") {
            let millis = parse_number("JOB_INTERVAL_MS", &interval, 0, 86_400_000)?;
            if millis != 0 && millis < 100 {
                return Err(invalid(
                    "JOB_INTERVAL_MS",
                    interval,
                    "0 (off) or at least 100",
                ));
            }
            settings.job_interval = Duration::from_millis(millis);
        }
        if let Some(format) = lookup("LOG_FORMAT") {
            settings.log_format = match format.as_str() {
                "pretty" => LogFormat::Pretty,
                "json" => LogFormat::Json,
                _ => return Err(invalid("LOG_FORMAT", format, "expected pretty or json")),
            };
        }
        if let Some(limit) = lookup("BATCH_QUEUE_LIMIT") {
            settings.batch_queue_limit =
                parse_number("BATCH_QUEUE_LIMIT", &limit, 1, 1_000_000)? as usize;
        }
        if let Some(workers) = lookup("WORKERS") {
            settings.workers = Some(parse_number("WORKERS", &workers, 1, 256)? as usize);
        }
        Ok(settings)
    }
}

fn parse_number(
    variable: &'static str,
    value: &str,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|number| (min..=max).contains(number))
        .ok_or_else(|| {
            invalid(
                variable,
                value.to_string(),
                &format!("expected a whole number from {min} to {max}"),
            )
        })
}

fn invalid(variable: &'static str, value: String, reason: &str) -> ConfigError {
    // URLs may carry passwords: the message shows them without.
    let value = match variable {
        "DATABASE_URL" | "REDIS_URLS" => redact_urls(&value),
        _ => value,
    };
    ConfigError {
        variable,
        value,
        reason: reason.to_string(),
    }
}

/// A comma-separated list of URLs, each without its password.
fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(|url| fencelock::redact_url(url.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("database_url", &fencelock::redact_url(&self.database_url))
            .field("db_pool_size", &self.db_pool_size)
            .field("redis_urls", &redact_urls(&self.redis_urls.join(",")))
            .field("redis_tls_ca", &self.redis_tls_ca)
            .field("bind", &self.bind)
            .field("instance_id", &self.instance_id)
            .field("lock_prefix", &self.lock_prefix)
            .field("allow_reset", &self.allow_reset)
            .field("job_interval", &self.job_interval)
            .field("log_format", &self.log_format)
            .field("workers", &self.workers)
            .field("batch_queue_limit", &self.batch_queue_limit)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_work_for_a_local_run() {
        let settings = settings(&[]).unwrap();
        assert_eq!(settings.redis_urls.len(), 1);
        assert!(!settings.allow_reset);
        assert_eq!(settings.job_interval, Duration::from_secs(10));
    }

    /// No password from DATABASE_URL or REDIS_URLS in any message or in `Debug`.
    #[test]
    fn passwords_never_show() {
        for (variable, value) in [
            ("REDIS_URLS", "redis://:s3cret@a/,redis://:s3cret@b/"),
            ("REDIS_URLS", "http://user:s3cret@x/"),
            ("DATABASE_URL", "mysql://user:s3cret@x/db"),
        ] {
            let err = settings(&[(variable, value)]).unwrap_err();
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains("s3cret"), "{shown}");
                assert!(shown.contains("***"), "{shown}");
            }
        }
        let good = settings(&[
            ("REDIS_URLS", "redis://default:s3cret@127.0.0.1:6379/"),
            ("DATABASE_URL", "postgres://app:s3cret@db/app"),
        ])
        .unwrap();
        let shown = format!("{good:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://app:***@db/app"), "{shown}");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (variable, value) in [
            ("REDIS_URLS", "redis://a/,redis://b/"),
            ("REDIS_URLS", "http://x"),
            ("BIND", "nowhere"),
            ("JOB_INTERVAL_MS", "fast"),
            ("ALLOW_RESET", "maybe"),
            ("DATABASE_URL", "mysql://x"),
            ("LOG_FORMAT", "xml"),
            ("REDIS_TLS_CA", "/no/such/ca.pem"),
        ] {
            let err = settings(&[(variable, value)]).unwrap_err();
            assert_eq!(err.variable, variable);
            assert!(err.to_string().contains(variable), "{err}");
        }
    }

    #[test]
    fn rediss_urls_are_accepted_and_a_ca_file_needs_them() {
        let tls = settings(&[("REDIS_URLS", "rediss://:s3cret@cache.example:6380/")]).unwrap();
        assert_eq!(tls.redis_urls, ["rediss://:s3cret@cache.example:6380/"]);
        let ca = tempfile::NamedTempFile::new().unwrap();
        let ca_path = ca.path().to_str().unwrap();
        let plain = settings(&[("REDIS_URLS", "redis://a/"), ("REDIS_TLS_CA", ca_path)]);
        assert_eq!(plain.unwrap_err().variable, "REDIS_TLS_CA");
        let trusted = settings(&[("REDIS_URLS", "rediss://a/"), ("REDIS_TLS_CA", ca_path)]);
        assert_eq!(trusted.unwrap().redis_tls_ca.as_deref(), Some(ca.path()));
    }

    #[test]
    fn quorum_urls_are_split_and_trimmed() {
        let settings =
            settings(&[("REDIS_URLS", "redis://a:1/, redis://b:2/,redis://c:3/")]).unwrap();
        assert_eq!(settings.redis_urls.len(), 3);
        assert_eq!(settings.redis_urls[1], "redis://b:2/");
    }
}
