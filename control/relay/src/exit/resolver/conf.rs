//! The host's name files, sans-IO: the name servers and their timing from `resolv.conf`
//! ([`ResolvConf::parse`]) and the names of `/etc/hosts` ([`Hosts::parse`]).
//!
//! What it does not read: `search`, `domain` and `ndots` (a client's name is a name on the
//! Internet: trying it under the exit's own domain would ask the exit's network about its
//! users' destinations), `LOCALDOMAIN`/`RES_OPTIONS`, nsswitch.conf (files first, then
//! DNS, always), or anything but addresses from the hosts file (aliases are names like the
//! others).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

/// Name servers used, at most (glibc's `MAXNS`).
pub const MAX_SERVERS: usize = 3;
/// How long one try waits for its answer, unless `options timeout:` says otherwise (glibc's
/// 5 s is far too long for an exit, whose lookups have 5 s in all).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Tries per server, unless `options attempts:` says otherwise.
pub const DEFAULT_ATTEMPTS: u32 = 2;

/// What a lookup may spend at most: `resolv.conf`'s values are honoured up to these, so
/// that a resolver gives up before the exit's deadline for the lookup, and its socket is
/// closed (see [`super::super::lookups::LOOKUP_DEADLINE`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Longest wait for one try's answer.
    pub max_timeout: Duration,
    /// Most tries (each to the next server in turn).
    pub max_tries: u32,
}

impl Budget {
    /// The exit's: a try waits 2 s at most, 4 tries at most; a lookup gives up within 4 s
    /// whatever `resolv.conf` says (its defaults: 1 s, 2 tries a server).
    pub const EXIT: Budget = Budget {
        max_timeout: Duration::from_secs(2),
        max_tries: 4,
    };
}

/// The name servers to ask and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvConf {
    /// Up to [`MAX_SERVERS`], in the file's order; `127.0.0.1:53` if it names none (as
    /// glibc does).
    pub servers: Vec<SocketAddr>,
    /// How long one try waits for its answer.
    pub timeout: Duration,
    /// Tries per server.
    pub attempts: u32,
}

impl ResolvConf {
    /// The servers and options of a `resolv.conf` text. Lines it does not understand are
    /// skipped, as glibc does.
    pub fn parse(text: &str) -> Self {
        let mut servers = Vec::new();
        let mut timeout = DEFAULT_TIMEOUT;
        let mut attempts = DEFAULT_ATTEMPTS;
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    let ip = words.next().and_then(|w| w.parse::<IpAddr>().ok());
                    if let Some(ip) = ip
                        && servers.len() < MAX_SERVERS
                    {
                        servers.push(SocketAddr::new(ip, 53));
                    }
                }
                Some("options") => {
                    for option in words {
                        let number = |key: &str| option.strip_prefix(key)?.parse::<u32>().ok();
                        if let Some(t) = number("timeout:") {
                            timeout = Duration::from_secs(t.into());
                        } else if let Some(a) = number("attempts:") {
                            attempts = a;
                        }
                    }
                }
                _ => {}
            }
        }
        if servers.is_empty() {
            servers.push(SocketAddr::from((Ipv4Addr::LOCALHOST, 53)));
        }
        Self {
            servers,
            timeout,
            attempts,
        }
    }

    /// How long each try waits (at least 100 ms; at most the budget's) and how many tries
    /// a lookup makes (each server `attempts` times, 1 at least, at most the budget's).
    pub fn tries(&self, budget: Budget) -> (Duration, u32) {
        let timeout = self.timeout.clamp(
            Duration::from_millis(100),
            budget.max_timeout.max(Duration::from_millis(100)),
        );
        let servers = u32::try_from(self.servers.len()).unwrap_or(u32::MAX);
        let tries = self
            .attempts
            .max(1)
            .saturating_mul(servers.max(1))
            .min(budget.max_tries.max(1));
        (timeout, tries)
    }
}

/// The names of a hosts file, lower case, without a final dot, each with its addresses in
/// the file's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hosts(HashMap<String, Vec<IpAddr>>);

impl Hosts {
    /// The names of a hosts file's text (`address name [alias…] [# comment]` lines; those
    /// whose address does not parse are skipped).
    pub fn parse(text: &str) -> Self {
        let mut names: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
                continue;
            };
            for name in words {
                let addrs = names.entry(normal(name)).or_default();
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
        }
        Self(names)
    }

    /// The addresses the file gives `name` (any case, with or without a final dot).
    pub fn get(&self, name: &str) -> Option<&[IpAddr]> {
        self.0.get(&normal(name)).map(Vec::as_slice)
    }
}

fn normal(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn resolv_conf_gives_servers_and_options() {
        let c = ResolvConf::parse(
            "# generated\nsearch corp.example\nnameserver 192.0.2.1\n\
             nameserver 2001:db8::53 # v6\nnameserver not-an-address\n\
             nameserver 192.0.2.2\nnameserver 192.0.2.3\noptions ndots:2 timeout:3 attempts:5 rotate\n",
        );
        assert_eq!(
            c.servers,
            [
                addr("192.0.2.1:53"),
                addr("[2001:db8::53]:53"),
                addr("192.0.2.2:53")
            ],
            "three at most, the bad one skipped"
        );
        assert_eq!((c.timeout, c.attempts), (Duration::from_secs(3), 5));
        assert_eq!(
            c.tries(Budget::EXIT),
            (Duration::from_secs(2), 4),
            "within the exit's budget"
        );
    }

    #[test]
    fn resolv_conf_defaults() {
        let c = ResolvConf::parse("");
        assert_eq!(c.servers, [addr("127.0.0.1:53")]);
        assert_eq!(c.tries(Budget::EXIT), (Duration::from_secs(1), 2));
        let c = ResolvConf::parse(
            "nameserver 192.0.2.1\nnameserver 192.0.2.2\noptions attempts:0 timeout:0",
        );
        assert_eq!(c.tries(Budget::EXIT), (Duration::from_millis(100), 2));
    }

    #[test]
    fn hosts_gives_every_address_of_a_name_in_any_case() {
        let h = Hosts::parse(
            "127.0.0.1 localhost\n::1 localhost ip6-localhost # loopback\n\
             # 10.0.0.1 commented.example\n198.51.100.7\tServer.pb.test  web\n\
             bogus name.example\n198.51.100.7 server.pb.test\n",
        );
        let localhost: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(h.get("localhost"), Some(localhost.as_slice()));
        assert_eq!(h.get("LOCALHOST."), Some(localhost.as_slice()));
        let server: Vec<IpAddr> = vec!["198.51.100.7".parse().unwrap()];
        assert_eq!(h.get("server.pb.test."), Some(server.as_slice()), "once");
        assert_eq!(h.get("web"), Some(server.as_slice()));
        assert_eq!(h.get("commented.example"), None);
        assert_eq!(h.get("name.example"), None);
        assert_eq!(h.get("bogus"), None);
    }
}
