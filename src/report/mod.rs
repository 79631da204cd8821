//! Rendering only: turns an [`Analysis`](crate::analysis::Analysis) into text or JSON. Number
//! and duration formatting shared with the other layers is in [`crate::units`].

pub mod json;
pub mod namespaces;
pub mod snat;
pub mod text;
