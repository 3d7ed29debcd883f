//! The flows: what happens to a file between a partner's server and the
//! repository. [`filing`] turns a plugin's decision into repository
//! requests; the inbound pipeline builds on it.

pub mod filing;
