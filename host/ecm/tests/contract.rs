//! The repository contract, run against the embedded repository directly and
//! against the Content Server client talking over HTTP to the facade.

mod common;

use std::collections::HashSet;

use common::*;
use wharf_ecm::embedded::Embedded;
use wharf_ecm::*;

/// Categories as text, without the client's checksum bookkeeping.
fn as_text(cats: &[Category]) -> HashSet<(String, String, String)> {
    cats.iter()
        .filter(|c| c.name != "wharf")
        .flat_map(|c| {
            c.attributes
                .iter()
                .map(|a| (c.name.clone(), a.name.clone(), a.value.as_text()))
        })
        .collect()
}

async fn folders<R: Repository>(r: &R, _: &Embedded) {
    let path: Vec<String> = ["Partners", "ACME", "Inbound"].map(String::from).into();
    let a = r.ensure_folder(NodeId::ENTERPRISE, &path).await.unwrap();
    let b = r.ensure_folder(NodeId::ENTERPRISE, &path).await.unwrap();
    assert_eq!(a, b, "ensuring twice gives the same folder");
    let n = r.node(a).await.unwrap();
    assert_eq!(n.name, "Inbound");
    assert_eq!(n.kind, NodeKind::Folder);
    let parent = n.parent.unwrap();
    assert_eq!(r.node(parent).await.unwrap().name, "ACME");
    let kids = r.children(parent).await.unwrap();
    assert_eq!(kids.iter().filter(|k| k.name == "Inbound").count(), 1);
    let err = r
        .ensure_folder(NodeId::ENTERPRISE, &["a/b".to_string()])
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid);
}

async fn round_trip<R: Repository>(r: &R, _: &Embedded) {
    let f = folder(r, "roundtrip").await;
    let data = b"INV-1001;ACME;12.50\n".repeat(100);
    let mut d = doc(f, "INV_1001.csv", &data, CollisionPolicy::Reject);
    d.categories = vec![invoice("ACME", 1001, "Approved")];
    let s = store(r, &d, &data).await.unwrap();
    assert_eq!(s.outcome, StoreOutcome::Created);
    assert_eq!(s.version, 1);
    assert_eq!(s.name, "INV_1001.csv");
    let n = r.node(s.node).await.unwrap();
    assert_eq!(n.kind, NodeKind::Document);
    assert_eq!(n.size, Some(data.len() as u64));
    assert_eq!(n.mime_type.as_deref(), Some("text/plain"));
    assert_eq!(n.parent, Some(f));
    assert_eq!(fetch(r, s.node, None).await, data);
    assert_eq!(fetch(r, s.node, Some(1)).await, data);
    let vs = r.versions(s.node).await.unwrap();
    assert_eq!(vs.len(), 1);
    assert_eq!(vs[0].size, data.len() as u64);
    assert_eq!(
        as_text(&r.categories(s.node).await.unwrap()),
        as_text(&d.categories)
    );
    // Empty content is a valid document too.
    let e = store(r, &doc(f, "empty.txt", b"", CollisionPolicy::Reject), b"")
        .await
        .unwrap();
    assert_eq!(fetch(r, e.node, None).await, b"");
}

async fn collision_add_version<R: Repository>(r: &R, _: &Embedded) {
    let f = folder(r, "addversion").await;
    let s1 = store(
        r,
        &doc(f, "cat.xml", b"v1", CollisionPolicy::AddVersion),
        b"v1",
    )
    .await
    .unwrap();
    let s2 = store(
        r,
        &doc(f, "cat.xml", b"v2", CollisionPolicy::AddVersion),
        b"v2",
    )
    .await
    .unwrap();
    assert_eq!(s2.outcome, StoreOutcome::VersionAdded);
    assert_eq!(s2.node, s1.node);
    assert_eq!(s2.version, 2);
    assert_eq!(fetch(r, s1.node, None).await, b"v2");
    assert_eq!(fetch(r, s1.node, Some(1)).await, b"v1");
    assert_eq!(r.versions(s1.node).await.unwrap().len(), 2);
    assert_eq!(r.children(f).await.unwrap().len(), 1);
}

async fn collision_new_document<R: Repository>(r: &R, _: &Embedded) {
    let f = folder(r, "newdoc").await;
    store(
        r,
        &doc(f, "po.pdf", b"one", CollisionPolicy::NewDocument),
        b"one",
    )
    .await
    .unwrap();
    let s = store(
        r,
        &doc(f, "po.pdf", b"two", CollisionPolicy::NewDocument),
        b"two",
    )
    .await
    .unwrap();
    assert_eq!(s.outcome, StoreOutcome::Created);
    assert_eq!(s.name, "po (2).pdf");
    let s3 = store(
        r,
        &doc(f, "po.pdf", b"three", CollisionPolicy::NewDocument),
        b"three",
    )
    .await
    .unwrap();
    assert_eq!(s3.name, "po (3).pdf");
    // The same content again is recognised under its suffixed name.
    let again = store(
        r,
        &doc(f, "po.pdf", b"two", CollisionPolicy::NewDocument),
        b"two",
    )
    .await
    .unwrap();
    assert_eq!(again.outcome, StoreOutcome::AlreadyPresent);
    assert_eq!(again.node, s.node);
    let mut names: Vec<String> = r
        .children(f)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    names.sort();
    assert_eq!(names, ["po (2).pdf", "po (3).pdf", "po.pdf"]);
}

async fn collision_reject<R: Repository>(r: &R, _: &Embedded) {
    let f = folder(r, "reject").await;
    let first = store(r, &doc(f, "asn.edi", b"a", CollisionPolicy::Reject), b"a")
        .await
        .unwrap();
    let err = store(r, &doc(f, "asn.edi", b"b", CollisionPolicy::Reject), b"b")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NameCollision, "{err}");
    assert_eq!(r.children(f).await.unwrap().len(), 1);
    assert_eq!(fetch(r, first.node, None).await, b"a");
    // A folder in the way is a collision too.
    r.ensure_folder(f, &["sub".to_string()]).await.unwrap();
    let err = store(r, &doc(f, "sub", b"x", CollisionPolicy::AddVersion), b"x")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NameCollision);
}

async fn identical_content_is_idempotent<R: Repository>(r: &R, _: &Embedded) {
    let f = folder(r, "idempotent").await;
    let first = store(
        r,
        &doc(f, "same.txt", b"same", CollisionPolicy::Reject),
        b"same",
    )
    .await
    .unwrap();
    for policy in [
        CollisionPolicy::Reject,
        CollisionPolicy::AddVersion,
        CollisionPolicy::NewDocument,
    ] {
        let s = store(r, &doc(f, "same.txt", b"same", policy), b"same")
            .await
            .unwrap();
        assert_eq!(s.outcome, StoreOutcome::AlreadyPresent, "{policy:?}");
        assert_eq!(s.node, first.node);
        assert_eq!(s.version, 1);
    }
    assert_eq!(r.children(f).await.unwrap().len(), 1);
    assert_eq!(r.versions(first.node).await.unwrap().len(), 1);
}

async fn categories_merge<R: Repository>(r: &R, _: &Embedded) {
    let f = folder(r, "cats").await;
    let s = store(r, &doc(f, "c.txt", b"c", CollisionPolicy::Reject), b"c")
        .await
        .unwrap();
    r.set_categories(s.node, &[invoice("ACME", 7, "Draft")])
        .await
        .unwrap();
    let update = Category {
        name: "Invoice".into(),
        attributes: vec![Attribute {
            name: "Status".into(),
            value: AttributeValue::Text("Approved".into()),
        }],
    };
    r.set_categories(s.node, &[update]).await.unwrap();
    let got = as_text(&r.categories(s.node).await.unwrap());
    let mut want = as_text(&[invoice("ACME", 7, "Approved")]);
    assert_eq!(got, want);
    want.clear();
    assert_eq!(
        r.categories(NodeId(987_654)).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
}

async fn permissions<R: Repository>(r: &R, _: &Embedded) {
    let f = folder(r, "perms").await;
    let s = store(r, &doc(f, "p.txt", b"p", CollisionPolicy::Reject), b"p")
        .await
        .unwrap();
    let grants = vec![
        Grant {
            principal: Principal::Public,
            rights: vec![Right::See, Right::SeeContents],
        },
        Grant {
            principal: Principal::User("jdoe".into()),
            rights: vec![Right::See, Right::SeeContents, Right::Modify],
        },
        Grant {
            principal: Principal::Group("Buyers".into()),
            rights: vec![Right::See],
        },
    ];
    r.set_permissions(s.node, &grants).await.unwrap();
    let norm = |gs: Vec<Grant>| -> HashSet<(String, Vec<Right>)> {
        gs.into_iter()
            .map(|mut g| {
                g.rights.sort();
                (format!("{:?}", g.principal), g.rights)
            })
            .collect()
    };
    assert_eq!(
        norm(r.permissions(s.node).await.unwrap()),
        norm(grants.clone())
    );
    // Granting again replaces that principal's rights.
    let narrower = vec![Grant {
        principal: Principal::User("jdoe".into()),
        rights: vec![Right::See],
    }];
    r.set_permissions(s.node, &narrower).await.unwrap();
    let got = norm(r.permissions(s.node).await.unwrap());
    assert!(got.contains(&("User(\"jdoe\")".to_string(), vec![Right::See])));
    assert_eq!(got.len(), 3);
}

async fn hold_blocks_deletion<R: Repository>(r: &R, _: &Embedded) {
    let f = folder(r, "hold").await;
    let held = store(r, &doc(f, "held.txt", b"h", CollisionPolicy::Reject), b"h")
        .await
        .unwrap();
    let free = store(r, &doc(f, "free.txt", b"f", CollisionPolicy::Reject), b"f")
        .await
        .unwrap();
    r.apply_hold(held.node, "Litigation 2026-17").await.unwrap();
    let err = r.delete(held.node).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::HeldOrRetained, "{err}");
    assert_eq!(fetch(r, held.node, None).await, b"h");
    // Deleting the folder would delete the held document: refused as well.
    assert_eq!(
        r.delete(f).await.unwrap_err().kind,
        ErrorKind::HeldOrRetained
    );
    r.delete(free.node).await.unwrap();
    assert_eq!(
        r.node(free.node).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(r.node(held.node).await.unwrap().name, "held.txt");
}

async fn retention_blocks_deletion<R: Repository>(r: &R, _: &Embedded) {
    let f = folder(r, "rm").await;
    let s = store(r, &doc(f, "rec.txt", b"r", CollisionPolicy::Reject), b"r")
        .await
        .unwrap();
    r.classify(s.node, "FIN-7Y").await.unwrap();
    let err = r.delete(s.node).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::HeldOrRetained, "{err}");
    assert!(r.node(s.node).await.is_ok());
}

async fn search_finds_only_matching<R: Repository>(r: &R, _: &Embedded) {
    let a = folder(r, "search-a").await;
    let b = folder(r, "search-b").await;
    let deep = r
        .ensure_folder(a, &["2026".to_string(), "11".to_string()])
        .await
        .unwrap();
    let put = async |parent, name: &str, status: &str| {
        let data = format!("{name}{status}").into_bytes();
        let mut d = doc(parent, name, &data, CollisionPolicy::Reject);
        d.categories = vec![invoice("ACME", 1, status)];
        store(r, &d, &data).await.unwrap().node
    };
    let hit1 = put(a, "INV_1.csv", "Approved").await;
    let hit2 = put(deep, "INV_2.csv", "Approved").await;
    put(a, "INV_3.csv", "Draft").await;
    put(a, "PO_4.csv", "Draft").await;
    let other = put(b, "INV_5.csv", "Approved").await;
    let approved = |loc| SearchQuery {
        location: loc,
        name: None,
        attributes: vec![AttributeFilter {
            category: "Invoice".into(),
            attribute: "Status".into(),
            value: "Approved".into(),
        }],
        limit: None,
    };
    let ids = |v: Vec<Node>| -> HashSet<NodeId> { v.into_iter().map(|n| n.id).collect() };
    assert_eq!(
        ids(r.search(&approved(Some(a))).await.unwrap()),
        HashSet::from([hit1, hit2])
    );
    assert_eq!(
        ids(r.search(&approved(Some(b))).await.unwrap()),
        HashSet::from([other])
    );
    let mut q = approved(Some(a));
    q.name = Some("INV_2*".into());
    assert_eq!(ids(r.search(&q).await.unwrap()), HashSet::from([hit2]));
    let q = SearchQuery {
        location: Some(a),
        name: Some("PO_*".into()),
        attributes: vec![],
        limit: None,
    };
    assert_eq!(r.search(&q).await.unwrap().len(), 1);
    let mut none = approved(Some(a));
    none.attributes[0].value = "Rejected".into();
    assert!(r.search(&none).await.unwrap().is_empty());
}

async fn workspaces<R: Repository>(r: &R, _: &Embedded) {
    let parent = folder(r, "workspaces").await;
    let spec = WorkspaceSpec {
        workspace_type: "Supplier".into(),
        business_id: "S-100".into(),
        name: "ACME Corp (S-100)".into(),
    };
    let id = r.create_workspace(parent, &spec).await.unwrap();
    let found = r
        .find_workspace("Supplier", "S-100")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, id);
    assert_eq!(found.kind, NodeKind::Workspace);
    assert!(
        r.find_workspace("Supplier", "S-999")
            .await
            .unwrap()
            .is_none()
    );
    let certs = r
        .ensure_folder(id, &["Certificates".to_string()])
        .await
        .unwrap();
    let s = store(
        r,
        &doc(certs, "iso9001.pdf", b"cert", CollisionPolicy::Reject),
        b"cert",
    )
    .await
    .unwrap();
    assert_eq!(r.node(s.node).await.unwrap().parent, Some(certs));
}

async fn workflows<R: Repository>(r: &R, store_: &Embedded) {
    let f = folder(r, "wf").await;
    let s = store(r, &doc(f, "q.pdf", b"q", CollisionPolicy::Reject), b"q")
        .await
        .unwrap();
    let wf = r
        .start_workflow(&WorkflowStart {
            workflow: "review".into(),
            title: "Review quality report".into(),
            comment: "Rule QR-3 failed: missing signature".into(),
            assignee: None,
            documents: vec![s.node],
        })
        .await
        .unwrap();
    let all = store_.workflows().await.unwrap();
    let rec = all.iter().find(|w| w.id == wf).expect("workflow recorded");
    assert_eq!(rec.workflow, "review");
    assert_eq!(rec.title, "Review quality report");
    assert_eq!(rec.comment, "Rule QR-3 failed: missing signature");
    assert_eq!(rec.documents, vec![s.node]);
    assert_eq!(rec.status, "open");
    let err = r
        .start_workflow(&WorkflowStart {
            workflow: "review".into(),
            title: "x".into(),
            comment: "y".into(),
            assignee: None,
            documents: vec![NodeId(987_654)],
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
}

async fn audit_trail<R: Repository>(r: &R, _: &Embedded) {
    let f = folder(r, "audit").await;
    let s = store(
        r,
        &doc(f, "a.txt", b"a1", CollisionPolicy::AddVersion),
        b"a1",
    )
    .await
    .unwrap();
    store(
        r,
        &doc(f, "a.txt", b"a2", CollisionPolicy::AddVersion),
        b"a2",
    )
    .await
    .unwrap();
    r.apply_hold(s.node, "H1").await.unwrap();
    let events: Vec<String> = r
        .audit(Some(s.node))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.action)
        .collect();
    for want in ["created", "version-added", "hold-applied"] {
        assert!(
            events.iter().any(|e| e == want),
            "{want} missing from {events:?}"
        );
    }
}

/// A store with its audit event: the event lands on the stored document
/// once (where the repository can write events), and a retried store of
/// the same content records nothing again.
async fn store_recorded<R: Repository>(r: &R, store_: &Embedded) {
    let f = folder(r, "recorded").await;
    let d = doc(f, "filed.csv", b"rows", CollisionPolicy::Reject);
    let event = AuditEvent {
        action: "filed".into(),
        actor: "partner:acme".into(),
        node: None,
        sha256: Some(sha(b"rows")),
        detail: "inbox/filed.csv (4 bytes, claim 7)".into(),
    };
    let first = r
        .store_document_recorded(&d, &BytesSource(b"rows".to_vec().into()), &event)
        .await
        .unwrap();
    assert_eq!(first.outcome, StoreOutcome::Created);
    assert_eq!(fetch(r, first.node, None).await, b"rows");
    let again = r
        .store_document_recorded(&d, &BytesSource(b"rows".to_vec().into()), &event)
        .await
        .unwrap();
    assert_eq!(again.outcome, StoreOutcome::AlreadyPresent);
    assert_eq!(again.node, first.node);
    // Content Server has no audit write: only the embedded store has it.
    let recorded: Vec<AuditEvent> = store_
        .audit(Some(first.node))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .filter(|e| e.actor == "partner:acme")
        .collect();
    let embedded = std::any::type_name::<R>() == std::any::type_name::<Embedded>();
    let want = if embedded {
        vec![AuditEvent {
            node: Some(first.node),
            ..event
        }]
    } else {
        Vec::new()
    };
    assert_eq!(recorded, want);
}

/// Events recorded under keys: a batch sent again records only what it
/// did not record before (where the repository can write events).
async fn keyed_events<R: Repository>(r: &R, store_: &Embedded) {
    let f = folder(r, "keyed").await;
    let event = |detail: &str| AuditEvent {
        action: "filed".into(),
        actor: "partner:keyed".into(),
        node: Some(f),
        sha256: None,
        detail: detail.into(),
    };
    let keyed = |key: &str, detail: &str| KeyedEvent {
        key: key.into(),
        at: 1_700_000_000,
        event: event(detail),
    };
    let first = [keyed("k1", "one"), keyed("k2", "two")];
    let again = [keyed("k2", "two"), keyed("k3", "three"), keyed("k1", "one")];
    let embedded = std::any::type_name::<R>() == std::any::type_name::<Embedded>();
    if !embedded {
        // Content Server has no audit write.
        let e = r.record_events(&first).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        return;
    }
    r.record_events(&first).await.unwrap();
    r.record_events(&again).await.unwrap();
    r.record_events(&[]).await.unwrap();
    let details: Vec<String> = store_
        .audit(Some(f))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.actor == "partner:keyed")
        .map(|e| e.event.detail)
        .collect();
    assert_eq!(details, ["one", "two", "three"]);
}

async fn not_found<R: Repository>(r: &R, _: &Embedded) {
    let missing = NodeId(987_654);
    assert_eq!(r.node(missing).await.unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(
        r.versions(missing).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        r.categories(missing).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        r.download(missing, None).await.err().unwrap().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        r.delete(missing).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    let f = folder(r, "nf").await;
    let s = store(r, &doc(f, "one.txt", b"1", CollisionPolicy::Reject), b"1")
        .await
        .unwrap();
    assert_eq!(
        r.download(s.node, Some(9)).await.err().unwrap().kind,
        ErrorKind::NotFound
    );
    let err = store(
        r,
        &doc(missing, "x.txt", b"x", CollisionPolicy::Reject),
        b"x",
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
}

async fn many_children_page<R: Repository>(r: &R, _: &Embedded) {
    let f = folder(r, "paging").await;
    for i in 0..23 {
        r.ensure_folder(f, &[format!("sub{i:02}")]).await.unwrap();
    }
    let kids = r.children(f).await.unwrap();
    assert_eq!(kids.len(), 23);
    let names: HashSet<String> = kids.into_iter().map(|k| k.name).collect();
    assert_eq!(names.len(), 23);
    // Search results span pages too (the client's page size is 7).
    for i in 0..16 {
        let data = format!("paged {i}").into_bytes();
        let mut d = doc(f, &format!("P_{i:02}.csv"), &data, CollisionPolicy::Reject);
        d.categories = vec![invoice(
            "PAGED",
            i,
            if i % 4 == 0 { "Draft" } else { "Approved" },
        )];
        store(r, &d, &data).await.unwrap();
    }
    let mut q = SearchQuery {
        location: Some(f),
        name: None,
        attributes: vec![AttributeFilter {
            category: "Invoice".into(),
            attribute: "Status".into(),
            value: "Approved".into(),
        }],
        limit: None,
    };
    let found: HashSet<NodeId> = r
        .search(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(found.len(), 12);
    q.limit = Some(10);
    assert_eq!(r.search(&q).await.unwrap().len(), 10);
}

async fn concurrent_stores<R: Repository>(r: &R, _: &Embedded) {
    let f = folder(r, "concurrent").await;
    // Same name, different content, all at once: every copy gets its own name.
    let datas: Vec<Vec<u8>> = (0..12).map(|i| format!("copy {i}").into_bytes()).collect();
    let docs: Vec<NewDocument> = datas
        .iter()
        .map(|d| doc(f, "batch.csv", d, CollisionPolicy::NewDocument))
        .collect();
    let results =
        futures::future::join_all(docs.iter().zip(&datas).map(|(d, data)| store(r, d, data))).await;
    let names: HashSet<String> = results.into_iter().map(|s| s.unwrap().name).collect();
    assert_eq!(names.len(), 12, "{names:?}");
    assert_eq!(r.children(f).await.unwrap().len(), 12);
    // Same name under Reject: exactly one wins, the others collide.
    let docs: Vec<NewDocument> = datas
        .iter()
        .map(|d| doc(f, "single.csv", d, CollisionPolicy::Reject))
        .collect();
    let results =
        futures::future::join_all(docs.iter().zip(&datas).map(|(d, data)| store(r, d, data))).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.kind == ErrorKind::NameCollision)
    );
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let l = super::local().await;
                    super::$case(&l.repo, &l.repo).await;
                }
            )*
        }
        mod otcs_via_facade {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let r = super::remote().await;
                    super::$case(&r.client, &r.local.repo).await;
                    r.facade.stop().await;
                }
            )*
        }
    };
}

contract!(
    folders,
    round_trip,
    collision_add_version,
    collision_new_document,
    collision_reject,
    identical_content_is_idempotent,
    categories_merge,
    permissions,
    hold_blocks_deletion,
    retention_blocks_deletion,
    search_finds_only_matching,
    workspaces,
    workflows,
    audit_trail,
    store_recorded,
    keyed_events,
    not_found,
    many_children_page,
    concurrent_stores,
);
