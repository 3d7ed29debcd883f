//! Constructors and builder methods on the contract's types, so rules read
//! as sentences.

use crate::{
    AttributeValue, Category, Deferral, Filing, Grant, Principal, Rejection, Right, Target,
    Verdict, VersionPolicy, WorkflowRequest, WorkspaceRef,
};

impl Verdict {
    /// Store the file as `filing` says.
    pub fn accept(filing: Filing) -> Self {
        Verdict::Accept(filing)
    }

    /// Quarantine the file with a machine code and a human message.
    pub fn reject(code: &str, message: &str) -> Self {
        Verdict::Reject(Rejection::new(code, message))
    }

    /// Offer the file again after `retry_after_secs` seconds.
    pub fn defer(reason: &str, retry_after_secs: u32) -> Self {
        Verdict::Defer(Deferral {
            reason: reason.to_string(),
            retry_after_secs,
        })
    }

    /// Leave the file alone: it is not for this plugin.
    pub fn ignore(reason: &str) -> Self {
        Verdict::Ignore(reason.to_string())
    }
}

/// Looking at a verdict, mostly in tests: each `expect_*` method returns
/// the decision's content and panics, showing the verdict, when the decision
/// is another one.
///
/// ```
/// use wharf_sdk::prelude::*;
///
/// let verdict = Verdict::reject("bad-header", "the header is wrong");
/// assert_eq!(verdict.expect_reject().code, "bad-header");
/// ```
impl Verdict {
    /// The filing of an `accept`.
    #[track_caller]
    pub fn expect_accept(&self) -> &Filing {
        match self {
            Verdict::Accept(filing) => filing,
            other => panic!("expected an accept verdict, got {other:?}"),
        }
    }

    /// The rejection of a `reject`.
    #[track_caller]
    pub fn expect_reject(&self) -> &Rejection {
        match self {
            Verdict::Reject(rejection) => rejection,
            other => panic!("expected a reject verdict, got {other:?}"),
        }
    }

    /// The deferral of a `defer`.
    #[track_caller]
    pub fn expect_defer(&self) -> &Deferral {
        match self {
            Verdict::Defer(deferral) => deferral,
            other => panic!("expected a defer verdict, got {other:?}"),
        }
    }

    /// The reason of an `ignore`.
    #[track_caller]
    pub fn expect_ignore(&self) -> &str {
        match self {
            Verdict::Ignore(reason) => reason,
            other => panic!("expected an ignore verdict, got {other:?}"),
        }
    }
}

impl From<Rejection> for Verdict {
    fn from(rejection: Rejection) -> Self {
        Verdict::Reject(rejection)
    }
}

impl Rejection {
    /// A rejection with a machine code and a human message.
    pub fn new(code: &str, message: &str) -> Self {
        Rejection {
            code: code.to_string(),
            message: message.to_string(),
            details: Vec::new(),
        }
    }

    /// The value of the first detail named `key`.
    ///
    /// ```
    /// let r = wharf_sdk::Rejection::new("bad-row", "a row is wrong").detail("line", 7);
    /// assert_eq!(r.detail_value("line"), Some("7"));
    /// assert_eq!(r.detail_value("column"), None);
    /// ```
    pub fn detail_value(&self, key: &str) -> Option<&str> {
        self.details
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Add a key/value detail for the reviewer. The value often quotes the
    /// partner's file, so it is cut to 512 characters and its control
    /// characters are escaped: a hostile file stays a rejection, never an
    /// invalid decision.
    pub fn detail(mut self, key: &str, value: impl ToString) -> Self {
        const MAX: usize = 512;
        let raw = value.to_string();
        let mut safe = String::with_capacity(raw.len().min(MAX + 1));
        for (i, c) in raw.chars().enumerate() {
            if i == MAX {
                safe.push('…');
                break;
            }
            if c.is_control() && c != '\t' {
                safe.extend(c.escape_default());
            } else {
                safe.push(c);
            }
        }
        self.details.push((key.to_string(), safe));
        self
    }
}

impl Filing {
    /// File `name` into `folder`, a path relative to the partner's
    /// repository root. Defaults: no categories, no retention, no hold, no
    /// extra permissions, no workflow, add a version on a name collision.
    pub fn to_folder(folder: &str, name: &str) -> Self {
        Self::new(Target::Folder(folder.to_string()), name)
    }

    /// File `name` into `folder` inside the business workspace of type
    /// `workspace_type` whose business id is `business_id`.
    pub fn to_workspace(workspace_type: &str, business_id: &str, folder: &str, name: &str) -> Self {
        Self::new(
            Target::Workspace(WorkspaceRef {
                workspace_type: workspace_type.to_string(),
                business_id: business_id.to_string(),
                folder: folder.to_string(),
            }),
            name,
        )
    }

    fn new(target: Target, name: &str) -> Self {
        Filing {
            target,
            name: name.to_string(),
            description: None,
            categories: Vec::new(),
            retention: None,
            hold: None,
            permissions: Vec::new(),
            workflow: None,
            version_policy: VersionPolicy::AddVersion,
        }
    }

    /// Set the document's description.
    pub fn description(mut self, text: &str) -> Self {
        self.description = Some(text.to_string());
        self
    }

    /// Apply a category with its attributes.
    pub fn category(mut self, category: Category) -> Self {
        self.categories.push(category);
        self
    }

    /// Classify the document for records management with a retention code.
    pub fn retention(mut self, code: &str) -> Self {
        self.retention = Some(code.to_string());
        self
    }

    /// Put the document under the named legal hold.
    pub fn hold(mut self, name: &str) -> Self {
        self.hold = Some(name.to_string());
        self
    }

    /// Grant `rights` to `principal` on the document.
    pub fn grant(mut self, principal: Principal, rights: &[Right]) -> Self {
        self.permissions.push(Grant {
            principal,
            rights: rights.to_vec(),
        });
        self
    }

    /// Start the named workflow with the document attached.
    pub fn workflow(mut self, workflow: &str, comment: &str) -> Self {
        self.workflow = Some(WorkflowRequest {
            workflow: workflow.to_string(),
            comment: comment.to_string(),
            assignee: None,
        });
        self
    }

    /// Start the named workflow and assign its first step.
    pub fn workflow_for(mut self, workflow: &str, comment: &str, assignee: &str) -> Self {
        self.workflow = Some(WorkflowRequest {
            workflow: workflow.to_string(),
            comment: comment.to_string(),
            assignee: Some(assignee.to_string()),
        });
        self
    }

    /// What to do when a document of the same name exists.
    pub fn on_collision(mut self, policy: VersionPolicy) -> Self {
        self.version_policy = policy;
        self
    }

    /// The value of attribute `attribute` of category `category`, if the
    /// filing sets it.
    ///
    /// ```
    /// use wharf_sdk::{AttributeValue, Category, Filing};
    ///
    /// let filing = Filing::to_folder("Orders", "po.csv")
    ///     .category(Category::new("Order").with("Lines", 3i64));
    /// assert_eq!(filing.attribute("Order", "Lines"), Some(&AttributeValue::Integer(3)));
    /// assert_eq!(filing.attribute("Order", "Total"), None);
    /// ```
    pub fn attribute(&self, category: &str, attribute: &str) -> Option<&AttributeValue> {
        self.categories
            .iter()
            .filter(|c| c.name == category)
            .flat_map(|c| &c.attributes)
            .find(|a| a.name == attribute)
            .map(|a| &a.value)
    }
}

impl Category {
    /// An empty category named `name`.
    pub fn new(name: &str) -> Self {
        Category {
            name: name.to_string(),
            attributes: Vec::new(),
        }
    }

    /// Set attribute `name` to `value` (text, integer, boolean, or a list of
    /// texts; use [`Category::with_date`] and [`Category::with_decimal`] for
    /// dates and decimal numbers).
    pub fn with(mut self, name: &str, value: impl Into<AttributeValue>) -> Self {
        self.attributes.push(crate::Attribute {
            name: name.to_string(),
            value: value.into(),
        });
        self
    }

    /// Set attribute `name` to an exact decimal number in plain notation
    /// (`"1650.39"`); money never goes through binary floating point.
    pub fn with_decimal(self, name: &str, decimal: &str) -> Self {
        self.with(name, AttributeValue::Decimal(decimal.to_string()))
    }

    /// Set attribute `name` to an ISO 8601 date (`YYYY-MM-DD`).
    pub fn with_date(self, name: &str, date: &str) -> Self {
        self.with(name, AttributeValue::Date(date.to_string()))
    }
}

impl From<&str> for AttributeValue {
    fn from(value: &str) -> Self {
        AttributeValue::Text(value.to_string())
    }
}
impl From<String> for AttributeValue {
    fn from(value: String) -> Self {
        AttributeValue::Text(value)
    }
}
impl From<i64> for AttributeValue {
    fn from(value: i64) -> Self {
        AttributeValue::Integer(value)
    }
}
impl From<bool> for AttributeValue {
    fn from(value: bool) -> Self {
        AttributeValue::Boolean(value)
    }
}
impl From<Vec<String>> for AttributeValue {
    fn from(value: Vec<String>) -> Self {
        AttributeValue::TextList(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_quoting_hostile_content_are_bounded_and_escaped() {
        let r = Rejection::new("bad", "bad")
            .detail("found", format!("a\0b\x1b[31m{}", "x".repeat(2000)));
        let value = &r.details[0].1;
        assert!(value.starts_with("a\\u{0}b\\u{1b}[31m"), "{value}");
        assert!(value.chars().count() <= 530, "{}", value.len());
        assert!(!value.chars().any(|c| c.is_control()));
    }
}
