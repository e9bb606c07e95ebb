//! The applications' SOCKS5 connections: accepted on the listener, each a `Socks` state
//! machine until its CONNECT, then a mixnet stream of the session its username and password
//! pick, with the stream's bytes copied both ways and its end or reset passed on. A UDP
//! ASSOCIATE's connection holds its UDP relay ([`crate::udp_relay`]) open.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    time::{Duration, Instant},
};

use mio::{Interest, Token, net::TcpStream};
use pb_proto::{Action, Reply, SessionId, Socks, StreamEvent, StreamId, Streams, Target};

use crate::{
    Client, Isolation, MAX_SESSIONS,
    session::{Random as _, Session},
};

/// A SOCKS connection whose exit has not answered after this long gets reply 0x06.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// An application's SOCKS connection.
pub(crate) struct App {
    pub(crate) tcp: TcpStream,
    socks: Socks,
    /// The session and stream once connected.
    pub(crate) stream: Option<(usize, StreamId)>,
    opened: bool,
    asked_at: Instant,
    /// Bytes for the application not yet written.
    pub(crate) out: Vec<u8>,
    /// Close once `out` is written.
    pub(crate) closing: bool,
    /// The application finished writing.
    eof: bool,
    /// The exit finished: shut the application's side down once `out` is written.
    finished: bool,
    /// The socket may have bytes: an event came since a read last found none (mio's events
    /// are edge-triggered), so idle applications cost no read each turn.
    pub(crate) may_read: bool,
    /// The UDP relay this connection asked for (UDP ASSOCIATE), which ends with it.
    pub(crate) association: Option<Token>,
}

impl Client {
    pub(crate) fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut tcp, _)) => {
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if self
                        .poll
                        .registry()
                        .register(&mut tcp, token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        self.apps.insert(
                            token,
                            App {
                                tcp,
                                socks: Socks::new(),
                                stream: None,
                                opened: false,
                                asked_at: Instant::now(),
                                out: Vec::new(),
                                closing: false,
                                eof: false,
                                finished: false,
                                may_read: true,
                                association: None,
                            },
                        );
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => return,
            }
        }
    }

    /// The streams of session `id`, if it still runs (lookups and UDP flows name their
    /// session by id: indexes move when a session ends).
    pub(crate) fn streams_of(&mut self, id: SessionId) -> Option<&mut Streams> {
        self.sessions
            .iter_mut()
            .find(|(_, s)| s.id() == id)
            .map(|(_, s)| &mut s.streams)
    }

    /// Queues a datagram on UDP flow `key`: whether it was taken.
    pub(crate) fn send_datagram_on(
        &mut self,
        (session, flow): (SessionId, StreamId),
        data: &[u8],
    ) -> bool {
        self.streams_of(session)
            .is_some_and(|s| s.send_datagram(flow, data))
    }

    /// The session for `isolation`, made if needed.
    pub(crate) fn session_for(&mut self, isolation: Isolation) -> Option<usize> {
        if let Some(i) = self.sessions.iter().position(|(iso, _)| *iso == isolation) {
            return Some(i);
        }
        if self.sessions.len() >= MAX_SESSIONS {
            return None;
        }
        let topology = self.topology.as_ref()?;
        let exits = topology.layer(pb_control::LAYERS - 1);
        let exit = exits.get(self.random.below(exits.len()))?.node;
        let session = Session::new(&mut self.random, self.mailbox, exit, self.profile);
        tracing::debug!(
            sessions = self.sessions.len() + 1,
            mailbox = ?self.mailbox,
            "new session"
        );
        self.sessions.push((isolation, session));
        Some(self.sessions.len() - 1)
    }

    pub(crate) fn app_ready(&mut self, token: Token) {
        let Some(app) = self.apps.get_mut(&token) else {
            return;
        };
        // Read what the application sent, while there is room for it.
        loop {
            if app.eof || app.closing || !app.may_read {
                break;
            }
            let room = match app.stream {
                Some((s, id)) => self
                    .sessions
                    .get(s)
                    .map_or(0, |(_, session)| session.streams.send_room(id)),
                // An association's connection carries nothing more: read to see it close.
                None if app.association.is_some() => 1024,
                None if app.socks.is_done() => 0,
                None => 1024,
            };
            if room == 0 {
                break;
            }
            let want = room.min(self.buf.len());
            match app.tcp.read(&mut self.buf[..want]) {
                Ok(0) => {
                    app.eof = true;
                    match app.stream {
                        Some((s, id)) => {
                            if let Some((_, session)) = self.sessions.get_mut(s) {
                                session.streams.finish(id);
                            }
                        }
                        None => app.closing = true,
                    }
                }
                Ok(n) => match app.stream {
                    Some((s, id)) => {
                        if let Some((_, session)) = self.sessions.get_mut(s) {
                            session.streams.write(id, &self.buf[..n]);
                        }
                    }
                    None if app.association.is_some() => {}
                    None => {
                        let actions = app.socks.input(&self.buf[..n]);
                        let (mut connect, mut associate) = (None, None);
                        for action in actions {
                            match action {
                                Action::Write(bytes) => app.out.extend_from_slice(&bytes),
                                Action::Close => app.closing = true,
                                Action::Connect { target, isolation } => {
                                    connect = Some((target, isolation));
                                }
                                Action::UdpAssociate { from, isolation } => {
                                    associate = Some((from, isolation));
                                }
                            }
                        }
                        if let Some((target, isolation)) = connect {
                            let early = app.socks.take_early_data();
                            self.connect(token, target, isolation, &early);
                            return self.app_ready(token);
                        }
                        if let Some((from, isolation)) = associate {
                            self.associate(token, &from, isolation);
                            return self.app_ready(token);
                        }
                    }
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    app.may_read = false;
                    break;
                }
                Err(_) => {
                    app.closing = true;
                    break;
                }
            }
        }
        self.flush_app(token);
    }

    pub(crate) fn connect(
        &mut self,
        token: Token,
        target: Target,
        isolation: Isolation,
        early: &[u8],
    ) {
        // The target's Debug is scrubbed; the address itself never reaches a log.
        tracing::debug!(?target, early = early.len(), "SOCKS CONNECT");
        let session = self.session_for(isolation);
        let Some(app) = self.apps.get_mut(&token) else {
            return;
        };
        let opened = session.and_then(|s| {
            let id = self.sessions[s].1.streams.open(target)?;
            self.sessions[s].1.streams.write(id, early);
            Some((s, id))
        });
        match opened {
            Some(stream) => {
                app.stream = Some(stream);
                app.asked_at = Instant::now();
            }
            None => {
                // No topology yet, or too many sessions or streams.
                app.out.extend_from_slice(&Reply::GeneralFailure.message());
                app.closing = true;
            }
        }
    }

    /// Stream events, data for applications, timeouts, closes.
    pub(crate) fn serve_apps(&mut self) {
        let (mut resolved, mut vpn_events, mut datagrams) = (Vec::new(), Vec::new(), Vec::new());
        for (index, (_, session)) in self.sessions.iter_mut().enumerate() {
            while let Some(event) = session.streams.poll_event() {
                let (id, reply, reset) = match event {
                    StreamEvent::Opened { stream, reply } => (stream, reply, false),
                    StreamEvent::Reset { stream, reply } => (stream, reply, true),
                    StreamEvent::Resolved { id, answer } => {
                        resolved.push((session.id(), id, answer));
                        continue;
                    }
                    StreamEvent::Datagram { id, bytes } => {
                        datagrams.push(((session.id(), id), bytes));
                        continue;
                    }
                    _ => continue,
                };
                let Some(app) = self
                    .apps
                    .values_mut()
                    .find(|a| a.stream == Some((index, id)))
                else {
                    vpn_events.push((
                        session.id(),
                        id,
                        if reset && reply == Reply::Succeeded {
                            Reply::GeneralFailure
                        } else {
                            reply
                        },
                    ));
                    continue;
                };
                if !app.opened {
                    // The answer to the SOCKS request: success, or why not.
                    let reply = if reset && reply == Reply::Succeeded {
                        Reply::GeneralFailure
                    } else {
                        reply
                    };
                    app.out.extend_from_slice(&reply.message());
                    app.opened = true;
                    if reply == Reply::Succeeded {
                        continue;
                    }
                }
                app.closing = true;
                app.stream = None;
            }
        }
        for (session, id, answer) in resolved {
            self.resolved(session, id, &answer);
        }
        for (key, bytes) in datagrams {
            self.datagram_back(key, &bytes);
        }
        for (session, id, reply) in vpn_events {
            // A UDP flow of a SOCKS association, refused or ended: forgotten.
            if reply != Reply::Succeeded && self.flow_ended((session, id)) {
                continue;
            }
            self.vpn_stream_event(session, id, reply);
        }
        self.expire_lookups();
        let tokens: Vec<Token> = self.apps.keys().copied().collect();
        for token in tokens {
            if let Some(app) = self.apps.get_mut(&token)
                && let Some((s, id)) = app.stream
            {
                if let Some((_, session)) = self.sessions.get_mut(s) {
                    // Take what the exit sent, up to a bounded buffer toward the app.
                    while app.out.len() < 256 * 1024 {
                        let n = session.streams.read(id, &mut self.buf);
                        if n == 0 {
                            break;
                        }
                        app.out.extend_from_slice(&self.buf[..n]);
                    }
                    let drained = session.streams.readable(id) == 0;
                    if (session.streams.peer_finished(id) && drained)
                        || (!session.streams.contains(id) && app.opened)
                    {
                        app.finished = true;
                    }
                } else {
                    app.closing = true;
                }
                if !app.opened && app.asked_at.elapsed() > OPEN_TIMEOUT {
                    app.out.extend_from_slice(&Reply::TtlExpired.message());
                    app.closing = true;
                    if let Some((_, session)) = self.sessions.get_mut(s) {
                        session.streams.reset(id, Reply::TtlExpired);
                    }
                    app.stream = None;
                }
            }
            self.app_ready(token);
        }
        self.retire_broken();
    }

    pub(crate) fn retire_broken(&mut self) {
        if self.sessions.iter().any(|(_, s)| s.is_broken()) {
            self.retire_sessions();
        }
    }

    /// Writes what waits for the application; closes it when done.
    pub(crate) fn flush_app(&mut self, token: Token) {
        let Some(app) = self.apps.get_mut(&token) else {
            return;
        };
        while !app.out.is_empty() {
            match app.tcp.write(&app.out) {
                Ok(0) => break,
                Ok(n) => {
                    app.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    app.closing = true;
                    app.out.clear();
                }
            }
        }
        let done = app.closing || (app.finished && app.eof);
        if app.finished && !app.closing {
            let _ = app.tcp.shutdown(std::net::Shutdown::Write);
        }
        if done {
            if let Some((s, id)) = app.stream
                && let Some((_, session)) = self.sessions.get_mut(s)
                && session.streams.contains(id)
            {
                session.streams.finish(id);
            }
            if let Some(mut app) = self.apps.remove(&token) {
                let _ = self.poll.registry().deregister(&mut app.tcp);
                if let Some(association) = app.association {
                    self.dissociate(association);
                }
            }
        }
    }
}
