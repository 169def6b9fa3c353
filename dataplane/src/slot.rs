//! Redis Cluster's key slots: which of the 16384 slots a key hashes to (CRC16/XMODEM of the key,
//! or of its hash tag: the part between the first `{` and the next `}`, when not empty), the rule
//! Redis itself routes by. The module checks every key it reads or writes against it; the
//! compute side routes every request by it.

/// Slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), a byte at a time, as Redis's `crc16.c`.
const TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The CRC16/XMODEM of `bytes`.
pub fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The part of `key` that decides its slot: its hash tag if it has a non-empty one, else all of
/// it.
pub fn hashed_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hashed_part(key)) & (SLOTS as u16 - 1)
}

/// The places of equal items of `items`, grouped, in order of first appearance: how a request
/// of many keys is split by slot or by shard, and its replies put back in order.
pub fn group<K: PartialEq>(items: impl IntoIterator<Item = K>) -> Vec<(K, Vec<usize>)> {
    let mut groups: Vec<(K, Vec<usize>)> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match groups.iter_mut().find(|(k, _)| *k == item) {
            Some((_, places)) => places.push(i),
            None => groups.push((item, vec![i])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_xmodem() {
        // The check value of CRC-16/XMODEM, as Redis's crc16.c documents it.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn slots_follow_redis() {
        // As `CLUSTER KEYSLOT` answers on Redis 7.0.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"1"), 9842);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn groups_keep_first_appearance() {
        assert_eq!(
            group([3, 1, 3, 2, 1]),
            vec![(3, vec![0, 2]), (1, vec![1, 4]), (2, vec![3])]
        );
        assert!(group(Vec::<u8>::new()).is_empty());
    }

    #[test]
    fn hash_tags_pick_the_slot() {
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            key_slot(b"foo{}{bar}"),
            "empty tag: whole key"
        );
        assert_eq!(hashed_part(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hashed_part(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hashed_part(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hashed_part(b"no{tag"), b"no{tag");
    }
}
