//! Globex's print rules: outbound deliveries, acknowledgements and returned
//! corrections (see README.md).

use wharf_sdk::prelude::*;

/// The category and attribute carrying the print job number.
const PRINT: &str = "Print";
const JOB: &str = "Job";
/// The remote folder deliveries go to.
const TO_PRINT: &str = "to-print";

struct GlobexPrint;

/// The job number of a document, from its `Print` category.
fn job_of(categories: &[Category]) -> Option<String> {
    categories
        .iter()
        .filter(|c| c.name == PRINT)
        .flat_map(|c| c.attributes.iter())
        .find(|a| a.name == JOB)
        .and_then(|a| match &a.value {
            AttributeValue::Text(t) if !t.is_empty() => Some(t.clone()),
            AttributeValue::Integer(n) => Some(n.to_string()),
            _ => None,
        })
}

/// Globex's name for a delivery.
pub fn delivered_name(job: &str, version: u32, name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("GLOBEX_{job}_v{version}_{safe}")
}

/// Split a delivered name back into (job, version, name).
pub fn parse_delivered(name: &str) -> Option<(String, u32, String)> {
    let rest = name.strip_prefix("GLOBEX_")?;
    let (job, rest) = rest.split_once("_v")?;
    let (version, original) = rest.split_once('_')?;
    if job.is_empty()
        || original.is_empty()
        || !job.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return None;
    }
    Some((job.to_string(), version.parse().ok()?, original.to_string()))
}

/// Read an acknowledgement's first line.
pub fn parse_ack(first_line: &str) -> Option<(AckStatus, String)> {
    let line = first_line.trim();
    let (word, message) = match line.split_once(':') {
        Some((w, m)) => (w.trim(), m.trim().to_string()),
        None => (line, String::new()),
    };
    let status = match word.to_ascii_uppercase().as_str() {
        "ACCEPTED" | "OK" => AckStatus::Accepted,
        "PARTIAL" => AckStatus::Partial,
        "REJECTED" => AckStatus::Rejected,
        _ => return None,
    };
    Some((status, message))
}

impl Plugin for GlobexPrint {
    fn on_export(doc: DocumentInfo, content: &Content) -> Result<Delivery, Rejection> {
        let Some(job) = job_of(&doc.categories) else {
            return Err(Rejection::new(
                "missing-job",
                "the document has no Print/Job number; Globex cannot route it",
            ));
        };
        let mut head = [0u8; 5];
        let n = std::io::Read::read(&mut content.reader(), &mut head).unwrap_or(0);
        if doc.mime_type != "application/pdf" || &head[..n] != b"%PDF-" {
            return Err(Rejection::new("not-a-pdf", "Globex prints PDF files only")
                .detail("mime-type", &doc.mime_type));
        }
        let name = delivered_name(&job, doc.version, &doc.name);
        let marker =
            (host::setting("marker").as_deref() == Some("yes")).then(|| format!("{name}.ready"));
        Ok(Delivery {
            folder: TO_PRINT.to_string(),
            name,
            marker,
        })
    }

    fn on_ack(file: FileInfo, content: &Content) -> AckMatch {
        let Some(delivered) = file.name.strip_suffix(".ack") else {
            return AckMatch::NotAnAck;
        };
        let first = wharf_sdk::read::lines(content.reader()).next();
        match first.and_then(|l| l.ok()).as_deref().and_then(parse_ack) {
            Some((status, message)) => AckMatch::Acknowledged(Acknowledgement {
                delivered_name: delivered.to_string(),
                status,
                message,
            }),
            None => AckMatch::Invalid(
                Rejection::new(
                    "unreadable-ack",
                    "the first line is not ACCEPTED, PARTIAL: <why> or REJECTED: <why>",
                )
                .detail("file", &file.name),
            ),
        }
    }

    fn on_file(file: FileInfo, _content: &Content) -> Verdict {
        let Some((job, version, original)) = parse_delivered(&file.name) else {
            return Verdict::reject(
                "bad-name",
                "Globex returns files under the name they were delivered with",
            );
        };
        let found = host::search(&host::SearchQuery {
            folder: None,
            name: None,
            conditions: vec![host::Condition {
                category: PRINT.into(),
                attribute: JOB.into(),
                value: job.clone(),
            }],
            limit: 10,
        });
        let docs = match found {
            Ok(docs) => docs,
            Err(e) => return Verdict::defer(&format!("repository search failed: {e:?}"), 60),
        };
        let Some(doc) = docs
            .into_iter()
            .find(|d| delivered_name(&job, version, &d.name) == file.name || d.name == original)
        else {
            return Rejection::new("unknown-job", "no document carries this print job")
                .detail("job", &job)
                .into();
        };
        let filing = Filing::to_folder(&doc.folder, &doc.name)
            .description(&format!(
                "Correction returned by Globex for version {version}"
            ))
            .category(Category::new(PRINT).with(JOB, job.as_str()))
            .on_collision(VersionPolicy::AddVersion)
            .workflow(
                "review",
                &format!("Globex returned a corrected {} (job {job})", doc.name),
            );
        Verdict::accept(filing)
    }
}

wharf_sdk::export!(GlobexPrint);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = delivered_name("J-100", 3, "Spring catalog.pdf");
        assert_eq!(n, "GLOBEX_J-100_v3_Spring_catalog.pdf");
        assert_eq!(
            parse_delivered(&n),
            Some(("J-100".into(), 3, "Spring_catalog.pdf".into()))
        );
        assert_eq!(parse_delivered("catalog.pdf"), None);
        assert_eq!(parse_delivered("GLOBEX__v1_x.pdf"), None);
    }

    #[test]
    fn acks_are_read() {
        assert!(matches!(parse_ack("ACCEPTED"), Some((AckStatus::Accepted, m)) if m.is_empty()));
        assert!(
            matches!(parse_ack("rejected: bleed too small"), Some((AckStatus::Rejected, m)) if m == "bleed too small")
        );
        assert!(matches!(
            parse_ack("PARTIAL: 2 pages"),
            Some((AckStatus::Partial, _))
        ));
        assert!(parse_ack("maybe").is_none());
    }
}
