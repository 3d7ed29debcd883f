//! Deploying and rolling back a partner's plugin build on a running service
//! through its admin endpoint: the checks a build must pass, the token the
//! changes need, the history kept, the build a restart starts with, and the
//! build that decides each file. The last test drives a real `wharf run`
//! with the `wharf plugin` commands.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use wharf::admin::AdminToken;
use wharf::runtime::Runtime;
mod common;
use common::{decided_by, wait_for};
use wharf_tests::plugins::{component, workspace_root};

const TOKEN: &str = "deploy-test-token-5f1c";

/// The smallest valid component: a header with no imports or exports.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(component(name)).unwrap()
}

/// A folder with `plugins/<partner>.wasm` holding `plugin`'s build, the
/// partner's inbox, the admin token file and a configuration; returns the
/// configuration text. `extra_runtime` and `extra_partner` are added to
/// their tables.
fn setup(
    dir: &Path,
    partner: &str,
    plugin: &str,
    extra_runtime: &str,
    extra_partner: &str,
) -> String {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(dir.join("partner/inbox")).unwrap();
    std::fs::write(plugins.join(format!("{partner}.wasm")), read(plugin)).unwrap();
    std::fs::write(dir.join("admin.token"), format!("{TOKEN}\n")).unwrap();
    format!(
        "[runtime]\nstate_dir = \"state\"\nplugins_dir = \"plugins\"\nadmin_listen = \"127.0.0.1:0\"\n{extra_runtime}\n\
         [[partner]]\nid = \"{partner}\"\nplugin = \"{partner}.wasm\"\nendpoint = \"file://{}\"\n\
         poll_interval_secs = 1\ncomplete = {{ stable_polls = 1, min_age_secs = 0 }}\n{extra_partner}\n",
        dir.join("partner").display()
    )
}

/// A service running in this process with its real admin endpoint.
struct Service {
    runtime: Arc<Runtime>,
    base: String,
    shutdown: CancellationToken,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
    admin: tokio::task::JoinHandle<std::io::Result<()>>,
    http: reqwest::Client,
}

impl Service {
    async fn start(dir: &Path, text: &str) -> Service {
        let config = wharf::config::parse(text, dir).unwrap_or_else(|p| panic!("{p:?}"));
        let token = AdminToken::from_config(&config.runtime).unwrap();
        let runtime = Arc::new(Runtime::open(config).await.unwrap());
        assert!(
            runtime.unavailable().is_empty(),
            "{:?}",
            runtime.unavailable()
        );
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn({
            let (runtime, shutdown) = (runtime.clone(), shutdown.clone());
            async move { runtime.serve(shutdown).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let admin = tokio::spawn(wharf::admin::serve_runtime(
            listener,
            runtime.clone(),
            token,
            shutdown.clone().cancelled_owned(),
        ));
        Service {
            runtime,
            base,
            shutdown,
            serving,
            admin,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    async fn stop(self) {
        // Close the client's kept-alive connections first: the admin
        // server's connection tasks hold the runtime until they end.
        drop(self.http);
        self.shutdown.cancel();
        self.serving.await.unwrap().unwrap();
        self.admin.await.unwrap().unwrap();
        // Connection tasks wind down just after the server returns.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while Arc::strong_count(&self.runtime) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            Arc::strong_count(&self.runtime),
            1,
            "nothing else holds the runtime"
        );
    }

    fn active(&self) -> String {
        self.runtime.partners()[0]
            .inbound
            .plugin()
            .digest()
            .to_string()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str(&r.text().await.unwrap()).unwrap(),
        )
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"));
        (status, json)
    }

    async fn deploy(&self, partner: &str, wasm: &[u8]) -> (u16, Value) {
        self.post(
            &format!("/plugins/{partner}/deploy"),
            Some(TOKEN),
            wasm.to_vec(),
        )
        .await
    }

    async fn rollback(&self, partner: &str, to: Option<&str>) -> (u16, Value) {
        let query = to.map(|t| format!("?to={t}")).unwrap_or_default();
        self.post(
            &format!("/plugins/{partner}/rollback{query}"),
            Some(TOKEN),
            Vec::new(),
        )
        .await
    }

    async fn history(&self, partner: &str) -> Value {
        let (status, body) = self.get(&format!("/plugins/{partner}/history")).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Drop `name` into the partner's inbox and return the digest of the build
/// that decided it.
async fn file_one(service: &Service, dir: &Path, name: &str) -> String {
    std::fs::write(dir.join("partner/inbox").join(name), name.as_bytes()).unwrap();
    wait_for(&format!("{name} filed"), async || {
        decided_by(&service.runtime, name).await.is_some()
    })
    .await;
    decided_by(&service.runtime, name).await.unwrap()
}

fn digests(history: &Value) -> Vec<(String, String)> {
    history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["digest"].as_str().unwrap().to_string(),
                h["how"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_refuse_roll_back_and_restart() {
    let (trivial, other) = (read("trivial"), read("contract-v0-1-0"));
    let (first, second) = (sha256(&trivial), sha256(&other));
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let text = setup(
        dir,
        "demo",
        "trivial",
        "admin_token_file = \"admin.token\"",
        "",
    );
    let service = Service::start(dir, &text).await;
    let installed = || std::fs::read(dir.join("plugins/demo.wasm")).unwrap();

    // At start: the build from the plugins folder, recorded as such.
    let (status, list) = service.get("/plugins").await;
    assert_eq!(status, 200);
    let demo = &list["partners"][0];
    assert_eq!(demo["partner"], "demo");
    assert_eq!(demo["running"], true);
    assert_eq!(demo["active"]["digest"], first.as_str());
    assert_eq!(demo["active"]["how"], "start");
    assert_eq!(demo["active"]["actor"], "plugins-folder");
    assert!(demo["active"]["since"].is_string(), "{demo}");
    assert_eq!(demo["last_refusal"], Value::Null);
    assert_eq!(file_one(&service, dir, "one.txt").await, first);

    // Changes need the token.
    let path = "/plugins/demo/deploy";
    let (status, body) = service.post(path, None, other.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("token is required")
    );
    let (status, body) = service
        .post(path, Some("not-the-token"), other.clone())
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "wrong admin token");
    let (status, _) = service
        .post("/plugins/demo/rollback", Some("x"), Vec::new())
        .await;
    assert_eq!(status, 401);
    assert_eq!(service.active(), first);

    // Refused builds: not a component, a component of another world.
    let garbage = b"\0asm this is not a component".to_vec();
    let (status, body) = service.deploy("demo", &garbage).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("is not a loadable component"),
        "{body}"
    );
    let (status, body) = service.deploy("demo", EMPTY_COMPONENT).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("does not fit the wharf:plugin/partner world"),
        "{body}"
    );
    assert_eq!(service.active(), first);
    assert_eq!(installed(), trivial);
    let (_, list) = service.get("/plugins").await;
    let refusal = &list["partners"][0]["last_refusal"];
    assert_eq!(refusal["digest"], sha256(EMPTY_COMPONENT).as_str());
    assert_eq!(refusal["how"], "deploy");
    assert_eq!(refusal["actor"], "admin-token");
    assert!(
        refusal["reason"]
            .as_str()
            .unwrap()
            .contains("wharf:plugin/partner"),
        "{refusal}"
    );
    assert_eq!(list["partners"][0]["active"]["digest"], first.as_str());
    // A file now is still decided by the running build.
    assert_eq!(file_one(&service, dir, "two.txt").await, first);

    // A good build: checked, installed, swapped in.
    let (status, change) = service.deploy("demo", &other).await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(change["swapped"], true);
    assert_eq!(change["active"]["digest"], second.as_str());
    assert_eq!(change["active"]["name"], "contract-v0-1-0");
    assert_eq!(change["previous"]["digest"], first.as_str());
    assert_eq!(service.active(), second);
    assert_eq!(installed(), other);
    assert_eq!(file_one(&service, dir, "three.txt").await, second);
    let history = service.history("demo").await;
    assert_eq!(history["active"], second.as_str());
    assert_eq!(
        digests(&history),
        [
            (second.clone(), "deploy".to_string()),
            (first.clone(), "start".to_string())
        ]
    );
    assert_eq!(history["history"][0]["actor"], "admin-token");
    assert_eq!(history["refusals"].as_array().unwrap().len(), 2);
    assert_eq!(history["refusals"][1]["digest"], sha256(&garbage).as_str());
    // The watcher sees the installed file, finds it running, does nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(digests(&service.history("demo").await).len(), 2);
    let metrics = service.runtime.metrics().encode();
    assert!(
        metrics.contains(r#"wharf_plugin_reloads_total{partner="demo",result="swapped"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"wharf_plugin_reloads_total{partner="demo",result="refused"} 2"#),
        "{metrics}"
    );
    // The same build again changes nothing.
    let (status, change) = service.deploy("demo", &other).await;
    assert_eq!(status, 200);
    assert_eq!(change["swapped"], false);

    // Rollback: by default, the build before the current one.
    let (status, change) = service.rollback("demo", None).await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(change["active"]["digest"], first.as_str());
    assert_eq!(change["previous"]["digest"], second.as_str());
    assert_eq!(service.active(), first);
    assert_eq!(installed(), trivial);
    assert_eq!(file_one(&service, dir, "four.txt").await, first);
    // ...or to a given build, named by the beginning of its digest.
    let (status, change) = service.rollback("demo", Some(&second[..12])).await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(service.active(), second);
    assert_eq!(installed(), other);
    let (status, body) = service.rollback("demo", Some(&sha256(b"never ran"))).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("never ran a build")
    );
    let (status, body) = service.rollback("demo", Some("not-hex")).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = service.deploy("nobody", &other).await;
    assert_eq!(status, 404);
    let history = service.history("demo").await;
    assert_eq!(
        digests(&history),
        [
            (second.clone(), "rollback".to_string()),
            (first.clone(), "rollback".to_string()),
            (second.clone(), "deploy".to_string()),
            (first.clone(), "start".to_string())
        ]
    );
    // Every build that ran is kept by digest.
    for (digest, bytes) in [(&first, &trivial), (&second, &other)] {
        let kept = std::fs::read(dir.join(format!("state/plugins/{digest}.wasm"))).unwrap();
        assert_eq!(&kept, bytes);
    }
    service.stop().await;

    // A restart starts the build deployed last, and the history goes on.
    let service = Service::start(dir, &text).await;
    assert_eq!(service.active(), second);
    let (_, list) = service.get("/plugins").await;
    assert_eq!(list["partners"][0]["active"]["digest"], second.as_str());
    assert_eq!(list["partners"][0]["active"]["how"], "rollback");
    assert_eq!(digests(&service.history("demo").await).len(), 4);
    assert_eq!(file_one(&service, dir, "five.txt").await, second);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_builds_cannot_change() {
    let dir = tempfile::tempdir().unwrap();
    let text = setup(dir.path(), "demo", "trivial", "", "");
    let service = Service::start(dir.path(), &text).await;
    let other = read("contract-v0-1-0");
    for path in ["/plugins/demo/deploy", "/plugins/demo/rollback"] {
        for token in [None, Some(TOKEN)] {
            let (status, body) = service.post(path, token, other.clone()).await;
            assert_eq!(status, 403, "{path}: {body}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("no admin token configured"),
                "{body}"
            );
        }
    }
    assert_eq!(service.active(), sha256(&read("trivial")));
    // Reading needs no token; the other routes are as they were.
    let (status, list) = service.get("/plugins").await;
    assert_eq!(status, 200);
    assert_eq!(list["partners"][0]["partner"], "demo");
    let (status, body) = service.get("/plugins/nobody/history").await;
    assert_eq!(status, 404, "{body}");
    let r = service
        .http
        .get(format!("{}/healthz", service.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_must_pass_the_partners_fixtures() {
    let fixtures = workspace_root().join("plugins/acme-invoices/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let text = setup(
        dir,
        "acme",
        "trivial",
        "admin_token_file = \"admin.token\"",
        &format!("fixtures = {:?}", fixtures.display().to_string()),
    );
    let service = Service::start(dir, &text).await;
    let (trivial, acme) = (read("trivial"), read("acme-invoices"));

    let (status, change) = service.deploy("acme", &acme).await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(change["swapped"], true);
    assert_eq!(change["active"]["name"], "acme-invoices");
    assert_eq!(change["fixtures_passed"], 5);

    // The trivial build files everything into Inbox: the fixtures say no.
    let (status, body) = service.deploy("acme", &trivial).await;
    assert_eq!(status, 422, "{body}");
    let reason = body["error"].as_str().unwrap();
    assert!(reason.contains("5 of 5 fixture(s) failed"), "{reason}");
    assert!(
        reason.contains(
            "INV_ACME01_20261124_002.csv: expected reject supplier-mismatch, got accept into Inbox"
        ),
        "{reason}"
    );
    assert_eq!(service.active(), sha256(&acme));
    assert_eq!(std::fs::read(dir.join("plugins/acme.wasm")).unwrap(), acme);
    // A rollback goes through the same check.
    let (status, body) = service.rollback("acme", None).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(service.active(), sha256(&acme));
    let history = service.history("acme").await;
    let refusals = history["refusals"].as_array().unwrap();
    assert_eq!(refusals.len(), 2);
    assert_eq!(refusals[0]["how"], "rollback");
    assert_eq!(refusals[1]["how"], "deploy");
    service.stop().await;
}

/// `wharf` with `args`, no admin settings from the environment.
fn wharf(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
    command
        .args(args)
        .env_remove("WHARF_ADMIN")
        .env_remove("WHARF_ADMIN_TOKEN")
        .env("WHARF_LOG", "warn");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("wharf runs")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `wharf run` in the background, its log collected.
struct Running {
    child: std::process::Child,
    log: Arc<Mutex<String>>,
    base: String,
}

impl Running {
    fn start(config: &Path, env: &[(&str, &str)]) -> Running {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
        command
            .args(["run", "--config", config.to_str().unwrap()])
            .env("WHARF_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("wharf run starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("admin endpoint on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(url);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("wharf run did not start: {}", log.lock().unwrap());
            }
        };
        Running { child, log, base }
    }

    /// Stop it as a service manager would, and return its log.
    fn stop(mut self) -> String {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: signalling the child this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}: {}", self.log.lock().unwrap());
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("wharf run did not stop: {}", self.log.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let the reader thread take the last lines.
        std::thread::sleep(Duration::from_millis(200));
        self.log.lock().unwrap().clone()
    }
}

#[test]
fn the_plugin_commands_drive_a_running_service() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let text = setup(
        dir,
        "demo",
        "trivial",
        "admin_token_env = \"DEPLOY_TEST_ADMIN_TOKEN\"",
        "",
    );
    let config = dir.join("wharf.toml");
    std::fs::write(&config, text).unwrap();
    let service = Running::start(&config, &[("DEPLOY_TEST_ADMIN_TOKEN", TOKEN)]);
    let admin_url = service.base.clone();
    let admin = admin_url.as_str();
    let other: PathBuf = component("contract-v0-1-0");
    let (first, second) = (sha256(&read("trivial")), sha256(&read("contract-v0-1-0")));

    let o = wharf(&["plugin", "list", "--admin", admin, "--json"], &[]);
    assert!(o.status.success(), "{}", err(&o));
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list["partners"][0]["active"]["digest"], first.as_str());

    // No token, then the wrong one: refused, with a hint.
    let deploy = [
        "plugin",
        "deploy",
        other.to_str().unwrap(),
        "--partner",
        "demo",
        "--admin",
        admin,
    ];
    let o = wharf(&deploy, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(
        err(&o).contains("an admin token is required"),
        "{}",
        err(&o)
    );
    assert!(err(&o).contains("--token-env"), "{}", err(&o));
    let o = wharf(&deploy, &[("WHARF_ADMIN_TOKEN", "guess")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("wrong admin token"), "{}", err(&o));

    let with_env = [&deploy[..], &["--token-env", "MY_TOKEN"]].concat();
    let o = wharf(&with_env, &[("MY_TOKEN", TOKEN)]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("deployed to demo: contract-v0-1-0 0.1.0"),
        "{}",
        out(&o)
    );
    assert!(out(&o).contains(&second), "{}", out(&o));

    // A refused build: exit 1, the reason on stderr.
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm at all").unwrap();
    let token_file = dir.join("admin.token");
    let o = wharf(
        &[
            "plugin",
            "deploy",
            garbage.to_str().unwrap(),
            "--partner",
            "demo",
            "--admin",
            admin,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(err(&o).contains("build refused"), "{}", err(&o));
    assert!(
        err(&o).contains("is not a loadable component"),
        "{}",
        err(&o)
    );

    let o = wharf(&["plugin", "history", "demo", "--admin", admin], &[]);
    assert!(o.status.success(), "{}", err(&o));
    let history = out(&o);
    assert!(history.contains("deploy"), "{history}");
    assert!(history.contains("admin-token"), "{history}");
    assert!(
        history
            .lines()
            .any(|l| l.starts_with('*') && l.contains(&second)),
        "the running build is marked: {history}"
    );
    assert!(history.contains("refused builds:"), "{history}");

    let o = wharf(
        &[
            "plugin",
            "rollback",
            "demo",
            "--admin",
            admin,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("rolled back demo"), "{}", out(&o));
    assert_eq!(
        std::fs::read(dir.join("plugins/demo.wasm")).unwrap(),
        read("trivial")
    );
    let o = wharf(
        &[
            "plugin",
            "rollback",
            "demo",
            "--to",
            &second[..10],
            "--admin",
            admin,
            "--json",
        ],
        &[("WHARF_ADMIN_TOKEN", TOKEN)],
    );
    assert!(o.status.success(), "{}", err(&o));
    let change: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(change["active"]["digest"], second.as_str());

    let o = wharf(&["plugin", "list", "--admin", admin], &[]);
    assert!(o.status.success(), "{}", err(&o));
    let table = out(&o);
    assert!(table.contains("contract-v0-1-0"), "{table}");
    assert!(table.contains("rollback"), "{table}");
    assert!(table.contains(&second[..12]), "{table}");

    let log = service.stop();
    assert!(log.contains("replaces"), "{log}");
    assert!(!log.contains(TOKEN), "the token leaked into the log: {log}");

    // The service is gone: a clear message.
    let o = wharf(&["plugin", "list", "--admin", admin], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("is the service running?"), "{}", err(&o));
}
