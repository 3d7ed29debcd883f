//! The transfer archive's delivery log: one CSV document per partner and
//! day listing every file received and every document delivered that day
//! (name, size, SHA-256, times, outcome, repository node, acknowledgement
//! or reason), itself filed into the repository under
//! `<partner root>/Delivery Logs/<year>/`. Each rewrite during the day adds
//! a version; a rewrite with nothing new is recognised by its checksum and
//! stores nothing.

use sha2::{Digest, Sha256};
use wharf_ecm::{self as ecm, NodeId, Repository};

use crate::config::PartnerConfig;
use crate::ledger::{Claim, Delivery, Ledger};
use crate::plugin::decision::relative_path;

/// The folder, below the partner's repository root, holding delivery logs.
pub const DELIVERY_LOGS_FOLDER: &str = "Delivery Logs";
/// The category on every delivery log.
pub const DELIVERY_LOG_CATEGORY: &str = "wharf Delivery Log";

const DAY: i64 = 86_400;

/// The start (Unix seconds, UTC midnight) of the day holding `secs`.
pub fn day_start(secs: i64) -> i64 {
    secs.div_euclid(DAY) * DAY
}

/// The log's CSV text for these inbound claims and outbound deliveries.
pub fn render(claims: &[Claim], deliveries: &[Delivery]) -> String {
    let mut out = String::from(
        "direction,id,file,size,sha256,started,finished,outcome,node_id,code,message\n",
    );
    for c in claims {
        let (code, message) = match c.reason.as_deref() {
            Some(r) => match serde_json::from_str::<serde_json::Value>(r) {
                Ok(v) => (
                    v["code"].as_str().unwrap_or("").to_string(),
                    v["message"].as_str().unwrap_or("").to_string(),
                ),
                Err(_) => (String::new(), r.to_string()),
            },
            None => Default::default(),
        };
        let fields = [
            "in".to_string(),
            c.id.to_string(),
            c.key.path.clone(),
            c.key.size.to_string(),
            c.sha256.clone().unwrap_or_default(),
            ecm::rfc3339(c.created_at),
            ecm::rfc3339(c.updated_at),
            c.outcome.clone().unwrap_or_default(),
            c.node_id.map(|n| n.to_string()).unwrap_or_default(),
            code,
            message,
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    for d in deliveries {
        let reason: serde_json::Value = d
            .reason
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default();
        let (outcome, code, message) = if d.remote_path.is_some() {
            (
                "delivered",
                d.ack_status.clone().unwrap_or_else(|| "no-ack".into()),
                d.ack_message.clone().unwrap_or_default(),
            )
        } else {
            (
                "refused",
                reason["code"].as_str().unwrap_or("").to_string(),
                reason["message"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| d.reason.clone())
                    .unwrap_or_default(),
            )
        };
        let fields = [
            "out".to_string(),
            d.id.to_string(),
            d.remote_path.clone().unwrap_or_else(|| d.name.clone()),
            d.size.to_string(),
            d.sha256.clone().unwrap_or_default(),
            ecm::rfc3339(d.created_at),
            ecm::rfc3339(d.uploaded_at.unwrap_or(d.updated_at)),
            outcome.to_string(),
            d.key.node_id.to_string(),
            code,
            message,
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// One CSV field, quoted when needed; a leading formula character is
/// neutralised so a spreadsheet never evaluates a partner's file name.
fn csv_field(f: &str) -> String {
    let f: String = f
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let f = if f.starts_with(['=', '+', '-', '@']) {
        format!("'{f}")
    } else {
        f
    };
    if f.contains([',', '"']) || f.starts_with(' ') || f.ends_with(' ') {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f
    }
}

/// Write (or update) the delivery log of `partner` for the UTC day starting
/// at `day`. Returns the log's node, or `None` when nothing finished that
/// day.
pub async fn write<R: Repository>(
    repo: &R,
    ledger: &Ledger,
    partner: &PartnerConfig,
    repository_root: NodeId,
    day: i64,
) -> Result<Option<NodeId>, String> {
    let claims = ledger
        .finished_between(&partner.id, day, day + DAY)
        .map_err(|e| e.to_string())?;
    let deliveries = ledger
        .deliveries_between(&partner.id, day, day + DAY)
        .map_err(|e| e.to_string())?;
    if claims.is_empty() && deliveries.is_empty() {
        return Ok(None);
    }
    let date = &ecm::rfc3339(day)[..10];
    let mut folder = relative_path(&partner.ecm_root())
        .map(|p| p.segments().to_vec())
        .map_err(|e| format!("ecm_root: {e}"))?;
    folder.push(DELIVERY_LOGS_FOLDER.into());
    folder.push(date[..4].to_string());
    let parent = repo
        .ensure_folder(repository_root, &folder)
        .await
        .map_err(|e| e.to_string())?;
    let text = render(&claims, &deliveries);
    let count = |o: &str| {
        claims
            .iter()
            .filter(|c| c.outcome.as_deref() == Some(o))
            .count()
    };
    let attr = |name: &str, value: ecm::AttributeValue| ecm::Attribute {
        name: name.into(),
        value,
    };
    let doc = ecm::NewDocument {
        parent,
        name: format!("{}-{date}.csv", partner.id),
        description: Some(format!(
            "Transfers of {} on {date}: {} filed, {} quarantined, {} delivered",
            partner.id,
            count("filed"),
            count("quarantined"),
            deliveries.len()
        )),
        mime_type: "text/csv".into(),
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        categories: vec![ecm::Category {
            name: DELIVERY_LOG_CATEGORY.into(),
            attributes: vec![
                attr("Partner", ecm::AttributeValue::Text(partner.id.clone())),
                attr("Day", ecm::AttributeValue::Date(date.to_string())),
                attr("Files", ecm::AttributeValue::Integer(claims.len() as i64)),
                attr(
                    "Deliveries",
                    ecm::AttributeValue::Integer(deliveries.len() as i64),
                ),
                attr("Filed", ecm::AttributeValue::Integer(count("filed") as i64)),
                attr(
                    "Quarantined",
                    ecm::AttributeValue::Integer(count("quarantined") as i64),
                ),
            ],
        }],
        policy: ecm::CollisionPolicy::AddVersion,
    };
    let stored = repo
        .store_document(&doc, &ecm::BytesSource(text.into_bytes().into()))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(stored.node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{ClaimOutcome, FileKey, State};

    #[test]
    fn fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_field("plain.csv"), "plain.csv");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(x)"), "'=HYPERLINK(x)");
        assert_eq!(csv_field("line\nbreak"), "line break");
    }

    #[tokio::test]
    async fn a_day_of_deliveries_is_filed_once_and_versioned_when_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) = ecm::embedded::Embedded::open(dir.path().join("ecm"))
            .await
            .unwrap();
        let ledger = Ledger::in_memory().unwrap();
        let partner: PartnerConfig =
            toml::from_str("id = \"acme\"\nplugin = \"p.wasm\"\nendpoint = \"file:///tmp\"")
                .unwrap();
        let claim = |path: &str| match ledger
            .claim(&FileKey {
                partner: "acme".into(),
                path: path.into(),
                size: 10,
                mtime: 1,
            })
            .unwrap()
        {
            ClaimOutcome::New(c) => c,
            other => panic!("{other:?}"),
        };
        let a = claim("inbox/a.csv");
        ledger.transferred(a.id, &"ab".repeat(32)).unwrap();
        ledger.filed(a.id, 77, "p").unwrap();
        let a = ledger.done(a.id, State::Filed).unwrap();
        let today = day_start(a.updated_at);
        let root = NodeId::ENTERPRISE;
        let node = write(&repo, &ledger, &partner, root, today)
            .await
            .unwrap()
            .expect("a log");
        // Nothing new: no new version.
        write(&repo, &ledger, &partner, root, today).await.unwrap();
        assert_eq!(repo.versions(node).await.unwrap().len(), 1);
        let b = claim("inbox/=bad,name.csv");
        ledger
            .quarantined(
                b.id,
                State::Claimed,
                r#"{"code":"bad-header","message":"no header","details":[]}"#,
            )
            .unwrap();
        ledger.done(b.id, State::Quarantined).unwrap();
        let again = write(&repo, &ledger, &partner, root, today)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, node);
        assert_eq!(repo.versions(node).await.unwrap().len(), 2);
        let text = String::from_utf8(
            ecm::collect(repo.download(node, None).await.unwrap())
                .await
                .unwrap(),
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].starts_with("in,")
                && lines[1].contains("inbox/a.csv,10,")
                && lines[1].contains(",filed,77,")
        );
        assert!(
            lines[2].contains("\"inbox/=bad,name.csv\"")
                && lines[2].contains("bad-header,no header")
        );
        let path = repo.path_of(node).await.unwrap();
        assert!(path.contains("Partners/acme/Delivery Logs/"), "{path}");
        // Another day has nothing.
        assert!(
            write(&repo, &ledger, &partner, root, today + DAY)
                .await
                .unwrap()
                .is_none()
        );
    }
}
