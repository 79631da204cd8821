//! `portdoctor top`: a live view of every port pool. [`state`] is the pure app state (rates
//! from consecutive snapshots, history, sorting, filter, keys); [`view`] draws it with ratatui.
//! The terminal, the clock and the collector live in the shell, `commands/top.rs`.

pub mod failures;
pub mod snat;
pub mod state;
pub mod view;

pub use state::{App, Key};
pub use view::{render, render_text, ViewOptions};
