//! Looking inside an embedded repository (the `wharf ecm` commands): node
//! lookup by id or path, reports and plain-text tables.

use serde::Serialize;

use crate::embedded::{Embedded, WorkflowRecord};
use crate::types::*;
use crate::{Repository, Result};

/// Resolve `id` (digits) or a `/path/from/the/enterprise/volume`.
pub async fn resolve(repo: &Embedded, target: &str) -> Result<NodeId> {
    match target.parse::<i64>() {
        Ok(id) => Ok(repo.node(NodeId(id)).await?.id),
        Err(_) => repo.resolve_path(target).await,
    }
}

/// Stream a version's content (latest when `None`) into `out`; returns the
/// byte count.
pub async fn write_content<W: tokio::io::AsyncWrite + Unpin>(
    repo: &Embedded,
    node: NodeId,
    version: Option<u32>,
    out: &mut W,
) -> Result<u64> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let mut s = repo.download(node, version).await?;
    let mut n = 0u64;
    while let Some(chunk) = s.next().await {
        let chunk = chunk?;
        out.write_all(&chunk).await?;
        n += chunk.len() as u64;
    }
    out.flush().await?;
    Ok(n)
}

/// Everything known about one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// Metadata.
    pub node: Node,
    /// Path from the Enterprise volume.
    pub path: String,
    /// Versions (documents).
    pub versions: Vec<Version>,
    /// Categories.
    pub categories: Vec<Category>,
    /// Permissions.
    pub permissions: Vec<Grant>,
    /// RM classification.
    pub rm_class: Option<String>,
    /// Legal holds.
    pub holds: Vec<String>,
}

/// Build the report of a node.
pub async fn report(repo: &Embedded, node: NodeId) -> Result<NodeReport> {
    Ok(NodeReport {
        node: repo.node(node).await?,
        path: repo.path_of(node).await?,
        versions: repo.versions(node).await?,
        categories: repo.categories(node).await?,
        permissions: repo.permissions(node).await?,
        rm_class: repo.rm_class(node).await?,
        holds: repo.holds(node).await?,
    })
}

/// Format rows as an aligned text table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn kind(k: NodeKind) -> String {
    match k {
        NodeKind::Folder => "folder".into(),
        NodeKind::Document => "document".into(),
        NodeKind::Workspace => "workspace".into(),
        NodeKind::Volume => "volume".into(),
        NodeKind::Other(n) => format!("type {n}"),
    }
}

/// A table of nodes.
pub fn nodes_table(nodes: &[Node]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                kind(n.kind),
                n.size.map(|s| s.to_string()).unwrap_or_default(),
                n.versions.map(|v| v.to_string()).unwrap_or_default(),
                n.modified.clone(),
                n.name.clone(),
            ]
        })
        .collect();
    table(
        &["ID", "KIND", "SIZE", "VERSIONS", "MODIFIED", "NAME"],
        &rows,
    )
}

/// A node report as text.
pub fn report_text(r: &NodeReport) -> String {
    let n = &r.node;
    let mut s = format!(
        "id:          {}\npath:        {}\nkind:        {}\ncreated:     {}\nmodified:    {}\n",
        n.id,
        r.path,
        kind(n.kind),
        n.created,
        n.modified
    );
    if let Some(d) = &n.description {
        s.push_str(&format!("description: {d}\n"));
    }
    s.push_str(&format!(
        "rm class:    {}\nholds:       {}\n",
        r.rm_class.as_deref().unwrap_or("-"),
        if r.holds.is_empty() {
            "-".to_string()
        } else {
            r.holds.join(", ")
        }
    ));
    if !r.versions.is_empty() {
        s.push_str("\nversions:\n");
        let rows: Vec<Vec<String>> = r
            .versions
            .iter()
            .map(|v| {
                vec![
                    v.number.to_string(),
                    v.size.to_string(),
                    v.mime_type.clone(),
                    v.created.clone(),
                    v.sha256.clone().unwrap_or_default(),
                ]
            })
            .collect();
        s.push_str(&table(
            &["VERSION", "SIZE", "MIME", "CREATED", "SHA256"],
            &rows,
        ));
    }
    if !r.categories.is_empty() {
        s.push_str("\ncategories:\n");
        let rows: Vec<Vec<String>> = r
            .categories
            .iter()
            .flat_map(|c| {
                c.attributes
                    .iter()
                    .map(|a| vec![c.name.clone(), a.name.clone(), a.value.as_text()])
            })
            .collect();
        s.push_str(&table(&["CATEGORY", "ATTRIBUTE", "VALUE"], &rows));
    }
    if !r.permissions.is_empty() {
        s.push_str("\npermissions:\n");
        let rows: Vec<Vec<String>> = r
            .permissions
            .iter()
            .map(|g| {
                let who = match &g.principal {
                    Principal::Owner => "owner".to_string(),
                    Principal::OwnerGroup => "owner group".to_string(),
                    Principal::Public => "public".to_string(),
                    Principal::User(u) => format!("user {u}"),
                    Principal::Group(g) => format!("group {g}"),
                };
                let rights: Vec<&str> = g.rights.iter().map(|r| r.as_str()).collect();
                vec![who, rights.join(",")]
            })
            .collect();
        s.push_str(&table(&["WHO", "RIGHTS"], &rows));
    }
    s
}

/// A table of workflows and review tasks.
pub fn tasks_table(w: &[WorkflowRecord]) -> String {
    let rows: Vec<Vec<String>> = w
        .iter()
        .map(|t| {
            let docs: Vec<String> = t.documents.iter().map(|d| d.to_string()).collect();
            vec![
                t.id.0.to_string(),
                t.workflow.clone(),
                t.status.clone(),
                t.created.clone(),
                docs.join(","),
                t.assignee.clone().unwrap_or_default(),
                t.title.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "WORKFLOW",
            "STATUS",
            "CREATED",
            "DOCUMENTS",
            "ASSIGNEE",
            "TITLE",
        ],
        &rows,
    )
}

/// A table of audit events.
pub fn audit_table(events: &[AuditRecord]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.at.clone(),
                e.event.action.clone(),
                e.event.actor.clone(),
                e.event.node.map(|n| n.to_string()).unwrap_or_default(),
                e.event
                    .sha256
                    .as_deref()
                    .map(|s| s[..s.len().min(12)].to_string())
                    .unwrap_or_default(),
                e.event.detail.clone(),
            ]
        })
        .collect();
    table(
        &["ID", "AT", "ACTION", "ACTOR", "NODE", "SHA256", "DETAIL"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
