//! What may reach a PhantomBand log, by type rather than by discipline.
//!
//! - [`Sensitive<T>`] wraps anything that must never be printed: Sphinx and identity
//!   secrets, a user's destination (a SOCKS target), a client's address, a mailbox id. Its
//!   `Debug` and `Display` print `[scrubbed]`, so a `{:?}` of a struct holding one, an error
//!   message or a `tracing` field cannot leak it; the value is reached only through
//!   [`Sensitive::expose`], which is easy to find in review.
//! - [`init`]: the one `tracing` setup every binary uses. Lines on stderr read
//!   `pb-relay: message`, `pb-relay: warning: message`, …; the level comes from the `PB_LOG`
//!   environment variable (`error`, `warn`, `info` (default), `debug`, `trace`).
//! - [`RateLimit`], [`warn_limited!`] and [`info_limited!`]: a line an outsider can trigger
//!   (a malformed packet, a member joining or leaving) is printed at most once per interval
//!   per call site, with the count of those suppressed.
//!
//! Not here: metrics and counters (each crate keeps its own; the dataplane keeps counters,
//! not log lines, per packet), and any decision about *what* is sensitive: the types that
//! hold such values wrap them.
#![forbid(unsafe_code)]

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// What a scrubbed value prints.
pub const SCRUBBED: &str = "[scrubbed]";

/// A value that must never reach a log, an error message or a `Debug` print.
///
/// ```
/// let target = pb_log::Sensitive::new("example.org:443".to_owned());
/// assert_eq!(format!("{target:?} {target}"), "[scrubbed] [scrubbed]");
/// assert_eq!(target.expose(), "example.org:443");
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself, for the code that must use it (never for printing).
    pub const fn expose(&self) -> &T {
        &self.0
    }

    /// The value itself, writable.
    pub fn expose_mut(&mut self) -> &mut T {
        &mut self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Sensitive<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SCRUBBED)
    }
}

impl<T> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SCRUBBED)
    }
}

/// The level `PB_LOG` asks for (`info` when unset or not a level).
pub fn level_from_env() -> tracing::level_filters::LevelFilter {
    std::env::var("PB_LOG")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(tracing::level_filters::LevelFilter::INFO)
}

/// Sends `tracing` events of this process to stderr as `PROGRAM: message` lines (with
/// `warning: `, `error: `, `debug: ` or `trace: ` after the program name for those levels,
/// then the event's fields as `key=value`), at the level `PB_LOG` asks for. Call once, first
/// thing in `main`; a second call does nothing.
pub fn init(program: &'static str) {
    let _ = tracing_subscriber::fmt()
        .with_max_level(level_from_env())
        .with_writer(std::io::stderr)
        .event_format(Lines { program })
        .try_init();
}

/// The line format of [`init`].
struct Lines {
    program: &'static str,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Lines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error: ",
            tracing::Level::WARN => "warning: ",
            tracing::Level::INFO => "",
            tracing::Level::DEBUG => "debug: ",
            tracing::Level::TRACE => "trace: ",
        };
        write!(writer, "{}: {level}", self.program)?;
        tracing_subscriber::fmt::FormatFields::format_fields(ctx, writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// At most one event per `interval_secs` from one call site; the rest are counted.
#[derive(Debug)]
pub struct RateLimit {
    interval_secs: u64,
    /// Seconds since the Unix epoch of the last event let through, plus one (0: none yet).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// A limit of one event per `interval_secs` (at least 1).
    pub const fn new(interval_secs: u64) -> Self {
        Self {
            interval_secs: if interval_secs == 0 { 1 } else { interval_secs },
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether an event at `now_secs` may go out; if so, how many were suppressed since
    /// the last one that did.
    pub fn check_at(&self, now_secs: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now_secs.saturating_add(1) >= last + self.interval_secs;
        if due
            && self
                .last
                .compare_exchange(
                    last,
                    now_secs.saturating_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// [`check_at`](Self::check_at) with the wall clock.
    pub fn check(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.check_at(now)
    }
}

/// `tracing::warn!` at most once per 10 s from this call site, noting how many were
/// suppressed. For anything an outsider can trigger.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => { $crate::__limited!(warn, $($arg)+) };
}

/// `tracing::info!` at most once per 10 s from this call site, noting how many were
/// suppressed. For routine events an outsider can cause in bulk (members joining and leaving).
#[macro_export]
macro_rules! info_limited {
    ($($arg:tt)+) => { $crate::__limited!(info, $($arg)+) };
}

/// The body of [`warn_limited!`] and [`info_limited!`]: one [`RateLimit`] per call site.
#[doc(hidden)]
#[macro_export]
macro_rules! __limited {
    ($level:ident, $($arg:tt)+) => {{
        static LIMIT: $crate::RateLimit = $crate::RateLimit::new(10);
        if let Some(suppressed) = LIMIT.check() {
            if suppressed > 0 {
                $crate::__tracing::$level!(suppressed, $($arg)+);
            } else {
                $crate::__tracing::$level!($($arg)+);
            }
        }
    }};
}

#[doc(hidden)]
pub use tracing as __tracing;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    #[expect(dead_code, reason = "read through Debug")]
    struct Holder {
        port: u16,
        secret: Sensitive<[u8; 4]>,
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let h = Holder {
            port: 7,
            secret: Sensitive::new([0xde, 0xad, 0xbe, 0xef]),
        };
        let printed = format!("{h:?} {h:#?} {}", h.secret);
        assert!(printed.contains("[scrubbed]"), "{printed}");
        assert!(printed.contains('7'), "{printed}");
        // The bytes in decimal and in hex, as any formatting would show them.
        for shown in ["222", "173", "190", "239", "dead", "beef", "DEAD", "BEEF"] {
            assert!(!printed.contains(shown), "{shown} in {printed}");
        }
        assert_eq!(h.secret.expose(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn the_limited_macros_expand_at_both_levels() {
        // Each call site has its own limit: the first call of each goes out, the rest wait.
        for i in 0..3 {
            crate::warn_limited!("warning {i}");
            crate::info_limited!(count = i, "note");
        }
    }

    #[test]
    fn rate_limit_lets_one_through_per_interval_and_counts_the_rest() {
        let limit = RateLimit::new(10);
        assert_eq!(limit.check_at(100), Some(0));
        assert_eq!(limit.check_at(100), None);
        assert_eq!(limit.check_at(105), None);
        assert_eq!(limit.check_at(109), None);
        assert_eq!(limit.check_at(110), Some(3));
        assert_eq!(limit.check_at(111), None);
        assert_eq!(limit.check_at(125), Some(1));
    }
}
