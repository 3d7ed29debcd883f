//! File-name patterns with named captures.
//!
//! A pattern is a regular expression (the `regex-lite` dialect) anchored at
//! both ends; named groups `(?P<name>...)` become captures.
//!
//! ```
//! use wharf_sdk::pattern::NamePattern;
//!
//! let invoice = NamePattern::new(r"INV_(?P<supplier>[A-Z0-9]+)_(?P<date>\d{8})_(?P<seq>\d+)\.csv").unwrap();
//! let caps = invoice.captures("INV_ACME_20261124_001.csv").unwrap();
//! assert_eq!(caps.get("supplier"), Some("ACME"));
//! assert_eq!(caps.get("date"), Some("20261124"));
//! assert!(invoice.captures("INV_acme.csv").is_none());
//! ```

use std::collections::BTreeMap;

use regex_lite::Regex;

/// A compiled, fully anchored file-name pattern.
#[derive(Debug, Clone)]
pub struct NamePattern {
    regex: Regex,
}

/// The named captures of a match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Captures {
    values: BTreeMap<String, String>,
}

/// A pattern that does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError(pub String);

impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid name pattern: {}", self.0)
    }
}

impl std::error::Error for PatternError {}

impl NamePattern {
    /// Compile `pattern`; it must match the whole name.
    pub fn new(pattern: &str) -> Result<Self, PatternError> {
        let regex =
            Regex::new(&format!("^(?:{pattern})$")).map_err(|e| PatternError(e.to_string()))?;
        Ok(NamePattern { regex })
    }

    /// Whether `name` matches.
    pub fn is_match(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }

    /// The named captures when `name` matches.
    pub fn captures(&self, name: &str) -> Option<Captures> {
        let caps = self.regex.captures(name)?;
        let values = self
            .regex
            .capture_names()
            .flatten()
            .filter_map(|n| {
                caps.name(n)
                    .map(|m| (n.to_string(), m.as_str().to_string()))
            })
            .collect();
        Some(Captures { values })
    }
}

impl Captures {
    /// The text captured by group `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// All captures, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Turn a compact date `YYYYMMDD` into ISO 8601 `YYYY-MM-DD`, checking that
/// it is a real calendar date.
///
/// ```
/// assert_eq!(wharf_sdk::pattern::iso_date("20240229").as_deref(), Some("2024-02-29"));
/// assert_eq!(wharf_sdk::pattern::iso_date("20230229"), None);
/// ```
pub fn iso_date(compact: &str) -> Option<String> {
    if compact.len() != 8 || !compact.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: u32 = compact[0..4].parse().ok()?;
    let month: u32 = compact[4..6].parse().ok()?;
    let day: u32 = compact[6..8].parse().ok()?;
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days {
        return None;
    }
    Some(format!(
        "{}-{}-{}",
        &compact[0..4],
        &compact[4..6],
        &compact[6..8]
    ))
}
