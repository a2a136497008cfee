//! A `sh` guardian that ties a server's life to the test process through a stdin pipe.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

/// Runs the server in the background, prints its pid, then blocks on stdin. EOF on stdin (the
/// test process closed the pipe or died) stops the server with `$1` and reaps it.
const GUARDIAN_SCRIPT: &str = r#"
sig="$1"; log="$2"; shift 2
"$@" >>"$log" 2>&1 </dev/null &
pid=$!
echo "$pid"
read -r _ || true
kill "-$sig" "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
exit 0
"#;

/// Deletes a directory once the test process is gone, whatever way it went.
const DIR_GUARDIAN_SCRIPT: &str = r#"read -r _ || true; rm -rf "$1""#;

/// A server process under a guardian. Dropping it stops the server and waits for the guardian.
#[derive(Debug)]
pub(crate) struct Guarded {
    guardian: Child,
    stdin: Option<ChildStdin>,
    server_pid: u32,
}

impl Guarded {
    /// Starts `program args` as `run_as` (or the current user), logging to `log`.
    /// `stop_signal` (e.g. `KILL`, `INT`) is what the guardian sends when the test process ends.
    pub(crate) fn spawn(
        run_as: Option<&str>,
        program: &Path,
        args: &[String],
        stop_signal: &str,
        log: &Path,
    ) -> Guarded {
        let mut command = wrap_as(run_as, "sh");
        command
            .arg("-c")
            .arg(GUARDIAN_SCRIPT)
            .arg("sh")
            .arg(stop_signal)
            .arg(log)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut guardian = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", program.display()));
        let mut first_line = String::new();
        BufReader::new(guardian.stdout.take().expect("piped stdout"))
            .read_line(&mut first_line)
            .expect("read the server pid from its guardian");
        let server_pid = first_line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("guardian of {} printed no pid", program.display()));
        Guarded {
            stdin: guardian.stdin.take(),
            guardian,
            server_pid,
        }
    }

    /// Sends `signal` to the server itself (fault injection); the guardian stays.
    pub(crate) fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.server_pid.to_string())
            .status();
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // Closing the pipe is the guardian's cue to stop the server and reap it.
        drop(self.stdin.take());
        let _ = self.guardian.wait();
    }
}

/// Keeps `dir` until the test process ends, then removes it (even after a panic or a kill).
#[derive(Debug)]
pub(crate) struct DirGuardian {
    _guardian: Child,
}

impl DirGuardian {
    pub(crate) fn watch(dir: &Path) -> DirGuardian {
        let guardian = Command::new("sh")
            .arg("-c")
            .arg(DIR_GUARDIAN_SCRIPT)
            .arg("sh")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the temp dir guardian");
        DirGuardian {
            _guardian: guardian,
        }
    }
}

/// A command that runs `program` as `user` (via `runuser`, we are root) or as ourselves.
pub(crate) fn wrap_as(user: Option<&str>, program: &str) -> Command {
    match user {
        Some(user) => {
            let mut command = Command::new("runuser");
            command.args(["-u", user, "--", program]);
            command
        }
        None => Command::new(program),
    }
}
