//! The crate's error type.

use std::io;
use std::process::ExitStatus;

/// Why building or using a testbed failed.
///
/// Each variant's message names the most likely cause. Underlying OS errors are
/// available through [`std::error::Error::source`].
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum TestbedError {
    /// A helper program (normally `ip`) could not be started.
    #[error("could not start `{cmd}` (is iproute2 installed and on PATH?)")]
    Spawn {
        /// The command line that was attempted.
        cmd: String,
        /// Why the process could not be spawned.
        #[source]
        source: io::Error,
    },
    /// A helper program ran but exited unsuccessfully.
    #[error(
        "`{cmd}` failed ({status}): {stderr} (are we root with CAP_SYS_ADMIN and CAP_NET_ADMIN? \
         is the name or address already in use?)"
    )]
    Command {
        /// The command line that failed.
        cmd: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// `setns(2)` into or out of a network namespace failed.
    #[error(
        "could not switch this thread into or out of network namespace `{ns}` \
         (needs CAP_SYS_ADMIN; was the namespace already deleted?)"
    )]
    Setns {
        /// The namespace being entered or left.
        ns: String,
        /// The OS error from `open` or `setns`.
        #[source]
        source: io::Error,
    },
    /// Something did not become ready in time.
    #[error("timed out waiting for {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
    },
    /// A caller-supplied name cannot be used.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidName {
        /// Which kind of name (namespace tag, interface name).
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A [`PairSpec`](crate::PairSpec) or namespace pairing that cannot be built.
    #[error("invalid veth pair spec: {reason}")]
    InvalidSpec {
        /// Why it was rejected.
        reason: String,
    },
    /// Output of a helper program was not in the expected format.
    #[error("could not parse {what} from `{text}` (unexpected iproute2 output format?)")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// The text that did not parse.
        text: String,
    },
    /// `sched_setaffinity(2)` refused the requested CPU.
    #[error(
        "cannot pin this thread to CPU {cpu} (is it online and in the allowed set? see allowed_cpus())"
    )]
    Affinity {
        /// The requested CPU number.
        cpu: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Any other I/O error, e.g. reading `/proc` or `/run/netns`.
    /// A socket or thread of the testbed's own (the capture) failed.
    #[error("{what}: {source}")]
    Socket {
        /// What failed.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Renders an error and all its sources as `outer: inner: ...`, for messages that
/// are printed rather than returned.
pub(crate) fn display_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}
