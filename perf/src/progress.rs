//! Progress of a long run, on stderr. On a terminal, one line redrawn in place several times
//! a second: a bar of the steps done, the step running, and the seconds it has taken so far,
//! so a long wait still shows movement. Elsewhere (a pipe, a log, CI), one line per step,
//! `<what>: [k/n] <step>`, which a script can follow.

use std::{
    io::{IsTerminal as _, Write as _},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

/// Width of the bar, in cells.
const BAR: usize = 24;

struct State {
    what: String,
    total: usize,
    done: usize,
    step: String,
    since: Instant,
    /// The last step has ended (the bar is full).
    finished: bool,
}

impl State {
    /// The terminal line: `what [=========>          ] 3/8 step (12 s)`.
    fn line(&self) -> String {
        // Steps before the running one are done; all of them once finished.
        let done = if self.finished {
            self.done
        } else {
            self.done.saturating_sub(1)
        };
        let filled = BAR * done.min(self.total) / self.total.max(1);
        let mut bar = "=".repeat(filled);
        if filled < BAR {
            bar.push('>');
        }
        format!(
            "{} [{bar:<BAR$}] {}/{} {} ({} s)",
            self.what,
            self.done,
            self.total,
            self.step,
            self.since.elapsed().as_secs()
        )
    }
}

/// A progress display of `total` steps; see the module docs. Dropping it ends the display.
pub(crate) struct Progress {
    state: Arc<Mutex<State>>,
    tty: bool,
    stop: Arc<AtomicBool>,
    ticker: Option<thread::JoinHandle<()>>,
}

impl Progress {
    /// A display for `what` (e.g. `pb-perf testnet`) of `total` steps.
    pub(crate) fn new(what: &str, total: usize) -> Self {
        let tty = std::io::stderr().is_terminal();
        let state = Arc::new(Mutex::new(State {
            what: what.to_owned(),
            total,
            done: 0,
            step: String::new(),
            since: Instant::now(),
            finished: false,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = tty.then(|| {
            let (state, stop) = (state.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(250));
                    let state = state.lock().unwrap_or_else(PoisonError::into_inner);
                    if state.done > 0 && !stop.load(Ordering::Relaxed) {
                        redraw(&state.line());
                    }
                }
            })
        });
        Self {
            state,
            tty,
            stop,
            ticker,
        }
    }

    /// Starts the next step.
    pub(crate) fn step(&self, step: &str) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.done = (state.done + 1).min(state.total);
        state.step = step.to_owned();
        state.since = Instant::now();
        if self.tty {
            redraw(&state.line());
        } else {
            eprintln!("{}: [{}/{}] {step}", state.what, state.done, state.total);
        }
    }

    /// A message that stays on the screen above the bar.
    pub(crate) fn note(&self, message: &str) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if self.tty {
            eprint!("\r\x1b[2K");
            eprintln!("{}: {message}", state.what);
            if state.done > 0 {
                redraw(&state.line());
            }
        } else {
            eprintln!("{}: {message}", state.what);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
        if self.tty {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            // The last state stays visible, with the bar full if every step ran.
            state.finished = state.done == state.total;
            redraw(&state.line());
            eprintln!();
        }
    }
}

fn redraw(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{line}");
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_steps() {
        let mut state = State {
            what: "t".into(),
            total: 4,
            done: 1,
            step: "one".into(),
            since: Instant::now(),
            finished: false,
        };
        assert!(state.line().starts_with("t [>  "), "{}", state.line());
        assert!(state.line().contains("] 1/4 one (0 s)"));
        state.done = 3;
        let line = state.line();
        assert!(
            line.starts_with(&format!("t [{}>", "=".repeat(12))),
            "{line}"
        );
        state.done = 4;
        state.finished = true;
        assert_eq!(state.line().matches('=').count(), BAR, "{}", state.line());
    }
}
