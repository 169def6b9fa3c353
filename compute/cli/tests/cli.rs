//! The binaries, run as a user would. Needs the module built (`cargo build --workspace`, which
//! ci/test does first); it is found next to the binaries.

use std::path::Path;
use std::process::{Command, Output};

use autoloc::server::RedisServer;

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(ok(out).trim()).unwrap()
}

const BATCH: &str = env!("CARGO_BIN_EXE_batch");
const REDISCLIENT: &str = env!("CARGO_BIN_EXE_redisclient");
const AUTOLOC: &str = env!("CARGO_BIN_EXE_autoloc");

fn server() -> RedisServer {
    RedisServer::start(&["budget-ms", "500"])
        .expect("module built next to the binaries (cargo build --workspace)")
}

#[test]
fn load_call_batch_and_stats_against_a_server() {
    let s = server();
    let url = s.url();
    ok(&run(
        AUTOLOC,
        &[
            "--redis",
            &url,
            "load",
            "rmat",
            "--scale",
            "9",
            "--edge-factor",
            "4",
            "--seed",
            "2",
        ],
    ));
    // --redis after the subcommand too.
    let call = json(&run(
        AUTOLOC,
        &["call", "khop", "3", "2", "--json", "--redis", &url],
    ));
    assert_eq!(call["function"], "khop");
    assert_eq!(call["placement"], "storage");
    assert!(call["result"].is_array());
    let compute = json(&run(
        AUTOLOC,
        &[
            "--redis",
            &url,
            "call",
            "khop",
            "3",
            "2",
            "--placement",
            "compute",
            "--json",
        ],
    ));
    assert_eq!(compute["placement"], "compute");
    assert_eq!(compute["result"], call["result"]);

    let storage = json(&run(
        BATCH,
        &[
            "khop",
            "1",
            "300",
            "--redis",
            &url,
            "--placement",
            "storage",
            "--json",
        ],
    ));
    let compute = json(&run(
        BATCH,
        &[
            "khop",
            "1",
            "300",
            "--redis",
            &url,
            "--placement",
            "compute",
            "--threads",
            "2",
            "--json",
        ],
    ));
    let baseline = json(&run(
        REDISCLIENT,
        &["khop", "1", "300", "--redis", &url, "--json"],
    ));
    for (r, placement) in [
        (&storage, "storage"),
        (&compute, "compute"),
        (&baseline, "redisclient"),
    ] {
        assert_eq!(r["placement"], placement);
        assert_eq!(r["function"], "khop");
        assert_eq!(r["invocations"], 300);
        assert_eq!(r["errors"], 0);
        for field in ["seconds", "throughput_per_s"] {
            assert!(r[field].as_f64().unwrap() > 0.0);
        }
        for p in ["p50", "p99", "p999"] {
            assert!(r["latency_us"][p].as_f64().unwrap() > 0.0);
        }
    }
    assert_eq!(storage["results_checksum"], compute["results_checksum"]);
    assert_eq!(storage["results_checksum"], baseline["results_checksum"]);

    // Every placement policy runs through the CLI, on every fast transport, with equal results.
    for policy in ["adaptive", "autoloc2021", "kayak", "oracle(khop=0.5)"] {
        for transport in ["shm", "tcp", "resp"] {
            let r = json(&run(
                BATCH,
                &[
                    "khop",
                    "1",
                    "300",
                    "--redis",
                    &url,
                    "--placement",
                    policy,
                    "--transport",
                    transport,
                    "--json",
                    "--in-flight",
                    "4",
                ],
            ));
            assert_eq!(r["errors"], 0, "{policy} {transport}: {r}");
            assert_eq!(
                r["results_checksum"], storage["results_checksum"],
                "{policy} {transport}"
            );
            assert!(r["storage_share_final"]["khop"].as_f64().is_some());
        }
    }

    // The last policy run reported its table: `autoloc placement` shows it.
    let p = json(&run(AUTOLOC, &["--redis", &url, "placement", "--json"]));
    let node = &p.as_array().unwrap()[0];
    let khop = node["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "khop")
        .unwrap();
    assert!(khop["share"].as_f64().unwrap() >= 0.0);
    assert!(
        khop["storage"]["invocations"].as_u64().unwrap()
            + khop["compute"]["invocations"].as_u64().unwrap()
            >= 300
    );

    let other = json(&run(
        BATCH,
        &[
            "digest", "1", "5", "--first", "md5", "--arg", "3", "--redis", &url, "--json",
        ],
    ));
    assert_eq!(other["errors"], 0);

    let stats = json(&run(AUTOLOC, &["stats", "--json", "--redis", &url]));
    assert!(stats["functions"]["khop"]["calls"].as_u64().unwrap() >= 301);
    assert!(ok(&run(AUTOLOC, &["--redis", &url, "stats"])).contains("khop"));
    assert!(ok(&run(AUTOLOC, &["--redis", &url, "functions"])).contains("khop <start> <k>"));
}

#[test]
fn embedded_default_runs_without_a_server() {
    let r = json(&run(BATCH, &["khop", "1", "50", "--json"]));
    assert_eq!(r["invocations"], 50);
    assert_eq!(r["errors"], 0);
    let out = run(AUTOLOC, &["call", "khop", "1", "1"]);
    assert!(ok(&out).starts_with('['));
}

#[test]
fn clear_errors_for_bad_input() {
    let s = server();
    let url = s.url();
    let fail = |bin: &str, args: &[&str], want: &str| {
        let err = failure(bin, args);
        assert!(
            err.contains(want),
            "{args:?}: stderr '{err}' lacks '{want}'"
        );
    };
    fail(
        BATCH,
        &["nope", "1", "1", "--redis", &url],
        "unknown function 'nope'",
    );
    fail(BATCH, &["khop", "0", "1", "--redis", &url], "at least 1");
    fail(
        BATCH,
        &["khop", "1", "1", "--threads", "0", "--redis", &url],
        "threads",
    );
    fail(
        BATCH,
        &["khop", "1", "1", "--k", "50", "--redis", &url],
        "k must be",
    );
    fail(BATCH, &["khop", "x", "1"], "invalid value");
    fail(
        BATCH,
        &["khop", "1", "1", "--placement", "moon", "--redis", &url],
        "unknown policy 'moon'",
    );
    fail(
        BATCH,
        &["khop", "1", "1", "--redis", "redis://127.0.0.1:1"],
        "connect",
    );
    fail(
        AUTOLOC,
        &["--redis", &url, "call", "khop", "-1", "2"],
        "must not be negative",
    );
    fail(
        AUTOLOC,
        &["--redis", &url, "load", "snap", "/nonexistent/file"],
        "/nonexistent/file",
    );
    fail(
        AUTOLOC,
        &["--redis", &url, "load", "rmat", "--scale", "40"],
        "scale 40",
    );
    // Without redis-server on PATH, the embedded default says how to install it, in one line.
    let out = Command::new(BATCH)
        .args(["khop", "1", "1"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("redis-server is not installed")
            && err.contains("apt-get install redis-server"),
        "{err}"
    );
    // No RDMA device on this kernel (or no rdma feature): one clear line, no panic.
    let out = run(
        BATCH,
        &["khop", "1", "1", "--redis", &url, "--transport", "rdma"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rdma transport:") && !err.contains("panicked"),
        "{err}"
    );
    assert!(ok(&run(BATCH, &["--help"])).contains("--placement"));
    assert!(ok(&run(REDISCLIENT, &["--help"])).contains("round"));
}

#[test]
fn loads_snap_edge_lists() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edges.txt");
    std::fs::write(&file, "# a SNAP file\n1 2\n2 3\n3 1\n3 4\n").unwrap();
    let url = s.url();
    ok(&run(
        AUTOLOC,
        &[
            "--redis",
            &url,
            "load",
            "snap",
            file.to_str().unwrap(),
            "--undirected",
        ],
    ));
    let r = json(&run(
        AUTOLOC,
        &["--redis", &url, "call", "khop", "4", "2", "--json"],
    ));
    assert_eq!(r["result"], serde_json::json!([1, 2, 3]));
}

/// Asserts `bin args` fails, and returns its stderr.
fn failure(bin: &str, args: &[&str]) -> String {
    let out = run(bin, args);
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn every_error_names_its_cause_once() {
    // A refused connection: said once, not once per layer.
    let err = failure(BATCH, &["khop", "1", "1", "--redis", "redis://127.0.0.1:1"]);
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // A placement typo lists the choices once.
    let s = server();
    let url = s.url();
    let err = failure(
        BATCH,
        &["khop", "1", "1", "--placement", "moon", "--redis", &url],
    );
    assert_eq!(err.matches("autoloc2021").count(), 1, "{err}");
    // With a password set: a wrong one is WRONGPASS once; none is NOAUTH, not a guess.
    let mut c = autoloc_dataplane::Connection::connect(
        &url.parse().unwrap(),
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    c.call(&["CONFIG", "SET", "requirepass", "pw"]).unwrap();
    let wrong = format!("redis://:bad@127.0.0.1:{}", s.port());
    let err = failure(AUTOLOC, &["--redis", &wrong, "stats"]);
    assert_eq!(err.matches("WRONGPASS").count(), 1, "{err}");
    let err = failure(AUTOLOC, &["--redis", &url, "stats"]);
    assert!(err.contains("NOAUTH"), "{err}");
    assert!(!err.contains("module"), "{err}");
    let right = format!("redis://:pw@127.0.0.1:{}", s.port());
    let stats = json(&run(AUTOLOC, &["--redis", &right, "stats", "--json"]));
    assert!(stats["functions"]["khop"]["calls"].is_u64(), "{stats}");
    // A server without the module: told to load it.
    let plain = autoloc::server::RedisServer::start_plain(&[]).unwrap();
    let bare = plain.url();
    let err = failure(AUTOLOC, &["--redis", &bare, "call", "khop", "1", "2"]);
    assert!(
        err.contains("has no AutoLoc module") && err.contains("--loadmodule"),
        "{err}"
    );
    let err = failure(BATCH, &["khop", "1", "1", "--redis", &bare]);
    assert!(err.contains("has no AutoLoc module"), "{err}");
}

#[test]
fn a_run_with_failed_invocations_exits_non_zero() {
    // On the embedded default, invocation i starts at vertex i mod 4096: 5,000 find theirs.
    let r = json(&run(
        BATCH,
        &["khop", "1", "5000", "--in-flight", "16", "--json"],
    ));
    assert_eq!(r["errors"], 0, "{r}");
    // Against a server holding vertices 0..512 only, invocations 512.. fail: the report is
    // printed, and the exit code says so, unless --max-errors allows them.
    let s = server();
    let url = s.url();
    ok(&run(
        AUTOLOC,
        &[
            "--redis",
            &url,
            "load",
            "rmat",
            "--scale",
            "9",
            "--edge-factor",
            "4",
        ],
    ));
    let args = ["khop", "1", "600", "--redis", &url, "--json"];
    let out = run(BATCH, &args);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], 89, "{report}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("89 of 600 invocations failed"), "{err}");
    let allowed = [&args[..], &["--max-errors", "89"]].concat();
    ok(&run(BATCH, &allowed));
    // The README's spelling of the loader.
    ok(&run(AUTOLOC, &["load", "autoloc-json", "--help"]));
}

#[test]
fn get_and_set_over_every_transport() {
    let s = server();
    let url = s.url();
    for t in ["shm", "tcp", "resp"] {
        let key = format!("cli:{t}");
        let out = ok(&run(
            AUTOLOC,
            &["--redis", &url, "set", &key, "a value", "--transport", t],
        ));
        assert_eq!(out.trim(), "OK");
        let out = ok(&run(
            AUTOLOC,
            &["--redis", &url, "get", &key, "--transport", t],
        ));
        assert_eq!(out.trim(), "a value", "{t}");
        let err = failure(
            AUTOLOC,
            &["--redis", &url, "get", "cli:none", "--transport", t],
        );
        assert!(err.contains("no such key 'cli:none'"), "{t}: {err}");
    }
}

/// The embedded default leaves nothing behind: no process, no directory, no segment in /dev/shm.
/// `redis-server` is found through a wrapper first in `PATH` that notes the pid (kept by
/// `exec`) and `--dir` of every server the CLIs start, then runs the real one.
#[test]
fn the_embedded_default_leaves_nothing_behind() {
    let real = Command::new("sh")
        .args(["-c", "command -v redis-server"])
        .output()
        .unwrap();
    let real = String::from_utf8(real.stdout).unwrap().trim().to_string();
    assert!(!real.is_empty(), "redis-server is not installed");
    let bin = tempfile::tempdir().unwrap();
    let (pids, dirs) = (bin.path().join("pids"), bin.path().join("dirs"));
    let wrapper = bin.path().join("redis-server");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho $$ >> '{}'\nprev=\nfor a in \"$@\"; do [ \"$prev\" = --dir ] && echo \"$a\" >> '{}'; prev=$a; done\nexec '{real}' \"$@\"\n",
            pids.display(),
            dirs.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let runs: [(&str, &[&str]); 4] = [
        (BATCH, &["khop", "1", "10"]),
        (BATCH, &["khop", "1", "10", "--transport", "tcp"]),
        (AUTOLOC, &["get", "1"]),
        (
            AUTOLOC,
            &["call", "khop", "1", "2", "--placement", "compute"],
        ),
    ];
    for (bin, args) in runs {
        let out = Command::new(bin)
            .args(args)
            .env("PATH", &path)
            .output()
            .unwrap();
        ok(&out);
    }
    let pids = std::fs::read_to_string(&pids).unwrap();
    let pids: Vec<&str> = pids.lines().collect();
    assert!(pids.len() >= 4, "the wrapper saw no servers: {pids:?}");
    for pid in &pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "redis-server {pid} still runs"
        );
    }
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| {
            pids.iter()
                .any(|pid| name.starts_with(&format!("autoloc-{pid}-")))
        })
        .collect();
    for name in &left {
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(name));
    }
    assert!(left.is_empty(), "segments left in /dev/shm: {left:?}");
    for dir in std::fs::read_to_string(&dirs).unwrap().lines() {
        assert!(!Path::new(dir).exists(), "server directory {dir} left");
    }
}

/// A server killed between `AUTOLOC.CONNECT shm` and its client's attach leaves the segment's
/// name; the next server to load the module removes the names of processes that are gone.
#[test]
fn a_restarted_server_removes_what_a_killed_one_left() {
    let mut s = server();
    let mut c = autoloc_dataplane::Connection::connect(
        &s.url().parse().unwrap(),
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let autoloc_dataplane::Frame::Array(Some(reply)) = c.call(&["AUTOLOC.CONNECT", "shm"]).unwrap()
    else {
        panic!("AUTOLOC.CONNECT shm gave no array");
    };
    let autoloc_dataplane::Frame::Bulk(Some(path)) = &reply[0] else {
        panic!("no path in {reply:?}");
    };
    let path = std::path::PathBuf::from(String::from_utf8(path.clone()).unwrap());
    assert!(
        path.starts_with("/dev/shm") && path.exists(),
        "{}",
        path.display()
    );
    s.restart().unwrap();
    assert!(!path.exists(), "{} left after a restart", path.display());
}
