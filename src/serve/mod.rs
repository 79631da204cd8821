//! `portdoctor serve`: the pure parts of the Prometheus exporter. Metric families from an
//! [`Analysis`](crate::analysis::Analysis) ([`metrics`]), the classic text format for
//! node_exporter's textfile collector and old clients ([`textfmt`]), the exporter-toolkit style
//! web-config file and basic-auth check ([`webconfig`]). The HTTP server itself is
//! `src/commands/serve.rs`. Every metric is documented in docs/serve.md.

pub mod metrics;
pub mod textfmt;
pub mod webconfig;
