//! Errors of an invocation, each with a stable wire code so that both sides agree on its kind.

use std::fmt;

/// Why an invocation failed.
///
/// Every variant maps to an [`ErrorCode`], the first word of the Redis error reply, so that a
/// compute node can tell a pushback (run it yourself) from bad input or a missing key.
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
    /// A key the function needs does not exist (e.g. the start vertex).
    #[error("no such key '{0}'")]
    NoKey(String),
    /// A key holds a value of a type the function cannot read.
    #[error("key '{0}' holds the wrong kind of value")]
    WrongType(String),
    /// A value that should have a known layout does not.
    #[error("malformed value at key '{key}': {reason}")]
    Malformed { key: String, reason: String },
    /// The storage side stopped the invocation because it exceeded its budget of lock time.
    #[error(
        "storage-side budget of {budget_us} us exceeded after {spent_us} us; run it compute-side"
    )]
    Pushback { budget_us: u64, spent_us: u64 },
    /// The store itself failed (connection lost, protocol error, server error).
    #[error("store: {0}")]
    Store(String),
    /// An error reply from the storage side, kept with its wire code.
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
}

/// The first word of an error reply on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Bad input: unknown function, arity, bad argument.
    Err,
    /// A missing key.
    NoKey,
    /// A key of the wrong type.
    WrongType,
    /// A malformed value.
    Malformed,
    /// The storage side declined to finish the invocation: run it compute-side.
    Pushback,
    /// A store failure.
    Store,
}

impl ErrorCode {
    /// The code as it leads an error reply.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Err => "ERR",
            ErrorCode::NoKey => "NOKEY",
            ErrorCode::WrongType => "WRONGTYPE",
            ErrorCode::Malformed => "MALFORMED",
            ErrorCode::Pushback => "PUSHBACK",
            ErrorCode::Store => "STOREERR",
        }
    }

    /// Parses the first word of an error reply.
    pub fn parse(word: &str) -> Option<ErrorCode> {
        Some(match word {
            "ERR" => ErrorCode::Err,
            "NOKEY" => ErrorCode::NoKey,
            "WRONGTYPE" => ErrorCode::WrongType,
            "MALFORMED" => ErrorCode::Malformed,
            "PUSHBACK" => ErrorCode::Pushback,
            "STOREERR" => ErrorCode::Store,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::UnknownFunction(_) | Error::Arity { .. } | Error::BadArgument { .. } => {
                ErrorCode::Err
            }
            Error::NoKey(_) => ErrorCode::NoKey,
            Error::WrongType(_) => ErrorCode::WrongType,
            Error::Malformed { .. } => ErrorCode::Malformed,
            Error::Pushback { .. } => ErrorCode::Pushback,
            Error::Store(_) => ErrorCode::Store,
            Error::Remote { code, .. } => *code,
        }
    }

    /// Rebuilds an error from an error reply `CODE message`; an unknown code is a store error.
    pub fn from_wire(reply: &str) -> Error {
        let (word, message) = reply.split_once(' ').unwrap_or((reply, ""));
        match ErrorCode::parse(word) {
            Some(code) => Error::Remote {
                code,
                message: message.to_string(),
            },
            None => Error::Store(reply.to_string()),
        }
    }

    /// The error as a Redis error reply: `CODE message`.
    pub fn to_wire(&self) -> String {
        let mut s = format!("{} {}", self.code(), self);
        // An error reply is one line: never let a key name or reason break it.
        s.retain(|c| c != '\r' && c != '\n');
        s
    }

    /// Whether the caller should run the invocation compute-side instead.
    pub fn is_pushback(&self) -> bool {
        self.code() == ErrorCode::Pushback
    }

    /// A missing-key error naming `key`, shown lossily if it is not UTF-8.
    pub fn no_key(key: &[u8]) -> Error {
        Error::NoKey(String::from_utf8_lossy(key).into_owned())
    }

    /// A malformed-value error at `key`.
    pub fn malformed(key: &[u8], reason: impl Into<String>) -> Error {
        Error::Malformed {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_round_trip() {
        let errors = [
            Error::UnknownFunction("x".into()),
            Error::NoKey("k".into()),
            Error::WrongType("k".into()),
            Error::malformed(b"k", "bad"),
            Error::Pushback {
                budget_us: 1,
                spent_us: 2,
            },
            Error::Store("down".into()),
        ];
        for e in errors {
            let wire = e.to_wire();
            let word = wire.split(' ').next().unwrap();
            assert_eq!(ErrorCode::parse(word), Some(e.code()), "{wire}");
            assert_eq!(Error::from_wire(&wire).code(), e.code());
        }
    }

    #[test]
    fn wire_form_is_one_line() {
        let e = Error::NoKey("a\r\nb".into());
        assert!(!e.to_wire().contains('\n'));
    }
}
