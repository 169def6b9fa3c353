//! `AUTOLOC.FUNCTION LOAD` compiles off Redis's main thread: while a big module compiles, the
//! server keeps answering other clients; the function is installed when ready, REPLACE is
//! checked at install, and replicas and the AOF get exactly one LOAD per successful LOAD and
//! none for a failed one. Where a client cannot block (`MULTI`), LOAD compiles in place.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoloc::guests;
use autoloc::server::RedisServer;
use autoloc_dataplane::{Connection, Frame};
use common::*;

fn leb(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn sleb(mut v: i64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0) {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_leb(b: &[u8], at: &mut usize) -> u64 {
    let (mut n, mut shift) = (0u64, 0);
    loop {
        let byte = b[*at];
        *at += 1;
        n |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte < 0x80 {
            return n;
        }
    }
}

/// One padding function's body, about `len` bytes: `(i32) -> i32`, a long chain of
/// `x = x * c + d` on its parameter (constants from `seed`), which the compiler must work
/// through instruction by instruction.
fn body(len: usize, seed: &mut u32) -> Vec<u8> {
    let mut b = vec![0]; // no locals beyond the parameter
    while b.len() < len {
        *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        b.extend([0x20, 0x00, 0x41]); // local.get 0; i32.const
        sleb(i64::from((*seed >> 8) as i32 | 1), &mut b);
        b.extend([0x6c, 0x41]); // i32.mul; i32.const
        sleb(i64::from(*seed as u16), &mut b);
        b.extend([0x6a, 0x21, 0x00]); // i32.add; local.set 0
    }
    b.extend([0x20, 0x00, 0x0b]); // local.get 0; end
    b
}

/// The example guest `base` with functions added (never exported nor called, but compiled like
/// any other) until it is about `size` bytes: still a valid AutoLoc guest, describing itself as
/// `base` does, whose compilation takes long. `seed` makes its bytes (its version) its own.
fn padded(base: &[u8], size: usize, mut seed: u32) -> Vec<u8> {
    assert_eq!(&base[..8], b"\0asm\x01\0\0\0");
    const BODY: usize = 64 << 10;
    let added = size.saturating_sub(base.len()) / (BODY + 4);
    let mut out = base[..8].to_vec();
    let mut at = 8;
    let mut new_type = None;
    while at < base.len() {
        let id = base[at];
        at += 1;
        let len = read_leb(base, &mut at) as usize;
        let payload = &base[at..at + len];
        at += len;
        let mut p = 0;
        let new_payload = match id {
            // Types: one more, `(i32) -> i32`.
            1 => {
                let count = read_leb(payload, &mut p);
                new_type = Some(count);
                let mut s = Vec::new();
                leb(count + 1, &mut s);
                s.extend(&payload[p..]);
                s.extend([0x60, 0x01, 0x7f, 0x01, 0x7f]);
                s
            }
            // Functions: the added ones, of that type.
            3 => {
                let count = read_leb(payload, &mut p);
                let mut s = Vec::new();
                leb(count + added as u64, &mut s);
                s.extend(&payload[p..]);
                for _ in 0..added {
                    leb(new_type.expect("the type section comes first"), &mut s);
                }
                s
            }
            // Code: their bodies.
            10 => {
                let count = read_leb(payload, &mut p);
                let mut s = Vec::new();
                leb(count + added as u64, &mut s);
                s.extend(&payload[p..]);
                for _ in 0..added {
                    let b = body(BODY, &mut seed);
                    leb(b.len() as u64, &mut s);
                    s.extend(b);
                }
                s
            }
            _ => payload.to_vec(),
        };
        out.push(id);
        leb(new_payload.len() as u64, &mut out);
        out.extend(new_payload);
    }
    out
}

/// The biggest guest that stays under the default `wasm-module-mb` (8 MiB), as the 7.4 MiB
/// module that kept PING waiting 3.7 s when LOAD compiled on the main thread.
fn big_guest(seed: u32) -> Vec<u8> {
    let bytes = padded(&guests::bytes("get_wasm").unwrap(), 7_800_000, seed);
    assert!(bytes.len() < 8 << 20, "{} bytes", bytes.len());
    bytes
}

fn load(c: &mut Connection, bytes: &[u8], replace: bool) -> Frame {
    let mut args: Vec<&[u8]> = vec![b"AUTOLOC.FUNCTION", b"LOAD"];
    if replace {
        args.push(b"REPLACE");
    }
    args.push(bytes);
    cmd(c, &args)
}

/// What a prober connection saw while a LOAD was in flight.
#[derive(Debug, Default)]
struct Probed {
    /// PINGs answered, and the slowest answer (of a PING or an `INFO`).
    pings: usize,
    max: Duration,
    /// When `INFO clients` first showed a blocked client: the LOAD was read whole and is being
    /// compiled off the main thread.
    blocked_at: Option<Instant>,
    /// When each PING was answered.
    answered: Vec<Instant>,
}

/// Sends PING in a loop on its own connection to `s` until `stop`, and `INFO clients` until it
/// shows a blocked client.
fn probe(s: &RedisServer, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Probed> {
    let mut c = raw(s);
    std::thread::spawn(move || {
        let mut seen = Probed::default();
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            assert_eq!(cmd(&mut c, &[b"PING"]), Frame::Simple("PONG".into()));
            let at = Instant::now();
            seen.pings += 1;
            seen.max = seen.max.max(at - sent);
            seen.answered.push(at);
            if seen.blocked_at.is_none() {
                let info = cmd(&mut c, &[b"INFO", b"clients"]);
                let now = Instant::now();
                // Counted as a PING: the wait of whichever command was in flight.
                seen.max = seen.max.max(now - at);
                if let Frame::Bulk(Some(info)) = info {
                    if String::from_utf8_lossy(&info).contains("blocked_clients:1") {
                        seen.blocked_at = Some(now);
                    }
                }
            }
        }
        seen
    })
}

#[test]
fn a_big_load_leaves_the_main_thread_serving() {
    let s = server(&[]);
    let mut c = raw(&s);
    cmd(&mut c, &[b"SET", b"k", b"v"]);
    let bytes = big_guest(1);
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe(&s, stop.clone());
    std::thread::sleep(Duration::from_millis(100));
    let sent = Instant::now();
    let reply = load(&mut c, &bytes, false);
    let took = sent.elapsed();
    let done = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let seen = prober.join().unwrap();
    assert_eq!(reply, Frame::Bulk(Some(b"get_wasm".to_vec())));
    let blocked_at = seen
        .blocked_at
        .expect("INFO never showed the LOAD's client blocked while it compiled");
    // Answered after the server had read the whole LOAD and before it answered it: the main
    // thread served them while the module compiled.
    let meanwhile = seen
        .answered
        .iter()
        .filter(|&&at| at > blocked_at && at < done)
        .count();
    eprintln!(
        "LOAD of a {:.1} MiB module took {took:?}; PING max {:?} over {} PINGs, {meanwhile} \
         answered while it compiled",
        bytes.len() as f64 / f64::from(1 << 20),
        seen.max,
        seen.pings,
    );
    assert!(
        meanwhile >= 10,
        "only {meanwhile} PINGs answered while the LOAD compiled"
    );
    assert_eq!(
        cmd(&mut c, &[b"AUTOLOC.CALL", b"get_wasm", b"k"]),
        Frame::Bulk(Some(b"v".to_vec()))
    );
    // The same bytes again: compiled already, refused at install without REPLACE.
    let e = err(load(&mut c, &bytes, false));
    assert!(e.contains("already exists"), "{e}");
    assert!(matches!(load(&mut c, &bytes, true), Frame::Bulk(Some(_))));
    // Still the same module.
    assert_eq!(
        cmd(&mut c, &[b"AUTOLOC.FUNCTION", b"DUMP", b"get_wasm"]),
        Frame::Bulk(Some(bytes))
    );
    // A bad module is refused off the main thread as on it.
    let e = err(load(&mut c, b"\0asm not really", false));
    assert!(e.starts_with("GUEST"), "{e}");
    // For comparison, what it was before: inside MULTI, where the client cannot block, another
    // module of that size compiles on the main thread, and PING waits for it.
    let other = big_guest(6);
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe(&s, stop.clone());
    std::thread::sleep(Duration::from_millis(100));
    let sent = Instant::now();
    cmd(&mut c, &[b"MULTI"]);
    load(&mut c, &other, true);
    let reply = cmd(&mut c, &[b"EXEC"]);
    let took = sent.elapsed();
    stop.store(true, Ordering::Relaxed);
    let seen = prober.join().unwrap();
    assert_eq!(
        reply,
        Frame::Array(Some(vec![Frame::Bulk(Some(b"get_wasm".to_vec()))]))
    );
    eprintln!(
        "the same inside MULTI, on the main thread: {took:?}; PING max {:?}",
        seen.max
    );
}

/// Redis aborts if anything is propagated while writes are paused: a LOAD that compiled during
/// a pause is installed, and propagated, only after it.
#[test]
fn a_load_that_compiled_during_a_pause_of_writes_waits_for_its_end() {
    let module = autoloc::server::find_module().unwrap();
    let s = RedisServer::start_with(&module, &[], &[("appendonly", "yes")]).unwrap();
    let bytes = big_guest(5);
    let mut c = raw(&s);
    let loading = std::thread::spawn(move || {
        let reply = load(&mut c, &bytes, false);
        (reply, Instant::now())
    });
    let mut p = raw(&s);
    wait_for("the LOAD's client was never blocked", || {
        info_field(&mut p, b"clients", "blocked_clients").as_deref() == Some("1")
    });
    // Longer than the compilation: it ends inside the pause.
    let pause = Duration::from_secs(5);
    let paused_at = Instant::now();
    assert_eq!(
        cmd(&mut p, &[b"CLIENT", b"PAUSE", b"5000", b"WRITE"]),
        Frame::Simple("OK".into())
    );
    let (reply, done) = loading.join().unwrap();
    assert_eq!(reply, Frame::Bulk(Some(b"get_wasm".to_vec())));
    assert!(
        done >= paused_at + pause,
        "answered {:?} into the pause",
        done - paused_at
    );
    assert_eq!(cmd(&mut p, &[b"PING"]), Frame::Simple("PONG".into()));
}

#[test]
fn racing_loads_of_one_name_see_each_other_at_install() {
    let s = server(&[]);
    let (a, b) = (big_guest(2), big_guest(3));
    // Two versions of one name, sent at once without REPLACE: one is installed, the other
    // finds it there.
    let racers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|bytes| {
            let mut c = raw(&s);
            std::thread::spawn(move || load(&mut c, &bytes, false))
        })
        .collect();
    let replies: Vec<Frame> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let won: Vec<usize> = (0..2)
        .filter(|&i| replies[i] == Frame::Bulk(Some(b"get_wasm".to_vec())))
        .collect();
    assert_eq!(won.len(), 1, "{replies:?}");
    let lost = &replies[1 - won[0]];
    assert!(
        matches!(lost, Frame::Error(e) if e.contains("already exists")),
        "{lost:?}"
    );
    let mut c = raw(&s);
    let winner = if won[0] == 0 { &a } else { &b };
    assert_eq!(
        cmd(&mut c, &[b"AUTOLOC.FUNCTION", b"DUMP", b"get_wasm"]),
        Frame::Bulk(Some(winner.clone()))
    );
    // With REPLACE both are installed, one after the other.
    let racers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|bytes| {
            let mut c = raw(&s);
            std::thread::spawn(move || load(&mut c, &bytes, true))
        })
        .collect();
    for r in racers {
        assert_eq!(r.join().unwrap(), Frame::Bulk(Some(b"get_wasm".to_vec())));
    }
}

#[test]
fn inside_multi_a_load_compiles_in_place() {
    let s = server(&[]);
    let mut c = raw(&s);
    cmd(&mut c, &[b"SET", b"k", b"v"]);
    let small = guests::bytes("get_wasm").unwrap();
    assert_eq!(cmd(&mut c, &[b"MULTI"]), Frame::Simple("OK".into()));
    assert_eq!(load(&mut c, &small, false), Frame::Simple("QUEUED".into()));
    assert_eq!(
        cmd(&mut c, &[b"AUTOLOC.CALL", b"get_wasm", b"k"]),
        Frame::Simple("QUEUED".into())
    );
    assert_eq!(
        cmd(&mut c, &[b"EXEC"]),
        Frame::Array(Some(vec![
            Frame::Bulk(Some(b"get_wasm".to_vec())),
            Frame::Bulk(Some(b"v".to_vec())),
        ]))
    );
}

/// A field of `INFO <section>`'s reply.
fn info_field(c: &mut Connection, section: &[u8], field: &str) -> Option<String> {
    let Frame::Bulk(Some(info)) = cmd(c, &[b"INFO", section]) else {
        return None;
    };
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_string))
}

/// Waits until `f` holds, or fails saying `what`.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn replicas_and_the_aof_get_each_successful_load_once_and_no_failed_one() {
    let module = autoloc::server::find_module().unwrap();
    let m = RedisServer::start_with(&module, &[], &[("appendonly", "yes")]).unwrap();
    let r = server(&[]);
    let mut mc = raw(&m);
    let mut rc = raw(&r);
    let port = m.port().to_string();
    cmd(
        &mut mc,
        &[b"CONFIG", b"SET", b"repl-diskless-sync-delay", b"0"],
    );
    cmd(&mut rc, &[b"REPLICAOF", b"127.0.0.1", port.as_bytes()]);
    wait_for("the replica never synced", || {
        info_field(&mut rc, b"replication", "master_link_status").as_deref() == Some("up")
    });
    let big = big_guest(4);
    let khop = guests::bytes("khop_wasm").unwrap();
    // Off the main thread: one success, a refusal at install, a refusal at compile, a REPLACE.
    assert!(matches!(load(&mut mc, &big, false), Frame::Bulk(Some(_))));
    assert!(err(load(&mut mc, &big, false)).contains("already exists"));
    assert!(err(load(&mut mc, b"not wasm", false)).starts_with("GUEST"));
    assert!(matches!(load(&mut mc, &big, true), Frame::Bulk(Some(_))));
    // In place, inside MULTI: one success and one refusal.
    for expect_ok in [true, false] {
        cmd(&mut mc, &[b"MULTI"]);
        load(&mut mc, &khop, false);
        match cmd(&mut mc, &[b"EXEC"]) {
            Frame::Array(Some(r)) => assert_eq!(
                matches!(r[0], Frame::Bulk(Some(_))),
                expect_ok,
                "{:?}",
                r[0]
            ),
            other => panic!("{other:?}"),
        }
    }
    // Everything before this write has reached the replica once it has it.
    cmd(&mut mc, &[b"SET", b"marker", b"1"]);
    wait_for("the replica never got the marker", || {
        cmd(&mut rc, &[b"GET", b"marker"]) == Frame::Bulk(Some(b"1".to_vec()))
    });
    for (name, bytes) in [(b"get_wasm".as_slice(), &big), (b"khop_wasm", &khop)] {
        assert_eq!(
            cmd(&mut rc, &[b"AUTOLOC.FUNCTION", b"DUMP", name]),
            Frame::Bulk(Some(bytes.clone()))
        );
    }
    // The replica ran three LOADs from its master, none of which failed.
    let stats = info_field(&mut rc, b"commandstats", "cmdstat_autoloc.function|load")
        .expect("the replica ran no LOAD");
    assert!(
        stats.starts_with("calls=3,") && stats.contains("failed_calls=0"),
        "{stats}"
    );
    // The AOF holds the same three.
    let dir = m.dir().join("appendonlydir");
    let mut aof = Vec::new();
    for f in std::fs::read_dir(&dir).unwrap() {
        let p = f.unwrap().path();
        if p.to_string_lossy().ends_with(".incr.aof") {
            aof.extend(std::fs::read(p).unwrap());
        }
    }
    // (A guest's own bytes may name `autoloc.functions`; not as the header of a command.)
    let aof = String::from_utf8_lossy(&aof).to_ascii_lowercase();
    let loads = aof.matches("\r\n$16\r\nautoloc.function\r\n$4\r\nload\r\n");
    assert_eq!(loads.count(), 3);
}
