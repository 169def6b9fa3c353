//! The library example (the one ```rust block of `docs/library.md`) is
//! `compute/examples/library.rs`, word for word, and it runs: against a test server holding what
//! `docs/cli.md` loads into the server on port 6380 (`autoloc load rmat --scale 16 --edge-factor 16 --seed 2`: vertex 1 has a 2-hop
//! neighbourhood, and the `md5` blob is there), named by `AUTOLOC_REDIS` as the example reads
//! it. Needs the module built next to the binaries, as `tests/cli.rs` does.
//!
//! The example is compiled into this test (`include!`), so `cargo test` builds and runs the
//! very file that `cargo run -p autoloc --example library` runs; `cargo build --examples`
//! builds it against the library alone, without the CLIs' features.

use std::path::Path;

use autoloc::load::{write_graph, Graph};
use autoloc::server::RedisServer;
use autoloc::{Placement, Runtime};

mod example {
    include!("../../examples/library.rs");

    pub fn run() -> Result<(), Box<dyn std::error::Error>> {
        main()
    }
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The ```rust blocks of `markdown`, each as its lines joined with `\n`, ending in `\n`.
fn rust_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```rust") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_library_example_in_the_docs_is_the_example_file_and_runs() {
    let doc = std::fs::read_to_string(root().join("docs/library.md")).unwrap();
    let file = std::fs::read_to_string(root().join("compute/examples/library.rs")).unwrap();
    assert_eq!(
        rust_blocks(&doc),
        [file],
        "docs/library.md's ```rust block must be compute/examples/library.rs as it is"
    );

    let server = RedisServer::start(&[])
        .expect("module built next to the binaries (cargo build --workspace)");
    let mut rt = Runtime::connect(&server.url()).unwrap();
    let graph = Graph::rmat(16, 16, 2).unwrap();
    write_graph(rt.connection().unwrap(), &graph, 2, false).unwrap();
    let khop = rt.invoke("khop", &["1", "2"], Placement::Storage).unwrap();
    assert!(matches!(&khop.output, autoloc::Output::Ids(ids) if !ids.is_empty()));

    // The only test in this binary: no other thread reads the environment meanwhile.
    std::env::set_var("AUTOLOC_REDIS", server.url());
    example::run().unwrap();
    // It ran against this server: its write is there.
    assert_eq!(rt.get(b"greeting").unwrap().as_deref(), Some(&b"hello"[..]));
}

/// `functions/guest/README.md` walks through writing `degrees_wasm`; the example guest of that
/// name is that walkthrough, word for word (its `src/lib.rs`, the README's ```rust block), so
/// the walkthrough builds (ci/test builds and tests the guests) and the top README's commands
/// load what it describes.
#[test]
fn the_guest_walkthrough_is_the_degrees_wasm_example() {
    let guide = std::fs::read_to_string(root().join("functions/guest/README.md")).unwrap();
    let file =
        std::fs::read_to_string(root().join("functions/guest/examples/degrees_wasm/src/lib.rs"))
            .unwrap();
    assert!(
        rust_blocks(&guide).contains(&file),
        "functions/guest/README.md's degrees_wasm lib.rs differs from examples/degrees_wasm/src/lib.rs"
    );
}
