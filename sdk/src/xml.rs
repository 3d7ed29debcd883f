//! A small, streaming XML check: is the document well-formed, and what is
//! its root element?
//!
//! ```
//! use wharf_sdk::xml;
//!
//! let ok = xml::check("<?xml version=\"1.0\"?><certificate id=\"7\"><lot>A</lot></certificate>".as_bytes());
//! assert_eq!(ok.unwrap().root, "certificate");
//! assert!(xml::check("<certificate><lot></certificate>".as_bytes()).is_err());
//! ```

use std::io::{BufReader, Read};

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::Rejection;

/// What the check found in a well-formed document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlSummary {
    /// Local name of the root element (without namespace prefix).
    pub root: String,
    /// Number of elements in the document.
    pub elements: u64,
}

/// Read the whole document and check that it is well-formed: one root
/// element, every element closed in order. Fails with a rejection coded
/// `malformed-xml` that says where.
pub fn check<R: Read>(reader: R) -> Result<XmlSummary, Rejection> {
    let mut xml = Reader::from_reader(BufReader::new(reader));
    let config = xml.config_mut();
    config.check_end_names = true;
    config.trim_text(true);
    let mut buf = Vec::new();
    let mut depth: u64 = 0;
    let mut root: Option<String> = None;
    let mut elements: u64 = 0;
    let mut roots_closed = false;
    loop {
        let event = xml.read_event_into(&mut buf).map_err(|e| {
            Rejection::new("malformed-xml", "the XML document is not well-formed")
                .detail("position", xml.error_position())
                .detail("error", e)
        })?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if depth == 0 {
                    if roots_closed {
                        return Err(Rejection::new(
                            "malformed-xml",
                            "the XML document has more than one root element",
                        ));
                    }
                    root = Some(e.local_name().into_inner().to_string());
                }
                elements += 1;
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                } else if depth == 0 {
                    roots_closed = true;
                }
            }
            Event::End(_) => {
                depth -= 1;
                if depth == 0 {
                    roots_closed = true;
                }
            }
            Event::Text(ref t) if depth == 0 && !t.is_empty() => {
                return Err(Rejection::new(
                    "malformed-xml",
                    "the XML document has text outside its root element",
                ));
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    match root {
        Some(root) if depth == 0 => Ok(XmlSummary { root, elements }),
        Some(_) => Err(Rejection::new(
            "malformed-xml",
            "the XML document ends before its root element is closed",
        )),
        None => Err(Rejection::new(
            "malformed-xml",
            "the document has no root element",
        )),
    }
}

/// Check well-formedness and that the root element is `expected`.
pub fn require_root<R: Read>(reader: R, expected: &str) -> Result<XmlSummary, Rejection> {
    let summary = check(reader)?;
    if summary.root == expected {
        Ok(summary)
    } else {
        Err(Rejection::new(
            "wrong-document",
            "the XML root element is not the expected one",
        )
        .detail("expected", expected)
        .detail("found", &summary.root))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_closing_root_is_well_formed() {
        assert_eq!(check("<ack/>".as_bytes()).unwrap().root, "ack");
    }

    #[test]
    fn two_roots_are_refused() {
        assert_eq!(
            check("<a/><b/>".as_bytes()).unwrap_err().code,
            "malformed-xml"
        );
    }

    #[test]
    fn unclosed_root_is_refused() {
        assert!(check("<a><b/>".as_bytes()).is_err());
    }

    #[test]
    fn empty_document_has_no_root() {
        assert!(check("".as_bytes()).is_err());
    }

    #[test]
    fn namespaced_root_is_matched_by_local_name() {
        let doc = r#"<q:certificate xmlns:q="urn:x"><q:lot>1</q:lot></q:certificate>"#;
        assert_eq!(
            require_root(doc.as_bytes(), "certificate")
                .unwrap()
                .elements,
            2
        );
        assert_eq!(
            require_root(doc.as_bytes(), "invoice").unwrap_err().code,
            "wrong-document"
        );
    }
}
