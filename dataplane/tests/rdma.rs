//! The RDMA transport end to end.
//!
//! Without a device only `no_device_is_one_clear_line` runs. The rest need a device, are ignored
//! by default, and use the one named by `AUTOLOC_RDMA_DEVICE` (port `AUTOLOC_RDMA_PORT`, GID
//! index `AUTOLOC_RDMA_GID_INDEX`, else chosen); `ci/rxe-testbed` sets up Soft-RoCE and runs them
//! (`ci/rxe-vm` does, in a VM):
//!
//! ```text
//! AUTOLOC_RDMA_DEVICE=rxe0 cargo test -p autoloc-dataplane --features rdma -- --ignored
//! ```
#![cfg(feature = "rdma")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use autoloc_dataplane::link::{ClientLink, Replier, ServerLink};
use autoloc_dataplane::rdma::gid::{read_gid_table, GidKind};
use autoloc_dataplane::rdma::{
    devices, DeviceConfig, LinkConfig, QpInfo, RdmaClientLink, RdmaDevice, RdmaServerConn,
    ServerLimits, DEVICE_ENV,
};
use autoloc_dataplane::ring::{RingConfig, RingError};
use autoloc_dataplane::wire::{Frame, List, Message, DEFAULT_MAX_PAYLOAD, HEADER_LEN};
use autoloc_dataplane::Error;

/// Every wait in these tests ends by then.
const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn no_device_is_one_clear_line() {
    let err = match devices() {
        // A host with RDMA: nothing to check here (the ignored tests cover it).
        Ok(list) => {
            assert!(!list.is_empty(), "devices() returned an empty list");
            return;
        }
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg:?}");
    match &err {
        Error::NoRdmaDevice {
            errno: Some(38), ..
        } => assert_eq!(
            msg,
            "no RDMA support in this kernel (ibv_get_device_list: errno 38, ENOSYS); load \
             rdma_rxe / set up Soft-RoCE with ci/rxe-testbed"
        ),
        Error::NoRdmaDevice { errno: None, .. } => {
            assert!(msg.starts_with("no RDMA device found"), "{msg}")
        }
        other => panic!("expected errno 38 or no device, got {other:?}"),
    }
    // Opening a device says the same thing.
    let open = RdmaDevice::open(&DeviceConfig::default()).unwrap_err();
    assert_eq!(open.to_string(), msg);
    eprintln!("as expected on this host: {msg}");
}

fn device() -> RdmaDevice {
    let cfg = DeviceConfig::from_env();
    if cfg.name.is_none() {
        eprintln!("{DEVICE_ENV} is not set: using the first RDMA device");
    }
    match RdmaDevice::open(&cfg) {
        Ok(dev) => dev,
        Err(e) => panic!("cannot open the RDMA device: {e}"),
    }
}

/// Client and server on one device, connected the way the module does it: the client's info as
/// text, the server's answer as text.
fn connect(dev: &RdmaDevice, cfg: &LinkConfig) -> (RdmaClientLink, RdmaServerConn) {
    let pending = RdmaClientLink::prepare(dev, cfg).unwrap();
    let request = pending.info().to_text();
    let client_info = QpInfo::from_text(&request).unwrap();
    let (server, server_info) =
        RdmaServerConn::accept(dev, &client_info, &ServerLimits::default()).unwrap();
    let reply = server_info.to_text();
    let client = pending
        .connect(&QpInfo::from_text(&reply).unwrap())
        .unwrap();
    (client, server)
}

/// A server thread answering GETs and SETs from `store` until `stop`.
fn serve(
    mut server: RdmaServerConn,
    store: HashMap<Vec<u8>, Vec<u8>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<RdmaServerConn> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + DEADLINE;
        while !stop.load(Ordering::Relaxed) {
            assert!(Instant::now() < deadline, "server timed out");
            let mut handle = |frame: Frame<'_>, r: &mut dyn Replier| {
                let reply = match frame.message {
                    Message::Get { key } => Message::Value {
                        value: store.get(key).map(Vec::as_slice),
                    },
                    Message::MultiGet { keys } => {
                        let values: Vec<Option<&[u8]>> = keys
                            .iter()
                            .map(|k| store.get(k).map(Vec::as_slice))
                            .collect();
                        r.reply(
                            frame.request_id,
                            &Message::Values {
                                values: List::new(&values),
                            },
                        )
                        .unwrap();
                        return;
                    }
                    _ => Message::Error {
                        code: autoloc_dataplane::wire::ErrorCode::Err,
                        message: "unsupported",
                    },
                };
                r.reply(frame.request_id, &reply).unwrap();
            };
            let n = server.serve(32, &mut handle).unwrap();
            if n == 0 {
                std::thread::yield_now();
            }
        }
        server
    })
}

/// Sends `requests` in bursts of `burst` and collects the replies, in order of arrival.
fn round_trips(
    client: &mut RdmaClientLink,
    requests: &[(u64, Message<'_>)],
    burst: usize,
    mut check: impl FnMut(Frame<'_>),
) {
    let deadline = Instant::now() + DEADLINE;
    for chunk in requests.chunks(burst) {
        let mut got = 0;
        for (id, m) in chunk {
            // A full ring is reported, not waited on: drain replies and try again.
            loop {
                match client.queue(*id, m) {
                    Ok(()) => break,
                    Err(Error::Ring(RingError::Full)) => {
                        assert!(Instant::now() < deadline, "client timed out queuing");
                        client.flush().unwrap();
                        got += client.poll(&mut |f| check(f)).unwrap();
                        client.wait(Duration::from_millis(1)).unwrap();
                    }
                    Err(e) => panic!("queue: {e}"),
                }
            }
        }
        client.flush().unwrap();
        while got < chunk.len() {
            assert!(Instant::now() < deadline, "client timed out");
            got += client.poll(&mut |f| check(f)).unwrap();
            if got < chunk.len() {
                client.wait(Duration::from_millis(10)).unwrap();
            }
        }
    }
}

#[test]
#[ignore = "requires an RDMA device"]
fn device_is_listed() {
    let list = devices().unwrap();
    let dev = device();
    assert!(list.iter().any(|d| d.name == dev.name()), "{list:?}");
}

#[test]
#[ignore = "requires an RDMA device"]
fn a_usable_gid_is_chosen_without_being_told() {
    let cfg = DeviceConfig {
        gid_index: None,
        ..DeviceConfig::from_env()
    };
    let dev = RdmaDevice::open(&cfg).unwrap();
    let table = read_gid_table(std::path::Path::new("/sys"), dev.name(), cfg.port).unwrap();
    let chosen = table
        .iter()
        .find(|c| c.index == dev.gid_index())
        .unwrap_or_else(|| {
            panic!(
                "GID index {} is not in the table {table:?}",
                dev.gid_index()
            )
        });
    eprintln!("chose GID {chosen}");
    // On RoCE (a table with RoCE v2 entries), a RoCE v2 GID on a netdev that is up, IPv4-mapped
    // where there is one.
    if table.iter().any(|c| c.kind == GidKind::RoceV2) {
        assert_eq!(chosen.kind, GidKind::RoceV2, "{chosen}");
        assert!(chosen.netdev_up, "{chosen}");
        let mapped = table
            .iter()
            .any(|c| c.kind == GidKind::RoceV2 && c.netdev_up && c.is_ipv4_mapped());
        assert_eq!(chosen.is_ipv4_mapped(), mapped, "{chosen}");
    }
}

#[test]
#[ignore = "requires an RDMA device"]
fn loopback_10k_gets() {
    const N: u64 = 10_000;
    let dev = device();
    let cfg = LinkConfig {
        requests: RingConfig {
            slot_count: 64,
            slot_size: 256,
        },
        responses: RingConfig {
            slot_count: 64,
            slot_size: 256,
        },
        ..LinkConfig::default()
    };
    let (mut client, server) = connect(&dev, &cfg);
    let store: HashMap<Vec<u8>, Vec<u8>> = (0..100u32)
        .map(|i| {
            (
                format!("key{i}").into_bytes(),
                format!("value{i}").into_bytes(),
            )
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve(server, store, stop.clone());

    let keys: Vec<Vec<u8>> = (0..N)
        .map(|i| format!("key{}", i % 150).into_bytes())
        .collect();
    let requests: Vec<(u64, Message<'_>)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (i as u64, Message::Get { key: k }))
        .collect();
    let mut answered = 0u64;
    // Bursts of 48 through rings of 64 slots: indices wrap ~150 times.
    round_trips(&mut client, &requests, 48, |f| {
        let i = f.request_id;
        assert_eq!(i, answered, "replies arrive in order");
        let want = (i % 150 < 100).then(|| format!("value{}", i % 150).into_bytes());
        assert_eq!(
            f.message,
            Message::Value {
                value: want.as_deref()
            }
        );
        answered += 1;
    });
    assert_eq!(answered, N);
    stop.store(true, Ordering::Relaxed);
    let server = server.join().unwrap();
    assert!(!server.peer_gone());
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.peer_gone() {
        assert!(
            Instant::now() < deadline,
            "server never saw the client leave"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
#[ignore = "requires an RDMA device"]
fn frames_larger_than_a_slot_are_fragmented() {
    let dev = device();
    let ring = RingConfig {
        slot_count: 8,
        slot_size: 128,
    };
    let cfg = LinkConfig {
        requests: ring,
        responses: ring,
        ..LinkConfig::default()
    };
    let (mut client, server) = connect(&dev, &cfg);
    assert_eq!(client.max_frame(), HEADER_LEN + DEFAULT_MAX_PAYLOAD);
    let value = |n: usize| (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
    // 1000 bytes: a dozen fragments; 64 KiB: 64 times the whole response ring.
    let store = HashMap::from([
        (b"big".to_vec(), value(1000)),
        (b"huge".to_vec(), value(64 << 10)),
        (b"k".to_vec(), b"v".to_vec()),
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve(server, store.clone(), stop.clone());
    // A request larger than the whole request ring, between small ones.
    let keys: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("key-{i:04}").into_bytes())
        .collect();
    let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let requests = [
        (1, Message::Get { key: b"big" }),
        (2, Message::Get { key: b"k" }),
        (3, Message::Get { key: b"huge" }),
        (
            4,
            Message::MultiGet {
                keys: List::new(&key_refs),
            },
        ),
        (5, Message::Get { key: b"k" }),
    ];
    let mut seen = 0u64;
    round_trips(&mut client, &requests, requests.len(), |f| {
        seen += 1;
        assert_eq!(f.request_id, seen, "replies arrive in order");
        match f.message {
            Message::Value { value } => {
                let key: &[u8] = match f.request_id {
                    1 => b"big",
                    3 => b"huge",
                    _ => b"k",
                };
                assert_eq!(value, store.get(key).map(Vec::as_slice));
            }
            Message::Values { values } => {
                assert_eq!(values.len(), 200);
                assert!(values.iter().all(|v| v.is_none()));
            }
            other => panic!("unexpected {other:?}"),
        }
    });
    assert_eq!(seen, 5);
    // Over the wire limit: refused on the client, before anything is sent.
    let big = vec![0u8; DEFAULT_MAX_PAYLOAD];
    let err = client
        .queue(
            6,
            &Message::Set {
                key: b"k",
                value: &big,
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::Ring(RingError::TooLarge { .. })),
        "{err:?}"
    );
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

#[test]
#[ignore = "requires an RDMA device"]
fn server_refuses_rings_over_its_limit() {
    let dev = device();
    let pending = RdmaClientLink::prepare(&dev, &LinkConfig::default()).unwrap();
    let limits = ServerLimits {
        max_region_len: 4096,
        ..ServerLimits::default()
    };
    let err = RdmaServerConn::accept(&dev, &pending.info(), &limits).unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
}
