//! The flows: what happens to a file between a partner's server and the
//! repository. [`filing`] turns a plugin's decision into repository
//! requests; [`inbound`] is the pipeline from a partner's inbox into the
//! repository and [`outbound`] releases approved documents to partners;
//! [`tree`] walks the repository without changing it; [`events`] carries
//! audit events from the ledger's outbox to the repository; [`connect`] builds endpoints and repositories from the
//! configuration.

pub mod bridge;
pub mod connect;
pub mod delivery;
pub mod events;
pub mod filing;
pub mod inbound;
pub mod outbound;
mod spool;
pub mod tree;
