//! ACME's invoice rules.
//!
//! ACME drops CSV invoices named `INV_<supplier>_<yyyymmdd>_<seq>.csv`. A file
//! is accepted when its name matches, its date is a real date, its header is
//! the agreed one, every row names the same supplier as the file name and
//! carries a decimal amount. It is filed under
//! `Invoices/<supplier>/<yyyy>/<mm>` with the `Invoice` category, the
//! retention code from the `retention` setting (default `FIN-7Y`) and read
//! access for the accounts-payable group; a second file of the same name is
//! refused rather than versioned.
//!
//! Settings: `suppliers` (comma-separated allow-list; empty allows any),
//! `retention`, `ap-group`.

use wharf_sdk::pattern::{NamePattern, iso_date};
use wharf_sdk::prelude::*;
use wharf_sdk::read;

/// The columns ACME agreed to send, in order.
pub const HEADER: [&str; 5] = [
    "invoice_no",
    "invoice_date",
    "supplier",
    "currency",
    "amount",
];

struct AcmeInvoices;

impl Plugin for AcmeInvoices {
    fn on_file(file: FileInfo, content: &Content) -> Verdict {
        if is_marker(&file.name) {
            return Verdict::ignore("marker file");
        }
        let name = match parse_name(&file.name) {
            Ok(name) => name,
            Err(rejection) => return rejection.into(),
        };
        if !supplier_allowed(&name.supplier, host::setting("suppliers").as_deref()) {
            return Rejection::new("unknown-supplier", "the supplier is not on ACME's list")
                .detail("supplier", &name.supplier)
                .into();
        }
        let summary = match check_rows(content.reader(), &name.supplier) {
            Ok(summary) => summary,
            Err(rejection) => return rejection.into(),
        };
        host::info(&format!(
            "{}: {} invoice lines, total {} {}",
            file.name,
            summary.lines,
            summary.total(),
            summary.currency
        ));
        Verdict::accept(filing(&file.name, &name, &summary))
    }
}

wharf_sdk::export!(AcmeInvoices);

/// What the file name says.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceName {
    /// Supplier code, e.g. `ACME01`.
    pub supplier: String,
    /// Invoice date, ISO 8601.
    pub date: String,
    /// Sequence number of the day.
    pub seq: u32,
}

impl InvoiceSummary {
    /// The total as a plain decimal, e.g. `1650.39`.
    pub fn total(&self) -> String {
        let sign = if self.total_cents < 0 { "-" } else { "" };
        let cents = self.total_cents.unsigned_abs();
        format!("{sign}{}.{:02}", cents / 100, cents % 100)
    }
}

/// Parse an amount with at most two decimals (`10`, `10.5`, `-3.25`) into
/// cents, exactly.
pub fn parse_cents(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || whole.len() > 15
        || fraction.len() > 2
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || (digits.contains('.') && fraction.is_empty())
    {
        return None;
    }
    let cents = whole.parse::<i64>().ok()? * 100 + format!("{fraction:0<2}").parse::<i64>().ok()?;
    Some(if negative { -cents } else { cents })
}

/// What the rows say.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceSummary {
    /// Number of invoice lines.
    pub lines: u64,
    /// Sum of the amounts, in cents.
    pub total_cents: i64,
    /// The currency of the lines (all lines share it).
    pub currency: String,
}

fn is_marker(name: &str) -> bool {
    name.ends_with(".done") || name.ends_with(".ok")
}

/// Parse `INV_<supplier>_<yyyymmdd>_<seq>.csv`.
pub fn parse_name(file_name: &str) -> Result<InvoiceName, Rejection> {
    let pattern =
        NamePattern::new(r"INV_(?P<supplier>[A-Z0-9]{2,20})_(?P<date>\d{8})_(?P<seq>\d{1,6})\.csv")
            .expect("the invoice pattern compiles");
    let caps = pattern.captures(file_name).ok_or_else(|| {
        Rejection::new(
            "bad-name",
            "the file name is not INV_<supplier>_<yyyymmdd>_<seq>.csv",
        )
        .detail("name", file_name)
    })?;
    let raw_date = caps.get("date").unwrap_or_default();
    let date = iso_date(raw_date).ok_or_else(|| {
        Rejection::new(
            "bad-date",
            "the date in the file name is not a calendar date",
        )
        .detail("date", raw_date)
    })?;
    Ok(InvoiceName {
        supplier: caps.get("supplier").unwrap_or_default().to_string(),
        date,
        seq: caps.get("seq").unwrap_or_default().parse().unwrap_or(0),
    })
}

fn supplier_allowed(supplier: &str, allow_list: Option<&str>) -> bool {
    match allow_list.map(str::trim) {
        None | Some("") => true,
        Some(list) => list.split(',').any(|s| s.trim() == supplier),
    }
}

/// Stream the CSV rows and check each one.
pub fn check_rows(reader: impl std::io::Read, supplier: &str) -> Result<InvoiceSummary, Rejection> {
    let mut rows = read::csv(reader);
    read::require_header(&mut rows, &HEADER)?;
    let mut summary = InvoiceSummary {
        lines: 0,
        total_cents: 0,
        currency: String::new(),
    };
    for (index, row) in rows.records().enumerate() {
        let line = index + 2;
        let row = row.map_err(|e| {
            Rejection::new("bad-row", "a CSV row cannot be read")
                .detail("line", line)
                .detail("error", e)
        })?;
        let field = |i: usize| row.get(i).unwrap_or("").trim();
        if field(0).is_empty() {
            return Err(
                Rejection::new("bad-row", "an invoice number is missing").detail("line", line)
            );
        }
        if iso_date(&field(1).replace('-', "")).is_none() {
            return Err(
                Rejection::new("bad-row", "an invoice date is not a calendar date")
                    .detail("line", line)
                    .detail("value", field(1)),
            );
        }
        if field(2) != supplier {
            return Err(Rejection::new(
                "supplier-mismatch",
                "a row names another supplier than the file name",
            )
            .detail("line", line)
            .detail("expected", supplier)
            .detail("found", field(2)));
        }
        let currency = field(3);
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(
                Rejection::new("bad-row", "a currency is not an ISO 4217 code")
                    .detail("line", line)
                    .detail("value", currency),
            );
        }
        if summary.currency.is_empty() {
            summary.currency = currency.to_string();
        } else if summary.currency != currency {
            return Err(
                Rejection::new("mixed-currency", "the rows use more than one currency")
                    .detail("line", line),
            );
        }
        let amount = parse_cents(field(4)).ok_or_else(|| {
            Rejection::new(
                "bad-row",
                "an amount is not a decimal number with at most two decimals",
            )
            .detail("line", line)
            .detail("value", field(4))
        })?;
        summary.lines += 1;
        summary.total_cents = summary.total_cents.checked_add(amount).ok_or_else(|| {
            Rejection::new("bad-row", "the amounts add up beyond any sane total")
                .detail("line", line)
        })?;
    }
    if summary.lines == 0 {
        return Err(Rejection::new(
            "empty-invoice",
            "the file has a header but no invoice lines",
        ));
    }
    Ok(summary)
}

fn filing(file_name: &str, name: &InvoiceName, summary: &InvoiceSummary) -> Filing {
    let retention = host::setting("retention").unwrap_or_else(|| "FIN-7Y".to_string());
    let ap_group = host::setting("ap-group").unwrap_or_else(|| "Accounts Payable".to_string());
    let folder = format!(
        "Invoices/{}/{}/{}",
        name.supplier,
        &name.date[0..4],
        &name.date[5..7]
    );
    Filing::to_folder(&folder, file_name)
        .description(&format!("ACME invoice batch {} of {}", name.seq, name.date))
        .category(
            Category::new("Invoice")
                .with("Supplier", name.supplier.as_str())
                .with_date("Invoice Date", &name.date)
                .with("Sequence", i64::from(name.seq))
                .with("Line Count", summary.lines as i64)
                .with_decimal("Total Amount", &summary.total())
                .with("Currency", summary.currency.as_str()),
        )
        .retention(&retention)
        .grant(
            Principal::Group(ap_group),
            &[Right::See, Right::SeeContents],
        )
        .on_collision(VersionPolicy::RejectDuplicate)
}

#[cfg(test)]
mod tests {
    use wharf_sdk::testing::TestHost;

    use super::*;

    #[test]
    fn name_with_supplier_date_and_sequence_is_parsed() {
        let name = parse_name("INV_ACME01_20261124_007.csv").unwrap();
        assert_eq!(
            name,
            InvoiceName {
                supplier: "ACME01".into(),
                date: "2026-11-24".into(),
                seq: 7
            }
        );
    }

    #[test]
    fn impossible_date_is_refused() {
        assert_eq!(
            parse_name("INV_ACME01_20261131_1.csv").unwrap_err().code,
            "bad-date"
        );
    }

    #[test]
    fn lowercase_supplier_is_a_bad_name() {
        assert_eq!(
            parse_name("INV_acme_20261124_1.csv").unwrap_err().code,
            "bad-name"
        );
    }

    #[test]
    fn rows_are_summed() {
        let csv = "invoice_no,invoice_date,supplier,currency,amount\n\
                   A1,2026-11-20,ACME01,EUR,10.50\n\
                   A2,2026-11-21,ACME01,EUR,4.50\n";
        let summary = check_rows(csv.as_bytes(), "ACME01").unwrap();
        assert_eq!(summary.lines, 2);
        assert_eq!(summary.total(), "15.00");
        assert_eq!(summary.currency, "EUR");
    }

    #[test]
    fn row_of_another_supplier_is_refused_with_its_line() {
        let csv = "invoice_no,invoice_date,supplier,currency,amount\nA1,2026-11-20,OTHER,EUR,1\n";
        let err = check_rows(csv.as_bytes(), "ACME01").unwrap_err();
        assert_eq!(err.code, "supplier-mismatch");
        assert!(err.details.contains(&("line".to_string(), "2".to_string())));
    }

    #[test]
    fn wrong_header_is_refused() {
        let csv = "id,amount\n1,2\n";
        assert_eq!(
            check_rows(csv.as_bytes(), "ACME01").unwrap_err().code,
            "bad-header"
        );
    }

    #[test]
    fn amounts_are_exact_cents() {
        assert_eq!(parse_cents("1250.00"), Some(125_000));
        assert_eq!(parse_cents("89.9"), Some(8_990));
        assert_eq!(parse_cents("-3"), Some(-300));
        for bad in ["", "1.", ".5", "1.234", "1e3", "12,00", "--1"] {
            assert_eq!(parse_cents(bad), None, "{bad}");
        }
    }

    #[test]
    fn allow_list_is_optional() {
        assert!(supplier_allowed("X", None));
        assert!(supplier_allowed("X", Some(" ")));
        assert!(supplier_allowed("X", Some("A, X")));
        assert!(!supplier_allowed("Y", Some("A,X")));
    }

    // The whole rule, run natively against an in-memory host.

    const INVOICE: &str = "invoice_no,invoice_date,supplier,currency,amount\n\
                           A-1,2026-11-20,ACME01,EUR,1250.00\n\
                           A-2,2026-11-21,ACME01,EUR,400.39\n";

    #[test]
    fn a_supplier_off_the_allow_list_setting_is_rejected() {
        let host = TestHost::new().setting("suppliers", "ACME02, ACME03");
        let verdict = host.decide::<AcmeInvoices>("INV_ACME01_20261124_001.csv", INVOICE);
        let rejection = verdict.expect_reject();
        assert_eq!(rejection.code, "unknown-supplier");
        assert_eq!(rejection.detail_value("supplier"), Some("ACME01"));
        assert!(host.logs().is_empty(), "{:?}", host.logs());
    }

    #[test]
    fn a_supplier_on_the_allow_list_is_filed_by_supplier_and_month() {
        let host = TestHost::new()
            .setting("suppliers", "ACME02,ACME01")
            .setting("ap-group", "AP Europe");
        let verdict = host.decide::<AcmeInvoices>("INV_ACME01_20261124_001.csv", INVOICE);
        let filing = verdict.expect_accept();
        assert_eq!(
            filing.target,
            Target::Folder("Invoices/ACME01/2026/11".into())
        );
        assert_eq!(filing.name, "INV_ACME01_20261124_001.csv");
        assert_eq!(
            filing.attribute("Invoice", "Total Amount"),
            Some(&AttributeValue::Decimal("1650.39".into()))
        );
        assert_eq!(
            filing.attribute("Invoice", "Invoice Date"),
            Some(&AttributeValue::Date("2026-11-24".into()))
        );
        assert_eq!(filing.retention.as_deref(), Some("FIN-7Y"));
        assert_eq!(
            filing.permissions[0].principal,
            Principal::Group("AP Europe".into())
        );
        assert_eq!(filing.version_policy, VersionPolicy::RejectDuplicate);
        assert!(
            host.logged("INV_ACME01_20261124_001.csv: 2 invoice lines, total 1650.39 EUR"),
            "{:?}",
            host.logs()
        );
    }

    #[test]
    fn without_an_allow_list_any_supplier_is_accepted_with_the_retention_setting() {
        let host = TestHost::new().setting("retention", "FIN-10Y");
        let csv = INVOICE.replace("ACME01", "ZED9");
        let verdict = host.decide::<AcmeInvoices>("INV_ZED9_20261124_002.csv", csv);
        let filing = verdict.expect_accept();
        assert_eq!(
            filing.target,
            Target::Folder("Invoices/ZED9/2026/11".into())
        );
        assert_eq!(filing.retention.as_deref(), Some("FIN-10Y"));
        assert_eq!(
            filing.permissions[0].principal,
            Principal::Group("Accounts Payable".into())
        );
    }

    #[test]
    fn a_bad_row_is_rejected_with_its_line_and_markers_are_ignored() {
        let host = TestHost::new();
        let csv = format!("{INVOICE}A-3,2026-11-22,ACME01,EUR,12.345\n");
        let verdict = host.decide::<AcmeInvoices>("INV_ACME01_20261124_003.csv", csv);
        let rejection = verdict.expect_reject();
        assert_eq!(rejection.code, "bad-row");
        assert_eq!(rejection.detail_value("line"), Some("4"));
        assert_eq!(rejection.detail_value("value"), Some("12.345"));

        let marker = host.decide::<AcmeInvoices>("INV_ACME01_20261124_003.csv.done", "");
        assert_eq!(marker.expect_ignore(), "marker file");
    }
}
