//! Every key a storage-side function or a data-plane request reads or writes answers to the ACL
//! user who made the call or opened the link, on that client's database; a TCP data-plane
//! connection is served only after presenting the one-time secret `AUTOLOC.CONNECT tcp` gave.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use autoloc::{Placement, Runtime, Transport};
use autoloc_dataplane::wire::{self, Message};
use autoloc_dataplane::Frame;
use autoloc_functions::graph::encode_adjacency;
use autoloc_functions::ErrorCode;
use common::*;

fn url_of(s: &autoloc::server::RedisServer, user: &str) -> String {
    format!("redis://{user}:pw@127.0.0.1:{}", s.port())
}

fn code(r: Result<autoloc::Invocation, autoloc::Error>) -> ErrorCode {
    match r {
        Err(autoloc::Error::Function(e)) => e.code(),
        other => panic!("expected a function error, got {other:?}"),
    }
}

#[test]
fn keys_answer_to_the_callers_acl_on_every_path() {
    let s = server(&[]);
    let mut c = raw(&s);
    c.call(&["SET", "public:1", "open"]).unwrap();
    c.call(&["SET", "secret:1", "hidden"]).unwrap();
    // A graph 1 -> 2 -> 4, where alice may read 1 and 2 only.
    for (v, n) in [("1", vec![2u32]), ("2", vec![4]), ("4", vec![])] {
        c.call(&[b"SET".as_slice(), v.as_bytes(), &encode_adjacency(&n)])
            .unwrap();
    }
    for rule in [
        &[
            "ACL",
            "SETUSER",
            "alice",
            "on",
            ">pw",
            "~public:*",
            "~1",
            "~2",
            "+@all",
        ][..],
        &["ACL", "SETUSER", "reader", "on", ">pw", "%R~*", "+@all"][..],
    ] {
        assert_eq!(c.call(rule).unwrap(), Frame::Simple("OK".into()));
    }
    // Redis's own GET refuses alice; AUTOLOC.CALL must too, naming the key.
    let mut alice_raw = autoloc_dataplane::Connection::connect(
        &url_of(&s, "alice").parse().unwrap(),
        Duration::from_secs(10),
    )
    .unwrap();
    let e = err(alice_raw
        .call(&["AUTOLOC.CALL", "get", "secret:1"])
        .unwrap());
    assert!(e.starts_with("NOPERM") && e.contains("secret:1"), "{e}");
    for t in all_transports() {
        let mut alice = Runtime::connect(&url_of(&s, "alice"))
            .unwrap()
            .with_transport(t)
            .unwrap();
        for p in [Placement::Storage, Placement::Compute] {
            let ok = alice.invoke("get", &["public:1"], p).unwrap();
            assert_eq!(ok.output, autoloc::Output::Value(Some(b"open".to_vec())));
            assert_eq!(
                code(alice.invoke("get", &["secret:1"], p)),
                ErrorCode::NoPerm,
                "{t} {p}"
            );
            // A traversal that reaches a key alice may not read fails; it does not skip it.
            assert!(alice.invoke("khop", &["1", "2"], p).is_ok(), "{t} {p}");
            assert_eq!(
                code(alice.invoke("khop", &["1", "3"], p)),
                ErrorCode::NoPerm,
                "{t} {p}"
            );
        }
        if t != Transport::Resp {
            // Writes need write permission: alice may not write secret:*, reader may not write.
            assert!(
                matches!(alice.set(b"secret:2", b"x"), Err(autoloc::Error::Function(e)) if e.code() == ErrorCode::NoPerm)
            );
            let mut reader = Runtime::connect(&url_of(&s, "reader"))
                .unwrap()
                .with_transport(t)
                .unwrap();
            assert!(
                matches!(reader.set(b"public:2", b"x"), Err(autoloc::Error::Function(e)) if e.code() == ErrorCode::NoPerm)
            );
            assert!(reader
                .invoke("get", &["secret:1"], Placement::Storage)
                .is_ok());
        }
    }
    assert_eq!(
        c.call(&["EXISTS", "secret:2", "public:2"]).unwrap(),
        Frame::Int(0),
        "nothing denied was written"
    );
}

#[test]
fn a_link_follows_its_user() {
    let s = server(&[]);
    let mut c = raw(&s);
    c.call(&["SET", "k", "v"]).unwrap();
    for user in ["bob", "carol"] {
        c.call(&["ACL", "SETUSER", user, "on", ">pw", "~*", "+@all"])
            .unwrap();
    }
    let mut bob = Runtime::connect(&url_of(&s, "bob"))
        .unwrap()
        .with_transport(Transport::Shm)
        .unwrap();
    bob.invoke("get", &["k"], Placement::Storage).unwrap();
    // A changed ACL applies to the open link within a second (a user allowed every key is
    // looked at again every 100 ms; any other user at every request).
    c.call(&["ACL", "SETUSER", "bob", "resetkeys", "~other"])
        .unwrap();
    let changed = Instant::now();
    while bob.invoke("get", &["k"], Placement::Storage).is_ok() {
        assert!(
            changed.elapsed() < Duration::from_secs(10),
            "the narrowed ACL never applied"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        code(bob.invoke("get", &["k"], Placement::Storage)),
        ErrorCode::NoPerm
    );
    eprintln!("narrowed ACL applied after {:?}", changed.elapsed());
    c.call(&["ACL", "SETUSER", "bob", "~k"]).unwrap();
    bob.invoke("get", &["k"], Placement::Storage).unwrap();
    // Deleted or disabled: the link is closed within a second or so.
    let mut carol = Runtime::connect(&url_of(&s, "carol"))
        .unwrap()
        .with_transport(Transport::Tcp)
        .unwrap();
    carol.invoke("get", &["k"], Placement::Storage).unwrap();
    c.call(&["ACL", "DELUSER", "bob"]).unwrap();
    c.call(&["ACL", "SETUSER", "carol", "off"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = bob.invoke("get", &["k"], Placement::Storage);
        let cr = carol.invoke("get", &["k"], Placement::Storage);
        if b.is_err() && cr.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "links of gone users still served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_tcp_connection_without_a_secret_gets_nothing() {
    let s = server(&["tcp-port", "0"]);
    let mut c = raw(&s);
    c.call(&["SET", "secret:1", "hidden"]).unwrap();
    c.call(&["CONFIG", "SET", "requirepass", "pw"]).unwrap();
    let mut authed = autoloc_dataplane::Connection::connect(
        &format!("redis://:pw@127.0.0.1:{}", s.port())
            .parse()
            .unwrap(),
        Duration::from_secs(10),
    )
    .unwrap();
    let Frame::Array(Some(items)) = authed.call(&["AUTOLOC.CONNECT", "tcp"]).unwrap() else {
        panic!("no [port, secret]")
    };
    let (Frame::Int(port), Frame::Bulk(Some(token))) = (&items[0], &items[1]) else {
        panic!("{items:?}")
    };
    let get = |first: Option<&[u8]>| -> Vec<u8> {
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", *port as u16)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut out = Vec::new();
        if let Some(token) = first {
            wire::encode(0, &Message::Hello { token }, &mut out).unwrap();
        }
        wire::encode(7, &Message::Get { key: b"secret:1" }, &mut out).unwrap();
        sock.write_all(&out).unwrap();
        let mut got = vec![0u8; 4096];
        let n = sock.read(&mut got).unwrap_or(0);
        got.truncate(n);
        got
    };
    // No secret, a wrong one: closed without a reply.
    assert!(get(None).is_empty());
    assert!(get(Some(b"0123456789abcdef0123456789abcdef")).is_empty());
    // The secret works once.
    let reply = get(Some(token));
    let (frame, _) = wire::decode(&reply, &wire::Limits::default()).unwrap();
    assert_eq!(frame.request_id, 7);
    assert_eq!(
        frame.message,
        Message::Value {
            value: Some(b"hidden")
        }
    );
    assert!(get(Some(token)).is_empty(), "a secret is good once");
    // Each connection turned away is counted.
    let mut rt = Runtime::connect(&format!("redis://:pw@127.0.0.1:{}", s.port())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.storage_stats().unwrap().get("dataplane_tcp_rejected") < Some(3) {
        assert!(Instant::now() < deadline, "rejections not counted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_link_reads_its_clients_database() {
    let s = server(&[]);
    let mut c = raw(&s);
    c.call(&["SELECT", "3"]).unwrap();
    c.call(&["SET", "k", "in db 3"]).unwrap();
    for t in all_transports() {
        let mut rt = Runtime::connect(&format!("{}/3", s.url()))
            .unwrap()
            .with_transport(t)
            .unwrap();
        for p in [Placement::Storage, Placement::Compute] {
            let v = rt.invoke("get", &["k"], p).unwrap().output;
            assert_eq!(
                v,
                autoloc::Output::Value(Some(b"in db 3".to_vec())),
                "{t} {p}"
            );
        }
        let mut db5 = Runtime::connect(&format!("{}/5", s.url()))
            .unwrap()
            .with_transport(t)
            .unwrap();
        let v = db5
            .invoke("get", &["k"], Placement::Storage)
            .unwrap()
            .output;
        assert_eq!(v, autoloc::Output::Value(None), "{t}: db 5 is not db 3");
    }
}

/// A user who may only read (`%R~*`) reads on every transport and either side: compute-side over
/// RESP too, where `AUTOLOC.MGET` must declare its keys read-only (Redis checks declared keys
/// before the module's own per-key check runs, and a key of unknown access needs read and
/// write permission). Writes stay denied.
#[test]
fn a_read_only_user_reads_on_every_transport_and_side() {
    let s = server(&[]);
    let mut c = raw(&s);
    c.call(&["SET", "r:1", "one"]).unwrap();
    for (v, n) in [("1", vec![2u32]), ("2", vec![])] {
        c.call(&[b"SET".as_slice(), v.as_bytes(), &encode_adjacency(&n)])
            .unwrap();
    }
    c.call(&["ACL", "SETUSER", "ro", "on", ">pw", "%R~*", "+@all"])
        .unwrap();
    let mut ro_raw = autoloc_dataplane::Connection::connect(
        &url_of(&s, "ro").parse().unwrap(),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(
        ro_raw.call(&["AUTOLOC.MGET", "r:1", "none"]).unwrap(),
        Frame::Array(Some(vec![
            Frame::Bulk(Some(b"one".to_vec())),
            Frame::Bulk(None)
        ]))
    );
    for t in all_transports() {
        let mut ro = Runtime::connect(&url_of(&s, "ro"))
            .unwrap()
            .with_transport(t)
            .unwrap();
        for p in [Placement::Storage, Placement::Compute] {
            let v = ro.invoke("get", &["r:1"], p).unwrap();
            assert_eq!(
                v.output,
                autoloc::Output::Value(Some(b"one".to_vec())),
                "{t} {p}"
            );
            assert!(ro.invoke("khop", &["1", "2"], p).is_ok(), "{t} {p}");
        }
        assert_eq!(ro.get(b"r:1").unwrap(), Some(b"one".to_vec()), "{t}");
        assert_eq!(ro.mget(&["r:1", "none"]).unwrap().len(), 2, "{t}");
        assert!(
            matches!(ro.set(b"r:2", b"x"), Err(autoloc::Error::Function(e)) if e.code() == ErrorCode::NoPerm),
            "{t}"
        );
    }
}

/// The links of a deleted user are closed on every transport, TCP too (its connection is closed,
/// not kept answering `NOPERM`), so a client reconnects once the user is back. Found by the
/// soak: a TCP worker whose user was deleted and re-created failed every request for the rest
/// of the run.
#[test]
fn a_deleted_users_links_close_and_its_clients_come_back() {
    let s = server(&[]);
    let mut c = raw(&s);
    c.call(&["SET", "k", "v"]).unwrap();
    let user = ["ACL", "SETUSER", "dave", "on", ">pw", "~*", "+@all"];
    c.call(&user).unwrap();
    for t in all_transports() {
        let mut dave = Runtime::connect(&url_of(&s, "dave"))
            .unwrap()
            .with_transport(t)
            .unwrap();
        dave.invoke("get", &["k"], Placement::Storage).unwrap();
        c.call(&["ACL", "DELUSER", "dave"]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match dave.invoke("get", &["k"], Placement::Storage) {
                Err(e) if e.code() == ErrorCode::Io => break,
                _ => assert!(
                    Instant::now() < deadline,
                    "{t}: the link of a deleted user was not closed"
                ),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        c.call(&user).unwrap();
        // The runtime reconnects on its next call, as the user who is back.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = dave.invoke("get", &["k"], Placement::Storage) {
            assert!(Instant::now() < deadline, "{t}: never came back: {e}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Connects as `user` (password `pw`) over plain RESP.
fn raw_as(s: &autoloc::server::RedisServer, user: &str) -> autoloc_dataplane::Connection {
    autoloc_dataplane::Connection::connect(
        &url_of(s, user).parse().unwrap(),
        Duration::from_secs(10),
    )
    .unwrap()
}

/// A runtime of `user` over `t`.
fn runtime_as(s: &autoloc::server::RedisServer, user: &str, t: Transport) -> Runtime {
    Runtime::connect(&url_of(s, user))
        .unwrap()
        .with_transport(t)
        .unwrap()
}

/// Whether `r` is a `NOPERM` refusal.
fn refused<T: std::fmt::Debug>(r: Result<T, autoloc::Error>) -> bool {
    matches!(r, Err(e) if e.code() == ErrorCode::NoPerm)
}

/// Loads the example guest `name` as the default user.
fn load_guest(s: &autoloc::server::RedisServer, name: &str) {
    let bytes = autoloc::guests::bytes(name).unwrap();
    assert_eq!(runtime(s).load_function(&bytes, false).unwrap(), name);
}

// The servers of the tests below have a budget of 1 s: a first call of a guest (or a slow
// machine: ci/rxe-vm runs these under emulation) must run to its refusal, not be pushed back.

/// Redis's usual read-only user (`-@write`, so Redis refuses it `SET`) writes nothing through
/// AutoLoc either: not a function's writes (built-in or guest, either side, every transport),
/// not a data-plane `Set`, not a function LOAD or DELETE; and it still reads. Without `@dangerous`
/// it may not read the counters `INFO` shows (`AUTOLOC.STATS`).
#[test]
fn a_user_without_write_commands_writes_nothing_on_any_path() {
    let s = server(&["budget-ms", "1000"]);
    let mut c = raw(&s);
    small_graph(&mut c);
    load_guest(&s, "writer_wasm");
    let nowrite = [
        "ACL",
        "SETUSER",
        "nowrite",
        "on",
        ">pw",
        "~*",
        "+@all",
        "-@write",
        "-@admin",
        "-@dangerous",
    ];
    assert_eq!(c.call(&nowrite).unwrap(), Frame::Simple("OK".into()));
    let mut nw = raw_as(&s, "nowrite");
    assert!(err(nw.call(&["SET", "x", "y"]).unwrap()).starts_with("NOPERM"));
    let e = err(nw
        .call(&["AUTOLOC.CALL", "pagerank", "10", "3", "out:"])
        .unwrap());
    assert!(
        e.starts_with("NOPERM") && e.contains("SET") && e.contains("out:"),
        "{e}"
    );
    // Refused before the bytes are looked at, as FUNCTION LOAD would be.
    for sub in [
        &["LOAD", "not a wasm module"][..],
        &["DELETE", "writer_wasm"],
    ] {
        let mut args = vec!["AUTOLOC.FUNCTION"];
        args.extend_from_slice(sub);
        let e = err(nw.call(&args).unwrap());
        assert!(e.starts_with("NOPERM") && e.contains("FUNCTION"), "{e}");
    }
    let e = err(nw.call(&["AUTOLOC.STATS"]).unwrap());
    assert!(e.starts_with("NOPERM") && e.contains("INFO"), "{e}");
    // What it may run: FUNCTION LIST and DUMP (@scripting), reads.
    assert!(matches!(
        nw.call(&["AUTOLOC.FUNCTION", "LIST"]).unwrap(),
        Frame::Array(Some(_))
    ));
    for t in all_transports() {
        let mut rt = runtime_as(&s, "nowrite", t);
        for p in [Placement::Storage, Placement::Compute] {
            assert!(
                refused(rt.invoke("pagerank", &["10", "3", "out:"], p)),
                "{t} {p}"
            );
            assert!(
                refused(rt.invoke("writer_wasm", &["w:1", "x"], p)),
                "{t} {p}"
            );
            assert!(
                rt.invoke("pagerank", &["10", "3"], p).is_ok(),
                "{t} {p}: it reads"
            );
            assert!(
                rt.invoke("khop", &["10", "2"], p).is_ok(),
                "{t} {p}: it reads"
            );
        }
        assert!(refused(rt.set(b"planted", b"yes")), "{t}");
        assert!(refused(rt.load_function(b"\0asm", false)), "{t}");
    }
    let Frame::Array(Some(written)) = c.call(&["KEYS", "*"]).unwrap() else {
        panic!("KEYS")
    };
    assert_eq!(written.len(), 4, "nothing but the graph: {written:?}");
}

/// A user without `@read` (Redis refuses it `GET`) reads nothing through AutoLoc: no function
/// (built-in or guest, either side, every transport), no data-plane `Get` or `MultiGet`, no
/// `AUTOLOC.MGET`; it may still write, as `SET` allows.
#[test]
fn a_user_without_read_commands_reads_nothing_on_any_path() {
    let s = server(&["budget-ms", "1000"]);
    let mut c = raw(&s);
    small_graph(&mut c);
    load_guest(&s, "get_wasm");
    let noread = [
        "ACL", "SETUSER", "noread", "on", ">pw", "~*", "+@all", "-@read",
    ];
    assert_eq!(c.call(&noread).unwrap(), Frame::Simple("OK".into()));
    let mut nr = raw_as(&s, "noread");
    assert!(err(nr.call(&["GET", "10"]).unwrap()).starts_with("NOPERM"));
    for (call, command) in [
        (&["AUTOLOC.CALL", "khop", "10", "2"][..], "GET"),
        (&["AUTOLOC.CALL", "get", "10"], "GET"),
        (&["AUTOLOC.CALL", "get_wasm", "10"], "GET"),
        (&["AUTOLOC.MGET", "10", "11"], "MGET"),
    ] {
        let e = err(nr.call(call).unwrap());
        assert!(
            e.starts_with("NOPERM") && e.contains(command) && e.contains("'10'"),
            "{call:?}: {e}"
        );
    }
    for t in all_transports() {
        let mut rt = runtime_as(&s, "noread", t);
        for p in [Placement::Storage, Placement::Compute] {
            for (f, args) in [
                ("khop", &["10", "2"][..]),
                ("get", &["10"]),
                ("get_wasm", &["10"]),
                ("pagerank", &["10", "3"]),
                ("aggregate", &["10", "4"]),
            ] {
                assert!(refused(rt.invoke(f, args, p)), "{t} {p} {f}");
            }
        }
        if t != Transport::Resp {
            assert!(refused(rt.get(b"10")), "{t}");
            assert!(refused(rt.mget(&["10", "11"])), "{t}");
        }
        // SET is not @read.
        rt.set(format!("w:{t}").as_bytes(), b"v").unwrap();
    }
}

/// A link follows its user's command permissions as it follows its key patterns: taken away,
/// they apply to the next requests of an open link (within the 100 ms a user allowed every key is
/// cached for); given back, at once.
#[test]
fn a_link_follows_its_users_command_permissions() {
    let s = server(&["budget-ms", "1000"]);
    let mut c = raw(&s);
    small_graph(&mut c);
    c.call(&["ACL", "SETUSER", "flip", "on", ">pw", "~*", "+@all"])
        .unwrap();
    let wait_until = |what: &str, done: &mut dyn FnMut() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what} never applied");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    for t in fast_transports() {
        let mut rt = runtime_as(&s, "flip", t);
        rt.set(b"f", b"1").unwrap();
        rt.invoke("khop", &["10", "2"], Placement::Storage).unwrap();
        c.call(&["ACL", "SETUSER", "flip", "-@write"]).unwrap();
        wait_until("-@write", &mut || refused(rt.set(b"f", b"2")));
        c.call(&["ACL", "SETUSER", "flip", "+@write", "-get", "-mget"])
            .unwrap();
        rt.set(b"f", b"3").unwrap();
        wait_until("-get -mget", &mut || {
            refused(rt.invoke("khop", &["10", "2"], Placement::Storage))
        });
        assert!(refused(rt.get(b"f")), "{t}");
        c.call(&["ACL", "SETUSER", "flip", "+@all"]).unwrap();
        rt.invoke("khop", &["10", "2"], Placement::Storage).unwrap();
        assert_eq!(rt.get(b"f").unwrap(), Some(b"3".to_vec()), "{t}");
    }
}

/// `AUTOLOC.FUNCTION`'s subcommands are commands of their own, so an ACL allows or denies each
/// as it does `FUNCTION`'s; a function administrator (`+@scripting` and the module's command,
/// no keys) loads, lists and deletes, and reads no key.
#[test]
fn function_subcommands_answer_to_acls_of_their_own() {
    let s = server(&["budget-ms", "1000"]);
    let mut c = raw(&s);
    small_graph(&mut c);
    for rule in [
        &[
            "ACL",
            "SETUSER",
            "viewer",
            "on",
            ">pw",
            "~*",
            "+@all",
            "-autoloc.function|load",
            "-autoloc.function|delete",
        ][..],
        &[
            "ACL",
            "SETUSER",
            "fadmin",
            "on",
            ">pw",
            "-@all",
            "+@scripting",
            "+autoloc.function",
        ],
    ] {
        assert_eq!(
            c.call(rule).unwrap(),
            Frame::Simple("OK".into()),
            "{rule:?}"
        );
    }
    let bytes = autoloc::guests::bytes("get_wasm").unwrap();
    let load = |conn: &mut autoloc_dataplane::Connection| {
        conn.call(&[b"AUTOLOC.FUNCTION".as_slice(), b"LOAD", &bytes])
            .unwrap()
    };
    let mut viewer = raw_as(&s, "viewer");
    let e = err(load(&mut viewer));
    assert!(e.starts_with("NOPERM"), "{e}");
    let mut fadmin = raw_as(&s, "fadmin");
    assert_eq!(load(&mut fadmin), Frame::Bulk(Some(b"get_wasm".to_vec())));
    for who in [&mut viewer, &mut fadmin] {
        assert!(matches!(
            who.call(&["AUTOLOC.FUNCTION", "LIST"]).unwrap(),
            Frame::Array(Some(_))
        ));
    }
    assert!(err(viewer
        .call(&["AUTOLOC.FUNCTION", "DELETE", "get_wasm"])
        .unwrap())
    .starts_with("NOPERM"));
    assert!(err(fadmin.call(&["AUTOLOC.CALL", "get_wasm", "10"]).unwrap()).starts_with("NOPERM"));
    assert_eq!(
        fadmin
            .call(&["AUTOLOC.FUNCTION", "DELETE", "get_wasm"])
            .unwrap(),
        Frame::Simple("OK".into())
    );
    let e = err(c.call(&["AUTOLOC.FUNCTION", "NOPE"]).unwrap());
    assert!(
        e.contains("unknown subcommand") || e.contains("usage"),
        "{e}"
    );
}
