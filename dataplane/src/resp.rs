//! RESP2: frames, command encoding and a blocking, pipelining connection.
//!
//! Parsing is in two phases (mini-redis style): [`check`] walks a buffer and says whether one
//! whole frame is there ([`Parse::Incomplete`] if not, an error if the bytes can never be a frame),
//! and only then [`parse`] builds it.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::{Error, Result};

/// The largest bulk string accepted (Redis's own `proto-max-bulk-len` default).
pub const MAX_BULK: usize = 512 * 1024 * 1024;
/// The largest array accepted.
pub const MAX_ARRAY: usize = 1 << 28;
/// How deep arrays may nest.
pub const MAX_DEPTH: usize = 32;

/// One RESP2 frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK`
    Simple(String),
    /// `-ERR message`
    Error(String),
    /// `:42`
    Int(i64),
    /// `$3\r\nabc`, or `$-1` (nil) as `None`.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...`, or `*-1` (nil array) as `None`.
    Array(Option<Vec<Frame>>),
}

/// What [`check`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// A whole frame of this many bytes.
    Complete(usize),
    /// Not yet a whole frame: read more.
    Incomplete,
}

fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>> {
    match buf
        .get(at..)
        .and_then(|b| b.windows(2).position(|w| w == b"\r\n"))
    {
        Some(n) => Ok(Some((&buf[at..at + n], at + n + 2))),
        None if buf.len().saturating_sub(at) > 64 * 1024 && buf[at] != b'$' => {
            Err(Error::Protocol("header line longer than 64 KiB".into()))
        }
        None => Ok(None),
    }
}

fn int(bytes: &[u8]) -> Result<i64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Protocol(format!("bad integer {:?}", String::from_utf8_lossy(bytes))))
}

fn check_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>> {
    if depth > MAX_DEPTH {
        return Err(Error::Protocol("arrays nested too deep".into()));
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((body, next)) = line(buf, at + 1)? else {
        return Ok(None);
    };
    match kind {
        b'+' | b'-' => Ok(Some(next)),
        b':' => int(body).map(|_| Some(next)),
        b'$' => {
            let n = int(body)?;
            if n == -1 {
                return Ok(Some(next));
            }
            let n = usize::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_BULK)
                .ok_or_else(|| Error::Protocol(format!("bad bulk length {n}")))?;
            let end = next + n + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(Error::Protocol("bulk string not followed by CRLF".into()));
            }
            Ok(Some(end))
        }
        b'*' => {
            let n = int(body)?;
            if n == -1 {
                return Ok(Some(next));
            }
            let n = usize::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_ARRAY)
                .ok_or_else(|| Error::Protocol(format!("bad array length {n}")))?;
            let mut at = next;
            for _ in 0..n {
                match check_at(buf, at, depth + 1)? {
                    Some(end) => at = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        other => Err(Error::Protocol(format!(
            "unknown frame type byte 0x{other:02x}"
        ))),
    }
}

/// Whether `buf` starts with one whole frame.
pub fn check(buf: &[u8]) -> Result<Parse> {
    Ok(match check_at(buf, 0, 0)? {
        Some(n) => Parse::Complete(n),
        None => Parse::Incomplete,
    })
}

fn parse_at(buf: &[u8], at: usize) -> (Frame, usize) {
    // Only called after `check` accepted the frame, so every index below is in bounds and every
    // number parses; the `unwrap_or` fallbacks are unreachable.
    let end = at
        + 1
        + buf[at + 1..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(0);
    let body = &buf[at + 1..end];
    let next = end + 2;
    match buf[at] {
        b'+' => (
            Frame::Simple(String::from_utf8_lossy(body).into_owned()),
            next,
        ),
        b'-' => (
            Frame::Error(String::from_utf8_lossy(body).into_owned()),
            next,
        ),
        b':' => (Frame::Int(int(body).unwrap_or(0)), next),
        b'$' => match int(body).unwrap_or(-1) {
            -1 => (Frame::Bulk(None), next),
            n => {
                let n = n as usize;
                (
                    Frame::Bulk(Some(buf[next..next + n].to_vec())),
                    next + n + 2,
                )
            }
        },
        _ => match int(body).unwrap_or(-1) {
            -1 => (Frame::Array(None), next),
            n => {
                let mut items = Vec::with_capacity((n as usize).min(1024));
                let mut at = next;
                for _ in 0..n {
                    let (f, e) = parse_at(buf, at);
                    items.push(f);
                    at = e;
                }
                (Frame::Array(Some(items)), at)
            }
        },
    }
}

/// Parses the frame at the start of `buf`, if a whole one is there: `(frame, bytes used)`.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>> {
    match check(buf)? {
        Parse::Complete(_) => Ok(Some(parse_at(buf, 0))),
        Parse::Incomplete => Ok(None),
    }
}

/// Appends the RESP encoding of the command `args` to `out`.
pub fn encode_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        let a = a.as_ref();
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Where a Redis server is: `redis://[[user]:password@]host[:port][/db]`, or `host:port`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// ACL user, if any.
    pub user: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// Database number.
    pub db: u32,
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        write!(
            f,
            "redis://{}{}:{}/{}",
            self.user
                .as_deref()
                .map(|u| format!("{u}@"))
                .unwrap_or_default(),
            self.host,
            self.port,
            self.db
        )
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = Error;
    fn from_str(url: &str) -> Result<RedisUrl> {
        let bad = |reason| Error::BadUrl {
            url: url.to_string(),
            reason,
        };
        let rest = url.strip_prefix("redis://").unwrap_or(url);
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((h, "")) => (h, 0),
            Some((h, d)) => (h, d.parse().map_err(|_| bad("database is not a number"))?),
            None => (rest, 0),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse().map_err(|_| bad("port is not a number 0-65535"))?,
            ),
            None => (hostport, 6379),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some(("", p)) => (None, Some(p.to_string())),
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (None, Some(a.to_string())),
            },
        };
        Ok(RedisUrl {
            host: host.to_string(),
            port,
            user,
            password,
            db,
        })
    }
}

/// A blocking RESP connection that can pipeline: queue many commands, flush once, read the
/// replies in order. Reads and writes time out, so a dead server is an error, never a hang.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    url: RedisUrl,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    bytes_in: u64,
    bytes_out: u64,
}

/// How long a connection waits for the server before failing, unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Connection {
    /// Connects, authenticates and selects the database named by `url`.
    pub fn connect(url: &RedisUrl, timeout: Duration) -> Result<Connection> {
        let io = |op| move |source| Error::Io { op, source };
        let addrs: Vec<_> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(io("resolve"))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(10))) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| Error::Io {
            op: "connect",
            source: last.unwrap_or_else(|| std::io::Error::other("no address")),
        })?;
        stream.set_nodelay(true).map_err(io("set TCP_NODELAY"))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(io("set read timeout"))?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(io("set write timeout"))?;
        let mut c = Connection {
            stream,
            url: url.clone(),
            rbuf: Vec::with_capacity(64 * 1024),
            rpos: 0,
            wbuf: Vec::with_capacity(16 * 1024),
            bytes_in: 0,
            bytes_out: 0,
        };
        if let Some(password) = &url.password {
            let reply = match &url.user {
                Some(user) => {
                    c.call(&[b"AUTH".as_slice(), user.as_bytes(), password.as_bytes()])?
                }
                None => c.call(&[b"AUTH".as_slice(), password.as_bytes()])?,
            };
            if let Frame::Error(message) = reply {
                return Err(Error::Setup {
                    command: "AUTH",
                    message,
                });
            }
        }
        if url.db != 0 {
            if let Frame::Error(message) =
                c.call(&[b"SELECT".to_vec(), url.db.to_string().into_bytes()])?
            {
                return Err(Error::Setup {
                    command: "SELECT",
                    message,
                });
            }
        }
        Ok(c)
    }

    /// The address this connection was made to.
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// Queues a command; nothing is sent until [`flush`](Connection::flush).
    pub fn queue<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        encode_command(&mut self.wbuf, args);
    }

    /// Sends every queued command.
    pub fn flush(&mut self) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        self.stream
            .write_all(&self.wbuf)
            .map_err(|source| Error::Io { op: "send", source })?;
        self.bytes_out += self.wbuf.len() as u64;
        self.wbuf.clear();
        Ok(())
    }

    /// Reads the next reply.
    pub fn read_frame(&mut self) -> Result<Frame> {
        loop {
            if let Some((frame, used)) = parse(&self.rbuf[self.rpos..])? {
                self.rpos += used;
                if self.rpos == self.rbuf.len() {
                    self.rbuf.clear();
                    self.rpos = 0;
                }
                return Ok(frame);
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            let len = self.rbuf.len();
            self.rbuf.resize(len + 64 * 1024, 0);
            let n = match self.stream.read(&mut self.rbuf[len..]) {
                Ok(0) => {
                    self.rbuf.truncate(len);
                    return Err(Error::Closed);
                }
                Ok(n) => n,
                // A signal landed while waiting: nothing was read, wait on.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    self.rbuf.truncate(len);
                    continue;
                }
                Err(source) => {
                    self.rbuf.truncate(len);
                    return Err(Error::Io {
                        op: "receive",
                        source,
                    });
                }
            };
            self.rbuf.truncate(len + n);
            self.bytes_in += n as u64;
        }
    }

    /// Sends one command and reads its reply (an error reply is a [`Frame::Error`], not an `Err`).
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame> {
        self.queue(args);
        self.flush()?;
        self.read_frame()
    }

    /// Bytes received and sent so far.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_in, self.bytes_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn ignore_signal(_: libc::c_int) {}

    /// A signal that lands while a reply is awaited interrupts the read (EINTR); the connection
    /// reads on instead of failing the call.
    #[test]
    fn a_signal_during_a_read_does_not_fail_the_call() {
        // SAFETY: installs a handler that does nothing for SIGUSR2, which nothing else in this
        // test binary uses; without SA_RESTART, so a blocking read is interrupted, as a signal
        // from elsewhere in a host process would.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = ignore_signal as *const () as usize;
            libc::sigemptyset(&mut act.sa_mask);
            act.sa_flags = 0;
            assert_eq!(
                libc::sigaction(libc::SIGUSR2, &act, std::ptr::null_mut()),
                0
            );
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            let _ = sock.read(&mut buf).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            sock.write_all(b"+PONG\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(100));
        });
        let url: RedisUrl = format!("redis://127.0.0.1:{port}").parse().unwrap();
        let mut c = Connection::connect(&url, Duration::from_secs(30)).unwrap();
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let me = me as usize;
        let signaller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: `me` is the test thread, alive until this thread is joined below.
            unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR2) };
        });
        assert_eq!(c.call(&["PING"]).unwrap(), Frame::Simple("PONG".into()));
        signaller.join().unwrap();
        server.join().unwrap();
    }

    #[test]
    fn parses_every_frame_kind() {
        let buf = b"*5\r\n+OK\r\n-ERR no\r\n:-7\r\n$3\r\na\r\n\r\n$-1\r\n";
        let (f, n) = parse(buf).unwrap().unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(
            f,
            Frame::Array(Some(vec![
                Frame::Simple("OK".into()),
                Frame::Error("ERR no".into()),
                Frame::Int(-7),
                Frame::Bulk(Some(b"a\r\n".to_vec())),
                Frame::Bulk(None),
            ]))
        );
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let buf = b"*2\r\n$5\r\nhello\r\n:1\r\n";
        for cut in 0..buf.len() {
            assert_eq!(
                check(&buf[..cut]).unwrap(),
                Parse::Incomplete,
                "cut at {cut}"
            );
        }
        assert_eq!(check(buf).unwrap(), Parse::Complete(buf.len()));
    }

    #[test]
    fn junk_is_a_protocol_error() {
        for junk in [
            &b"?x\r\n"[..],
            b":abc\r\n",
            b"$-5\r\n",
            b"$1\r\nab\r\n",
            b"*-9\r\n",
        ] {
            assert!(matches!(check(junk), Err(Error::Protocol(_))), "{junk:?}");
        }
    }

    #[test]
    fn encodes_binary_arguments() {
        let mut out = Vec::new();
        encode_command(&mut out, &[&b"SET"[..], b"k", b"\x00\r\n"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n\x00\r\n\r\n");
        let (f, _) = parse(&out).unwrap().unwrap();
        assert!(matches!(f, Frame::Array(Some(ref v)) if v.len() == 3));
    }

    #[test]
    fn urls_parse() {
        let u: RedisUrl = "redis://bob:pw@127.0.0.1:7000/2".parse().unwrap();
        assert_eq!(
            (
                u.host.as_str(),
                u.port,
                u.user.as_deref(),
                u.password.as_deref(),
                u.db
            ),
            ("127.0.0.1", 7000, Some("bob"), Some("pw"), 2)
        );
        let u: RedisUrl = "localhost:1234".parse().unwrap();
        assert_eq!((u.port, u.password), (1234, None));
        let u: RedisUrl = "redis://:secret@h".parse().unwrap();
        assert_eq!(
            (u.port, u.password.as_deref(), u.user.as_deref()),
            (6379, Some("secret"), None)
        );
        assert!("redis://h:99999".parse::<RedisUrl>().is_err());
        assert!(!format!("{u:?}").contains("secret"));
    }
}
