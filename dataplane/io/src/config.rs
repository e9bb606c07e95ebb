//! The I/O section of a relay configuration: which interface and queues to run on, how to
//! attach, and the PhantomBand port and packet size. Parsed from TOML into a value that
//! cannot be invalid; a bad value is a [`ConfigError`] naming the field and the reason.
//!
//! ```toml
//! interface = "eth0"
//! queues = [0, 1]        # one AF_XDP socket (and later one pipeline core) per queue
//! port = 47470
//! packet_len = 1452      # exact UDP payload of every PhantomBand packet
//! xdp_mode = "native"    # native | generic
//! bind = "auto"          # auto | copy | zerocopy
//! ```

use serde::Deserialize;

use crate::{afxdp::BindMode, xdp::AttachMode};

/// The smallest packet length accepted (a Sphinx header alone is larger).
pub const MIN_PACKET_LEN: u16 = 64;
/// The largest packet length accepted: one datagram on a 1500-byte-MTU IPv6 path.
pub const MAX_PACKET_LEN: u16 = 1452;

/// A validated I/O configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoConfig {
    /// Interface name.
    pub interface: String,
    /// Queues to bind, distinct, each below [`pb_xdp_common::MAX_QUEUES`].
    pub queues: Vec<u32>,
    /// PhantomBand UDP port.
    pub port: u16,
    /// Exact UDP payload length.
    pub packet_len: u16,
    /// XDP attach mode.
    pub xdp_mode: AttachMode,
    /// AF_XDP bind mode.
    pub bind: BindMode,
}

/// A configuration value that is missing, malformed or out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct ConfigError {
    /// The offending field, when known.
    pub field: Option<String>,
    /// What is wrong, in one line.
    pub reason: String,
}

fn bad(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: Some(field.to_owned()),
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    interface: Option<String>,
    queues: Option<Vec<i64>>,
    port: Option<i64>,
    packet_len: Option<i64>,
    xdp_mode: Option<String>,
    bind: Option<String>,
}

impl IoConfig {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let message = e
                .message()
                .lines()
                .next()
                .unwrap_or("malformed TOML")
                .to_owned();
            let reason = match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            };
            // serde names an unknown or missing field in its message; keep it as is.
            ConfigError {
                field: None,
                reason,
            }
        })?;

        let interface = raw.interface.ok_or_else(|| bad("interface", "missing"))?;
        if interface.is_empty()
            || interface.len() > 15
            || interface.contains(['/', ' ', '\t', '\0', ':'])
        {
            return Err(bad(
                "interface",
                format!(
                    "{interface:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)"
                ),
            ));
        }

        let queues = raw.queues.unwrap_or_else(|| vec![0]);
        if queues.is_empty() {
            return Err(bad("queues", "empty: list at least one queue"));
        }
        let mut checked = Vec::with_capacity(queues.len());
        for q in queues {
            let q = u32::try_from(q)
                .ok()
                .filter(|q| *q < pb_xdp_common::MAX_QUEUES)
                .ok_or_else(|| {
                    bad(
                        "queues",
                        format!("{q} is out of range (0..{})", pb_xdp_common::MAX_QUEUES),
                    )
                })?;
            if checked.contains(&q) {
                return Err(bad("queues", format!("queue {q} is listed twice")));
            }
            checked.push(q);
        }

        let port = match raw.port {
            None => crate::DEFAULT_PORT,
            Some(p) => u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("port", format!("{p} is not a UDP port (1-65535)")))?,
        };

        let packet_len = match raw.packet_len {
            None => crate::DEFAULT_PACKET_LEN,
            Some(n) => u16::try_from(n)
                .ok()
                .filter(|n| (MIN_PACKET_LEN..=MAX_PACKET_LEN).contains(n))
                .ok_or_else(|| {
                    bad(
                        "packet_len",
                        format!("{n} is out of range ({MIN_PACKET_LEN}-{MAX_PACKET_LEN} bytes)"),
                    )
                })?,
        };

        let xdp_mode = match raw.xdp_mode.as_deref() {
            None | Some("native") => AttachMode::Native,
            Some("generic") => AttachMode::Generic,
            Some(other) => {
                return Err(bad(
                    "xdp_mode",
                    format!("{other:?} is not one of \"native\", \"generic\""),
                ));
            }
        };
        let bind = match raw.bind.as_deref() {
            None | Some("auto") => BindMode::Auto,
            Some("copy") => BindMode::Copy,
            Some("zerocopy") => BindMode::ZeroCopy,
            Some(other) => {
                return Err(bad(
                    "bind",
                    format!("{other:?} is not one of \"auto\", \"copy\", \"zerocopy\""),
                ));
            }
        };

        Ok(Self {
            interface,
            queues: checked,
            port,
            packet_len,
            xdp_mode,
            bind,
        })
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_takes_defaults() {
        let c = IoConfig::from_toml("interface = \"eth0\"").unwrap();
        assert_eq!(c.queues, vec![0]);
        assert_eq!(c.port, crate::DEFAULT_PORT);
        assert_eq!(c.packet_len, 1452);
        assert_eq!(c.xdp_mode, AttachMode::Native);
        assert_eq!(c.bind, BindMode::Auto);
    }

    #[test]
    fn full_config_parses() {
        let c = IoConfig::from_toml(
            "interface = \"veth1\"\nqueues = [0, 3]\nport = 5000\npacket_len = 1024\nxdp_mode = \"generic\"\nbind = \"copy\"\n",
        )
        .unwrap();
        assert_eq!(c.queues, vec![0, 3]);
        assert_eq!((c.port, c.packet_len), (5000, 1024));
        assert_eq!((c.xdp_mode, c.bind), (AttachMode::Generic, BindMode::Copy));
    }

    #[test]
    fn each_bad_value_names_its_field_in_one_line() {
        let cases = [
            ("queues = [0]", "field `interface`: missing"),
            ("interface = \"a/b\"", "field `interface`"),
            ("interface = \"eth0\"\nqueues = []", "field `queues`: empty"),
            (
                "interface = \"eth0\"\nqueues = [1, 1]",
                "field `queues`: queue 1 is listed twice",
            ),
            (
                "interface = \"eth0\"\nqueues = [-1]",
                "field `queues`: -1 is out of range",
            ),
            ("interface = \"eth0\"\nport = 70000", "field `port`: 70000"),
            ("interface = \"eth0\"\nport = 0", "field `port`"),
            (
                "interface = \"eth0\"\npacket_len = 2000",
                "field `packet_len`: 2000 is out of range",
            ),
            (
                "interface = \"eth0\"\nxdp_mode = \"fast\"",
                "field `xdp_mode`",
            ),
            ("interface = \"eth0\"\nbind = \"x\"", "field `bind`"),
            ("interface = \"eth0\"\ncolour = 1", "unknown field `colour`"),
            ("interface = \"eth0\"\nport = \"x\"", "line 2: invalid type"),
            ("interface = ", "line 1"),
        ];
        for (text, expected) in cases {
            let e = IoConfig::from_toml(text).unwrap_err().to_string();
            assert!(
                e.starts_with(expected) || e.contains(expected),
                "{text:?} gave {e:?}"
            );
            assert!(
                !e.contains('\n'),
                "{text:?} gave a multi-line message {e:?}"
            );
        }
    }
}
