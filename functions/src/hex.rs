//! Lowercase hex, as digests, module versions and secrets are written. On the invocation path
//! (a user function's version travels in every call's name), so no per-digit formatting.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lowercase hex, two digits per byte.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push(&mut out, bytes);
    out
}

/// Appends `bytes` to `out` as lowercase hex.
pub fn push(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

/// Whether `prefix` is a non-empty prefix of `bytes` written as lowercase hex (without writing
/// them out).
pub fn has_prefix(bytes: &[u8], prefix: &[u8]) -> bool {
    !prefix.is_empty()
        && prefix.len() <= bytes.len() * 2
        && prefix.iter().enumerate().all(|(i, &c)| {
            let b = bytes[i / 2];
            let nibble = if i % 2 == 0 { b >> 4 } else { b & 15 };
            DIGITS[usize::from(nibble)] == c
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_byte_as_two_lowercase_digits() {
        let all: Vec<u8> = (0..=255).collect();
        let want: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(encode(&all), want);
        assert_eq!(encode(&[]), "");
        let mut s = "v@".to_string();
        push(&mut s, &[0xab, 0x01]);
        assert_eq!(s, "v@ab01");
    }

    #[test]
    fn prefixes_are_checked_digit_by_digit() {
        let bytes = [0xab, 0x0f, 0x10];
        for n in 1..=6 {
            assert!(has_prefix(&bytes, &b"ab0f10"[..n]), "{n}");
        }
        assert!(!has_prefix(&bytes, b""));
        assert!(!has_prefix(&bytes, b"ab0f100"));
        assert!(!has_prefix(&bytes, b"AB"));
        assert!(!has_prefix(&bytes, b"ab1"));
        assert!(!has_prefix(&bytes, b"b"));
    }
}
