//! A private redis-server with the AutoLoc module loaded: for tests and the embedded default.
//!
//! It listens on a free loopback port, keeps its files in its own temporary directory, must
//! answer PING within a startup deadline, and is killed when the guard drops.
//!
//! [`cluster`]: a private Redis Cluster of such servers, made with `redis-cli --cluster create`.

pub mod cluster;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autoloc_dataplane::{Connection, Frame, RedisUrl};

use crate::{Result, ServerError};

/// How long a server may take to start answering.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(15);

/// File name, in the server's directory, of what it writes to stderr.
const STDERR_FILE: &str = "redis.stderr";

/// File name of the module library.
pub const MODULE_FILE: &str = "libautoloc_redismodule.so";

/// A running private redis-server; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    /// Its directory (AOF, log), kept across [`RedisServer::restart`].
    dir: std::sync::Arc<tempfile::TempDir>,
    /// The module it loads (none: a plain redis-server).
    module: Option<PathBuf>,
    module_args: Vec<String>,
    config: Vec<(String, String)>,
}

/// Where to find the module: `$AUTOLOC_MODULE`, else next to the running executable (or its
/// parent, for test executables under `target/*/deps`).
pub fn find_module() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AUTOLOC_MODULE") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(ServerError::ModuleNotAFile { path: p }.into())
        };
    }
    let exe = std::env::current_exe().map_err(|source| ServerError::CurrentExe { source })?;
    let mut tried = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join(MODULE_FILE);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p);
    }
    Err(ServerError::ModuleNotFound { tried }.into())
}

/// Checks that `redis-server` can be run, with one line saying how to install it if not.
pub fn check_redis_server() -> Result<()> {
    match Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        _ => Err(ServerError::NotInstalled.into()),
    }
}

fn free_port() -> Result<u16, ServerError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| ServerError::FreePort { source })
}

impl RedisServer {
    /// Starts redis-server with the module (found by [`find_module`]) and `module_args`.
    pub fn start(module_args: &[&str]) -> Result<RedisServer> {
        RedisServer::start_with(&find_module()?, module_args, &[])
    }

    /// Starts redis-server loading `module` with `module_args`, plus `config` as extra
    /// `--name value` pairs. It listens on 127.0.0.1 unless `config` has `bind` (addresses
    /// separated by spaces; [`RedisServer::url`] still names 127.0.0.1, so keep it in the list).
    pub fn start_with(
        module: &Path,
        module_args: &[&str],
        config: &[(&str, &str)],
    ) -> Result<RedisServer> {
        RedisServer::start_loading(Some(module), module_args, config)
    }

    /// Starts a redis-server without the module, with `config` as [`RedisServer::start_with`]
    /// takes it: what a node an operator forgot looks like.
    pub fn start_plain(config: &[(&str, &str)]) -> Result<RedisServer> {
        RedisServer::start_loading(None, &[], config)
    }

    fn start_loading(
        module: Option<&Path>,
        module_args: &[&str],
        config: &[(&str, &str)],
    ) -> Result<RedisServer> {
        check_redis_server()?;
        // A free port can be taken between finding it and binding it: try a few.
        let mut tries = 1;
        loop {
            let port = free_port()?;
            match RedisServer::try_start(module, module_args, config, port, None) {
                Err(e) if e.port_in_use() && tries < 5 => tries += 1,
                r => return r.map_err(Into::into),
            }
        }
    }

    fn try_start(
        module: Option<&Path>,
        module_args: &[&str],
        config: &[(&str, &str)],
        port: u16,
        dir: Option<std::sync::Arc<tempfile::TempDir>>,
    ) -> Result<RedisServer, ServerError> {
        let dir = match dir {
            Some(d) => d,
            None => std::sync::Arc::new(
                tempfile::Builder::new()
                    .prefix("autoloc-redis-")
                    .tempdir()
                    .map_err(|source| ServerError::TempDir { source })?,
            ),
        };
        let log = dir.path().join("redis.log");
        // Its stderr (a module's panic message, say) goes to a file beside the log, appended to
        // across restarts: a pipe nobody reads would block the server once full.
        let stderr_path = dir.path().join(STDERR_FILE);
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .map_err(|source| ServerError::StderrFile {
                path: stderr_path.clone(),
                source,
            })?;
        // Loopback only, unless `config` names the addresses (`bind`, space-separated).
        let bind: Vec<&str> = config.iter().find(|(k, _)| *k == "bind").map_or_else(
            || vec!["127.0.0.1"],
            |(_, v)| v.split_whitespace().collect(),
        );
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .args(bind)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log);
        if let Some(module) = module {
            cmd.arg("--loadmodule").arg(module).args(module_args);
        }
        for (k, v) in config.iter().filter(|(k, _)| *k != "bind") {
            cmd.arg(format!("--{k}")).arg(v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|source| ServerError::Spawn { source })?;
        let mut server = RedisServer {
            child,
            port,
            dir,
            module: module.map(Path::to_path_buf),
            module_args: module_args.iter().map(|a| a.to_string()).collect(),
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let deadline = Instant::now() + STARTUP_DEADLINE;
        let url: RedisUrl = server
            .url()
            .parse()
            .map_err(|source| ServerError::Url { source })?;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let stderr = server.stderr();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(8).collect();
                return Err(ServerError::Exited {
                    status,
                    stderr: stderr.trim().to_string(),
                    log: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                });
            }
            if let Ok(mut c) = Connection::connect(&url, Duration::from_secs(2)) {
                // Ours (not a server another test started on this port between our finding it
                // free and binding it: ours then exits, port in use, and is tried again), and
                // done loading its data (PING answers LOADING until then; INFO does not wait).
                let pid = server.child.id().to_string();
                let ours = |c: &mut Connection| match c.call(&["INFO", "server"]) {
                    Ok(Frame::Bulk(Some(text))) => String::from_utf8_lossy(&text)
                        .lines()
                        .any(|l| l.trim_end() == format!("process_id:{pid}")),
                    _ => false,
                };
                match c.call(&["PING"]) {
                    Ok(Frame::Simple(pong)) if pong == "PONG" && ours(&mut c) => return Ok(server),
                    // Serving, and asking for a password (requirepass): ready too.
                    Ok(Frame::Error(e))
                        if autoloc_functions::Error::from_resp(&e).code()
                            == autoloc_functions::ErrorCode::NoPerm =>
                    {
                        return Ok(server)
                    }
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                return Err(ServerError::Deadline {
                    waited: STARTUP_DEADLINE,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its directory (log file `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// What the server wrote to its stderr so far, over every restart (a module's panic
    /// message lands here, not in the log).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(STDERR_FILE)).unwrap_or_default()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server (SIGKILL) and starts it again on the same port, with the same arguments
    /// and directory, as after a crash and restart: the keyspace is what its AOF or RDB file in
    /// that directory holds (empty without persistence).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let args: Vec<&str> = self.module_args.iter().map(String::as_str).collect();
        let config: Vec<(&str, &str)> = self
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            // The old socket may linger for a moment: retry until the port is free again.
            let dir = Some(self.dir.clone());
            match RedisServer::try_start(self.module.as_deref(), &args, &config, self.port, dir) {
                Ok(fresh) => {
                    *self = fresh;
                    return Ok(());
                }
                Err(e) if e.port_in_use() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the server now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_another_server_took_is_not_mistaken_for_ours() {
        // Between finding a port free and binding it, another test's server may take it: ours
        // then fails to bind and exits, and the one answering is not ours.
        let other = RedisServer::start_plain(&[]).unwrap();
        match RedisServer::try_start(None, &[], &[], other.port(), None) {
            Err(e) => assert!(e.port_in_use(), "{e}"),
            Ok(s) => panic!(
                "the server on {} (pid {}) taken for ours (pid {})",
                other.port(),
                other.pid(),
                s.pid()
            ),
        }
    }
}
