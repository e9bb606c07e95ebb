//! A last hop holds what it delivers for the delay the header asks of it, like any other
//! hop: an exit holds a client's message, a gateway holds a SURB reply for its client. Before
//! this, both delivered at once, so the hop a timing-correlation attacker watches (what an
//! exit opens, what a gateway hands a client) did no mixing. On the in-memory network,
//! virtual clock.
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{
    Delivered, FORMAT, NoCover, Recorder, Sim, config, endpoint, hop, key, keys, ms, packet,
    relay_addr, send, text,
};
use pb_mix::SharedReplayFilter;
use pb_pipeline::Pipeline;
use pb_sphinx::{Epoch, MailboxId, PACKET_LEN, SurbId, create_surb_with};

const EPOCH: Epoch = Epoch(3);
/// The mailbox of the exit service in these tests, and a client's at its gateway.
const SERVICE: MailboxId = MailboxId([0x5e; 16]);
const CLIENT: MailboxId = MailboxId([0xc1; 16]);

/// Relay 0 as a last hop with no links, delivering to `delivered`; a sender endpoint.
fn last_hop<'r>(
    sim: &mut Sim<'r>,
    replay: &'r SharedReplayFilter,
    delivered: &Delivered,
) -> pb_io::mem::MemIo {
    let io = sim.net.bind(&endpoint(relay_addr(0))).unwrap();
    let pipeline = Pipeline::new(
        io,
        &config(Vec::new(), 100),
        keys(key(0, EPOCH), None),
        replay,
        Box::new(NoCover),
        Box::new(Recorder(delivered.clone())),
        sim.now(),
    )
    .unwrap();
    sim.relays.push(pipeline);
    sim.net.bind(&endpoint(relay_addr(9))).unwrap()
}

#[test]
fn an_exit_holds_a_message_for_its_delay() {
    let replay = SharedReplayFilter::new(1024).unwrap();
    replay.prepare(EPOCH);
    let delivered = Delivered::default();
    let mut sim = Sim::new(1);
    let mut client = last_hop(&mut sim, &replay, &delivered);
    // The exit is the route's only hop and is asked to hold the message for 300 ms.
    let message = text(1);
    let bytes = packet(EPOCH, &[hop(0, EPOCH, 300)], SERVICE, &message, [7; 32]);
    send(&mut client, relay_addr(0), &bytes);
    sim.run_until(ms(299));
    assert!(
        delivered.lock().unwrap().is_empty(),
        "delivered before the header's 300 ms"
    );
    sim.run_until(ms(302));
    let got = delivered.lock().unwrap().clone();
    assert_eq!(got, vec![(SERVICE, message)], "not delivered after 300 ms");
    assert_eq!(sim.relays[0].stats().delivered, 1);
}

#[test]
fn a_gateway_holds_a_reply_for_its_delay() {
    let replay = SharedReplayFilter::new(1024).unwrap();
    replay.prepare(EPOCH);
    let delivered = Delivered::default();
    let mut sim = Sim::new(2);
    let mut exit = last_hop(&mut sim, &replay, &delivered);
    // A SURB whose route ends at the gateway (relay 0), asking it to hold the reply 250 ms.
    let (surb, secrets) = create_surb_with(
        FORMAT,
        EPOCH,
        &[hop(0, EPOCH, 250)],
        CLIENT,
        SurbId([0x33; 16]),
        &[9; 32],
    )
    .unwrap();
    let message = text(2);
    let mut reply = [0u8; PACKET_LEN];
    surb.into_reply(&mut reply, &message).unwrap();
    send(&mut exit, relay_addr(0), &reply);
    sim.run_until(ms(249));
    assert!(
        delivered.lock().unwrap().is_empty(),
        "reply handed on before the header's 250 ms"
    );
    sim.run_until(ms(252));
    let mut got = delivered.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "reply not handed on after 250 ms");
    let (mailbox, payload) = &mut got[0];
    assert_eq!(*mailbox, CLIENT);
    // What the gateway handed on is the reply, intact: the client opens it.
    assert_eq!(secrets.open_reply(payload).unwrap(), &message[..]);
}
