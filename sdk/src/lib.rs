//! # wharf-sdk: write a partner plugin for wharf
//!
//! A wharf plugin is a WebAssembly component holding one trading partner's
//! rules: which inbound files are valid, where they are filed in the
//! repository and with which metadata, how outbound documents are named, and
//! how the partner's acknowledgements are read. The host owns connections,
//! bytes, retries and audit; a plugin only *decides*.
//!
//! A plugin is a type implementing [`Plugin`], exported with [`export!`]:
//!
//! ```no_run
//! use wharf_sdk::prelude::*;
//!
//! struct Acme;
//!
//! impl Plugin for Acme {
//!     fn on_file(file: FileInfo, content: &Content) -> Verdict {
//!         if !file.name.ends_with(".csv") {
//!             return Verdict::reject("not-csv", "only CSV files are accepted");
//!         }
//!         let mut lines = wharf_sdk::read::lines(content.reader());
//!         match lines.next() {
//!             Some(Ok(header)) if header.starts_with("invoice,") => {}
//!             _ => return Verdict::reject("bad-header", "the first line must be the invoice header"),
//!         }
//!         Verdict::accept(Filing::to_folder("Invoices/Acme", &file.name))
//!     }
//! }
//!
//! wharf_sdk::export!(Acme);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release`; the result is
//! a component the host loads directly.
//!
//! The host capabilities a plugin may call live in [`host`]: logging,
//! settings, the partner's remote folders and read-only repository look-ups.
//! Helpers for common rules live in [`pattern`] (file names with named
//! captures), [`read`] (streaming lines and CSV over the content) and [`xml`]
//! (well-formedness and root element).
//!
//! Rules are unit-tested natively with `cargo test`: on any target but
//! `wasm32`, [`Content`] is an in-memory byte buffer and the [`host`]
//! functions answer from the in-memory host of `testing` (settings, remote
//! files, repository look-ups, captured log lines and outbox writes). The
//! component built for `wasm32-wasip2` is not affected.

#![warn(missing_docs)]

// The generated bindings name this crate by its public path, also from inside it.
extern crate self as wharf_sdk;

pub mod pattern;
pub mod read;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod xml;

mod builders;

#[doc(hidden)]
pub mod bindings {
    //! Generated bindings; plugin authors use the re-exports instead.
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        path: "../wit",
        world: "partner",
        pub_export_macro: true,
        export_macro_name: "__export_partner_world",
        default_bindings_module: "::wharf_sdk::bindings",
        runtime_path: "::wharf_sdk::__private::wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
        generate_all,
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    /// Compiles only for a [`Plugin`](crate::Plugin): what [`export!`](crate::export)
    /// checks on targets where it exports nothing.
    pub const fn assert_plugin<P: crate::Plugin>() {}
}

#[cfg(target_arch = "wasm32")]
pub use bindings::wharf::plugin::content::Content;
pub use bindings::wharf::plugin::types::{
    AckMatch, AckStatus, Acknowledgement, Attribute, AttributeValue, Category, Deferral, Delivery,
    DocumentInfo, Entry, EntryKind, FileInfo, Filing, Grant, HostError, Level, PluginInfo,
    Principal, Rejection, Right, Target, Verdict, VersionPolicy, WorkflowRequest, WorkspaceRef,
};
#[cfg(not(target_arch = "wasm32"))]
pub use testing::Content;

/// The capabilities the host grants a plugin. Every call is scoped to the
/// plugin's own partner.
///
/// In the component (`wasm32`) these are the contract's imports. On other
/// targets they answer from the active `testing::TestHost`, so rules can
/// be unit-tested with `cargo test`; the signatures are the same.
pub mod host {
    #[cfg(target_arch = "wasm32")]
    pub use crate::bindings::wharf::plugin::config::{get as setting, keys as setting_keys};
    pub use crate::bindings::wharf::plugin::ecm::{Condition, SearchQuery};
    #[cfg(target_arch = "wasm32")]
    pub use crate::bindings::wharf::plugin::ecm::{attributes, find_workspace, search};
    #[cfg(target_arch = "wasm32")]
    pub use crate::bindings::wharf::plugin::ftp::{list_folder, read_file, write_file};
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::wharf::plugin::log::log;
    use crate::bindings::wharf::plugin::types::Level;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::imports::log;
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::testing::imports::{
        attributes, find_workspace, list_folder, read_file, search, setting, setting_keys,
        write_file,
    };

    /// Log a message at debug level into the host's log.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    /// Log a message at info level into the host's log.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    /// Log a message at warn level into the host's log.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    /// Log a message at error level into the host's log.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// The rules of one trading partner.
///
/// Only [`Plugin::on_file`] is required. A partner without outbound
/// deliveries keeps the default [`Plugin::on_export`], which refuses every
/// document; a partner without acknowledgements keeps the default
/// [`Plugin::on_ack`], which recognises none.
pub trait Plugin {
    /// Decide what to do with one inbound file. `content` streams its bytes;
    /// read as little as the rule needs.
    fn on_file(file: FileInfo, content: &Content) -> Verdict;

    /// Decide where an approved document is delivered, or refuse it.
    fn on_export(doc: DocumentInfo, content: &Content) -> Result<Delivery, Rejection> {
        let _ = content;
        Err(Rejection::new(
            "outbound-unsupported",
            &format!("this plugin does not deliver documents ({})", doc.name),
        ))
    }

    /// Read one file of the partner's acknowledgement folder.
    fn on_ack(file: FileInfo, content: &Content) -> AckMatch {
        let _ = (file, content);
        AckMatch::NotAnAck
    }
}

/// Everything a plugin usually needs, in one import.
pub mod prelude {
    pub use crate::{
        AckMatch, AckStatus, Acknowledgement, Attribute, AttributeValue, Category, Content,
        Delivery, DocumentInfo, FileInfo, Filing, Grant, Plugin, PluginInfo, Principal, Rejection,
        Right, Target, Verdict, VersionPolicy, WorkflowRequest, WorkspaceRef, host,
    };
}

/// Export a [`Plugin`] implementation as the component's entry points.
///
/// ```no_run
/// # use wharf_sdk::prelude::*;
/// struct Partner;
/// impl Plugin for Partner {
///     fn on_file(file: FileInfo, _content: &Content) -> Verdict {
///         Verdict::ignore(&format!("{} is not for us", file.name))
///     }
/// }
/// wharf_sdk::export!(Partner);
/// ```
///
/// The plugin describes itself with its crate's `CARGO_PKG_NAME`,
/// `CARGO_PKG_VERSION` and `CARGO_PKG_DESCRIPTION` (see [`plugin_info!`]):
/// the version the host records with every decision is the crate version.
///
/// Only the `wasm32` build exports anything; on other targets (native unit
/// tests) the macro checks that the type is a [`Plugin`] and nothing more.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = $crate::__private::assert_plugin::<$plugin>();

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __WharfExports;

            impl $crate::bindings::exports::wharf::plugin::meta::Guest for __WharfExports {
                fn info() -> $crate::PluginInfo {
                    $crate::plugin_info!()
                }
            }
            impl $crate::bindings::exports::wharf::plugin::inbound::Guest for __WharfExports {
                fn on_file(file: $crate::FileInfo, content: &$crate::Content) -> $crate::Verdict {
                    <$plugin as $crate::Plugin>::on_file(file, content)
                }
            }
            impl $crate::bindings::exports::wharf::plugin::outbound::Guest for __WharfExports {
                fn on_export(
                    doc: $crate::DocumentInfo,
                    content: &$crate::Content,
                ) -> ::core::result::Result<$crate::Delivery, $crate::Rejection> {
                    <$plugin as $crate::Plugin>::on_export(doc, content)
                }
            }
            impl $crate::bindings::exports::wharf::plugin::acks::Guest for __WharfExports {
                fn on_ack(file: $crate::FileInfo, content: &$crate::Content) -> $crate::AckMatch {
                    <$plugin as $crate::Plugin>::on_ack(file, content)
                }
            }

            $crate::bindings::__export_partner_world!(__WharfExports);
        };
    };
}

/// A [`PluginInfo`] built from the calling crate's Cargo metadata.
///
/// ```
/// let info = wharf_sdk::plugin_info!();
/// assert_eq!(info.name, "wharf-sdk");
/// ```
#[macro_export]
macro_rules! plugin_info {
    () => {
        $crate::PluginInfo {
            name: ::std::string::String::from(env!("CARGO_PKG_NAME")),
            version: ::std::string::String::from(env!("CARGO_PKG_VERSION")),
            description: ::std::string::String::from(env!("CARGO_PKG_DESCRIPTION")),
        }
    };
}
