//! The binary wire format shared by the shm, tcp (io_uring) and rdma transports.
//!
//! A frame is a fixed 16-byte [`Header`] followed by `payload_len` bytes of payload. Integers are
//! little-endian. Every frame carries the request id it belongs to; replies echo it.
//!
//! # Payloads
//!
//! Primitives: `blob` = u32 length + bytes (length < `u32::MAX`); `opt` = a blob, or `u32::MAX`
//! alone for "no value"; `str` = a blob holding UTF-8; `list<T>` = u32 count + count × T.
//!
//! | kind            | code   | payload                                              |
//! |-----------------|--------|------------------------------------------------------|
//! | `Get`           | `0x01` | key: blob                                            |
//! | `MultiGet`      | `0x02` | keys: list\<blob\>                                   |
//! | `Set`           | `0x03` | key: blob, value: blob                               |
//! | `Invoke`        | `0x04` | function: str, args: list\<blob\>                    |
//! | `MultiSet`      | `0x06` | pairs: list\<(key: blob, value: blob)\> (all set in one step, or none) |
//! | `Hello`         | `0x05` | token: blob (the secret `AUTOLOC.CONNECT tcp` handed out; first frame of a tcp connection, no reply) |
//! | `InvokeWith`    | `0x08` | function: str, args: list\<blob\>, read_set: list\<(key: blob, value: opt)\> (an invocation forwarded from the shard that pushed it back: the values it read there, for the keys this node does not serve) |
//! | `CheckVersion`  | `0x07` | function: str, version: blob (a hex prefix of the module's SHA-256); answered `Ok` if that version is loaded, else `Error` (`STALE`, or `ERR` for an unknown function) |
//! | `Value`         | `0x81` | value: opt                                           |
//! | `Values`        | `0x82` | values: list\<opt\>                                  |
//! | `Ok`            | `0x83` | (empty)                                              |
//! | `InvokeReply`   | `0x84` | storage_cpu_ns: u64, queue_ns: u64, keys_read: u64, bytes_read: u64, reads: u64, result: blob |
//! | `Error`         | `0x85` | code: u8 ([`ErrorCode`]), message: str               |
//! | `Pushback`      | `0x86` | storage_cpu_ns: u64, queue_ns: u64, keys_read: u64, bytes_read: u64, reads: u64, read_set: list\<(key: blob, value: opt)\>, elsewhere: list\<blob\> (the keys of the read that met keys of another shard; none for a budget spent) |
//!
//! A payload must be consumed exactly: trailing bytes are malformed.
//!
//! # Decoding
//!
//! Two phases, as in mini-redis: [`check`] looks at a buffer and says whether it starts with one
//! whole, valid frame ([`WireError::Incomplete`] with the number of missing bytes if not, another
//! error if the bytes can never become a frame); [`parse`] then builds a [`Frame`] that borrows
//! from the buffer (keys, values and lists are views, nothing is copied). [`decode`] does both.
//! Encoding writes into a caller's `Vec` ([`encode`]) or a fixed slot ([`encode_into`]) with no
//! allocation of its own.
//!
//! # Fragments (ring links only)
//!
//! The ring transports (shm, rdma) carry a frame larger than a ring slot as a run of fragments:
//! slots whose header has [`FLAG_FRAGMENT`] in `flags`, the whole frame's kind and request id,
//! and a payload of total: u64, offset: u64, then a chunk of the whole frame's bytes. Fragments
//! never leave the link ([`crate::frag`] documents them); [`check`] rejects them as it rejects
//! any nonzero flags.

use std::fmt;

pub use autoloc_functions::ErrorCode;

/// First byte of every frame.
pub const MAGIC: u8 = 0xA1;
/// Format version; a decoder rejects any other.
pub const VERSION: u8 = 1;
/// Size of [`Header`] on the wire.
pub const HEADER_LEN: usize = 16;
/// Default [`Limits::max_payload`].
pub const DEFAULT_MAX_PAYLOAD: usize = 64 << 20;
/// Length word that stands for "no value" in an `opt`.
const NIL: u32 = u32::MAX;
/// [`Header::flags`] of a link-level fragment of a frame too large for one ring slot (see
/// [`crate::frag`]). Not a frame: [`check`] rejects it.
pub const FLAG_FRAGMENT: u8 = 0x01;

/// What a storage-side invocation cost and read, as its `InvokeReply` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InvokeCost {
    /// Storage CPU ns the run took.
    pub storage_cpu_ns: u64,
    /// Ns the request waited in the storage side's queue.
    pub queue_ns: u64,
    /// Keys it read.
    pub keys_read: u64,
    /// Value bytes it read.
    pub bytes_read: u64,
    /// Store accesses it made (each would be a round trip compute-side).
    pub reads: u64,
}

/// The costs of several storage-side requests of one invocation (a hop's parts, a forwarded
/// run's shards), summed.
impl std::ops::AddAssign for InvokeCost {
    fn add_assign(&mut self, more: InvokeCost) {
        self.storage_cpu_ns += more.storage_cpu_ns;
        self.queue_ns += more.queue_ns;
        self.keys_read += more.keys_read;
        self.bytes_read += more.bytes_read;
        self.reads += more.reads;
    }
}

impl InvokeCost {
    /// Bytes of a cost on the wire: five u64.
    const LEN: usize = 40;

    fn write(&self, w: &mut Writer<'_>) {
        for v in [
            self.storage_cpu_ns,
            self.queue_ns,
            self.keys_read,
            self.bytes_read,
            self.reads,
        ] {
            w.put(&v.to_le_bytes());
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<InvokeCost> {
        Ok(InvokeCost {
            storage_cpu_ns: r.u64()?,
            queue_ns: r.u64()?,
            keys_read: r.u64()?,
            bytes_read: r.u64()?,
            reads: r.u64()?,
        })
    }
}

/// Errors of encoding and decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer holds the start of a frame but not all of it: read `needed` more bytes.
    #[error("incomplete frame: {needed} more bytes needed")]
    Incomplete { needed: usize },
    /// The bytes can never be a valid frame.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// The header announces a payload over the configured limit (or one that cannot be encoded).
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    Oversized { len: usize, max: usize },
    /// The encoded frame does not fit the caller's buffer.
    #[error("frame of {len} bytes does not fit a buffer of {capacity}")]
    NoRoom { len: usize, capacity: usize },
}

impl WireError {
    /// The code of the error reply that answers bytes failing this way.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::Oversized { .. } | WireError::NoRoom { .. } => ErrorCode::TooLarge,
            WireError::Incomplete { .. } | WireError::Malformed(_) => ErrorCode::Malformed,
        }
    }
}

type Result<T, E = WireError> = std::result::Result<T, E>;

/// Limits a decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload accepted; a larger `payload_len` is [`WireError::Oversized`] as soon as the
    /// header is read.
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// The fixed frame header. The struct documents the layout; on the wire each field is written
/// little-endian at its `repr(C)` offset.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Always [`MAGIC`].
    pub magic: u8,
    /// Always [`VERSION`].
    pub version: u8,
    /// A [`Kind`] code.
    pub kind: u8,
    /// 0 in a frame (a decoder rejects unknown flags rather than misread them);
    /// [`FLAG_FRAGMENT`] in a ring link's fragment, which never reaches a decoder.
    pub flags: u8,
    /// Bytes of payload after the header.
    pub payload_len: u32,
    /// Chosen by the requester, echoed by the reply.
    pub request_id: u64,
}

const _: () = {
    assert!(std::mem::size_of::<Header>() == HEADER_LEN);
    assert!(std::mem::align_of::<Header>() == 8);
    assert!(std::mem::offset_of!(Header, magic) == 0);
    assert!(std::mem::offset_of!(Header, version) == 1);
    assert!(std::mem::offset_of!(Header, kind) == 2);
    assert!(std::mem::offset_of!(Header, flags) == 3);
    assert!(std::mem::offset_of!(Header, payload_len) == 4);
    assert!(std::mem::offset_of!(Header, request_id) == 8);
};

impl Header {
    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.magic;
        b[1] = self.version;
        b[2] = self.kind;
        b[3] = self.flags;
        b[4..8].copy_from_slice(&self.payload_len.to_le_bytes());
        b[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        b
    }

    /// Reads a header's fields (without validating them).
    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Self {
        let mut len = [0u8; 4];
        len.copy_from_slice(&b[4..8]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[8..16]);
        Self {
            magic: b[0],
            version: b[1],
            kind: b[2],
            flags: b[3],
            payload_len: u32::from_le_bytes(len),
            request_id: u64::from_le_bytes(id),
        }
    }
}

/// Message kinds: requests have the top bit clear, replies set.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Get = 0x01,
    MultiGet = 0x02,
    Set = 0x03,
    Invoke = 0x04,
    Hello = 0x05,
    MultiSet = 0x06,
    CheckVersion = 0x07,
    InvokeWith = 0x08,
    Value = 0x81,
    Values = 0x82,
    Ok = 0x83,
    InvokeReply = 0x84,
    Error = 0x85,
    Pushback = 0x86,
}

impl Kind {
    /// The kind with this code.
    pub fn from_u8(code: u8) -> Option<Self> {
        Some(match code {
            0x01 => Self::Get,
            0x02 => Self::MultiGet,
            0x03 => Self::Set,
            0x04 => Self::Invoke,
            0x05 => Self::Hello,
            0x06 => Self::MultiSet,
            0x07 => Self::CheckVersion,
            0x08 => Self::InvokeWith,
            0x81 => Self::Value,
            0x82 => Self::Values,
            0x83 => Self::Ok,
            0x84 => Self::InvokeReply,
            0x85 => Self::Error,
            0x86 => Self::Pushback,
            _ => return None,
        })
    }

    /// Whether this kind is a reply (server to client).
    pub fn is_reply(self) -> bool {
        self as u8 & 0x80 != 0
    }
}

/// One message. Byte fields borrow from the buffer a frame was decoded from, or from the caller
/// that builds a message to encode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Message<'a> {
    /// Read one key.
    Get { key: &'a [u8] },
    /// Read many keys; answered by [`Message::Values`] in the same order.
    MultiGet { keys: Keys<'a> },
    /// Write one key.
    Set { key: &'a [u8], value: &'a [u8] },
    /// Run a function storage-side.
    Invoke { function: &'a str, args: Keys<'a> },
    /// Run a function storage-side that another shard pushed back: `read_set` holds what it
    /// read there, and stands for the keys this node does not serve (ACL-checked as reads).
    InvokeWith {
        function: &'a str,
        args: Keys<'a>,
        read_set: ReadSet<'a>,
    },
    /// Authenticate a connection with a one-time secret from the control path; not answered.
    Hello { token: &'a [u8] },
    /// Write many keys in one atomic step; answered by `Ok` (all written) or `Error` (none).
    MultiSet { pairs: Pairs<'a> },
    /// Whether the user function `function` loaded now is the version a compute node runs a
    /// copy of (`version`: a hex prefix of its module's SHA-256); answered by `Ok`, or `Error`
    /// (`STALE` for another version, an unknown function's `ERR` for none).
    CheckVersion {
        function: &'a str,
        version: &'a [u8],
    },
    /// Reply to `Get`: the value, or `None` if the key does not exist.
    Value { value: Option<&'a [u8]> },
    /// Reply to `MultiGet`.
    Values { values: Values<'a> },
    /// Reply to `Set`.
    Ok,
    /// Reply to `Invoke` run to completion: the function's result (opaque bytes, encoded by the
    /// caller: AutoLoc uses `Output::encode`), the storage CPU and queueing time it cost, and the
    /// keys, value bytes and store accesses it read (what the placement model prices a
    /// compute-side run by: each access is a round trip there).
    InvokeReply { result: &'a [u8], cost: InvokeCost },
    /// A request failed: why, as a code, and a message for people.
    Error { code: ErrorCode, message: &'a str },
    /// Reply to `Invoke` that storage declined to finish: continue compute-side with the values it
    /// already read (`None` for keys that do not exist), after what the storage side spent; or,
    /// when it met keys of another shard (`elsewhere`), forward it there (`InvokeWith`).
    Pushback {
        read_set: ReadSet<'a>,
        elsewhere: Keys<'a>,
        cost: InvokeCost,
    },
}

/// A list of keys (or arguments).
pub type Keys<'a> = List<'a, &'a [u8]>;
/// A list of optional values.
pub type Values<'a> = List<'a, Option<&'a [u8]>>;
/// A list of (key, optional value) pairs.
pub type ReadSet<'a> = List<'a, (&'a [u8], Option<&'a [u8]>)>;
/// A list of (key, value) pairs.
pub type Pairs<'a> = List<'a, (&'a [u8], &'a [u8])>;

/// A frame: a message and the request id it belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame<'a> {
    pub request_id: u64,
    pub message: Message<'a>,
}

impl Message<'_> {
    /// This message's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Get { .. } => Kind::Get,
            Message::MultiGet { .. } => Kind::MultiGet,
            Message::Set { .. } => Kind::Set,
            Message::Invoke { .. } => Kind::Invoke,
            Message::InvokeWith { .. } => Kind::InvokeWith,
            Message::Hello { .. } => Kind::Hello,
            Message::MultiSet { .. } => Kind::MultiSet,
            Message::CheckVersion { .. } => Kind::CheckVersion,
            Message::Value { .. } => Kind::Value,
            Message::Values { .. } => Kind::Values,
            Message::Ok => Kind::Ok,
            Message::InvokeReply { .. } => Kind::InvokeReply,
            Message::Error { .. } => Kind::Error,
            Message::Pushback { .. } => Kind::Pushback,
        }
    }

    /// Bytes of payload this message encodes to; [`WireError::Oversized`] if a length or count
    /// does not fit its u32 field.
    pub fn payload_len(&self) -> Result<usize> {
        let len = match self {
            Message::Get { key } => blob_len(key)?,
            Message::MultiGet { keys } => keys.encoded_len()?,
            Message::Set { key, value } => blob_len(key)? + blob_len(value)?,
            Message::Invoke { function, args } => {
                blob_len(function.as_bytes())? + args.encoded_len()?
            }
            Message::InvokeWith {
                function,
                args,
                read_set,
            } => blob_len(function.as_bytes())? + args.encoded_len()? + read_set.encoded_len()?,
            Message::Hello { token } => blob_len(token)?,
            Message::MultiSet { pairs } => pairs.encoded_len()?,
            Message::CheckVersion { function, version } => {
                blob_len(function.as_bytes())? + blob_len(version)?
            }
            Message::Value { value } => value.encoded_len()?,
            Message::Values { values } => values.encoded_len()?,
            Message::Ok => 0,
            Message::InvokeReply { result, .. } => InvokeCost::LEN + blob_len(result)?,
            Message::Error { message, .. } => 1 + blob_len(message.as_bytes())?,
            Message::Pushback {
                read_set,
                elsewhere,
                ..
            } => InvokeCost::LEN + read_set.encoded_len()? + elsewhere.encoded_len()?,
        };
        if len > u32::MAX as usize {
            return Err(WireError::Oversized {
                len,
                max: u32::MAX as usize,
            });
        }
        Ok(len)
    }

    /// Bytes of the whole frame (header and payload).
    pub fn frame_len(&self) -> Result<usize> {
        Ok(HEADER_LEN + self.payload_len()?)
    }

    fn write_payload(&self, w: &mut Writer<'_>) {
        match self {
            Message::Get { key } => key.write(w),
            Message::MultiGet { keys } => keys.write(w),
            Message::Set { key, value } => {
                key.write(w);
                value.write(w);
            }
            Message::Invoke { function, args } => {
                function.as_bytes().write(w);
                args.write(w);
            }
            Message::InvokeWith {
                function,
                args,
                read_set,
            } => {
                function.as_bytes().write(w);
                args.write(w);
                read_set.write(w);
            }
            Message::Hello { token } => token.write(w),
            Message::MultiSet { pairs } => pairs.write(w),
            Message::CheckVersion { function, version } => {
                function.as_bytes().write(w);
                version.write(w);
            }
            Message::Value { value } => value.write(w),
            Message::Values { values } => values.write(w),
            Message::Ok => {}
            Message::InvokeReply { result, cost } => {
                cost.write(w);
                result.write(w);
            }
            Message::Error { code, message } => {
                w.put(&[code.to_u8()]);
                message.as_bytes().write(w);
            }
            Message::Pushback {
                read_set,
                elsewhere,
                cost,
            } => {
                cost.write(w);
                read_set.write(w);
                elsewhere.write(w);
            }
        }
    }
}

fn blob_len(b: &[u8]) -> Result<usize> {
    if b.len() >= NIL as usize {
        return Err(WireError::Oversized {
            len: b.len(),
            max: NIL as usize - 1,
        });
    }
    Ok(4 + b.len())
}

/// Encodes a frame at the end of `out`, growing it as needed; returns the frame's length.
pub fn encode(request_id: u64, message: &Message<'_>, out: &mut Vec<u8>) -> Result<usize> {
    let len = message.frame_len()?;
    let start = out.len();
    out.resize(start + len, 0);
    encode_into(request_id, message, &mut out[start..])
}

/// Encodes a frame at the start of `buf` (e.g. a ring slot); returns the frame's length, or
/// [`WireError::NoRoom`] if it does not fit.
pub fn encode_into(request_id: u64, message: &Message<'_>, buf: &mut [u8]) -> Result<usize> {
    let payload_len = message.payload_len()?;
    let len = HEADER_LEN + payload_len;
    if buf.len() < len {
        return Err(WireError::NoRoom {
            len,
            capacity: buf.len(),
        });
    }
    let header = Header {
        magic: MAGIC,
        version: VERSION,
        kind: message.kind() as u8,
        flags: 0,
        payload_len: payload_len as u32,
        request_id,
    };
    buf[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    let mut w = Writer {
        buf: &mut buf[HEADER_LEN..len],
        at: 0,
        overflow: false,
    };
    message.write_payload(&mut w);
    if w.overflow || w.at != payload_len {
        return Err(WireError::Malformed(
            "encoder wrote a payload of the wrong length",
        ));
    }
    Ok(len)
}

/// Phase one: whether `buf` starts with a whole, valid frame; returns the frame's length.
/// Bytes after the frame are ignored (they are the next frame on a stream).
pub fn check(buf: &[u8], limits: &Limits) -> Result<usize> {
    let (_, kind, len) = check_header(buf, limits)?;
    read_payload(kind, &buf[HEADER_LEN..len])?;
    Ok(len)
}

/// Phase two: builds the frame at the start of `buf`, which [`check`] accepted. Still returns an
/// error rather than panicking if it did not.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Result<(Frame<'a>, usize)> {
    let (header, kind, len) = check_header(buf, limits)?;
    let message = read_payload(kind, &buf[HEADER_LEN..len])?;
    Ok((
        Frame {
            request_id: header.request_id,
            message,
        },
        len,
    ))
}

/// The request id in the header of `raw`, even if the rest does not decode; 0 if there is no
/// whole header (so a peer can still be told which request was malformed).
pub fn request_id_of(raw: &[u8]) -> u64 {
    raw.get(8..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// [`check`] then [`parse`]: the frame at the start of `buf` and its length.
pub fn decode<'a>(buf: &'a [u8], limits: &Limits) -> Result<(Frame<'a>, usize)> {
    check(buf, limits)?;
    parse(buf, limits)
}

fn check_header(buf: &[u8], limits: &Limits) -> Result<(Header, Kind, usize)> {
    let Some(bytes) = buf.first_chunk::<HEADER_LEN>() else {
        return Err(WireError::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    };
    let header = Header::from_bytes(bytes);
    if header.magic != MAGIC {
        return Err(WireError::Malformed("bad magic"));
    }
    if header.version != VERSION {
        return Err(WireError::Malformed("unsupported version"));
    }
    let kind = Kind::from_u8(header.kind).ok_or(WireError::Malformed("unknown message kind"))?;
    if header.flags != 0 {
        return Err(WireError::Malformed("unknown flags"));
    }
    let payload = header.payload_len as usize;
    if payload > limits.max_payload {
        return Err(WireError::Oversized {
            len: payload,
            max: limits.max_payload,
        });
    }
    let len = HEADER_LEN + payload;
    if buf.len() < len {
        return Err(WireError::Incomplete {
            needed: len - buf.len(),
        });
    }
    Ok((header, kind, len))
}

/// Walks a payload of `kind`, validating every length, count and string, and builds the message.
/// Lists are walked once here and kept as views, so building them allocates nothing.
fn read_payload(kind: Kind, payload: &[u8]) -> Result<Message<'_>> {
    let mut r = Reader {
        buf: payload,
        at: 0,
    };
    let message = match kind {
        Kind::Get => Message::Get { key: r.blob()? },
        Kind::MultiGet => Message::MultiGet {
            keys: List::read(&mut r)?,
        },
        Kind::Set => Message::Set {
            key: r.blob()?,
            value: r.blob()?,
        },
        Kind::Invoke => Message::Invoke {
            function: r.str()?,
            args: List::read(&mut r)?,
        },
        Kind::InvokeWith => Message::InvokeWith {
            function: r.str()?,
            args: List::read(&mut r)?,
            read_set: List::read(&mut r)?,
        },
        Kind::Hello => Message::Hello { token: r.blob()? },
        Kind::MultiSet => Message::MultiSet {
            pairs: List::read(&mut r)?,
        },
        Kind::CheckVersion => Message::CheckVersion {
            function: r.str()?,
            version: r.blob()?,
        },
        Kind::Value => Message::Value { value: r.opt()? },
        Kind::Values => Message::Values {
            values: List::read(&mut r)?,
        },
        Kind::Ok => Message::Ok,
        Kind::InvokeReply => {
            let cost = InvokeCost::read(&mut r)?;
            Message::InvokeReply {
                result: r.blob()?,
                cost,
            }
        }
        Kind::Error => Message::Error {
            code: ErrorCode::from_u8(r.take(1)?[0])
                .ok_or(WireError::Malformed("unknown error code"))?,
            message: r.str()?,
        },
        Kind::Pushback => {
            let cost = InvokeCost::read(&mut r)?;
            Message::Pushback {
                read_set: List::read(&mut r)?,
                elsewhere: List::read(&mut r)?,
                cost,
            }
        }
    };
    if r.at != payload.len() {
        return Err(WireError::Malformed("trailing bytes after the payload"));
    }
    Ok(message)
}

mod codec {
    use super::{Result, WireError, NIL};

    /// A bounds-checked cursor over a payload.
    #[derive(Debug, Clone)]
    pub struct Reader<'a> {
        pub(super) buf: &'a [u8],
        pub(super) at: usize,
    }

    impl<'a> Reader<'a> {
        pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
            let end = self.at.checked_add(n).filter(|&end| end <= self.buf.len());
            let end = end.ok_or(WireError::Malformed(
                "length runs past the end of the payload",
            ))?;
            let bytes = &self.buf[self.at..end];
            self.at = end;
            Ok(bytes)
        }

        pub(super) fn u32(&mut self) -> Result<u32> {
            let mut b = [0u8; 4];
            b.copy_from_slice(self.take(4)?);
            Ok(u32::from_le_bytes(b))
        }

        pub(super) fn u64(&mut self) -> Result<u64> {
            let mut b = [0u8; 8];
            b.copy_from_slice(self.take(8)?);
            Ok(u64::from_le_bytes(b))
        }

        pub(super) fn blob(&mut self) -> Result<&'a [u8]> {
            match self.u32()? {
                NIL => Err(WireError::Malformed("missing value where one is required")),
                n => self.take(n as usize),
            }
        }

        pub(super) fn opt(&mut self) -> Result<Option<&'a [u8]>> {
            match self.u32()? {
                NIL => Ok(None),
                n => self.take(n as usize).map(Some),
            }
        }

        pub(super) fn str(&mut self) -> Result<&'a str> {
            std::str::from_utf8(self.blob()?)
                .map_err(|_| WireError::Malformed("string is not UTF-8"))
        }
    }

    /// A cursor writing into a buffer sized by `payload_len`; never panics, flags overflow instead.
    #[derive(Debug)]
    pub struct Writer<'b> {
        pub(super) buf: &'b mut [u8],
        pub(super) at: usize,
        pub(super) overflow: bool,
    }

    impl Writer<'_> {
        pub(super) fn put(&mut self, bytes: &[u8]) {
            match self.buf.get_mut(self.at..self.at + bytes.len()) {
                Some(dst) => {
                    dst.copy_from_slice(bytes);
                    self.at += bytes.len();
                }
                None => self.overflow = true,
            }
        }
    }

    /// An element type a [`super::List`] can hold. Sealed: the wire format defines the set.
    pub trait Item<'a>: Copy {
        /// Fewest bytes one element takes, to reject counts the payload cannot hold before walking.
        const MIN_LEN: usize;
        fn read(r: &mut Reader<'a>) -> Result<Self>;
        fn encoded_len(&self) -> Result<usize>;
        fn write(&self, w: &mut Writer<'_>);
    }
}

use codec::{Item, Reader, Writer};

impl<'a> Item<'a> for &'a [u8] {
    const MIN_LEN: usize = 4;
    fn read(r: &mut Reader<'a>) -> Result<Self> {
        r.blob()
    }
    fn encoded_len(&self) -> Result<usize> {
        blob_len(self)
    }
    fn write(&self, w: &mut Writer<'_>) {
        w.put(&(self.len() as u32).to_le_bytes());
        w.put(self);
    }
}

impl<'a> Item<'a> for Option<&'a [u8]> {
    const MIN_LEN: usize = 4;
    fn read(r: &mut Reader<'a>) -> Result<Self> {
        r.opt()
    }
    fn encoded_len(&self) -> Result<usize> {
        self.map_or(Ok(4), blob_len)
    }
    fn write(&self, w: &mut Writer<'_>) {
        match self {
            Some(b) => b.write(w),
            None => w.put(&NIL.to_le_bytes()),
        }
    }
}

impl<'a> Item<'a> for (&'a [u8], &'a [u8]) {
    const MIN_LEN: usize = 8;
    fn read(r: &mut Reader<'a>) -> Result<Self> {
        Ok((r.blob()?, r.blob()?))
    }
    fn encoded_len(&self) -> Result<usize> {
        Ok(self.0.encoded_len()? + self.1.encoded_len()?)
    }
    fn write(&self, w: &mut Writer<'_>) {
        self.0.write(w);
        self.1.write(w);
    }
}

impl<'a> Item<'a> for (&'a [u8], Option<&'a [u8]>) {
    const MIN_LEN: usize = 8;
    fn read(r: &mut Reader<'a>) -> Result<Self> {
        Ok((r.blob()?, r.opt()?))
    }
    fn encoded_len(&self) -> Result<usize> {
        Ok(self.0.encoded_len()? + self.1.encoded_len()?)
    }
    fn write(&self, w: &mut Writer<'_>) {
        self.0.write(w);
        self.1.write(w);
    }
}

/// A list in a message: either the caller's slice (to encode) or a validated view of the wire
/// bytes (decoded; iterating it parses elements on the fly without allocating).
pub struct List<'a, T> {
    repr: Repr<'a, T>,
}

enum Repr<'a, T> {
    Slice(&'a [T]),
    Wire { count: u32, bytes: &'a [u8] },
}

impl<T> Clone for List<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for List<'_, T> {}
impl<T> Clone for Repr<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Repr<'_, T> {}

impl<'a, T: Item<'a>> List<'a, T> {
    /// A list to encode.
    pub fn new(items: &'a [T]) -> Self {
        Self {
            repr: Repr::Slice(items),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self.repr {
            Repr::Slice(s) => s.len(),
            Repr::Wire { count, .. } => count as usize,
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements in order.
    pub fn iter(&self) -> ListIter<'a, T> {
        match self.repr {
            Repr::Slice(s) => ListIter {
                repr: IterRepr::Slice(s.iter()),
            },
            Repr::Wire { count, bytes } => ListIter {
                repr: IterRepr::Wire {
                    left: count,
                    reader: Reader { buf: bytes, at: 0 },
                },
            },
        }
    }

    fn read(r: &mut Reader<'a>) -> Result<Self> {
        let count = r.u32()?;
        let left = r.buf.len() - r.at;
        if (count as usize)
            .checked_mul(T::MIN_LEN)
            .is_none_or(|min| min > left)
        {
            return Err(WireError::Malformed("element count exceeds the payload"));
        }
        let start = r.at;
        for _ in 0..count {
            T::read(r)?;
        }
        Ok(Self {
            repr: Repr::Wire {
                count,
                bytes: &r.buf[start..r.at],
            },
        })
    }

    fn encoded_len(&self) -> Result<usize> {
        if self.len() > u32::MAX as usize {
            return Err(WireError::Oversized {
                len: self.len(),
                max: u32::MAX as usize,
            });
        }
        match self.repr {
            // Already encoded: its length is the bytes it spans.
            Repr::Wire { bytes, .. } => Ok(4 + bytes.len()),
            Repr::Slice(s) => s.iter().try_fold(4usize, |acc, item| {
                acc.checked_add(item.encoded_len()?)
                    .ok_or(WireError::Oversized {
                        len: usize::MAX,
                        max: u32::MAX as usize,
                    })
            }),
        }
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.put(&(self.len() as u32).to_le_bytes());
        match self.repr {
            Repr::Wire { bytes, .. } => w.put(bytes),
            Repr::Slice(s) => s.iter().for_each(|item| item.write(w)),
        }
    }
}

impl<'a, T: Item<'a>> IntoIterator for List<'a, T> {
    type Item = T;
    type IntoIter = ListIter<'a, T>;
    fn into_iter(self) -> ListIter<'a, T> {
        self.iter()
    }
}

impl<'a, T: Item<'a> + PartialEq> PartialEq for List<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<'a, T: Item<'a> + fmt::Debug> fmt::Debug for List<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over a [`List`].
#[derive(Debug)]
pub struct ListIter<'a, T> {
    repr: IterRepr<'a, T>,
}

#[derive(Debug)]
enum IterRepr<'a, T> {
    Slice(std::slice::Iter<'a, T>),
    Wire { left: u32, reader: Reader<'a> },
}

impl<'a, T: Item<'a>> Iterator for ListIter<'a, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        match &mut self.repr {
            IterRepr::Slice(it) => it.next().copied(),
            IterRepr::Wire { left, reader } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                // The bytes were validated when the list was read, so this cannot fail; if it
                // somehow did, end the list rather than panic.
                T::read(reader).ok()
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.repr {
            IterRepr::Slice(it) => it.size_hint(),
            IterRepr::Wire { left, .. } => (0, Some(*left as usize)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<(u64, Message<'static>)> {
        static KEYS: [&[u8]; 3] = [b"a", b"", b"vertex:42"];
        static VALUES: [Option<&[u8]>; 3] = [Some(b"1"), None, Some(b"")];
        static READ_SET: [(&[u8], Option<&[u8]>); 2] = [(b"k1", Some(b"v1")), (b"k2", None)];
        static PAIRS: [(&[u8], &[u8]); 2] = [(b"k1", b"v1"), (b"k2", b"")];
        vec![
            (1, Message::Get { key: b"user:1" }),
            (
                2,
                Message::MultiGet {
                    keys: List::new(&KEYS),
                },
            ),
            (
                3,
                Message::MultiGet {
                    keys: List::new(&[]),
                },
            ),
            (
                4,
                Message::Set {
                    key: b"k",
                    value: b"some value",
                },
            ),
            (
                5,
                Message::Invoke {
                    function: "khop",
                    args: List::new(&KEYS[..2]),
                },
            ),
            (
                15,
                Message::InvokeWith {
                    function: "pagerank_wasm",
                    args: List::new(&KEYS[..2]),
                    read_set: List::new(&READ_SET),
                },
            ),
            (6, Message::Value { value: Some(b"v") }),
            (12, Message::Hello { token: b"secret" }),
            (
                14,
                Message::CheckVersion {
                    function: "khop_wasm",
                    version: b"0123456789abcdef",
                },
            ),
            (
                13,
                Message::MultiSet {
                    pairs: List::new(&PAIRS),
                },
            ),
            (7, Message::Value { value: None }),
            (
                8,
                Message::Values {
                    values: List::new(&VALUES),
                },
            ),
            (9, Message::Ok),
            (
                10,
                Message::InvokeReply {
                    result: b"$2\r\nok\r\n",
                    cost: InvokeCost {
                        storage_cpu_ns: 1234,
                        queue_ns: 56,
                        keys_read: 7,
                        bytes_read: 890,
                        reads: 3,
                    },
                },
            ),
            (
                11,
                Message::Error {
                    code: ErrorCode::Err,
                    message: "unknown function 'x'",
                },
            ),
            (
                u64::MAX,
                Message::Pushback {
                    read_set: List::new(&READ_SET),
                    elsewhere: List::new(&KEYS),
                    cost: InvokeCost {
                        storage_cpu_ns: 7,
                        queue_ns: 8,
                        keys_read: 2,
                        bytes_read: 2,
                        reads: 1,
                    },
                },
            ),
        ]
    }

    fn frame(id: u64, m: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        let n = encode(id, m, &mut out).unwrap();
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn header_layout() {
        assert_eq!(std::mem::size_of::<Header>(), 16);
        assert_eq!(std::mem::offset_of!(Header, payload_len), 4);
        assert_eq!(std::mem::offset_of!(Header, request_id), 8);
        let h = Header {
            magic: MAGIC,
            version: VERSION,
            kind: 0x84,
            flags: 0,
            payload_len: 0x0102_0304,
            request_id: 9,
        };
        let b = h.to_bytes();
        assert_eq!(b[..8], [MAGIC, VERSION, 0x84, 0, 4, 3, 2, 1]);
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn kinds_round_trip() {
        for code in 0..=255u8 {
            if let Some(k) = Kind::from_u8(code) {
                assert_eq!(k as u8, code);
                assert_eq!(k.is_reply(), code >= 0x80);
            }
        }
    }

    #[test]
    fn round_trip_every_kind() {
        for (id, m) in samples() {
            let buf = frame(id, &m);
            assert_eq!(buf.len(), m.frame_len().unwrap());
            assert_eq!(check(&buf, &Limits::default()), Ok(buf.len()));
            let (f, n) = decode(&buf, &Limits::default()).unwrap();
            assert_eq!(n, buf.len());
            assert_eq!(f.request_id, id);
            assert_eq!(f.message, m, "kind {:?}", m.kind());
            // A decoded message re-encodes to the same bytes (lists copy their wire view).
            assert_eq!(frame(id, &f.message), buf);
        }
    }

    #[test]
    fn decoding_borrows_from_the_buffer() {
        let buf = frame(
            3,
            &Message::Set {
                key: b"key",
                value: b"value",
            },
        );
        let (f, _) = decode(&buf, &Limits::default()).unwrap();
        let Message::Set { key, value } = f.message else {
            panic!("wrong kind")
        };
        let range = buf.as_ptr_range();
        assert!(range.contains(&key.as_ptr()) && range.contains(&value.as_ptr()));
    }

    #[test]
    fn streams_of_frames() {
        let mut buf = Vec::new();
        for (id, m) in samples() {
            encode(id, &m, &mut buf).unwrap();
        }
        let mut at = 0;
        for (id, m) in samples() {
            let (f, n) = decode(&buf[at..], &Limits::default()).unwrap();
            assert_eq!((f.request_id, f.message), (id, m));
            at += n;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn every_truncation_is_incomplete() {
        for (id, m) in samples() {
            let buf = frame(id, &m);
            for cut in 0..buf.len() {
                assert_eq!(
                    decode(&buf[..cut], &Limits::default()).unwrap_err(),
                    // Below a whole header only the header's size is known.
                    WireError::Incomplete {
                        needed: if cut < HEADER_LEN {
                            HEADER_LEN - cut
                        } else {
                            buf.len() - cut
                        }
                    },
                    "{:?} cut at {cut}",
                    m.kind()
                );
            }
        }
    }

    #[test]
    fn malformed_frames_are_distinct_errors() {
        let good = frame(1, &Message::Get { key: b"k" });
        let limits = Limits::default();
        let mut bad = good.clone();
        bad[0] = 0;
        assert_eq!(check(&bad, &limits), Err(WireError::Malformed("bad magic")));
        let mut bad = good.clone();
        bad[1] = 2;
        assert_eq!(
            check(&bad, &limits),
            Err(WireError::Malformed("unsupported version"))
        );
        let mut bad = good.clone();
        bad[2] = 0x7f;
        assert_eq!(
            check(&bad, &limits),
            Err(WireError::Malformed("unknown message kind"))
        );
        let mut bad = good.clone();
        bad[3] = 1;
        assert_eq!(
            check(&bad, &limits),
            Err(WireError::Malformed("unknown flags"))
        );
        // Key length disagrees with the payload length.
        let mut bad = good.clone();
        bad[HEADER_LEN] = 2;
        assert!(matches!(check(&bad, &limits), Err(WireError::Malformed(_))));
        // Payload longer than its fields: trailing bytes.
        let mut bad = good.clone();
        bad[4] += 1;
        bad.push(0);
        assert_eq!(
            check(&bad, &limits),
            Err(WireError::Malformed("trailing bytes after the payload"))
        );
        // A count the payload cannot hold.
        let mut bad = frame(
            1,
            &Message::MultiGet {
                keys: List::new(&[b"a"]),
            },
        );
        bad[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            check(&bad, &limits),
            Err(WireError::Malformed("element count exceeds the payload"))
        );
        // Nil where a key is required.
        let mut bad = good.clone();
        bad[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&NIL.to_le_bytes());
        assert!(matches!(check(&bad, &limits), Err(WireError::Malformed(_))));
        // A string that is not UTF-8.
        let mut bad = frame(
            1,
            &Message::Error {
                code: ErrorCode::NoKey,
                message: "m",
            },
        );
        let good_error = bad.clone();
        bad[HEADER_LEN + 5] = 0xff;
        assert_eq!(
            check(&bad, &limits),
            Err(WireError::Malformed("string is not UTF-8"))
        );
        // An error code no version of the format defines.
        let mut bad = good_error;
        bad[HEADER_LEN] = 0;
        assert_eq!(
            check(&bad, &limits),
            Err(WireError::Malformed("unknown error code"))
        );
    }

    #[test]
    fn oversized_is_reported_from_the_header() {
        let buf = frame(
            1,
            &Message::Set {
                key: b"k",
                value: &[0; 100],
            },
        );
        let limits = Limits { max_payload: 50 };
        // Even with only the header present, the size is known to be too large.
        assert_eq!(
            check(&buf[..HEADER_LEN], &limits),
            Err(WireError::Oversized { len: 109, max: 50 })
        );
        assert_eq!(check(&buf, &Limits { max_payload: 109 }), Ok(buf.len()));
    }

    #[test]
    fn encode_into_a_slot() {
        let m = Message::InvokeReply {
            result: b"+OK\r\n",
            cost: InvokeCost {
                storage_cpu_ns: 1,
                queue_ns: 2,
                keys_read: 3,
                bytes_read: 4,
                reads: 5,
            },
        };
        let len = m.frame_len().unwrap();
        let mut slot = vec![0u8; len - 1];
        assert_eq!(
            encode_into(5, &m, &mut slot),
            Err(WireError::NoRoom {
                len,
                capacity: len - 1
            })
        );
        let mut slot = vec![0u8; 256];
        assert_eq!(encode_into(5, &m, &mut slot), Ok(len));
        assert_eq!(
            decode(&slot, &Limits::default()).unwrap(),
            (
                Frame {
                    request_id: 5,
                    message: m
                },
                len
            )
        );
    }

    #[test]
    fn random_corruption_never_panics() {
        // xorshift64*: deterministic, no dependencies.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let limits = Limits {
            max_payload: 1 << 16,
        };
        let frames: Vec<Vec<u8>> = samples().iter().map(|(id, m)| frame(*id, m)).collect();
        let mut outcomes = [0usize; 4];
        for round in 0..20_000 {
            let mut buf = frames[round % frames.len()].clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % buf.len() as u64) as usize;
                buf[at] ^= 1 << (next() % 8);
            }
            if next() % 4 == 0 {
                buf.truncate((next() % (buf.len() as u64 + 1)) as usize);
            }
            match decode(&buf, &limits) {
                Ok((f, n)) => {
                    assert!(n <= buf.len());
                    // Whatever decoded must walk and re-encode without trouble.
                    let mut out = Vec::new();
                    encode(f.request_id, &f.message, &mut out).unwrap();
                    outcomes[0] += 1;
                }
                Err(WireError::Incomplete { needed }) => {
                    assert!(needed > 0);
                    outcomes[1] += 1;
                }
                Err(WireError::Malformed(_)) => outcomes[2] += 1,
                Err(WireError::Oversized { .. }) => outcomes[3] += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        // The flips exercised more than one outcome.
        assert!(
            outcomes.iter().filter(|&&n| n > 0).count() >= 3,
            "{outcomes:?}"
        );
    }
}
