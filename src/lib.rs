//! portdoctor: find, explain, predict and fix TCP ephemeral-port exhaustion.
//!
//! Data flows one way: [`collect`] (the OS) → [`snapshot`] (plain data) → [`analysis`] (pure
//! model, verdict) → [`report`] (text, JSON). [`knobs`] is the knowledge base of OS settings;
//! [`rules`] holds the OS rules and defaults (TIME_WAIT reuse, default ranges, thresholds) once;
//! [`units`] parses and formats numbers for every layer.

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
