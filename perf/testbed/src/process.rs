//! A child process whose output lines are collected as they come (stdout and stderr
//! together, in arrival order per stream), optionally also appended to a log file, killed
//! and reaped when dropped, so a test or a benchmark that fails half-way leaves nothing
//! running.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, PoisonError},
    thread::{self, JoinHandle},
};

/// Lines kept per child (the most recent).
const MAX_LINES: usize = 200_000;

/// A running child and what it has printed.
#[derive(Debug)]
pub struct Proc {
    /// The child (for its pid, `try_wait`, `wait`).
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The threads reading the pipes; they end when the pipes close.
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    /// Starts `command` with its stdout and stderr collected.
    ///
    /// # Errors
    ///
    /// The spawn error (a missing binary, for instance).
    pub fn start(command: Command) -> std::io::Result<Self> {
        Self::start_logged(command, None)
    }

    /// As [`Proc::start`], also appending every line to the file `log` (created if needed)
    /// as it comes, for readers outside this process.
    ///
    /// # Errors
    ///
    /// The spawn error, or why `log` cannot be opened.
    pub fn start_logged(mut command: Command, log: Option<&Path>) -> std::io::Result<Self> {
        let log = match log {
            Some(path) => Some(Arc::new(Mutex::new(
                File::options().create(true).append(true).open(path)?,
            ))),
            None => None,
        };
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let pipes: Vec<Box<dyn std::io::Read + Send>> = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut readers = Vec::new();
        for pipe in pipes {
            let lines = lines.clone();
            let log = log.clone();
            readers.push(thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(log) = &log {
                        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                        // A full disk loses log lines, not the run.
                        let _ = writeln!(log, "{line}");
                    }
                    let mut lines = lines.lock().unwrap_or_else(PoisonError::into_inner);
                    // A long-running child's output is kept bounded: the oldest half goes.
                    if lines.len() >= MAX_LINES {
                        lines.drain(..MAX_LINES / 2);
                    }
                    lines.push(line);
                }
            }));
        }
        Ok(Self {
            child,
            lines,
            readers,
        })
    }

    /// Waits for the child to exit and for every line it printed to be collected.
    ///
    /// # Errors
    ///
    /// As [`Child::wait`].
    pub fn wait_output(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait()?;
        // The pipes close when the child (and whatever inherited them) is gone.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Ok(status)
    }

    /// Asks the child to stop (SIGTERM), then as [`Proc::wait_output`]. A child that has
    /// already exited is only reaped.
    ///
    /// # Errors
    ///
    /// As [`Child::wait`].
    pub fn terminate(&mut self) -> std::io::Result<ExitStatus> {
        if self.child.try_wait()?.is_none() {
            crate::sys::terminate(self.child.id());
        }
        self.wait_output()
    }

    /// Everything printed so far (the kept lines), joined by newlines.
    pub fn output(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    /// The last line printed so far that starts with `prefix`.
    pub fn last(&self, prefix: &str) -> Option<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .find(|l| l.starts_with(prefix))
            .cloned()
    }

    /// Every line kept that starts with `prefix`, oldest first.
    pub fn lines_with(&self, prefix: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The last `n` lines printed so far, joined.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_collected_and_the_child_is_reaped() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo one; echo two >&2; echo three"]);
        let mut p = Proc::start(command).unwrap();
        assert!(p.child.wait().unwrap().success());
        // The reader threads finish at the pipes' end, soon after the child.
        let start = std::time::Instant::now();
        while p.tail(10).lines().count() < 3 && start.elapsed().as_secs() < 10 {
            thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(p.last("thr").as_deref(), Some("three"));
        assert_eq!(p.last("two").as_deref(), Some("two"));
        assert!(p.tail(10).contains("one"));
    }

    #[test]
    fn terminate_stops_the_child_and_collects_all_output() {
        let log = std::env::temp_dir().join(format!("pb-testbed-proc-{}.log", std::process::id()));
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo started; trap 'echo bye; exit 0' TERM; while :; do sleep 0.05; done",
        ]);
        let mut p = Proc::start_logged(command, Some(&log)).unwrap();
        let start = std::time::Instant::now();
        while p.last("started").is_none() && start.elapsed().as_secs() < 10 {
            thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(p.terminate().unwrap().success());
        assert_eq!(p.output(), "started\nbye");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "started\nbye\n");
        std::fs::remove_file(&log).unwrap();
    }
}
