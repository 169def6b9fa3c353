//! A shard of a Redis Cluster saturated by other clients expands no part of a hop while the
//! others keep theirs. Alone in its test binary: it reads the shards' load, and tests running
//! beside it (cargo runs a binary's tests at once) took the CPU its load needs, so that the
//! shard read cool for a while and took parts back.

mod common;

use std::time::Duration;

use autoloc::{Placement, Runtime};
use common::*;

#[test]
fn a_hot_shard_moves_its_parts_out_while_the_others_keep_theirs() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let c = cluster3();
    load_social(&c.url());
    let (hot, _) = owner_and_other(&Runtime::connect(&c.url()).unwrap(), b"1");
    // Other clients keep the data-plane thread of one shard busy: the neighbours of every vertex
    // it serves, over and over, from three threads, 8 calls in flight each.
    let mine: Vec<String> = {
        let rt = Runtime::connect(&c.url()).unwrap();
        let t = rt.topology().unwrap();
        (0..4100u32)
            .map(|v| v.to_string())
            .filter(|v| t.shards[t.shard_of(v.as_bytes()).unwrap()].master == hot)
            .collect()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let hammers: Vec<_> = (0..3)
        .map(|_| {
            let (url, stop, mine) = (c.url(), stop.clone(), mine.clone());
            std::thread::spawn(move || {
                let mut rt = Runtime::connect(&url)
                    .unwrap()
                    .with_transport(autoloc::Transport::Shm)
                    .unwrap();
                // Many in flight at once, so that its queue never runs dry.
                let calls: Vec<(&str, Vec<String>)> =
                    (0..8).map(|_| ("neighbours", mine.clone())).collect();
                while !stop.load(Ordering::Relaxed) {
                    for r in rt.invoke_many(&calls, Placement::Storage) {
                        r.unwrap();
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));

    let mut rt = Runtime::connect(&c.url())
        .unwrap()
        .with_transport(autoloc::Transport::Shm)
        .unwrap();
    // Until the runtime has read the shard as hot (a reading per 100 ms)...
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !rt.hop_table().hot(&hot) {
        assert!(
            std::time::Instant::now() < deadline,
            "{hot} never read as hot: {:?}",
            rt.hop_table().load(&hot)
        );
        rt.invoke("khop", &["1", "2"], Placement::Auto).unwrap();
    }
    // ...then for 2 s.
    let mut sides: std::collections::BTreeMap<String, [usize; 2]> = Default::default();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        for start in ["1", "2", "7", "42", "100", "555", "1000"] {
            let got = rt.invoke("khop", &[start, "2"], Placement::Auto).unwrap();
            for hop in got.hops {
                for (shard, side) in hop.parts {
                    sides.entry(shard).or_default()[side as usize] += 1;
                }
            }
        }
    }
    let (busy, still_hot) = (rt.hop_table().load(&hot), rt.hop_table().hot(&hot));
    stop.store(true, Ordering::Relaxed);
    for h in hammers {
        h.join().unwrap();
    }
    eprintln!("parts by shard [storage, compute]: {sides:?}; hot {hot}, last read {busy:?}");
    // The hot shard expanded (almost) nothing: a part that went storage-side went while its load
    // fell under the cool mark.
    assert!(still_hot, "{hot}: {busy:?}");
    let [storage, compute] = sides[&hot];
    assert!(compute > 0 && storage * 10 <= compute, "{hot}: {sides:?}");
    // The others kept choosing by what parts cost there, storage-side included.
    assert_eq!(sides.len(), 3, "{sides:?}");
    for (shard, [storage, _]) in &sides {
        if *shard != hot {
            assert!(*storage > 0, "{shard}: {sides:?}");
            assert!(
                !rt.hop_table().hot(shard),
                "{shard}: {:?}",
                rt.hop_table().load(shard)
            );
        }
    }
}
