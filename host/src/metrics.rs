//! Prometheus metrics of the running service, exposed as OpenMetrics text.
//!
//! One [`Metrics`] value is shared (in an `Arc`) by every partner loop; the
//! admin server ([`crate::admin`]) serves [`Metrics::encode`] on `/metrics`.
//! Label values are partner ids and plugin names from the configuration;
//! the encoder escapes them, so any text stays valid exposition output.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabels {
    partner: String,
    plugin: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    partner: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartnerLabel {
    partner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    partner: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The service's metrics and the registry that encodes them.
///
/// All recording methods take `&self`; share one value in an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    files: Family<FileLabels, Counter>,
    bytes: Family<PartnerLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    file_duration: HistogramFamily<PartnerLabel>,
    plugin_call_duration: HistogramFamily<PluginLabel>,
    poll_duration: HistogramFamily<PartnerLabel>,
    in_flight: Family<PartnerLabel, Gauge>,
    partner_up: Family<PartnerLabel, Gauge>,
    reloads: Family<ReloadLabels, Counter>,
    canary: Family<ReloadLabels, Counter>,
}

/// Buckets of `wharf_file_duration_seconds`: 1 ms doubling to 262 s (~4.4 min).
fn file_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 19))
}

/// Buckets of `wharf_plugin_call_duration_seconds`: 10 µs doubling to 10.5 s.
fn plugin_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 2.0, 21))
}

/// Buckets of `wharf_poll_duration_seconds`: 5 ms doubling to 82 s.
fn poll_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

impl Metrics {
    /// Creates the metrics, all empty except `wharf_build_info`.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let files = Family::<FileLabels, Counter>::default();
        let bytes = Family::<PartnerLabel, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let file_duration = HistogramFamily::new_with_constructor(file_buckets as fn() -> _);
        let plugin_call_duration =
            HistogramFamily::new_with_constructor(plugin_buckets as fn() -> _);
        let poll_duration = HistogramFamily::new_with_constructor(poll_buckets as fn() -> _);
        let in_flight = Family::<PartnerLabel, Gauge>::default();
        let partner_up = Family::<PartnerLabel, Gauge>::default();
        let build_info = Family::<VersionLabel, Gauge>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let canary = Family::<ReloadLabels, Counter>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);

        registry.register(
            "wharf_files",
            "Files finished, by partner, plugin and outcome (filed, quarantined, ignored, deferred)",
            files.clone(),
        );
        registry.register("wharf_bytes", "Bytes received from partners", bytes.clone());
        registry.register(
            "wharf_failures",
            "Failures by partner and kind (transfer, plugin, ecm, remote, ledger)",
            failures.clone(),
        );
        registry.register_with_unit(
            "wharf_file_duration",
            "Time from pickup of a file to its outcome",
            Unit::Seconds,
            file_duration.clone(),
        );
        registry.register_with_unit(
            "wharf_plugin_call_duration",
            "Time spent in one plugin call",
            Unit::Seconds,
            plugin_call_duration.clone(),
        );
        registry.register_with_unit(
            "wharf_poll_duration",
            "Time taken by one poll of a partner's server",
            Unit::Seconds,
            poll_duration.clone(),
        );
        registry.register(
            "wharf_files_in_flight",
            "Files currently being processed",
            in_flight.clone(),
        );
        registry.register(
            "wharf_partner_up",
            "1 when the last poll reached the partner's server, else 0",
            partner_up.clone(),
        );
        registry.register(
            "wharf_plugin_reloads",
            "Plugin builds offered to a running partner, by result (swapped or refused)",
            reloads.clone(),
        );
        registry.register(
            "wharf_canary_verdicts",
            "Files a candidate build decided in shadow, by result (agree or disagree)",
            canary.clone(),
        );
        registry.register(
            "wharf_build_info",
            "Always 1; the version label names the running build",
            build_info,
        );

        Metrics {
            registry,
            files,
            bytes,
            failures,
            file_duration,
            plugin_call_duration,
            poll_duration,
            in_flight,
            partner_up,
            reloads,
            canary,
        }
    }

    /// Records a finished file: its outcome (`filed`, `quarantined`,
    /// `ignored` or `deferred`), the bytes received and the seconds from
    /// pickup to outcome.
    pub fn file_done(&self, partner: &str, plugin: &str, outcome: &str, bytes: u64, seconds: f64) {
        self.files
            .get_or_create(&FileLabels {
                partner: partner.to_owned(),
                plugin: plugin.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        let partner = PartnerLabel {
            partner: partner.to_owned(),
        };
        self.bytes.get_or_create(&partner).inc_by(bytes);
        self.file_duration.get_or_create(&partner).observe(seconds);
    }

    /// Counts one failure of the given kind (`transfer`, `plugin`, `ecm`,
    /// `remote` or `ledger`).
    pub fn failure(&self, partner: &str, kind: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                partner: partner.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Records the duration of one plugin call.
    pub fn plugin_call(&self, plugin: &str, seconds: f64) {
        self.plugin_call_duration
            .get_or_create(&PluginLabel {
                plugin: plugin.to_owned(),
            })
            .observe(seconds);
    }

    /// Records one poll of a partner's server: its duration and whether the
    /// server was reached (`wharf_partner_up`).
    pub fn poll(&self, partner: &str, seconds: f64, up: bool) {
        let partner = PartnerLabel {
            partner: partner.to_owned(),
        };
        self.poll_duration.get_or_create(&partner).observe(seconds);
        self.partner_up.get_or_create(&partner).set(i64::from(up));
    }

    /// Counts a plugin build offered to a running partner: `swapped` in, or
    /// `refused` (the old build keeps serving).
    pub fn plugin_reload(&self, partner: &str, swapped: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                partner: partner.to_owned(),
                result: if swapped { "swapped" } else { "refused" }.to_owned(),
            })
            .inc();
    }

    /// Counts a file a canary build decided in shadow.
    pub fn canary_verdict(&self, partner: &str, agree: bool) {
        self.canary
            .get_or_create(&ReloadLabels {
                partner: partner.to_owned(),
                result: if agree { "agree" } else { "disagree" }.to_owned(),
            })
            .inc();
    }

    /// Counts a file as in flight for as long as the returned guard lives.
    pub fn in_flight(&self, partner: &str) -> InFlight {
        let gauge = self
            .in_flight
            .get_or_create(&PartnerLabel {
                partner: partner.to_owned(),
            })
            .clone();
        gauge.inc();
        InFlight { gauge }
    }

    /// Encodes every metric in the OpenMetrics text format, ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        text::encode(&mut out, &self.registry).expect("encoding metrics into a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Guard from [`Metrics::in_flight`]: the partner's `wharf_files_in_flight`
/// gauge is one higher until it is dropped.
#[derive(Debug)]
#[must_use = "the file counts as in flight only while the guard lives"]
pub struct InFlight {
    gauge: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn counters_carry_their_labels() {
        let m = Metrics::new();
        m.file_done("acme", "acme-invoices", "filed", 1200, 0.5);
        m.file_done("acme", "acme-invoices", "filed", 800, 0.25);
        m.file_done("acme", "acme-invoices", "quarantined", 10, 0.1);
        m.failure("acme", "transfer");
        let text = m.encode();

        assert!(has_line(&text, "# TYPE wharf_files counter"), "{text}");
        assert!(has_line(
            &text,
            r#"wharf_files_total{partner="acme",plugin="acme-invoices",outcome="filed"} 2"#
        ));
        assert!(has_line(
            &text,
            r#"wharf_files_total{partner="acme",plugin="acme-invoices",outcome="quarantined"} 1"#
        ));
        assert!(has_line(&text, r#"wharf_bytes_total{partner="acme"} 2010"#));
        assert!(has_line(
            &text,
            r#"wharf_failures_total{partner="acme",kind="transfer"} 1"#
        ));
        assert!(has_line(
            &text,
            &format!(
                r#"wharf_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )
        ));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn histograms_have_their_buckets() {
        let m = Metrics::new();
        m.file_done("acme", "p", "filed", 0, 0.003);
        m.plugin_call("p", 0.000_015);
        m.poll("acme", 2.0, true);
        let text = m.encode();

        assert!(has_line(
            &text,
            "# TYPE wharf_file_duration_seconds histogram"
        ));
        assert!(has_line(
            &text,
            "# UNIT wharf_file_duration_seconds seconds"
        ));
        // 3 ms falls in the 4 ms bucket, not the 2 ms one; buckets are cumulative.
        assert!(
            has_line(
                &text,
                r#"wharf_file_duration_seconds_bucket{le="0.002",partner="acme"} 0"#
            ),
            "{text}"
        );
        assert!(has_line(
            &text,
            r#"wharf_file_duration_seconds_bucket{le="0.004",partner="acme"} 1"#
        ));
        assert!(has_line(
            &text,
            r#"wharf_file_duration_seconds_bucket{le="262.144",partner="acme"} 1"#
        ));
        assert!(has_line(
            &text,
            r#"wharf_file_duration_seconds_bucket{le="+Inf",partner="acme"} 1"#
        ));
        assert!(has_line(
            &text,
            r#"wharf_file_duration_seconds_count{partner="acme"} 1"#
        ));
        for (le, n) in [("0.00001", 0), ("0.00002", 1), ("10.48576", 1)] {
            let line =
                format!(r#"wharf_plugin_call_duration_seconds_bucket{{le="{le}",plugin="p"}} {n}"#);
            assert!(has_line(&text, &line), "{line}");
        }
        assert!(has_line(
            &text,
            r#"wharf_poll_duration_seconds_sum{partner="acme"} 2.0"#
        ));
    }

    #[test]
    fn gauges_follow_polls_and_guards() {
        let m = Metrics::new();
        m.poll("acme", 0.1, true);
        m.poll("globex", 0.1, false);
        let text = m.encode();
        assert!(has_line(&text, r#"wharf_partner_up{partner="acme"} 1"#));
        assert!(has_line(&text, r#"wharf_partner_up{partner="globex"} 0"#));
        m.poll("globex", 0.1, true);
        assert!(has_line(
            &m.encode(),
            r#"wharf_partner_up{partner="globex"} 1"#
        ));

        let first = m.in_flight("acme");
        let second = m.in_flight("acme");
        assert!(has_line(
            &m.encode(),
            r#"wharf_files_in_flight{partner="acme"} 2"#
        ));
        drop(first);
        assert!(has_line(
            &m.encode(),
            r#"wharf_files_in_flight{partner="acme"} 1"#
        ));
        drop(second);
        assert!(has_line(
            &m.encode(),
            r#"wharf_files_in_flight{partner="acme"} 0"#
        ));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.failure("say \"hi\"\nwharf_injected 1", r"back\slash");
        let text = m.encode();

        assert!(
            has_line(
                &text,
                r#"wharf_failures_total{partner="say \"hi\"\nwharf_injected 1",kind="back\\slash"} 1"#
            ),
            "{text}"
        );
        // The newline stayed inside the quoted value: no line was injected.
        assert!(!text.lines().any(|l| l.starts_with("wharf_injected")));
        for line in text.lines() {
            assert!(
                line.starts_with("# ") || line.starts_with("wharf_"),
                "unexpected line {line:?}"
            );
        }
    }
}
