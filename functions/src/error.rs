//! Errors of an invocation. Every variant has an [`ErrorCode`], the one word both sides and every
//! transport agree on: a byte on the data plane's wire, the first word of a Redis error reply
//! (`-CODE message`) over RESP. Control flow looks at the code, never at a message.

use std::fmt;

/// Why an invocation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// No function of this name is registered.
    #[error("unknown function '{0}' (AUTOLOC.FUNCTIONS lists them)")]
    UnknownFunction(String),
    /// Too few or too many arguments.
    #[error("wrong number of arguments for '{function}': usage: {usage}")]
    Arity {
        function: &'static str,
        usage: &'static str,
    },
    /// An argument that does not parse or is out of range.
    #[error("bad argument <{name}> for '{function}': {reason}")]
    BadArgument {
        function: &'static str,
        name: &'static str,
        reason: String,
    },
    /// A function cannot be registered (its name is taken, the registry is full).
    #[error("{0}")]
    Registry(String),
    /// A key the function needs does not exist (e.g. the start vertex).
    #[error("no such key '{0}'")]
    NoKey(String),
    /// A key holds something other than a string (a hash, a list, ...).
    #[error("key '{0}' holds the wrong kind of value")]
    WrongType(String),
    /// A string value the function cannot use: no vertex, no number.
    #[error("bad value at key '{key}': {reason}")]
    BadValue { key: String, reason: String },
    /// A frame or reply that does not follow the protocol.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message over the transport's limit.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// The storage side stopped the invocation because it exceeded its budget of lock time.
    #[error(
        "storage-side budget of {budget_us} us exceeded after {spent_us} us; run it compute-side"
    )]
    Pushback { budget_us: u64, spent_us: u64 },
    /// The caller may not read or write a key, or run a command.
    #[error("{0}")]
    NoPerm(String),
    /// The storage side cannot take the request now.
    #[error("{0}")]
    Busy(String),
    /// Reaching the store failed: connection lost, timeout, a dead peer.
    #[error("{0}")]
    Io(String),
    /// Wrong arguments, as a user function (a guest) reports them.
    #[error("{0}")]
    Usage(String),
    /// A user function failed: it trapped (with the trap's reason), ran past a limit, broke the
    /// guest ABI, or returned an error of its own.
    #[error("{0}")]
    Guest(String),
    /// The caller ran a version of a user function that has been replaced or deleted since:
    /// fetch it again.
    #[error("{0}")]
    Stale(String),
    /// A key this shard does not serve (Redis Cluster): its slot is another master's, or is being
    /// migrated and the key has left. Never read as missing: the caller asks `node` instead.
    #[error("{slot} {node} key '{key}' is served by another shard")]
    WrongShard {
        /// The key.
        key: String,
        /// Its slot.
        slot: u16,
        /// The node serving the slot as this shard knows it (`host:port`).
        node: String,
    },
    /// An error reply from the other side, kept with its code.
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
}

/// The kind of an [`Error`], as it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorCode {
    /// Bad input: unknown function, arity, bad argument (Redis's own `ERR`).
    Err = 1,
    /// A missing key.
    NoKey = 2,
    /// A key of another type than string.
    WrongType = 3,
    /// A string value that is no vertex, no number, ...: the data, not the request, is bad.
    BadValue = 4,
    /// A frame or reply that breaks the protocol.
    Malformed = 5,
    /// A message over a limit.
    TooLarge = 6,
    /// The storage side declined to finish the invocation: run it compute-side.
    Pushback = 7,
    /// Denied by an ACL.
    NoPerm = 8,
    /// The storage side is busy.
    Busy = 9,
    /// The store could not be reached.
    Io = 10,
    /// A user function trapped or broke a limit.
    Guest = 11,
    /// A user function changed since the caller fetched it.
    Stale = 12,
    /// A key served by another shard of a Redis Cluster (Redis's own `MOVED` and `ASK` map here).
    WrongShard = 13,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::Err,
        ErrorCode::NoKey,
        ErrorCode::WrongType,
        ErrorCode::BadValue,
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::Pushback,
        ErrorCode::NoPerm,
        ErrorCode::Busy,
        ErrorCode::Io,
        ErrorCode::Guest,
        ErrorCode::Stale,
        ErrorCode::WrongShard,
    ];

    /// The code as it leads a Redis error reply.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Err => "ERR",
            ErrorCode::NoKey => "NOKEY",
            ErrorCode::WrongType => "WRONGTYPE",
            ErrorCode::BadValue => "BADVALUE",
            ErrorCode::Malformed => "MALFORMED",
            ErrorCode::TooLarge => "TOOLARGE",
            ErrorCode::Pushback => "PUSHBACK",
            ErrorCode::NoPerm => "NOPERM",
            ErrorCode::Busy => "BUSY",
            ErrorCode::Io => "IOERR",
            ErrorCode::Guest => "GUEST",
            ErrorCode::Stale => "STALE",
            ErrorCode::WrongShard => "WRONGSHARD",
        }
    }

    /// The code of the first word of a Redis error reply; `None` for a word that is not one.
    pub fn parse(word: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == word)
    }

    /// The code's byte on the data plane's wire.
    pub fn to_u8(self) -> u8 {
        self as u8
    }

    /// The code with this wire byte.
    pub fn from_u8(b: u8) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.to_u8() == b)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::UnknownFunction(_)
            | Error::Arity { .. }
            | Error::BadArgument { .. }
            | Error::Registry(_)
            | Error::Usage(_) => ErrorCode::Err,
            Error::Guest(_) => ErrorCode::Guest,
            Error::Stale(_) => ErrorCode::Stale,
            Error::WrongShard { .. } => ErrorCode::WrongShard,
            Error::NoKey(_) => ErrorCode::NoKey,
            Error::WrongType(_) => ErrorCode::WrongType,
            Error::BadValue { .. } => ErrorCode::BadValue,
            Error::Malformed(_) => ErrorCode::Malformed,
            Error::TooLarge { .. } => ErrorCode::TooLarge,
            Error::Pushback { .. } => ErrorCode::Pushback,
            Error::NoPerm(_) => ErrorCode::NoPerm,
            Error::Busy(_) => ErrorCode::Busy,
            Error::Io(_) => ErrorCode::Io,
            Error::Remote { code, .. } => *code,
        }
    }

    /// An error received from the other side: its code and its message.
    pub fn remote(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Remote {
            code,
            message: message.into(),
        }
    }

    /// Rebuilds an error from a Redis error reply `CODE message`. A first word that is no
    /// AutoLoc code (Redis's own `NOAUTH`, `WRONGPASS`, ...) keeps the whole reply as the
    /// message, under `NOPERM` for Redis's permission errors and `ERR` otherwise.
    pub fn from_resp(reply: &str) -> Error {
        let (word, message) = reply.split_once(' ').unwrap_or((reply, ""));
        match ErrorCode::parse(word) {
            Some(code) => Error::remote(code, message),
            None => match word {
                "NOAUTH" | "WRONGPASS" | "NOPERM" => Error::remote(ErrorCode::NoPerm, reply),
                "BUSY" | "LOADING" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" => {
                    Error::remote(ErrorCode::Busy, reply)
                }
                // `MOVED <slot> <host:port>` and `ASK <slot> <host:port>`: the message keeps
                // the slot and node first, as a WRONGSHARD reply's does.
                "MOVED" | "ASK" => Error::remote(ErrorCode::WrongShard, message),
                _ => Error::remote(ErrorCode::Err, reply),
            },
        }
    }

    /// The error as a Redis error reply: `CODE message`, on one line.
    pub fn to_resp(&self) -> String {
        let mut s = format!("{} {}", self.code(), self);
        // An error reply is one line: never let a key name or reason break it.
        s.retain(|c| c != '\r' && c != '\n');
        s
    }

    /// The slot and node of a [`ErrorCode::WrongShard`] error (its own, or a `WRONGSHARD`,
    /// `MOVED` or `ASK` reply received): where to ask instead.
    pub fn shard_hint(&self) -> Option<(u16, String)> {
        match self {
            Error::WrongShard { slot, node, .. } => Some((*slot, node.clone())),
            Error::Remote {
                code: ErrorCode::WrongShard,
                message,
            } => {
                let mut words = message.split(' ');
                let slot = words.next()?.parse().ok()?;
                let node = words.next()?.to_string();
                Some((slot, node))
            }
            _ => None,
        }
    }

    /// Whether the caller should run the invocation compute-side instead.
    pub fn is_pushback(&self) -> bool {
        self.code() == ErrorCode::Pushback
    }

    /// A missing-key error naming `key`, shown lossily if it is not UTF-8.
    pub fn no_key(key: &[u8]) -> Error {
        Error::NoKey(String::from_utf8_lossy(key).into_owned())
    }

    /// A wrong-type error naming `key`.
    pub fn wrong_type(key: &[u8]) -> Error {
        Error::WrongType(String::from_utf8_lossy(key).into_owned())
    }

    /// A bad-value error at `key`.
    pub fn bad_value(key: &[u8], reason: impl Into<String>) -> Error {
        Error::BadValue {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_as_words_and_bytes() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(ErrorCode::from_u8(code.to_u8()), Some(code));
        }
        assert_eq!(ErrorCode::from_u8(0), None);
        assert_eq!(ErrorCode::parse("err"), None);
    }

    #[test]
    fn resp_form_keeps_the_code() {
        let errors = [
            Error::UnknownFunction("x".into()),
            Error::NoKey("k".into()),
            Error::WrongType("k".into()),
            Error::bad_value(b"k", "bad"),
            Error::Malformed("frame".into()),
            Error::TooLarge { len: 2, max: 1 },
            Error::Pushback {
                budget_us: 1,
                spent_us: 2,
            },
            Error::NoPerm("no".into()),
            Error::Busy("busy".into()),
            Error::Io("down".into()),
            Error::Usage("f: usage".into()),
            Error::Guest("trap: unreachable executed".into()),
            Error::Stale("replaced".into()),
            Error::WrongShard {
                key: "k".into(),
                slot: 7,
                node: "127.0.0.1:7001".into(),
            },
        ];
        for e in errors {
            let resp = e.to_resp();
            let back = Error::from_resp(&resp);
            assert_eq!(back.code(), e.code(), "{resp}");
            assert_eq!(back.to_string(), e.to_string(), "the message is kept once");
        }
    }

    #[test]
    fn redis_own_errors_map_to_codes() {
        assert_eq!(
            Error::from_resp("NOAUTH Authentication required.").code(),
            ErrorCode::NoPerm
        );
        let e = Error::from_resp("ERR unknown command 'AUTOLOC.CALL'");
        assert_eq!(e.code(), ErrorCode::Err);
        assert_eq!(e.to_string(), "unknown command 'AUTOLOC.CALL'");
        assert_eq!(Error::from_resp("OOM no").to_string(), "OOM no");
    }

    #[test]
    fn shard_hints_travel() {
        let e = Error::WrongShard {
            key: "1".into(),
            slot: 9842,
            node: "127.0.0.1:7002".into(),
        };
        let back = Error::from_resp(&e.to_resp());
        assert_eq!(back.code(), ErrorCode::WrongShard);
        assert_eq!(back.shard_hint(), Some((9842, "127.0.0.1:7002".into())));
        let moved = Error::from_resp("MOVED 3999 127.0.0.1:6381");
        assert_eq!(moved.code(), ErrorCode::WrongShard);
        assert_eq!(moved.shard_hint(), Some((3999, "127.0.0.1:6381".into())));
        assert_eq!(Error::from_resp("TRYAGAIN x").code(), ErrorCode::Busy);
        assert_eq!(Error::NoKey("k".into()).shard_hint(), None);
    }

    #[test]
    fn resp_form_is_one_line() {
        let e = Error::NoKey("a\r\nb".into());
        assert!(!e.to_resp().contains('\n'));
    }
}
