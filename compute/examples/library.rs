// compute/examples/library.rs: `cargo run --release -p autoloc --example library` runs it
// against the server that docs/cli.md starts for `autoloc` (port 6380), or the one
// $AUTOLOC_REDIS names.
use autoloc::placement::{Controller, ControllerConfig};
use autoloc::{Placement, Runtime, Transport};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AUTOLOC_REDIS").unwrap_or("redis://127.0.0.1:6380".into());
    let mut rt = Runtime::connect(&url)?;
    let inside = rt.invoke("khop", &["1", "2"], Placement::Storage)?; // AUTOLOC.INVOKE
    let here = rt.invoke("khop", &["1", "2"], Placement::Compute)?; // one multi-get per BFS level
    assert_eq!(inside.output, here.output);
    println!(
        "{} round trips, {} bytes, {:?}",
        here.round_trips, here.bytes, here.wall
    );

    // Another connection for another thread, recording into the same counter table:
    let mut worker = rt.try_clone()?;
    let thread = std::thread::spawn(move || worker.invoke("khop", &["2", "2"], Placement::Storage));
    let there = thread.join().expect("the worker thread panicked")?;
    println!("khop 2 2 ran {}-side on another thread", there.side);

    // The fast data plane, and many invocations in flight on one link:
    let mut fast = Runtime::connect(&url)?.with_transport(Transport::Shm)?;
    let calls: Vec<(&str, Vec<String>)> = (1..=64)
        .map(|v| ("khop", vec![v.to_string(), "2".into()]))
        .collect();
    let results = fast.invoke_many(&calls, Placement::Storage);
    let results = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    println!("{} invocations in flight together", results.len());

    // A placement policy: the controller sets each function's storage share; Auto follows it.
    let names: Vec<String> = fast.registry().names();
    let policy = "adaptive".parse()?;
    let config = ControllerConfig::default();
    let _ctl = Controller::spawn(fast.table().clone(), names, policy, config);
    let inv = fast.invoke("digest", &["md5", "20"], Placement::Auto)?;
    println!("digest md5 20 ran {}-side: {}", inv.side, inv.output);

    // Direct reads and writes, on the same transport, under the same ACL:
    fast.set(b"greeting", b"hello")?;
    let v = fast.get(b"greeting")?;
    let vs = fast.mget(&["greeting", "missing"])?;
    assert_eq!(v.as_deref(), Some(&b"hello"[..]));
    assert_eq!(vs, [Some(b"hello".to_vec()), None]);
    Ok(())
}
