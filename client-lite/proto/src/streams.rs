//! The streams of one session: many TCP connections multiplexed over one reliable channel,
//! each with its own flow control, sans-IO. The same type serves both ends; the client opens
//! streams, the exit accepts or refuses them.
//!
//! Flow control is by credit: each side may send a stream [`INITIAL_CREDIT`] bytes, and the
//! receiver grants more as its application reads. So an exit never reads from a destination
//! faster than the client's application drains it, and a receiver's buffer per stream is
//! bounded; a peer that sends past its credit has the stream reset.

use std::collections::{BTreeMap, VecDeque};

use crate::{
    dns::Family,
    frame::{DATA_OVERHEAD, DATAGRAM_OVERHEAD, Frame, FrameError, Resolution, StreamId, parse},
    socks::{Reply, Target},
};

/// Bytes a side may send on a new stream before the receiver grants more.
pub const INITIAL_CREDIT: u32 = 256 * 1024;
/// Most streams open at once in a session.
pub const MAX_STREAMS: usize = 256;
/// Bytes [`Streams::write`] takes per stream before they are framed.
pub const SEND_BUFFER: usize = 64 * 1024;
/// Most UDP flows a session has open at once; the exit refuses more.
pub const MAX_FLOWS: usize = 64;
/// Datagrams a flow holds to send; more are dropped (UDP may lose them).
pub const FLOW_QUEUE: usize = 32;
/// The largest datagram carried (the largest UDP payload over IPv4).
pub const MAX_DATAGRAM: usize = 65_507;
/// The smallest fragment worth a frame: less room than this waits for the next message.
const MIN_FRAGMENT: usize = 64;

/// Most names a session has being resolved at once (beside its streams); the exit answers
/// more with [`Resolution::Failed`].
pub const MAX_RESOLVES: usize = 64;

/// Which end of the session this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Opens streams.
    Client,
    /// Accepts them.
    Exit,
}

/// What happened to the streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// (Exit) the client asks for a connection; answer with [`Streams::accept`] or
    /// [`Streams::refuse`].
    Open {
        /// The stream.
        stream: StreamId,
        /// Where to.
        target: Target,
    },
    /// (Client) the exit's answer: [`Reply::Succeeded`] or why not. A refused stream is gone.
    Opened {
        /// The stream.
        stream: StreamId,
        /// The answer.
        reply: Reply,
    },
    /// Bytes are ready to [`read`](Streams::read).
    Readable(StreamId),
    /// The peer writes no more; what it wrote before is readable.
    Finished(StreamId),
    /// The stream was reset (by the peer, or here for a protocol violation); it is gone.
    Reset {
        /// The stream.
        stream: StreamId,
        /// Why.
        reply: Reply,
    },
    /// (Exit) the client asks for a name's addresses; answer with [`Streams::answer`].
    Resolve {
        /// The lookup.
        id: StreamId,
        /// A or AAAA.
        family: Family,
        /// The name (a user's destination: never logged).
        name: Name,
    },
    /// (Exit) the client asks for a UDP flow to `target`; answer with [`Streams::accept`] or
    /// [`Streams::refuse`]. (Client: the exit's answer comes as [`StreamEvent::Opened`].)
    UdpOpen {
        /// The flow.
        id: StreamId,
        /// Where to.
        target: Target,
    },
    /// A whole datagram of flow `id` from the peer.
    Datagram {
        /// The flow.
        id: StreamId,
        /// Its bytes (a user's payload: never logged).
        bytes: Vec<u8>,
    },
    /// (Client) what the exit found for [`Streams::resolve`]'s name.
    Resolved {
        /// The lookup.
        id: StreamId,
        /// The outcome.
        answer: Resolution,
    },
}

/// A UDP flow.
#[derive(Default)]
struct Flow {
    /// (Client) the open frame still to send.
    open: Option<Target>,
    /// (Exit) the answer still to send.
    opened: Option<u8>,
    /// Datagrams to send, the first one's first `sent` bytes sent already as fragments.
    out: VecDeque<Vec<u8>>,
    sent: usize,
    /// The peer's datagram being put together from its fragments.
    partial: Vec<u8>,
    /// (Exit) refused: gone once the answer is out.
    closing: bool,
}

/// A name the client asked the exit to resolve. `Debug` prints `[scrubbed]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Name(pub String);

impl core::fmt::Debug for Name {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Name([scrubbed])")
    }
}

#[derive(Default)]
struct Stream {
    open: Option<Target>,
    opened: Option<u8>,
    send: VecDeque<u8>,
    credit: u64,
    fin_pending: bool,
    fin_sent: bool,
    recv: VecDeque<u8>,
    /// Bytes read since the last grant, and the grant waiting to be sent.
    consumed: u32,
    grant: u32,
    fin_received: bool,
    /// Gone once its last frame is out.
    closing: bool,
}

impl Stream {
    fn new() -> Self {
        Self {
            credit: u64::from(INITIAL_CREDIT),
            ..Self::default()
        }
    }

    fn finished_both_ways(&self) -> bool {
        self.fin_sent && self.fin_received && self.recv.is_empty()
    }
}

/// One session's streams.
pub struct Streams {
    side: Side,
    streams: BTreeMap<StreamId, Stream>,
    next_id: u32,
    /// Round-robin position for data.
    cursor: StreamId,
    events: VecDeque<StreamEvent>,
    /// Streams reset by this side whose RESET frame still has to go out.
    resets: Vec<(StreamId, u8)>,
    /// Lookups asked (client) or being answered (exit), not yet answered.
    resolving: BTreeMap<StreamId, Family>,
    /// (Client) lookups whose resolve frame has to go out.
    to_resolve: VecDeque<(StreamId, Family, String)>,
    /// (Exit) answers that have to go out.
    answers: VecDeque<(StreamId, Resolution)>,
    /// UDP flows.
    flows: BTreeMap<StreamId, Flow>,
}

impl core::fmt::Debug for Streams {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Streams")
            .field("side", &self.side)
            .field("open", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl Streams {
    /// No streams yet.
    pub fn new(side: Side) -> Self {
        Self {
            side,
            streams: BTreeMap::new(),
            next_id: 1,
            cursor: StreamId(0),
            events: VecDeque::new(),
            resets: Vec::new(),
            resolving: BTreeMap::new(),
            to_resolve: VecDeque::new(),
            answers: VecDeque::new(),
            flows: BTreeMap::new(),
        }
    }

    /// Streams open.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// (Client) opens a stream to `target`; `None` when [`MAX_STREAMS`] are open.
    pub fn open(&mut self, target: Target) -> Option<StreamId> {
        if self.side != Side::Client || self.streams.len() >= MAX_STREAMS {
            return None;
        }
        let id = self.next_free_id();
        let mut stream = Stream::new();
        stream.open = Some(target);
        self.streams.insert(id, stream);
        Some(id)
    }

    /// (Client) asks the exit for `name`'s addresses of `family` (its answer comes as
    /// [`StreamEvent::Resolved`]); `None` when [`MAX_RESOLVES`] are being resolved, or
    /// `name` is not 1-255 bytes of printable ASCII.
    pub fn resolve(&mut self, name: &str, family: Family) -> Option<StreamId> {
        let printable =
            !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic());
        if self.side != Side::Client || self.resolving.len() >= MAX_RESOLVES || !printable {
            return None;
        }
        let id = self.next_free_id();
        self.resolving.insert(id, family);
        self.to_resolve.push_back((id, family, name.to_owned()));
        Some(id)
    }

    /// (Client) gives up waiting for lookup `id`: its answer, if it comes, is ignored.
    pub fn forget_resolve(&mut self, id: StreamId) {
        self.resolving.remove(&id);
        self.to_resolve.retain(|(i, ..)| *i != id);
    }

    /// (Exit) answers lookup `id` (nothing if it is not being resolved).
    pub fn answer(&mut self, id: StreamId, answer: Resolution) {
        if self.side == Side::Exit && self.resolving.remove(&id).is_some() {
            self.answers.push_back((id, answer));
        }
    }

    /// The family asked for, if `id` is a lookup not answered yet.
    pub fn resolving(&self, id: StreamId) -> Option<Family> {
        self.resolving.get(&id).copied()
    }

    /// The next number for a stream or lookup, none of the open ones.
    fn next_free_id(&mut self) -> StreamId {
        loop {
            let id = StreamId(self.next_id);
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.streams.contains_key(&id)
                && !self.resolving.contains_key(&id)
                && !self.flows.contains_key(&id)
            {
                return id;
            }
        }
    }

    /// (Exit) the connection (or UDP flow) for `stream` is up.
    pub fn accept(&mut self, stream: StreamId) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.opened = Some(Reply::Succeeded as u8);
        }
        if let Some(f) = self.flows.get_mut(&stream) {
            f.opened = Some(Reply::Succeeded as u8);
        }
    }

    /// (Exit) the connection (or UDP flow) for `stream` failed or is not allowed: it ends.
    pub fn refuse(&mut self, stream: StreamId, reply: Reply) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.opened = Some(reply as u8);
            s.closing = true;
            s.send.clear();
            s.recv.clear();
        }
        if let Some(f) = self.flows.get_mut(&stream) {
            f.opened = Some(reply as u8);
            f.closing = true;
            f.out.clear();
        }
    }

    /// (Client) opens a UDP flow to `target`; `None` when [`MAX_FLOWS`] are open. Its
    /// datagrams may be sent at once: the exit takes them once it has connected.
    pub fn udp_open(&mut self, target: Target) -> Option<StreamId> {
        if self.side != Side::Client || self.flows.len() >= MAX_FLOWS {
            return None;
        }
        let id = self.next_free_id();
        self.flows.insert(
            id,
            Flow {
                open: Some(target),
                ..Flow::default()
            },
        );
        Some(id)
    }

    /// Queues a datagram on flow `id`; `false` if it is dropped: no such flow, more than
    /// [`MAX_DATAGRAM`] bytes, or [`FLOW_QUEUE`] waiting already.
    pub fn send_datagram(&mut self, id: StreamId, bytes: &[u8]) -> bool {
        match self.flows.get_mut(&id) {
            Some(f) if !f.closing && bytes.len() <= MAX_DATAGRAM && f.out.len() < FLOW_QUEUE => {
                f.out.push_back(bytes.to_vec());
                true
            }
            _ => false,
        }
    }

    /// Ends flow `id` (the peer hears a reset).
    pub fn close_flow(&mut self, id: StreamId) {
        if self.flows.remove(&id).is_some() {
            self.resets.push((id, Reply::Succeeded as u8));
        }
    }

    /// Whether flow `id` is open.
    pub fn has_flow(&self, id: StreamId) -> bool {
        self.flows.contains_key(&id)
    }

    /// Takes up to [`SEND_BUFFER`] bytes (less what is waiting) to send on `stream`;
    /// returns how many.
    pub fn write(&mut self, stream: StreamId, bytes: &[u8]) -> usize {
        let Some(s) = self.streams.get_mut(&stream) else {
            return 0;
        };
        if s.fin_pending || s.closing {
            return 0;
        }
        let n = bytes.len().min(SEND_BUFFER.saturating_sub(s.send.len()));
        s.send.extend(&bytes[..n]);
        n
    }

    /// Bytes [`write`](Self::write) would take now.
    pub fn send_room(&self, stream: StreamId) -> usize {
        self.streams
            .get(&stream)
            .filter(|s| !s.fin_pending && !s.closing)
            .map_or(0, |s| SEND_BUFFER.saturating_sub(s.send.len()))
    }

    /// Whether everything written to `stream` has been framed (sent into the channel).
    pub fn send_drained(&self, stream: StreamId) -> bool {
        self.streams.get(&stream).is_none_or(|s| s.send.is_empty())
    }

    /// Reads received bytes of `stream` into `buf`; returns how many. Reading grants the
    /// peer credit for as many more.
    pub fn read(&mut self, stream: StreamId, buf: &mut [u8]) -> usize {
        let Some(s) = self.streams.get_mut(&stream) else {
            return 0;
        };
        let n = buf.len().min(s.recv.len());
        // The ring buffer's two halves, copied whole.
        let (front, back) = s.recv.as_slices();
        let from_front = n.min(front.len());
        buf[..from_front].copy_from_slice(&front[..from_front]);
        buf[from_front..n].copy_from_slice(&back[..n - from_front]);
        s.recv.drain(..n);
        s.consumed = s.consumed.saturating_add(n as u32);
        if s.consumed >= INITIAL_CREDIT / 4 {
            s.grant = s.grant.saturating_add(s.consumed);
            s.consumed = 0;
        }
        if s.finished_both_ways() {
            self.streams.remove(&stream);
        }
        n
    }

    /// Bytes waiting to be read on `stream`.
    pub fn readable(&self, stream: StreamId) -> usize {
        self.streams.get(&stream).map_or(0, |s| s.recv.len())
    }

    /// The application writes no more on `stream` (after what it wrote).
    pub fn finish(&mut self, stream: StreamId) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.fin_pending = true;
        }
    }

    /// Abandons `stream`, telling the peer why.
    pub fn reset(&mut self, stream: StreamId, reply: Reply) {
        if self.streams.remove(&stream).is_some() {
            self.resets.push((stream, reply as u8));
        }
    }

    /// Whether the peer has finished writing on `stream`.
    pub fn peer_finished(&self, stream: StreamId) -> bool {
        self.streams.get(&stream).is_some_and(|s| s.fin_received)
    }

    /// Bytes written and not yet framed, over all streams.
    pub fn pending_bytes(&self) -> usize {
        self.streams.values().map(|s| s.send.len()).sum()
    }

    /// Whether `stream` is still open.
    pub fn contains(&self, stream: StreamId) -> bool {
        self.streams.contains_key(&stream)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    /// Whether [`fill`](Self::fill) has something to write.
    pub fn has_pending(&self) -> bool {
        !self.resets.is_empty()
            || !self.to_resolve.is_empty()
            || !self.answers.is_empty()
            || self
                .flows
                .values()
                .any(|f| f.open.is_some() || f.opened.is_some() || !f.out.is_empty())
            || self.streams.values().any(|s| {
                s.open.is_some()
                    || s.opened.is_some()
                    || s.grant > 0
                    || (!s.send.is_empty() && s.credit > 0)
                    || (s.fin_pending && !s.fin_sent && s.send.is_empty())
            })
    }

    /// Writes frames into `out`, at most `room` bytes: first each stream's control frames
    /// (open, answer, credit, reset), then data round-robin within the credit, then fins.
    pub fn fill(&mut self, out: &mut Vec<u8>, room: usize) {
        let limit = out.len() + room;
        let fits = |out: &Vec<u8>, frame: &Frame<'_>| out.len() + frame.len() <= limit;
        while let Some(&(stream, code)) = self.resets.last() {
            let frame = Frame::Reset { stream, code };
            if !fits(out, &frame) {
                return;
            }
            frame.encode(out);
            self.resets.pop();
        }
        while let Some((id, family, name)) = self.to_resolve.front() {
            let frame = Frame::Resolve {
                id: *id,
                family: *family,
                name,
            };
            if !fits(out, &frame) {
                return;
            }
            frame.encode(out);
            self.to_resolve.pop_front();
        }
        while let Some((id, answer)) = self.answers.pop_front() {
            let frame = Frame::Resolved { id, answer };
            if !fits(out, &frame) {
                let Frame::Resolved { id, answer } = frame else {
                    unreachable!("built as a resolved frame just above")
                };
                self.answers.push_front((id, answer));
                return;
            }
            frame.encode(out);
        }
        // UDP flows: their control frames, then datagrams (before stream data: they are few,
        // bounded, and late ones are worth little), each split to fit what room is left.
        for (&id, f) in self.flows.iter_mut() {
            if let Some(target) = f.open.take() {
                let frame = Frame::UdpOpen { id, target };
                if !fits(out, &frame) {
                    let Frame::UdpOpen { target, .. } = frame else {
                        unreachable!("built as a udp-open frame just above")
                    };
                    f.open = Some(target);
                    return;
                }
                frame.encode(out);
            }
            if let Some(code) = f.opened {
                let frame = Frame::Opened { stream: id, code };
                if !fits(out, &frame) {
                    return;
                }
                frame.encode(out);
                f.opened = None;
            }
        }
        for (&id, f) in self.flows.iter_mut() {
            while let Some(datagram) = f.out.front() {
                let left = &datagram[f.sent..];
                let room = limit.saturating_sub(out.len());
                if room < DATAGRAM_OVERHEAD + left.len().min(MIN_FRAGMENT) {
                    break;
                }
                let n = left.len().min(room - DATAGRAM_OVERHEAD);
                let more = n < left.len();
                Frame::Datagram {
                    id,
                    more,
                    bytes: &left[..n],
                }
                .encode(out);
                if more {
                    f.sent += n;
                } else {
                    f.sent = 0;
                    f.out.pop_front();
                }
            }
        }
        self.flows.retain(|_, f| !(f.closing && f.opened.is_none()));
        for (&stream, s) in self.streams.iter_mut() {
            if let Some(target) = s.open.take() {
                let frame = Frame::Open { stream, target };
                if !fits(out, &frame) {
                    let Frame::Open { target, .. } = frame else {
                        unreachable!("built as an open frame just above")
                    };
                    s.open = Some(target);
                    return;
                }
                frame.encode(out);
            }
            if let Some(code) = s.opened {
                let frame = Frame::Opened { stream, code };
                if !fits(out, &frame) {
                    return;
                }
                frame.encode(out);
                s.opened = None;
            }
            if s.grant > 0 {
                let frame = Frame::Credit {
                    stream,
                    bytes: s.grant,
                };
                if !fits(out, &frame) {
                    return;
                }
                frame.encode(out);
                s.grant = 0;
            }
        }
        // Data, round-robin from the stream after the last one served.
        let order: Vec<StreamId> = self
            .streams
            .range(StreamId(self.cursor.0.wrapping_add(1))..)
            .chain(self.streams.range(..=self.cursor))
            .map(|(id, _)| *id)
            .collect();
        for stream in order {
            let Some(s) = self.streams.get_mut(&stream) else {
                continue;
            };
            let space = limit.saturating_sub(out.len() + DATA_OVERHEAD);
            if space == 0 {
                break;
            }
            let n = s
                .send
                .len()
                .min(space)
                .min(usize::try_from(s.credit).unwrap_or(usize::MAX));
            if n > 0 {
                // Framed straight from the send buffer, no copy in between.
                let bytes = &s.send.make_contiguous()[..n];
                Frame::Data { stream, bytes }.encode(out);
                s.send.drain(..n);
                s.credit -= n as u64;
                self.cursor = stream;
            }
            if s.fin_pending && !s.fin_sent && s.send.is_empty() {
                let frame = Frame::Fin { stream };
                if !fits(out, &frame) {
                    break;
                }
                frame.encode(out);
                s.fin_sent = true;
            }
        }
        self.streams
            .retain(|_, s| !(s.finished_both_ways() || s.closing && s.opened.is_none()));
    }

    /// Handles the frames of one message from the peer.
    pub fn handle(&mut self, frames: &[u8]) -> Result<(), FrameError> {
        for frame in parse(frames)? {
            self.frame(frame);
        }
        Ok(())
    }

    fn frame(&mut self, frame: Frame<'_>) {
        match frame {
            Frame::Open { stream, target } => {
                if self.side != Side::Exit || self.streams.contains_key(&stream) {
                    return;
                }
                if self.streams.len() >= MAX_STREAMS {
                    self.resets.push((stream, Reply::GeneralFailure as u8));
                    return;
                }
                self.streams.insert(stream, Stream::new());
                self.events.push_back(StreamEvent::Open { stream, target });
            }
            Frame::Opened { stream, code } if self.flows.contains_key(&stream) => {
                if self.side != Side::Client {
                    return;
                }
                let reply = Reply::from_code(code);
                if reply != Reply::Succeeded {
                    self.flows.remove(&stream);
                }
                self.events.push_back(StreamEvent::Opened { stream, reply });
            }
            Frame::Opened { stream, code } => {
                if self.side != Side::Client || !self.streams.contains_key(&stream) {
                    return;
                }
                let reply = Reply::from_code(code);
                if reply != Reply::Succeeded {
                    self.streams.remove(&stream);
                }
                self.events.push_back(StreamEvent::Opened { stream, reply });
            }
            Frame::Data { stream, bytes } => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    return;
                };
                // A refused stream keeps nothing of what was sent before the client heard.
                if s.fin_received || s.closing {
                    return;
                }
                // Past the credit granted: the peer ignores flow control.
                let allowed = INITIAL_CREDIT as usize;
                if s.recv.len() + bytes.len() > allowed {
                    self.reset(stream, Reply::GeneralFailure);
                    self.events.push_back(StreamEvent::Reset {
                        stream,
                        reply: Reply::GeneralFailure,
                    });
                    return;
                }
                let was_empty = s.recv.is_empty();
                s.recv.extend(bytes);
                if was_empty && !bytes.is_empty() {
                    self.events.push_back(StreamEvent::Readable(stream));
                }
            }
            Frame::Fin { stream } => {
                if let Some(s) = self.streams.get_mut(&stream)
                    && !s.fin_received
                {
                    s.fin_received = true;
                    self.events.push_back(StreamEvent::Finished(stream));
                }
            }
            Frame::Reset { stream, code } => {
                if self.streams.remove(&stream).is_some() || self.flows.remove(&stream).is_some() {
                    self.events.push_back(StreamEvent::Reset {
                        stream,
                        reply: Reply::from_code(code),
                    });
                }
            }
            Frame::Credit { stream, bytes } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.credit = s.credit.saturating_add(u64::from(bytes));
                }
            }
            Frame::Resolve { id, family, name } => {
                if self.side != Side::Exit
                    || self.streams.contains_key(&id)
                    || self.resolving.contains_key(&id)
                {
                    return;
                }
                // A client far past its bound (answers waiting for SURBs included): dropped,
                // so that what the exit holds for it stays bounded.
                if self.resolving.len() + self.answers.len() >= 2 * MAX_RESOLVES {
                    return;
                }
                if self.resolving.len() >= MAX_RESOLVES {
                    self.answers.push_back((id, Resolution::Failed));
                    return;
                }
                self.resolving.insert(id, family);
                self.events.push_back(StreamEvent::Resolve {
                    id,
                    family,
                    name: Name(name.to_owned()),
                });
            }
            Frame::Resolved { id, answer } => {
                if self.side == Side::Client && self.resolving.remove(&id).is_some() {
                    self.events.push_back(StreamEvent::Resolved { id, answer });
                }
            }
            Frame::UdpOpen { id, target } => {
                if self.side != Side::Exit
                    || self.streams.contains_key(&id)
                    || self.resolving.contains_key(&id)
                    || self.flows.contains_key(&id)
                {
                    return;
                }
                if self.flows.len() >= MAX_FLOWS {
                    self.resets.push((id, Reply::GeneralFailure as u8));
                    return;
                }
                self.flows.insert(id, Flow::default());
                self.events.push_back(StreamEvent::UdpOpen { id, target });
            }
            Frame::Datagram { id, more, bytes } => {
                let Some(f) = self.flows.get_mut(&id) else {
                    return;
                };
                if f.closing {
                    return;
                }
                if f.partial.len() + bytes.len() > MAX_DATAGRAM {
                    // Past the largest datagram: the peer is broken; the flow ends.
                    self.close_flow(id);
                    self.events.push_back(StreamEvent::Reset {
                        stream: id,
                        reply: Reply::GeneralFailure,
                    });
                    return;
                }
                f.partial.extend_from_slice(bytes);
                if !more {
                    let bytes = std::mem::take(&mut f.partial);
                    self.events.push_back(StreamEvent::Datagram { id, bytes });
                }
            }
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn exchange(from: &mut Streams, to: &mut Streams, room: usize) -> usize {
        let mut out = Vec::new();
        from.fill(&mut out, room);
        to.handle(&out).unwrap();
        out.len()
    }

    #[test]
    fn names_resolve_at_the_exit_beside_the_streams() {
        let mut client = Streams::new(Side::Client);
        let mut exit = Streams::new(Side::Exit);
        let stream = client.open(Target::V4([198, 19, 0, 1].into(), 80)).unwrap();
        let a = client.resolve("files.test", Family::V4).unwrap();
        let aaaa = client.resolve("files.test", Family::V6).unwrap();
        assert!(a != stream && aaaa != a && aaaa != stream);
        assert_eq!(client.resolve("bad name", Family::V4), None);
        assert_eq!(client.resolve("", Family::V4), None);
        assert_eq!(
            exit.resolve("files.test", Family::V4),
            None,
            "only clients ask"
        );
        exchange(&mut client, &mut exit, 1000);
        // Lookups go first, like the other control frames.
        assert_eq!(
            exit.poll_event(),
            Some(StreamEvent::Resolve {
                id: a,
                family: Family::V4,
                name: Name("files.test".into())
            })
        );
        assert!(
            matches!(exit.poll_event(), Some(StreamEvent::Resolve { id, family: Family::V6, .. }) if id == aaaa)
        );
        assert!(matches!(exit.poll_event(), Some(StreamEvent::Open { .. })));
        assert_eq!(exit.resolving(a), Some(Family::V4));
        let found = Resolution::Found(vec![[198, 19, 0, 1].into()]);
        exit.answer(a, found.clone());
        exit.answer(a, Resolution::Failed); // answered already: nothing more
        exit.answer(aaaa, Resolution::NoSuchName);
        assert_eq!(exit.resolving(a), None);
        // The client has given up on the second one: its answer is dropped.
        client.forget_resolve(aaaa);
        exchange(&mut exit, &mut client, 1000);
        assert_eq!(
            client.poll_event(),
            Some(StreamEvent::Resolved {
                id: a,
                answer: found
            })
        );
        assert_eq!(client.poll_event(), None);
        assert!(!client.has_pending() && !exit.has_pending());
    }

    #[test]
    fn udp_flows_carry_datagrams_whole_in_fragments_both_ways() {
        let mut client = Streams::new(Side::Client);
        let mut exit = Streams::new(Side::Exit);
        let target = Target::V4([198, 19, 0, 7].into(), 7777);
        let flow = client.udp_open(target.clone()).unwrap();
        let big: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        assert!(client.send_datagram(flow, b"small"));
        assert!(client.send_datagram(flow, &big));
        assert!(client.send_datagram(flow, b""));
        // Messages of 500 bytes: the large one goes in fragments.
        let mut messages = 0;
        while client.has_pending() {
            exchange(&mut client, &mut exit, 500);
            messages += 1;
        }
        assert!(messages >= 7, "{messages} messages for 3 KB");
        assert_eq!(
            exit.poll_event(),
            Some(StreamEvent::UdpOpen { id: flow, target })
        );
        for want in [b"small".to_vec(), big.clone(), Vec::new()] {
            assert_eq!(
                exit.poll_event(),
                Some(StreamEvent::Datagram {
                    id: flow,
                    bytes: want
                })
            );
        }
        exit.accept(flow);
        assert!(exit.send_datagram(flow, b"echo"));
        exchange(&mut exit, &mut client, 500);
        assert_eq!(
            client.poll_event(),
            Some(StreamEvent::Opened {
                stream: flow,
                reply: Reply::Succeeded
            })
        );
        assert_eq!(
            client.poll_event(),
            Some(StreamEvent::Datagram {
                id: flow,
                bytes: b"echo".to_vec()
            })
        );
        // Bounded: a full queue drops, a datagram over the limit is refused.
        for _ in 0..FLOW_QUEUE {
            assert!(client.send_datagram(flow, b"x"));
        }
        assert!(!client.send_datagram(flow, b"x"));
        assert!(!exit.send_datagram(flow, &vec![0; MAX_DATAGRAM + 1]));
        // Closed by one side: the other hears a reset, and takes nothing more.
        client.close_flow(flow);
        assert!(!client.send_datagram(flow, b"late"));
        exchange(&mut client, &mut exit, 500);
        assert!(
            matches!(exit.poll_event(), Some(StreamEvent::Reset { stream, .. }) if stream == flow)
        );
        assert!(!exit.has_flow(flow));
    }

    #[test]
    fn a_refused_flow_is_gone_at_both_ends() {
        let mut client = Streams::new(Side::Client);
        let mut exit = Streams::new(Side::Exit);
        let flow = client
            .udp_open(Target::V4([127, 0, 0, 1].into(), 53))
            .unwrap();
        client.send_datagram(flow, b"q");
        exchange(&mut client, &mut exit, 500);
        assert!(matches!(
            exit.poll_event(),
            Some(StreamEvent::UdpOpen { .. })
        ));
        exit.refuse(flow, Reply::NotAllowed);
        // Its datagram, already parsed, is an event still; nothing more is taken.
        let _ = exit.poll_event();
        exchange(&mut exit, &mut client, 500);
        assert_eq!(
            client.poll_event(),
            Some(StreamEvent::Opened {
                stream: flow,
                reply: Reply::NotAllowed
            })
        );
        assert!(!client.has_flow(flow) && !exit.has_flow(flow));
        // Past the bound, the exit refuses new flows.
        let mut many = Streams::new(Side::Client);
        let ids: Vec<StreamId> = (0..MAX_FLOWS)
            .map(|_| {
                many.udp_open(Target::V4([198, 19, 0, 1].into(), 9))
                    .unwrap()
            })
            .collect();
        assert_eq!(many.udp_open(Target::V4([198, 19, 0, 1].into(), 9)), None);
        while many.has_pending() {
            exchange(&mut many, &mut exit, 1000);
        }
        assert_eq!(
            ids.iter().filter(|id| exit.has_flow(**id)).count(),
            MAX_FLOWS
        );
    }

    #[test]
    fn an_exit_fails_lookups_past_its_bound() {
        let mut client = Streams::new(Side::Client);
        let mut exit = Streams::new(Side::Exit);
        let ids: Vec<StreamId> = (0..MAX_RESOLVES)
            .map(|i| client.resolve(&format!("n{i}.test"), Family::V4).unwrap())
            .collect();
        assert_eq!(client.resolve("one.more", Family::V4), None);
        // Messages of 300 bytes: several go.
        while client.has_pending() {
            exchange(&mut client, &mut exit, 300);
        }
        let mut asked = 0;
        while let Some(event) = exit.poll_event() {
            assert!(matches!(event, StreamEvent::Resolve { .. }));
            asked += 1;
        }
        assert_eq!(asked, MAX_RESOLVES);
        // A client that does not keep to the bound (here one that forgot its lookups).
        let mut rogue = Streams::new(Side::Client);
        rogue.next_id = 1000;
        rogue.resolve("extra.test", Family::V4).unwrap();
        exchange(&mut rogue, &mut exit, 300);
        assert_eq!(exit.poll_event(), None);
        exchange(&mut exit, &mut rogue, 300);
        assert!(matches!(
            rogue.poll_event(),
            Some(StreamEvent::Resolved {
                answer: Resolution::Failed,
                ..
            })
        ));
        assert!(ids.iter().all(|id| exit.resolving(*id).is_some()));
        // A flood while the exit sends nothing (no SURBs): what it holds stays bounded.
        let mut flood = Streams::new(Side::Client);
        flood.next_id = 5000;
        for round in 0..10 {
            for i in 0..MAX_RESOLVES {
                flood
                    .resolve(&format!("f{round}-{i}.test"), Family::V4)
                    .unwrap();
            }
            while flood.has_pending() {
                exchange(&mut flood, &mut exit, 1000);
            }
            flood.resolving.clear();
        }
        assert!(exit.resolving.len() + exit.answers.len() <= 2 * MAX_RESOLVES);
    }

    #[test]
    fn open_accept_data_both_ways_and_close() {
        let mut client = Streams::new(Side::Client);
        let mut exit = Streams::new(Side::Exit);
        let target = Target::Name("example.org".into(), 80);
        let id = client.open(target.clone()).unwrap();
        assert_eq!(client.write(id, b"GET / HTTP/1.0\r\n\r\n"), 18);
        client.finish(id);
        exchange(&mut client, &mut exit, 1000);
        assert_eq!(
            exit.poll_event(),
            Some(StreamEvent::Open { stream: id, target })
        );
        assert_eq!(exit.poll_event(), Some(StreamEvent::Readable(id)));
        assert_eq!(exit.poll_event(), Some(StreamEvent::Finished(id)));
        let mut buf = [0u8; 64];
        assert_eq!(exit.read(id, &mut buf), 18);
        exit.accept(id);
        let body = vec![7u8; 3000];
        assert_eq!(exit.write(id, &body), 3000);
        exit.finish(id);
        let mut got = Vec::new();
        let mut replies = Vec::new();
        while exit.has_pending() {
            assert!(exchange(&mut exit, &mut client, 500) <= 500);
            while let Some(e) = client.poll_event() {
                replies.push(e);
            }
            let mut buf = [0u8; 256];
            loop {
                let n = client.read(id, &mut buf);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(
            replies[0],
            StreamEvent::Opened {
                stream: id,
                reply: Reply::Succeeded
            }
        );
        assert_eq!(replies.last(), Some(&StreamEvent::Finished(id)));
        assert_eq!(got, body);
        assert!(client.is_empty() && exit.is_empty(), "both ways finished");
    }

    #[test]
    fn credit_bounds_what_is_sent_until_the_reader_reads() {
        let mut client = Streams::new(Side::Client);
        let mut exit = Streams::new(Side::Exit);
        let id = client.open(Target::Name("x.example".into(), 80)).unwrap();
        exchange(&mut client, &mut exit, 1000);
        exit.accept(id);
        let mut sent = 0usize;
        // The client never reads: the exit stops at the initial credit.
        for _ in 0..2000 {
            sent += exit.write(id, &[1u8; 4096]);
            exchange(&mut exit, &mut client, 1100);
        }
        assert_eq!(client.readable(id), INITIAL_CREDIT as usize);
        assert!(sent <= INITIAL_CREDIT as usize + SEND_BUFFER);
        // Reading a quarter grants a quarter more.
        let mut buf = vec![0u8; INITIAL_CREDIT as usize / 4];
        client.read(id, &mut buf);
        exchange(&mut client, &mut exit, 1000);
        for _ in 0..200 {
            exchange(&mut exit, &mut client, 1100);
        }
        assert_eq!(client.readable(id), INITIAL_CREDIT as usize);
    }

    #[test]
    fn refusal_and_reset_end_the_stream_and_a_flood_is_reset() {
        let mut client = Streams::new(Side::Client);
        let mut exit = Streams::new(Side::Exit);
        let id = client.open(Target::V4([10, 0, 0, 1].into(), 22)).unwrap();
        exchange(&mut client, &mut exit, 1000);
        exit.poll_event();
        exit.refuse(id, Reply::NotAllowed);
        // What the client sends before it hears is not kept.
        assert_eq!(client.write(id, &[5u8; 1000]), 1000);
        exchange(&mut client, &mut exit, 1100);
        assert_eq!(exit.readable(id), 0);
        assert_eq!(exit.poll_event(), None);
        exchange(&mut exit, &mut client, 1000);
        assert_eq!(
            client.poll_event(),
            Some(StreamEvent::Opened {
                stream: id,
                reply: Reply::NotAllowed
            })
        );
        assert!(client.is_empty() && exit.is_empty());
        // A peer that ignores its credit gets the stream reset.
        let id = client.open(Target::V4([10, 0, 0, 1].into(), 80)).unwrap();
        exchange(&mut client, &mut exit, 1000);
        let mut flood = Vec::new();
        for _ in 0..=(INITIAL_CREDIT / 1000) {
            Frame::Data {
                stream: id,
                bytes: &[0u8; 1000],
            }
            .encode(&mut flood);
        }
        client.handle(&flood).unwrap();
        assert!(matches!(
            std::iter::from_fn(|| client.poll_event()).last(),
            Some(StreamEvent::Reset { .. })
        ));
        assert!(!client.contains(id));
        let mut out = Vec::new();
        client.fill(&mut out, 100);
        assert_eq!(
            parse(&out).unwrap()[0],
            Frame::Reset {
                stream: id,
                code: 1
            }
        );
    }
}
