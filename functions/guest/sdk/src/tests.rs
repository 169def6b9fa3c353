//! Native tests against the mock host.

use autoloc_functions::builtins::{aggregate::Aggregate, khop::Khop, pagerank::PageRank};
use autoloc_functions::graph::encode_adjacency;
use autoloc_functions::{MemStore, Output};

use super::*;

fn args(a: &[&str]) -> Vec<Vec<u8>> {
    a.iter().map(|s| s.as_bytes().to_vec()).collect()
}

#[test]
fn lists_round_trip() {
    let items = args(&["", "a", "bcd"]);
    let mut b = Vec::new();
    abi::encode_list(&items, &mut b);
    assert_eq!(b.len(), 12 + 4);
    assert_eq!(abi::decode_list(&b), Some(items));
    assert_eq!(abi::decode_list(&b[..b.len() - 1]), None);
    assert_eq!(abi::decode_list(&[1, 0]), None);
    assert_eq!(abi::decode_list(&[]), Some(vec![]));
}

#[test]
fn read_spills_to_take_when_the_reply_does_not_fit() {
    mock::reset();
    let big = vec![7u8; READ_BUF_MIN * 3];
    mock::insert("big", &big);
    mock::insert("small", "s");
    let values = read(&["small", "none", "big"]);
    assert_eq!(values, vec![Some(b"s".to_vec()), None, Some(big)]);
    assert_eq!((mock::reads(), mock::takes()), (1, 1));
    // Small replies fit: no take.
    assert_eq!(get("small"), Some(b"s".to_vec()));
    assert_eq!((mock::reads(), mock::takes()), (2, 1));
    // No keys, no store access.
    assert!(read::<&str>(&[]).is_empty());
    assert_eq!(mock::reads(), 2);
}

#[test]
fn read_each_stops_at_the_first_error_and_allows_nested_reads() {
    mock::reset();
    mock::insert("a", "1");
    mock::insert("b", "2");
    let mut seen = Vec::new();
    let r = read_each(&["a", "b"], |i, v| {
        // A read inside the visit uses a buffer of its own.
        assert_eq!(get("b"), Some(b"2".to_vec()));
        seen.push((i, v.map(<[u8]>::to_vec)));
        Err("stop")
    });
    assert_eq!(r, Err("stop"));
    assert_eq!(seen, vec![(0, Some(b"1".to_vec()))]);
}

#[test]
fn writes_and_checkpoints_reach_the_host() {
    mock::reset();
    write("k", "v");
    checkpoint();
    assert_eq!(mock::value("k"), Some(b"v".to_vec()));
    assert_eq!((mock::writes(), mock::checkpoints()), (1, 1));
}

fn graph(edges: &[(u32, &[u32])]) -> MemStore {
    let store = MemStore::new();
    for &(v, n) in edges {
        let value = encode_adjacency(n);
        mock::insert(v.to_string(), &value);
        store.insert(v.to_string(), value);
    }
    store
}

#[test]
fn builtins_through_the_host_store_match_native() {
    mock::reset();
    let native = graph(&[(1, &[2, 3]), (2, &[1, 4]), (3, &[1]), (4, &[2, 5])]);
    for (f, a) in [
        (&Khop as &dyn Function, args(&["1", "3"])),
        (&PageRank, args(&["1", "20"])),
        (&Aggregate, args(&["keys", "1", "9"])),
    ] {
        let want = block_on(f.call(&native, &a));
        let got = run_function(f, "x_wasm", "x_wasm <a>", &a);
        match want {
            Ok(out) => assert_eq!(got, Ok(out)),
            Err(e) => assert_eq!(got, Err(GuestError::from(e))),
        }
    }
}

#[test]
fn argument_errors_are_renamed_and_get_status_1() {
    let got = run_function(&Khop, "khop_wasm", "khop_wasm <start> <k>", &args(&["1"]));
    assert_eq!(
        got,
        Err(GuestError::Args(
            "wrong number of arguments for 'khop_wasm': usage: khop_wasm <start> <k>".into()
        ))
    );
    let got = run_function(&Khop, "khop_wasm", "", &args(&["x", "1"]));
    let Err(GuestError::Args(m)) = got else {
        panic!("{got:?}")
    };
    assert!(m.starts_with("bad argument <start> for 'khop_wasm'"), "{m}");
    mock::reset();
    let got = run_function(&Khop, "khop_wasm", "", &args(&["9", "1"]));
    assert_eq!(got, Err(GuestError::Data("NOKEY no such key '9'".into())));
}

#[test]
fn results_encode_with_their_status() {
    assert_eq!(
        abi::encode_result(Ok(Output::Ids(vec![1]))),
        [0, 1, 0, 0, 0]
    );
    assert_eq!(abi::encode_result(Ok(Output::Text("hi".into()))), b"\0hi");
    assert_eq!(abi::encode_result(Ok(Output::Value(None))), [0, 0]);
    assert_eq!(
        abi::encode_result(Ok(Output::Value(Some(b"v".to_vec())))),
        [0, 1, b'v']
    );
    assert_eq!(abi::encode_result(Err(GuestError::args("no"))), b"\x01no");
    assert_eq!(abi::encode_result(Err(GuestError::failed("x"))), b"\x02x");
    for out in [
        Output::Scores(vec![(1, 0.5), (3, 1e-9)]),
        Output::Sum { sum: 2.5, keys: 2 },
        Output::Text("t".into()),
        Output::Value(Some(vec![0, 255])),
    ] {
        let b = abi::encode_result(Ok(out.clone()));
        assert_eq!(b[0], 0);
        assert_eq!(Output::decode(out.kind(), &b[1..]), Ok(out));
    }
}

#[test]
fn description_is_escaped_json() {
    assert_eq!(
        abi::describe_json("a_1", "a_1 \"x\" \\ \t", OutputKind::Scores, false),
        r#"{"name":"a_1","usage":"a_1 \"x\" \\ \u0009","output":"scores","reuse":false}"#
    );
}

export! {
    name: "sdk_test",
    usage: "sdk_test <kind>",
    output: OutputKind::Ids,
    entry: |a: &[Vec<u8>]| -> Result<Output, Error> {
        match a.first().map(Vec::as_slice) {
            Some(b"ids") => Ok(Output::Ids(vec![3])),
            Some(b"text") => Ok(Output::Text("x".into())),
            _ => Err(Error::Arity { function: "sdk_test", usage: "sdk_test <kind>" }),
        }
    },
}

#[test]
fn the_macro_declares_and_checks_the_kind() {
    assert_eq!(
        AUTOLOC_GUEST.describe(),
        r#"{"name":"sdk_test","usage":"sdk_test <kind>","output":"ids","reuse":true}"#
    );
    assert_eq!(AUTOLOC_GUEST.invoke(&args(&["ids"])), [0, 3, 0, 0, 0]);
    assert_eq!(AUTOLOC_GUEST.invoke(&args(&[]))[0], 1);
    assert_eq!(
        AUTOLOC_GUEST.run(&args(&["text"])),
        Err(GuestError::failed(
            "sdk_test returned a text result but declares ids"
        ))
    );
}

#[test]
fn run_fetches_its_arguments_from_the_host() {
    mock::reset();
    let mut list = Vec::new();
    abi::encode_list(&[&b"ids"[..]], &mut list);
    mock::set_args(&list);
    abi::run(&AUTOLOC_GUEST, list.len() as i32);
    assert_eq!(abi::last_result(), [0, 3, 0, 0, 0]);
    // Fewer bytes from the host than announced: a failure, not a guess at the rest.
    abi::run(&AUTOLOC_GUEST, list.len() as i32 + 4);
    let r = abi::last_result();
    assert_eq!(r[0], 2, "{}", String::from_utf8_lossy(&r));
    assert!(String::from_utf8_lossy(&r).contains("autoloc_run"));
}

#[test]
fn unsorted_scores_are_a_failure() {
    let guest = Guest {
        name: "s",
        usage: "s",
        output: || OutputKind::Scores,
        entry: |a| {
            let ids: Vec<u32> = a.iter().map(|x| x[0].into()).collect();
            Ok(Output::Scores(ids.into_iter().map(|v| (v, 1.0)).collect()))
        },
        reuse: true,
    };
    assert!(guest.run(&args(&["1", "2"])).is_ok());
    assert!(guest.run(&args(&[])).is_ok());
    for bad in [&["2", "1"][..], &["1", "1"]] {
        assert_eq!(
            guest.run(&args(bad)),
            Err(GuestError::failed(
                "s returned scores that are not sorted by distinct ids"
            ))
        );
    }
}

#[test]
fn declarations_are_checked() {
    abi::check_declaration("ok_1", "ok_1 <x>");
    for (name, usage) in [
        ("", "u"),
        ("Upper", "u"),
        ("a-b", "u"),
        ("a", ""),
        ("a", "two\nlines"),
    ] {
        let r = std::panic::catch_unwind(|| abi::check_declaration(name, usage));
        assert!(r.is_err(), "{name:?} {usage:?}");
    }
    assert!(std::panic::catch_unwind(|| abi::check_declaration(&"a".repeat(65), "u")).is_err());
}
