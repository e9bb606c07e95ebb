//! Five stewards, three to sign: fourteen `pb-relay` processes in gossip mode on loopback
//! (unprivileged; a gateway, three mix layers of four, an exit; relays 0 to 4 the stewards)
//! with 20-second epochs, and pb-client with the network file.
//!
//! Shows: with two stewards stopped, the three left still cosign each new epoch's
//! checkpoint, and a client verifies it and gets ready; with a third stopped, no new
//! checkpoint is cosigned, and once the last one is too old for the clock a client refuses
//! the gateway, saying that its checkpoint is for an epoch the clock does not allow.
#![cfg(target_arch = "x86_64")]
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common {
    pub mod testnet;
}

use std::{
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant, SystemTime},
};

use common::testnet::relay_binary;
use pb_testnet::{Network, Testnet};

const RELAYS: usize = 14;
const EPOCH_SECONDS: u64 = 20;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The newest `checkpoint epoch E signers N` the gateway reported: (E, N).
fn last_checkpoint(net: &Testnet) -> Option<(u32, usize)> {
    let line = net.relay(0)?.last("checkpoint epoch ")?;
    let mut words = line.split_whitespace().skip(2);
    let epoch = words.next()?.parse().ok()?;
    let signers = words.nth(1)?.parse().ok()?;
    Some((epoch, signers))
}

/// Waits until the gateway reports a checkpoint of an epoch after `after`: (E, N).
fn wait_checkpoint_after(net: &Testnet, after: u32, limit: Duration) -> (u32, usize) {
    let start = Instant::now();
    loop {
        if let Some((e, n)) = last_checkpoint(net)
            && e > after
        {
            return (e, n);
        }
        assert!(
            start.elapsed() < limit,
            "no checkpoint after epoch {after} within {limit:?}:\n{}",
            net.report(20)
        );
        thread::sleep(Duration::from_millis(500));
    }
}

/// Runs pb-client with the network file for `seconds`: its output.
fn client(net: &mut Testnet, name: &str, seconds: u32) -> String {
    let mut command = net.client_command(env!("CARGO_BIN_EXE_pb-client"));
    // Its own SOCKS port: other tests may hold 1080 on the host.
    command.args([
        "--listen",
        &format!("127.0.0.1:{}", 20000 + std::process::id() % 20000),
        "--seconds",
        &seconds.to_string(),
    ]);
    let k = net.spawn(name, command).unwrap();
    let p = net.process_mut(k).unwrap();
    p.wait_output().unwrap();
    p.output()
}

#[test]
fn three_of_five_stewards_keep_the_network_and_two_do_not() {
    let first = Ipv4Addr::new(127, 78, (std::process::id() % 200) as u8, 10);
    let network = Network::builder()
        .relays(RELAYS)
        .loopback(first)
        .gossip(EPOCH_SECONDS)
        .stewards(5, 3)
        .network_seed([0x7a; 32])
        .identity_seeds(0x50)
        .link_rate(100)
        .stats_interval(0.0)
        .relay_binary(relay_binary())
        .build()
        .unwrap();
    let mut net = Testnet::start(network).unwrap();
    if let Err(e) = net.wait_for_agreement(Duration::from_secs(90)) {
        panic!("{e}");
    }
    let (first_epoch, signers) = wait_checkpoint_after(&net, 0, Duration::from_secs(60));
    assert!(signers >= 3, "{signers} signers");

    // Two stewards stop: three are left, which is k.
    net.stop(4).unwrap();
    net.stop(3).unwrap();
    let (epoch, signers) = wait_checkpoint_after(&net, first_epoch, Duration::from_secs(90));
    assert_eq!(signers, 3, "epoch {epoch}");
    let out = client(&mut net, "client-three", 12);
    assert!(
        out.contains("pb-client: ready"),
        "with three stewards the client did not get ready:\n{out}"
    );

    // A third stops: nothing new is cosigned; once the last checkpoint is too old for the
    // clock, a client refuses the gateway and says why.
    net.stop(2).unwrap();
    let last = last_checkpoint(&net).unwrap().0;
    // An epoch boundary and two cosigning rounds (5 s each) after it, at least.
    thread::sleep(Duration::from_secs(EPOCH_SECONDS + 10));
    assert_eq!(
        last_checkpoint(&net).unwrap().0,
        last,
        "a checkpoint was cosigned with two stewards:\n{}",
        net.report(10)
    );
    // The clock past the last checkpoint's epoch and its grace (a quarter of an epoch).
    while unix_now() / EPOCH_SECONDS <= u64::from(last)
        || unix_now() % EPOCH_SECONDS <= EPOCH_SECONDS / 4
    {
        thread::sleep(Duration::from_millis(500));
    }
    let out = client(&mut net, "client-two", 6);
    assert!(
        !out.contains("pb-client: ready"),
        "the client used a view only two stewards could sign:\n{out}"
    );
    assert!(
        out.lines().any(|l| l.contains("refused")
            && l.contains(&format!("checkpoint is for epoch {last}"))
            && l.contains("the clock allows")),
        "no line saying why the client refused:\n{out}"
    );
    println!(
        "checkpoints: epoch {first_epoch} by all, epoch {epoch} by 3 of 5, none after {last} with 2"
    );
}
