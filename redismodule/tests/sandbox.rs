//! Hostile user functions inside redis-server: each gets a clear error, on either side, while
//! the server stays up, keeps serving other clients and gives the memory back; wasmtime's trap
//! handling never turns into a Redis crash report, and Redis's own crash report still works.

mod common;

use std::time::{Duration, Instant};

use autoloc::server::{find_module, RedisServer};
use autoloc::{guests, Placement, Transport};
use autoloc_dataplane::Frame;
use common::*;

/// A short compute-side limit for this process, so the runaway guests end quickly here.
fn short_compute_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        autoloc_functions::wasm::configure(autoloc_functions::wasm::Limits {
            compute_time: Duration::from_millis(500),
            ..autoloc_functions::wasm::Limits::default()
        })
        .unwrap();
    });
}

fn load_all(s: &RedisServer, names: &[&str]) {
    // Loading compiles in this process too: its host starts with the limits above.
    short_compute_limit();
    let mut rt = runtime(s);
    for n in names {
        rt.load_function(&guests::bytes(n).unwrap(), false).unwrap();
    }
}

/// The resident memory of the server process, in KiB.
fn rss_kib(s: &RedisServer) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn still_serving(s: &RedisServer) {
    let mut c = raw(s);
    assert_eq!(cmd(&mut c, &[b"PING"]), Frame::Simple("PONG".into()));
    assert_eq!(
        cmd(&mut c, &[b"AUTOLOC.CALL", b"get", b"k"]),
        Frame::Bulk(Some(b"v".to_vec()))
    );
}

fn no_crash_report(s: &RedisServer) {
    let log = s.log();
    assert!(
        !log.contains("BUG REPORT") && !log.contains("crashed by signal"),
        "{log}"
    );
}

#[test]
fn hostile_guests_get_clear_errors_and_the_server_keeps_serving() {
    hostile_guests("checks");
}

#[test]
fn hostile_guests_get_the_same_errors_with_signal_based_traps() {
    hostile_guests("signals");
}

/// Every hostile guest, storage-side on a server with `wasm-traps` `traps` and compute-side in
/// this process, twice over: the same clear errors, the server serving throughout, its memory
/// given back, no crash report.
fn hostile_guests(traps: &str) {
    short_compute_limit();
    let s = server(&["budget-ms", "200", "wasm-traps", traps]);
    assert!(s.log().contains(&format!("wasm-traps {traps}")));
    let mut c = raw(&s);
    cmd(&mut c, &[b"SET", b"k", b"v"]);
    load_all(
        &s,
        &[
            "spin_wasm",
            "loop_wasm",
            "grow_wasm",
            "recurse_wasm",
            "oob_wasm",
            "unreachable_wasm",
            "huge_wasm",
            "readmany_wasm",
        ],
    );
    // (guest, arguments, what the error says, storage-side code)
    let cases: [(&str, &[&str], &str, &str); 8] = [
        ("spin_wasm", &[], "", "PUSHBACK"),
        ("loop_wasm", &["k"], "", "PUSHBACK"),
        ("grow_wasm", &[], "memory", "GUEST"),
        ("recurse_wasm", &[], "stack overflow", "GUEST"),
        ("oob_wasm", &[], "out-of-bounds", "GUEST"),
        ("unreachable_wasm", &[], "unreachable", "GUEST"),
        ("huge_wasm", &[], "", ""),
        (
            "readmany_wasm",
            &["1000000"],
            "exceeds the limit",
            "TOOLARGE",
        ),
    ];
    let before = rss_kib(&s);
    for round in 0..2 {
        for (guest, args, says, code) in cases {
            // Storage-side, through Redis's own command.
            let mut argv: Vec<&[u8]> = vec![b"AUTOLOC.CALL", guest.as_bytes()];
            argv.extend(args.iter().map(|a| a.as_bytes()));
            let started = Instant::now();
            let e = err(cmd(&mut c, &argv));
            eprintln!("{guest} AUTOLOC.CALL: {:?}: {e}", started.elapsed());
            assert!(e.contains(says), "{guest}: {e}");
            assert!(e.starts_with(code), "{guest}: {e}");
            still_serving(&s);
            // Through the library on the data plane: storage-side (then compute-side after a
            // pushback) and compute-side.
            let mut rt = runtime(&s).with_transport(Transport::Shm).unwrap();
            for p in [Placement::Storage, Placement::Compute] {
                let started = Instant::now();
                let e = rt.invoke(guest, args, p).unwrap_err().to_string();
                eprintln!("{guest} {p}: {:?}: {e}", started.elapsed());
                assert!(e.contains(says), "{guest} {p}: {e}");
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{guest} {p} ended"
                );
                still_serving(&s);
            }
        }
        if round == 0 {
            // Allocators keep some memory after the first round; later rounds must not grow.
            let after_one = rss_kib(&s);
            assert!(after_one >= before / 2);
        }
    }
    let after = rss_kib(&s);
    assert!(
        after < before + 256 * 1024,
        "memory is given back: {before} KiB before, {after} KiB after three rounds"
    );
    no_crash_report(&s);
}

#[test]
fn an_instance_serves_only_its_callers_and_a_new_one_sees_nothing_earlier() {
    // Storage-side an instance is kept for the next call of the same ACL user on the same
    // thread; compute-side for the next call on the same thread. It is dropped after a trap or
    // a run that grew its memory past 4 MiB (the 8 MiB runs, also past the pages a pooled slot
    // keeps resident, which are given back). A new instance's slot is reset, not remapped: a page
    // an earlier instance wrote, in its data or in a grown heap, must read as fresh (the data
    // segments are mapped copy-on-write, and fresh heap pages are taken as zero without being
    // written).
    short_compute_limit();
    // A budget for the 8 MiB runs (a debug build writes them slowly).
    let s = server(&["budget-ms", "200"]);
    load_all(&s, &["residue_wasm"]);
    let mut c = raw(&s);
    cmd(
        &mut c,
        &[b"ACL", b"SETUSER", b"alice", b"on", b">pw", b"~*", b"+@all"],
    );
    let mut alice = raw(&s);
    assert_eq!(
        cmd(&mut alice, &[b"AUTH", b"alice", b"pw"]),
        Frame::Simple("OK".into())
    );
    let alice_url = s.url().replace("redis://", "redis://alice:pw@");
    let connect = |url: &str| {
        autoloc::Runtime::connect(url)
            .unwrap()
            .with_transport(Transport::Shm)
            .unwrap()
    };
    let mut callers = [
        ("default", c, connect(&s.url())),
        ("alice", alice, connect(&alice_url)),
    ];
    // Compute-side, all on this thread: what it keeps, the tag of the call that left it.
    let mut kept_here: Option<String> = None;
    let mut reused = 0;
    for bytes in [
        "4096", "8388608", "4096", "65536", "4096", "8388608", "100", "4096",
    ] {
        for tag in ["1", "trap", "2"] {
            for (user, conn, rt) in &mut callers {
                let tag = if tag == "trap" {
                    tag.to_string()
                } else {
                    format!("{user}{tag}")
                };
                let tag = tag.as_str();
                let args = [bytes, tag];
                for path in ["AUTOLOC.CALL", "storage", "compute"] {
                    let out = match path {
                        "AUTOLOC.CALL" => {
                            let argv = [
                                b"AUTOLOC.CALL".as_slice(),
                                b"residue_wasm",
                                bytes.as_bytes(),
                                tag.as_bytes(),
                            ];
                            match cmd(conn, &argv) {
                                Frame::Bulk(Some(b)) => Ok(b),
                                Frame::Error(e) => Err(e),
                                other => panic!("{other:?}"),
                            }
                        }
                        _ => {
                            let p = if path == "storage" {
                                Placement::Storage
                            } else {
                                Placement::Compute
                            };
                            match rt.invoke("residue_wasm", &args, p) {
                                Ok(r) => match r.output {
                                    autoloc::Output::Value(Some(b)) => Ok(b),
                                    other => panic!("{other:?}"),
                                },
                                Err(e) => Err(e.to_string()),
                            }
                        }
                    };
                    let at = format!("{user} {path} {args:?}");
                    if tag == "trap" {
                        let e = out.unwrap_err();
                        assert!(e.contains("unreachable"), "{at}: {e}");
                        if path == "compute" {
                            kept_here = None;
                        }
                        continue;
                    }
                    let out = String::from_utf8(out.unwrap()).unwrap();
                    if path == "compute" {
                        // One principal here: the model says which.
                        let want = kept_here
                            .as_ref()
                            .map_or("clean".into(), |t| format!("kept from {t}"));
                        assert_eq!(out, want, "{at}");
                        kept_here = (bytes != "8388608").then(|| tag.to_string());
                    } else {
                        // Storage-side a run may move between Redis's main thread and the
                        // data-plane thread (a deferred AUTOLOC.CALL), so which instance it gets
                        // is not fixed; whose it is, is: its own user's, never after a trap.
                        assert!(
                            out == "clean"
                                || out == format!("kept from {user}1")
                                || out == format!("kept from {user}2"),
                            "{at}: {out}"
                        );
                    }
                    reused += usize::from(out != "clean");
                }
            }
        }
    }
    assert!(reused > 20, "instances were kept: {reused} calls");
    // A user deleted and created again under the same name starts afresh: the data plane's
    // reaper (every 100 ms) sees alice gone, and every kept instance is dropped.
    for (user, conn, _) in &mut callers {
        let tag = format!("{user}3");
        let argv = [
            b"AUTOLOC.CALL".as_slice(),
            b"residue_wasm",
            b"4096",
            tag.as_bytes(),
        ];
        cmd(conn, &argv);
    }
    let mut c = raw(&s);
    cmd(&mut c, &[b"ACL", b"DELUSER", b"alice"]);
    std::thread::sleep(Duration::from_millis(500));
    drop(callers);
    cmd(
        &mut c,
        &[b"ACL", b"SETUSER", b"alice", b"on", b">pw", b"~*", b"+@all"],
    );
    let mut alice = raw(&s);
    cmd(&mut alice, &[b"AUTH", b"alice", b"pw"]);
    for conn in [&mut alice, &mut c] {
        assert_eq!(
            cmd(conn, &[b"AUTOLOC.CALL", b"residue_wasm", b"4096"]),
            Frame::Bulk(Some(b"clean".to_vec())),
            "after ACL DELUSER"
        );
    }
    no_crash_report(&s);
}

#[test]
fn a_guest_writes_only_what_its_callers_acl_allows() {
    let s = server(&[]);
    let mut c = raw(&s);
    load_all(&s, &["writer_wasm"]);
    cmd(
        &mut c,
        &[
            b"ACL", b"SETUSER", b"alice", b"on", b">pw", b"~mine:*", b"+@all",
        ],
    );
    let url = s.url().replace("redis://", "redis://alice:pw@");
    let mut alice = autoloc::Runtime::connect(&url)
        .unwrap()
        .with_transport(Transport::Shm)
        .unwrap();
    for p in [Placement::Storage, Placement::Compute] {
        let e = alice
            .invoke("writer_wasm", &["theirs:1", "x"], p)
            .unwrap_err();
        assert_eq!(e.code(), autoloc_functions::ErrorCode::NoPerm, "{p}: {e}");
        alice.invoke("writer_wasm", &["mine:1", "x"], p).unwrap();
    }
    assert_eq!(cmd(&mut c, &[b"EXISTS", b"theirs:1"]), Frame::Int(0));
    assert_eq!(
        cmd(&mut c, &[b"GET", b"mine:1"]),
        Frame::Bulk(Some(b"x".to_vec()))
    );
}

#[test]
fn one_name_loaded_from_two_clients_at_once_is_loaded_once() {
    let s = server(&[]);
    let bytes = guests::bytes("get_wasm").unwrap();
    let mut replies: Vec<Frame> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (s, bytes) = (&s, &bytes);
                scope.spawn(move || cmd(&mut raw(s), &[b"AUTOLOC.FUNCTION", b"LOAD", bytes]))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    replies.sort_by_key(|f| matches!(f, Frame::Error(_)));
    assert_eq!(replies[0], Frame::Bulk(Some(b"get_wasm".to_vec())));
    assert!(matches!(&replies[1], Frame::Error(e) if e.contains("already exists")));
}

#[test]
fn traps_never_crash_redis_and_its_own_crash_report_still_works() {
    traps_then_crash_report("checks");
}

#[test]
fn signal_based_traps_never_crash_redis_and_its_own_crash_report_still_works() {
    traps_then_crash_report("signals");
}

/// Guests trap (before and after Redis reinstalls its handlers), the server serves on, then a
/// fault outside any guest gets Redis's crash report: with `wasm-traps` `traps`.
fn traps_then_crash_report(traps: &str) {
    let mut s = RedisServer::start_with(
        &find_module().unwrap(),
        &["wasm-traps", traps],
        &[("enable-debug-command", "yes")],
    )
    .unwrap();
    assert!(s.log().contains(&format!("wasm-traps {traps}")));
    let mut c = raw(&s);
    load_all(&s, &["oob_wasm", "unreachable_wasm", "recurse_wasm"]);
    for guest in ["oob_wasm", "unreachable_wasm", "recurse_wasm"] {
        let e = err(cmd(&mut c, &[b"AUTOLOC.CALL", guest.as_bytes()]));
        assert!(e.starts_with("GUEST trap"), "{e}");
    }
    assert_eq!(cmd(&mut c, &[b"PING"]), Frame::Simple("PONG".into()));
    no_crash_report(&s);
    // Redis installs its handlers again (over wasmtime's) when the crash log is switched; the
    // module puts wasmtime's back in front, and a guest's fault is still only a trap.
    for on in [b"no".as_slice(), b"yes"] {
        assert_eq!(
            cmd(&mut c, &[b"CONFIG", b"SET", b"crash-log-enabled", on]),
            Frame::Simple("OK".into())
        );
        let e = err(cmd(&mut c, &[b"AUTOLOC.CALL", b"oob_wasm"]));
        assert!(e.starts_with("GUEST trap"), "{e}");
    }
    no_crash_report(&s);
    // With signals, wasmtime's handlers are installed; a fault outside a guest still reaches
    // Redis's handler, which writes its report, and the server ends (a fault inside the report,
    // as its memory test may take, ends it too instead of entering the handler again).
    let _ = c.call(&[b"DEBUG".as_slice(), b"SEGFAULT"]);
    crashed_with_report(&mut s, "DEBUG SEGFAULT");
}

/// Waits for the server to end after `what`, and checks it wrote Redis's crash report.
fn crashed_with_report(s: &mut RedisServer, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.is_running() {
        assert!(Instant::now() < deadline, "{what} did not end the server");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = s.log();
    assert!(
        log.contains("crashed by signal") && log.contains("BUG REPORT"),
        "Redis's crash report after {what}: {log}"
    );
}

#[test]
fn a_segv_sent_by_kill_still_reaches_redis() {
    let mut s = RedisServer::start(&["wasm-traps", "signals"]).unwrap();
    load_all(&s, &["oob_wasm"]);
    let mut c = raw(&s);
    let e = err(cmd(&mut c, &[b"AUTOLOC.CALL", b"oob_wasm"]));
    assert!(e.starts_with("GUEST trap"), "{e}");
    // Not a fault: wasmtime's handler finds no guest, the module's fall-through hands it to
    // Redis by raising it again (returning would drop it).
    let status = std::process::Command::new("kill")
        .args(["-SEGV", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    crashed_with_report(&mut s, "kill -SEGV");
}

/// The SDK's allocator serves a new instance's first 256 KiB from its initial memory, so a small
/// invocation never grows its memory: with signal-based traps (the default) a growth changes
/// the slot's page protection, once then and once more when the slot is reset. Past the arena
/// the memory grows as before. On both sides.
#[test]
fn a_fresh_instance_allocates_from_its_initial_memory_before_growing_it() {
    let s = server(&[]);
    load_all(&s, &["pages_wasm"]);
    let mut c = raw(&s);
    let mut rt = runtime(&s).with_transport(Transport::Shm).unwrap();
    let mut pages = |bytes: &str| -> Vec<(u32, u32)> {
        let storage = match cmd(&mut c, &[b"AUTOLOC.CALL", b"pages_wasm", bytes.as_bytes()]) {
            Frame::Bulk(Some(b)) => b,
            other => panic!("pages_wasm {bytes}: {other:?}"),
        };
        let compute = match rt.invoke("pages_wasm", &[bytes], Placement::Compute) {
            Ok(i) => match i.output {
                autoloc::Output::Value(Some(b)) => b,
                other => panic!("pages_wasm {bytes} compute-side: {other:?}"),
            },
            Err(e) => panic!("pages_wasm {bytes} compute-side: {e}"),
        };
        [storage, compute]
            .iter()
            .map(|b| {
                let t = String::from_utf8(b.clone()).unwrap();
                let (before, after) = t.split_once(' ').unwrap();
                (before.parse().unwrap(), after.parse().unwrap())
            })
            .collect()
    };
    // Nothing grew before the guest's own allocation either (its arguments, their buffer).
    let initial = pages("0")[0].0;
    assert_eq!(
        initial,
        declared_pages(&guests::bytes("pages_wasm").unwrap())
    );
    // Built with the tree's `.cargo/config.toml`: a 64 KiB stack, not Rust's 1 MiB (17 pages
    // and more), so a fresh instance's memory is a few pages to reset.
    assert!(
        initial <= 8,
        "{initial} initial pages: built without the tree's flags?"
    );
    for bytes in ["0", "4096", "65536", "200000"] {
        assert_eq!(pages(bytes), vec![(initial, initial); 2], "{bytes} bytes");
    }
    for (before, after) in pages("1000000") {
        assert_eq!(before, initial);
        assert!(
            after >= initial + 1_000_000 / 65536,
            "{after} pages after 1 MB"
        );
    }
}

/// The initial size, in pages, of the memory `module` declares (its memory section's first).
fn declared_pages(module: &[u8]) -> u32 {
    fn leb(b: &[u8], at: &mut usize) -> u32 {
        let (mut n, mut shift) = (0u32, 0);
        loop {
            let byte = b[*at];
            *at += 1;
            n |= u32::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return n;
            }
            shift += 7;
        }
    }
    let mut at = 8;
    loop {
        let id = module[at];
        at += 1;
        let len = leb(module, &mut at) as usize;
        if id == 5 {
            let _count = leb(module, &mut at);
            at += 1; // the limits' flags
            return leb(module, &mut at);
        }
        at += len;
    }
}
