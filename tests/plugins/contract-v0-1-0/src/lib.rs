//! A 0.1.0-era plugin on raw bindings: accepts everything into `Inbox`,
//! delivers every document under its own name, and reads no acknowledgements.

wit_bindgen::generate!({
    path: "wit",
    world: "partner",
    generate_all,
});

use exports::wharf::plugin::{acks, inbound, meta, outbound};
use wharf::plugin::content::Content;
use wharf::plugin::types::{
    AckMatch, Delivery, DocumentInfo, FileInfo, Filing, PluginInfo, Rejection, Target, Verdict,
    VersionPolicy,
};

struct Frozen;

impl meta::Guest for Frozen {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "contract-v0-1-0".into(),
            version: "0.1.0".into(),
            description: "built against the frozen 0.1.0 contract".into(),
        }
    }
}

impl inbound::Guest for Frozen {
    fn on_file(file: FileInfo, content: &Content) -> Verdict {
        Verdict::Accept(Filing {
            target: Target::Folder("Inbox".into()),
            name: file.name,
            description: Some(format!("{} bytes", content.size())),
            categories: Vec::new(),
            retention: None,
            hold: None,
            permissions: Vec::new(),
            workflow: None,
            version_policy: VersionPolicy::AddVersion,
        })
    }
}

impl outbound::Guest for Frozen {
    fn on_export(doc: DocumentInfo, _content: &Content) -> Result<Delivery, Rejection> {
        Ok(Delivery {
            folder: "out".into(),
            name: doc.name,
            marker: None,
        })
    }
}

impl acks::Guest for Frozen {
    fn on_ack(_file: FileInfo, _content: &Content) -> AckMatch {
        AckMatch::NotAnAck
    }
}

export!(Frozen);
