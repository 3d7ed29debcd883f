//! wharf: moves business files between trading partners' FTP, FTPS and SFTP
//! servers and an ECM repository. The host owns connections, bytes and
//! guarantees; each partner's rules are a sandboxed WebAssembly plugin.
//!
//! This crate is the runtime. Its modules follow the architecture:
//! [`config`] (`wharf.toml`), [`flow`] (the pipelines: partner files to
//! repository requests), [`plugin`] (the sandboxed plugin host), [`ledger`]
//! (durable claims that make transfers exactly-once), [`runtime`] (the
//! service driving every partner), [`metrics`] (Prometheus metrics), [`admin`] (the
//! health and metrics endpoint of `wharf run`) and [`cli`] (the `wharf` command).

#![warn(missing_docs)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod flow;
pub mod ledger;
pub mod metrics;
pub mod plugin;
pub mod runtime;
