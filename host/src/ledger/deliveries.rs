//! Outbound deliveries in the ledger: one row per (partner, document,
//! version), so each approved version reaches each partner once.
//!
//! `claimed → decided → uploaded → done`, or `claimed → rejected → done`.
//! `decided` records the remote path the plugin chose, so a resumed
//! delivery goes to the same place even if the plugin changed meanwhile;
//! `uploaded` is committed once the partner's server holds the complete
//! file under its final name.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Ledger, LedgerError, now};

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryState {
    /// Chosen for delivery; the plugin has not named it yet.
    Claimed,
    /// Named by the plugin; the upload has not completed.
    Decided,
    /// On the partner's server; receipt pending.
    Uploaded,
    /// Refused by the plugin; exception capture pending.
    Rejected,
    /// Finished (delivered with its receipt, or refused and captured).
    Done,
}

impl DeliveryState {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Claimed => "claimed",
            DeliveryState::Decided => "decided",
            DeliveryState::Uploaded => "uploaded",
            DeliveryState::Rejected => "rejected",
            DeliveryState::Done => "done",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "claimed" => DeliveryState::Claimed,
            "decided" => DeliveryState::Decided,
            "uploaded" => DeliveryState::Uploaded,
            "rejected" => DeliveryState::Rejected,
            _ => DeliveryState::Done,
        }
    }
}

impl std::fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is delivered to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryKey {
    /// Partner id.
    pub partner: String,
    /// Repository node.
    pub node_id: u64,
    /// Version number.
    pub version: u32,
}

/// A delivery as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Delivery id.
    pub id: i64,
    /// What and to whom.
    pub key: DeliveryKey,
    /// Where it stands.
    pub state: DeliveryState,
    /// The document's name in the repository when the plugin decided on the delivery
    /// (named or refused it; until then, when it was first claimed): the receipt's,
    /// whatever the document is called later.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the version's content.
    pub sha256: Option<String>,
    /// Remote path (below the partner root), once decided.
    pub remote_path: Option<String>,
    /// Marker file written after the upload, if any.
    pub marker: Option<String>,
    /// Digest of the plugin that decided it.
    pub plugin: Option<String>,
    /// Rejection (JSON: code, message, details), when refused.
    pub reason: Option<String>,
    /// The receipt document in the repository.
    pub receipt_node: Option<u64>,
    /// The review task opened for it (rejection or overdue ack).
    pub workflow_id: Option<i64>,
    /// Times it was taken up.
    pub attempts: u32,
    /// Failed attempts.
    pub failures: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// The partner's acknowledgement: `accepted`, `partial` or `rejected`.
    pub ack_status: Option<String>,
    /// The partner's message with it.
    pub ack_message: Option<String>,
    /// When the acknowledgement arrived (Unix seconds).
    pub ack_at: Option<i64>,
    /// The acknowledgement file archived in the repository.
    pub ack_node: Option<u64>,
    /// Whether a missing acknowledgement was raised as an exception.
    pub ack_overdue: bool,
    /// When it was first taken up (Unix seconds).
    pub created_at: i64,
    /// When the upload completed (Unix seconds).
    pub uploaded_at: Option<i64>,
    /// The host the upload went to, as configured then (empty for a local folder): the
    /// receipt states it even if the partner's endpoint has changed since.
    pub endpoint_host: Option<String>,
    /// When it last changed (Unix seconds).
    pub updated_at: i64,
}

/// What [`Ledger::claim_delivery`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryClaim {
    /// Not delivered before: deliver it.
    New(Delivery),
    /// Taken up before and unfinished: resume it.
    Resume(Delivery),
    /// Finished before: leave it alone.
    Finished(Delivery),
}

const COLUMNS: &str = "id, partner, node_id, version, state, name, size, sha256, remote_path, marker, plugin, reason, receipt_node, workflow_id, attempts, failures, last_error, ack_status, ack_message, ack_at, ack_node, ack_overdue, created_at, uploaded_at, updated_at, endpoint_host";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        key: DeliveryKey {
            partner: r.get(1)?,
            node_id: r.get::<_, i64>(2)? as u64,
            version: r.get::<_, i64>(3)? as u32,
        },
        state: DeliveryState::parse(&r.get::<_, String>(4)?),
        name: r.get(5)?,
        size: r.get::<_, i64>(6)? as u64,
        sha256: r.get(7)?,
        remote_path: r.get(8)?,
        marker: r.get(9)?,
        plugin: r.get(10)?,
        reason: r.get(11)?,
        receipt_node: r.get::<_, Option<i64>>(12)?.map(|n| n as u64),
        workflow_id: r.get(13)?,
        attempts: r.get::<_, i64>(14)? as u32,
        failures: r.get::<_, i64>(15)? as u32,
        last_error: r.get(16)?,
        ack_status: r.get(17)?,
        ack_message: r.get(18)?,
        ack_at: r.get(19)?,
        ack_node: r.get::<_, Option<i64>>(20)?.map(|n| n as u64),
        ack_overdue: r.get::<_, i64>(21)? != 0,
        created_at: r.get(22)?,
        uploaded_at: r.get(23)?,
        updated_at: r.get(24)?,
        endpoint_host: r.get(25)?,
    })
}

fn get(conn: &rusqlite::Connection, id: i64) -> Result<Delivery, LedgerError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM deliveries WHERE id = ?1"))?
        .query_row(params![id], row)
        .optional()?
        .ok_or(LedgerError::Missing(id))
}

impl Ledger {
    /// Take up the delivery of `key` (a document `name` of `size` bytes).
    pub fn claim_delivery(
        &self,
        key: &DeliveryKey,
        name: &str,
        size: u64,
    ) -> Result<DeliveryClaim, LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let existing = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM deliveries WHERE partner = ?1 AND node_id = ?2 AND version = ?3"
            ))?
            .query_row(params![key.partner, key.node_id as i64, key.version], row)
            .optional()?;
        let outcome = match existing {
            Some(d) if d.state == DeliveryState::Done => DeliveryClaim::Finished(d),
            Some(d) => {
                tx.prepare_cached(
                    "UPDATE deliveries SET attempts = attempts + 1, updated_at = ?2 WHERE id = ?1",
                )?
                .execute(params![d.id, now()])?;
                DeliveryClaim::Resume(get(&tx, d.id)?)
            }
            None => {
                let t = now();
                let mut st = tx.prepare_cached(
                    "INSERT INTO deliveries (partner, node_id, version, state, name, size, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'claimed', ?4, ?5, ?6, ?6)",
                )?;
                st.execute(params![
                    key.partner,
                    key.node_id as i64,
                    key.version,
                    name,
                    size as i64,
                    t
                ])?;
                DeliveryClaim::New(get(&tx, tx.last_insert_rowid())?)
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn step(
        &self,
        id: i64,
        from: &[DeliveryState],
        to: DeliveryState,
        set: &str,
        values: &[&dyn rusqlite::ToSql],
    ) -> Result<Delivery, LedgerError> {
        let conn = self.conn();
        // One statement, committed on its own: the state is checked and
        // changed atomically, and the changed row comes back.
        let states = from
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE deliveries SET state = ?1, updated_at = ?2{set} WHERE id = ?3 AND state IN ({states}) \
             RETURNING {COLUMNS}"
        );
        let (to_s, t) = (to.as_str(), now());
        let mut all: Vec<&dyn rusqlite::ToSql> = vec![&to_s, &t, &id];
        all.extend_from_slice(values);
        let updated = conn
            .prepare_cached(&sql)?
            .query_row(all.as_slice(), row)
            .optional()?;
        let Some(d) = updated else {
            return Err(LedgerError::DeliveryStep {
                id,
                actual: get(&conn, id)?.state,
                to,
            });
        };
        drop(conn);
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if to == DeliveryState::Decided {
            // The name is on record before any byte leaves.
            self.make_durable()?;
        }
        Ok(d)
    }

    /// The plugin named the delivery of the document called `name` (as the
    /// plugin saw it): remote path and marker, decided by `plugin`, for
    /// content with this checksum.
    pub fn delivery_decided(
        &self,
        id: i64,
        name: &str,
        sha256: &str,
        remote_path: &str,
        marker: Option<&str>,
        plugin: &str,
    ) -> Result<Delivery, LedgerError> {
        self.step(
            id,
            &[DeliveryState::Claimed],
            DeliveryState::Decided,
            ", sha256 = ?4, remote_path = ?5, marker = ?6, plugin = ?7, name = ?8",
            &[&sha256, &remote_path, &marker, &plugin, &name],
        )
    }

    /// The partner's server, `host` (as its endpoint is configured now), holds the
    /// complete file.
    pub fn delivery_uploaded(&self, id: i64, host: &str) -> Result<Delivery, LedgerError> {
        let t = now();
        self.step(
            id,
            &[DeliveryState::Decided],
            DeliveryState::Uploaded,
            ", uploaded_at = ?4, endpoint_host = ?5",
            &[&t, &host],
        )
    }

    /// The plugin refused the delivery of the document called `name` (as
    /// the plugin saw it) for `reason` (JSON).
    pub fn delivery_rejected(
        &self,
        id: i64,
        name: &str,
        reason: &str,
        plugin: &str,
    ) -> Result<Delivery, LedgerError> {
        self.step(
            id,
            &[DeliveryState::Claimed],
            DeliveryState::Rejected,
            ", reason = ?4, plugin = ?5, name = ?6",
            &[&reason, &plugin, &name],
        )
    }

    /// Finished: the receipt (for a delivery) or the exception (for a
    /// rejection) is in the repository.
    pub fn delivery_done(
        &self,
        id: i64,
        receipt_node: Option<u64>,
    ) -> Result<Delivery, LedgerError> {
        let receipt = receipt_node.map(|n| n as i64);
        self.step(
            id,
            &[DeliveryState::Uploaded, DeliveryState::Rejected],
            DeliveryState::Done,
            ", receipt_node = COALESCE(?4, receipt_node)",
            &[&receipt],
        )
    }

    /// A newer version replaced the document before this one was uploaded:
    /// it will never leave.
    pub fn delivery_superseded(&self, id: i64, why: &str) -> Result<Delivery, LedgerError> {
        self.step(
            id,
            &[DeliveryState::Claimed, DeliveryState::Decided],
            DeliveryState::Done,
            ", reason = ?4",
            &[&why],
        )
    }

    /// Record a review task opened for the delivery.
    pub fn delivery_workflow(&self, id: i64, workflow_id: i64) -> Result<(), LedgerError> {
        self.conn()
            .prepare_cached(
                "UPDATE deliveries SET workflow_id = ?2, updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, workflow_id, now()])?;
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // A task is never opened twice for the same delivery.
        self.make_durable()
    }

    /// Record a failed attempt; returns the failure count.
    pub fn delivery_failed(&self, id: i64, error: &str) -> Result<u32, LedgerError> {
        let conn = self.conn();
        conn.prepare_cached(
            "UPDATE deliveries SET failures = failures + 1, last_error = ?2, updated_at = ?3 WHERE id = ?1",
        )?
        .execute(params![id, error, now()])?;
        Ok(get(&conn, id)?.failures)
    }

    /// Record the partner's acknowledgement of a delivery.
    pub fn delivery_acknowledged(
        &self,
        id: i64,
        status: &str,
        message: &str,
        ack_node: Option<u64>,
    ) -> Result<Delivery, LedgerError> {
        let conn = self.conn();
        conn.prepare_cached(
            "UPDATE deliveries SET ack_status = ?2, ack_message = ?3, ack_at = ?4, ack_node = ?5, updated_at = ?4 WHERE id = ?1",
        )?
        .execute(params![id, status, message, now(), ack_node.map(|n| n as i64)])?;
        get(&conn, id)
    }

    /// Mark a delivery's missing acknowledgement as raised.
    pub fn delivery_ack_overdue(&self, id: i64) -> Result<(), LedgerError> {
        self.conn()
            .prepare_cached("UPDATE deliveries SET ack_overdue = 1, updated_at = ?2 WHERE id = ?1")?
            .execute(params![id, now()])?;
        Ok(())
    }

    /// The delivery with this id.
    pub fn delivery(&self, id: i64) -> Result<Delivery, LedgerError> {
        get(&self.conn(), id)
    }

    /// The newest delivery of `partner` to `remote_path`.
    pub fn delivery_by_remote_path(
        &self,
        partner: &str,
        remote_path: &str,
    ) -> Result<Option<Delivery>, LedgerError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM deliveries WHERE partner = ?1 AND remote_path = ?2 ORDER BY id DESC LIMIT 1"
                ),
                params![partner, remote_path],
                row,
            )
            .optional()?)
    }

    /// The newest delivery of `partner` whose remote file is named `name`
    /// (in any folder): what an acknowledgement naming it refers to.
    pub fn delivery_by_remote_name(
        &self,
        partner: &str,
        name: &str,
    ) -> Result<Option<Delivery>, LedgerError> {
        let suffix = format!("/{name}");
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM deliveries WHERE partner = ?1 AND remote_path IS NOT NULL
                       AND (remote_path = ?2 OR substr(remote_path, -length(?3)) = ?3) ORDER BY id DESC LIMIT 1"
                ),
                params![partner, name, suffix],
                row,
            )
            .optional()?)
    }

    /// Deliveries, newest first, of one partner or all, optionally in one
    /// state; `ack` filters by acknowledgement status (`none` for those
    /// without one).
    pub fn deliveries(
        &self,
        partner: Option<&str>,
        state: Option<DeliveryState>,
        ack: Option<&str>,
    ) -> Result<Vec<Delivery>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM deliveries
             WHERE (?1 IS NULL OR partner = ?1) AND (?2 IS NULL OR state = ?2)
               AND (?3 IS NULL OR (?3 = 'none' AND ack_status IS NULL) OR ack_status = ?3)
             ORDER BY id DESC"
        ))?;
        let rows = stmt.query_map(params![partner, state.map(|s| s.as_str()), ack], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Unfinished deliveries of `partner`, oldest first.
    pub fn unfinished_deliveries(&self, partner: &str) -> Result<Vec<Delivery>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM deliveries WHERE partner = ?1 AND state <> 'done' ORDER BY id"
        ))?;
        let rows = stmt.query_map(params![partner], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deliveries of `partner` uploaded before `before` (Unix seconds) that
    /// have no acknowledgement and were not raised as overdue yet.
    pub fn awaiting_ack(&self, partner: &str, before: i64) -> Result<Vec<Delivery>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM deliveries WHERE partner = ?1 AND state = 'done' AND remote_path IS NOT NULL
               AND ack_status IS NULL AND ack_overdue = 0 AND uploaded_at < ?2 ORDER BY id"
        ))?;
        let rows = stmt.query_map(params![partner, before], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deliveries of `partner` finished in `[from, to)`: the outbound part
    /// of a day's delivery log.
    pub fn deliveries_between(
        &self,
        partner: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<Delivery>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM deliveries WHERE partner = ?1 AND state = 'done' AND updated_at >= ?2 AND updated_at < ?3 ORDER BY updated_at, id"
        ))?;
        let rows = stmt.query_map(params![partner, from, to], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(version: u32) -> DeliveryKey {
        DeliveryKey {
            partner: "globex".into(),
            node_id: 2042,
            version,
        }
    }

    #[test]
    fn a_version_is_delivered_once_and_a_new_version_again() {
        let ledger = Ledger::in_memory().unwrap();
        let DeliveryClaim::New(d) = ledger.claim_delivery(&key(1), "cat.pdf", 10).unwrap() else {
            panic!()
        };
        // Out of order is refused.
        assert!(
            ledger
                .delivery_uploaded(d.id, "sftp.globex.example")
                .is_err()
        );
        ledger
            .delivery_decided(d.id, "cat.pdf", "ab", "to-print/cat.pdf", None, "p")
            .unwrap();
        let DeliveryClaim::Resume(r) = ledger.claim_delivery(&key(1), "cat.pdf", 10).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.remote_path.as_deref(), Some("to-print/cat.pdf"));
        assert_eq!(r.attempts, 2);
        ledger
            .delivery_uploaded(d.id, "sftp.globex.example")
            .unwrap();
        let done = ledger.delivery_done(d.id, Some(77)).unwrap();
        assert_eq!(done.receipt_node, Some(77));
        assert!(matches!(
            ledger.claim_delivery(&key(1), "cat.pdf", 10).unwrap(),
            DeliveryClaim::Finished(_)
        ));
        assert!(matches!(
            ledger.claim_delivery(&key(2), "cat.pdf", 11).unwrap(),
            DeliveryClaim::New(_)
        ));
        assert!(
            ledger
                .delivery_by_remote_name("globex", "CAT.pdf")
                .unwrap()
                .is_none()
        );
        assert!(
            ledger
                .delivery_by_remote_name("globex", "at.pdf")
                .unwrap()
                .is_none()
        );
        assert_eq!(
            ledger
                .delivery_by_remote_name("globex", "cat.pdf")
                .unwrap()
                .unwrap()
                .id,
            d.id
        );
        let found = ledger
            .delivery_by_remote_path("globex", "to-print/cat.pdf")
            .unwrap()
            .unwrap();
        assert_eq!(found.id, d.id);
        ledger
            .delivery_acknowledged(d.id, "accepted", "printed", None)
            .unwrap();
        assert_eq!(
            ledger
                .deliveries(Some("globex"), None, Some("accepted"))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            ledger
                .deliveries(Some("globex"), None, Some("none"))
                .unwrap()
                .len(),
            1
        );
        assert!(ledger.awaiting_ack("globex", i64::MAX).unwrap().is_empty());
    }

    #[test]
    fn a_rejection_ends_done_with_its_reason() {
        let ledger = Ledger::in_memory().unwrap();
        let DeliveryClaim::New(d) = ledger.claim_delivery(&key(1), "cat.pdf", 10).unwrap() else {
            panic!()
        };
        ledger
            .delivery_rejected(d.id, "cat.pdf", "{\"code\":\"x\"}", "p")
            .unwrap();
        assert!(
            ledger
                .delivery_uploaded(d.id, "sftp.globex.example")
                .is_err()
        );
        let done = ledger.delivery_done(d.id, None).unwrap();
        assert_eq!(done.reason.as_deref(), Some("{\"code\":\"x\"}"));
        assert!(done.remote_path.is_none());
    }
}
