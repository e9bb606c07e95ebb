//! What one exit holds at most, and the bookkeeping that keeps it there, sans-IO: the
//! session table (least recently heard sessions make room for new ones), the connections
//! and name lookups each session and the whole exit may have, and the bytes buffered per
//! stream. Time is an argument (`now`, the exit's clock as a [`Duration`]); nothing here
//! touches a socket.
//!
//! What it does not do: decide anything about destinations (that is [`super::ExitPolicy`]),
//! or tell one client from another. A client may open as many sessions as it likes, so the
//! caps keep the exit alive and its memory and file descriptors bounded, and refuse what is
//! over them with a reply and a counter; they cannot stop one client that opens many
//! sessions from taking every connection.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use pb_proto::{Reply, SessionId, StreamId, Streams, streams::SEND_BUFFER};

use super::ExitStats;

/// Most sessions at once. A session may hold hundreds of KiB (up to 2048 SURBs of a few
/// hundred bytes, its channel's window), so this bounds that memory; the table never refuses
/// a new session while one without connections or lookups can make room.
pub const MAX_SESSIONS: usize = 4096;
/// Connections (open or connecting) the exit allows in all unless `gossip.exit_max_connections`
/// says otherwise, and never more than its file descriptor limit allows (see
/// [`connection_cap`]). Each is a socket and its buffers (see [`stream_buffer`] and
/// [`TO_DESTINATIONS_BUFFERED`]); 4096 is 64 sessions at [`SESSION_CONNECTIONS`], or over a
/// hundred using a few dozen each, and needs an open-files limit of 4352.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Connections (open or connecting) one session may have: a browser opens a few dozen at
/// most, and 64 sessions are needed to take every connection at the default.
pub const SESSION_CONNECTIONS: usize = 64;
/// Name lookups one session may have waiting or resolving: a web page's host names at once
/// (a browser opens dozens of connections to a dozen names through one session). At most
/// half of [`super::lookups::RESOLVING`] of them resolve at once, so one session never holds
/// every slot.
pub const SESSION_LOOKUPS: usize = 64;
/// File descriptors kept for everything but destination connections (the dataplane's and
/// gossip's sockets, the admin endpoint, the resolvers' sockets, files read): the exit's
/// connections stay this far below the process's open-files limit.
pub const RESERVED_FDS: u64 = 256;
/// Bytes from destinations the exit holds for its clients in all; each stream's share of it
/// (see [`stream_buffer`]) is where the exit stops reading from that destination. 64 MiB over
/// 4096 connections is 16 KiB a stream, which the exit can refill every 3 ms turn of its
/// loop: megabytes a second, far more than a session's SURBs carry away.
pub const TO_CLIENTS_BUFFERED: usize = 64 * 1024 * 1024;
/// The least a stream may hold for its client, however many connections are allowed.
pub const MIN_STREAM_BUFFER: usize = 4 * 1024;
/// Bytes from clients the exit holds for destinations that have not taken them, in all. A
/// stream holds at most its credit (256 KiB) and a write buffer, so this is reached only when
/// about a thousand destinations stop reading; then the streams holding the most are reset
/// (see [`over_budget`]), checked once a second.
pub const TO_DESTINATIONS_BUFFERED: usize = 256 * 1024 * 1024;

/// What the exit takes back to make room for a connection when it holds its most
/// ([`SessionTable::reclaim`]). One client may open as many sessions as it likes, so a full
/// exit favours sessions that keep talking over those that went quiet (a session must be
/// heard from to keep what it holds), and sessions holding few connections over those
/// holding many: an attacker who takes every connection must keep every one of its sessions
/// talking, and still loses connections to whoever holds fewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reclaim {
    /// Forget this quiet session with everything it holds.
    Session(SessionId),
    /// Close one connection of this session (the one holding the most).
    ConnectionOf(SessionId),
}

/// How long a session holding connections may go unheard before a full exit takes them
/// back for a session that is talking.
pub const RECLAIM_QUIET: Duration = Duration::from_secs(30);

/// Why the exit refused a stream (or could not keep it): each has its SOCKS reply and its
/// counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The session has [`SESSION_CONNECTIONS`] open or connecting.
    SessionConnections,
    /// The exit has its most connections open or connecting.
    Connections,
    /// The session has [`SESSION_LOOKUPS`] waiting or resolving.
    SessionLookups,
    /// The exit has [`super::lookups::MAX_LOOKUPS`] waiting or resolving.
    Lookups,
    /// The name did not resolve by [`super::lookups::LOOKUP_DEADLINE`].
    LookupTimedOut,
    /// The destination took too little of what the client sent while the exit's buffers
    /// towards destinations were over [`TO_DESTINATIONS_BUFFERED`].
    Buffered,
}

impl Refusal {
    /// The SOCKS reply the client's application sees: 0x04 (host unreachable) for a name
    /// that did not resolve in time, as for one that does not resolve; 0x01 (general
    /// failure: the exit's own) for the caps.
    pub fn reply(self) -> Reply {
        match self {
            Refusal::LookupTimedOut => Reply::HostUnreachable,
            Refusal::SessionConnections
            | Refusal::Connections
            | Refusal::SessionLookups
            | Refusal::Lookups
            | Refusal::Buffered => Reply::GeneralFailure,
        }
    }

    /// Counts it.
    pub fn count(self, stats: &ExitStats) {
        let counter = match self {
            Refusal::SessionConnections => &stats.refused_session_connections,
            Refusal::Connections => &stats.refused_connections,
            Refusal::SessionLookups => &stats.refused_session_lookups,
            Refusal::Lookups => &stats.refused_lookups,
            Refusal::LookupTimedOut => &stats.lookup_timeouts,
            Refusal::Buffered => &stats.reset_buffered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Answers a stream the exit will not open for `why`: its SOCKS reply to the client, and
/// the counter.
pub fn refuse_stream(streams: &mut Streams, stream: StreamId, why: Refusal, stats: &ExitStats) {
    why.count(stats);
    streams.refuse(stream, why.reply());
}

/// Ends an open stream the exit will not carry on for `why`: a reset with its reply code,
/// and the counter.
pub fn reset_stream(streams: &mut Streams, stream: StreamId, why: Refusal, stats: &ExitStats) {
    why.count(stats);
    streams.reset(stream, why.reply());
}

/// The caps a [`SessionTable`] enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Sessions.
    pub sessions: usize,
    /// Connections (open or connecting), in all.
    pub connections: usize,
    /// Connections (open or connecting), per session.
    pub session_connections: usize,
    /// Name lookups (waiting or resolving), per session.
    pub session_lookups: usize,
}

impl Caps {
    /// The defaults, with at most `connections` in all.
    pub fn with_connections(connections: usize) -> Self {
        Self {
            sessions: MAX_SESSIONS,
            connections,
            session_connections: SESSION_CONNECTIONS.min(connections),
            session_lookups: SESSION_LOOKUPS,
        }
    }
}

struct Entry<S> {
    value: S,
    /// When it was first heard from.
    since: Duration,
    last_heard: Duration,
    connections: usize,
    lookups: usize,
}

impl<S> Entry<S> {
    /// Holds a connection or a lookup: not evicted for a new session.
    fn busy(&self) -> bool {
        self.connections > 0 || self.lookups > 0
    }
}

/// Idle sessions first heard within this long are evicted before older ones: session ids
/// are free, so a flood of fresh ones must not push out an established session that is
/// idle between two of its user's requests.
pub const YOUNG: Duration = Duration::from_secs(30);

/// The sessions that hold nothing, in the two orders eviction reads: by when each was last
/// heard, and by when it was first heard (see [`YOUNG`]). One type, so that no change can
/// update one order and not the other.
#[derive(Default)]
struct Idle {
    by_heard: BTreeSet<(Duration, SessionId)>,
    by_since: BTreeSet<(Duration, SessionId)>,
}

impl Idle {
    fn insert<S>(&mut self, id: SessionId, entry: &Entry<S>) {
        self.by_heard.insert((entry.last_heard, id));
        self.by_since.insert((entry.since, id));
    }

    fn remove<S>(&mut self, id: SessionId, entry: &Entry<S>) {
        self.by_heard.remove(&(entry.last_heard, id));
        self.by_since.remove(&(entry.since, id));
    }

    fn is_empty(&self) -> bool {
        self.by_heard.is_empty()
    }

    /// The one to evict at `now`: the youngest if it was first heard within [`YOUNG`],
    /// else the one heard from longest ago.
    fn victim(&self, now: Duration) -> Option<SessionId> {
        self.by_since
            .last()
            .filter(|(since, _)| now.saturating_sub(*since) < YOUNG)
            .or_else(|| self.by_heard.first())
            .map(|(_, id)| *id)
    }
}

/// The exit's sessions, with what each holds.
///
/// A new session when the table is full evicts, among those with no connection and no
/// lookup (their streams, if any, are only answers waiting for a SURB), the youngest if
/// it is younger than [`YOUNG`], else the one heard from longest ago; only when every
/// session holds one is the new one refused. Both are counted
/// ([`ExitStats::sessions_evicted`], [`ExitStats::sessions_refused`]).
pub struct SessionTable<S> {
    caps: Caps,
    entries: HashMap<SessionId, Entry<S>>,
    /// The sessions that hold nothing.
    idle: Idle,
    connections: usize,
    stats: Arc<ExitStats>,
}

impl<S> SessionTable<S> {
    /// No sessions yet.
    pub fn new(caps: Caps, stats: Arc<ExitStats>) -> Self {
        Self {
            caps,
            entries: HashMap::new(),
            idle: Idle::default(),
            connections: 0,
            stats,
        }
    }

    /// Sessions held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Connections open or connecting, in all.
    #[cfg(test)]
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// The session `id`, heard from at `now`: the one held, or a new one from `new`
    /// (evicting an idle session if the table is full: see the type's docs). `None`: the
    /// table is full of sessions that hold connections or lookups.
    pub fn admit(
        &mut self,
        id: SessionId,
        now: Duration,
        new: impl FnOnce() -> S,
    ) -> Option<&mut S> {
        if !self.entries.contains_key(&id) {
            if self.entries.len() >= self.caps.sessions && !self.evict_one(now) {
                self.stats.sessions_refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            self.stats.sessions.fetch_add(1, Ordering::Relaxed);
            let entry = Entry {
                value: new(),
                since: now,
                last_heard: now,
                connections: 0,
                lookups: 0,
            };
            self.idle.insert(id, &entry);
            self.entries.insert(id, entry);
        }
        let entry = self.entries.get_mut(&id)?;
        if !entry.busy() {
            self.idle.remove(id, entry);
            entry.last_heard = now;
            self.idle.insert(id, entry);
        }
        entry.last_heard = now;
        Some(&mut entry.value)
    }

    /// When a new session `id` would be refused (the table is full and every session holds a
    /// connection or a lookup): the session heard from longest ago, if it has been quiet over
    /// `quiet`. The caller forgets it, with what it holds, to make room: a session must be
    /// heard from to keep its place (see [`Reclaim`]).
    pub fn quiet_to_evict(
        &self,
        id: SessionId,
        now: Duration,
        quiet: Duration,
    ) -> Option<SessionId> {
        if self.entries.contains_key(&id)
            || self.entries.len() < self.caps.sessions
            || !self.idle.is_empty()
        {
            return None;
        }
        self.entries
            .iter()
            .min_by_key(|(k, e)| (e.last_heard, k.0))
            .filter(|(_, e)| now.saturating_sub(e.last_heard) > quiet)
            .map(|(k, _)| *k)
    }

    /// Forgets an idle session: the youngest if it was first heard within [`YOUNG`] of
    /// `now`, else the one heard from longest ago; false if every session is busy.
    fn evict_one(&mut self, now: Duration) -> bool {
        let Some(id) = self.idle.victim(now) else {
            return false;
        };
        let Some(entry) = self.entries.remove(&id) else {
            return false;
        };
        self.idle.remove(id, &entry);
        self.stats.sessions_evicted.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// When the session `id` was first heard from.
    pub fn since(&self, id: &SessionId) -> Option<Duration> {
        self.entries.get(id).map(|e| e.since)
    }

    /// The session `id`.
    pub fn get(&self, id: &SessionId) -> Option<&S> {
        self.entries.get(id).map(|e| &e.value)
    }

    /// The session `id`.
    pub fn get_mut(&mut self, id: &SessionId) -> Option<&mut S> {
        self.entries.get_mut(id).map(|e| &mut e.value)
    }

    /// Every session, with when it was last heard.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (SessionId, &mut S, Duration)> {
        self.entries
            .iter_mut()
            .map(|(id, e)| (*id, &mut e.value, e.last_heard))
    }

    /// Forgets the session `id` with what it holds: its connections no longer count (the
    /// caller closes them).
    pub fn remove(&mut self, id: &SessionId) -> Option<S> {
        let entry = self.entries.remove(id)?;
        self.idle.remove(*id, &entry);
        self.connections -= entry.connections;
        Some(entry.value)
    }

    /// Counts a connection of `id` about to be opened, or says which cap it is over.
    pub fn open_connection(&mut self, id: SessionId) -> Result<(), Refusal> {
        let Some(entry) = self.entries.get_mut(&id) else {
            return Err(Refusal::SessionConnections);
        };
        if entry.connections >= self.caps.session_connections {
            return Err(Refusal::SessionConnections);
        }
        if self.connections >= self.caps.connections {
            return Err(Refusal::Connections);
        }
        if !entry.busy() {
            self.idle.remove(id, entry);
        }
        entry.connections += 1;
        self.connections += 1;
        Ok(())
    }

    /// What to take back when session `asker` wants a connection and the exit holds its most
    /// (see [`Reclaim`]): the session holding connections that was heard from longest ago,
    /// if that was over `quiet` before `now`; else a connection of the session holding the
    /// most, if it holds at least two more than `asker`. `None`: the asker is refused.
    pub fn reclaim(&self, asker: SessionId, now: Duration, quiet: Duration) -> Option<Reclaim> {
        let holders = || {
            self.entries
                .iter()
                .filter(|(id, e)| **id != asker && e.connections > 0)
        };
        let stalest = holders()
            .min_by_key(|(id, e)| (e.last_heard, id.0))
            .filter(|(_, e)| now.saturating_sub(e.last_heard) > quiet);
        if let Some((id, _)) = stalest {
            return Some(Reclaim::Session(*id));
        }
        let asked = self.entries.get(&asker).map_or(0, |e| e.connections);
        holders()
            .max_by_key(|(id, e)| (e.connections, std::cmp::Reverse(id.0)))
            .filter(|(_, e)| e.connections >= asked + 2)
            .map(|(id, _)| Reclaim::ConnectionOf(*id))
    }

    /// A connection of `id` is closed (or failed to open). Nothing if the session is gone.
    pub fn close_connection(&mut self, id: SessionId) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if entry.connections == 0 {
            return;
        }
        entry.connections -= 1;
        self.connections -= 1;
        if !entry.busy() {
            self.idle.insert(id, entry);
        }
    }

    /// Counts a name lookup of `id` about to start, or says that the session has its most.
    pub fn start_lookup(&mut self, id: SessionId) -> Result<(), Refusal> {
        let Some(entry) = self.entries.get_mut(&id) else {
            return Err(Refusal::SessionLookups);
        };
        if entry.lookups >= self.caps.session_lookups {
            return Err(Refusal::SessionLookups);
        }
        if !entry.busy() {
            self.idle.remove(id, entry);
        }
        entry.lookups += 1;
        Ok(())
    }

    /// A lookup of `id` has ended (answered, timed out or abandoned). Nothing if the
    /// session is gone.
    pub fn end_lookup(&mut self, id: SessionId) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if entry.lookups == 0 {
            return;
        }
        entry.lookups -= 1;
        if !entry.busy() {
            self.idle.insert(id, entry);
        }
    }
}

/// Bytes to read from a destination now for a stream whose send buffer has `send_room`
/// left ([`Streams::send_room`]), when each stream may hold `share` bytes for its client:
/// none once it holds its share, so a client that takes nothing (no SURBs) stops its
/// destination, whose TCP window then closes, rather than the exit buffering more.
pub fn read_room(send_room: usize, share: usize) -> usize {
    if send_room == 0 {
        return 0; // finished, closing, or full
    }
    let held = SEND_BUFFER.saturating_sub(send_room);
    share.min(SEND_BUFFER).saturating_sub(held)
}

/// Each stream's share of [`TO_CLIENTS_BUFFERED`] when `connections` are allowed, within
/// [`MIN_STREAM_BUFFER`] and [`SEND_BUFFER`]: the exit then holds at most `connections`
/// times this for its clients.
pub fn stream_buffer(connections: usize) -> usize {
    (TO_CLIENTS_BUFFERED / connections.max(1)).clamp(MIN_STREAM_BUFFER, SEND_BUFFER)
}

/// The holders to reset so that what is left is within `budget`: none if all of them hold
/// no more than it, else those holding the most (their destinations take the least), in
/// that order. Each holder is `(bytes held, who)`.
pub fn over_budget<T: Copy>(mut holders: Vec<(usize, T)>, budget: usize) -> Vec<T> {
    let mut total: usize = holders.iter().map(|(bytes, _)| bytes).sum();
    if total <= budget {
        return Vec::new();
    }
    holders.sort_by_key(|h| std::cmp::Reverse(h.0));
    let mut reset = Vec::new();
    for (bytes, who) in holders {
        if total <= budget {
            break;
        }
        total -= bytes;
        reset.push(who);
    }
    reset
}

/// The most connections the exit allows: `configured`, but no more than the open-files
/// limit `soft_limit` (the process's soft `RLIMIT_NOFILE`, if known) leaves once
/// [`RESERVED_FDS`] are kept for the rest of the relay (or half of a limit smaller than
/// twice that), and at least one.
pub fn connection_cap(configured: usize, soft_limit: Option<u64>) -> usize {
    let Some(limit) = soft_limit else {
        return configured.max(1);
    };
    let usable = limit.saturating_sub(RESERVED_FDS).max(limit / 2);
    let usable = usize::try_from(usable).unwrap_or(usize::MAX);
    configured.min(usable).max(1)
}

/// The soft open-files limit from the text of `/proc/self/limits` (`None`: unlimited, or
/// not found).
pub fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .strip_prefix("Max open files")?
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

/// The process's soft open-files limit, read from `/proc/self/limits` (no system call
/// needed, so no `unsafe`); `None` where that file is not there or says unlimited.
pub fn open_files_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .as_deref()
        .and_then(parse_open_files_limit)
}

#[cfg(test)]
mod tests;
