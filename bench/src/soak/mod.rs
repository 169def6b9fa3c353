//! The soak under faults (`soak`): worker processes drive reads, writes and invocations over
//! every transport against a real redis-server (module loaded, AOF with `appendfsync always`)
//! while an injector kills workers, kill -9s and restarts the server, changes and deletes ACL
//! users, and sends junk and unauthenticated frames. It reports operations and errors by code,
//! acknowledged writes lost, leaked segments, links and descriptors, redis-server's memory and
//! PING latency over time, as JSON and an SVG plot.
//!
//! # Layout
//! - [`protocol`]: the lines a worker reports on its stdout (acknowledged writes, counts).
//! - [`worker`]: a worker process: operations over one transport, reconnecting after errors.
//! - [`ledger`]: what the conductor learns from the workers, and the check of acknowledged
//!   writes against a server.
//! - [`faults`]: the schedule, and the probes that must be turned away.
//! - [`probe`]: what /proc says about redis-server; the PING and RSS samplers.
//! - [`conductor`]: runs it all.
//! - [`report`]: the [`report::Report`] it returns (JSON), and its summary.
//! - [`plot`]: the SVG.

pub mod conductor;
pub mod faults;
pub mod ledger;
pub mod plot;
pub mod probe;
pub mod protocol;
pub mod report;
pub mod worker;
