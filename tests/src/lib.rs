//! The test harness of wharf: builds the plugin components the tests load
//! and (module `servers`) starts real servers on 127.0.0.1; module `bench`
//! holds what the end-to-end benchmarks share.

pub mod bench;
pub mod plugins;
pub mod servers;
