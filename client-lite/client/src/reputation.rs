//! The reputation table a client weighs routes by (docs/spec/ledger.md, "Routes"): fetched
//! from the gateway page by page, used only if it hashes to what the stewards' cosigned
//! checkpoint commits to. A gateway that serves another table, or none, gets no say in the
//! routes: they then weigh all relays alike.

use std::collections::BTreeMap;

use pb_ledger::reputation::{Params, Table};
use pb_sphinx::NodeId;

/// A route weight per relay (ppm), and the weight of a relay not in the table.
pub type Weights = (BTreeMap<NodeId, u64>, u64);

/// What a page did to the fetch.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// Not this fetch's, or more pages to come.
    Incomplete,
    /// The gateway holds no table.
    NoTable,
    /// The whole table, checked against the commitment.
    Weights(Weights),
    /// The pages do not make the committed table (why).
    Refused(&'static str),
}

/// A table being fetched.
#[derive(Debug)]
pub struct ReputationFetch {
    /// The requests' nonce.
    pub nonce: [u8; 8],
    /// The checkpoint's commitment the table must hash to.
    pub want: [u8; 32],
    chunks: Vec<Option<Vec<u8>>>,
}

impl ReputationFetch {
    /// A fetch of the table `want` commits to.
    pub fn new(nonce: [u8; 8], want: [u8; 32]) -> Self {
        Self {
            nonce,
            want,
            chunks: Vec::new(),
        }
    }

    /// The pages still to ask for (page 0 until the count is known).
    pub fn missing(&self) -> Vec<u8> {
        if self.chunks.is_empty() {
            return vec![0];
        }
        (0..self.chunks.len())
            .filter(|&p| self.chunks[p].is_none())
            .map(|p| p as u8)
            .collect()
    }

    /// Takes a page of the table of `network`.
    pub fn take(
        &mut self,
        nonce: [u8; 8],
        page: u8,
        pages: u8,
        chunk: &[u8],
        network: &str,
    ) -> Taken {
        if nonce != self.nonce {
            return Taken::Incomplete;
        }
        if pages == 0 {
            return Taken::NoTable;
        }
        if self.chunks.is_empty() {
            self.chunks = vec![None; usize::from(pages)];
        }
        if self.chunks.len() != usize::from(pages) {
            return Taken::Refused("pages of two tables");
        }
        let Some(slot) = self.chunks.get_mut(usize::from(page)) else {
            return Taken::Refused("a page past the last");
        };
        *slot = Some(chunk.to_vec());
        if self.chunks.iter().any(Option::is_none) {
            return Taken::Incomplete;
        }
        let text: Vec<u8> = self.chunks.iter().flatten().flatten().copied().collect();
        let Some(table) = core::str::from_utf8(&text).ok().and_then(Table::parse) else {
            return Taken::Refused("not a reputation table");
        };
        if table.network != network {
            return Taken::Refused("another network's table");
        }
        if table.commitment() != self.want {
            return Taken::Refused("not the table the stewards signed");
        }
        Taken::Weights((
            table.relays.iter().map(|(id, (_, w))| (*id, *w)).collect(),
            Params::default().floor,
        ))
    }
}

#[cfg(test)]
#[expect(clippy::panic, reason = "tests")]
mod tests {
    use pb_ledger::reputation::Reputation;

    use super::*;

    fn table(relays: usize) -> Table {
        let mut t = Table::of("pb.test/network", 40, &Reputation::new(Params::default()));
        for i in 0..relays {
            t.relays.insert(
                NodeId([i as u8; 16]),
                (i as u64 * 1_000, 100_000 + i as u64 * 900),
            );
        }
        t
    }

    fn pages(text: &str) -> Vec<Vec<u8>> {
        text.as_bytes()
            .chunks(pb_proto::link::REPUTATION_PAGE)
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn a_committed_table_gives_weights_in_any_page_order() {
        let t = table(250);
        let text = t.text();
        let p = pages(&text);
        assert_eq!(p.len(), 2);
        let mut f = ReputationFetch::new([1; 8], t.commitment());
        assert_eq!(f.missing(), [0]);
        assert_eq!(
            f.take([2; 8], 1, 2, &p[1], "pb.test/network"),
            Taken::Incomplete
        );
        assert_eq!(
            f.take([1; 8], 1, 2, &p[1], "pb.test/network"),
            Taken::Incomplete
        );
        assert_eq!(f.missing(), [0]);
        match f.take([1; 8], 0, 2, &p[0], "pb.test/network") {
            Taken::Weights((w, unlisted)) => {
                assert_eq!(w.len(), 250);
                assert_eq!(w[&NodeId([7; 16])], 106_300);
                assert_eq!(unlisted, Params::default().floor);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn another_table_none_or_a_broken_one_gives_no_weights() {
        let t = table(3);
        let text = t.text();
        let mut f = ReputationFetch::new([1; 8], t.commitment());
        assert_eq!(f.take([1; 8], 0, 0, b"", "pb.test/network"), Taken::NoTable);
        // Another table (one weight raised): not the committed one.
        let mut other = t.clone();
        other.relays.insert(NodeId([1; 16]), (1, 1_000_000));
        let mut f = ReputationFetch::new([1; 8], t.commitment());
        assert_eq!(
            f.take([1; 8], 0, 1, other.text().as_bytes(), "pb.test/network"),
            Taken::Refused("not the table the stewards signed")
        );
        let mut f = ReputationFetch::new([1; 8], t.commitment());
        assert_eq!(
            f.take([1; 8], 0, 1, text.as_bytes(), "pb.test/other"),
            Taken::Refused("another network's table")
        );
        let mut f = ReputationFetch::new([1; 8], t.commitment());
        assert_eq!(
            f.take([1; 8], 0, 1, b"junk", "pb.test/network"),
            Taken::Refused("not a reputation table")
        );
        let mut f = ReputationFetch::new([1; 8], t.commitment());
        assert_eq!(
            f.take([1; 8], 0, 2, b"x", "pb.test/network"),
            Taken::Incomplete
        );
        assert_eq!(
            f.take([1; 8], 1, 3, b"x", "pb.test/network"),
            Taken::Refused("pages of two tables")
        );
        assert_eq!(
            f.take([1; 8], 5, 2, b"x", "pb.test/network"),
            Taken::Refused("a page past the last")
        );
        assert_eq!(f.missing(), [1]);
    }
}
