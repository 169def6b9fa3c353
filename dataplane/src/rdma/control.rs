//! What the two ends exchange over the control path: [`QpInfo`] and its text encoding.
//!
//! `AUTOLOC.CONNECT rdma <client QpInfo>` carries the client's info as one Redis argument; the
//! reply is the server's info in the same encoding. Both are [`QpInfo::to_text`]:
//!
//! ```text
//! R1:llll:qqqqqq:pppppp:gggggggggggggggggggggggggggggggg:m:aaaaaaaaaaaaaaaa:kkkkkkkk:ssssssss:zzzzzzzz:ssssssss:zzzzzzzz
//!    lid  qpn    psn    gid (16 bytes, network order)    mtu addr (MR base)  rkey    request ring    response ring
//!                                                                                    slots  slot size slots  slot size
//! ```
//!
//! Every field is lowercase hex of a fixed width, so the whole text has a fixed length
//! ([`QpInfo::TEXT_LEN`]). Parsing is strict: the exact version tag, exactly twelve fields, exact
//! widths, lowercase hex digits only, an MTU code the verbs know, a usable queue-pair number, and
//! ring geometries that [`RingConfig::validate`] accepts. Anything else is a [`QpInfoError`]
//! naming the field. The peer's text is input from the network: nothing in it is trusted beyond
//! these checks (its address and rkey are only ever handed to the NIC, which checks them).

use std::fmt::{self, Write as _};

use crate::ring::{RingConfig, RingError};

/// The version tag that starts the text encoding.
const TAG: &str = "R1";
/// Field widths in hex digits, after the tag, in order.
const WIDTHS: [usize; 11] = [4, 6, 6, 32, 1, 16, 8, 8, 8, 8, 8];
/// Field names for errors, in the same order.
const NAMES: [&str; 11] = [
    "lid",
    "qpn",
    "psn",
    "gid",
    "mtu",
    "addr",
    "rkey",
    "request slots",
    "request slot size",
    "response slots",
    "response slot size",
];

/// Largest 24-bit value (queue-pair numbers and packet sequence numbers are 24 bits).
pub const MAX_24: u32 = (1 << 24) - 1;
/// Lowest and highest `ibv_mtu` codes (256 to 4096 bytes).
pub const MTU_CODES: std::ops::RangeInclusive<u8> = 1..=5;

/// How to reach one queue pair: the part of [`QpInfo`] the verbs handshake needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpEndpoint {
    /// Local identifier of the port (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Queue-pair number (24 bits).
    pub qpn: u32,
    /// First packet sequence number this end sends (24 bits).
    pub psn: u32,
    /// The port's GID at the chosen index, in network byte order (RoCE routes on it).
    pub gid: [u8; 16],
    /// The port's active MTU as an `ibv_mtu` code (1 = 256 bytes ... 5 = 4096 bytes).
    pub mtu: u8,
}

/// Everything one end tells the other over the control path: its queue pair and where its rings
/// are.
///
/// Both ends lay out their registered memory the same way (see [`super::layout`]), so the base
/// address and rkey of the peer's region plus the shared geometry locate every remote ring slot
/// and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpInfo {
    pub endpoint: QpEndpoint,
    /// Virtual address of the start of the sender's registered region.
    pub addr: u64,
    /// Remote key of that region (grants RDMA WRITE into it).
    pub rkey: u32,
    /// Geometry of the request ring (client -> server).
    pub requests: RingConfig,
    /// Geometry of the response ring (server -> client).
    pub responses: RingConfig,
}

/// Why a [`QpInfo`] text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QpInfoError {
    /// The text has the wrong length (truncated or padded).
    #[error("rdma queue-pair info is {len} bytes, expected {expected}")]
    Length { len: usize, expected: usize },
    /// The text does not start with the version tag this build speaks.
    #[error("rdma queue-pair info has an unknown version tag (expected '{TAG}')")]
    Version,
    /// The text does not split into the expected number of fields.
    #[error("rdma queue-pair info has {count} fields, expected {expected}")]
    FieldCount { count: usize, expected: usize },
    /// One field is malformed or out of range.
    #[error("rdma queue-pair info field '{field}': {reason}")]
    Field {
        field: &'static str,
        reason: &'static str,
    },
    /// A ring geometry that no ring can have.
    #[error("rdma queue-pair info {ring} ring: {source}")]
    Geometry {
        ring: &'static str,
        #[source]
        source: RingError,
    },
}

impl QpInfo {
    /// Length of [`QpInfo::to_text`]'s output.
    pub const TEXT_LEN: usize = {
        let mut len = TAG.len();
        let mut i = 0;
        while i < WIDTHS.len() {
            len += 1 + WIDTHS[i];
            i += 1;
        }
        len
    };

    /// The compact text form sent over the control path.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(Self::TEXT_LEN);
        let e = &self.endpoint;
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            "{TAG}:{:04x}:{:06x}:{:06x}:",
            e.lid,
            e.qpn & MAX_24,
            e.psn & MAX_24
        );
        autoloc_functions::hex::push(&mut s, &e.gid);
        let _ = write!(
            s,
            ":{:01x}:{:016x}:{:08x}:{:08x}:{:08x}:{:08x}:{:08x}",
            e.mtu & 0xf,
            self.addr,
            self.rkey,
            self.requests.slot_count,
            self.requests.slot_size,
            self.responses.slot_count,
            self.responses.slot_size
        );
        debug_assert_eq!(s.len(), Self::TEXT_LEN);
        s
    }

    /// Parses [`QpInfo::to_text`]'s output, strictly (see the module docs).
    pub fn from_text(text: &str) -> Result<Self, QpInfoError> {
        if text.len() != Self::TEXT_LEN {
            return Err(QpInfoError::Length {
                len: text.len(),
                expected: Self::TEXT_LEN,
            });
        }
        let mut parts = text.split(':');
        if parts.next() != Some(TAG) {
            return Err(QpInfoError::Version);
        }
        let fields: Vec<&str> = parts.collect();
        if fields.len() != WIDTHS.len() {
            return Err(QpInfoError::FieldCount {
                count: fields.len() + 1,
                expected: WIDTHS.len() + 1,
            });
        }
        let mut values = [0u64; 11];
        for (i, field) in fields.iter().enumerate() {
            if i == 3 {
                continue; // the gid is 16 bytes, parsed below
            }
            values[i] = hex_field(field, WIDTHS[i], NAMES[i])?;
        }
        let gid = gid_field(fields[3])?;
        let qpn = values[1] as u32;
        if qpn < 2 {
            return Err(QpInfoError::Field {
                field: "qpn",
                reason: "queue pairs 0 and 1 are special and cannot be connected",
            });
        }
        let mtu = values[4] as u8;
        if !MTU_CODES.contains(&mtu) {
            return Err(QpInfoError::Field {
                field: "mtu",
                reason: "not an ibv_mtu code (1..=5)",
            });
        }
        let u32_of = |v: u64| v as u32; // width 8 guarantees the value fits
        let requests = RingConfig {
            slot_count: u32_of(values[7]),
            slot_size: u32_of(values[8]),
        };
        let responses = RingConfig {
            slot_count: u32_of(values[9]),
            slot_size: u32_of(values[10]),
        };
        requests
            .validate()
            .map_err(|source| QpInfoError::Geometry {
                ring: "request",
                source,
            })?;
        responses
            .validate()
            .map_err(|source| QpInfoError::Geometry {
                ring: "response",
                source,
            })?;
        Ok(QpInfo {
            endpoint: QpEndpoint {
                lid: values[0] as u16,
                qpn,
                psn: values[2] as u32,
                gid,
                mtu,
            },
            addr: values[5],
            rkey: u32_of(values[6]),
            requests,
            responses,
        })
    }
}

impl fmt::Display for QpInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// Value of one lowercase hex digit.
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// A fixed-width lowercase hex field of at most 16 digits.
fn hex_field(field: &str, width: usize, name: &'static str) -> Result<u64, QpInfoError> {
    if field.len() != width {
        return Err(QpInfoError::Field {
            field: name,
            reason: "wrong number of hex digits",
        });
    }
    field.bytes().try_fold(0u64, |acc, b| {
        let d = hex_digit(b).ok_or(QpInfoError::Field {
            field: name,
            reason: "not a lowercase hex digit",
        })?;
        Ok(acc << 4 | u64::from(d))
    })
}

/// The 32-digit gid field.
fn gid_field(field: &str) -> Result<[u8; 16], QpInfoError> {
    let bad = |reason| QpInfoError::Field {
        field: "gid",
        reason,
    };
    if field.len() != 32 {
        return Err(bad("wrong number of hex digits"));
    }
    let mut gid = [0u8; 16];
    for (out, pair) in gid.iter_mut().zip(field.as_bytes().chunks_exact(2)) {
        let (Some(hi), Some(lo)) = (hex_digit(pair[0]), hex_digit(pair[1])) else {
            return Err(bad("not a lowercase hex digit"));
        };
        *out = hi << 4 | lo;
    }
    Ok(gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> QpInfo {
        QpInfo {
            endpoint: QpEndpoint {
                lid: 0x1234,
                qpn: 0xabcdef,
                psn: 0x012345,
                gid: [
                    0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x42, 0xac, 0xff, 0xfe, 0x11, 0x00, 0x02,
                ],
                mtu: 3,
            },
            addr: 0x7f12_3456_7000,
            rkey: 0xdead_beef,
            requests: RingConfig {
                slot_count: 256,
                slot_size: 4096,
            },
            responses: RingConfig {
                slot_count: 64,
                slot_size: 1 << 16,
            },
        }
    }

    #[test]
    fn text_has_the_documented_shape() {
        let text = sample().to_text();
        assert_eq!(text.len(), QpInfo::TEXT_LEN);
        assert_eq!(QpInfo::TEXT_LEN, 2 + 11 + WIDTHS.iter().sum::<usize>());
        assert_eq!(
            text,
            "R1:1234:abcdef:012345:fe800000000000000242acfffe110002:3:00007f1234567000:deadbeef:\
             00000100:00001000:00000040:00010000"
        );
        assert_eq!(sample().to_string(), text);
    }

    #[test]
    fn round_trip() {
        let info = sample();
        assert_eq!(QpInfo::from_text(&info.to_text()), Ok(info));
        let extremes = QpInfo {
            endpoint: QpEndpoint {
                lid: u16::MAX,
                qpn: MAX_24,
                psn: 0,
                gid: [0xff; 16],
                mtu: 5,
            },
            addr: u64::MAX,
            rkey: 0,
            requests: RingConfig {
                slot_count: 1,
                slot_size: 16,
            },
            responses: RingConfig {
                slot_count: 1 << 24,
                slot_size: 1 << 30,
            },
        };
        assert_eq!(QpInfo::from_text(&extremes.to_text()), Ok(extremes));
    }

    #[test]
    fn every_truncation_is_rejected() {
        let text = sample().to_text();
        for cut in 0..text.len() {
            let err = QpInfo::from_text(&text[..cut]).unwrap_err();
            assert_eq!(
                err,
                QpInfoError::Length {
                    len: cut,
                    expected: QpInfo::TEXT_LEN
                },
                "prefix of {cut} bytes"
            );
        }
        // Dropping any single character is a truncation too.
        for i in 0..text.len() {
            let mut t = text.clone();
            t.remove(i);
            assert!(QpInfo::from_text(&t).is_err(), "without byte {i}");
        }
    }

    #[test]
    fn junk_is_rejected() {
        let text = sample().to_text();
        let reject = |t: &str| {
            let err = QpInfo::from_text(t).unwrap_err();
            // Every error is one line naming what is wrong.
            assert!(!err.to_string().contains('\n'));
            err
        };
        reject("");
        reject("hello");
        reject(&format!("{text}\n"));
        reject(&format!("{text}:"));
        reject(&format!(" {text}"));
        assert_eq!(reject(&text.replacen("R1", "R2", 1)), QpInfoError::Version);
        assert!(matches!(
            reject(&text.to_uppercase()),
            QpInfoError::Field {
                field: "qpn",
                reason: "not a lowercase hex digit"
            }
        ));
        assert_eq!(reject(&text.replacen("R1", "r1", 1)), QpInfoError::Version);
        // Uppercase hex, or non-hex, in each field.
        let mut at = 3;
        for (width, name) in WIDTHS.iter().zip(NAMES) {
            for bad in [b'G', b'A', b'-', b' ', b'x'] {
                let mut t = text.clone().into_bytes();
                t[at] = bad;
                let t = String::from_utf8(t).unwrap();
                assert_eq!(
                    reject(&t),
                    QpInfoError::Field {
                        field: name,
                        reason: "not a lowercase hex digit"
                    },
                    "{t}"
                );
            }
            at += width + 1;
        }
        // A separator moved: same length, wrong widths.
        let moved = text.replacen(":1234:abcdef", ":12341:bcdef", 1);
        assert_eq!(moved.len(), text.len());
        assert!(matches!(
            reject(&moved),
            QpInfoError::Field { field: "lid", .. }
        ));
        // A separator replaced by a digit: one field fewer.
        let merged = text.replacen(":1234:", ":12340", 1);
        assert!(matches!(reject(&merged), QpInfoError::FieldCount { .. }));
        // Non-ASCII of the right byte length.
        let mut t = text.clone();
        t.replace_range(3..5, "é");
        reject(&t);
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        let with = |f: &dyn Fn(&mut QpInfo)| {
            let mut info = sample();
            f(&mut info);
            QpInfo::from_text(&info.to_text())
        };
        assert!(matches!(
            with(&|i| i.endpoint.qpn = 1),
            Err(QpInfoError::Field { field: "qpn", .. })
        ));
        assert!(matches!(
            with(&|i| i.endpoint.mtu = 0),
            Err(QpInfoError::Field { field: "mtu", .. })
        ));
        assert!(matches!(
            with(&|i| i.endpoint.mtu = 6),
            Err(QpInfoError::Field { field: "mtu", .. })
        ));
        assert!(matches!(
            with(&|i| i.requests.slot_count = 3),
            Err(QpInfoError::Geometry {
                ring: "request",
                ..
            })
        ));
        assert!(matches!(
            with(&|i| i.responses.slot_size = 12),
            Err(QpInfoError::Geometry {
                ring: "response",
                ..
            })
        ));
        assert!(matches!(
            with(&|i| i.responses.slot_count = 0),
            Err(QpInfoError::Geometry { .. })
        ));
    }
}
