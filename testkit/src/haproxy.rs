//! HAProxy: the load balancer's configuration, one source for the native cluster (`cargo xtask
//! up`), `docker/haproxy.cfg` (checked to be this text by a test) and the tests, which run a
//! real `haproxy` with it in front of their instances.

use crate::find_program;
use crate::free_port;
use crate::guardian::{DirGuardian, Guarded};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The JSON error pages of the load balancer (`docker/haproxy-errors/<status>.http`).
pub fn errors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/haproxy-errors")
}

/// Where the configuration is used.
#[derive(Debug, Clone)]
pub struct Placement {
    /// `bind` address of the frontend, e.g. `127.0.0.1:8080` or `:8080`.
    pub bind: String,
    /// Directory of the error pages as HAProxy will see it.
    pub errors_dir: String,
    /// Resolve server names through Docker's DNS (compose service names).
    pub docker_dns: bool,
}

/// The configuration for `servers` (`(name, address)` pairs).
///
/// What each setting is for is in the text itself, so `docker/haproxy.cfg` explains itself.
pub fn config(placement: &Placement, servers: &[(String, String)]) -> String {
    let Placement {
        bind,
        errors_dir,
        docker_dns,
    } = placement;
    let (resolvers_section, resolvers) = if *docker_dns {
        (
            "\nresolvers docker\n    nameserver dns 127.0.0.11:53\n    hold valid 5s\n",
            " resolvers docker init-addr last,libc,none",
        )
    } else {
        ("", "")
    };
    let errorfiles: String = [400, 403, 408, 500, 502, 503, 504]
        .iter()
        .map(|status| format!("    errorfile {status} {errors_dir}/{status}.http\n"))
        .collect();
    let servers: String = servers
        .iter()
        .map(|(name, address)| format!("    server {name} {address} check\n"))
        .collect();
    format!(
        "# The load balancer: round robin per request over the app instances.
# Generated from testkit/src/haproxy.rs (`cargo xtask up` writes the native cluster's copy);
# docker/haproxy.cfg is checked against it by xtask/tests/docker_files.rs.
global
    maxconn 4096
    # Request heads must fit one buffer (less HAProxy's rewrite reserve): larger ones get
    # lb_bad_request. The instances refuse heads over 16 KiB themselves (431).
    tune.bufsize 16384
{resolvers_section}
defaults
    mode http
    option http-keep-alive
    # A client that hangs up cancels its request at the instance at once (its handler is
    # dropped and its lock released) instead of it running to the end for nobody.
    option abortonclose
    # Retries happen only when no connection to an instance could be made (retry-on's
    # default: conn-failure), never once a request reached one; the retry goes to another
    # instance.
    retries 2
    option redispatch 1
    timeout connect 1s
    timeout client 30s
    # Longer than the longest answer an instance gives: a keyed deduction's lookups (2 + 2 s),
    # its own 20 s lock wait, 2 + 6 s for its write and 2 s to replay another's answer: 34 s.
    timeout server 45s
    timeout http-request 10s
    # The load balancer's own errors in the service's JSON shape, with stable codes.
{errorfiles}
frontend api
    bind {bind}
    # Every answer names its request and who answered, the load balancer's own errors too: a
    # request without an X-Request-Id gets one here, passed to the instance and sent back.
    # (HAProxy 2.6 answers a request head not received in time from its HTTP/1 layer, before
    # any of this runs: that 408 alone is its built-in HTML page; no instance saw the request.)
    unique-id-format %{{+X}}o%ci%cp%fp%Ts%ms%rt%pid
    http-request set-header X-Request-Id %[unique-id] unless {{ req.hdr(x-request-id) -m found }}
    http-after-response set-header X-Request-Id %[unique-id] unless {{ res.hdr(x-request-id) -m found }}
    http-after-response set-header X-Instance lb unless {{ res.hdr(x-instance) -m found }}
    default_backend apps

backend apps
    balance roundrobin
    # Liveness, not readiness: a database or Redis outage is answered by every instance with
    # a JSON 503, so it must not take every instance out.
    option httpchk GET /health/live
    http-check expect status 200
    # A dead or hung instance is out within about 1 s (2 failed checks, 500 ms apart, 500 ms
    # each). Requests already on it are not cut (`on-marked-down shutdown-sessions` would close
    # their clients' connections without any answer): a dead one's get lb_bad_gateway at once,
    # a hung one's lb_timeout after the server timeout.
    timeout check 500ms
    default-server inter 500ms fastinter 250ms downinter 1s fall 2 rise 2{resolvers}
{servers}"
    )
}

/// A real `haproxy` on a free loopback port with [`config`] in front of `servers`, for tests.
/// Dropping it stops it and removes its directory.
#[derive(Debug)]
pub struct HaProxy {
    port: u16,
    _process: Guarded,
    _dir_guardian: DirGuardian,
}

impl HaProxy {
    /// Starts it and waits until its port accepts connections.
    pub fn start(servers: &[(String, String)]) -> HaProxy {
        let program = find_program("haproxy", "haproxy");
        let dir = tempfile::Builder::new()
            .prefix("fencelock-haproxy-")
            .tempdir()
            .expect("create a temp dir for haproxy")
            .keep();
        let port = free_port();
        let placement = Placement {
            bind: format!("127.0.0.1:{port}"),
            errors_dir: errors_dir().display().to_string(),
            docker_dns: false,
        };
        let config_file = dir.join("haproxy.cfg");
        std::fs::write(&config_file, config(&placement, servers)).expect("write haproxy.cfg");
        let args = [
            "-db".to_string(),
            "-f".into(),
            config_file.display().to_string(),
        ];
        let log = dir.join("haproxy.log");
        let process = Guarded::spawn(None, &program, &args, "KILL", &log);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("haproxy did not listen on {port} in 10 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        HaProxy {
            port,
            _process: process,
            _dir_guardian: DirGuardian::watch(&dir),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
