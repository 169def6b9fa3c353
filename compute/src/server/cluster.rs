//! A private Redis Cluster on loopback: `masters` masters with `replicas` replicas each, every
//! node a [`RedisServer`] with the module loaded (its own port and directory, killed on drop),
//! joined by `redis-cli --cluster create`, as an operator makes one. For tests, `batch --cluster
//! N`, `autoloc --cluster N` and `bench-cluster`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use autoloc_dataplane::{Connection, Frame, RedisUrl};

use super::{find_module, RedisServer};
use crate::{Result, ServerError};

/// What every node is started with, besides the module: cluster mode, a node timeout short
/// enough for a failover to take seconds, and replicas synced at once (not after the 5 s Redis
/// waits by default for more replicas to share a diskless sync).
pub const NODE_CONFIG: [(&str, &str); 4] = [
    ("cluster-enabled", "yes"),
    ("cluster-node-timeout", "2000"),
    ("cluster-config-file", "nodes.conf"),
    ("repl-diskless-sync-delay", "0"),
];

/// How long a new cluster may take to agree on its slots.
pub const CLUSTER_DEADLINE: Duration = Duration::from_secs(30);

/// What a cluster is made of.
#[derive(Debug, Clone)]
pub struct ClusterSpec<'a> {
    /// Masters (at least 1).
    pub masters: usize,
    /// Replicas per master.
    pub replicas: usize,
    /// The module's arguments on every node.
    pub module_args: &'a [&'a str],
    /// More `--name value` pairs for every node.
    pub config: &'a [(&'a str, &'a str)],
    /// Nodes (by index, masters first) started without the module.
    pub without_module: &'a [usize],
}

impl ClusterSpec<'_> {
    /// `masters` masters with `replicas` replicas each, with the module on every node.
    pub fn new(masters: usize, replicas: usize) -> ClusterSpec<'static> {
        ClusterSpec {
            masters,
            replicas,
            module_args: &[],
            config: &[],
            without_module: &[],
        }
    }
}

/// A running private cluster; every node is killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    masters: usize,
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each, the module (found by
    /// [`find_module`]) on every node with `module_args`.
    pub fn start(masters: usize, replicas: usize, module_args: &[&str]) -> Result<RedisCluster> {
        RedisCluster::start_spec(&ClusterSpec {
            module_args,
            ..ClusterSpec::new(masters, replicas)
        })
    }

    /// Starts the cluster `spec` describes.
    pub fn start_spec(spec: &ClusterSpec<'_>) -> Result<RedisCluster> {
        let module = find_module()?;
        RedisCluster::start_with(&module, spec)
    }

    /// [`RedisCluster::start_spec`] with the module at `module`.
    pub fn start_with(module: &Path, spec: &ClusterSpec<'_>) -> Result<RedisCluster> {
        if spec.masters == 0 {
            return Err(ServerError::Cluster {
                step: "start",
                message: "a cluster needs at least one master".into(),
            }
            .into());
        }
        let mut config: Vec<(&str, &str)> = NODE_CONFIG.to_vec();
        config.extend_from_slice(spec.config);
        let total = spec.masters * (1 + spec.replicas);
        let mut nodes = Vec::with_capacity(total);
        for i in 0..total {
            nodes.push(if spec.without_module.contains(&i) {
                RedisServer::start_plain(&config)?
            } else {
                RedisServer::start_with(module, spec.module_args, &config)?
            });
        }
        let cluster = RedisCluster {
            nodes,
            masters: spec.masters,
        };
        let ports = cluster.ports();
        create(&ports, spec.replicas)?;
        wait_until_ok(&ports, CLUSTER_DEADLINE)?;
        // And until the replicas are replicas (redis-cli makes them so a moment later) with
        // their masters' data.
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        while cluster.master_ports().len() != spec.masters || !cluster.replicas_in_sync() {
            if Instant::now() > deadline {
                return Err(ServerError::Cluster {
                    step: "wait for the replicas",
                    message: format!("masters now: {:?}", cluster.master_ports()),
                }
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(cluster)
    }

    /// The ports of its nodes.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Waits until every node says `cluster_state:ok` and knows all of the others.
    pub fn wait_until_ok(&self, within: Duration) -> Result<()> {
        wait_until_ok(&self.ports(), within)
    }

    /// The URL of the first node (any node's will do: the runtime discovers the others).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Every node, masters as created first.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Every node, to kill or restart one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// How many masters it was created with.
    pub fn masters(&self) -> usize {
        self.masters
    }

    /// The node listening on `port`.
    pub fn node_at(&mut self, port: u16) -> Option<&mut RedisServer> {
        self.nodes.iter_mut().find(|n| n.port() == port)
    }

    /// Whether every replica's link to its master is up.
    pub fn replicas_in_sync(&self) -> bool {
        self.nodes.iter().all(|n| {
            let mut c = match connect(n.port()) {
                Ok(c) => c,
                Err(_) => return false,
            };
            match c.call(&["INFO", "replication"]) {
                Ok(Frame::Bulk(Some(b))) => {
                    let info = String::from_utf8_lossy(&b);
                    info.contains("role:master") || info.contains("master_link_status:up")
                }
                _ => false,
            }
        })
    }

    /// The ports of the nodes that are masters now (`ROLE`), in node order.
    pub fn master_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| role(n.port()).as_deref() == Some("master"))
            .map(RedisServer::port)
            .collect()
    }
}

/// A connection to the node on `port` of loopback.
pub fn connect(port: u16) -> Result<Connection> {
    let url: RedisUrl = format!("redis://127.0.0.1:{port}")
        .parse()
        .map_err(|source| ServerError::Url { source })?;
    Connection::connect(&url, Duration::from_secs(2)).map_err(|source| crate::Error::Connection {
        url: url.to_string(),
        source,
    })
}

/// `CLUSTER INFO` of the node on `port`.
fn cluster_info(port: u16) -> Result<String> {
    let mut c = connect(port)?;
    match c.call(&["CLUSTER", "INFO"]) {
        Ok(Frame::Bulk(Some(b))) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Ok(other) => Ok(format!("{other:?}")),
        Err(source) => Err(crate::Error::Connection {
            url: format!("127.0.0.1:{port}"),
            source,
        }),
    }
}

/// The first element of `ROLE` on the node on `port` (`master`, `slave`).
fn role(port: u16) -> Option<String> {
    match connect(port).ok()?.call(&["ROLE"]).ok()? {
        Frame::Array(Some(items)) => match items.first()? {
            Frame::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        },
        _ => None,
    }
}

/// The number after `name:` in `INFO`-style text.
fn field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Joins the nodes on `ports` of loopback with `redis-cli --cluster create`, `replicas` per
/// master (the first nodes become masters). redis-cli refuses fewer than 3 masters: 1 or 2 are
/// joined the way it would join them, by hand (`CLUSTER ADDSLOTSRANGE`, `MEET`, `REPLICATE`).
pub fn create(ports: &[u16], replicas: usize) -> Result<()> {
    let masters = ports.len() / (1 + replicas);
    if masters < 3 {
        return create_by_hand(ports, masters);
    }
    let mut cmd = Command::new("redis-cli");
    cmd.arg("--cluster").arg("create");
    for p in ports {
        cmd.arg(format!("127.0.0.1:{p}"));
    }
    cmd.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
    let out = cmd.output().map_err(|e| ServerError::Cluster {
        step: "redis-cli --cluster create",
        message: format!("{e} (redis-cli is in Debian's redis-tools)"),
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("[OK] All 16384 slots covered") {
        let tail: Vec<&str> = text.lines().rev().take(6).collect();
        return Err(ServerError::Cluster {
            step: "redis-cli --cluster create",
            message: format!(
                "{}{}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
        .into());
    }
    Ok(())
}

/// [`create`] for fewer than 3 masters: the first `masters` nodes share the slots in equal
/// ranges, every node meets the first, and each other node replicates a master in turn.
fn create_by_hand(ports: &[u16], masters: usize) -> Result<()> {
    let fail = |step: &'static str, port: u16, reply: String| ServerError::Cluster {
        step,
        message: format!("node {port}: {reply}"),
    };
    let call = |port: u16, args: &[&str]| -> Result<Frame> {
        connect(port)?
            .call(args)
            .map_err(|source| crate::Error::Connection {
                url: format!("127.0.0.1:{port}"),
                source,
            })
    };
    for (i, &port) in ports.iter().take(masters).enumerate() {
        let lo = (i * autoloc_dataplane::slot::SLOTS / masters).to_string();
        let hi = ((i + 1) * autoloc_dataplane::slot::SLOTS / masters - 1).to_string();
        if let Frame::Error(e) = call(port, &["CLUSTER", "ADDSLOTSRANGE", &lo, &hi])? {
            return Err(fail("CLUSTER ADDSLOTSRANGE", port, e).into());
        }
    }
    let first = ports[0].to_string();
    for &port in &ports[1..] {
        if let Frame::Error(e) = call(port, &["CLUSTER", "MEET", "127.0.0.1", &first])? {
            return Err(fail("CLUSTER MEET", port, e).into());
        }
    }
    let ids: Vec<String> = ports
        .iter()
        .take(masters)
        .map(|&p| match call(p, &["CLUSTER", "MYID"]) {
            Ok(Frame::Bulk(Some(id))) => Ok(String::from_utf8_lossy(&id).into_owned()),
            Ok(other) => Err(fail("CLUSTER MYID", p, format!("{other:?}")).into()),
            Err(e) => Err(e),
        })
        .collect::<Result<_>>()?;
    for (i, &port) in ports.iter().enumerate().skip(masters) {
        // A replica can follow its master only once it knows it: retry while the gossip spreads.
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        loop {
            match call(port, &["CLUSTER", "REPLICATE", &ids[i % masters]])? {
                Frame::Error(e) if Instant::now() > deadline => {
                    return Err(fail("CLUSTER REPLICATE", port, e).into())
                }
                Frame::Error(_) => std::thread::sleep(Duration::from_millis(100)),
                _ => break,
            }
        }
    }
    Ok(())
}

/// Waits until every node on `ports` says `cluster_state:ok` and knows all of them.
pub fn wait_until_ok(ports: &[u16], within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let mut last = String::new();
        let ok = ports.iter().all(|&port| match cluster_info(port) {
            Ok(info) => {
                let known = field(&info, "cluster_known_nodes");
                let good = info.contains("cluster_state:ok")
                    && known.is_some_and(|k| k >= ports.len() as u64);
                if !good {
                    last = format!("node {port}: {}", info.replace("\r\n", " "));
                }
                good
            }
            Err(e) => {
                last = format!("node {port}: {e}");
                false
            }
        });
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ServerError::Cluster {
                step: "wait for cluster_state:ok",
                message: last,
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The file in a persistent cluster's directory listing its nodes' ports.
const PORTS_FILE: &str = "ports";

/// Starts a persistent cluster ([`ClusterSpec`] without `without_module`): `redis-server`
/// daemons on ports `first_port..`, each in `dir/<port>` (its `nodes.conf`, log, pid file), the
/// module on each; joined, and waited for. They run until [`down`]. Returns the ports.
pub fn up(spec: &ClusterSpec<'_>, first_port: u16, dir: &Path) -> Result<Vec<u16>> {
    super::check_redis_server()?;
    let module = find_module()?;
    let total = spec.masters * (1 + spec.replicas);
    let io = |step: &'static str| {
        move |e: std::io::Error| ServerError::Cluster {
            step,
            message: e.to_string(),
        }
    };
    // A cluster still up in `dir` is not started over; one stopped is, from nothing.
    if let Ok(list) = std::fs::read_to_string(dir.join(PORTS_FILE)) {
        let running: Vec<u16> = list
            .lines()
            .filter_map(|l| l.trim().parse::<u16>().ok())
            .filter(|&p| connect(p).is_ok())
            .collect();
        if !running.is_empty() {
            return Err(ServerError::Cluster {
                step: "start",
                message: format!(
                    "nodes {running:?} of a cluster in {} are up: stop it first (autoloc cluster down --dir {})",
                    dir.display(),
                    dir.display()
                ),
            }
            .into());
        }
    }
    let ports: Vec<u16> = (0..total as u16).map(|i| first_port + i).collect();
    for &port in &ports {
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).map_err(io("make the node's directory"))?;
        // What a node of an earlier cluster here left: it would rejoin that cluster.
        for file in ["nodes.conf", "dump.rdb"] {
            let _ = std::fs::remove_file(node_dir.join(file));
        }
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--daemonize", "yes", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&node_dir)
            .args(["--logfile", "redis.log", "--pidfile"])
            .arg(node_dir.join("redis.pid"));
        for (k, v) in NODE_CONFIG.iter().chain(spec.config) {
            cmd.arg(format!("--{k}")).arg(v);
        }
        cmd.arg("--loadmodule").arg(&module).args(spec.module_args);
        let status = cmd.status().map_err(io("start redis-server"))?;
        if !status.success() {
            return Err(ServerError::Cluster {
                step: "start redis-server",
                message: format!(
                    "port {port}: {status} (see {}/redis.log)",
                    node_dir.display()
                ),
            }
            .into());
        }
    }
    let list: String = ports.iter().map(|p| format!("{p}\n")).collect();
    std::fs::write(dir.join(PORTS_FILE), list).map_err(io("write the ports file"))?;
    // Daemons answer PING a moment after they fork.
    let deadline = Instant::now() + super::STARTUP_DEADLINE;
    while !ports.iter().all(|&p| connect(p).is_ok()) {
        if Instant::now() > deadline {
            return Err(ServerError::Deadline {
                waited: super::STARTUP_DEADLINE,
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    create(&ports, spec.replicas)?;
    wait_until_ok(&ports, CLUSTER_DEADLINE)?;
    Ok(ports)
}

/// Stops the persistent cluster in `dir` ([`up`]): `SHUTDOWN NOSAVE` to each node. Returns how
/// many nodes were stopped.
pub fn down(dir: &Path) -> Result<usize> {
    let list = std::fs::read_to_string(dir.join(PORTS_FILE)).map_err(|e| ServerError::Cluster {
        step: "read the ports file",
        message: format!(
            "{}: {e} (was the cluster started with `autoloc cluster up`?)",
            dir.display()
        ),
    })?;
    let mut stopped = 0;
    for port in list.lines().filter_map(|l| l.trim().parse::<u16>().ok()) {
        if let Ok(mut c) = connect(port) {
            // The connection closes as the server exits: no reply to wait for.
            let _ = c.call(&["SHUTDOWN", "NOSAVE"]);
            stopped += 1;
        }
    }
    Ok(stopped)
}
