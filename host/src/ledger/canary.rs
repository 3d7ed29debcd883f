//! Shadow verdicts of candidate plugin builds: for a share of a partner's
//! files the candidate decides too, and its verdict is recorded beside the
//! live one so disagreements are known before the candidate is promoted.

use rusqlite::params;
use serde::Serialize;

use super::{Ledger, LedgerError, now};

/// One shadow decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanaryRecord {
    /// The claim of the file decided.
    pub claim: i64,
    /// Partner id.
    pub partner: String,
    /// Path of the file.
    pub path: String,
    /// Digest of the live build.
    pub live: String,
    /// Digest of the candidate build.
    pub candidate: String,
    /// Whether both gave the same verdict.
    pub agree: bool,
    /// The live verdict (JSON).
    pub live_verdict: String,
    /// The candidate's verdict (JSON), or its failure.
    pub candidate_verdict: String,
    /// When (Unix seconds).
    pub at: i64,
}

/// How a candidate did against the live build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanarySummary {
    /// Candidate digest.
    pub candidate: String,
    /// Files both decided.
    pub decided: u64,
    /// Of which the verdicts differed.
    pub disagreed: u64,
    /// The latest disagreements, newest first (at most 20).
    pub disagreements: Vec<CanaryRecord>,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CanaryRecord> {
    Ok(CanaryRecord {
        claim: r.get(0)?,
        partner: r.get(1)?,
        path: r.get(2)?,
        live: r.get(3)?,
        candidate: r.get(4)?,
        agree: r.get::<_, i64>(5)? != 0,
        live_verdict: r.get(6)?,
        candidate_verdict: r.get(7)?,
        at: r.get(8)?,
    })
}

impl Ledger {
    /// Record a shadow decision.
    pub fn record_canary(&self, r: &CanaryRecord) -> Result<(), LedgerError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "INSERT INTO canary (claim, partner, path, live, candidate, agree, live_verdict, candidate_verdict, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        st.execute(params![
            r.claim,
            r.partner,
            r.path,
            r.live,
            r.candidate,
            i64::from(r.agree),
            r.live_verdict,
            r.candidate_verdict,
            now()
        ])?;
        Ok(())
    }

    /// How each candidate of `partner` did, newest candidate first.
    pub fn canary_summary(&self, partner: &str) -> Result<Vec<CanarySummary>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT candidate, COUNT(*), SUM(1 - agree), MAX(id) FROM canary WHERE partner = ?1
             GROUP BY candidate ORDER BY MAX(id) DESC",
        )?;
        let totals: Vec<(String, i64, i64)> = stmt
            .query_map(params![partner], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for (candidate, decided, disagreed) in totals {
            let mut stmt = conn.prepare_cached(
                "SELECT claim, partner, path, live, candidate, agree, live_verdict, candidate_verdict, at
                 FROM canary WHERE partner = ?1 AND candidate = ?2 AND agree = 0 ORDER BY id DESC LIMIT 20",
            )?;
            let disagreements = stmt
                .query_map(params![partner, candidate], row)?
                .collect::<Result<_, _>>()?;
            out.push(CanarySummary {
                candidate,
                decided: decided as u64,
                disagreed: disagreed as u64,
                disagreements,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disagreements_are_counted_per_candidate() {
        let ledger = Ledger::in_memory().unwrap();
        let rec = |claim: i64, candidate: &str, agree: bool| CanaryRecord {
            claim,
            partner: "acme".into(),
            path: format!("inbox/{claim}.csv"),
            live: "live".into(),
            candidate: candidate.into(),
            agree,
            live_verdict: "{\"verdict\":\"accept\"}".into(),
            candidate_verdict: if agree {
                "{\"verdict\":\"accept\"}"
            } else {
                "{\"verdict\":\"reject\"}"
            }
            .into(),
            at: 0,
        };
        for (i, agree) in [true, false, true, false].into_iter().enumerate() {
            ledger.record_canary(&rec(i as i64, "c1", agree)).unwrap();
        }
        ledger.record_canary(&rec(9, "c2", true)).unwrap();
        let summary = ledger.canary_summary("acme").unwrap();
        assert_eq!(summary.len(), 2);
        assert_eq!(summary[0].candidate, "c2");
        let c1 = &summary[1];
        assert_eq!((c1.decided, c1.disagreed), (4, 2));
        assert_eq!(c1.disagreements[0].claim, 3);
        assert!(ledger.canary_summary("other").unwrap().is_empty());
    }
}
