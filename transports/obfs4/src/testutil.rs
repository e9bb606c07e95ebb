//! Test helpers: hex decoding and a deterministic [`Entropy`].

use crate::Entropy;

pub(crate) fn hex(text: &str) -> Vec<u8> {
    assert_eq!(text.len() % 2, 0, "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("test hex is valid"))
        .collect()
}

pub(crate) fn hex32(text: &str) -> [u8; 32] {
    hex(text).try_into().expect("test hex is 32 bytes")
}

/// A seeded xorshift64* stream: deterministic, not secure, for tests only.
#[derive(Debug)]
pub(crate) struct SeededEntropy(u64);

impl SeededEntropy {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
}

impl Entropy for SeededEntropy {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            *byte = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
        }
    }
}

/// Replays fixed bytes first (to force chosen keys or padding), then falls back to a seed.
#[derive(Debug)]
pub(crate) struct ScriptedEntropy {
    script: Vec<u8>,
    fallback: SeededEntropy,
}

impl ScriptedEntropy {
    pub(crate) fn new(script: Vec<u8>) -> Self {
        Self {
            script,
            fallback: SeededEntropy::new(7),
        }
    }
}

impl Entropy for ScriptedEntropy {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let from_script = dest.len().min(self.script.len());
        dest[..from_script].copy_from_slice(&self.script[..from_script]);
        self.script.drain(..from_script);
        self.fallback.fill_bytes(&mut dest[from_script..]);
    }
}
