//! The `wharf` binary, run as a user would run it.

use std::process::{Command, Output};

use wharf_tests::plugins::{component, workspace_root};

fn wharf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(args)
        .env("XDG_CACHE_HOME", wharf_tests::plugins::compile_cache_dir())
        .env("WHARF_LOG", "warn")
        .current_dir(workspace_root())
        .output()
        .expect("wharf runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn plugin_check_prints_world_exports_and_each_verdict() {
    let acme = component("acme-invoices");
    let out = wharf(&[
        "plugin",
        "check",
        acme.to_str().unwrap(),
        "examples/samples/acme/INV_ACME01_20261124_001.csv",
        "examples/samples/acme/invoice-november.csv",
    ]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("plugin    acme-invoices 0.1.0"), "{text}");
    assert!(
        text.contains("world     wharf:plugin/partner@0.1.0"),
        "{text}"
    );
    assert!(text.contains("wharf:plugin/inbound@0.1.0"), "{text}");
    assert!(text.contains("verdict   accept"), "{text}");
    assert!(
        text.contains("target    folder Invoices/ACME01/2026/11"),
        "{text}"
    );
    assert!(
        text.contains("verdict   reject\ncode      bad-name"),
        "{text}"
    );
}

#[test]
fn plugin_check_json_is_machine_readable() {
    let nw = component("northwind-quality");
    let out = wharf(&[
        "plugin",
        "check",
        "--json",
        "--set",
        "reviewer=qa.lead",
        nw.to_str().unwrap(),
        "examples/samples/northwind/QC_100234_COC_PO-88121.pdf",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(doc["plugin"]["name"], "northwind-quality");
    assert_eq!(doc["world"]["contract_version"], "0.1.0");
    let verdict = &doc["results"][0]["verdict"];
    assert_eq!(verdict["verdict"], "accept");
    assert_eq!(verdict["workflow"]["assignee"], "qa.lead");
}

#[test]
fn plugin_failure_exits_non_zero_with_a_clear_error() {
    let panicker = component("panicker");
    let out = wharf(&[
        "plugin",
        "check",
        panicker.to_str().unwrap(),
        "examples/samples/acme/invoice-november.csv",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("plugin panicker 0.1.0 failed on invoice-november.csv: panicked"),
        "{text}"
    );
}

#[test]
fn missing_component_is_a_usage_error_naming_the_file() {
    let out = wharf(&["plugin", "check", "no/such/plugin.wasm"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read plugin no/such/plugin.wasm"),
        "{err}"
    );
}

#[test]
fn config_check_reports_every_problem_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wharf.toml");
    std::fs::write(
        &file,
        "[[partner]]\nid = \"acme\"\nplugin = \"nope.wasm\"\nendpoint = \"ftp://127.0.0.1/\"\npassword = \"hunter2\"\n",
    )
    .unwrap();
    let out = wharf(&["config", "check", "-c", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wharf.toml:5: partner[0].password: secrets are never read"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    std::fs::write(
        &file,
        "[[partner]]\nid = \"acme\"\nplugin = \"nope.wasm\"\nendpoint = \"ftp://127.0.0.1/\"\npassword_env = \"ACME_PW\"\n",
    )
    .unwrap();
    let out = wharf(&["config", "check", "-c", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wharf.toml:3: partner[0].plugin:"), "{err}");
}

#[test]
fn ecm_commands_show_what_the_embedded_repository_holds() {
    use sha2::Digest;
    use wharf_ecm::{BytesSource, CollisionPolicy, NewDocument, NodeId, Repository};

    let state = tempfile::tempdir().unwrap();
    let content = b"invoice_no,amount\nA-1,10.00\n";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (repo, _) = wharf_ecm::embedded::Embedded::open(state.path())
            .await
            .unwrap();
        let folder = repo
            .ensure_folder(NodeId::ENTERPRISE, &["Invoices".to_string()])
            .await
            .unwrap();
        let doc = NewDocument {
            parent: folder,
            name: "INV_1.csv".into(),
            description: None,
            mime_type: "text/csv".into(),
            sha256: hex::encode(sha2::Sha256::digest(content)),
            categories: Vec::new(),
            policy: CollisionPolicy::Reject,
        };
        repo.store_document(&doc, &BytesSource(content.to_vec().into()))
            .await
            .unwrap();
    });
    let state_arg = state.path().to_str().unwrap();

    let ls = wharf(&["ecm", "ls", "--state", state_arg, "/Invoices"]);
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    assert!(stdout(&ls).contains("INV_1.csv"), "{}", stdout(&ls));

    let cat = wharf(&["ecm", "cat", "--state", state_arg, "/Invoices/INV_1.csv"]);
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert_eq!(cat.stdout, content);

    let help = wharf(&["ecm", "serve", "--help"]);
    assert!(
        stdout(&help).contains("DEVELOPMENT AND TEST SERVER"),
        "{}",
        stdout(&help)
    );
}

#[test]
fn plugin_test_passes_the_example_plugins_fixtures() {
    for plugin in ["acme-invoices", "northwind-quality"] {
        let component = component(plugin);
        let fixtures = format!("plugins/{plugin}/fixtures");
        let out = wharf(&["plugin", "test", component.to_str().unwrap(), &fixtures]);
        let text = stdout(&out);
        assert!(out.status.success(), "{plugin}: {text}");
        assert!(text.contains(" passed, 0 failed"), "{text}");
    }
}

#[test]
fn plugin_test_shows_a_diff_and_fails_on_a_changed_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let sample = workspace_root().join("examples/samples/acme/INV_ACME01_20261124_002.csv");
    std::fs::copy(&sample, dir.path().join("INV_ACME01_20261124_002.csv")).unwrap();
    std::fs::copy(&sample, dir.path().join("INV_ACME01_20261124_005.csv")).unwrap();
    std::fs::write(
        dir.path().join("INV_ACME01_20261124_002.csv.expected.json"),
        r#"{"verdict": "reject", "code": "bad-header", "message": "x", "details": []}"#,
    )
    .unwrap();
    let acme = component("acme-invoices");
    let out = wharf(&[
        "plugin",
        "test",
        acme.to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("FAILED  INV_ACME01_20261124_002.csv"),
        "{text}"
    );
    assert!(text.contains("-   \"code\": \"bad-header\","), "{text}");
    assert!(
        text.contains("+   \"code\": \"supplier-mismatch\","),
        "{text}"
    );
    assert!(text.contains("INV_ACME01_20261124_005.csv: no "), "{text}");
    assert!(text.contains("0 passed, 2 failed"), "{text}");

    // --update records the actual verdicts; the next run passes.
    let update = wharf(&[
        "plugin",
        "test",
        "--update",
        acme.to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ]);
    assert!(update.status.success(), "{}", stdout(&update));
    let again = wharf(&[
        "plugin",
        "test",
        acme.to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ]);
    assert!(again.status.success(), "{}", stdout(&again));
}

#[test]
fn dev_runs_the_samples_through_the_example_plugins() {
    let acme = component("acme-invoices");
    component("northwind-quality");
    let plugins = acme.parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let args = [
        "dev",
        "--dir",
        demo.to_str().unwrap(),
        "--plugins",
        plugins.to_str().unwrap(),
    ];
    let out = wharf(&args);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // partner, filed, quarantined, ignored, deferred, retrying, waiting
    let row = |partner: &str| {
        text.lines()
            .find(|l| l.starts_with(partner))
            .map(|l| l.split_whitespace().skip(1).take(6).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(row("acme "), ["1", "2", "0", "0", "0", "0"], "{text}");
    assert_eq!(row("northwind "), ["2", "2", "0", "0", "0", "0"], "{text}");
    assert!(text.contains("bad-name"), "{text}");
    assert!(text.contains("wharf ecm tasks --state"), "{text}");
    // What it printed is really there: the invoice in the repository, the
    // files moved on the partner's side.
    let ecm = demo.join("state/ecm");
    let ls = wharf(&[
        "ecm",
        "ls",
        "--state",
        ecm.to_str().unwrap(),
        "/Partners/acme/Invoices/ACME01/2026/11",
    ]);
    assert!(
        stdout(&ls).contains("INV_ACME01_20261124_001.csv"),
        "{}",
        stdout(&ls)
    );
    let partners = demo.join("partners");
    assert!(
        partners
            .join("acme/archive/INV_ACME01_20261124_001.csv")
            .is_file()
    );
    assert!(
        partners
            .join("acme/error/invoice-november.csv.error.txt")
            .is_file()
    );
    assert_eq!(
        std::fs::read_dir(partners.join("acme/inbox"))
            .unwrap()
            .count(),
        0
    );
    // A second run starts afresh from the samples.
    let again = wharf(&args);
    assert!(again.status.success());
    assert_eq!(row("acme "), ["1", "2", "0", "0", "0", "0"]);
    // A folder wharf did not make is never wiped.
    let foreign = dir.path().join("mine");
    std::fs::create_dir_all(&foreign).unwrap();
    let refused = wharf(&[
        "dev",
        "--dir",
        foreign.to_str().unwrap(),
        "--plugins",
        plugins.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
}

#[test]
fn plugin_new_makes_a_crate_that_builds_and_passes_its_own_tests_and_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().to_str().unwrap();
    let out = wharf(&["plugin", "new", "demo", "--dir", parent]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("wharf plugin test target/wasm32-wasip2/release/demo.wasm fixtures"),
        "{}",
        stdout(&out)
    );
    let root = dir.path().join("demo");

    // The crate is its own workspace outside this one. Its build directory
    // sits under the target directory, so later runs reuse the dependencies.
    let target = wharf_tests::plugins::compile_cache_dir()
        .parent()
        .expect("the cache is under the target directory")
        .join("scaffold-build");
    let cargo = |args: &[&str]| {
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(args)
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .expect("cargo runs")
    };
    let both = |o: &Output| format!("{}\n{}", stdout(o), String::from_utf8_lossy(&o.stderr));

    // Its native unit tests run against the SDK's in-memory host.
    let unit = cargo(&["test"]);
    assert!(unit.status.success(), "{}", both(&unit));
    assert!(
        stdout(&unit).contains("5 passed; 0 failed"),
        "{}",
        both(&unit)
    );

    // Its component decides its fixtures as recorded.
    let build = cargo(&["build", "--release", "--target", "wasm32-wasip2"]);
    assert!(build.status.success(), "{}", both(&build));
    let component = target.join("wasm32-wasip2/release/demo.wasm");
    let fixtures = root.join("fixtures");
    let out = wharf(&[
        "plugin",
        "test",
        component.to_str().unwrap(),
        fixtures.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", both(&out));
    assert!(text.contains("ok      notes.txt"), "{text}");
    assert!(text.contains("ok      orders-2026-11.csv"), "{text}");
    assert!(text.contains("2 passed, 0 failed"), "{text}");

    // An existing folder is refused and left as it was.
    let again = wharf(&["plugin", "new", "demo", "--dir", parent]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        both(&again)
    );
    assert!(root.join("src/lib.rs").is_file());
}
