//! From a plugin's decision to repository requests: target folder,
//! document, collision policy and workflow. The host also adds its own
//! standard attributes to every filed document, so each document says where
//! it came from, when, with which checksum and which plugin decided it.

use std::time::SystemTime;

use wharf_ecm as ecm;

use crate::plugin::decision::{Filing, RelPath, VersionPolicy, WorkflowRequest};

/// Name of the category holding the host's standard attributes.
pub const PROVENANCE_CATEGORY: &str = "wharf Transfer";

/// Where a file came from and who decided it: recorded on every document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// Partner id.
    pub partner: String,
    /// Path on the partner's server, relative to its root.
    pub source_path: String,
    /// When the transfer completed.
    pub received: SystemTime,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Plugin name.
    pub plugin: String,
    /// Plugin version.
    pub plugin_version: String,
    /// SHA-256 of the plugin component.
    pub plugin_digest: String,
}

impl Provenance {
    /// The standard category of every filed document.
    pub fn category(&self) -> ecm::Category {
        let text = |name: &str, value: &str| ecm::Attribute {
            name: name.to_string(),
            value: ecm::AttributeValue::Text(value.to_string()),
        };
        ecm::Category {
            name: PROVENANCE_CATEGORY.to_string(),
            attributes: vec![
                text("Partner", &self.partner),
                text("Source Path", &self.source_path),
                text(
                    "Received",
                    &humantime::format_rfc3339_seconds(self.received).to_string(),
                ),
                text("SHA-256", &self.sha256),
                ecm::Attribute {
                    name: "Size".to_string(),
                    value: ecm::AttributeValue::Integer(
                        i64::try_from(self.size).unwrap_or(i64::MAX),
                    ),
                },
                text("Plugin", &self.plugin),
                text("Plugin Version", &self.plugin_version),
                text("Plugin Digest", &self.plugin_digest),
            ],
        }
    }
}

/// The folder path, below the repository's partner root, that a folder
/// target names: `ecm_root` then the plugin's folder.
pub fn folder_path(ecm_root: &RelPath, folder: &RelPath) -> Vec<String> {
    ecm_root
        .segments()
        .iter()
        .chain(folder.segments())
        .cloned()
        .collect()
}

/// The document to create for an accepted file, below `parent`.
pub fn new_document(
    parent: ecm::NodeId,
    filing: &Filing,
    provenance: &Provenance,
) -> ecm::NewDocument {
    let mut categories = filing.categories.clone();
    categories.push(provenance.category());
    ecm::NewDocument {
        parent,
        name: filing.name.clone(),
        description: filing.description.clone(),
        mime_type: mime_type(&filing.name).to_string(),
        sha256: provenance.sha256.clone(),
        categories,
        policy: policy(filing.version_policy),
    }
}

/// A plugin's collision policy as the repository's.
pub fn policy(p: VersionPolicy) -> ecm::CollisionPolicy {
    match p {
        VersionPolicy::AddVersion => ecm::CollisionPolicy::AddVersion,
        VersionPolicy::NewDocument => ecm::CollisionPolicy::NewDocument,
        VersionPolicy::RejectDuplicate => ecm::CollisionPolicy::Reject,
    }
}

/// The workflow to start for a filed document.
pub fn workflow(
    request: &WorkflowRequest,
    document: ecm::NodeId,
    name: &str,
) -> ecm::WorkflowStart {
    ecm::WorkflowStart {
        workflow: request.workflow.clone(),
        title: name.to_string(),
        comment: request.comment.clone(),
        assignee: request.assignee.clone(),
        documents: vec![document],
    }
}

/// The content type of a file, from its extension.
pub fn mime_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "csv" => "text/csv",
        "txt" => "text/plain",
        "xml" => "application/xml",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "edi" | "x12" | "edifact" => "application/edi-x12",
        "zip" => "application/zip",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "tif" | "tiff" => "image/tiff",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::decision::{
        Attribute, AttributeValue, Category, Grant, Principal, Right, Target, relative_path,
    };

    fn provenance() -> Provenance {
        Provenance {
            partner: "acme".into(),
            source_path: "inbox/INV_1.csv".into(),
            received: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_000_000),
            sha256: "ab".repeat(32),
            size: 160,
            plugin: "acme-invoices".into(),
            plugin_version: "0.1.0".into(),
            plugin_digest: "cd".repeat(32),
        }
    }

    fn filing() -> Filing {
        Filing {
            target: Target::Folder {
                path: relative_path("Invoices/ACME01").unwrap(),
            },
            name: "INV_1.csv".into(),
            description: Some("batch 1".into()),
            categories: vec![Category {
                name: "Invoice".into(),
                attributes: vec![Attribute {
                    name: "Total Amount".into(),
                    value: AttributeValue::Decimal("1650.39".into()),
                }],
            }],
            retention: Some("FIN-7Y".into()),
            hold: None,
            permissions: vec![Grant {
                principal: Principal::Group("Accounts Payable".into()),
                rights: vec![Right::See, Right::SeeContents],
            }],
            workflow: None,
            version_policy: VersionPolicy::RejectDuplicate,
        }
    }

    #[test]
    fn accepted_file_becomes_a_document_with_its_provenance() {
        let doc = new_document(ecm::NodeId(7), &filing(), &provenance());
        assert_eq!(doc.parent, ecm::NodeId(7));
        assert_eq!(doc.mime_type, "text/csv");
        assert_eq!(doc.policy, ecm::CollisionPolicy::Reject);
        assert_eq!(doc.sha256, "ab".repeat(32));
        assert_eq!(
            doc.categories[0].attributes[0].value,
            ecm::AttributeValue::Decimal("1650.39".into())
        );
        let standard = &doc.categories[1];
        assert_eq!(standard.name, PROVENANCE_CATEGORY);
        let attr = |n: &str| {
            standard
                .attributes
                .iter()
                .find(|a| a.name == n)
                .unwrap()
                .value
                .clone()
        };
        assert_eq!(
            attr("Received"),
            ecm::AttributeValue::Text("2025-11-24T16:00:00Z".into())
        );
        assert_eq!(attr("Size"), ecm::AttributeValue::Integer(160));
        assert_eq!(
            attr("Plugin Digest"),
            ecm::AttributeValue::Text("cd".repeat(32))
        );
    }

    #[test]
    fn folder_targets_live_below_the_partner_root() {
        let root = relative_path("Partners/acme").unwrap();
        let folder = relative_path("Invoices/ACME01").unwrap();
        assert_eq!(
            folder_path(&root, &folder),
            ["Partners", "acme", "Invoices", "ACME01"]
        );
    }

    #[test]
    fn unknown_extensions_are_octet_streams() {
        assert_eq!(mime_type("QC_1_COA_X.PDF"), "application/pdf");
        assert_eq!(mime_type("noextension"), "application/octet-stream");
    }
}
