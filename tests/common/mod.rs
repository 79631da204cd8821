//! Harness for the integration tests that run the real binary against real sockets in network
//! namespaces they create (every `tests/*.rs` with `mod common;`), one file per concern:
//!
//! - [`process`]: external commands with a time bound; background processes killed on drop.
//! - [`netns`]: the [`Netns`] guard (one namespace per test, removed on drop) and [`require_root`].
//! - [`population`]: sockets to observe (sockpop, Python helpers) and their ground truth.
//! - [`binary`]: running `portdoctor` itself, `check --json` of a namespace.
//! - [`ss`]: an independent reading of the namespace with `ss -Htan`.
//! - [`report`]: values of a `portdoctor.check/v1` report by dotted path, pools, findings.
//! - [`compare`]: a report against `ss`, the ground truth and the procfs collector.
//! - [`tables`]: two library socket dumps compared by identity and state.
//! - [`cgroup`]: container cgroup paths for a test's process (pod and container identity).
//!
//! `http.rs` (a plain GET for scraping `serve`) is not part of this module: the Windows tests,
//! which do not use the namespace harness, include it with `#[path]`.
//!
//! Everything is re-exported here, so tests call `common::Netns`, `common::portdoctor`, ….
// Every test crate compiles all of this and calls its own subset; rustc reports unused items and
// re-exports per crate, so `dead_code` (here) and `unused_imports` (on the re-exports) are off.
#![allow(dead_code)]

mod binary;
mod cgroup;
mod compare;
mod netns;
mod population;
mod process;
mod report;
mod ss;
mod tables;

#[allow(unused_imports)]
pub use self::{
    binary::*, cgroup::*, compare::*, netns::*, population::*, process::*, report::*, ss::*,
    tables::*,
};
