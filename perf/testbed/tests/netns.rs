//! Real namespaces, veth pairs and traffic. Needs root; skipped otherwise (fails in CI).
//! All traffic goes only to addresses inside namespaces these tests create.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on unexpected errors"
)]

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;

use pb_testbed::{Netns, PairSpec, TestbedError, run_checked, two_node, veth_pair};

const A_V4: &str = "198.18.0.1";
const B_V4: &str = "198.18.0.2";

/// Names currently listed by `ip netns list` (first word of each line).
fn listed_namespaces() -> Vec<String> {
    run_checked(Command::new("ip").args(["netns", "list"]))
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn assert_success(cmd: &mut Command) {
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn two_nodes_ping_over_ipv4_and_ipv6() {
    if !pb_testbed::require_privileged("two_nodes_ping_over_ipv4_and_ipv6") {
        return;
    }
    let node = two_node("ping").unwrap();
    assert_success(&mut node.a.exec("ping", ["-c", "1", "-W", "2", B_V4]));
    assert_success(
        &mut node
            .a
            .exec("ping", ["-6", "-c", "1", "-W", "2", "fd70:6862::2"]),
    );
    assert_success(&mut node.b.exec("ping", ["-c", "1", "-W", "2", A_V4]));

    // The Link describes what was really configured.
    let link = &node.link;
    assert!(link.a_if.len() <= 15 && link.b_if.len() <= 15);
    assert_ne!(link.a_mac, link.b_mac);
    assert_eq!(
        pb_testbed::interface_mac(&node.b, &link.b_if).unwrap(),
        link.b_mac
    );
    let a_addrs = node.a.run(&["addr", "show", "dev", &link.a_if]).unwrap();
    assert!(a_addrs.contains("198.18.0.1/24"), "{a_addrs}");
    assert!(a_addrs.contains("fd70:6862::1/64"), "{a_addrs}");
    // After ARP the peer's neighbour entry carries the MAC that Link reports.
    let neigh = node
        .a
        .run(&["neigh", "show", "dev", &link.a_if, B_V4])
        .unwrap();
    let b_mac = link.b_mac.map(|b| format!("{b:02x}")).join(":");
    assert!(neigh.contains(&b_mac), "{neigh} lacks {b_mac}");
    // Each end is only in its own namespace.
    assert!(node.b.run(&["link", "show", "dev", &link.a_if]).is_err());
}

#[test]
fn entering_a_namespace_moves_only_this_thread_and_sockets_stay_inside() {
    if !pb_testbed::require_privileged("entering_a_namespace_moves_only_this_thread") {
        return;
    }
    let node = two_node("enter").unwrap();
    let a_addr: SocketAddr = (A_V4.parse::<Ipv4Addr>().unwrap(), 0).into();
    let b_addr: SocketAddr = (B_V4.parse::<Ipv4Addr>().unwrap(), 0).into();

    let outside = UdpSocket::bind(a_addr).unwrap_err();
    assert_eq!(outside.kind(), ErrorKind::AddrNotAvailable, "{outside}");

    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let sock_a = node
                    .a
                    .in_netns(|| UdpSocket::bind(a_addr))
                    .unwrap()
                    .unwrap();
                // Back outside: the address is unavailable again on this thread...
                let again = UdpSocket::bind(a_addr).unwrap_err();
                assert_eq!(again.kind(), ErrorKind::AddrNotAvailable, "{again}");

                // ...but the socket made inside still works inside, across the veth.
                let guard = node.b.enter().unwrap();
                let sock_b = UdpSocket::bind(b_addr).unwrap();
                guard.leave().unwrap();
                sock_a
                    .send_to(b"hello", sock_b.local_addr().unwrap())
                    .unwrap();
                let mut buf = [0_u8; 16];
                sock_b
                    .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                let (len, from) = sock_b.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..len], b"hello");
                assert_eq!(from, sock_a.local_addr().unwrap());
            })
            .join()
            .unwrap();
    });
    // This thread never moved.
    let still_outside = UdpSocket::bind(a_addr).unwrap_err();
    assert_eq!(still_outside.kind(), ErrorKind::AddrNotAvailable);
}

#[test]
fn a_panic_inside_in_netns_still_restores_the_thread() {
    if !pb_testbed::require_privileged("a_panic_inside_in_netns_still_restores_the_thread") {
        return;
    }
    let node = two_node("unwind").unwrap();
    let a_addr: SocketAddr = (A_V4.parse::<Ipv4Addr>().unwrap(), 0).into();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let result = catch_unwind(AssertUnwindSafe(|| {
                    node.a
                        .in_netns(|| std::panic::resume_unwind(Box::new("deliberate")))
                }));
                assert!(result.is_err());
                let err = UdpSocket::bind(a_addr).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::AddrNotAvailable, "{err}");
            })
            .join()
            .unwrap();
    });
}

#[test]
fn dropping_a_two_node_deletes_its_namespaces() {
    if !pb_testbed::require_privileged("dropping_a_two_node_deletes_its_namespaces") {
        return;
    }
    let node = two_node("drop").unwrap();
    let names = [node.a.name().to_owned(), node.b.name().to_owned()];
    let listed = listed_namespaces();
    assert!(names.iter().all(|name| listed.contains(name)), "{listed:?}");
    drop(node);
    let listed = listed_namespaces();
    assert!(
        names.iter().all(|name| !listed.contains(name)),
        "{listed:?}"
    );
}

#[test]
fn a_panicking_test_still_deletes_its_namespaces() {
    if !pb_testbed::require_privileged("a_panicking_test_still_deletes_its_namespaces") {
        return;
    }
    let mut names = Vec::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let node = two_node("panic").unwrap();
        names.push(node.a.name().to_owned());
        names.push(node.b.name().to_owned());
        assert_eq!(
            listed_namespaces()
                .iter()
                .filter(|n| names.contains(n))
                .count(),
            2
        );
        // resume_unwind unwinds like a failing assertion but skips the panic message.
        std::panic::resume_unwind(Box::new("deliberate test failure"));
    }));
    assert!(result.is_err());
    assert_eq!(names.len(), 2);
    let listed = listed_namespaces();
    assert!(
        names.iter().all(|name| !listed.contains(name)),
        "{listed:?}"
    );
}

#[test]
fn stale_namespaces_of_dead_processes_are_removed() {
    if !pb_testbed::require_privileged("stale_namespaces_of_dead_processes_are_removed") {
        return;
    }
    // Creating a namespace first finishes the automatic once-per-process cleanup, so it
    // cannot race with the explicit call below.
    let live = Netns::create("live").unwrap();
    // A finished child's pid is (almost certainly) not reused immediately.
    let mut child = Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let stale = format!("pbt-{dead_pid}-stale-0");
    run_checked(Command::new("ip").args(["netns", "add", &stale])).unwrap();
    // A name that does not follow the pattern must survive.
    let foreign = format!("pbtx-{dead_pid}-foreign");
    run_checked(Command::new("ip").args(["netns", "add", &foreign])).unwrap();

    let removed = pb_testbed::remove_stale_namespaces().unwrap();
    let listed = listed_namespaces();
    run_checked(Command::new("ip").args(["netns", "del", &foreign])).unwrap();
    assert!(removed >= 1);
    assert!(!listed.contains(&stale), "{listed:?}");
    assert!(listed.contains(&foreign), "{listed:?}");
    assert!(listed.iter().any(|name| name == live.name()), "{listed:?}");
}

#[test]
fn invalid_requests_are_refused_before_touching_the_system() {
    if !pb_testbed::require_privileged("invalid_requests_are_refused") {
        return;
    }
    assert!(matches!(
        Netns::create("a/b"),
        Err(TestbedError::InvalidName { .. })
    ));
    let a = Netns::create("spec-a").unwrap();
    let b = Netns::create("spec-b").unwrap();
    let same = veth_pair(&a, &a, &PairSpec::TWO_NODE);
    assert!(
        matches!(same, Err(TestbedError::InvalidSpec { .. })),
        "{same:?}"
    );
    let bad = PairSpec {
        prefix_v4: 40,
        ..PairSpec::TWO_NODE
    };
    assert!(matches!(
        veth_pair(&a, &b, &bad),
        Err(TestbedError::InvalidSpec { .. })
    ));
    assert_eq!(
        a.run(&["-o", "link", "show"]).unwrap().lines().count(),
        1,
        "only lo"
    );

    // A v4-only pair with other addresses works too.
    let spec = PairSpec {
        a_v4: Ipv4Addr::new(198, 19, 7, 1),
        b_v4: Ipv4Addr::new(198, 19, 7, 2),
        prefix_v4: 30,
        a_v6: None,
        b_v6: None,
        prefix_v6: 64,
    };
    let link = veth_pair(&a, &b, &spec).expect("v4-only pair");
    assert_success(&mut a.exec("ping", ["-c", "1", "-W", "2", "198.19.7.2"]));
    assert!(
        !a.run(&["-6", "addr", "show", "dev", &link.a_if])
            .unwrap()
            .contains("global")
    );
}
