//! The measured side shared by the end-to-end benches (`pipeline`,
//! `outbound`): the child process they spawn of themselves.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use wharf::runtime::{Runtime, Summary};

/// Open the runtime from the configuration at `config_path`, run one cycle
/// and print its report as one JSON line on stdout. `report` gives the
/// bench's own fields from the cycle's summary, with `problems` (the
/// outcomes it did not expect); the open and cycle times are added here,
/// and so are partners that did not start, to the problems.
pub fn child(config_path: &str, report: impl FnOnce(&Summary) -> serde_json::Value) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let path = Path::new(config_path);
    let text = std::fs::read_to_string(path).expect("reading the configuration");
    let config = wharf::config::parse(&text, path.parent().expect("config folder"))
        .unwrap_or_else(|p| panic!("configuration: {p:?}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let line = rt.block_on(async move {
        let t = Instant::now();
        let runtime = Arc::new(Runtime::open(config).await.expect("runtime opens"));
        let open_secs = t.elapsed().as_secs_f64();
        assert!(
            runtime.unavailable().is_empty(),
            "partner not started: {:?}",
            runtime.unavailable()
        );
        let summary = runtime.once().await;
        let mut line = report(&summary);
        let problems: Vec<serde_json::Value> = line["problems"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .chain(summary.unavailable.iter().map(|u| {
                serde_json::Value::from(format!("{} unavailable: {}", u.partner, u.reason))
            }))
            .take(10)
            .collect();
        line["problems"] = problems.into();
        line["open_secs"] = open_secs.into();
        line["once_secs"] = summary.elapsed.as_secs_f64().into();
        line
    });
    println!("{line}");
}
