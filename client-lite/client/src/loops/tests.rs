#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::collections::HashMap;

use pb_proto::{
    Channel, ChannelConfig, ClientMessage, ExitMessage, Side, Streams,
    message::{EXIT_CHANNEL_ROOM, EXIT_MAILBOX},
};
use pb_sphinx::{MemoryReplayFilter, NodeKeys, Processed, Surb, process};

use super::*;
use crate::session::tests::{Seeded, network};

/// Runs `packet` from `first` until it is delivered: the layers it went through, and how
/// it was delivered.
fn travel(
    keys: &HashMap<NodeId, NodeKeys>,
    topology: &Topology,
    first: NodeId,
    packet: &mut [u8; PACKET_LEN],
) -> (Vec<usize>, Processed) {
    let mut replay = MemoryReplayFilter::default();
    let (mut at, mut layers) = (first, Vec::new());
    loop {
        layers.push(topology.find(at).unwrap().layer);
        match process(packet, &keys[&at], &mut replay).unwrap() {
            Processed::Forward { next, .. } => at = next,
            delivered => return (layers, delivered),
        }
    }
}

#[test]
fn a_probe_is_a_real_message_that_the_exit_acknowledges() {
    let (keys, topology) = network();
    let gateway = topology.layer(0)[0].node;
    let mailbox = MailboxId([0x3c; 16]);
    let mut random = Seeded(5);
    let mut loops = Loops::new();
    let mut packet = loops
        .packet(
            Duration::ZERO,
            &topology,
            gateway,
            mailbox,
            &Profile::DEFAULT,
            &mut random,
        )
        .unwrap();
    // The way a real packet goes: gateway, layers 1, 2, 3, the exit's mailbox.
    let (layers, delivered) = travel(&keys, &topology, gateway, &mut packet);
    assert_eq!(layers, [0, 1, 2, 3, 4]);
    let Processed::Deliver { mailbox: to, .. } = delivered else {
        panic!("not delivered");
    };
    assert_eq!(to, EXIT_MAILBOX);
    // A session's message with SURBs, and a channel message that carries nothing but
    // must be acknowledged.
    let m = ClientMessage::parse(pb_sphinx::message(&packet)).unwrap();
    assert!(!m.surbs.is_empty());
    let mut exit_channel = Channel::new(ChannelConfig::default());
    let mut exit_streams = Streams::new(Side::Exit);
    for frames in exit_channel.receive(Duration::ZERO, m.channel).unwrap() {
        exit_streams.handle(&frames).unwrap();
    }
    assert!(exit_streams.poll_event().is_none());
    assert!(exit_channel.ack_owed());
    // The exit acknowledges through a SURB; the reply comes back the way replies do.
    let ack = exit_channel
        .transmit(Duration::from_millis(100), EXIT_CHANNEL_ROOM, |_, _| {})
        .unwrap();
    let reply = ExitMessage {
        held: 0,
        wanted: 0,
        channel: &ack,
    }
    .encode();
    let mut back = [0u8; PACKET_LEN];
    let first = Surb::from_bytes(m.surbs[0])
        .unwrap()
        .into_reply(&mut back, &reply)
        .unwrap();
    let (layers, delivered) = travel(&keys, &topology, first, &mut back);
    assert_eq!(layers, [3, 2, 1, 0]);
    let Processed::DeliverReply { surb, .. } = delivered else {
        panic!("not a reply");
    };
    assert!(loops.owns(&surb));
    loops.reply(
        Duration::from_millis(300),
        surb,
        pb_sphinx::payload_mut(&mut back),
    );
    assert_eq!(
        loops.stats(),
        LoopStats {
            sent: 1,
            returned: 1,
            lost: 0
        }
    );
}

#[test]
fn a_probe_never_acknowledged_is_counted_lost_and_sent_again() {
    let (_, topology) = network();
    let gateway = topology.layer(0)[0].node;
    let mut random = Seeded(6);
    let mut loops = Loops::new();
    let mut probe = |at: u64| {
        loops
            .packet(
                Duration::from_secs(at),
                &topology,
                gateway,
                MailboxId([1; 16]),
                &Profile::DEFAULT,
                &mut random,
            )
            .unwrap();
    };
    probe(0);
    // Long past its timeout: the next tick sends it again.
    probe(30);
    let stats = loops.stats();
    assert_eq!((stats.sent, stats.returned, stats.lost), (1, 0, 1));
}
