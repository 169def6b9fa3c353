//! One Redis node as a [`crate::Runtime`] reaches it: a control connection (RESP) and a
//! data-plane session on the runtime's transport, each set up on first use and again after it
//! failed. A runtime has one for its node, or one per shard's master in a cluster.

use std::cell::RefCell;
use std::time::Duration;

use autoloc_dataplane::delay::DelayLink;
use autoloc_dataplane::{Connection, RedisUrl};

use crate::session::Session;
use crate::transport::{connect_link, Transport};
use crate::{Error, Result};

/// How a node's links are set up: the runtime's settings.
#[derive(Debug, Clone, Copy)]
pub struct LinkSettings {
    /// The data plane's transport.
    pub transport: Transport,
    /// How long to wait for Redis.
    pub timeout: Duration,
    /// Added to every data-plane round trip (zero: none).
    pub emulated_rtt: Duration,
    /// Whether the node is one of a Redis Cluster.
    pub cluster: bool,
}

/// A node: its URL, control connection and data-plane session.
#[derive(Debug)]
pub struct Node {
    url: RedisUrl,
    conn: Option<Connection>,
    session: Option<RefCell<Session>>,
}

impl Node {
    /// A node at `url`, not connected yet.
    pub fn new(url: RedisUrl) -> Node {
        Node {
            url,
            conn: None,
            session: None,
        }
    }

    /// Its URL.
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// The control connection, (re)connecting if the last one failed.
    pub fn connection(&mut self, timeout: Duration) -> Result<&mut Connection> {
        if self.conn.is_none() {
            let c =
                Connection::connect(&self.url, timeout).map_err(|source| Error::Connection {
                    url: self.url.to_string(),
                    source,
                })?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// Forgets the control connection (it may be mid-reply, or dead): the next use reconnects.
    pub fn drop_connection(&mut self) {
        self.conn = None;
    }

    /// Forgets the session: the next use sets up a new one.
    pub fn drop_session(&mut self) {
        self.session = None;
    }

    /// Sends one command on the control connection; a failure drops the connection.
    pub fn command<A: AsRef<[u8]>>(
        &mut self,
        args: &[A],
        timeout: Duration,
    ) -> Result<autoloc_dataplane::Frame> {
        let r = self.connection(timeout)?.call(args);
        r.map_err(|source| {
            self.conn = None;
            Error::Connection {
                url: self.url.to_string(),
                source,
            }
        })
    }

    /// The data-plane session, (re)connected if there is none or the last one failed.
    pub fn session(&mut self, settings: LinkSettings) -> Result<&RefCell<Session>> {
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.borrow().failed().is_some())
        {
            self.session = None;
        }
        if self.session.is_none() {
            let LinkSettings {
                transport,
                timeout,
                emulated_rtt,
                cluster,
            } = settings;
            let url = self.url.clone();
            let link =
                match connect_link(self.connection(timeout)?, &url, transport, timeout, cluster) {
                    Ok(link) => link,
                    Err(Error::Connection { .. }) => {
                        // The control connection is dead (the server restarted?): reconnect once.
                        self.conn = None;
                        connect_link(self.connection(timeout)?, &url, transport, timeout, cluster)?
                    }
                    Err(e) => return Err(e),
                };
            let link = if emulated_rtt.is_zero() {
                link
            } else {
                Box::new(DelayLink::new(link, emulated_rtt))
            };
            self.session = Some(RefCell::new(Session::new(link, timeout)));
        }
        Ok(self.session.as_ref().expect("just connected"))
    }

    /// The session if it is set up.
    pub fn open_session(&self) -> Option<&RefCell<Session>> {
        self.session.as_ref()
    }
}
