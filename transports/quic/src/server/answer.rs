//! One request stream the gateway is answering: a cover response (page, 404, 405) or a
//! link's response, and how its bytes go out through quiche's `h3`.

use std::collections::VecDeque;

use pb_transport::{Peer, RECORD_LEN};
use quiche::h3;

use crate::{
    records::Reassembler,
    site::{self, Site},
};

/// One request stream the server is answering.
pub(super) struct Answering {
    /// Response fields still to send (the stream was blocked), or `None` once sent.
    pub(super) head: Option<Vec<h3::Header>>,
    /// Body bytes still to send.
    pub(super) body: VecDeque<u8>,
    /// Finish the stream once `head` and `body` are out.
    pub(super) fin: bool,
    /// The stream's end has been sent (or the stream is gone): nothing more to do.
    pub(super) finished: bool,
    /// The link this stream carries, if it is one.
    pub(super) link: Option<Link>,
}

/// A link's state on its request stream.
pub(super) struct Link {
    pub(super) peer: Peer,
    pub(super) records: Reassembler,
    /// The request body may have bytes waiting (quiche reports `Data` once until drained).
    pub(super) readable: bool,
    /// The 200 has been queued: records may follow.
    pub(super) responded: bool,
}

impl Answering {
    pub(super) fn page(r: site::Response) -> Self {
        Self {
            head: Some(
                r.headers
                    .iter()
                    .map(|(n, v)| h3::Header::new(n.as_bytes(), v.as_bytes()))
                    .collect(),
            ),
            body: r.body.into(),
            fin: true,
            finished: false,
            link: None,
        }
    }

    /// Ends a link's response as a web server ends a request it does not want: the 404
    /// page if no response has begun, else the body finishes after what is queued.
    pub(super) fn end(&mut self, site: &Site, unix_now: u64) {
        if self.fin {
            return;
        }
        let responded = self.link.as_ref().is_some_and(|l| l.responded);
        if responded {
            self.fin = true;
        } else {
            let page = Self::page(site.not_found(b"POST", unix_now));
            self.head = page.head;
            self.body = page.body;
            self.fin = true;
        }
    }

    /// Records queued on a link's response (one partly sent counts until it is out).
    pub(super) fn queued_records(&self) -> usize {
        if self.link.as_ref().is_some_and(|l| l.responded) {
            self.body.len().div_ceil(RECORD_LEN)
        } else {
            0
        }
    }

    /// Whether everything, the end of the stream included, is out.
    pub(super) fn done(&self) -> bool {
        self.finished
    }

    /// Nothing more will be sent: the stream is gone, or its end went out.
    pub(super) fn finish(&mut self) {
        self.head = None;
        self.body.clear();
        self.fin = true;
        self.finished = true;
    }
}

/// Writes what stream `id` has to send, as far as quiche takes it.
/// Returns how many queued records left the queue (sent, or dropped with the stream).
pub(super) fn write_stream(
    quic: &mut quiche::Connection,
    h3: &mut h3::Connection,
    id: u64,
    a: &mut Answering,
) -> usize {
    let before = a.queued_records();
    write_stream_inner(quic, h3, id, a);
    before - a.queued_records()
}

fn write_stream_inner(
    quic: &mut quiche::Connection,
    h3: &mut h3::Connection,
    id: u64,
    a: &mut Answering,
) {
    if let Some(head) = &a.head {
        let fin_now = a.fin && a.body.is_empty();
        match h3.send_response(quic, id, head, fin_now) {
            Ok(()) => {
                a.head = None;
                if fin_now {
                    a.finish();
                    return;
                }
            }
            Err(h3::Error::StreamBlocked) => return,
            Err(_) => {
                // The stream is gone (reset by the client): nothing more to send.
                a.finish();
                return;
            }
        }
    }
    if a.head.is_some() || (a.link.as_ref().is_some_and(|l| !l.responded) && !a.fin) {
        return;
    }
    while !a.body.is_empty() || (a.fin && !a.finished) {
        let (front, _) = a.body.as_slices();
        let last = a.fin && front.len() == a.body.len();
        match h3.send_body(quic, id, front, last) {
            Ok(n) => {
                a.body.drain(..n);
                if last && a.body.is_empty() {
                    a.finish();
                    return;
                }
                if n == 0 {
                    return;
                }
            }
            Err(h3::Error::Done) => return,
            Err(_) => {
                a.finish();
                return;
            }
        }
    }
}
