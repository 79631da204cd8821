//! portdoctor: find, explain, predict and fix TCP ephemeral-port exhaustion.
//!
//! Data flows one way: [`collect`] (observes the OS) → [`snapshot`] (plain data) → [`analysis`]
//! (pure model, verdict) → [`report`] (text, JSON). Beside that line:
//!
//! - [`rules`]: the OS rules and defaults (TIME_WAIT reuse, default ranges, thresholds), once.
//! - [`knobs`]: the knowledge base of OS settings that findings, `capacity` and `tune` quote.
//! - [`capacity`]: the pure what-if model (`portdoctor capacity`, and the prediction `lab` checks).
//! - [`tune`]: pure plans from a snapshot and a goal; its Linux backend writes the settings.
//! - [`lab`]: a bounded reproducer in a network namespace of its own (Linux).
//! - `top` and `serve` (Cargo features of the same names, on by default): the live view's pure
//!   state and drawing; the exporter's metric families and web-config.
//! - [`units`]: numbers in and out for every layer, foreign text made printable; `fixture`
//!   (tests, benches): snapshot builders.
//!
//! Which code talks to the OS, and for what, is listed in [`collect`]'s module comment.

pub mod analysis;
pub mod capacity;
pub mod collect;
#[cfg(any(test, feature = "fixture"))]
pub mod fixture;
pub mod knobs;
pub mod lab;
pub mod report;
pub mod rules;
#[cfg(feature = "serve")]
pub mod serve;
pub mod snapshot;
#[cfg(feature = "top")]
pub mod top;
pub mod tune;
pub mod units;
