//! Five `pb-relay` processes in gossip mode on loopback (unprivileged) with 12-second
//! epochs: at the boundary every relay moves to the next epoch's keys, which it published
//! ahead, and to the next topology; packets made under the previous epoch still cross the
//! network during the overlap (its keys and its links are kept for it), and after the overlap
//! they are dropped as past-epoch at the first relay.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    process::Command,
    thread,
    time::{Duration, SystemTime},
};

use common::{Net, Relay, admin_get, client_topology, hex, identity_seed, packets, send_through};

const RELAYS: usize = 5;
const EPOCH_SECONDS: u64 = 12;

fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 77, (std::process::id() % 200) as u8, 10 + i as u8)
}

fn admin_addr(i: usize) -> SocketAddr {
    SocketAddr::new(ip(i).into(), 9100)
}

fn admin(i: usize, path: &str) -> String {
    admin_get(TcpStream::connect(admin_addr(i)).unwrap(), path)
}

fn seconds_into_epoch() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % EPOCH_SECONDS
}

#[test]
fn epochs_turn_over_with_an_overlap() {
    let dir = std::env::temp_dir().join(format!("pb-epochs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let deliveries = UdpSocket::bind((ip(RELAYS - 1), 9000)).unwrap();
    deliveries
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let client = UdpSocket::bind((ip(RELAYS), 0)).unwrap();
    let mut net = Net {
        relays: Vec::new(),
        dir: dir.clone(),
    };
    for i in 0..RELAYS {
        std::fs::write(
            dir.join(format!("identity{i}.key")),
            hex(&identity_seed(i)) + "\n",
        )
        .unwrap();
        let deliver = (i == RELAYS - 1).then(|| deliveries.local_addr().unwrap());
        let config = common::config(
            ip(i),
            &[ip(0)],
            i,
            RELAYS,
            admin_addr(i),
            EPOCH_SECONDS,
            deliver,
        );
        let path = dir.join(format!("relay{i}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_pb-relay"));
        command
            .args(["run", "--stats-interval", "0", "--config"])
            .arg(&path);
        net.relays.push(Some(Relay::start(command)));
    }

    // The network agrees; take the client's view early enough in an epoch that the packets
    // are made before it ends.
    let (_, mut epoch, _) = net.converge(RELAYS, 0);
    while seconds_into_epoch() > EPOCH_SECONDS - 5 {
        thread::sleep(Duration::from_millis(200));
    }
    let (_, e, _) = net.converge(RELAYS, epoch);
    epoch = e;
    let old = client_topology(&admin(0, "/status"), &admin(0, "/descriptors"));
    assert_eq!(old.epoch().0, epoch);
    let during_overlap = packets(&old, 3, 1);
    let after_overlap = packets(&old, 1, 2);

    // The boundary: everyone moves to the next epoch (and its topology).
    let (new_hash, new_epoch, _) = net.converge(RELAYS, epoch + 1);
    assert_eq!(new_epoch, epoch + 1);
    let gateway = old.layer(0)[0].packet_addr;
    // Within the overlap (two seconds here): the old epoch's packets still go through.
    if let Err(e) = send_through(&during_overlap, gateway, &client, &deliveries, common::STEP) {
        net.fail(&format!("during the overlap: {e}"));
    }
    // The new epoch's topology, as a client sees it.
    let new = client_topology(&admin(0, "/status"), &admin(0, "/descriptors"));
    assert_eq!(hex(&new.hash()), new_hash);
    if let Err(e) = send_through(
        &packets(&new, 3, 3),
        gateway,
        &client,
        &deliveries,
        common::STEP,
    ) {
        net.fail(&format!("in the new epoch: {e}"));
    }
    // After the overlap: the old epoch is past.
    thread::sleep(Duration::from_secs(3));
    // (Two seconds is ample for a packet to cross five relays on loopback.)
    assert!(
        send_through(
            &after_overlap,
            gateway,
            &client,
            &deliveries,
            Duration::from_secs(2)
        )
        .is_err()
    );
    let mut past = 0;
    for relay in net.relays.iter_mut().flatten() {
        let (status, stderr) = relay.stop();
        assert!(status.success(), "{status}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    if let Some(Some(gw)) = net.relays.first() {
        past = gw.stat("dropped_past_epoch").unwrap_or(0);
    }
    assert_eq!(past, 1, "the gateway drops the late packet as past-epoch");
}
