//! Values passed across the repository boundary.

use serde::{Deserialize, Serialize};

/// A node id (Content Server's `id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub i64);

impl NodeId {
    /// The Enterprise Workspace volume, the usual root of folder paths.
    pub const ENTERPRISE: NodeId = NodeId(2000);
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Node types, numbered as Content Server numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeKind {
    /// Folder (0).
    Folder,
    /// Document (144).
    Document,
    /// Business workspace (848).
    Workspace,
    /// A volume such as the Enterprise Workspace (141).
    Volume,
    /// Any other subtype.
    Other(i64),
}

impl NodeKind {
    /// The Content Server subtype number.
    pub fn subtype(self) -> i64 {
        match self {
            NodeKind::Folder => 0,
            NodeKind::Document => 144,
            NodeKind::Workspace => 848,
            NodeKind::Volume => 141,
            NodeKind::Other(n) => n,
        }
    }
    /// The kind of a subtype number.
    pub fn from_subtype(n: i64) -> Self {
        match n {
            0 => NodeKind::Folder,
            144 => NodeKind::Document,
            848 => NodeKind::Workspace,
            141 => NodeKind::Volume,
            n => NodeKind::Other(n),
        }
    }
    /// Whether the node can hold children.
    pub fn is_container(self) -> bool {
        matches!(
            self,
            NodeKind::Folder | NodeKind::Workspace | NodeKind::Volume
        )
    }
}

/// A node's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Id.
    pub id: NodeId,
    /// Parent folder (`None` for a volume).
    pub parent: Option<NodeId>,
    /// Name.
    pub name: String,
    /// Type.
    pub kind: NodeKind,
    /// Size in bytes of the latest version (documents).
    pub size: Option<u64>,
    /// MIME type of the latest version (documents).
    pub mime_type: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// Modification time, RFC 3339 UTC.
    pub modified: String,
    /// Number of versions (documents).
    pub versions: Option<u32>,
}

/// One version of a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// Version number, from 1.
    pub number: u32,
    /// Size in bytes.
    pub size: u64,
    /// MIME type.
    pub mime_type: String,
    /// File name uploaded.
    pub file_name: String,
    /// SHA-256 of the content, lower-case hex, when the repository knows it.
    pub sha256: Option<String>,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// Description.
    pub description: Option<String>,
}

/// A typed attribute value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "kebab-case")]
pub enum AttributeValue {
    /// Text.
    Text(String),
    /// Whole number.
    Integer(i64),
    /// Exact decimal number in plain notation, e.g. `1650.39`: kept as
    /// text so money never passes through binary floating point here; sent
    /// to a Content Server as a JSON number.
    Decimal(String),
    /// ISO 8601 date.
    Date(String),
    /// Flag.
    Boolean(bool),
    /// Several texts.
    TextList(Vec<String>),
}

impl AttributeValue {
    /// The JSON value Content Server expects for it.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            AttributeValue::Text(t) | AttributeValue::Date(t) => t.clone().into(),
            AttributeValue::Integer(i) => (*i).into(),
            AttributeValue::Decimal(d) => d
                .parse::<serde_json::Number>()
                .map(serde_json::Value::Number)
                .unwrap_or_else(|_| d.clone().into()),
            AttributeValue::Boolean(b) => (*b).into(),
            AttributeValue::TextList(l) => l.clone().into(),
        }
    }
    /// Read a JSON value back; the type comes from the JSON shape.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        use serde_json::Value;
        Some(match v {
            Value::String(s) => AttributeValue::Text(s.clone()),
            Value::Bool(b) => AttributeValue::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => AttributeValue::Integer(i),
                None => AttributeValue::Decimal(n.to_string()),
            },
            Value::Array(a) => AttributeValue::TextList(
                a.iter()
                    .map(|x| match x {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
            ),
            _ => return None,
        })
    }
    /// The value as text, as used in search comparisons.
    pub fn as_text(&self) -> String {
        match self {
            AttributeValue::Text(t) | AttributeValue::Date(t) => t.clone(),
            AttributeValue::Integer(i) => i.to_string(),
            AttributeValue::Decimal(d) => d.clone(),
            AttributeValue::Boolean(b) => b.to_string(),
            AttributeValue::TextList(l) => l.join("|"),
        }
    }
}

/// A named attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    /// Attribute name.
    pub name: String,
    /// Value.
    pub value: AttributeValue,
}

/// A category and its attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Category {
    /// Category name.
    pub name: String,
    /// Attributes.
    pub attributes: Vec<Attribute>,
}

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "kebab-case")]
pub enum Principal {
    /// The owner.
    Owner,
    /// The owner group.
    OwnerGroup,
    /// Everybody.
    Public,
    /// A named user.
    User(String),
    /// A named group.
    Group(String),
}

/// A permission, named as Content Server names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Right {
    /// See.
    See,
    /// See contents.
    SeeContents,
    /// Modify.
    Modify,
    /// Edit attributes.
    EditAttributes,
    /// Add items.
    AddItems,
    /// Reserve.
    Reserve,
    /// Add major version.
    AddMajorVersion,
    /// Delete versions.
    DeleteVersions,
    /// Delete.
    Delete,
    /// Edit permissions.
    EditPermissions,
}

impl Right {
    /// Every right, in Content Server's order.
    pub const ALL: [Right; 10] = [
        Right::See,
        Right::SeeContents,
        Right::Modify,
        Right::EditAttributes,
        Right::AddItems,
        Right::Reserve,
        Right::AddMajorVersion,
        Right::DeleteVersions,
        Right::Delete,
        Right::EditPermissions,
    ];
    /// Content Server's name of the right.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::See => "see",
            Right::SeeContents => "see_contents",
            Right::Modify => "modify",
            Right::EditAttributes => "edit_attributes",
            Right::AddItems => "add_items",
            Right::Reserve => "reserve",
            Right::AddMajorVersion => "add_major_version",
            Right::DeleteVersions => "delete_versions",
            Right::Delete => "delete",
            Right::EditPermissions => "edit_permissions",
        }
    }
    /// Parse Content Server's name of a right.
    pub fn parse(s: &str) -> Option<Right> {
        Right::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Rights granted to a principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Who.
    pub principal: Principal,
    /// What.
    pub rights: Vec<Right>,
}

/// What to do when the name already exists in the folder (and the content
/// differs; identical content is always the existing document).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CollisionPolicy {
    /// Add a version to the existing document.
    AddVersion,
    /// Create a new document with a numbered suffix (`name (2).ext`).
    NewDocument,
    /// Refuse with [`crate::ErrorKind::NameCollision`].
    Reject,
}

/// A document to store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDocument {
    /// Target folder.
    pub parent: NodeId,
    /// Document name (one segment).
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// MIME type of the content.
    pub mime_type: String,
    /// SHA-256 of the content, lower-case hex. It is verified against the
    /// bytes received and used to make retried stores idempotent.
    pub sha256: String,
    /// Categories to apply.
    pub categories: Vec<Category>,
    /// Collision policy.
    pub policy: CollisionPolicy,
}

/// What a store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreOutcome {
    /// A new document was created.
    Created,
    /// A version was added to an existing document.
    VersionAdded,
    /// The same content already existed under that name; nothing was written.
    AlreadyPresent,
}

/// The result of a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The document.
    pub node: NodeId,
    /// Its name (with a suffix under [`CollisionPolicy::NewDocument`]).
    pub name: String,
    /// The version holding the content.
    pub version: u32,
    /// What happened.
    pub outcome: StoreOutcome,
}

/// A business workspace to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSpec {
    /// Workspace type name (e.g. `Supplier`).
    pub workspace_type: String,
    /// Business object id (e.g. a supplier number).
    pub business_id: String,
    /// Display name.
    pub name: String,
}

/// A workflow (or review task) to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowStart {
    /// Configured workflow name (`review` for review tasks).
    pub workflow: String,
    /// Title (subject).
    pub title: String,
    /// Message for the reviewers.
    pub comment: String,
    /// First-step assignee.
    pub assignee: Option<String>,
    /// Attached documents.
    pub documents: Vec<NodeId>,
}

/// A started workflow's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkflowId(pub i64);

/// An attribute condition in a search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeFilter {
    /// Category name.
    pub category: String,
    /// Attribute name.
    pub attribute: String,
    /// Required value (compared as text).
    pub value: String,
}

/// A search for documents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchQuery {
    /// Only below this folder (recursively).
    pub location: Option<NodeId>,
    /// Name pattern, `*` matching any run of characters.
    pub name: Option<String>,
    /// Attribute conditions, all of which must hold.
    pub attributes: Vec<AttributeFilter>,
    /// Most results returned.
    pub limit: Option<u32>,
}

/// An audit event to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// What happened (`received`, `stored`, `rejected`, `exported`…).
    pub action: String,
    /// Who did it (a user, partner or component).
    pub actor: String,
    /// The node concerned.
    pub node: Option<NodeId>,
    /// Checksum of the content concerned.
    pub sha256: Option<String>,
    /// Free detail.
    pub detail: String,
}

/// An audit event with a key that names it once and for all: see
/// [`crate::Repository::record_events`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedEvent {
    /// Unique to this event, however often it is sent.
    pub key: String,
    /// When it happened (seconds since the Unix epoch), which may be well
    /// before it is sent; 0 when unknown (then it is dated when recorded).
    #[serde(default)]
    pub at: i64,
    /// The event.
    pub event: AuditEvent,
}

/// A recorded audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number.
    pub id: i64,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// Check a node name: one segment, no control characters, not too long.
pub fn check_name(name: &str) -> crate::Result<()> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(crate::EcmError::invalid(format!("invalid name {name:?}")));
    }
    if name.chars().count() > 248 {
        return Err(crate::EcmError::invalid("name longer than 248 characters"));
    }
    if name.chars().any(|c| c.is_control() || c == ':' || c == '/') {
        return Err(crate::EcmError::invalid(format!(
            "name {name:?} contains a control character, ':' or '/'"
        )));
    }
    Ok(())
}

/// The name for the `n`th copy under [`CollisionPolicy::NewDocument`]:
/// `report.pdf` → `report (2).pdf`.
pub fn suffixed_name(name: &str, n: u32) -> String {
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{} ({n}){}", &name[..dot], &name[dot..]),
        _ => format!("{name} ({n})"),
    }
}

/// Now as RFC 3339 UTC (second precision).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc3339(secs)
}

/// Format Unix seconds as RFC 3339 UTC.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_keep_the_extension() {
        assert_eq!(suffixed_name("a.pdf", 2), "a (2).pdf");
        assert_eq!(suffixed_name("a", 3), "a (3)");
        assert_eq!(suffixed_name(".x", 2), ".x (2)");
    }

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn refuses_bad_names() {
        assert!(check_name("ok name.pdf").is_ok());
        for bad in ["", "..", "a/b", "a\nb", "a:b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
