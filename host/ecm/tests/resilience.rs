//! The client against a misbehaving facade: expired tickets, server errors,
//! lost answers and timeouts on a schedule. Retries must never duplicate.

mod common;

use std::time::Duration;

use axum::http::Method;
use common::*;
use wharf_ecm::facade::{FaultAction, FaultRule};
use wharf_ecm::otcs::{OtcsClient, Secret};
use wharf_ecm::*;

fn rule(method: Method, path: &str, action: FaultAction, times: u32) -> FaultRule {
    FaultRule {
        method: Some(method),
        path_contains: path.into(),
        action,
        times,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_expiry_forces_one_relogin_mid_run() {
    let r = remote().await;
    let f = folder(&r.client, "expiry").await;
    assert_eq!(r.client.login_count(), 1);
    for i in 0..6 {
        if i % 2 == 1 {
            r.facade.expire_tickets();
        }
        let data = format!("doc {i}").into_bytes();
        store(
            &r.client,
            &doc(f, &format!("d{i}.txt"), &data, CollisionPolicy::Reject),
            &data,
        )
        .await
        .unwrap();
        // A download after expiry re-authenticates as well.
        r.facade.expire_tickets();
        assert_eq!(
            fetch(&r.client, r.client.children(f).await.unwrap()[0].id, None)
                .await
                .len(),
            5
        );
    }
    assert_eq!(r.client.children(f).await.unwrap().len(), 6);
    assert!(
        r.client.login_count() >= 7,
        "logins: {}",
        r.client.login_count()
    );
    assert_eq!(r.client.login_count(), r.facade.logins());
    r.facade.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tickets_expire_on_the_server() {
    let local = local().await;
    let mut cfg = facade_config();
    cfg.ticket_idle = Duration::from_millis(50);
    let facade =
        wharf_ecm::facade::Facade::start(local.repo.clone(), cfg, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let client = OtcsClient::new(client_config(&facade.base_url())).unwrap();
    client.node(NodeId::ENTERPRISE).await.unwrap();
    // Wait (polling a clock, not the server) until the ticket is surely stale.
    let deadline = std::time::Instant::now() + Duration::from_millis(120);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.node(NodeId::ENTERPRISE).await.unwrap();
    assert_eq!(client.login_count(), 2);
    facade.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_without_leaking_it() {
    let r = remote().await;
    let mut cfg = client_config(&r.facade.base_url());
    cfg.password = Secret::new("not-the-password-xyz");
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("not-the-password-xyz"), "{shown}");
    let client = OtcsClient::new(cfg).unwrap();
    let err = client.node(NodeId::ENTERPRISE).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    assert!(!err.to_string().contains("not-the-password-xyz"));
    assert!(!format!("{client:?}").contains("not-the-password-xyz"));
    r.facade.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_retries_never_duplicate() {
    let r = remote().await;
    let f = folder(&r.client, "faults").await;
    let faults = r.facade.faults();
    // Refused before acting, acted with the answer lost, acted with the
    // answer held past the client's timeout: the document exists once.
    faults.push(rule(
        Method::POST,
        "/api/v2/nodes",
        FaultAction::Before(503),
        1,
    ));
    faults.push(rule(
        Method::POST,
        "/api/v2/nodes",
        FaultAction::After(500),
        1,
    ));
    let data = b"important invoice".to_vec();
    let s = store(
        &r.client,
        &doc(f, "inv.txt", &data, CollisionPolicy::NewDocument),
        &data,
    )
    .await
    .unwrap();
    assert_eq!(faults.injected(), 2);
    assert_eq!(
        s.outcome,
        StoreOutcome::AlreadyPresent,
        "the lost answer's document is found"
    );
    let kids = r.client.children(f).await.unwrap();
    assert_eq!(kids.len(), 1, "{kids:?}");
    assert_eq!(fetch(&r.client, s.node, None).await, data);

    faults.push(rule(
        Method::POST,
        "/api/v2/nodes",
        FaultAction::Delay(Duration::from_secs(7)),
        1,
    ));
    let data2 = b"second invoice".to_vec();
    let s2 = store(
        &r.client,
        &doc(f, "inv2.txt", &data2, CollisionPolicy::NewDocument),
        &data2,
    )
    .await
    .unwrap();
    assert_eq!(faults.injected(), 3);
    assert_eq!(r.client.children(f).await.unwrap().len(), 2);
    assert_eq!(fetch(&r.client, s2.node, None).await, data2);
    r.facade.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_version_answer_adds_one_version() {
    let r = remote().await;
    let f = folder(&r.client, "vfaults").await;
    let s = store(
        &r.client,
        &doc(f, "c.xml", b"v1", CollisionPolicy::AddVersion),
        b"v1",
    )
    .await
    .unwrap();
    let faults = r.facade.faults();
    faults.push(rule(Method::POST, "/versions", FaultAction::After(502), 1));
    faults.push(rule(
        Method::PUT,
        "/categories",
        FaultAction::Before(503),
        1,
    ));
    let s2 = store(
        &r.client,
        &doc(f, "c.xml", b"v2", CollisionPolicy::AddVersion),
        b"v2",
    )
    .await
    .unwrap();
    assert_eq!(s2.node, s.node);
    assert_eq!(s2.outcome, StoreOutcome::VersionAdded);
    assert_eq!(r.client.versions(s.node).await.unwrap().len(), 2);
    // The checksum was recorded, so the same content again is recognised.
    let s3 = store(
        &r.client,
        &doc(f, "c.xml", b"v2", CollisionPolicy::AddVersion),
        b"v2",
    )
    .await
    .unwrap();
    assert_eq!(s3.outcome, StoreOutcome::AlreadyPresent);
    assert_eq!(r.client.versions(s.node).await.unwrap().len(), 2);
    r.facade.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_creation_survives_lost_answers_and_throttling() {
    let r = remote().await;
    let faults = r.facade.faults();
    faults.push(rule(
        Method::POST,
        "/api/v2/nodes",
        FaultAction::After(500),
        2,
    ));
    faults.push(rule(Method::GET, "/nodes", FaultAction::Before(429), 2));
    let path: Vec<String> = ["Faulty", "A", "B"].map(String::from).into();
    let id = r
        .client
        .ensure_folder(NodeId::ENTERPRISE, &path)
        .await
        .unwrap();
    assert_eq!(r.client.node(id).await.unwrap().name, "B");
    let top = r.client.children(NodeId::ENTERPRISE).await.unwrap();
    assert_eq!(top.iter().filter(|n| n.name == "Faulty").count(), 1);
    assert_eq!(faults.injected(), 4);
    r.facade.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_errors_give_up_as_transient() {
    let r = remote().await;
    r.facade.faults().push(rule(
        Method::GET,
        "/api/v2/nodes/2000",
        FaultAction::Before(503),
        100,
    ));
    let err = r.client.node(NodeId::ENTERPRISE).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(r.facade.faults().injected(), 6, "one try plus five retries");
    r.facade.faults().clear();
    // Client errors are not retried.
    let err = r.client.node(NodeId(424_242)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    r.facade.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_verifies_the_declared_checksum() {
    let l = local().await;
    let f = folder(&l.repo, "sha").await;
    let mut d = doc(f, "x.txt", b"abc", CollisionPolicy::Reject);
    d.sha256 = sha(b"something else");
    let err = store(&l.repo, &d, b"abc").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid);
    assert!(l.repo.children(f).await.unwrap().is_empty());
    // Audit events written by the host are read back in order.
    let ev = AuditEvent {
        action: "received".into(),
        actor: "partner:acme".into(),
        node: None,
        sha256: Some(sha(b"abc")),
        detail: "INV_1.csv from /out".into(),
    };
    l.repo.record_event(&ev).await.unwrap();
    let all = l.repo.audit(None).await.unwrap();
    assert_eq!(all.last().unwrap().event, ev);
}
