#![expect(clippy::unwrap_used, reason = "tests")]

use pb_proto::{Side, StreamEvent, Target, streams::INITIAL_CREDIT};

use super::*;

fn session(n: u16) -> SessionId {
    let mut id = [0u8; 16];
    id[..2].copy_from_slice(&n.to_be_bytes());
    SessionId(id)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn caps(sessions: usize, connections: usize) -> Caps {
    Caps {
        sessions,
        connections,
        session_connections: 2,
        session_lookups: 2,
    }
}

/// A table of `caps` with sessions 1..=n heard at seconds 1..=n.
fn table(caps: Caps, n: u16) -> (SessionTable<u16>, Arc<ExitStats>) {
    let stats = Arc::new(ExitStats::default());
    let mut t = SessionTable::new(caps, stats.clone());
    for i in 1..=n {
        assert_eq!(
            t.admit(session(i), secs(u64::from(i)), || i).copied(),
            Some(i)
        );
    }
    (t, stats)
}

fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// A full table makes room by forgetting, among idle sessions, the one heard from longest
/// ago once none is younger than [`YOUNG`], where hearing from a session again makes it
/// recent.
#[test]
fn a_full_table_evicts_the_least_recently_heard_idle_session() {
    let (mut t, stats) = table(caps(3, 10), 3);
    let later = YOUNG + secs(10);
    // Session 1 speaks again: session 2 is now the one heard from longest ago.
    t.admit(session(1), later, || 0).unwrap();
    assert_eq!(t.admit(session(4), later + secs(1), || 4).copied(), Some(4));
    assert!(
        t.get_mut(&session(2)).is_none(),
        "the least recently heard went"
    );
    assert!(t.get_mut(&session(1)).is_some() && t.get_mut(&session(3)).is_some());
    assert_eq!(t.len(), 3);
    assert_eq!(load(&stats.sessions_evicted), 1);
}

/// A flood of fresh session ids takes the place of the youngest idle session, one for one,
/// never refused while one is idle, and never pushes out an established session that is
/// idle between two of its user's requests.
#[test]
fn fresh_sessions_push_out_each_other_not_established_ones() {
    let (mut t, stats) = table(caps(3, 10), 2);
    let start = YOUNG + secs(100);
    for i in 3..1000 {
        let now = start + Duration::from_millis(u64::from(i));
        assert!(t.admit(session(i), now, || i).is_some());
    }
    assert_eq!(t.len(), 3);
    assert!(t.get_mut(&session(1)).is_some() && t.get_mut(&session(2)).is_some());
    assert!(t.get_mut(&session(999)).is_some());
    assert_eq!(load(&stats.sessions_evicted), 996);
    assert_eq!(load(&stats.sessions_refused), 0);
    assert_eq!(load(&stats.sessions), 2 + 997);
    // Once the flood's last session is old too, the one heard from longest ago goes.
    t.admit(session(2), start + YOUNG, || 0).unwrap();
    assert!(t.admit(session(1000), start + YOUNG * 2, || 0).is_some());
    assert!(t.get_mut(&session(1)).is_none());
    assert!(t.get_mut(&session(2)).is_some() && t.get_mut(&session(999)).is_some());
}

/// A session with a connection or a lookup is not evicted for a new one, however long ago it
/// was heard; when every session holds one, the new session is refused and counted, and it
/// is admitted once one lets go.
#[test]
fn sessions_with_connections_or_lookups_are_kept() {
    let (mut t, stats) = table(caps(3, 10), 3);
    let later = YOUNG + secs(10);
    t.open_connection(session(1)).unwrap();
    t.start_lookup(session(2)).unwrap();
    assert!(t.admit(session(4), later, || 4).is_some());
    assert!(t.get_mut(&session(3)).is_none(), "the only idle one went");
    t.open_connection(session(4)).unwrap();
    assert_eq!(t.admit(session(5), later + secs(1), || 5).copied(), None);
    assert_eq!(load(&stats.sessions_refused), 1);
    assert_eq!(load(&stats.sessions_evicted), 1);
    // Session 1, the oldest, lets go of its connection: it is the one evicted next.
    t.close_connection(session(1));
    assert!(t.admit(session(5), later + secs(2), || 5).is_some());
    assert!(t.get_mut(&session(1)).is_none());
    assert!(t.get_mut(&session(2)).is_some() && t.get_mut(&session(4)).is_some());
    // A lookup ended makes its session idle, at when it was last heard; session 5 is
    // young, and goes first.
    t.end_lookup(session(2));
    assert!(t.admit(session(6), later + secs(3), || 6).is_some());
    assert!(t.get_mut(&session(5)).is_none());
    assert!(t.get_mut(&session(2)).is_some());
    assert_eq!(load(&stats.sessions_evicted), 3);
}

/// Connections are capped per session and in all, lookups per session; each refusal says
/// which cap, a closed connection or ended lookup frees its place, and a forgotten session's
/// connections no longer count.
#[test]
fn connections_and_lookups_are_capped_per_session_and_in_all() {
    let (mut t, _) = table(caps(10, 3), 3);
    t.open_connection(session(1)).unwrap();
    t.open_connection(session(1)).unwrap();
    assert_eq!(
        t.open_connection(session(1)),
        Err(Refusal::SessionConnections)
    );
    t.open_connection(session(2)).unwrap();
    assert_eq!(t.connections(), 3);
    assert_eq!(t.open_connection(session(3)), Err(Refusal::Connections));
    t.close_connection(session(2));
    t.open_connection(session(3)).unwrap();
    assert_eq!(t.remove(&session(1)), Some(1));
    assert_eq!(t.connections(), 1);
    t.close_connection(session(1)); // its connections closing later change nothing
    assert_eq!(t.connections(), 1);
    t.start_lookup(session(2)).unwrap();
    t.start_lookup(session(2)).unwrap();
    assert_eq!(t.start_lookup(session(2)), Err(Refusal::SessionLookups));
    t.end_lookup(session(2));
    t.start_lookup(session(2)).unwrap();
    assert_eq!(
        t.open_connection(session(9)),
        Err(Refusal::SessionConnections),
        "no session, no connection"
    );
}

/// A client and an exit with a stream between them; the exit has seen its open.
fn opened_stream() -> (Streams, Streams, StreamId) {
    let mut client = Streams::new(Side::Client);
    let mut exit = Streams::new(Side::Exit);
    let id = client.open(Target::Name("x.example".into(), 80)).unwrap();
    let mut out = Vec::new();
    client.fill(&mut out, 1000);
    exit.handle(&out).unwrap();
    assert!(matches!(exit.poll_event(), Some(StreamEvent::Open { .. })));
    (client, exit, id)
}

/// The reply the client sees for its stream.
fn client_sees(client: &mut Streams, exit: &mut Streams) -> Option<StreamEvent> {
    let mut out = Vec::new();
    exit.fill(&mut out, 1000);
    client.handle(&out).unwrap();
    client.poll_event()
}

/// Each refusal reaches the client as its SOCKS reply (0x04 for a name past its deadline,
/// 0x01 for the caps) and is counted under its own name.
#[test]
fn refusals_answer_their_reply_and_count() {
    let stats = ExitStats::default();
    let cases = [
        (Refusal::SessionConnections, Reply::GeneralFailure),
        (Refusal::Connections, Reply::GeneralFailure),
        (Refusal::SessionLookups, Reply::GeneralFailure),
        (Refusal::Lookups, Reply::GeneralFailure),
        (Refusal::LookupTimedOut, Reply::HostUnreachable),
    ];
    for (why, reply) in cases {
        let (mut client, mut exit, stream) = opened_stream();
        refuse_stream(&mut exit, stream, why, &stats);
        assert_eq!(
            client_sees(&mut client, &mut exit),
            Some(StreamEvent::Opened { stream, reply }),
            "{why:?}"
        );
    }
    let (mut client, mut exit, stream) = opened_stream();
    exit.accept(stream);
    client_sees(&mut client, &mut exit);
    reset_stream(&mut exit, stream, Refusal::Buffered, &stats);
    assert_eq!(
        client_sees(&mut client, &mut exit),
        Some(StreamEvent::Reset {
            stream,
            reply: Reply::GeneralFailure
        })
    );
    let named: Vec<(String, u64)> = stats.metrics();
    for name in [
        "refused_session_connections",
        "refused_connections",
        "refused_session_lookups",
        "refused_lookups",
        "lookup_timeouts",
        "reset_buffered",
    ] {
        let metric = format!("pb_exit_{name}_total");
        assert!(named.contains(&(metric.clone(), 1)), "{metric}: {named:?}");
    }
}

/// A stream reads from its destination only up to its share of the buffer towards its
/// client: a client that takes nothing stops its destination at the share.
#[test]
fn reading_stops_at_the_streams_share() {
    let share = 16 * 1024;
    assert_eq!(read_room(SEND_BUFFER, share), share, "empty");
    assert_eq!(read_room(SEND_BUFFER - 10_000, share), share - 10_000);
    assert_eq!(read_room(SEND_BUFFER - share, share), 0, "at its share");
    assert_eq!(read_room(1000, share), 0, "over its share");
    assert_eq!(read_room(0, share), 0, "closing or full");
    assert_eq!(read_room(SEND_BUFFER - 5, SEND_BUFFER), SEND_BUFFER - 5);
    // With a real stream: the exit reads in whatever room there is, and stops at the share.
    let (_client, mut exit, stream) = opened_stream();
    exit.accept(stream);
    let mut held = 0;
    loop {
        let room = read_room(exit.send_room(stream), share).min(3000);
        if room == 0 {
            break;
        }
        held += exit.write(stream, &vec![7u8; room]);
    }
    assert_eq!(held, share);
    // The shares add up to no more than the budget, within the per-stream bounds.
    assert_eq!(stream_buffer(DEFAULT_MAX_CONNECTIONS), 16 * 1024);
    assert!(
        DEFAULT_MAX_CONNECTIONS * stream_buffer(DEFAULT_MAX_CONNECTIONS) <= TO_CLIENTS_BUFFERED
    );
    assert_eq!(stream_buffer(10), SEND_BUFFER);
    assert_eq!(stream_buffer(1 << 20), MIN_STREAM_BUFFER);
    assert_eq!(stream_buffer(0), SEND_BUFFER);
}

/// Over the budget towards destinations, the streams holding the most are reset until the
/// rest fit; within it, none.
#[test]
fn over_the_budget_the_largest_holders_are_reset() {
    let credit = INITIAL_CREDIT as usize;
    assert!(over_budget(vec![(credit, 'a'), (credit, 'b')], 2 * credit).is_empty());
    assert_eq!(
        over_budget(
            vec![(100, 'a'), (credit, 'b'), (5000, 'c'), (credit - 1, 'd')],
            credit
        ),
        vec!['b', 'd']
    );
    assert_eq!(over_budget(vec![(10, 'a')], 0), vec!['a']);
    assert!(over_budget(Vec::<(usize, char)>::new(), 0).is_empty());
}

/// The connection cap stays below the open-files limit by the reserve (or at half a small
/// limit), and the limit is read from `/proc/self/limits`' text.
#[test]
fn the_connection_cap_fits_the_open_files_limit() {
    assert_eq!(connection_cap(4096, None), 4096);
    assert_eq!(connection_cap(4096, Some(1024)), 1024 - 256);
    assert_eq!(connection_cap(4096, Some(1 << 20)), 4096);
    assert_eq!(connection_cap(4096, Some(300)), 150);
    assert_eq!(connection_cap(4096, Some(1)), 1);
    assert_eq!(connection_cap(0, Some(1 << 20)), 1);
    let limits = "\
Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
";
    assert_eq!(parse_open_files_limit(limits), Some(1024));
    let unlimited = limits.replace("1024                 524288", "unlimited   unlimited");
    assert_eq!(parse_open_files_limit(&unlimited), None);
    assert_eq!(
        parse_open_files_limit("Max processes 10 10 processes"),
        None
    );
    assert_eq!(parse_open_files_limit(""), None);
}

/// A full exit takes back a quiet session's connections first, then a connection of
/// whoever holds the most; a session holding about as few as the asker keeps them.
#[test]
fn a_full_exit_reclaims_from_quiet_sessions_then_from_the_largest_holder() {
    let caps = Caps {
        sessions: 64,
        connections: 8,
        session_connections: 64,
        session_lookups: 64,
    };
    let mut t: SessionTable<u16> = SessionTable::new(caps, Arc::new(ExitStats::default()));
    // An attacker's session, quiet since t = 0, holds 5; a talking one holds 3.
    t.admit(session(1), secs(0), || 1).unwrap();
    for _ in 0..5 {
        t.open_connection(session(1)).unwrap();
    }
    t.admit(session(2), secs(100), || 2).unwrap();
    for _ in 0..3 {
        t.open_connection(session(2)).unwrap();
    }
    t.admit(session(3), secs(100), || 3).unwrap();
    assert_eq!(t.open_connection(session(3)), Err(Refusal::Connections));
    assert_eq!(
        t.reclaim(session(3), secs(100), RECLAIM_QUIET),
        Some(Reclaim::Session(session(1)))
    );
    // Within the quiet time, the largest holder gives one up.
    assert_eq!(
        t.reclaim(session(3), secs(10), RECLAIM_QUIET),
        Some(Reclaim::ConnectionOf(session(1)))
    );
    // Once the holders hold about as few as the asker, it is refused.
    t.remove(&session(1));
    t.admit(session(4), secs(100), || 4).unwrap();
    for _ in 0..2 {
        t.open_connection(session(3)).unwrap();
    }
    for _ in 0..3 {
        t.open_connection(session(4)).unwrap();
    }
    assert_eq!(t.connections(), 8);
    assert_eq!(t.reclaim(session(3), secs(110), RECLAIM_QUIET), None);
}

/// A table full of sessions that all hold connections makes room for a new session by
/// forgetting one quiet over [`RECLAIM_QUIET`], and only such a one.
#[test]
fn a_full_table_of_busy_sessions_gives_up_a_quiet_one() {
    let caps = Caps {
        sessions: 2,
        connections: 8,
        session_connections: 4,
        session_lookups: 4,
    };
    let mut t: SessionTable<u16> = SessionTable::new(caps, Arc::new(ExitStats::default()));
    t.admit(session(1), secs(0), || 1).unwrap();
    t.open_connection(session(1)).unwrap();
    t.admit(session(2), secs(20), || 2).unwrap();
    t.open_connection(session(2)).unwrap();
    // Room left for a held session, and none needed for one already held.
    assert_eq!(t.quiet_to_evict(session(1), secs(100), RECLAIM_QUIET), None);
    // Full, and session 1 quiet for 25 s: not yet.
    assert_eq!(t.quiet_to_evict(session(3), secs(25), RECLAIM_QUIET), None);
    assert!(t.admit(session(3), secs(25), || 3).is_none());
    // Quiet for 31 s: it goes (the caller forgets it), and the new one is admitted.
    assert_eq!(
        t.quiet_to_evict(session(3), secs(31), RECLAIM_QUIET),
        Some(session(1))
    );
    t.remove(&session(1));
    assert!(t.admit(session(3), secs(31), || 3).is_some());
    assert_eq!(t.connections(), 1);
}
