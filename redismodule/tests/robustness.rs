//! The budget stops long calls without freezing Redis; bad input gets clear errors and leaves
//! Redis serving.

mod common;

use std::time::{Duration, Instant};

use autoloc::{Placement, Side};
use autoloc_dataplane::Frame;
use autoloc_functions::ErrorCode;
use common::*;

#[test]
fn budget_pushes_back_long_calls_and_redis_keeps_answering() {
    let s = server(&["budget-ms", "5"]);
    load_rmat(&s, 8, 4, 1);
    let url = s.url();
    // 200,000 rounds over the 64 KiB blob is ~13 GB of MD5: minutes if nothing stopped it.
    let long = std::thread::spawn(move || {
        let mut c =
            autoloc_dataplane::Connection::connect(&url.parse().unwrap(), Duration::from_secs(30))
                .unwrap();
        let mut replies = Vec::new();
        for _ in 0..20 {
            let began = Instant::now();
            replies.push((
                c.call(&["AUTOLOC.CALL", "digest", "md5", "200000"])
                    .unwrap(),
                began.elapsed(),
            ));
        }
        replies
    });
    let mut ping = raw(&s);
    let mut worst = Duration::ZERO;
    for _ in 0..50 {
        let began = Instant::now();
        assert_eq!(ping.call(&["PING"]).unwrap(), Frame::Simple("PONG".into()));
        worst = worst.max(began.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    for (reply, took) in long.join().unwrap() {
        let e = err(reply);
        assert!(e.starts_with("PUSHBACK "), "{e}");
        assert!(
            // Unstopped, each would hash for minutes; a loaded 2-core machine may stall for seconds.
            took < Duration::from_secs(15),
            "a pushed-back call returns quickly, took {took:?}"
        );
    }
    assert!(
        worst < Duration::from_secs(10),
        "PING waited {worst:?} behind long calls"
    );

    // Through the runtime, a pushed-back invocation finishes compute-side with the same result.
    let mut rt = runtime(&s);
    let inv = rt
        .invoke("digest", &["md5", "2000"], Placement::Storage)
        .unwrap();
    assert!(inv.pushed_back);
    assert_eq!(inv.side, Side::Compute);
    assert_eq!(
        inv.output,
        rt.invoke("digest", &["md5", "2000"], Placement::Compute)
            .unwrap()
            .output
    );
    let stats = rt.storage_stats().unwrap();
    let pushbacks = stats.get("digest_pushbacks").unwrap();
    assert!(pushbacks >= 21, "{stats:?}");
}

#[test]
fn bad_input_gets_clear_errors_and_redis_keeps_serving() {
    let s = server(&[]);
    load_rmat(&s, 8, 4, 1);
    let mut c = raw(&s);
    let cases: &[(&[&[u8]], &str)] = &[
        (&[b"AUTOLOC.CALL"], "wrong number of arguments"),
        (
            &[b"AUTOLOC.CALL", b"nope", b"1"],
            "ERR unknown function 'nope'",
        ),
        (
            &[b"AUTOLOC.CALL", b"khop", b"1"],
            "ERR wrong number of arguments for 'khop'",
        ),
        (
            &[b"AUTOLOC.CALL", b"khop", b"1", b"2", b"3"],
            "ERR wrong number of arguments for 'khop'",
        ),
        (
            &[b"AUTOLOC.CALL", b"khop", b"abc", b"2"],
            "ERR bad argument <start>",
        ),
        (
            &[b"AUTOLOC.CALL", b"khop", b"-1", b"2"],
            "must not be negative",
        ),
        (
            &[b"AUTOLOC.CALL", b"khop", b"1", b"-2"],
            "must not be negative",
        ),
        (&[b"AUTOLOC.CALL", b"khop", b"1", b"99"], "outside 1..=16"),
        (&[b"AUTOLOC.CALL", b"khop", b"1", b"0"], "outside 1..=16"),
        (
            &[b"AUTOLOC.CALL", b"khop", b"99999999999", b"2"],
            "outside 0..=4294967295",
        ),
        (
            &[b"AUTOLOC.CALL", b"digest", b"md5", b"99999999"],
            "outside 1..=1000000",
        ),
        (
            &[b"AUTOLOC.CALL", b"pagerank", b"1", b"1.5"],
            "ERR bad argument <iterations>",
        ),
        (
            &[b"AUTOLOC.CALL", b"aggregate", b"0", b"0"],
            "ERR bad argument <count>",
        ),
        (
            &[b"AUTOLOC.CALL", b"khop", b"100000", b"2"],
            "NOKEY no such key '100000'",
        ),
        (&[b"AUTOLOC.CALL", b"digest", b"nokey", b"1"], "NOKEY"),
        (
            &[b"AUTOLOC.CALL", b"\x00\xff\r\njunk", b"1"],
            "ERR unknown function",
        ),
        (
            &[b"AUTOLOC.CALL", b"khop", b"\x00\xff\r\n", b"\x80"],
            "ERR bad argument <start>",
        ),
        (
            &[b"AUTOLOC.FUNCTIONS", b"extra"],
            "wrong number of arguments",
        ),
    ];
    for (args, want) in cases {
        let e = err(cmd(&mut c, args));
        assert!(e.contains(want), "{args:?}: got '{e}', want '{want}'");
    }
    // Keys of the wrong type, and values that are not vertices.
    cmd(&mut c, &[b"RPUSH", b"777", b"x"]);
    cmd(&mut c, &[b"SET", b"888", b"not a vertex"]);
    assert!(err(cmd(&mut c, &[b"AUTOLOC.CALL", b"khop", b"777", b"1"])).starts_with("WRONGTYPE"));
    assert!(err(cmd(&mut c, &[b"AUTOLOC.CALL", b"digest", b"777", b"1"])).starts_with("WRONGTYPE"));
    assert!(err(cmd(&mut c, &[b"AUTOLOC.CALL", b"khop", b"888", b"1"])).starts_with("BADVALUE"));
    // Random junk arguments never take the server down.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..300 {
        let mut args: Vec<Vec<u8>> = vec![b"AUTOLOC.CALL".to_vec()];
        args.push(
            ["khop", "digest", "pagerank", "aggregate", "get"][i % 5]
                .as_bytes()
                .to_vec(),
        );
        for _ in 0..(i % 4) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            args.push(x.to_le_bytes()[..(x % 9) as usize].to_vec());
        }
        let _ = c.call(&args).unwrap();
    }
    assert_eq!(c.call(&["PING"]).unwrap(), Frame::Simple("PONG".into()));
    assert!(s.log().lines().all(|l| !l.contains("panicked")));

    // The same mistakes through the runtime, compute-side, give the same kinds of error.
    let mut rt = runtime(&s);
    let e = |r: Result<autoloc::Invocation, autoloc::Error>| match r {
        Err(autoloc::Error::Function(e)) => e,
        other => panic!("expected a function error, got {other:?}"),
    };
    assert_eq!(
        e(rt.invoke("khop", &["777", "1"], Placement::Compute)).code(),
        ErrorCode::WrongType
    );
    assert_eq!(
        e(rt.invoke("khop", &["888", "1"], Placement::Compute)).code(),
        ErrorCode::BadValue
    );
    assert_eq!(
        e(rt.invoke("khop", &["100000", "1"], Placement::Compute)).code(),
        ErrorCode::NoKey
    );
    assert_eq!(
        e(rt.invoke("nope", &["1"], Placement::Compute)).code(),
        ErrorCode::Err
    );
    assert_eq!(
        e(rt.invoke("khop", &["100000", "1"], Placement::Storage)).code(),
        ErrorCode::NoKey
    );
    assert_eq!(
        e(rt.invoke("khop", &["777", "1"], Placement::Storage)).code(),
        ErrorCode::WrongType
    );
}

#[test]
fn info_counts_calls_errors_and_reads() {
    let s = server(&[]);
    load_rmat(&s, 8, 4, 1);
    let mut rt = runtime(&s);
    for v in 0..10 {
        rt.invoke("khop", &[v.to_string(), "1".into()], Placement::Storage)
            .unwrap();
    }
    let _ = rt.invoke("khop", &["100000", "1"], Placement::Storage);
    let stats = rt.storage_stats().unwrap();
    let get = |name: &str| -> u64 { stats.get(name).unwrap() };
    // INFO autoloc shows the same counters as text.
    let Frame::Bulk(Some(info)) = rt.command(&["INFO", "autoloc"]).unwrap() else {
        panic!()
    };
    let info = String::from_utf8(info).unwrap();
    assert!(info.contains("autoloc_khop_calls:11"), "{info}");
    assert_eq!(get("khop_calls"), 11);
    assert_eq!(get("khop_errors"), 1);
    assert_eq!(get("khop_keys_read"), 11);
    assert!(get("khop_bytes_read") >= 80);
    assert_eq!(get("budget_us"), 5000);
    assert_eq!(get("digest_calls"), 0);
}

#[test]
fn bad_module_arguments_refuse_to_load() {
    let module = autoloc::server::find_module().unwrap();
    let e =
        autoloc::server::RedisServer::start_with(&module, &["budget-ms", "zero"], &[]).unwrap_err();
    assert!(e.to_string().contains("exited"), "{e}");
}

/// One read that names a key twice (`AUTOLOC.MGET k k`, a data-plane `MultiGet` with a key
/// twice, a function reading a key twice) returns its value twice and leaves Redis serving,
/// whatever the value's encoding. Reading an encoded string (embstr, int) through DMA replaces
/// its object in the keyspace: a second handle to the same key, opened before, pointed at the
/// freed object. Found by the soak: a worker's `mget` of random vertices crashed redis-server
/// (SIGSEGV in dbUnshareStringValue; `AUTOLOC.MGET k k` alone aborted it).
#[test]
fn a_key_read_twice_in_one_read_leaves_redis_serving() {
    let s = server(&[]);
    let mut c = raw(&s);
    let values = [
        ("embstr", "abc".to_string()),
        ("int", "12".to_string()),
        ("bigint", "123456789012".to_string()),
        ("raw", "x".repeat(100)),
    ];
    for (key, v) in &values {
        c.call(&["SET", key, v]).unwrap();
    }
    for (key, v) in &values {
        let want = Frame::Bulk(Some(v.clone().into_bytes()));
        assert_eq!(
            c.call(&["AUTOLOC.MGET", key, key, key]).unwrap(),
            Frame::Array(Some(vec![want.clone(), want.clone(), want])),
            "{key}"
        );
        assert_eq!(c.call(&["PING"]).unwrap(), Frame::Simple("PONG".into()));
        c.call(&["SET", key, v]).unwrap(); // encoded again for the next path
    }
    for t in [autoloc::Transport::Shm, autoloc::Transport::Tcp] {
        let mut rt = runtime(&s).with_transport(t).unwrap();
        for (key, v) in &values {
            let got = rt.mget(&[*key, *key]).unwrap();
            assert_eq!(got, vec![Some(v.clone().into_bytes()); 2], "{t} {key}");
            c.call(&["SET", key, v]).unwrap();
        }
        // A function reading the same number twice, storage-side.
        let sum = rt
            .invoke("aggregate", &["keys", "int", "int"], Placement::Storage)
            .unwrap();
        assert_eq!(
            sum.output,
            autoloc::Output::Sum { sum: 24.0, keys: 2 },
            "{t}"
        );
        c.call(&["SET", "int", "12"]).unwrap();
    }
    assert_eq!(c.call(&["PING"]).unwrap(), Frame::Simple("PONG".into()));
}

#[test]
fn keys_are_binary_safe_on_every_path() {
    let s = server(&[]);
    let key: &[u8] = b"bin\0key\xff";
    let mut c = raw(&s);
    cmd(&mut c, &[b"SET", key, b"v\0"]);
    for t in [
        autoloc::Transport::Shm,
        autoloc::Transport::Tcp,
        autoloc::Transport::Resp,
    ] {
        let mut rt = runtime(&s).with_transport(t).unwrap();
        assert_eq!(
            rt.get(key).unwrap().as_deref(),
            Some(&b"v\0"[..]),
            "{t} get"
        );
        assert_eq!(
            rt.mget(&[key, b"other\0"]).unwrap(),
            [Some(b"v\0".to_vec()), None],
            "{t} mget"
        );
        let written = [key, t.to_string().as_bytes()].concat();
        rt.set(&written, b"w").unwrap();
        assert_eq!(
            cmd(&mut c, &[b"GET", &written]),
            Frame::Bulk(Some(b"w".to_vec())),
            "{t} set"
        );
    }
    // A storage-side function reading it, over RESP.
    assert_eq!(
        cmd(&mut c, &[b"AUTOLOC.CALL", b"get", key]),
        Frame::Bulk(Some(b"v\0".to_vec()))
    );
}

#[test]
fn data_plane_writes_wait_out_a_pause_and_redis_survives() {
    // The AOF on: during a pause, anything propagated aborted redis-server.
    let s = autoloc::server::RedisServer::start_with(
        &autoloc::server::find_module().unwrap(),
        &[],
        &[("appendonly", "yes")],
    )
    .unwrap();
    let mut c = raw(&s);
    // A user who may not pause clients: its CLIENT PAUSE is refused and pauses nothing.
    cmd(
        &mut c,
        &[
            b"ACL", b"SETUSER", b"weak", b"on", b">pw", b"~*", b"+@all", b"-client",
        ],
    );
    let mut weak = raw(&s);
    cmd(&mut weak, &[b"AUTH", b"weak", b"pw"]);
    assert!(matches!(
        cmd(&mut weak, &[b"CLIENT", b"PAUSE", b"60000", b"WRITE"]),
        Frame::Error(_)
    ));
    for t in [autoloc::Transport::Shm, autoloc::Transport::Tcp] {
        let mut rt = runtime(&s).with_transport(t).unwrap();
        rt.set(b"before", b"1").unwrap();
        assert_eq!(
            cmd(&mut c, &[b"CLIENT", b"PAUSE", b"60000", b"WRITE"]),
            Frame::Simple("OK".into())
        );
        let e = rt.set(b"during", b"2").unwrap_err();
        assert_eq!(e.code(), ErrorCode::Busy, "{t}: {e}");
        let e = rt
            .invoke("pagerank", &["1", "2", "pr:"], Placement::Storage)
            .map(|_| ());
        assert!(e.is_err() || cmd(&mut c, &[b"EXISTS", b"pr:1"]) == Frame::Int(0));
        assert_eq!(cmd(&mut c, &[b"PING"]), Frame::Simple("PONG".into()), "{t}");
        assert_eq!(
            cmd(&mut c, &[b"CLIENT", b"UNPAUSE"]),
            Frame::Simple("OK".into())
        );
        // Writes come back once Redis's next turn has seen the unpause.
        let deadline = Instant::now() + Duration::from_secs(10);
        while rt.set(b"after", b"3").is_err() {
            assert!(Instant::now() < deadline, "{t}: writes never came back");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(cmd(&mut c, &[b"GET", b"during"]), Frame::Bulk(None), "{t}");
        assert_eq!(
            cmd(&mut c, &[b"GET", b"after"]),
            Frame::Bulk(Some(b"3".to_vec()))
        );
    }
}
