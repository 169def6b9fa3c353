//! Which data plane a runtime uses, and setting a link up through the control path.
//!
//! The control path is an ordinary Redis connection (so AUTH and ACLs apply):
//! `AUTOLOC.CONNECT <transport>` returns what the client needs to attach, then the data path
//! bypasses RESP. The `resp` transport is a link too: a connection of its own that carries the
//! same requests as Redis commands.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use autoloc_dataplane::backoff::BackoffConfig;
use autoloc_dataplane::link::{ClientLink, ShmClientLink};
use autoloc_dataplane::resp_link::RespLink;
use autoloc_dataplane::secret::Secret;
use autoloc_dataplane::shm::ShmClient;
use autoloc_dataplane::tcp::TcpClientLink;
use autoloc_dataplane::{Connection, Frame, RedisUrl};

use crate::{Error, Result};

/// A data plane between a compute node and Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Plain Redis commands: the universal baseline.
    Resp,
    /// Shared-memory rings (same host).
    Shm,
    /// Wire frames over TCP, driven by io_uring (other hosts without RDMA).
    Tcp,
    /// Wire frames over RDMA verbs (needs the `rdma` feature and a device).
    Rdma,
}

impl Transport {
    /// The default for a server at `url`: shm on the same host, otherwise tcp.
    pub fn default_for(url: &RedisUrl) -> Transport {
        if is_local(&url.host) {
            Transport::Shm
        } else {
            Transport::Tcp
        }
    }

    /// All transports, for benchmarks.
    pub const ALL: [Transport; 4] = [
        Transport::Shm,
        Transport::Tcp,
        Transport::Rdma,
        Transport::Resp,
    ];
}

fn is_local(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

impl FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "resp" => Ok(Transport::Resp),
            "shm" => Ok(Transport::Shm),
            "tcp" => Ok(Transport::Tcp),
            "rdma" => Ok(Transport::Rdma),
            _ => Err(format!("unknown transport '{s}' (shm, tcp, rdma or resp)")),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Resp => "resp",
            Transport::Shm => "shm",
            Transport::Tcp => "tcp",
            Transport::Rdma => "rdma",
        })
    }
}

fn setup_error(transport: Transport, message: impl Into<String>) -> Error {
    Error::Transport {
        transport,
        message: message.into(),
    }
}

/// Sets up a data-plane link of `transport` through `control` (a connection to `url`), to a
/// node of a Redis Cluster if `cluster` (a RESP link then splits multi-key requests by slot).
pub fn connect_link(
    control: &mut Connection,
    url: &RedisUrl,
    transport: Transport,
    timeout: Duration,
    cluster: bool,
) -> Result<Box<dyn ClientLink>> {
    let call = |control: &mut Connection, args: &[&[u8]]| -> Result<Frame> {
        match control.call(args) {
            Ok(Frame::Error(e)) => Err(setup_error(transport, e)),
            Ok(f) => Ok(f),
            Err(source) => Err(Error::Connection {
                url: url.to_string(),
                source,
            }),
        }
    };
    match transport {
        Transport::Resp => {
            // A connection of its own, so the control connection stays free for commands.
            let conn = Connection::connect(url, timeout).map_err(|source| Error::Connection {
                url: url.to_string(),
                source,
            })?;
            Ok(Box::new(RespLink::new(conn).per_slot(cluster)))
        }
        Transport::Shm => {
            let reply = call(control, &[b"AUTOLOC.CONNECT", b"shm"])?;
            let no_path = || setup_error(transport, "AUTOLOC.CONNECT shm gave no [path, secret]");
            let Frame::Array(Some(items)) = reply else {
                return Err(no_path());
            };
            let [Frame::Bulk(Some(path)), Frame::Bulk(Some(secret))] = items.as_slice() else {
                return Err(no_path());
            };
            let secret = Secret::from_hex(&String::from_utf8_lossy(secret)).ok_or_else(no_path)?;
            let path = std::path::PathBuf::from(String::from_utf8_lossy(path).into_owned());
            let client = ShmClient::attach(&path, &secret)
                .map_err(|e| setup_error(transport, format!("attach {}: {e}", path.display())))?;
            Ok(Box::new(ShmClientLink::new(
                client,
                BackoffConfig::default(),
            )))
        }
        Transport::Tcp => {
            let reply = call(control, &[b"AUTOLOC.CONNECT", b"tcp"])?;
            let Frame::Array(Some(items)) = reply else {
                return Err(setup_error(transport, "AUTOLOC.CONNECT tcp gave no port"));
            };
            let [Frame::Int(port), Frame::Bulk(Some(token))] = items.as_slice() else {
                return Err(setup_error(
                    transport,
                    "AUTOLOC.CONNECT tcp gave no [port, secret]",
                ));
            };
            let port = u16::try_from(*port)
                .map_err(|_| setup_error(transport, format!("bad port {port}")))?;
            let mut link =
                TcpClientLink::connect((url.host.as_str(), port), timeout).map_err(|e| {
                    setup_error(transport, format!("connect to {}:{port}: {e}", url.host))
                })?;
            // The secret goes first, and now: the server serves nothing before it, and closes
            // a connection that has not presented one within its deadline.
            link.authenticate(token)
                .map_err(|e| setup_error(transport, format!("send the secret: {e}")))?;
            Ok(Box::new(link))
        }
        Transport::Rdma => connect_rdma(control, call, timeout),
    }
}

#[cfg(feature = "rdma")]
fn connect_rdma(
    control: &mut Connection,
    call: impl Fn(&mut Connection, &[&[u8]]) -> Result<Frame>,
    timeout: Duration,
) -> Result<Box<dyn ClientLink>> {
    use autoloc_dataplane::rdma::{DeviceConfig, LinkConfig, QpInfo, RdmaClientLink, RdmaDevice};
    let t = Transport::Rdma;
    let dev =
        RdmaDevice::open(&DeviceConfig::from_env()).map_err(|e| setup_error(t, e.to_string()))?;
    let cfg = LinkConfig {
        timeout,
        ..LinkConfig::default()
    };
    let pending = RdmaClientLink::prepare(&dev, &cfg).map_err(|e| setup_error(t, e.to_string()))?;
    let info = pending.info().to_text();
    let Frame::Bulk(Some(server)) = call(control, &[b"AUTOLOC.CONNECT", b"rdma", info.as_bytes()])?
    else {
        return Err(setup_error(
            t,
            "AUTOLOC.CONNECT rdma gave no queue-pair info",
        ));
    };
    let server = QpInfo::from_text(&String::from_utf8_lossy(&server))
        .map_err(|e| setup_error(t, e.to_string()))?;
    let link = pending
        .connect(&server)
        .map_err(|e| setup_error(t, e.to_string()))?;
    Ok(Box::new(link))
}

#[cfg(not(feature = "rdma"))]
fn connect_rdma(
    _control: &mut Connection,
    _call: impl Fn(&mut Connection, &[&[u8]]) -> Result<Frame>,
    _timeout: Duration,
) -> Result<Box<dyn ClientLink>> {
    Err(setup_error(
        Transport::Rdma,
        "this build has no RDMA support (build with --features rdma)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_shm_on_this_host_only() {
        let u = |s: &str| s.parse::<RedisUrl>().unwrap();
        assert_eq!(
            Transport::default_for(&u("redis://127.0.0.1:1")),
            Transport::Shm
        );
        assert_eq!(
            Transport::default_for(&u("redis://localhost:1")),
            Transport::Shm
        );
        assert_eq!(
            Transport::default_for(&u("redis://[::1]:1")),
            Transport::Shm
        );
        assert_eq!(
            Transport::default_for(&u("redis://10.1.2.3:1")),
            Transport::Tcp
        );
        assert_eq!("SHM".parse::<Transport>().unwrap(), Transport::Shm);
        assert!("carrier-pigeon".parse::<Transport>().is_err());
    }
}
