//! A star testbed: `n` node namespaces, each with one veth to a bridge in a switch
//! namespace, all on 198.18.0.0/24 (node `i` is 198.18.0.`i + 1`). Every node reaches every
//! other through the bridge, and each has exactly one interface for its XDP program and
//! AF_XDP socket. A namespace between nodes is also where a test can inject loss (nftables
//! on the bridge) later.

use std::net::Ipv4Addr;

use crate::{Netns, TestbedError, veth::wait_link_up};

/// One node of a [`Star`].
#[derive(Debug)]
pub struct StarNode {
    /// Its namespace.
    pub ns: Netns,
    /// Its interface (the veth end in its namespace).
    pub ifname: String,
    /// Its IPv4 address (/24).
    pub v4: Ipv4Addr,
}

/// Node namespaces around a bridge; dropping it deletes every namespace (nodes first).
#[derive(Debug)]
pub struct Star {
    /// The nodes, in creation order.
    pub nodes: Vec<StarNode>,
    /// The namespace holding the bridge `br0`.
    pub switch: Netns,
}

/// The address node `i` of a star gets: 198.18.0.`i + 1` (for `i` below 250).
pub fn star_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, (i % 250) as u8 + 1)
}

/// The name of node `i`'s interface in a star built by this process (unique on the
/// machine while the process runs; the same in every star of the process, each in its own
/// namespace).
pub fn star_ifname(i: usize) -> String {
    format!("pb{}n{i}", ifname_pid())
}

/// The process id as interface names carry it (they have at most 15 characters).
fn ifname_pid() -> u32 {
    std::process::id() % 100_000
}

/// Builds a [`Star`] of `n` nodes (at most 250); `tag` names the namespaces (`<tag>-sw`,
/// `<tag>-0`, …).
///
/// # Errors
///
/// As [`Netns::create`]; [`TestbedError::Command`] if an `ip` step fails;
/// [`TestbedError::InvalidSpec`] for `n` out of range.
pub fn star(tag: &str, n: usize) -> Result<Star, TestbedError> {
    star_with_queues(tag, &vec![1; n])
}

/// As [`star`], with node `i`'s veth pair having `queues[i]` transmit and receive queues
/// (1 to 16), so that the node can run one AF_XDP socket per queue: the bridge spreads
/// flows over a node's queues by their hash. (A node that binds fewer sockets than its
/// interface has queues loses the packets hashed to the others.)
///
/// # Errors
///
/// As [`star`]; [`TestbedError::InvalidSpec`] for a queue count out of range.
pub fn star_with_queues(tag: &str, queues: &[u32]) -> Result<Star, TestbedError> {
    let n = queues.len();
    if n == 0 || n > 250 {
        return Err(TestbedError::InvalidSpec {
            reason: format!("a star has 1 to 250 nodes, not {n}"),
        });
    }
    if let Some(q) = queues.iter().find(|q| !(1..=16).contains(*q)) {
        return Err(TestbedError::InvalidSpec {
            reason: format!("a veth has 1 to 16 queues here, not {q}"),
        });
    }
    let switch = Netns::create(&format!("{tag}-sw"))?;
    switch.run(&["link", "add", "br0", "type", "bridge"])?;
    switch.run(&["link", "set", "br0", "up"])?;
    let mut star = Star {
        nodes: Vec::new(),
        switch,
    };
    for (i, queues) in queues.iter().enumerate() {
        let queues = queues.to_string();
        let ns = Netns::create(&format!("{tag}-{i}"))?;
        let (node_if, switch_if) = (star_ifname(i), format!("pb{}s{i}", ifname_pid()));
        let v4 = star_address(i);
        star.switch.run(&[
            "link",
            "add",
            &switch_if,
            "numtxqueues",
            &queues,
            "numrxqueues",
            &queues,
            "type",
            "veth",
            "peer",
            "name",
            &node_if,
            "numtxqueues",
            &queues,
            "numrxqueues",
            &queues,
            "netns",
            ns.name(),
        ])?;
        star.switch
            .run(&["link", "set", &switch_if, "master", "br0", "up"])?;
        ns.run(&["addr", "add", &format!("{v4}/24"), "dev", &node_if])?;
        ns.run(&["link", "set", &node_if, "up"])?;
        wait_link_up(&ns, &node_if)?;
        star.nodes.push(StarNode {
            ns,
            ifname: node_if,
            v4,
        });
    }
    Ok(star)
}
