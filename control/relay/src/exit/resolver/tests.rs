//! The resolver with real sockets on loopback, against a fake name server that answers some
//! names at once and never answers names starting with `slow`. The exit's queue
//! ([`Lookups`]) runs on a virtual clock; only the resolver's sockets are real, and nothing
//! asserts on wall-clock time (a generous guard only stops a hung test).
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{
    collections::{HashMap, HashSet},
    net::{Ipv4Addr, Ipv6Addr, UdpSocket as StdUdp},
    path::Path,
    sync::atomic::AtomicU64,
};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{
        RData,
        rdata::{A, AAAA},
    },
};
use pb_proto::{Reply as Socks, SessionId, StreamId};

use super::*;
use crate::exit::{
    limits::Refusal,
    lookups::{LOOKUP_DEADLINE, Lookups, MAX_LOOKUPS, PREEMPT_AFTER, RESOLVING},
    resolver::wire::tests::answer,
};

/// What a spoofed answer would put in: never seen in a result.
const EVIL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);
/// Longest the test waits for something before it fails (a guard, not a measurement).
const GUARD: Duration = Duration::from_secs(60);

/// A fake name server on 127.0.0.1: `hostN.pb.test` is 192.0.2.N and 2001:db8::N, each
/// answer preceded by two forged ones (a wrong id, another question) carrying [`EVIL`];
/// names starting with `slow` are never answered; no other name exists.
struct FakeServer {
    port: u16,
    stop: Arc<AtomicBool>,
    slow_queries: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    fn start() -> Self {
        let socket = StdUdp::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let slow_queries = Arc::new(AtomicU64::new(0));
        let (stopped, slow) = (stop.clone(), slow_queries.clone());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let query = &buf[..n];
                let m = Message::from_vec(query).unwrap();
                let name = m.queries[0].name.to_ascii().to_ascii_lowercase();
                let v4 = m.queries[0].query_type == hickory_proto::rr::RecordType::A;
                if name.starts_with("slow") {
                    slow.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let Some(n) = name
                    .strip_prefix("host")
                    .and_then(|r| r.strip_suffix(".pb.test."))
                    .and_then(|n| n.parse::<u8>().ok())
                else {
                    let nx = answer(query, ResponseCode::NXDomain, &[]);
                    socket.send_to(&nx, from).unwrap();
                    continue;
                };
                let data = if v4 {
                    RData::A(A(Ipv4Addr::new(192, 0, 2, n)))
                } else {
                    RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n.into())))
                };
                let evil = if v4 {
                    RData::A(A(EVIL))
                } else {
                    RData::AAAA(AAAA(EVIL.to_ipv6_mapped()))
                };
                // A forged answer under another id, and one about another question.
                let mut wrong_id = answer(query, ResponseCode::NoError, &[(&name, evil.clone())]);
                wrong_id[0] ^= 0x55;
                socket.send_to(&wrong_id, from).unwrap();
                let mut other = Message::from_vec(query).unwrap();
                other.queries[0].name =
                    hickory_proto::rr::Name::from_ascii("bank.example.").unwrap();
                let other = answer(
                    &other.to_vec().unwrap(),
                    ResponseCode::NoError,
                    &[("bank.example.", evil)],
                );
                socket.send_to(&other, from).unwrap();
                let good = answer(query, ResponseCode::NoError, &[(&name, data)]);
                socket.send_to(&good, from).unwrap();
            }
        });
        Self {
            port,
            stop,
            slow_queries,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A directory of its own for the test's files, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pb-resolver-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The resolver against `server`, with the hosts file's names, and so many tries that it
/// never gives up on a slow name while the test runs (only the exit's deadline ends
/// those), and a query lost in a full socket buffer is asked again a second later.
fn resolver(dir: &Dir, server: &FakeServer, hosts: &str) -> (Resolver, Poll, Arc<ExitStats>) {
    let files = Files {
        resolv_conf: dir.write(
            "resolv.conf",
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1000\n",
        ),
        hosts: dir.write("hosts", hosts),
        port: server.port,
    };
    let budget = Budget {
        max_timeout: Duration::from_secs(1),
        max_tries: 1000,
    };
    let poll = Poll::new().unwrap();
    let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
    let stats = Arc::new(ExitStats::default());
    let r = Resolver::start(files, budget, waker, stats.clone()).unwrap();
    (r, poll, stats)
}

/// A stream of a session.
type Stream = (SessionId, StreamId);

fn session(n: u32) -> SessionId {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_le_bytes());
    SessionId(id)
}

/// Waits (on the exit's poll) for the resolver's next answers.
fn answers(r: &Resolver, poll: &mut Poll) -> Vec<Answer> {
    let mut events = Events::with_capacity(8);
    let _ = poll.poll(&mut events, Some(Duration::from_millis(100)));
    std::iter::from_fn(|| r.try_answer()).collect()
}

fn host(n: u8, port: u16) -> Vec<SocketAddr> {
    vec![
        SocketAddr::new(Ipv4Addr::new(192, 0, 2, n).into(), port),
        SocketAddr::new(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n.into()).into(),
            port,
        ),
    ]
}

/// Slow names from many sessions fill every place the exit has, and more keep coming; the
/// honest lookups asked after them take places from the sessions holding the most, get
/// slots from slow names resolving for [`PREEMPT_AFTER`], and are all answered, with the
/// right addresses and never a forged one, before any slow one is answered; the slow ones
/// are answered 0x04 (preempted, or at their deadline), the resolver drops their sockets, and
/// the places they held take new lookups at once.
#[test]
fn slow_names_do_not_hold_up_honest_lookups() {
    let dir = Dir::new("slow");
    let server = FakeServer::start();
    let (r, mut poll, stats) = resolver(&dir, &server, "192.0.2.250 fromhosts.pb.test\n");
    let mut l = Lookups::new(RESOLVING, MAX_LOOKUPS, LOOKUP_DEADLINE);
    let zero = Duration::ZERO;
    let mut slow = HashSet::new();
    let mut preempted = HashSet::new();
    // Each honest lookup's number and, once answered, its addresses.
    let mut honest: HashMap<Stream, (u8, Option<Vec<SocketAddr>>)> = HashMap::new();
    let honest_count = 20;
    // Attackers: slow names in 8-lookup sessions, as many as the exit holds and 300 more.
    let mut s = 0;
    let mut refused = 0;
    for i in 0..MAX_LOOKUPS + 300 {
        if i % 8 == 0 {
            s += 1;
        }
        let key = (session(s), StreamId(i as u32));
        match l.submit(key.0, key.1, format!("slow{s}-{i}.pb.test"), 80, zero) {
            Ok(()) => assert!(slow.insert(key)),
            Err(Refusal::Lookups) => refused += 1,
            Err(other) => panic!("{other:?}"),
        }
        while let Some(key) = l.poll_preempted() {
            assert!(slow.remove(&key) && preempted.insert(key));
        }
    }
    assert_eq!(slow.len(), MAX_LOOKUPS, "the exit is full of slow names");
    assert!(
        refused > 0,
        "sessions holding as many as the rest are refused"
    );
    let resolving = std::iter::from_fn(|| l.next_job(zero))
        .map(|job| r.resolve(job))
        .count();
    assert_eq!(resolving, RESOLVING, "every slot resolving a slow name");
    // Honest clients, each in its own session, after the slow names: each takes the place
    // of a lookup of the session holding the most.
    for n in 0..honest_count {
        let key = (session(1000 + n as u32), StreamId(1));
        let name = match n {
            0 => "fromhosts.pb.test".to_owned(),
            1 => "nx.pb.test".to_owned(),
            _ => format!("host{n}.pb.test"),
        };
        l.submit(key.0, key.1, name, 443, zero).unwrap();
        honest.insert(key, (n as u8, None));
        while let Some(key) = l.poll_preempted() {
            assert!(
                slow.remove(&key) && preempted.insert(key),
                "an honest one preempted"
            );
        }
    }
    // The resolver takes the slow names (their half second counts from then)...
    let guard = Instant::now() + GUARD;
    while r.taken() < RESOLVING as u64 {
        assert!(
            Instant::now() < guard,
            "the resolver did not take its lookups"
        );
        thread::sleep(Duration::from_millis(1));
    }
    l.taken(r.taken(), zero);
    // ...and half a second on, give their slots to the waiting lookups.
    let now = PREEMPT_AFTER;
    let dispatch = |l: &mut Lookups| {
        std::iter::from_fn(|| l.next_job(now))
            .map(|job| r.resolve(job))
            .count()
    };
    assert!(dispatch(&mut l) >= honest_count);
    let mut cancelled = 0;
    while let Some(id) = l.poll_cancelled() {
        r.cancel(id);
        cancelled += 1;
    }
    while let Some(key) = l.poll_preempted() {
        assert!(
            slow.remove(&key) && preempted.insert(key),
            "an honest one preempted"
        );
    }
    assert!(cancelled >= honest_count, "slow names gave up their slots");
    // Until every honest lookup is answered, no slow one is.
    let guard = Instant::now() + GUARD;
    while honest.values().any(|(_, got)| got.is_none()) {
        assert!(Instant::now() < guard, "honest lookups not answered");
        for (id, result) in answers(&r, &mut poll) {
            let key = l.answered(id).unwrap();
            assert!(!slow.contains(&key), "a slow name was answered first");
            honest.get_mut(&key).unwrap().1 = Some(result.unwrap_or_default());
        }
        dispatch(&mut l);
        while let Some(id) = l.poll_cancelled() {
            r.cancel(id);
        }
        while let Some(key) = l.poll_preempted() {
            assert!(
                slow.remove(&key) && preempted.insert(key),
                "an honest one preempted"
            );
        }
    }
    for (n, got) in honest.values() {
        let want = match *n {
            0 => vec![SocketAddr::from((Ipv4Addr::new(192, 0, 2, 250), 443))],
            1 => vec![],
            n => host(n, 443),
        };
        assert_eq!(got.as_ref().unwrap(), &want, "honest lookup {n}");
        assert!(
            !got.as_ref()
                .unwrap()
                .iter()
                .any(|a| a.ip() == IpAddr::V4(EVIL))
        );
    }
    // Two forged answers per query of the 18 names the server knows, all refused.
    assert!(stats.lookup_answers_refused.load(Ordering::Relaxed) >= 2 * 2 * 18);

    // The slow ones: nothing before their deadline, then all of them, 0x04.
    assert!(
        l.expire(LOOKUP_DEADLINE - Duration::from_millis(1))
            .is_empty()
    );
    let expired = l.expire(LOOKUP_DEADLINE);
    assert_eq!(expired.len(), slow.len());
    assert!(expired.iter().all(|k| slow.contains(k)));
    assert_eq!(Refusal::LookupTimedOut.reply(), Socks::HostUnreachable);
    assert_eq!(l.len(), 0, "every place is free");
    let mut cancelled = 0;
    while let Some(id) = l.poll_cancelled() {
        r.cancel(id);
        cancelled += 1;
    }
    assert!(cancelled > 0, "the resolving ones go back to the resolver");
    assert!(
        server.slow_queries.load(Ordering::Relaxed) > 0,
        "slow names were asked"
    );
    // The resolver drops them (and their sockets), and never answers them.
    while r.resolving() > 0 {
        assert!(Instant::now() < guard, "slow lookups not dropped");
        assert!(answers(&r, &mut poll).is_empty());
    }
    // A new lookup goes at once and is answered.
    let later = LOOKUP_DEADLINE + Duration::from_secs(1);
    l.submit(
        session(5000),
        StreamId(9),
        "host7.pb.test.".into(),
        8080,
        later,
    )
    .unwrap();
    let job = l.next_job(later).unwrap();
    let id = job.id;
    r.resolve(job);
    loop {
        assert!(Instant::now() < guard, "the next lookup not answered");
        if let Some((got, result)) = answers(&r, &mut poll).pop() {
            assert_eq!(got, id);
            assert_eq!(result.unwrap(), host(7, 8080));
            break;
        }
    }
}

/// The hosts file is read again when it changes, and a name that is no domain name fails
/// at once without a query.
#[test]
fn hosts_changes_are_seen_and_bad_names_fail_at_once() {
    let dir = Dir::new("hosts");
    let server = FakeServer::start();
    let (r, mut poll, _) = resolver(&dir, &server, "192.0.2.1 one.pb.test\n");
    let ask = |id: LookupId, name: &str, poll: &mut Poll| {
        r.resolve(Job {
            id,
            name: name.into(),
            port: 80,
        });
        let guard = Instant::now() + GUARD;
        loop {
            assert!(Instant::now() < guard, "no answer");
            if let Some((got, result)) = answers(&r, poll).pop() {
                assert_eq!(got, id);
                return result.map_err(|e| e.kind());
            }
        }
    };
    let one = |a: [u8; 4]| Ok(vec![SocketAddr::from((a, 80))]);
    assert_eq!(ask(1, "ONE.pb.test.", &mut poll), one([192, 0, 2, 1]));
    assert_eq!(
        ask(2, "two.pb.test", &mut poll),
        Err(ErrorKind::NotFound),
        "not in the file: asks the server, which has no such name"
    );
    // Another length, so the change shows even within the file system's time resolution.
    std::fs::write(
        Path::new(&dir.0).join("hosts"),
        "192.0.2.22 two.pb.test\n# and more\n",
    )
    .unwrap();
    assert_eq!(ask(3, "two.pb.test", &mut poll), one([192, 0, 2, 22]));
    assert_eq!(ask(4, "bad..name", &mut poll), Err(ErrorKind::InvalidInput));
    assert_eq!(
        ask(5, &"x".repeat(300), &mut poll),
        Err(ErrorKind::InvalidInput)
    );
}
