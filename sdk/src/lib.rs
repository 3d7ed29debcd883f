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

#![warn(missing_docs)]

// The generated bindings name this crate by its public path, also from inside it.
extern crate self as wharf_sdk;

pub mod pattern;
pub mod read;
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
        generate_all,
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

pub use bindings::wharf::plugin::content::Content;
pub use bindings::wharf::plugin::types::{
    AckMatch, AckStatus, Acknowledgement, Attribute, AttributeValue, Category, Deferral, Delivery,
    DocumentInfo, Entry, EntryKind, FileInfo, Filing, Grant, HostError, Level, PluginInfo,
    Principal, Rejection, Right, Target, Verdict, VersionPolicy, WorkflowRequest, WorkspaceRef,
};

/// The capabilities the host grants a plugin. Every call is scoped to the
/// plugin's own partner.
pub mod host {
    pub use crate::bindings::wharf::plugin::config::{get as setting, keys as setting_keys};
    pub use crate::bindings::wharf::plugin::ecm::{
        Condition, SearchQuery, attributes, find_workspace, search,
    };
    pub use crate::bindings::wharf::plugin::ftp::{list_folder, read_file, write_file};
    use crate::bindings::wharf::plugin::log::log;
    use crate::bindings::wharf::plugin::types::Level;

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
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
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
