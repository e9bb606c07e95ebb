//! A child process whose output lines are collected as they come (stdout and stderr
//! together, in arrival order per stream), killed and reaped when dropped, so a test or a
//! benchmark that fails half-way leaves nothing running.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, PoisonError},
    thread,
};

/// Lines kept per child (the most recent).
const MAX_LINES: usize = 200_000;

/// A running child and what it has printed.
#[derive(Debug)]
pub struct Proc {
    /// The child (for its pid, `try_wait`, `wait`).
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `command` with its stdout and stderr collected.
    ///
    /// # Errors
    ///
    /// The spawn error (a missing binary, for instance).
    pub fn start(mut command: Command) -> std::io::Result<Self> {
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
        for pipe in pipes {
            let lines = lines.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut lines = lines.lock().unwrap_or_else(PoisonError::into_inner);
                    // A long-running child's output is kept bounded: the oldest half goes.
                    if lines.len() >= MAX_LINES {
                        lines.drain(..MAX_LINES / 2);
                    }
                    lines.push(line);
                }
            });
        }
        Ok(Self { child, lines })
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
}
