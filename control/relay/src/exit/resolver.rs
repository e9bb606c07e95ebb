//! The exit's resolver: one thread with its own mio loop that asks the name servers of
//! `resolv.conf` over UDP, so that a slow name holds a socket, not a thread.
//!
//! A lookup is answered from the hosts file if it has the name; otherwise it gets one
//! fresh UDP socket per try (an unpredictable port from the kernel, `connect`ed to the
//! server, so datagrams from anyone else are dropped by the kernel), on which its A and AAAA
//! queries go under fresh random ids. An answer counts only if it comes from that server,
//! under the query's id, about its question ([`wire::check_answer`]); anything else is
//! dropped and counted (`lookup_answers_refused`), so an off-path attacker has to guess a
//! 16-bit id and the port at once. A try waits `timeout` for its answers, then the next try
//! goes to the next server; a lookup gives up after its tries ([`conf::Budget::EXIT`]: 4 s
//! at most), and the exit forgets it at its deadline anyway ([`Resolver::cancel`]). The
//! files are read again when they change.
//!
//! What it does not do: cache, retry over TCP (a truncated answer without addresses is a
//! failed try), search domains or `ndots`, DNSSEC, or resolve IP literals (the exit
//! connects to those itself). It never logs a name.

pub(crate) mod conf;
#[cfg(test)]
mod tests;
pub(crate) mod wire;

use std::{
    collections::HashMap,
    io::{ErrorKind, Read as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime},
};

use crossbeam::channel::{Receiver, Sender, unbounded};
use mio::{Events, Interest, Poll, Token, Waker, net::UdpSocket};

use self::{
    conf::{Budget, Hosts, ResolvConf},
    wire::{Family, Mismatch, QueryName, Reply, Sent},
};
use super::{
    ExitStats,
    lookups::{Job, LookupId},
};

/// Lookups the thread holds at most, whatever it is asked ([`super::lookups::RESOLVING`]
/// is what the exit asks for): past this a lookup fails at once.
const MAX_PENDING: usize = 1024;
/// The most read of a hosts or resolv.conf file.
const MAX_FILE: u64 = 1 << 20;
/// Room for one answer: 512 bytes without EDNS, which the queries do not offer; a longer
/// datagram is cut and fails to parse (counted).
const ANSWER_ROOM: usize = 2048;
const WAKE: Token = Token(0);

/// The files the resolver reads.
#[derive(Clone, Debug)]
pub struct Files {
    /// The name servers and their options.
    pub resolv_conf: PathBuf,
    /// Names answered without asking anyone.
    pub hosts: PathBuf,
    /// The name servers' port: 53 (tests run their own server elsewhere).
    pub port: u16,
}

impl Files {
    /// `/etc/resolv.conf` and `/etc/hosts` (in a network namespace entered with `ip netns
    /// exec`, the namespace's own).
    pub fn system() -> Self {
        Self {
            resolv_conf: "/etc/resolv.conf".into(),
            hosts: "/etc/hosts".into(),
            port: 53,
        }
    }
}

/// An answer: the lookup and its addresses, each with the stream's port (or the error).
pub type Answer = (LookupId, std::io::Result<Vec<SocketAddr>>);

enum Request {
    Resolve(Job),
    Cancel(LookupId),
}

/// The exit's handle on the resolver thread, which ends when this is dropped.
pub struct Resolver {
    requests: Sender<Request>,
    answers: Receiver<Answer>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    /// Lookups the thread holds, as of its last turn.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by tests"))]
    resolving: Arc<AtomicUsize>,
    /// Lookups the thread has taken, in the order handed over.
    taken: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Resolver {
    /// Starts the thread, reading `files`, spending at most `budget` on a lookup, waking the
    /// exit's poll through `exit_waker` when it answers and counting refused answers in
    /// `stats`.
    pub fn start(
        files: Files,
        budget: Budget,
        exit_waker: Arc<Waker>,
        stats: Arc<ExitStats>,
    ) -> std::io::Result<Self> {
        let (requests, incoming) = unbounded();
        let (answer, answers) = unbounded();
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let stop = Arc::new(AtomicBool::new(false));
        let resolving = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(AtomicU64::new(0));
        let mut state = Thread {
            poll,
            files,
            budget,
            conf: ResolvConf::parse(""),
            hosts: Hosts::default(),
            stamps: [None, None],
            pending: HashMap::new(),
            by_id: HashMap::new(),
            next_token: 1,
            incoming,
            answer,
            exit_waker,
            stats,
            stop: stop.clone(),
            resolving: resolving.clone(),
            taken: taken.clone(),
        };
        state.reload();
        let thread = thread::Builder::new()
            .name("pb-exit-dns".into())
            .spawn(move || state.run())?;
        Ok(Self {
            requests,
            answers,
            waker,
            stop,
            resolving,
            taken,
            thread: Some(thread),
        })
    }

    /// Hands a lookup to the resolver.
    pub fn resolve(&self, job: Job) {
        self.send(Request::Resolve(job));
    }

    /// Drops lookup `id` (answered at its deadline, or its stream gone): its socket closes.
    pub fn cancel(&self, id: LookupId) {
        self.send(Request::Cancel(id));
    }

    fn send(&self, request: Request) {
        // The thread holds the receiver until this is dropped, so the send cannot fail.
        let _ = self.requests.send(request);
        let _ = self.waker.wake();
    }

    /// Lookups the thread has taken so far, in the order [`Resolver::resolve`] handed them
    /// over (see [`super::lookups::Lookups::taken`]).
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Acquire)
    }

    /// The next answer, if any.
    pub fn try_answer(&self) -> Option<Answer> {
        self.answers.try_recv().ok()
    }

    /// Lookups the thread holds (each with its socket), as of its last turn.
    #[cfg(test)]
    pub fn resolving(&self) -> usize {
        self.resolving.load(Ordering::Relaxed)
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opaque in `Debug`: it holds names users asked for.
impl core::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

/// What a file looked like when last read: read again when it changes.
type Stamp = (Option<SystemTime>, u64, u64);

/// One family's part of a lookup.
enum Part {
    /// Asked (under the [`Sent`], once sent), not answered yet.
    Asked(Option<Sent>),
    /// Answered: its addresses (none if the name has none of this family, or no name).
    Done(Vec<IpAddr>),
}

impl Part {
    fn done(&self) -> bool {
        matches!(self, Part::Done(_))
    }
}

/// A lookup being resolved.
struct Pending {
    id: LookupId,
    port: u16,
    name: QueryName,
    servers: Vec<SocketAddr>,
    timeout: Duration,
    /// Tries made.
    tried: u32,
    tries: u32,
    socket: Option<UdpSocket>,
    try_ends: Instant,
    parts: [(Family, Part); 2],
    /// A server said the name does not exist (NXDOMAIN).
    no_such_name: bool,
}

impl Pending {
    fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.parts
            .iter()
            .flat_map(|(_, p)| match p {
                Part::Done(a) => a.as_slice(),
                Part::Asked(_) => &[],
            })
            .copied()
    }
}

/// What a try came to.
enum Outcome {
    /// Keep waiting.
    Waiting,
    /// Every part is answered (or enough of them).
    Finished,
    /// This try failed: next try, or give up.
    Failed,
}

struct Thread {
    poll: Poll,
    files: Files,
    budget: Budget,
    conf: ResolvConf,
    hosts: Hosts,
    /// `None`: not read yet.
    stamps: [Option<Option<Stamp>>; 2],
    pending: HashMap<Token, Pending>,
    by_id: HashMap<LookupId, Token>,
    next_token: usize,
    incoming: Receiver<Request>,
    answer: Sender<Answer>,
    exit_waker: Arc<Waker>,
    stats: Arc<ExitStats>,
    stop: Arc<AtomicBool>,
    resolving: Arc<AtomicUsize>,
    taken: Arc<AtomicU64>,
}

impl Thread {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut buf = vec![0u8; ANSWER_ROOM];
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = self
                .pending
                .values()
                .map(|p| p.try_ends.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            if let Err(e) = self.poll.poll(&mut events, Some(wait))
                && e.kind() != ErrorKind::Interrupted
            {
                pb_log::warn_limited!(error = %e, "the exit's resolver cannot poll");
                thread::sleep(Duration::from_millis(10));
            }
            let now = Instant::now();
            for event in events.iter() {
                if event.token() != WAKE {
                    self.readable(event.token(), now, &mut buf);
                }
            }
            let mut reloaded = false;
            while let Ok(request) = self.incoming.try_recv() {
                match request {
                    Request::Resolve(job) => {
                        if !reloaded {
                            self.reload();
                            reloaded = true;
                        }
                        self.start(job, now);
                        // After its answer, if it had one at once: the exit then never
                        // sees a lookup answered from the hosts file as still resolving.
                        self.taken.fetch_add(1, Ordering::Release);
                    }
                    Request::Cancel(id) => {
                        if let Some(token) = self.by_id.remove(&id) {
                            self.drop_pending(token);
                        }
                    }
                }
            }
            let due: Vec<Token> = self
                .pending
                .iter()
                .filter(|(_, p)| p.try_ends <= now)
                .map(|(t, _)| *t)
                .collect();
            for token in due {
                self.try_over(token, now);
            }
            self.resolving.store(self.pending.len(), Ordering::Relaxed);
        }
    }

    /// Reads the files again if they changed (a missing file: no names, or the default
    /// server).
    fn reload(&mut self) {
        if let Some(text) = read_if_changed(&self.files.resolv_conf, &mut self.stamps[0]) {
            self.conf = ResolvConf::parse(&text);
            for server in &mut self.conf.servers {
                server.set_port(self.files.port);
            }
        }
        if let Some(text) = read_if_changed(&self.files.hosts, &mut self.stamps[1]) {
            self.hosts = Hosts::parse(&text);
        }
    }

    fn start(&mut self, job: Job, now: Instant) {
        if let Some(addrs) = self.hosts.get(&job.name) {
            let addrs = addrs
                .iter()
                .map(|ip| SocketAddr::new(*ip, job.port))
                .collect();
            self.reply(job.id, Ok(addrs));
            return;
        }
        let Some(name) = QueryName::parse(&job.name) else {
            self.reply(job.id, Err(ErrorKind::InvalidInput.into()));
            return;
        };
        if self.pending.len() >= MAX_PENDING {
            self.reply(job.id, Err(ErrorKind::OutOfMemory.into()));
            return;
        }
        let (timeout, tries) = self.conf.tries(self.budget);
        let token = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1).max(1);
        self.by_id.insert(job.id, token);
        self.pending.insert(
            token,
            Pending {
                id: job.id,
                port: job.port,
                name,
                servers: self.conf.servers.clone(),
                timeout,
                tried: 0,
                tries,
                socket: None,
                try_ends: now,
                parts: [
                    (Family::V4, Part::Asked(None)),
                    (Family::V6, Part::Asked(None)),
                ],
                no_such_name: false,
            },
        );
        self.next_try(token, now);
    }

    /// Sends the next try's queries (for the parts not answered yet) from a fresh socket to
    /// the next server; gives up when the tries are spent.
    fn next_try(&mut self, token: Token, now: Instant) {
        loop {
            let Some(p) = self.pending.get_mut(&token) else {
                return;
            };
            if let Some(mut old) = p.socket.take() {
                let _ = self.poll.registry().deregister(&mut old);
            }
            if p.tried >= p.tries {
                self.finish(token);
                return;
            }
            let at = usize::try_from(p.tried).unwrap_or_default() % p.servers.len().max(1);
            let Some(&server) = p.servers.get(at) else {
                // No server (`ResolvConf::parse` always names one).
                p.tries = 0;
                continue;
            };
            p.tried += 1;
            p.try_ends = now + p.timeout;
            if send_try(p, server, &self.poll, token).is_ok() {
                return;
            }
        }
    }

    fn readable(&mut self, token: Token, now: Instant, buf: &mut [u8]) {
        loop {
            let Some(p) = self.pending.get_mut(&token) else {
                return;
            };
            let Some(socket) = &p.socket else {
                return;
            };
            let outcome = match socket.recv_from(buf) {
                Ok((n, from)) => answer(p, &buf[..n.min(buf.len())], from, &self.stats),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ICMP unreachable and the like: this server will not answer.
                Err(_) => Outcome::Failed,
            };
            match outcome {
                Outcome::Waiting => {}
                Outcome::Finished => return self.finish(token),
                Outcome::Failed => return self.next_try(token, now),
            }
        }
    }

    /// A try's time is up: done with the addresses found, or the next try.
    fn try_over(&mut self, token: Token, now: Instant) {
        let Some(p) = self.pending.get(&token) else {
            return;
        };
        if p.addresses().next().is_some() {
            self.finish(token);
        } else {
            self.next_try(token, now);
        }
    }

    /// Answers the lookup with what it found (IPv4 first): addresses; none, if the name has
    /// none; `NotFound` if there is no such name; `TimedOut` if no server answered.
    fn finish(&mut self, token: Token) {
        let Some(p) = self.pending.get(&token) else {
            return;
        };
        let addrs: Vec<SocketAddr> = p
            .addresses()
            .map(|ip| SocketAddr::new(ip, p.port))
            .collect();
        let result = if !addrs.is_empty() {
            Ok(addrs)
        } else if p.no_such_name {
            Err(ErrorKind::NotFound.into())
        } else if p.parts.iter().all(|(_, part)| part.done()) {
            Ok(addrs)
        } else {
            Err(ErrorKind::TimedOut.into())
        };
        let id = p.id;
        self.drop_pending(token);
        self.by_id.remove(&id);
        self.reply(id, result);
    }

    fn drop_pending(&mut self, token: Token) {
        if let Some(mut p) = self.pending.remove(&token)
            && let Some(socket) = &mut p.socket
        {
            let _ = self.poll.registry().deregister(socket);
        }
    }

    fn reply(&self, id: LookupId, result: std::io::Result<Vec<SocketAddr>>) {
        if self.answer.send((id, result)).is_ok() {
            let _ = self.exit_waker.wake();
        }
    }
}

/// Opens `p`'s socket for one try to `server` and sends the queries of the parts not yet
/// answered, each under a fresh random id.
fn send_try(p: &mut Pending, server: SocketAddr, poll: &Poll, token: Token) -> std::io::Result<()> {
    let any = match server {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let mut socket = UdpSocket::bind(SocketAddr::new(any, 0))?;
    socket.connect(server)?;
    poll.registry()
        .register(&mut socket, token, Interest::READABLE)?;
    for (family, part) in &mut p.parts {
        if let Part::Asked(sent) = part {
            let id = random_id()?;
            let query = wire::encode_query(id, &p.name, *family)
                .ok_or_else(|| std::io::Error::from(ErrorKind::InvalidInput))?;
            *sent = Some(Sent {
                id,
                name: p.name.clone(),
                family: *family,
                server,
            });
            socket.send(&query)?;
        }
    }
    p.socket = Some(socket);
    Ok(())
}

/// A datagram on `p`'s socket: which part it answers, if any, and what the try comes to.
fn answer(p: &mut Pending, datagram: &[u8], from: SocketAddr, stats: &ExitStats) -> Outcome {
    // The part whose id it carries (the others' checks say `Id`), and what it says.
    let checked = p
        .parts
        .iter()
        .enumerate()
        .filter_map(|(i, (_, part))| match part {
            Part::Asked(Some(sent)) => Some((i, wire::check_answer(datagram, from, sent))),
            _ => None,
        })
        .find(|(_, r)| *r != Err(Mismatch::Id));
    let reply = match checked {
        Some((i, Ok(reply))) => (reply, i),
        Some((_, Err(why))) => return refused(why, stats),
        None => return refused(Mismatch::Id, stats),
    };
    match reply {
        (Reply::Addresses(addrs), i) => p.parts[i].1 = Part::Done(addrs),
        (Reply::NoSuchName, _) => {
            // No such name: no addresses of either family.
            p.no_such_name = true;
            for (_, part) in &mut p.parts {
                if !part.done() {
                    *part = Part::Done(Vec::new());
                }
            }
        }
        (Reply::ServerFailed, _) => return Outcome::Failed,
    }
    if p.parts.iter().all(|(_, part)| part.done()) {
        Outcome::Finished
    } else {
        Outcome::Waiting
    }
}

/// A datagram that answers none of a lookup's queries: dropped, counted, and warned about
/// (at most once in 10 s; never with the name).
fn refused(why: Mismatch, stats: &ExitStats) -> Outcome {
    stats.lookup_answers_refused.fetch_add(1, Ordering::Relaxed);
    pb_log::warn_limited!(
        ?why,
        "a DNS answer that does not match its query was dropped"
    );
    Outcome::Waiting
}

fn random_id() -> std::io::Result<u16> {
    let mut id = [0u8; 2];
    getrandom::fill(&mut id).map_err(|_| std::io::Error::from(ErrorKind::Other))?;
    Ok(u16::from_le_bytes(id))
}

/// The text of the file at `path` (its first [`MAX_FILE`] bytes) if it changed since
/// `stamp` (or was never read), which is updated; an empty text if it is gone (or
/// unreadable).
fn read_if_changed(path: &std::path::Path, stamp: &mut Option<Option<Stamp>>) -> Option<String> {
    let now = std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len(), m.ino()));
    if *stamp == Some(now) {
        return None;
    }
    *stamp = Some(now);
    let mut text = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(MAX_FILE).read_to_end(&mut text);
    }
    Some(String::from_utf8_lossy(&text).into_owned())
}
