//! Each policy's rule on synthetic windows: no Redis, no threads, no clock.

use autoloc::placement::{
    Adaptive, AdaptiveConfig, Costs, Decision, FnWindow, Kayak, Policy, ReasonKind, Window,
};
use autoloc::table::{Record, SideSnapshot};

/// `n` storage-side calls of a function with `cpu_ns` of storage CPU that reads `reads` times
/// (keys and bytes as given).
fn storage(n: u64, cpu_ns: u64, reads: u64, keys: u64, bytes_read: u64) -> SideSnapshot {
    let mut s = SideSnapshot::default();
    s.add(
        n,
        &Record {
            wall_ns: 50_000 + cpu_ns,
            round_trips: 1,
            bytes: 200,
            storage_cpu_ns: cpu_ns,
            keys_read: keys,
            bytes_read,
            reads,
            ..Record::default()
        },
    );
    s
}

/// `n` compute-side runs with `cpu_ns` of compute CPU, `rt` round trips and `bytes` moved.
fn compute(n: u64, cpu_ns: u64, rt: u64, bytes: u64) -> SideSnapshot {
    let mut s = SideSnapshot::default();
    s.add(
        n,
        &Record {
            wall_ns: rt * 50_000 + cpu_ns,
            cpu_ns,
            round_trips: rt,
            bytes,
            storage_cpu_ns: rt * 2_000,
            reads: rt,
            ..Record::default()
        },
    );
    s
}

fn f(name: &str, share: f64, storage: SideSnapshot, compute: SideSnapshot) -> FnWindow {
    FnWindow {
        name: name.into(),
        share,
        storage,
        compute,
    }
}

fn window(cores: f64, functions: Vec<FnWindow>) -> Window {
    Window {
        epoch: 1,
        seconds: 1.0,
        storage_cores: cores,
        allowance: 0.85,
        compute_cores: 16.0,
        compute_util: 0.3,
        functions,
    }
}

fn step(p: &mut Policy, w: &Window) -> Vec<Decision> {
    let mut out: Vec<Decision> = w
        .functions
        .iter()
        .map(|f| Decision {
            share: f.share,
            ..Decision::default()
        })
        .collect();
    p.step(w, &Costs::default(), &mut out);
    out
}

/// khop-like: 12 round trips, 2 KB, 20 us CPU. digest-like: 1 round trip, 64 KB, 5 ms CPU.
fn khop_s(n: u64) -> SideSnapshot {
    storage(n, 20_000, 12, 60, 2_048)
}
fn digest_s(n: u64) -> SideSnapshot {
    storage(n, 5_000_000, 1, 1, 65_536)
}

#[test]
fn cost_model_puts_khop_inside_and_digest_outside() {
    // First decision, from storage-side runs only (every function starts there).
    let w = window(
        4.0,
        vec![
            f("khop", 1.0, khop_s(100), SideSnapshot::default()),
            f("digest", 1.0, digest_s(10), SideSnapshot::default()),
        ],
    );
    assert!(w.storage_util() < 0.1);
    let d = step(&mut Policy::default(), &w);
    assert_eq!(d[0].share, 1.0, "{}", d[0].reason);
    assert_eq!(d[1].share, 0.0, "{}", d[1].reason);
    assert_eq!(d[0].reason.kind, ReasonKind::CostStorage);
    assert!(d[0]
        .reason
        .to_string()
        .starts_with("cost model: 11 round trips saved"));
    assert_eq!(d[1].reason.kind, ReasonKind::CostCompute);

    // The same from compute-side runs only.
    let w = window(
        4.0,
        vec![
            f(
                "khop",
                0.0,
                SideSnapshot::default(),
                compute(100, 20_000, 12, 4_000),
            ),
            f(
                "digest",
                0.0,
                SideSnapshot::default(),
                compute(10, 5_000_000, 1, 65_600),
            ),
        ],
    );
    let d = step(&mut Policy::default(), &w);
    assert_eq!((d[0].share, d[1].share), (1.0, 0.0), "{d:?}");
}

/// A long storage queue (24 calls in flight, a closed loop at saturation) is no reason to move
/// out functions whose reads would wait in the same queue once per round trip: measured on the
/// netns topology, khop k=2, pagerank and aggregate each ran 1.9x slower compute-side, where the
/// old model (the wait charged to storage-side calls alone) had sent them.
#[test]
fn a_storage_queue_is_charged_per_visit_on_both_sides() {
    // khop k=2 as measured over tcp: 45 us of storage CPU inside; outside 2 round trips, 10 KB,
    // and about as much compute CPU. Each call waited ~1 ms in the storage queue.
    let queued = |n: u64, cpu_ns: u64, reads: u64, keys: u64, bytes: u64| {
        let mut s = storage(n, cpu_ns, reads, keys, bytes);
        s.queue_ns = n * 1_000_000;
        s
    };
    let w = window(
        1.0,
        vec![
            f(
                "khop",
                1.0,
                queued(800, 45_000, 2, 40, 9_600),
                SideSnapshot::default(),
            ),
            // aggregate: 64 keys in one read; serving them outside costs the storage about what
            // running the sum inside does.
            f(
                "aggregate",
                1.0,
                queued(800, 18_000, 1, 64, 900),
                SideSnapshot::default(),
            ),
        ],
    );
    let d = step(&mut Policy::default(), &w);
    assert_eq!(d[0].share, 1.0, "khop: {}", d[0].reason);
    assert_eq!(d[1].share, 1.0, "aggregate: {}", d[1].reason);
}

/// The forecaster's allowance is 0 when the storage side's other load (Redis's own clients,
/// other compute nodes) takes all of the target: then nothing that costs storage CPU extra
/// stays inside.
#[test]
fn a_zero_allowance_moves_out_what_costs_storage_extra() {
    // pagerank-like: 300 us inside, where its 4 reads of 100 keys would cost the storage far
    // less; the cost model prefers it inside.
    let pagerank = storage(200, 300_000, 4, 100, 8_192);
    let mut w = window(
        1.0,
        vec![f("pagerank", 1.0, pagerank, SideSnapshot::default())],
    );
    let d = step(&mut Policy::default(), &w);
    assert_eq!(d[0].share, 1.0, "{d:?}");
    w.allowance = 0.0;
    let d = step(&mut Policy::default(), &w);
    assert_eq!(d[0].share, 0.0, "{d:?}");
}

#[test]
fn spare_storage_cpu_is_lent_only_while_compute_is_busy() {
    // One storage core, 40 digests a second compute-side (0.2 s of CPU): storage idles.
    let digest = |util: f64| {
        let mut w = window(
            1.0,
            vec![
                f("khop", 1.0, khop_s(1_000), SideSnapshot::default()),
                f(
                    "digest",
                    0.0,
                    SideSnapshot::default(),
                    compute(40, 5_000_000, 1, 65_600),
                ),
            ],
        );
        w.compute_cores = 1.0;
        w.compute_util = util;
        w
    };
    // A quiet compute node keeps the cost model's word.
    let d = step(&mut Policy::default(), &digest(0.3));
    assert_eq!((d[0].share, d[1].share), (1.0, 0.0), "{d:?}");
    assert_eq!(d[1].reason.kind, ReasonKind::CostCompute);
    // A busy one borrows the idle core: the share that saturates both sides, here about half
    // (0.83 s of storage CPU left, 0.8 s of compute CPU free, the same CPU per call).
    let d = step(&mut Policy::default(), &digest(0.95));
    assert_eq!(d[0].share, 1.0, "{d:?}");
    assert!((0.4..0.6).contains(&d[1].share), "{d:?}");
    assert_eq!(d[1].reason.kind, ReasonKind::Lent);
    assert!(d[1].reason.to_string().contains("storage CPU lent"));
    // Nothing is lent when the storage-preferring functions use the whole allowance.
    let mut w = digest(0.95);
    w.allowance = 0.01;
    let d = step(&mut Policy::default(), &w);
    assert_eq!(d[1].share, 0.0, "{d:?}");
}

#[test]
fn a_function_without_samples_keeps_its_share() {
    let w = window(
        1.0,
        vec![
            f("khop", 1.0, khop_s(10), SideSnapshot::default()),
            f(
                "idle",
                0.7,
                SideSnapshot::default(),
                SideSnapshot::default(),
            ),
        ],
    );
    let d = step(&mut Policy::default(), &w);
    assert_eq!(d[1].share, 0.7);
}

#[test]
fn saturation_moves_digest_out_before_khop() {
    // With storage CPU at cost price, the cost model alone keeps digest inside (it saves a
    // 64 KB transfer): only the load rule moves it.
    let cheap = AdaptiveConfig {
        storage_cpu_price: 1.0,
        ..AdaptiveConfig::default()
    };
    let khop = |n| storage(n, 50_000, 12, 60, 2_048);
    let calm = window(
        1.0,
        vec![
            f("khop", 1.0, khop(500), SideSnapshot::default()),
            f("digest", 1.0, digest_s(20), SideSnapshot::default()),
        ],
    );
    let d = step(&mut Policy::Adaptive(Box::new(Adaptive::new(cheap))), &calm);
    assert_eq!((d[0].share, d[1].share), (1.0, 1.0), "{d:?}");

    // 5000 khop (0.25 s of CPU) and 200 digest (1 s): saturated. Digest gives way, khop stays;
    // the compute node idles (0.30), so digest goes further out than the budget alone asks,
    // to the share where both sides' CPU balance (offloading).
    let hot = window(
        1.0,
        vec![
            f("khop", 1.0, khop(5_000), SideSnapshot::default()),
            f("digest", 1.0, digest_s(200), SideSnapshot::default()),
        ],
    );
    assert!(hot.storage_util() > 1.0);
    let d = step(&mut Policy::Adaptive(Box::new(Adaptive::new(cheap))), &hot);
    assert_eq!(d[0].share, 1.0, "{d:?}");
    assert!(d[1].share < 0.7, "{d:?}");
    assert_eq!(d[1].reason.kind, ReasonKind::Offloaded, "{}", d[1].reason);
    assert!(d[1]
        .reason
        .to_string()
        .starts_with("storage at its budget (1.25), compute idle (0.30)"));

    // Even khop alone saturates: digest goes all the way out before khop moves at all.
    let hotter = window(
        1.0,
        vec![
            f("khop", 1.0, khop(30_000), SideSnapshot::default()),
            f("digest", 1.0, digest_s(200), SideSnapshot::default()),
        ],
    );
    let d = step(
        &mut Policy::Adaptive(Box::new(Adaptive::new(cheap))),
        &hotter,
    );
    assert_eq!(d[1].share, 0.0, "{d:?}");
    assert_eq!(d[1].reason.kind, ReasonKind::MovedOut);
    assert!(d[0].share < 1.0, "{d:?}");
}

#[test]
fn load_drop_brings_digest_back() {
    let cheap = AdaptiveConfig {
        storage_cpu_price: 1.0,
        ..AdaptiveConfig::default()
    };
    let mut p = Policy::Adaptive(Box::new(Adaptive::new(cheap)));
    let khop = |n| storage(n, 50_000, 12, 60, 2_048);
    let hot = window(
        1.0,
        vec![
            f("khop", 1.0, khop(5_000), SideSnapshot::default()),
            f("digest", 1.0, digest_s(200), SideSnapshot::default()),
        ],
    );
    let d = step(&mut p, &hot);
    let split = d[1].share;
    assert!(split < 1.0);
    // The load drops tenfold, same mix: digest comes back within a few epochs.
    let n_s = (20.0 * split).round() as u64;
    let calm = window(
        1.0,
        vec![
            f("khop", 1.0, khop(500), SideSnapshot::default()),
            f(
                "digest",
                split,
                digest_s(n_s),
                compute(20 - n_s, 5_000_000, 1, 65_600),
            ),
        ],
    );
    let mut share = split;
    for _ in 0..5 {
        share = step(&mut p, &calm)[1].share;
    }
    assert_eq!(share, 1.0);
}

#[test]
fn pushbacks_count_as_overload() {
    let mut s = storage(1_000, 300_000, 4, 100, 8_192);
    s.pushbacks = 300;
    s.errors = 300;
    let w = window(
        4.0,
        vec![
            f("khop", 1.0, khop_s(1_000), SideSnapshot::default()),
            f("pagerank", 1.0, s, SideSnapshot::default()),
        ],
    );
    // Utilisation is low (0.08), but 15% of calls were pushed back.
    assert!(w.storage_util() < 0.1 && w.pushback_rate() > 0.1);
    let d = step(&mut Policy::default(), &w);
    assert_eq!(d[0].share, 1.0, "{d:?}");
    assert!(d[1].share < 1.0, "{d:?}");
}

#[test]
fn autoloc2021_pushes_digest_out_and_keeps_khop_for_good() {
    let mut p: Policy = "autoloc2021".parse().unwrap();
    // Too few samples yet: storage-side.
    let w = window(
        1.0,
        vec![
            f("khop", 1.0, khop_s(3), SideSnapshot::default()),
            f("digest", 1.0, digest_s(3), SideSnapshot::default()),
        ],
    );
    let d = step(&mut p, &w);
    assert_eq!((d[0].share, d[1].share), (1.0, 1.0));
    assert_eq!(d[1].reason.kind, ReasonKind::AutoLocStart);
    let w = window(
        1.0,
        vec![
            f("khop", 1.0, khop_s(100), SideSnapshot::default()),
            f("digest", 1.0, digest_s(100), SideSnapshot::default()),
        ],
    );
    let d = step(&mut p, &w);
    assert_eq!((d[0].share, d[1].share), (1.0, 0.0), "{d:?}");
    assert_eq!(d[1].reason.kind, ReasonKind::AutoLocCompute);
    // Static: a heavily saturated storage changes nothing (no load awareness).
    let w = window(
        0.1,
        vec![
            f("khop", 1.0, khop_s(100_000), SideSnapshot::default()),
            f(
                "digest",
                0.0,
                SideSnapshot::default(),
                compute(100, 5_000_000, 1, 65_600),
            ),
        ],
    );
    let d = step(&mut p, &w);
    assert_eq!((d[0].share, d[1].share), (1.0, 0.0), "{d:?}");
}

/// A window whose throughput is `tp` per second.
fn throughput_window(tp: f64) -> Window {
    let mut s = SideSnapshot::default();
    s.add(tp.round() as u64, &Record::default());
    window(1.0, vec![f("f", 0.0, s, SideSnapshot::default())])
}

/// Runs Kayak on throughput curve `curve` for `epochs`; returns x after each.
fn kayak_on(curve: impl Fn(f64) -> f64, epochs: usize) -> (Vec<f64>, Kayak) {
    let mut p = Policy::Kayak(Kayak::default());
    let mut x = 0.5;
    let mut xs = Vec::new();
    for _ in 0..epochs {
        let d = step(&mut p, &throughput_window(curve(x)));
        assert!(d.iter().all(|d| d.share == d.share.clamp(0.0, 1.0)));
        x = d[0].share;
        xs.push(x);
    }
    let Policy::Kayak(k) = p else { unreachable!() };
    (xs, k)
}

#[test]
fn kayak_converges_on_a_concave_curve_without_oscillating() {
    let peak = 0.83;
    let (xs, k) = kayak_on(|x| 1e9 * (1.0 - (x - peak) * (x - peak)), 60);
    assert_eq!(k.step, k.min_step);
    let tail = &xs[30..];
    let (lo, hi) = tail
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    assert!(hi - lo <= 2.0 * k.min_step + 1e-9, "{xs:?}");
    assert!(
        tail.windows(2)
            .all(|w| (w[1] - w[0]).abs() <= k.min_step + 1e-9),
        "{xs:?}"
    );
    assert!((lo - peak).abs() <= 2.0 * k.min_step && (hi - peak).abs() <= 2.0 * k.min_step);
}

#[test]
fn kayak_goes_to_the_better_side() {
    let (xs, _) = kayak_on(|x| 1e6 * (1.0 + x), 30);
    assert_eq!(*xs.last().unwrap(), 1.0, "{xs:?}");
    let (xs, _) = kayak_on(|x| 1e6 * (2.0 - x), 30);
    assert_eq!(*xs.last().unwrap(), 0.0, "{xs:?}");
}

#[test]
fn kayak_uses_one_fraction_for_all() {
    let mut p = Policy::Kayak(Kayak::default());
    let w = window(
        1.0,
        vec![
            f("khop", 1.0, khop_s(100), SideSnapshot::default()),
            f("digest", 1.0, digest_s(10), SideSnapshot::default()),
        ],
    );
    let d = step(&mut p, &w);
    assert_eq!(d[0].share, d[1].share);
}

#[test]
fn fixed_and_oracle_policies() {
    let w = window(
        1.0,
        vec![
            f("khop", 0.3, khop_s(10), SideSnapshot::default()),
            f("digest", 0.3, digest_s(10), SideSnapshot::default()),
            f("get", 0.3, SideSnapshot::default(), SideSnapshot::default()),
        ],
    );
    let shares = |p: &str| -> Vec<f64> {
        step(&mut p.parse().unwrap(), &w)
            .iter()
            .map(|d| d.share)
            .collect()
    };
    assert_eq!(shares("storage"), [1.0; 3]);
    assert_eq!(shares("compute"), [0.0; 3]);
    assert_eq!(shares("oracle(digest=0.25,khop=1)"), [1.0, 0.25, 1.0]);
    assert_eq!(shares("oracle(digest=0.25,*=0)"), [0.0, 0.25, 0.0]);
    let mut p: Policy = "oracle(digest=0.25)".parse().unwrap();
    assert_eq!(step(&mut p, &w)[1].reason.to_string(), "oracle: share 0.25");
}
