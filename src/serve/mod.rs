//! `portdoctor serve`: the Prometheus exporter without its server. Metric families from an
//! [`Analysis`](crate::analysis::Analysis) ([`metrics`]), the classic text format for
//! node_exporter's textfile collector and old clients ([`textfmt`]), the exporter-toolkit style
//! web-config file (read and validated) and basic-auth check ([`webconfig`]); all pure but the
//! read of that one file. The HTTP server, TLS and the textfile writer are
//! `src/commands/serve.rs`. Every metric is documented in docs/serve.md.

pub mod failures;
pub mod metrics;
mod snat;
pub mod textfmt;
pub mod webconfig;
