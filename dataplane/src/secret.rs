//! One-time secrets that bind a data-plane link to the client that asked for it on the control
//! path: 128 random bits from the kernel, shown as 32 hex digits.

use std::io::Read;

use crate::{Error, Result};

/// A secret: 16 random bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret([u8; 16]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never shown: a log line must not hand out a link.
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A fresh secret from `/dev/urandom`.
    pub fn random() -> Result<Secret> {
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|source| Error::Io {
                op: "read /dev/urandom",
                source,
            })?;
        Ok(Secret(bytes))
    }

    /// The secret as 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        autoloc_functions::hex::encode(&self.0)
    }

    /// Parses 32 hex digits.
    pub fn from_hex(text: &str) -> Option<Secret> {
        if text.len() != 32 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Secret(bytes))
    }

    /// The secret as two words (how a shm segment's client presents it).
    pub fn words(&self) -> [u64; 2] {
        let (a, b) = self.0.split_at(8);
        let word = |s: &[u8]| s.iter().fold(0u64, |w, &b| (w << 8) | u64::from(b));
        [word(a), word(b)]
    }

    /// Compares in time independent of where the inputs differ.
    pub fn matches(&self, words: [u64; 2]) -> bool {
        let mine = self.words();
        ((mine[0] ^ words[0]) | (mine[1] ^ words[1])) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_differs() {
        let a = Secret::random().unwrap();
        let b = Secret::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(Secret::from_hex(&a.to_hex()), Some(a));
        assert!(a.matches(a.words()));
        assert!(!a.matches(b.words()));
        assert_eq!(Secret::from_hex("xyz"), None);
        assert_eq!(Secret::from_hex(&"g".repeat(32)), None);
        assert_eq!(format!("{a:?}"), "Secret(..)");
    }
}
