//! The plugin host with real components: the example partners decide real
//! sample files, and misbehaving plugins (endless loop, memory hog, panic,
//! hostile targets) fail cleanly while the host keeps serving.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wharf::plugin::decision::{AttributeValue, Target, Verdict};
use wharf::plugin::{
    CacheOutcome, FailureKind, FileInfo, HostConfig, Limits, LoadError, LocalPartnerFiles,
    PartnerContext, Plugin, PluginError, PluginHost, ReadContent,
};
use wharf_tests::plugins::{compile_cache_dir, component, workspace_root};

fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(|| {
        PluginHost::new(HostConfig {
            cache_dir: Some(compile_cache_dir()),
            ..HostConfig::default()
        })
        .expect("plugin host starts")
    })
}

fn load(name: &str) -> Plugin {
    host()
        .load(&component(name))
        .unwrap_or_else(|e| panic!("{name} loads: {e}"))
}

fn context(limits: Limits) -> Arc<PartnerContext> {
    let mut ctx = PartnerContext::new("acme");
    ctx.limits = limits;
    Arc::new(ctx)
}

fn info(name: &str, size: u64) -> FileInfo {
    FileInfo {
        partner: "acme".into(),
        path: format!("inbox/{name}"),
        name: name.into(),
        size,
        modified: Some(1_764_000_000),
    }
}

fn decide_bytes(
    plugin: &Plugin,
    ctx: &Arc<PartnerContext>,
    name: &str,
    bytes: &[u8],
) -> Result<Verdict, PluginError> {
    let content = ReadContent::new(Cursor::new(bytes.to_vec()), bytes.len() as u64);
    plugin.on_file(ctx, &info(name, bytes.len() as u64), content)
}

fn decide_sample(
    plugin: &Plugin,
    ctx: &Arc<PartnerContext>,
    sample: &str,
) -> Result<Verdict, PluginError> {
    let path = workspace_root().join("examples/samples").join(sample);
    let name = Path::new(sample)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let content = ReadContent::open(&path).expect("sample exists");
    let size = std::fs::metadata(&path).unwrap().len();
    plugin.on_file(ctx, &info(&name, size), content)
}

/// The healthy plugin still decides correctly: proof that the host kept
/// serving after a failure.
fn assert_host_still_serves() {
    let acme = load("acme-invoices");
    let v = decide_sample(
        &acme,
        &context(Limits::default()),
        "acme/INV_ACME01_20261124_001.csv",
    )
    .expect("a healthy plugin call succeeds after a failure");
    assert!(matches!(v, Verdict::Accept(_)), "{v:?}");
}

#[test]
fn valid_invoice_is_filed_by_supplier_and_date_with_attributes_and_retention() {
    let acme = load("acme-invoices");
    assert_eq!(acme.info().name, "acme-invoices");
    assert_eq!(acme.summary().world, "wharf:plugin/partner@0.1.0");
    let v = decide_sample(
        &acme,
        &context(Limits::default()),
        "acme/INV_ACME01_20261124_001.csv",
    )
    .unwrap();
    let Verdict::Accept(filing) = v else {
        panic!("expected accept, got {v:?}")
    };
    assert_eq!(
        filing.target,
        Target::Folder {
            path: wharf::plugin::decision::relative_path("Invoices/ACME01/2026/11").unwrap()
        }
    );
    assert_eq!(filing.name, "INV_ACME01_20261124_001.csv");
    assert_eq!(filing.retention.as_deref(), Some("FIN-7Y"));
    let invoice = &filing.categories[0];
    assert_eq!(invoice.name, "Invoice");
    let attr = |n: &str| {
        invoice
            .attributes
            .iter()
            .find(|a| a.name == n)
            .map(|a| a.value.clone())
    };
    assert_eq!(
        attr("Supplier"),
        Some(AttributeValue::Text("ACME01".into()))
    );
    assert_eq!(
        attr("Invoice Date"),
        Some(AttributeValue::Date("2026-11-24".into()))
    );
    assert_eq!(attr("Line Count"), Some(AttributeValue::Integer(3)));
    assert_eq!(
        attr("Total Amount"),
        Some(AttributeValue::Decimal("1650.39".into()))
    );
}

#[test]
fn settings_reach_the_plugin() {
    let acme = load("acme-invoices");
    let mut ctx = PartnerContext::new("acme");
    ctx.settings = BTreeMap::from([("suppliers".to_string(), "GLOBEX".to_string())]);
    let v = decide_sample(&acme, &Arc::new(ctx), "acme/INV_ACME01_20261124_001.csv").unwrap();
    let Verdict::Reject(r) = v else {
        panic!("expected reject, got {v:?}")
    };
    assert_eq!(r.code, "unknown-supplier");
}

#[test]
fn invalid_invoice_is_rejected_with_code_message_and_line() {
    let acme = load("acme-invoices");
    let v = decide_sample(
        &acme,
        &context(Limits::default()),
        "acme/INV_ACME01_20261124_002.csv",
    )
    .unwrap();
    let Verdict::Reject(r) = v else {
        panic!("expected reject, got {v:?}")
    };
    assert_eq!(r.code, "supplier-mismatch");
    assert_eq!(r.message, "a row names another supplier than the file name");
    assert!(
        r.details.contains(&("line".into(), "3".into())),
        "{:?}",
        r.details
    );
}

#[test]
fn certificate_goes_to_supplier_workspace_with_review_workflow() {
    let nw = load("northwind-quality");
    let v = decide_sample(
        &nw,
        &context(Limits::default()),
        "northwind/QC_100234_COA_LOT-2026-11.xml",
    )
    .unwrap();
    let Verdict::Accept(filing) = v else {
        panic!("expected accept, got {v:?}")
    };
    match &filing.target {
        Target::Workspace {
            workspace_type,
            business_id,
            folder,
        } => {
            assert_eq!(
                (workspace_type.as_str(), business_id.as_str()),
                ("Supplier", "100234")
            );
            assert_eq!(folder.to_string(), "Quality/COA");
        }
        other => panic!("expected a workspace target, got {other:?}"),
    }
    assert_eq!(
        filing.workflow.as_ref().map(|w| w.workflow.as_str()),
        Some("quality-review")
    );
}

#[test]
fn truncated_pdf_is_rejected() {
    let nw = load("northwind-quality");
    let v = decide_sample(
        &nw,
        &context(Limits::default()),
        "northwind/QC_100234_COC_PO-88122.pdf",
    )
    .unwrap();
    let Verdict::Reject(r) = v else {
        panic!("expected reject, got {v:?}")
    };
    assert_eq!(r.code, "truncated-pdf");
}

#[test]
fn endless_loop_is_stopped_at_its_deadline() {
    let spin = load("spin-forever");
    let limits = Limits {
        deadline_ms: 200,
        ..Limits::default()
    };
    let start = Instant::now();
    let err = decide_bytes(&spin, &context(limits), "a.csv", b"x").unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(err.kind, FailureKind::Deadline(d) if d == Duration::from_millis(200)),
        "{err}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "stopped after {elapsed:?}"
    );
    assert_eq!(err.code(), "plugin-deadline");
    let message = err.to_string();
    assert!(
        message.contains("spin-forever") && message.contains("inbox/a.csv"),
        "{message}"
    );
    assert_host_still_serves();
}

#[test]
fn fuel_budget_stops_an_endless_loop() {
    let fuel_host = PluginHost::new(HostConfig {
        fuel: true,
        ..HostConfig::default()
    })
    .unwrap();
    let spin = fuel_host.load(&component("spin-forever")).unwrap();
    let limits = Limits {
        fuel: Some(5_000_000),
        ..Limits::default()
    };
    let err = decide_bytes(&spin, &context(limits), "a.csv", b"x").unwrap_err();
    assert!(
        matches!(err.kind, FailureKind::OutOfFuel(5_000_000)),
        "{err}"
    );
}

#[test]
fn allocation_past_the_cap_is_out_of_memory() {
    let hog = load("memory-hog");
    let limits = Limits {
        memory_bytes: 64 * 1024 * 1024,
        ..Limits::default()
    };
    let err = decide_bytes(&hog, &context(limits), "a.csv", b"x").unwrap_err();
    assert!(
        matches!(err.kind, FailureKind::OutOfMemory { cap } if cap == 64 * 1024 * 1024),
        "{err}"
    );
    assert!(err.to_string().contains("memory-hog"), "{err}");
    assert_host_still_serves();
}

#[test]
fn guest_panic_is_reported_with_its_message() {
    let panicker = load("panicker");
    let err = decide_bytes(&panicker, &context(Limits::default()), "boom.csv", b"x").unwrap_err();
    match &err.kind {
        FailureKind::Panic(message) => {
            assert!(
                message.contains("panicker refuses to look at boom.csv"),
                "{message}"
            )
        }
        other => panic!("expected a panic, got {other}"),
    }
    assert_host_still_serves();
}

#[test]
fn escaping_targets_are_refused_as_invalid_decisions() {
    let hostile = load("hostile-target");
    let ctx = context(Limits::default());
    for name in [
        "up.csv", "abs.csv", "nul.csv", "ctrl.csv", "name.csv", "ws.csv", "esc.csv",
    ] {
        let err = decide_bytes(&hostile, &ctx, name, b"x").expect_err(name);
        assert!(
            matches!(err.kind, FailureKind::InvalidDecision(_)),
            "{name}: {err}"
        );
        assert_eq!(err.code(), "plugin-invalid-decision");
    }
    let ok = decide_bytes(&hostile, &ctx, "safe.csv", b"x").unwrap();
    assert!(matches!(ok, Verdict::Accept(_)), "{ok:?}");
}

fn probe(ctx: Arc<PartnerContext>) -> BTreeMap<String, String> {
    let probe = load("sandbox-probe");
    match decide_bytes(&probe, &ctx, "probe.csv", b"x").unwrap() {
        Verdict::Reject(r) => r.details.into_iter().collect(),
        other => panic!("expected the probe's report, got {other:?}"),
    }
}

#[test]
fn sandbox_grants_no_files_environment_arguments_or_network() {
    let report = probe(context(Limits::default()));
    for key in ["fs:/", "fs:.", "fs:/etc/passwd", "fs:/tmp", "net"] {
        assert_eq!(report[key], "false", "{key} was reachable: {report:?}");
    }
    assert_eq!(report["env"], "0");
    assert_eq!(report["args"], "0");
    assert_eq!(report["clock"], "true");
    assert_eq!(report["ftp:list"], "unavailable");
    assert_eq!(report["ecm:find"], "unavailable");
}

#[test]
fn every_call_starts_from_fresh_memory() {
    // Calls one after another reuse pool slots, whose touched pages stay
    // mapped between calls: none may see what an earlier call left.
    let ctx = context(Limits::default());
    for call in 0..20 {
        let report = probe(ctx.clone());
        assert_eq!(
            report["memory:calls-before"], "0",
            "call {call}: {report:?}"
        );
        assert_eq!(report["memory:bytes-left"], "0", "call {call}: {report:?}");
    }
}

#[test]
fn ftp_capability_is_confined_to_the_partner_root_and_outbox() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("companion.txt"), "lot 7").unwrap();
    let mut ctx = PartnerContext::new("acme");
    ctx.files = Arc::new(LocalPartnerFiles::open(root.path(), "outbox").unwrap());
    ctx.settings = BTreeMap::from([("greeting".to_string(), "hello".to_string())]);
    let report = probe(Arc::new(ctx));
    assert_eq!(report["ftp:list"], "ok:companion.txt");
    assert_eq!(report["ftp:read"], "ok:lot 7");
    assert_eq!(report["ftp:escape"], "denied");
    assert_eq!(report["ftp:write"], "ok:written");
    assert_eq!(report["ftp:write-escape"], "denied");
    assert_eq!(report["config:greeting"], "hello");
    assert_eq!(report["config:keys"], "greeting");
    assert_eq!(
        std::fs::read_to_string(root.path().join("outbox/receipt.txt")).unwrap(),
        "received"
    );
}

#[test]
fn calls_from_many_threads_share_one_plugin() {
    let acme = load("acme-invoices");
    let ctx = context(Limits::default());
    let csv = b"invoice_no,invoice_date,supplier,currency,amount\nA1,2026-11-20,ACME01,EUR,1\n";
    std::thread::scope(|s| {
        for t in 0..4 {
            let (acme, ctx) = (&acme, &ctx);
            s.spawn(move || {
                for i in 0..25 {
                    let name = format!("INV_ACME01_20261124_{}.csv", t * 100 + i + 1);
                    let v = decide_bytes(acme, ctx, &name, csv).unwrap();
                    assert!(matches!(v, Verdict::Accept(_)), "{v:?}");
                }
            });
        }
    });
}

#[test]
fn compiled_cache_is_reused_and_a_corrupt_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..HostConfig::default()
    };
    let wasm = component("acme-invoices");

    let first = PluginHost::new(config.clone())
        .unwrap()
        .load(&wasm)
        .unwrap();
    assert_eq!(first.cache_outcome(), CacheOutcome::Compiled);
    let second = PluginHost::new(config.clone())
        .unwrap()
        .load(&wasm)
        .unwrap();
    assert_eq!(second.cache_outcome(), CacheOutcome::Hit);

    // Flip one byte in the middle of the stored artifact.
    let entry = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .expect("a cache entry was written");
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();

    let third = PluginHost::new(config.clone())
        .unwrap()
        .load(&wasm)
        .unwrap();
    assert_eq!(third.cache_outcome(), CacheOutcome::Replaced);
    let v = decide_sample(
        &third,
        &context(Limits::default()),
        "acme/INV_ACME01_20261124_001.csv",
    )
    .unwrap();
    assert!(matches!(v, Verdict::Accept(_)));
    let fourth = PluginHost::new(config).unwrap().load(&wasm).unwrap();
    assert_eq!(fourth.cache_outcome(), CacheOutcome::Hit);
}

#[test]
fn another_engine_configuration_never_reuses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let plain = HostConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..HostConfig::default()
    };
    let fuel = HostConfig {
        fuel: true,
        ..plain.clone()
    };
    let wasm = component("trivial");
    assert_eq!(
        PluginHost::new(plain)
            .unwrap()
            .load(&wasm)
            .unwrap()
            .cache_outcome(),
        CacheOutcome::Compiled
    );
    assert_eq!(
        PluginHost::new(fuel)
            .unwrap()
            .load(&wasm)
            .unwrap()
            .cache_outcome(),
        CacheOutcome::Compiled
    );
}

#[test]
fn garbage_is_not_a_component() {
    let err = host()
        .load_bytes("garbage.wasm", b"definitely not wasm")
        .unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
    assert!(err.to_string().contains("garbage.wasm"), "{err}");
}

#[test]
fn component_of_another_world_is_refused() {
    // The smallest valid component: a header with no imports or exports.
    let empty = b"\0asm\x0d\x00\x01\x00";
    let err = host().load_bytes("empty.wasm", empty).unwrap_err();
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err}");
    assert!(err.to_string().contains("wharf:plugin/partner"), "{err}");
}

#[test]
fn missing_file_names_its_path() {
    let err = host()
        .load(Path::new("/nonexistent/plugin.wasm"))
        .unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/plugin.wasm"),
        "{err}"
    );
}

#[test]
fn plugin_built_against_the_frozen_0_1_0_contract_loads_and_decides() {
    let frozen = load("contract-v0-1-0");
    assert_eq!(frozen.summary().contract_version, "0.1.0");
    let v = decide_bytes(&frozen, &context(Limits::default()), "any.bin", b"12345").unwrap();
    let Verdict::Accept(filing) = v else {
        panic!("expected accept, got {v:?}")
    };
    assert_eq!(filing.description.as_deref(), Some("5 bytes"));
}

fn document() -> wharf::plugin::DocumentInfo {
    wharf::plugin::DocumentInfo {
        node_id: 4711,
        name: "catalog-2026.pdf".into(),
        version: 3,
        size: 5,
        mime_type: "application/pdf".into(),
        folder: "Catalogs".into(),
        sha256: "0".repeat(64),
        categories: Vec::new(),
    }
}

#[test]
fn outbound_and_acknowledgement_calls_reach_the_plugin() {
    let frozen = load("contract-v0-1-0");
    let ctx = context(Limits::default());
    let content = ReadContent::new(Cursor::new(b"%PDF-".to_vec()), 5);
    let delivery = frozen
        .on_export(&ctx, &document(), content)
        .unwrap()
        .expect("a delivery");
    assert_eq!(delivery.folder.to_string(), "out");
    assert_eq!(delivery.name, "catalog-2026.pdf");
    let ack = frozen
        .on_ack(
            &ctx,
            &info("ack.txt", 2),
            ReadContent::new(Cursor::new(b"OK".to_vec()), 2),
        )
        .unwrap();
    assert_eq!(ack, wharf::plugin::AckMatch::NotAnAck);
}

#[test]
fn sdk_plugins_refuse_outbound_documents_by_default() {
    let acme = load("acme-invoices");
    let content = ReadContent::new(Cursor::new(b"%PDF-".to_vec()), 5);
    let refusal = acme
        .on_export(&context(Limits::default()), &document(), content)
        .unwrap()
        .expect_err("the SDK default refuses");
    assert_eq!(refusal.code, "outbound-unsupported");
}

#[test]
fn calls_beyond_the_slot_count_wait_instead_of_failing() {
    let one_slot = PluginHost::new(HostConfig {
        max_concurrent_calls: 1,
        cache_dir: Some(compile_cache_dir()),
        ..HostConfig::default()
    })
    .unwrap();
    let trivial = one_slot.load(&component("trivial")).unwrap();
    let ctx = context(Limits::default());
    std::thread::scope(|s| {
        for t in 0..4 {
            let (trivial, ctx) = (&trivial, &ctx);
            s.spawn(move || {
                for i in 0..10 {
                    let v = decide_bytes(trivial, ctx, &format!("{t}-{i}.csv"), b"x").unwrap();
                    assert!(matches!(v, Verdict::Accept(_)), "{v:?}");
                }
            });
        }
    });
}

#[test]
fn deadlines_hold_after_the_host_that_loaded_the_plugin_is_gone() {
    let spin = {
        let short_lived = PluginHost::new(HostConfig {
            cache_dir: Some(compile_cache_dir()),
            ..HostConfig::default()
        })
        .unwrap();
        short_lived.load(&component("spin-forever")).unwrap()
    };
    let limits = Limits {
        deadline_ms: 100,
        ..Limits::default()
    };
    let err = decide_bytes(&spin, &context(limits), "a.csv", b"x").unwrap_err();
    assert!(matches!(err.kind, FailureKind::Deadline(_)), "{err}");
}

#[test]
fn limits_beyond_the_host_ceiling_are_refused_before_running() {
    let trivial = load("trivial");
    let limits = Limits {
        memory_bytes: 8 * 1024 * 1024 * 1024,
        ..Limits::default()
    };
    let err = decide_bytes(&trivial, &context(limits), "a.csv", b"x").unwrap_err();
    assert!(err.to_string().contains("invalid limits"), "{err}");
}

#[test]
fn a_compile_cache_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = PluginHost::new(HostConfig {
        cache_dir: Some(cache),
        ..HostConfig::default()
    })
    .err()
    .expect("a world-writable cache is refused");
    assert!(err.to_string().contains("chmod 700"), "{err}");
}
