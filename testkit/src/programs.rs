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

/// Whether this process runs as root (PostgreSQL then has to run as the `postgres` user).
pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
