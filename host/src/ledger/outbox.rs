//! Audit events waiting for the repository. An event that must not be lost
//! is written into the ledger in the same transaction as the step it tells
//! of, then sent to the repository in batches ([`Ledger::outbox`],
//! [`Ledger::outbox_sent`]). Each carries a key of its own, so a batch sent
//! again after a crash records nothing twice where the repository keeps
//! keys.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};
use wharf_ecm::{AuditEvent, KeyedEvent, NodeId};

use super::{Claim, Ledger, LedgerError, State};

/// An event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its place in the outbox.
    pub id: i64,
    /// The event and its key.
    pub event: KeyedEvent,
}

/// Put `event` of `claim` into the outbox within the open transaction `tx`.
fn enqueue(tx: &Connection, claim: &Claim, event: &AuditEvent) -> Result<(), LedgerError> {
    // The claim names the file in this ledger; the time tells this ledger
    // from an earlier one at the same path whose claim ids started over.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let key = format!("ledger claim {} {} {nanos}", claim.id, event.action);
    tx.prepare_cached(
        "INSERT INTO outbox (partner, event_key, action, actor, node, sha256, detail, at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        claim.key.partner,
        key,
        event.action,
        event.actor,
        event.node.map(|n| n.0),
        event.sha256,
        event.detail,
        super::now()
    ])?;
    Ok(())
}

impl Ledger {
    /// [`Ledger::done`], with `event` put into the outbox in the same
    /// commit: the event is recorded exactly when the step is.
    pub fn done_recorded(
        &self,
        id: i64,
        from: State,
        event: &AuditEvent,
    ) -> Result<Claim, LedgerError> {
        let outcome = if from == State::Filed {
            "filed"
        } else {
            "quarantined"
        };
        self.advance_then(
            id,
            from,
            State::Done,
            ", outcome = ?5",
            &[&outcome],
            Some(&|tx, claim| enqueue(tx, claim, event)),
        )
    }

    /// Up to `limit` of `partner`'s waiting events, oldest first.
    pub fn outbox(&self, partner: &str, limit: usize) -> Result<Vec<Outgoing>, LedgerError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT id, event_key, action, actor, node, sha256, detail, at FROM outbox \
             WHERE partner = ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = st.query_map(params![partner, limit as i64], |r| {
            Ok(Outgoing {
                id: r.get(0)?,
                event: KeyedEvent {
                    key: r.get(1)?,
                    at: r.get(7)?,
                    event: AuditEvent {
                        action: r.get(2)?,
                        actor: r.get(3)?,
                        node: r.get::<_, Option<i64>>(4)?.map(NodeId),
                        sha256: r.get(5)?,
                        detail: r.get(6)?,
                    },
                },
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The partners with events waiting.
    pub fn outbox_partners(&self) -> Result<Vec<String>, LedgerError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT DISTINCT partner FROM outbox ORDER BY partner")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The events `ids` are recorded in the repository: out of the outbox.
    pub fn outbox_sent(&self, ids: &[i64]) -> Result<(), LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
            for id in ids {
                st.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{ClaimOutcome, FileKey};

    fn filed(ledger: &Ledger, path: &str) -> Claim {
        let key = FileKey {
            partner: "acme".into(),
            path: path.into(),
            size: 10,
            mtime: 1,
        };
        let ClaimOutcome::New(c) = ledger.claim(&key).unwrap() else {
            panic!("not new")
        };
        ledger.transferred(c.id, "ab").unwrap();
        ledger.filed(c.id, 7, "p").unwrap()
    }

    fn event(detail: &str) -> AuditEvent {
        AuditEvent {
            action: "filed".into(),
            actor: "partner:acme".into(),
            node: Some(NodeId(7)),
            sha256: Some("ab".into()),
            detail: detail.into(),
        }
    }

    #[test]
    fn an_event_waits_with_its_step_until_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let (a, b) = {
            let ledger = Ledger::open(&path).unwrap();
            let a = filed(&ledger, "in/a");
            let b = filed(&ledger, "in/b");
            ledger
                .done_recorded(a.id, State::Filed, &event("a"))
                .unwrap();
            ledger
                .done_recorded(b.id, State::Filed, &event("b"))
                .unwrap();
            (a.id, b.id)
        };
        // Reopened as after a crash: both wait, oldest first, keyed apart.
        let ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.get(a).unwrap().state, State::Done);
        let out = ledger.outbox("acme", 10).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].event.event, event("a"));
        assert_eq!(out[1].event.event.detail, "b");
        assert_ne!(out[0].event.key, out[1].event.key);
        assert!(out[0].event.key.contains(&format!("claim {a} filed")));
        assert!(ledger.outbox("other", 10).unwrap().is_empty());
        assert_eq!(ledger.outbox_partners().unwrap(), ["acme"]);
        assert_eq!(ledger.outbox("acme", 1).unwrap(), out[..1]);
        ledger.outbox_sent(&[out[0].id]).unwrap();
        assert_eq!(ledger.outbox("acme", 10).unwrap(), out[1..]);
        assert_eq!(ledger.get(b).unwrap().outcome.as_deref(), Some("filed"));
    }

    #[test]
    fn a_step_whose_event_fails_is_not_taken() {
        let ledger = Ledger::in_memory().unwrap();
        let a = filed(&ledger, "in/a");
        ledger.conn().execute_batch("DROP TABLE outbox").unwrap();
        assert!(
            ledger
                .done_recorded(a.id, State::Filed, &event("a"))
                .is_err()
        );
        assert_eq!(ledger.get(a.id).unwrap().state, State::Filed);
    }

    #[test]
    fn a_refused_step_leaves_no_event() {
        let ledger = Ledger::in_memory().unwrap();
        let a = filed(&ledger, "in/a");
        ledger
            .done_recorded(a.id, State::Filed, &event("a"))
            .unwrap();
        // Done already: the second step is refused, and so is its event.
        assert!(
            ledger
                .done_recorded(a.id, State::Filed, &event("again"))
                .is_err()
        );
        let out = ledger.outbox("acme", 10).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].event.event.detail, "a");
    }
}
