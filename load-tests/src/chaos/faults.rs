//! The nemesis: pauses, resumes, kills and restarts components of the native cluster.
//!
//! Only processes the cluster started are touched, by the pids `cargo xtask up` recorded under
//! `.local/cluster/run/`, after checking that the pid still runs the program it should (a pid
//! can be reused). Kills and restarts go through `cargo xtask kill|restart`, so the pid files
//! stay right. Every fault is recorded before it is injected and forgotten only once lifted:
//! [`Faults::lift_all`] undoes whatever is still in force, and dropping the last handle at least
//! resumes paused processes (a panic or an interrupt must not leave an instance stopped).
//!
//! These calls block (they run `kill` and `xtask`): async callers go through `blocking`.

use fencelock_testkit::component::{alive, signal};
use fencelock_testkit::Component;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often a restart is tried: PostgreSQL may refuse to start for a moment while the killed
/// postmaster's backends are still exiting. No new attempt starts after `RESTART_BUDGET` (an app
/// instance's restart alone may wait 60 s for it to be healthy).
const RESTART_ATTEMPTS: usize = 4;
const RESTART_PAUSE: Duration = Duration::from_secs(2);
const RESTART_BUDGET: Duration = Duration::from_secs(90);

/// Handle on the cluster's processes; clones share the record of faults in force.
#[derive(Debug, Clone)]
pub struct Faults {
    run_dir: PathBuf,
    xtask: PathBuf,
    pending: Arc<Mutex<Pending>>,
}

/// Faults injected and not yet lifted.
#[derive(Debug, Default)]
struct Pending {
    /// (component, pid) sent SIGSTOP.
    stopped: Vec<(Component, u32)>,
    /// Components killed, to be restarted.
    killed: Vec<Component>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        for (name, pid) in self.stopped.drain(..) {
            let _ = signal(pid, "CONT");
            eprintln!("chaos: resumed {name} (pid {pid}) on the way out");
        }
        for name in &self.killed {
            eprintln!("chaos: {name} is still down: run `cargo xtask restart {name}`");
        }
    }
}

impl Faults {
    /// `cluster_dir` is `.local/cluster`; `xtask` the binary that runs `kill` and `restart`.
    pub fn new(cluster_dir: PathBuf, xtask: PathBuf) -> Faults {
        Faults {
            run_dir: cluster_dir.join("run"),
            xtask,
            pending: Arc::default(),
        }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // A poisoned record is still the best record there is.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pid `up` recorded for `name`, if it is alive and runs the expected program.
    pub fn pid(&self, name: Component) -> Result<u32, String> {
        let file = self.run_dir.join(format!("{name}.pid"));
        let pid: u32 = std::fs::read_to_string(&file)
            .map_err(|_| format!("{name} is not running (no {})", file.display()))?
            .trim()
            .parse()
            .map_err(|_| format!("{}: not a pid", file.display()))?;
        if !alive(pid) {
            return Err(format!("{name} (pid {pid}) is not running"));
        }
        let expected = name.program();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !comm.trim().starts_with(expected) {
            return Err(format!(
                "pid {pid} of {name} runs {:?}, not {expected}: the pid file is stale",
                comm.trim()
            ));
        }
        Ok(pid)
    }

    /// Whether `name` runs (by its pid file).
    pub fn running(&self, name: Component) -> bool {
        self.pid(name).is_ok()
    }

    /// SIGSTOP: the process keeps its sockets and answers nothing.
    pub fn pause(&self, name: Component) -> Result<u32, String> {
        let pid = self.pid(name)?;
        // Recorded first: if the signal lands and we fail right after, it is still undone.
        self.pending().stopped.push((name, pid));
        signal(pid, "STOP")?;
        Ok(pid)
    }

    /// SIGCONT to a component this handle paused.
    pub fn resume(&self, name: Component) -> Result<(), String> {
        let mut pending = self.pending();
        let Some(index) = pending.stopped.iter().position(|(n, _)| *n == name) else {
            return Ok(());
        };
        let (_, pid) = pending.stopped[index];
        signal(pid, "CONT")?;
        pending.stopped.remove(index);
        Ok(())
    }

    /// SIGKILL through `cargo xtask kill` (which removes the pid file).
    pub fn kill(&self, name: Component) -> Result<(), String> {
        self.pid(name)?;
        self.pending().killed.push(name);
        self.xtask("kill", name)
    }

    /// `cargo xtask restart`, retried a few times; waits as long as xtask does (an app
    /// instance: until it is healthy).
    pub fn restart(&self, name: Component) -> Result<(), String> {
        let mut last = String::new();
        let began = Instant::now();
        for attempt in 1..=RESTART_ATTEMPTS {
            if attempt > 1 && began.elapsed() > RESTART_BUDGET {
                break;
            }
            match self.xtask("restart", name) {
                Ok(()) => {
                    self.pending().killed.retain(|n| *n != name);
                    return Ok(());
                }
                Err(err) => {
                    eprintln!("chaos: restart {name}, attempt {attempt}: {err}");
                    last = err;
                    std::thread::sleep(RESTART_PAUSE);
                }
            }
        }
        Err(format!(
            "{name} did not restart (tried for {:.0} s): {last}",
            began.elapsed().as_secs_f64()
        ))
    }

    /// Lifts every fault still in force: resumes paused processes, restarts killed ones.
    /// Tries them all, then reports the first failure.
    pub fn lift_all(&self) -> Result<(), String> {
        let (stopped, killed) = {
            let pending = self.pending();
            (pending.stopped.clone(), pending.killed.clone())
        };
        let mut errors = Vec::new();
        for (name, _) in stopped {
            if let Err(err) = self.resume(name) {
                errors.push(err);
            }
        }
        for name in killed {
            if let Err(err) = self.restart(name) {
                errors.push(err);
            }
        }
        match errors.into_iter().next() {
            None => Ok(()),
            Some(first) => Err(first),
        }
    }

    /// Whether any fault is in force.
    pub fn any_pending(&self) -> bool {
        let pending = self.pending();
        !pending.stopped.is_empty() || !pending.killed.is_empty()
    }

    fn xtask(&self, verb: &str, name: Component) -> Result<(), String> {
        let status = Command::new(&self.xtask)
            .args([verb, &name.to_string()])
            .stdin(Stdio::null())
            .status()
            .map_err(|err| format!("cannot run {}: {err}", self.xtask.display()))?;
        status
            .success()
            .then_some(())
            .ok_or_else(|| format!("`xtask {verb} {name}` failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_pid_file_is_not_running() {
        let faults = Faults::new(
            PathBuf::from("/nonexistent/cluster"),
            PathBuf::from("xtask"),
        );
        assert!(!faults.running(Component::App(1)));
        assert!(faults.pause(Component::App(1)).is_err());
        assert!(!faults.any_pending());
    }
}
