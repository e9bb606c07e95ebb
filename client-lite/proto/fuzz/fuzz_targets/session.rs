//! Any bytes as a delivered client message (at the exit) and as an opened exit message (at
//! the client), through message parsing, the channel and the streams; and as a client-link
//! datagram either way (a hello opened with a gateway key, a welcome with a hello's keys):
//! errors are fine, panics are not. State persists across inputs, as
//! it does in a long session.
#![no_main]

use std::{cell::RefCell, time::Duration};

use libfuzzer_sys::fuzz_target;
use pb_proto::{
    Channel, ChannelConfig, ClientMessage, ExitMessage, Side, Streams, Target, link,
    message::{CLIENT_CHANNEL_ROOM, EXIT_CHANNEL_ROOM},
};
use pb_sphinx::{Epoch, EpochKey};

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

thread_local! {
    /// A hello's keys, to open whatever parses as a welcome.
    static HELLO: link::HelloKeys = {
        let gateway = EpochKey::from_secret(Epoch(1), [7; 32]);
        let sent = link::hello(&gateway.public_key(), Epoch(1), [8; 32], &[9; 32], 0, &[0; 16]);
        sent.map(|(_, keys)| keys).expect("a valid gateway key")
    };
}

fuzz_target!(|data: &[u8]| {
    if let Some(link::FromGateway::Welcome { nonce, sealed, .. }) = link::parse(data) {
        HELLO.with(|keys| link::open_welcome(keys, &nonce, &sealed));
    }
    if let Some(link::FromClient::Hello {
        epoch,
        ephemeral,
        sealed,
    }) = link::parse_request(data)
    {
        let key = EpochKey::from_secret(epoch, [7; 32]);
        let _ = link::open_hello(&key, &key.public_key(), &ephemeral, &sealed);
    }
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
