//! portdoctor: find, explain, predict and fix TCP ephemeral-port exhaustion.
//!
//! Data flows one way: [`collect`] (the OS) → [`snapshot`] (plain data) → [`analysis`] (pure
//! model, verdict) → [`report`] (text, JSON). [`knobs`] is the knowledge base of OS settings.

pub mod analysis;
pub mod capacity;
pub mod collect;
pub mod fixture;
pub mod knobs;
pub mod lab;
pub mod report;
pub mod serve;
pub mod snapshot;
pub mod top;
pub mod tune;
pub mod units;
