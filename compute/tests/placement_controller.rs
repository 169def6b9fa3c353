//! The controller over a real table: one epoch by hand, then the thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use autoloc::placement::{Controller, ControllerConfig, ControllerCore, Policy, ReasonKind};
use autoloc::table::{Record, Table};
use autoloc::Side;

fn names() -> Vec<String> {
    vec!["khop".into(), "digest".into()]
}

/// Invocations as the Runtime would run them: side from `choose`, cost recorded on that side.
fn invoke(t: &Table, index: usize, n: usize) {
    for _ in 0..n {
        let side = t.choose(index);
        let r = match (index, side) {
            (0, Side::Storage) => Record {
                round_trips: 1,
                storage_cpu_ns: 20_000,
                keys_read: 60,
                bytes_read: 2_048,
                reads: 12,
                ..Record::default()
            },
            (0, Side::Compute) => Record {
                round_trips: 12,
                bytes: 4_000,
                cpu_ns: 20_000,
                ..Record::default()
            },
            (_, Side::Storage) => Record {
                round_trips: 1,
                storage_cpu_ns: 5_000_000,
                keys_read: 1,
                bytes_read: 65_536,
                reads: 1,
                ..Record::default()
            },
            (_, Side::Compute) => Record {
                round_trips: 1,
                bytes: 65_600,
                cpu_ns: 5_000_000,
                ..Record::default()
            },
        };
        t.record(index, side, &r);
    }
}

#[test]
fn one_epoch_by_hand_writes_shares_and_reasons() {
    let t = Arc::new(Table::new());
    let mut core = ControllerCore::new(
        t.clone(),
        names(),
        Policy::default(),
        ControllerConfig {
            storage_cores: 4.0,
            ..ControllerConfig::default()
        },
    );
    invoke(&t, 0, 100);
    invoke(&t, 1, 10);
    let rec = core.tick(1.0, 1_000);
    assert_eq!(rec.epoch, 1);
    assert_eq!(rec.shares, vec![1.0, 0.0]);
    assert!((rec.throughput - 110.0).abs() < 1e-9);
    assert!(rec.storage_util > 0.0);
    assert_eq!(rec.allowance, 0.85);
    assert_eq!(t.reason(1).kind, ReasonKind::CostCompute);
    // The next window holds only what came after: digest now runs compute-side.
    invoke(&t, 1, 10);
    let rec = core.tick(1.0, 2_000);
    assert!((rec.throughput - 10.0).abs() < 1e-9);
    assert_eq!(t.slot(1).snapshot(Side::Compute).invocations, 10);
    let rows = t.snapshot_all(&names());
    assert_eq!(rows[1].share, 0.0);
    assert!(rows[1].reason.contains("outweighs"), "{}", rows[1].reason);
    // Other storage load leaves functions less room.
    t.set_storage_background(2.0);
    let rec = core.tick(1.0, 3_000);
    assert!(rec.allowance < 0.85 && rec.allowance >= 0.0, "{rec:?}");
}

#[test]
fn the_thread_runs_epochs_and_stops_on_drop() {
    let t = Arc::new(Table::new());
    let handle = Controller::spawn(
        t.clone(),
        names(),
        "compute".parse().unwrap(),
        ControllerConfig {
            epoch: Duration::from_millis(5),
            history: 8,
            ..ControllerConfig::default()
        },
    );
    assert_eq!(handle.policy(), "compute");
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.history().len() < 8 {
        invoke(&t, 0, 10);
        assert!(Instant::now() < deadline, "no epochs");
        std::thread::sleep(Duration::from_millis(2));
    }
    let h = handle.history();
    assert_eq!(h.len(), 8, "the ring is bounded");
    assert!(h
        .windows(2)
        .all(|w| w[0].t_ms <= w[1].t_ms && w[0].epoch < w[1].epoch));
    assert_eq!(t.share(0), 0.0);
    assert_eq!(t.choose(0), Side::Compute);
    let started = Instant::now();
    drop(handle);
    assert!(
        // The epoch is 3600 s: anything under a minute is prompt, on any machine.
        started.elapsed() < Duration::from_secs(60),
        "drop joins promptly"
    );
}

#[test]
fn a_long_epoch_still_stops_at_once() {
    let t = Arc::new(Table::new());
    let handle = Controller::spawn(
        t,
        names(),
        Policy::default(),
        ControllerConfig {
            epoch: Duration::from_secs(3600),
            ..ControllerConfig::default()
        },
    );
    let started = Instant::now();
    handle.stop();
    assert!(started.elapsed() < Duration::from_secs(60));
}
