//! The host's own view of a plugin's decisions. Values returned by a plugin
//! are converted from the generated bindings and validated here: a decision
//! that would escape the partner's root, smuggle control characters into a
//! name or exceed sane sizes is refused before anything acts on it.

use std::time::Duration;

use serde::Serialize;

/// Longest accepted name segment (OpenText's node-name limit).
pub const MAX_SEGMENT: usize = 248;
/// Deepest accepted folder path.
pub const MAX_DEPTH: usize = 32;
/// Longest accepted free text (messages, descriptions, attribute values).
pub const MAX_TEXT: usize = 32 * 1024;
/// Most items accepted in any list of a decision.
pub const MAX_ITEMS: usize = 256;
/// Longest deferral accepted.
pub const MAX_DEFER_SECS: u32 = 7 * 24 * 3600;

/// The decision about an inbound file.
// One verdict exists per file decided; its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Store the file.
    Accept(Filing),
    /// Quarantine it with a review task.
    Reject(Rejection),
    /// Offer it again later.
    Defer {
        /// Why.
        reason: String,
        /// How long to wait.
        #[serde(with = "secs")]
        retry_after: Duration,
    },
    /// Leave it alone.
    Ignore {
        /// Why.
        reason: String,
    },
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}

/// A validated, relative repository or remote folder path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelPath(Vec<String>);

impl RelPath {
    /// The path's segments.
    pub fn segments(&self) -> &[String] {
        &self.0
    }
    /// Whether it is the root itself.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

impl Serialize for RelPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a document goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Target {
    /// A folder under the partner's repository root.
    Folder {
        /// The folder.
        path: RelPath,
    },
    /// A folder inside a business workspace.
    Workspace {
        /// Workspace type name.
        workspace_type: String,
        /// Business object id.
        business_id: String,
        /// Folder inside the workspace.
        folder: RelPath,
    },
}

// The metadata vocabulary (attributes, categories, principals, rights,
// grants) is the repository's own: a plugin speaks it, the host validates
// it here and hands it on unchanged.
pub use wharf_ecm::{Attribute, AttributeValue, Category, Grant, Principal, Right};

/// Name-collision policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionPolicy {
    /// Add a version.
    AddVersion,
    /// New document with a suffix.
    NewDocument,
    /// Refuse.
    RejectDuplicate,
}

/// A workflow to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkflowRequest {
    /// Configured workflow name.
    pub workflow: String,
    /// Comment for the reviewers.
    pub comment: String,
    /// First-step assignee.
    pub assignee: Option<String>,
}

/// A validated filing decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Filing {
    /// Where.
    pub target: Target,
    /// Document name (one segment).
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Categories.
    pub categories: Vec<Category>,
    /// Retention (RM classification) code.
    pub retention: Option<String>,
    /// Legal hold name.
    pub hold: Option<String>,
    /// Extra permissions.
    pub permissions: Vec<Grant>,
    /// Workflow to start.
    pub workflow: Option<WorkflowRequest>,
    /// Collision policy.
    pub version_policy: VersionPolicy,
}

/// A validated rejection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Machine code.
    pub code: String,
    /// Human message.
    pub message: String,
    /// Details.
    pub details: Vec<(String, String)>,
}

/// Where an outbound document goes on the partner's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Remote folder, relative to the partner root.
    pub folder: RelPath,
    /// Remote file name.
    pub name: String,
    /// Marker file written afterwards.
    pub marker: Option<String>,
}

/// Status in an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AckStatus {
    /// Accepted.
    Accepted,
    /// Partly accepted.
    Partial,
    /// Refused.
    Rejected,
}

/// The reading of a file in the acknowledgement folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "ack", rename_all = "kebab-case")]
pub enum AckMatch {
    /// It acknowledges a delivery.
    Acknowledged {
        /// Remote name of the delivery.
        delivered_name: String,
        /// Status.
        status: AckStatus,
        /// Partner's message.
        message: String,
    },
    /// Not an acknowledgement.
    NotAnAck,
    /// Unreadable acknowledgement.
    Invalid(Rejection),
}

/// A document offered to `on-export`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentInfo {
    /// Node id.
    pub node_id: u64,
    /// Name.
    pub name: String,
    /// Version number.
    pub version: u32,
    /// Size in bytes.
    pub size: u64,
    /// MIME type.
    pub mime_type: String,
    /// Folder path in the repository.
    pub folder: String,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Categories.
    pub categories: Vec<Category>,
}

/// A file offered to `on-file` or `on-ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    /// Partner id.
    pub partner: String,
    /// Path relative to the partner root.
    pub path: String,
    /// Last segment of `path`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub modified: Option<u64>,
}

/// Who a plugin says it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: String,
}

// ---------------------------------------------------------------------------
// Validation helpers, also used by the rest of the host for its own paths.

/// Characters that make a name dangerous to show or to use: control
/// characters and Unicode bidirectional overrides (which disguise names).
fn is_hostile_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Check one name segment: non-empty, not `.` or `..`, no `/` or `\`, no
/// control characters, no surrounding whitespace, at most [`MAX_SEGMENT`]
/// characters.
pub fn segment(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a name"));
    }
    if let Some(c) = name.chars().find(|&c| c == '/' || c == '\\') {
        return Err(format!("name {name:?} contains {c:?}"));
    }
    if name.chars().any(is_hostile_char) {
        return Err(format!(
            "name {:?} contains control characters",
            name.escape_debug().to_string()
        ));
    }
    if name.trim() != name {
        return Err(format!("name {name:?} starts or ends with whitespace"));
    }
    if name.chars().count() > MAX_SEGMENT {
        return Err(format!("a name is longer than {MAX_SEGMENT} characters"));
    }
    Ok(())
}

/// Parse a relative `/`-separated path: refuses absolute paths, drive
/// letters, `..`, `.`, NUL and control characters; empty input is the root.
pub fn relative_path(path: &str) -> Result<RelPath, String> {
    if path.starts_with('/') || path.starts_with('\\') {
        return Err(format!("path {path:?} is absolute"));
    }
    if path.len() >= 2 && path.as_bytes()[1] == b':' && path.as_bytes()[0].is_ascii_alphabetic() {
        return Err(format!("path {path:?} names a drive"));
    }
    let mut segments = Vec::new();
    for part in path.split('/') {
        if part.is_empty() {
            continue;
        }
        segment(part).map_err(|e| format!("path {:?}: {e}", path.escape_debug().to_string()))?;
        segments.push(part.to_string());
    }
    if segments.len() > MAX_DEPTH {
        return Err(format!("path {path:?} is deeper than {MAX_DEPTH} folders"));
    }
    Ok(RelPath(segments))
}

fn label(what: &str, value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err(format!("{what} is empty"));
    }
    if value.chars().any(is_hostile_char) {
        return Err(format!("{what} contains control characters"));
    }
    if value.len() > 255 {
        return Err(format!("{what} is longer than 255 bytes"));
    }
    Ok(value.to_string())
}

fn text(what: &str, value: &str) -> Result<String, String> {
    if value.len() > MAX_TEXT {
        return Err(format!("{what} is longer than {MAX_TEXT} bytes"));
    }
    // Line breaks and tabs are text; other control characters (escape
    // sequences, NUL) would forge log lines or rewrite a terminal.
    if value
        .chars()
        .any(|c| is_hostile_char(c) && !matches!(c, '\n' | '\t'))
    {
        return Err(format!("{what} contains control characters"));
    }
    Ok(value.to_string())
}

fn items<T>(what: &str, list: &[T]) -> Result<(), String> {
    if list.len() > MAX_ITEMS {
        return Err(format!("more than {MAX_ITEMS} {what}"));
    }
    Ok(())
}

/// `-`? digits (`.` digits)?, at most 40 characters.
fn is_decimal(value: &str) -> bool {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    value.len() <= 40
        && !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

fn iso_date(value: &str) -> bool {
    let b = value.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| value[r].parse::<u32>().ok();
    match (num(0..4), num(5..7), num(8..10)) {
        (Some(y), Some(m), Some(d)) => {
            let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
            let days = match m {
                1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
                4 | 6 | 9 | 11 => 30,
                2 if leap => 29,
                2 => 28,
                _ => return false,
            };
            (1..=days).contains(&d)
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Conversion from the generated bindings, with validation.

use super::bindings::types as wit;

pub(crate) fn verdict(v: wit::Verdict) -> Result<Verdict, String> {
    Ok(match v {
        wit::Verdict::Accept(f) => Verdict::Accept(filing(f)?),
        wit::Verdict::Reject(r) => Verdict::Reject(rejection(r)?),
        wit::Verdict::Defer(d) => {
            if d.retry_after_secs == 0 || d.retry_after_secs > MAX_DEFER_SECS {
                return Err(format!(
                    "defer of {} s is outside 1..={MAX_DEFER_SECS} s",
                    d.retry_after_secs
                ));
            }
            Verdict::Defer {
                reason: text("defer reason", &d.reason)?,
                retry_after: Duration::from_secs(u64::from(d.retry_after_secs)),
            }
        }
        wit::Verdict::Ignore(reason) => Verdict::Ignore {
            reason: text("ignore reason", &reason)?,
        },
    })
}

fn filing(f: wit::Filing) -> Result<Filing, String> {
    let target = match f.target {
        wit::Target::Folder(path) => Target::Folder {
            path: relative_path(&path).map_err(|e| format!("target folder: {e}"))?,
        },
        wit::Target::Workspace(ws) => Target::Workspace {
            workspace_type: label("workspace type", &ws.workspace_type)?,
            business_id: label("business id", &ws.business_id)?,
            folder: relative_path(&ws.folder).map_err(|e| format!("workspace folder: {e}"))?,
        },
    };
    segment(&f.name).map_err(|e| format!("document name: {e}"))?;
    items("categories", &f.categories)?;
    items("grants", &f.permissions)?;
    Ok(Filing {
        target,
        name: f.name,
        description: f.description.map(|d| text("description", &d)).transpose()?,
        categories: f
            .categories
            .into_iter()
            .map(category)
            .collect::<Result<_, _>>()?,
        retention: f
            .retention
            .map(|r| label("retention code", &r))
            .transpose()?,
        hold: f.hold.map(|h| label("hold name", &h)).transpose()?,
        permissions: f
            .permissions
            .into_iter()
            .map(grant)
            .collect::<Result<_, _>>()?,
        workflow: f
            .workflow
            .map(|w| -> Result<_, String> {
                Ok(WorkflowRequest {
                    workflow: label("workflow name", &w.workflow)?,
                    comment: text("workflow comment", &w.comment)?,
                    assignee: w
                        .assignee
                        .map(|a| label("workflow assignee", &a))
                        .transpose()?,
                })
            })
            .transpose()?,
        version_policy: match f.version_policy {
            wit::VersionPolicy::AddVersion => VersionPolicy::AddVersion,
            wit::VersionPolicy::NewDocument => VersionPolicy::NewDocument,
            wit::VersionPolicy::RejectDuplicate => VersionPolicy::RejectDuplicate,
        },
    })
}

pub(crate) fn category(c: wit::Category) -> Result<Category, String> {
    let name = label("category name", &c.name)?;
    items("attributes", &c.attributes)?;
    let attributes = c
        .attributes
        .into_iter()
        .map(|a| -> Result<_, String> {
            let what = format!("attribute {}:{}", name, a.name);
            let value = match a.value {
                wit::AttributeValue::Text(t) => AttributeValue::Text(text(&what, &t)?),
                wit::AttributeValue::Integer(i) => AttributeValue::Integer(i),
                wit::AttributeValue::Decimal(d) if is_decimal(&d) => AttributeValue::Decimal(d),
                wit::AttributeValue::Decimal(d) => {
                    return Err(format!(
                        "{what}: {:?} is not a plain decimal number",
                        d.escape_debug().to_string()
                    ));
                }
                wit::AttributeValue::Date(d) if iso_date(&d) => AttributeValue::Date(d),
                wit::AttributeValue::Date(d) => {
                    return Err(format!("{what}: {d:?} is not a YYYY-MM-DD date"));
                }
                wit::AttributeValue::Boolean(b) => AttributeValue::Boolean(b),
                wit::AttributeValue::TextList(l) => {
                    items(&what, &l)?;
                    AttributeValue::TextList(
                        l.iter().map(|t| text(&what, t)).collect::<Result<_, _>>()?,
                    )
                }
            };
            Ok(Attribute {
                name: label("attribute name", &a.name)?,
                value,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Category { name, attributes })
}

fn grant(g: wit::Grant) -> Result<Grant, String> {
    let principal = match g.principal {
        wit::Principal::Owner => Principal::Owner,
        wit::Principal::OwnerGroup => Principal::OwnerGroup,
        wit::Principal::Public => Principal::Public,
        wit::Principal::User(u) => Principal::User(label("user name", &u)?),
        wit::Principal::Group(g) => Principal::Group(label("group name", &g)?),
    };
    let rights = g
        .rights
        .into_iter()
        .map(|r| match r {
            wit::Right::See => Right::See,
            wit::Right::SeeContents => Right::SeeContents,
            wit::Right::Modify => Right::Modify,
            wit::Right::EditAttributes => Right::EditAttributes,
            wit::Right::AddItems => Right::AddItems,
            wit::Right::Reserve => Right::Reserve,
            wit::Right::AddMajorVersion => Right::AddMajorVersion,
            wit::Right::DeleteVersions => Right::DeleteVersions,
            wit::Right::Delete => Right::Delete,
            wit::Right::EditPermissions => Right::EditPermissions,
        })
        .collect();
    Ok(Grant { principal, rights })
}

pub(crate) fn rejection(r: wit::Rejection) -> Result<Rejection, String> {
    if r.code.is_empty() || r.code.len() > 64 || !r.code.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "rejection code {:?} must be 1 to 64 visible ASCII characters",
            r.code.escape_debug().to_string()
        ));
    }
    items("rejection details", &r.details)?;
    Ok(Rejection {
        code: r.code,
        message: text("rejection message", &r.message)?,
        details: r
            .details
            .into_iter()
            .map(|(k, v)| Ok((label("detail key", &k)?, text("detail value", &v)?)))
            .collect::<Result<_, String>>()?,
    })
}

pub(crate) fn delivery(d: wit::Delivery) -> Result<Delivery, String> {
    segment(&d.name).map_err(|e| format!("delivery name: {e}"))?;
    if let Some(marker) = &d.marker {
        segment(marker).map_err(|e| format!("marker name: {e}"))?;
    }
    Ok(Delivery {
        folder: relative_path(&d.folder).map_err(|e| format!("delivery folder: {e}"))?,
        name: d.name,
        marker: d.marker,
    })
}

pub(crate) fn ack_match(a: wit::AckMatch) -> Result<AckMatch, String> {
    Ok(match a {
        wit::AckMatch::Acknowledged(ack) => {
            segment(&ack.delivered_name).map_err(|e| format!("acknowledged name: {e}"))?;
            AckMatch::Acknowledged {
                delivered_name: ack.delivered_name,
                status: match ack.status {
                    wit::AckStatus::Accepted => AckStatus::Accepted,
                    wit::AckStatus::Partial => AckStatus::Partial,
                    wit::AckStatus::Rejected => AckStatus::Rejected,
                },
                message: text("acknowledgement message", &ack.message)?,
            }
        }
        wit::AckMatch::NotAnAck => AckMatch::NotAnAck,
        wit::AckMatch::Invalid(r) => AckMatch::Invalid(rejection(r)?),
    })
}

pub(crate) fn plugin_info(i: wit::PluginInfo) -> Result<PluginInfo, String> {
    Ok(PluginInfo {
        name: label("plugin name", &i.name)?,
        version: label("plugin version", &i.version)?,
        description: text("plugin description", &i.description)?,
    })
}

// Conversions towards the plugin.

pub(crate) fn to_wit_file(f: &FileInfo) -> wit::FileInfo {
    wit::FileInfo {
        partner: f.partner.clone(),
        path: f.path.clone(),
        name: f.name.clone(),
        size: f.size,
        modified: f.modified,
    }
}

pub(crate) fn to_wit_category(c: &Category) -> wit::Category {
    wit::Category {
        name: c.name.clone(),
        attributes: c
            .attributes
            .iter()
            .map(|a| wit::Attribute {
                name: a.name.clone(),
                value: match &a.value {
                    AttributeValue::Text(t) => wit::AttributeValue::Text(t.clone()),
                    AttributeValue::Integer(i) => wit::AttributeValue::Integer(*i),
                    AttributeValue::Decimal(d) => wit::AttributeValue::Decimal(d.clone()),
                    AttributeValue::Date(d) => wit::AttributeValue::Date(d.clone()),
                    AttributeValue::Boolean(b) => wit::AttributeValue::Boolean(*b),
                    AttributeValue::TextList(l) => wit::AttributeValue::TextList(l.clone()),
                },
            })
            .collect(),
    }
}

pub(crate) fn to_wit_document(d: &DocumentInfo) -> wit::DocumentInfo {
    wit::DocumentInfo {
        node_id: d.node_id,
        name: d.name.clone(),
        version: d.version,
        size: d.size,
        mime_type: d.mime_type.clone(),
        folder: d.folder.clone(),
        sha256: d.sha256.clone(),
        categories: d.categories.iter().map(to_wit_category).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_normalised() {
        assert_eq!(relative_path("a//b/").unwrap().to_string(), "a/b");
        assert!(relative_path("").unwrap().is_root());
    }

    #[test]
    fn escaping_paths_are_refused() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc",
            "\\\\server\\share",
            "C:/x",
            "a/./b",
            "a\0b",
            "a\u{1b}b",
            "a/\u{202E}fdp.exe",
        ] {
            assert!(relative_path(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn segments_refuse_separators_and_padding() {
        for bad in ["", ".", "..", "a/b", "a\\b", " a", "a ", "x\ny"] {
            assert!(segment(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(segment("INV_ACME_20261124_1.csv").is_ok());
        assert!(segment(&"x".repeat(MAX_SEGMENT + 1)).is_err());
    }

    #[test]
    fn decimals_are_plain_notation() {
        for good in ["0", "1650.39", "-3.5", "007"] {
            assert!(is_decimal(good), "{good}");
        }
        for bad in [
            "", "-", "1.", ".5", "1e5", "1,000.00", "NaN", "inf", "+1", "1.2.3",
        ] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }

    #[test]
    fn dates_must_exist() {
        assert!(iso_date("2024-02-29"));
        assert!(!iso_date("2023-02-29"));
        assert!(!iso_date("2023-2-28"));
    }
}
