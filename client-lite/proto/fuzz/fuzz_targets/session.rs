//! Any bytes as a delivered client message (at the exit) and as an opened exit message (at
//! the client), through message parsing, the channel and the streams; and as a client-link
//! message either way (its first byte the kind): errors are fine, panics are not. State persists across inputs, as
//! it does in a long session.
#![no_main]

use std::{cell::RefCell, time::Duration};

use libfuzzer_sys::fuzz_target;
use pb_proto::{
    Channel, ChannelConfig, ClientMessage, ExitMessage, Side, Streams, Target, link,
    message::{CLIENT_CHANNEL_ROOM, EXIT_CHANNEL_ROOM},
};

struct End {
    channel: Channel,
    streams: Streams,
    now: Duration,
}

thread_local! {
    static ENDS: RefCell<(End, End)> = RefCell::new({
        let mut client = Streams::new(Side::Client);
        let _ = client.open(Target::Name("example.org".into(), 80));
        (
            End { channel: Channel::new(ChannelConfig::default()), streams: Streams::new(Side::Exit), now: Duration::ZERO },
            End { channel: Channel::new(ChannelConfig::default()), streams: client, now: Duration::ZERO },
        )
    });
}

fn feed(end: &mut End, channel: &[u8], room: usize) {
    end.now += Duration::from_millis(7);
    if let Ok(messages) = end.channel.receive(end.now, channel) {
        for frames in messages {
            let _ = end.streams.handle(&frames);
        }
    }
    while end.streams.poll_event().is_some() {}
    let mut buf = [0u8; 512];
    for id in 1..4 {
        let _ = end.streams.read(pb_proto::StreamId(id), &mut buf);
    }
    let streams = &mut end.streams;
    let _ = end
        .channel
        .transmit(end.now, room, |out, room| streams.fill(out, room));
}

fuzz_target!(|data: &[u8]| {
    // The client link's messages, as either side parses them.
    let message = pb_link::Message {
        kind: data.first().copied().unwrap_or(0),
        body: data.get(1..).unwrap_or(&[]).to_vec(),
    };
    let _ = link::parse(&message);
    let _ = link::parse_request(&message);
    ENDS.with(|ends| {
        let (exit, client) = &mut *ends.borrow_mut();
        if let Ok(m) = ClientMessage::parse(data) {
            feed(exit, m.channel, EXIT_CHANNEL_ROOM);
        }
        if let Ok(m) = ExitMessage::parse(data) {
            feed(client, m.channel, CLIENT_CHANNEL_ROOM);
        }
    });
});
