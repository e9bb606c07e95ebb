//! Signed notes (C2SP signed-note, <https://c2sp.org/signed-note>) with Ed25519 keys: text
//! ending in a newline, a blank line, then one line per signature:
//!
//! ```text
//! — <key name> base64(key ID (4 bytes, big-endian) || Ed25519 signature over the text)
//! ```
//!
//! The key ID is `SHA-256(key name || 0x0A || 0x01 || public key)[:4]`. A verifier knows its
//! keys by name and public key: it ignores signatures of keys it does not know (even if they
//! share a name or an ID with one it knows, but not both), verifies every one it knows, and
//! refuses the whole note if any of those fails. Parsing is bounded: at most [`MAX_NOTE`]
//! bytes and [`MAX_SIGNATURES`] signature lines.
//!
//! The stewards' epoch checkpoints ([`crate::checkpoint`]) are signed notes; a note's text
//! means nothing until a trusted key's signature over it has been checked.

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use ring::digest::{SHA256, digest};

use crate::descriptor::{IdentityKey, IdentityKeyPair};

/// The longest note parsed, in bytes.
pub const MAX_NOTE: usize = 16 * 1024;
/// The most signature lines parsed (the C2SP minimum is 16).
pub const MAX_SIGNATURES: usize = 64;
/// The signature type byte of Ed25519 in key IDs.
const ED25519: u8 = 0x01;
/// An Ed25519 signature's length.
const SIGNATURE_LEN: usize = 64;

/// Why a note, a key name or a verifier key was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Longer than [`MAX_NOTE`], or more than [`MAX_SIGNATURES`] signature lines.
    #[error("the note is too large")]
    TooLarge,
    /// Not UTF-8, or an ASCII control character other than newline.
    #[error("the note holds bytes a note may not")]
    BadCharacters,
    /// No blank line before the signatures, no signature, or a text not ending in a newline.
    #[error("the note is malformed")]
    Malformed,
    /// A signature line that is not `— name base64` with at least a key ID.
    #[error("a signature line is malformed")]
    BadSignatureLine,
    /// A key name that is empty or holds a space or a plus.
    #[error("a key name is empty or holds a space or a plus")]
    BadKeyName,
    /// A verifier key string that is not `name+hex8+base64(0x01 || key)`.
    #[error("a verifier key is malformed")]
    BadVerifierKey,
    /// A known key's signature did not verify.
    #[error("a signature by {0} did not verify")]
    BadSignature(usize),
    /// No known key signed the note.
    #[error("no known key signed the note")]
    Unsigned,
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains('+') {
        return Err(NoteError::BadKeyName);
    }
    Ok(())
}

/// The C2SP key ID of an Ed25519 key under `name`.
pub fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut input = Vec::with_capacity(name.len() + 2 + 32);
    input.extend_from_slice(name.as_bytes());
    input.push(b'\n');
    input.push(ED25519);
    input.extend_from_slice(public);
    let hash = digest(&SHA256, &input);
    let h = hash.as_ref();
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

/// A key a verifier trusts: its name and Ed25519 public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteKey {
    name: String,
    id: u32,
    public: IdentityKey,
}

impl NoteKey {
    /// The key `public` under `name`.
    pub fn new(name: &str, public: IdentityKey) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            id: key_id(name, &public.0),
            public,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its public key.
    pub fn public(&self) -> IdentityKey {
        self.public
    }

    /// The verifier key string of Go's `golang.org/x/mod/sumdb/note`:
    /// `name+hex(key ID)+base64(0x01 || public key)`.
    pub fn vkey(&self) -> String {
        let mut key = vec![ED25519];
        key.extend_from_slice(&self.public.0);
        format!("{}+{:08x}+{}", self.name, self.id, BASE64.encode(key))
    }

    /// Parses a verifier key string (as [`NoteKey::vkey`] writes it), checking its ID.
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        // The key's base64 may hold '+' too: only the first two separate.
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadVerifierKey);
        };
        if id.len() != 8 {
            return Err(NoteError::BadVerifierKey);
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| NoteError::BadVerifierKey)?;
        let key = BASE64.decode(key).map_err(|_| NoteError::BadVerifierKey)?;
        let (&[ED25519], public) = key.split_at_checked(1).ok_or(NoteError::BadVerifierKey)? else {
            return Err(NoteError::BadVerifierKey);
        };
        let public: [u8; 32] = public.try_into().map_err(|_| NoteError::BadVerifierKey)?;
        let note_key = Self::new(name, IdentityKey(public))?;
        if note_key.id != id {
            return Err(NoteError::BadVerifierKey);
        }
        Ok(note_key)
    }
}

/// A signer: a name and an Ed25519 key pair.
pub struct NoteSigner<'k> {
    key: NoteKey,
    pair: &'k IdentityKeyPair,
}

impl core::fmt::Debug for NoteSigner<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<'k> NoteSigner<'k> {
    /// Signs as `name` with `pair`.
    pub fn new(name: &str, pair: &'k IdentityKeyPair) -> Result<Self, NoteError> {
        Ok(Self {
            key: NoteKey::new(name, pair.public())?,
            pair,
        })
    }

    /// The key a verifier needs.
    pub fn key(&self) -> &NoteKey {
        &self.key
    }

    /// The signature line for `text` (without its newline).
    pub fn signature_line(&self, text: &str) -> String {
        let mut sig = self.key.id.to_be_bytes().to_vec();
        sig.extend_from_slice(&self.pair.sign_message(b"", text.as_bytes()));
        format!("— {} {}", self.key.name, BASE64.encode(sig))
    }
}

/// `text` signed by `signers`: the text, a blank line, a signature line each.
pub fn sign(text: &str, signers: &[&NoteSigner<'_>]) -> Result<String, NoteError> {
    check_text(text)?;
    let mut out = format!("{text}\n");
    for signer in signers {
        out.push_str(&signer.signature_line(text));
        out.push('\n');
    }
    Ok(out)
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed);
    }
    if text.chars().any(|c| c.is_ascii_control() && c != '\n') {
        return Err(NoteError::BadCharacters);
    }
    Ok(())
}

/// One signature line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature<'n> {
    /// The key name.
    pub name: &'n str,
    /// The key ID.
    pub id: u32,
    /// What follows the key ID.
    pub signature: Vec<u8>,
}

/// A parsed, not yet verified note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note<'n> {
    /// The signed text, with its final newline.
    pub text: &'n str,
    /// Its signature lines, in order.
    pub signatures: Vec<Signature<'n>>,
}

impl<'n> Note<'n> {
    /// Parses `bytes` as a signed note (nothing is verified yet).
    pub fn parse(bytes: &'n [u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE {
            return Err(NoteError::TooLarge);
        }
        let note = core::str::from_utf8(bytes).map_err(|_| NoteError::BadCharacters)?;
        if note.chars().any(|c| c.is_ascii_control() && c != '\n') {
            return Err(NoteError::BadCharacters);
        }
        // The text ends at the last blank line: "\n\n" whose second newline starts it.
        let split = note.rfind("\n\n").ok_or(NoteError::Malformed)?;
        let (text, rest) = (&note[..=split], &note[split + 2..]);
        if !rest.ends_with('\n') {
            return Err(NoteError::Malformed);
        }
        let lines: Vec<&str> = rest[..rest.len() - 1].split('\n').collect();
        if lines.len() > MAX_SIGNATURES {
            return Err(NoteError::TooLarge);
        }
        let mut signatures = Vec::with_capacity(lines.len());
        for line in lines {
            let line = line.strip_prefix("— ").ok_or(NoteError::BadSignatureLine)?;
            let (name, b64) = line.split_once(' ').ok_or(NoteError::BadSignatureLine)?;
            check_name(name).map_err(|_| NoteError::BadSignatureLine)?;
            let raw = BASE64
                .decode(b64)
                .map_err(|_| NoteError::BadSignatureLine)?;
            let (id, signature) = raw
                .split_first_chunk::<4>()
                .ok_or(NoteError::BadSignatureLine)?;
            signatures.push(Signature {
                name,
                id: u32::from_be_bytes(*id),
                signature: signature.to_vec(),
            });
        }
        if signatures.is_empty() {
            return Err(NoteError::Malformed);
        }
        Ok(Self { text, signatures })
    }

    /// Verifies the note against `keys`: the indices (into `keys`) of the known keys whose
    /// signatures verified, each once. Signatures of unknown keys are ignored; one of a
    /// known key that fails refuses the whole note, and so does a note no known key signed.
    pub fn verify(&self, keys: &[NoteKey]) -> Result<Vec<usize>, NoteError> {
        let mut verified = Vec::new();
        for sig in &self.signatures {
            let Some(index) = keys
                .iter()
                .position(|k| k.name == sig.name && k.id == sig.id)
            else {
                continue;
            };
            let good = sig.signature.len() == SIGNATURE_LEN
                && keys[index]
                    .public
                    .verify(b"", self.text.as_bytes(), &sig.signature);
            if !good {
                return Err(NoteError::BadSignature(index));
            }
            if !verified.contains(&index) {
                verified.push(index);
            }
        }
        if verified.is_empty() {
            return Err(NoteError::Unsigned);
        }
        Ok(verified)
    }
}

#[cfg(test)]
mod tests;
