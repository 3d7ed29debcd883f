//! Northwind's quality-certificate rules.
//!
//! Northwind submits certificates named `QC_<supplier-no>_<type>_<reference>.<pdf|xml>`
//! where `<type>` is `COA` (certificate of analysis), `COC` (certificate of
//! conformity) or `MSDS` (safety data sheet). A PDF must start with a PDF
//! header and end with an end-of-file marker; an XML file must be well-formed
//! with a `certificate` root element. Accepted certificates are filed into the
//! supplier's business workspace under `Quality/<type>`, classified with the
//! retention code from the `retention` setting (default `QA-10Y`) and routed
//! into the `quality-review` workflow, assigned to the `reviewer` setting when
//! set.

use std::io::Read;

use wharf_sdk::pattern::NamePattern;
use wharf_sdk::prelude::*;

struct NorthwindQuality;

impl Plugin for NorthwindQuality {
    fn on_file(file: FileInfo, content: &Content) -> Verdict {
        let name = match parse_name(&file.name) {
            Ok(name) => name,
            Err(rejection) => return rejection.into(),
        };
        let check = match name.format {
            Format::Pdf => check_pdf(content.reader(), content.size()),
            Format::Xml => {
                wharf_sdk::xml::require_root(content.reader(), "certificate").map(|_| ())
            }
        };
        if let Err(rejection) = check {
            return rejection.into();
        }
        Verdict::accept(filing(&file.name, &name))
    }
}

wharf_sdk::export!(NorthwindQuality);

/// The certificate's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A PDF document.
    Pdf,
    /// An XML certificate.
    Xml,
}

/// What the file name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateName {
    /// Supplier number (the business id of the supplier workspace).
    pub supplier: String,
    /// Certificate type: COA, COC or MSDS.
    pub kind: String,
    /// The supplier's reference (lot, batch or order).
    pub reference: String,
    /// File format.
    pub format: Format,
}

/// Parse `QC_<supplier-no>_<type>_<reference>.<pdf|xml>`.
pub fn parse_name(file_name: &str) -> Result<CertificateName, Rejection> {
    let pattern = NamePattern::new(
        r"QC_(?P<supplier>\d{4,10})_(?P<kind>[A-Z]+)_(?P<reference>[A-Za-z0-9-]{1,40})\.(?P<ext>pdf|xml|PDF|XML)",
    )
    .expect("the certificate pattern compiles");
    let caps = pattern.captures(file_name).ok_or_else(|| {
        Rejection::new(
            "bad-name",
            "the file name is not QC_<supplier-no>_<type>_<reference>.pdf|xml",
        )
        .detail("name", file_name)
    })?;
    let kind = caps.get("kind").unwrap_or_default();
    if !matches!(kind, "COA" | "COC" | "MSDS") {
        return Err(Rejection::new(
            "unknown-certificate-type",
            "the certificate type must be COA, COC or MSDS",
        )
        .detail("type", kind));
    }
    let format = if caps
        .get("ext")
        .unwrap_or_default()
        .eq_ignore_ascii_case("pdf")
    {
        Format::Pdf
    } else {
        Format::Xml
    };
    Ok(CertificateName {
        supplier: caps.get("supplier").unwrap_or_default().to_string(),
        kind: kind.to_string(),
        reference: caps.get("reference").unwrap_or_default().to_string(),
        format,
    })
}

/// A PDF starts with `%PDF-` and has `%%EOF` in its last kilobyte. The whole
/// stream is read, keeping only the tail.
pub fn check_pdf(mut reader: impl Read, size: u64) -> Result<(), Rejection> {
    const TAIL: usize = 1024;
    let mut head = [0u8; 5];
    if size < 16 || reader.read_exact(&mut head).is_err() || &head != b"%PDF-" {
        return Err(Rejection::new(
            "not-pdf",
            "the file does not start with a PDF header",
        ));
    }
    let mut tail: Vec<u8> = Vec::with_capacity(2 * TAIL);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).map_err(|e| {
            Rejection::new("unreadable", "the content cannot be read").detail("error", e)
        })?;
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > TAIL {
            tail.drain(..tail.len() - TAIL);
        }
    }
    if tail.windows(5).any(|w| w == b"%%EOF") {
        Ok(())
    } else {
        Err(Rejection::new(
            "truncated-pdf",
            "the PDF has no end-of-file marker: it is incomplete",
        ))
    }
}

fn filing(file_name: &str, name: &CertificateName) -> Filing {
    let retention = host::setting("retention").unwrap_or_else(|| "QA-10Y".to_string());
    let comment = format!(
        "Review {} {} for supplier {} (reference {})",
        name.kind, file_name, name.supplier, name.reference
    );
    let filing = Filing::to_workspace(
        "Supplier",
        &name.supplier,
        &format!("Quality/{}", name.kind),
        file_name,
    )
    .category(
        Category::new("Quality Certificate")
            .with("Supplier Number", name.supplier.as_str())
            .with("Certificate Type", name.kind.as_str())
            .with("Reference", name.reference.as_str())
            .with("Review Status", "Pending"),
    )
    .retention(&retention)
    .on_collision(VersionPolicy::AddVersion);
    match host::setting("reviewer") {
        Some(reviewer) => filing.workflow_for("quality-review", &comment, &reviewer),
        None => filing.workflow("quality-review", &comment),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_name_is_parsed() {
        let name = parse_name("QC_100234_COA_LOT-7.pdf").unwrap();
        assert_eq!(name.supplier, "100234");
        assert_eq!(name.kind, "COA");
        assert_eq!(name.reference, "LOT-7");
        assert_eq!(name.format, Format::Pdf);
    }

    #[test]
    fn unknown_type_is_refused() {
        let err = parse_name("QC_100234_XYZ_1.xml").unwrap_err();
        assert_eq!(err.code, "unknown-certificate-type");
    }

    #[test]
    fn complete_pdf_passes() {
        let pdf = b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n";
        assert!(check_pdf(&pdf[..], pdf.len() as u64).is_ok());
    }

    #[test]
    fn pdf_without_eof_marker_is_truncated() {
        let pdf = b"%PDF-1.7\n1 0 obj<<>>endobj\nstream....";
        assert_eq!(
            check_pdf(&pdf[..], pdf.len() as u64).unwrap_err().code,
            "truncated-pdf"
        );
    }

    #[test]
    fn text_is_not_pdf() {
        let text = b"hello, this is not a pdf document";
        assert_eq!(
            check_pdf(&text[..], text.len() as u64).unwrap_err().code,
            "not-pdf"
        );
    }
}
