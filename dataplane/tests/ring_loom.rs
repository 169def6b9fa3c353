//! Model-checks the ring's index protocol and the doorbell with loom.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p autoloc-dataplane --test ring_loom --release`
//!
//! Under `cfg(loom)` the ring's atomics are loom's, and every slot access is mirrored on a loom
//! cell, so loom reports a data race if a producer write and a consumer read of the same slot are
//! not ordered by the Acquire/Release pairs (e.g. if a publication were Relaxed).
#![cfg(loom)]

use autoloc_dataplane::ring::{channel, RingConfig, RingError};

const RING: RingConfig = RingConfig {
    slot_count: 2,
    slot_size: 16,
};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// One producer pushes more messages than there are slots; the consumer sees each exactly once,
/// in order, in every interleaving.
#[test]
fn spsc_fifo_no_loss_no_duplicates() {
    const N: u8 = 3;
    model(|| {
        let (mut tx, mut rx) = channel(RING).unwrap();
        let producer = loom::thread::spawn(move || {
            let mut i = 0u8;
            while i < N {
                match tx.try_push(&[i, i ^ 0xff]) {
                    Ok(()) => i += 1,
                    Err(RingError::Full) => loom::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let mut next = 0u8;
        while next < N {
            match rx.try_pop().unwrap() {
                Some(slot) => {
                    assert_eq!(
                        &*slot,
                        &[next, next ^ 0xff],
                        "out of order, lost or duplicated"
                    );
                    next += 1;
                }
                None => loom::thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert!(rx.try_pop().unwrap().is_none(), "duplicated message");
    });
}

/// Bursts: the producer publishes two messages with one store, the consumer frees them with one.
#[test]
fn bursts_keep_order() {
    model(|| {
        let (mut tx, mut rx) = channel(RING).unwrap();
        let producer = loom::thread::spawn(move || {
            let mut sent = 0usize;
            let msgs: [&[u8]; 3] = [b"a", b"b", b"c"];
            while sent < msgs.len() {
                match tx.push_burst(&msgs[sent..]).unwrap() {
                    0 => loom::thread::yield_now(),
                    n => sent += n,
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            let burst = rx.pop_burst(2).unwrap();
            if burst.is_empty() {
                drop(burst);
                loom::thread::yield_now();
                continue;
            }
            got.extend(burst.iter().map(|m| m[0]));
        }
        producer.join().unwrap();
        assert_eq!(got, b"abc");
    });
}

/// The doorbell never loses a wakeup: under loom a parked consumer waits (with no timeout) until
/// the producer clears the doorbell, so a missed wake would be an execution that never finishes.
#[test]
fn doorbell_never_loses_a_wakeup() {
    model(|| {
        let (mut tx, mut rx) = channel(RING).unwrap();
        let producer = loom::thread::spawn(move || {
            tx.try_push(b"x").unwrap();
        });
        loop {
            if let Some(slot) = rx.try_pop().unwrap() {
                assert_eq!(&*slot, b"x");
                break;
            }
            rx.doorbell()
                .wait(|| !rx.has_pending(), std::time::Duration::from_millis(1));
        }
        producer.join().unwrap();
    });
}
