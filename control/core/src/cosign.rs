//! How stewards' signatures over an epoch's checkpoint travel by gossip, sans I/O
//! (docs/spec/checkpoint.md, "Exchange"). A steward signs the checkpoint its own view gives
//! and sends the text with its signature line to every live member, again every
//! [`COSIGN_EVERY`] (and signs again when its view changes). Every node keeps, per steward,
//! the last signature it received that verifies over a text of its network and epoch (a
//! steward whose view changed signs the new text, and its signature of the old one stops
//! counting: however many views a partition or churn goes through, at most one text per
//! steward is held); once k stewards' signatures are over one text, the node holds a cosigned
//! checkpoint, which a gateway serves to its clients.
//!
//! A cosignature datagram is `KIND_COSIG`, a u16 length and the checkpoint's text, then the
//! signature line (`— name base64`). It carries its own proof: a receiver checks the line
//! against the network's steward keys, so forwarding it needs no trust.

use std::{collections::BTreeMap, time::Duration};

use pb_sphinx::Epoch;

use crate::{
    checkpoint::{Checkpoint, Stewards},
    note::{Note, NoteSigner},
};

/// The datagram kind of a cosignature.
pub const KIND_COSIG: u8 = 3;
/// How often a steward signs (if its view changed) and sends its signature.
pub const COSIGN_EVERY: Duration = Duration::from_secs(5);

/// A cosignature datagram.
pub fn datagram(text: &str, line: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + text.len() + line.len());
    out.push(KIND_COSIG);
    out.extend_from_slice(&(text.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(line.as_bytes());
    out
}

/// Why a cosignature was not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not a cosignature datagram's shape, or not UTF-8.
    Malformed,
    /// The text is not a checkpoint of this network.
    NotOurs,
    /// For another epoch than the current one.
    OtherEpoch,
    /// The line is not one steward's valid signature over the text.
    BadSignature,
}

/// The signatures a node holds, and its own if it is a steward.
#[derive(Debug)]
pub struct Cosigning {
    stewards: Stewards,
    /// Our index among the stewards, if we are one.
    own: Option<usize>,
    epoch: Epoch,
    /// Per steward, the text of this epoch it signed last and its signature line.
    held: BTreeMap<usize, (String, String)>,
    /// This epoch's last complete note (served while stewards move to a new text).
    complete: Option<String>,
    /// The last complete note of the previous epoch (served until this one's is complete).
    previous: Option<String>,
    /// What we signed last: the text and our line.
    signed: Option<(String, String)>,
    pub(crate) next_round: Duration,
}

impl Cosigning {
    /// Cosigning among `stewards` in `epoch`; `own`: our steward index, if any.
    pub fn new(stewards: Stewards, own: Option<usize>, epoch: Epoch, now: Duration) -> Self {
        Self {
            stewards,
            own,
            epoch,
            held: BTreeMap::new(),
            complete: None,
            previous: None,
            signed: None,
            next_round: now,
        }
    }

    /// The stewards.
    pub fn stewards(&self) -> &Stewards {
        &self.stewards
    }

    /// Whether this node is a steward.
    pub fn is_steward(&self) -> bool {
        self.own.is_some()
    }

    /// Our steward key's name, if we are one.
    pub fn own_name(&self) -> Option<&str> {
        self.own
            .and_then(|i| self.stewards.keys().get(i))
            .map(|k| k.name())
    }

    /// A new epoch: what was held goes, the last complete note stays as the previous one.
    pub fn set_epoch(&mut self, epoch: Epoch) {
        if epoch == self.epoch {
            return;
        }
        if let Some(note) = self.complete.take() {
            self.previous = Some(note);
        }
        self.epoch = epoch;
        self.held.clear();
        self.signed = None;
    }

    /// As a steward with `signer` (our key), signs `checkpoint` unless it is what we signed
    /// last; our current text and line, to send.
    pub fn sign(
        &mut self,
        checkpoint: &Checkpoint,
        signer: &NoteSigner<'_>,
    ) -> Option<(String, String)> {
        let own = self.own?;
        let text = checkpoint.text();
        if self.signed.as_ref().is_none_or(|(t, _)| *t != text) {
            let line = signer.signature_line(&text);
            self.keep(text.clone(), own, line.clone());
            self.signed = Some((text, line));
        }
        self.signed.clone()
    }

    /// A steward's signature, replacing the one it sent before.
    fn keep(&mut self, text: String, steward: usize, line: String) {
        self.held.insert(steward, (text, line));
        if let Some(note) = self.cosigned_current() {
            self.complete = Some(note);
        }
    }

    /// A cosignature datagram's body (after the kind byte): kept if it is a steward's valid
    /// signature over this network's checkpoint of the current epoch.
    pub fn receive(&mut self, body: &[u8]) -> Result<(), Refused> {
        let (len, rest) = body.split_first_chunk::<2>().ok_or(Refused::Malformed)?;
        let (text, line) = rest
            .split_at_checked(usize::from(u16::from_be_bytes(*len)))
            .ok_or(Refused::Malformed)?;
        let text = core::str::from_utf8(text).map_err(|_| Refused::Malformed)?;
        let line = core::str::from_utf8(line).map_err(|_| Refused::Malformed)?;
        if line.contains('\n') {
            return Err(Refused::Malformed);
        }
        let checkpoint = Checkpoint::parse(text).map_err(|_| Refused::NotOurs)?;
        if checkpoint.network != self.stewards.network() {
            return Err(Refused::NotOurs);
        }
        if checkpoint.epoch != self.epoch {
            return Err(Refused::OtherEpoch);
        }
        let note = format!("{text}\n{line}\n");
        let parsed = Note::parse(note.as_bytes()).map_err(|_| Refused::Malformed)?;
        let signed = parsed
            .verify(self.stewards.keys())
            .map_err(|_| Refused::BadSignature)?;
        let &[steward] = signed.as_slice() else {
            return Err(Refused::BadSignature);
        };
        self.keep(text.to_owned(), steward, line.to_owned());
        Ok(())
    }

    /// The text most stewards last signed, as a signed note, if at least k did. (With
    /// n < 2k stewards two texts cannot both reach k; with more, the first in text order of
    /// those with the most signatures.)
    fn cosigned_current(&self) -> Option<String> {
        let mut by_text: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (text, line) in self.held.values() {
            by_text.entry(text).or_default().push(line);
        }
        let most = by_text.values().map(Vec::len).max()?;
        let (text, lines) = by_text
            .into_iter()
            .find(|(_, lines)| lines.len() == most && most >= self.stewards.threshold())?;
        let mut note = format!("{text}\n");
        for line in lines {
            note.push_str(line);
            note.push('\n');
        }
        Some(note)
    }

    /// The cosigned checkpoint to serve: this epoch's once k stewards signed one text (the
    /// last such, while the stewards move to a new view), the last epoch's until then.
    pub fn cosigned(&self) -> Option<String> {
        self.complete.clone().or_else(|| self.previous.clone())
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::{IdentityKeyPair, checkpoint::empty_tree_root};

    fn checkpoint(epoch: u32, network: &str) -> Checkpoint {
        Checkpoint {
            network: network.into(),
            tree_size: 0,
            tree_root: empty_tree_root(),
            reputation: [0; 32],
            epoch: Epoch(epoch),
            descriptors: [1; 32],
            topology: [2; 32],
        }
    }

    /// Three stewards' key pairs.
    fn steward_pairs() -> Vec<IdentityKeyPair> {
        (1..=3u8)
            .map(|i| IdentityKeyPair::from_seed(&[i; 32]))
            .collect()
    }

    /// Their signers, and the stewards of `pb.test/net` with k = 2.
    fn stewards(pairs: &[IdentityKeyPair]) -> (Vec<NoteSigner<'_>>, Stewards) {
        let signers: Vec<NoteSigner<'_>> = pairs
            .iter()
            .enumerate()
            .map(|(i, p)| NoteSigner::new(&format!("pb.test/s{i}"), p).unwrap())
            .collect();
        let keys = signers.iter().map(|s| s.key().clone()).collect();
        (signers, Stewards::new("pb.test/net", keys, 2).unwrap())
    }

    #[test]
    fn only_stewards_valid_signatures_over_this_epochs_checkpoint_are_kept() {
        let pairs = steward_pairs();
        let (signers, stewards) = stewards(&pairs);
        let mut c = Cosigning::new(stewards, None, Epoch(4), Duration::ZERO);
        assert!(!c.is_steward());
        let text = checkpoint(4, "pb.test/net").text();
        let body = |text: &str, line: &str| datagram(text, line)[1..].to_vec();
        // One steward's signature: kept, not enough.
        c.receive(&body(&text, &signers[0].signature_line(&text)))
            .unwrap();
        assert_eq!(c.cosigned(), None);
        // Refusals: another network, another epoch, a line over another text, an
        // outsider's key under a steward's name, junk.
        let other = checkpoint(4, "pb.test/other").text();
        assert_eq!(
            c.receive(&body(&other, &signers[1].signature_line(&other))),
            Err(Refused::NotOurs)
        );
        let later = checkpoint(5, "pb.test/net").text();
        assert_eq!(
            c.receive(&body(&later, &signers[1].signature_line(&later))),
            Err(Refused::OtherEpoch)
        );
        assert_eq!(
            c.receive(&body(&text, &signers[1].signature_line(&later))),
            Err(Refused::BadSignature)
        );
        let outsider = IdentityKeyPair::from_seed(&[9; 32]);
        let impostor = NoteSigner::new("pb.test/s1", &outsider).unwrap();
        assert_eq!(
            c.receive(&body(&text, &impostor.signature_line(&text))),
            Err(Refused::BadSignature)
        );
        assert_eq!(c.receive(&[0, 200, 1]), Err(Refused::Malformed));
        assert_eq!(c.cosigned(), None);
        // A second steward: the note opens with k = 2.
        c.receive(&body(&text, &signers[1].signature_line(&text)))
            .unwrap();
        let note = c.cosigned().unwrap();
        let (opened, signed) = c.stewards().open(note.as_bytes()).unwrap();
        assert_eq!((opened.epoch, signed), (Epoch(4), vec![0, 1]));
        // The next epoch: the last note is served until the new one is complete.
        c.set_epoch(Epoch(5));
        assert_eq!(c.cosigned(), Some(note));
        // A steward signs its view once, and again only when it changes.
        let mut own = Cosigning::new(c.stewards().clone(), Some(2), Epoch(5), Duration::ZERO);
        let first = own
            .sign(&checkpoint(5, "pb.test/net"), &signers[2])
            .unwrap();
        assert_eq!(
            own.sign(&checkpoint(5, "pb.test/net"), &signers[2])
                .unwrap(),
            first
        );
        let moved = Checkpoint {
            topology: [3; 32],
            ..checkpoint(5, "pb.test/net")
        };
        assert_ne!(own.sign(&moved, &signers[2]).unwrap(), first);
    }

    /// Stewards whose views go through many texts (a partition, churn): each steward's last
    /// signature counts, the last complete note is served meanwhile, and the text k stewards
    /// move to becomes the cosigned one however many came before.
    #[test]
    fn a_stewards_new_signature_replaces_its_old_one() {
        let pairs = steward_pairs();
        let (signers, stewards) = stewards(&pairs);
        let mut c = Cosigning::new(stewards, None, Epoch(4), Duration::ZERO);
        let body =
            |text: &str, s: usize| datagram(text, &signers[s].signature_line(text))[1..].to_vec();
        let view = |t: u8| {
            Checkpoint {
                topology: [t; 32],
                ..checkpoint(4, "pb.test/net")
            }
            .text()
        };
        c.receive(&body(&view(0), 0)).unwrap();
        c.receive(&body(&view(0), 1)).unwrap();
        let first = c.cosigned().unwrap();
        assert!(first.starts_with(&view(0)));
        // Twenty views later (more than any fixed number of texts), two stewards agree again.
        for t in 1..=20 {
            c.receive(&body(&view(t), 0)).unwrap();
            c.receive(&body(&view(t + 100), 1)).unwrap();
            // Steward 0 left view 0: it no longer has k signatures, but stays served.
            assert_eq!(c.cosigned(), Some(first.clone()), "view {t}");
        }
        c.receive(&body(&view(20), 2)).unwrap();
        let (opened, signed) = c.stewards().open(c.cosigned().unwrap().as_bytes()).unwrap();
        assert_eq!((opened.topology, signed), ([20; 32], vec![0, 2]));
        assert_eq!(c.held.len(), 3, "one text per steward");
    }
}
