//! The processes of the native cluster (`cargo xtask up`) by name, and how to signal them.
//!
//! `xtask` (its pid files, `kill`, `restart`) and the chaos drills of `load-tests` (which pause
//! and kill recorded pids) both name components through [`Component`] and signal them through
//! [`signal`] and [`alive`], so the two cannot drift apart on what `app2` or a live pid is.

use std::fmt;
use std::process::{Command, Stdio};
use std::str::FromStr;

/// One process of the native cluster, named as the pid files and `cargo xtask kill|restart`
/// name it: `app1`…, `redis1`…, `postgres`, `lb`.
///
/// Numbers are not checked against the cluster here: how many instances and nodes run is the
/// cluster's to say (`app7` parses, and is simply not running).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// An app instance, numbered from 1 (`app1`).
    App(usize),
    /// A Redis node, numbered from 1 (`redis1`).
    Redis(usize),
    /// The PostgreSQL server (its postmaster).
    Postgres,
    /// HAProxy, the load balancer.
    Lb,
}

/// What [`Component`]'s `FromStr` says about a name it does not know.
const KNOWN: &str = "app1-3, redis1-5, postgres, lb";

impl Component {
    /// The program its pid runs, as `/proc/PID/comm` shows it (a reused pid runs another).
    pub fn program(self) -> &'static str {
        match self {
            Component::App(_) => "fencelock-app",
            Component::Redis(_) => "redis-server",
            Component::Postgres => "postgres",
            Component::Lb => "haproxy",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Component::App(index) => write!(f, "app{index}"),
            Component::Redis(node) => write!(f, "redis{node}"),
            Component::Postgres => f.write_str("postgres"),
            Component::Lb => f.write_str("lb"),
        }
    }
}

impl FromStr for Component {
    type Err = String;

    fn from_str(name: &str) -> Result<Component, String> {
        // Only the canonical spelling (`app2`, not `app02` or `app+2`): the name is also the
        // pid file's, so two spellings of one component must not both be accepted.
        let numbered = |prefix: &str| {
            let digits = name.strip_prefix(prefix)?;
            let canonical = digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
            canonical.then(|| digits.parse::<usize>().ok()).flatten()
        };
        match name {
            "postgres" => Ok(Component::Postgres),
            "lb" => Ok(Component::Lb),
            _ => numbered("app")
                .map(Component::App)
                .or_else(|| numbered("redis").map(Component::Redis))
                .ok_or_else(|| format!("unknown component {name:?}: {KNOWN}")),
        }
    }
}

/// `kill -SIGNAL pid` (`signal` without the `SIG`: `STOP`, `CONT`, `TERM`, `KILL`).
pub fn signal(pid: u32, signal: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .map_err(|err| format!("cannot run kill: {err}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("kill -{signal} {pid} failed"))
}

/// Alive and not a zombie (a stopped process is alive).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for name in ["app1", "app3", "redis5", "postgres", "lb"] {
            assert_eq!(
                name.parse::<Component>().map(|c| c.to_string()),
                Ok(name.into())
            );
        }
        for other in [
            "sshd",
            "app",
            "app02",
            "app+2",
            "redis-1",
            "lb1",
            "postgres2",
        ] {
            assert!(other.parse::<Component>().is_err(), "{other}");
        }
    }

    #[test]
    fn components_map_to_their_programs() {
        assert_eq!(Component::App(2).program(), "fencelock-app");
        assert_eq!(Component::Redis(5).program(), "redis-server");
        assert_eq!(Component::Postgres.program(), "postgres");
        assert_eq!(Component::Lb.program(), "haproxy");
    }

    #[test]
    fn this_process_is_alive() {
        assert!(alive(std::process::id()));
    }
}
