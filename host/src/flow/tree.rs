//! Walking the repository's folder tree without changing it: shared by the
//! plugins' scoped repository look-ups and the outbound release's scope.

use wharf_ecm::{NodeId, Repository};

/// Most parent steps taken when walking up from a node; deeper trees (or a
/// cycle a broken server might report) count as "not inside".
pub const MAX_PARENT_STEPS: usize = 1024;

/// The container at `path` below `base`, found by walking children by name
/// (nothing is created); `None` when a segment is missing or is not a
/// container.
pub async fn find_folder<R: Repository>(
    repo: &R,
    base: NodeId,
    path: &[String],
) -> wharf_ecm::Result<Option<NodeId>> {
    let mut cur = base;
    for seg in path {
        let children = repo.children(cur).await?;
        match children
            .into_iter()
            .find(|c| &c.name == seg && c.kind.is_container())
        {
            Some(child) => cur = child.id,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

/// Whether `node` is `ancestor` or lies below it.
pub async fn is_within<R: Repository>(
    repo: &R,
    node: NodeId,
    ancestor: NodeId,
) -> wharf_ecm::Result<bool> {
    let mut cur = node;
    for _ in 0..MAX_PARENT_STEPS {
        if cur == ancestor {
            return Ok(true);
        }
        match repo.node(cur).await?.parent {
            Some(parent) => cur = parent,
            None => return Ok(false),
        }
    }
    Ok(false)
}
