//! Host bindings generated from `wit/`. Nothing outside `plugin` sees these
//! types: the rest of the host works with [`super::decision`].

wasmtime::component::bindgen!({
    path: "../wit",
    world: "partner",
    with: {
        "wharf:plugin/content.content": super::content::ContentHandle,
    },
});

pub use self::wharf::plugin::{config, content, ecm, ftp, log, types};
