//! The client against response bodies shaped as a real Content Server sends
//! them (the documented response shapes), served by a small scripted HTTP server on
//! loopback, so the client is not only compatible with our own facade.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use wharf_ecm::otcs::OtcsClient;
use wharf_ecm::*;

#[derive(Clone)]
struct Script {
    method: Method,
    path: &'static str,
    query_contains: &'static str,
    status: u16,
    body: String,
    ticket_header: bool,
    times: u32,
}

fn on(method: Method, path: &'static str, status: u16, body: &str) -> Script {
    Script {
        method,
        path,
        query_contains: "",
        status,
        body: body.to_string(),
        ticket_header: false,
        times: 1,
    }
}

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    ticket: Option<String>,
    content_type: String,
    body: Bytes,
}

#[derive(Default)]
struct Server {
    scripts: Mutex<Vec<Script>>,
    seen: Mutex<Vec<Seen>>,
}

async fn handle(State(s): State<Arc<Server>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    s.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        path: path.clone(),
        query: query.clone(),
        ticket: parts
            .headers
            .get("OTCSTicket")
            .and_then(|t| t.to_str().ok())
            .map(str::to_string),
        content_type: parts
            .headers
            .get("content-type")
            .and_then(|t| t.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body,
    });
    let mut scripts = s.scripts.lock().unwrap();
    let Some(sc) = scripts.iter_mut().find(|sc| {
        sc.times > 0
            && sc.method == parts.method
            && sc.path == path
            && query.contains(sc.query_contains)
    }) else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            format!("{{\"error\": \"unscripted {path}?{query}\"}}"),
        )
            .into_response();
    };
    sc.times -= 1;
    let mut resp = (StatusCode::from_u16(sc.status).unwrap(), sc.body.clone()).into_response();
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    if sc.ticket_header {
        resp.headers_mut()
            .insert("OTCSTicket", HeaderValue::from_static("HDR-TICKET-1"));
    }
    resp
}

struct Running {
    server: Arc<Server>,
    client: OtcsClient,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Running {
    fn seen(&self) -> Vec<Seen> {
        self.server.seen.lock().unwrap().clone()
    }
}

const AUTH: &str = r#"{"ticket":"T1-captured-ticket"}"#;

async fn serve(mut scripts: Vec<Script>) -> Running {
    // Every scenario starts with a login.
    scripts.insert(0, on(Method::POST, "/otcs/cs.exe/api/v1/auth", 200, AUTH));
    let server = Arc::new(Server {
        scripts: Mutex::new(scripts),
        seen: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    let client = OtcsClient::new(client_config(&format!("http://{addr}/otcs/cs.exe/api"))).unwrap();
    Running {
        server,
        client,
        stop: Some(tx),
    }
}

const NODE_2000: &str = r#"{"links":{"data":{"self":{"body":"","content_type":"","href":"/api/v2/nodes/2000","method":"GET","name":""}}},
 "results":{"actions":{"data":{},"map":{},"order":[]},
  "data":{"columns":[{"data_type":2,"key":"type","name":"Type","sort_key":"x4"}],
   "properties":{"container":true,"container_size":3,"create_date":"2003-10-01T13:30:55","create_user_id":1000,
    "description":"","description_multilingual":{"en":""},"external_create_date":null,"external_identity":"",
    "favorite":false,"hidden":false,"icon":"/img/webdoc/volume.gif","id":2000,"modify_date":"2024-03-05T10:00:01",
    "name":"Enterprise Workspace","name_multilingual":{"en":"Enterprise Workspace"},"owner_user_id":1000,
    "parent_id":-1,"permissions_model":"advanced","reserved":false,"size":3,"size_formatted":"3 Items",
    "type":141,"type_name":"Enterprise Workspace","volume_id":-2000}}}}"#;

fn child(id: i64, name: &str, ty: i64) -> String {
    format!(
        r#"{{"data":{{"properties":{{"container":{c},"create_date":"2024-03-05T10:00:01","description":"","id":{id},
        "mime_type":{m},"modify_date":"2024-03-05T10:00:02","name":"{name}","parent_id":2000,"size":{s},
        "size_formatted":"1 KB","type":{ty},"type_name":"x","volume_id":-2000}}}},"actions":{{}}}}"#,
        c = ty != 144,
        m = if ty == 144 {
            "\"application/pdf\""
        } else {
            "null"
        },
        s = if ty == 144 { 1024 } else { 0 },
    )
}

fn page(items: &[String], page: u32, total: u32, pages: u32) -> String {
    format!(
        r#"{{"collection":{{"paging":{{"limit":7,"page":{page},"page_total":{pages},"range_max":7,"range_min":1,"total_count":{total}}},"sorting":{{"sort":[{{"key":"sort","value":"asc_name"}}]}}}},
        "links":{{"data":{{}}}},"results":[{}]}}"#,
        items.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_documented_node_and_paged_list_shapes() {
    let p1: Vec<String> = (0..7)
        .map(|i| child(3000 + i, &format!("f{i}"), 0))
        .collect();
    let p2: Vec<String> = vec![child(3100, "invoice.pdf", 144), child(3101, "ws", 848)];
    let mut s2 = on(
        Method::GET,
        "/otcs/cs.exe/api/v2/nodes/2000/nodes",
        200,
        &page(&p2, 2, 9, 2),
    );
    s2.query_contains = "page=2";
    let mut s1 = on(
        Method::GET,
        "/otcs/cs.exe/api/v2/nodes/2000/nodes",
        200,
        &page(&p1, 1, 9, 2),
    );
    s1.query_contains = "page=1";
    let r = serve(vec![
        on(
            Method::GET,
            "/otcs/cs.exe/api/v2/nodes/2000",
            200,
            NODE_2000,
        ),
        s1,
        s2,
    ])
    .await;
    let n = r.client.node(NodeId::ENTERPRISE).await.unwrap();
    assert_eq!(n.name, "Enterprise Workspace");
    assert_eq!(n.kind, NodeKind::Volume);
    assert_eq!(n.parent, None);
    assert_eq!(n.created, "2003-10-01T13:30:55");
    let kids = r.client.children(NodeId::ENTERPRISE).await.unwrap();
    assert_eq!(kids.len(), 9);
    let doc = kids.iter().find(|k| k.name == "invoice.pdf").unwrap();
    assert_eq!(
        (doc.kind, doc.size, doc.mime_type.as_deref()),
        (NodeKind::Document, Some(1024), Some("application/pdf"))
    );
    assert_eq!(
        kids.iter().find(|k| k.id == NodeId(3101)).unwrap().kind,
        NodeKind::Workspace
    );
    let seen = r.seen();
    let auth = &seen[0];
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&auth.body).unwrap();
    assert!(form.contains(&("username".into(), USER.into())));
    assert!(form.contains(&("password".into(), PASSWORD.into())));
    assert!(
        seen[1..]
            .iter()
            .all(|s| s.ticket.as_deref() == Some("T1-captured-ticket"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_the_ticket_from_the_header_when_the_body_lacks_it() {
    let mut r = serve(vec![on(
        Method::GET,
        "/otcs/cs.exe/api/v2/nodes/2000",
        200,
        NODE_2000,
    )])
    .await;
    {
        let mut sc = r.server.scripts.lock().unwrap();
        sc[0].body = "{}".into();
        sc[0].ticket_header = true;
    }
    r.client.node(NodeId::ENTERPRISE).await.unwrap();
    assert_eq!(r.seen()[1].ticket.as_deref(), Some("HDR-TICKET-1"));
    r.stop.take().map(|s| s.send(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_documented_errors() {
    let r = serve(vec![
        on(
            Method::GET,
            "/otcs/cs.exe/api/v2/nodes/99",
            404,
            r#"{"error":"Could not find object with ID 99."}"#,
        ),
        on(
            Method::GET,
            "/otcs/cs.exe/api/v2/nodes/98",
            403,
            r#"{"error":"You do not have permission to perform this action."}"#,
        ),
        on(
            Method::DELETE,
            "/otcs/cs.exe/api/v2/nodes/97",
            400,
            r#"{"error":"The item is on hold and cannot be deleted."}"#,
        ),
        on(
            Method::GET,
            "/otcs/cs.exe/api/v2/nodes/96",
            500,
            r#"{"error":"Internal error"}"#,
        ),
        on(
            Method::GET,
            "/otcs/cs.exe/api/v2/nodes/96",
            429,
            r#"{"error":"Too many requests"}"#,
        ),
        on(Method::GET, "/otcs/cs.exe/api/v2/nodes/96", 200, NODE_2000),
        on(
            Method::GET,
            "/otcs/cs.exe/api/v2/nodes/95",
            400,
            r#"{"error":"Invalid value for parameter 'fields'"}"#,
        ),
    ])
    .await;
    let c = &r.client;
    assert_eq!(
        c.node(NodeId(99)).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        c.node(NodeId(98)).await.unwrap_err().kind,
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        c.delete(NodeId(97)).await.unwrap_err().kind,
        ErrorKind::HeldOrRetained
    );
    assert_eq!(
        c.node(NodeId(96)).await.unwrap().id,
        NodeId(2000),
        "retried past 500 and 429"
    );
    let e = c.node(NodeId(95)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("Invalid value"), "{e}");
    // The client errors were not retried.
    let gets95 = r
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("/nodes/95"))
        .count();
    assert_eq!(gets95, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauthenticates_once_then_reports_denial() {
    let expired = r#"{"error":"Session has expired - please log in again."}"#;
    let mut s = vec![
        on(Method::GET, "/otcs/cs.exe/api/v2/nodes/2000", 401, expired),
        on(
            Method::POST,
            "/otcs/cs.exe/api/v1/auth",
            200,
            r#"{"ticket":"T2"}"#,
        ),
        on(
            Method::GET,
            "/otcs/cs.exe/api/v2/nodes/2000",
            200,
            NODE_2000,
        ),
    ];
    let mut again = on(Method::GET, "/otcs/cs.exe/api/v2/nodes/5", 401, expired);
    again.times = 2;
    s.push(again);
    s.push(on(
        Method::POST,
        "/otcs/cs.exe/api/v1/auth",
        200,
        r#"{"ticket":"T3"}"#,
    ));
    let r = serve(s).await;
    r.client.node(NodeId::ENTERPRISE).await.unwrap();
    let seen = r.seen();
    assert_eq!(seen.last().unwrap().ticket.as_deref(), Some("T2"));
    let e = r.client.node(NodeId(5)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied);
    assert_eq!(r.client.login_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_folders_from_v1_and_v2_id_shapes() {
    let empty = page(&[], 1, 0, 0);
    let mut s = vec![];
    for parent in ["2000", "777"] {
        let path: &'static str =
            Box::leak(format!("/otcs/cs.exe/api/v2/nodes/{parent}/nodes").into_boxed_str());
        s.push(on(Method::GET, path, 200, &empty));
    }
    s.push(on(
        Method::POST,
        "/otcs/cs.exe/api/v2/nodes",
        200,
        r#"{"id":777}"#,
    ));
    s.push(on(
        Method::POST,
        "/otcs/cs.exe/api/v2/nodes",
        200,
        r#"{"links":{},"results":{"id":778}}"#,
    ));
    let r = serve(s).await;
    let id = r
        .client
        .ensure_folder(
            NodeId::ENTERPRISE,
            &["Partners".to_string(), "ACME".to_string()],
        )
        .await
        .unwrap();
    assert_eq!(id, NodeId(778));
    let posts: Vec<Seen> = r
        .seen()
        .into_iter()
        .filter(|s| s.method == Method::POST && s.path.ends_with("/v2/nodes"))
        .collect();
    assert_eq!(posts.len(), 2);
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&posts[1].body).unwrap();
    assert_eq!(form[0].0, "body");
    let body: serde_json::Value = serde_json::from_str(&form[0].1).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"type": 0, "parent_id": 777, "name": "ACME"})
    );
    let lookups: Vec<Seen> = r
        .seen()
        .into_iter()
        .filter(|s| s.method == Method::GET)
        .collect();
    assert!(
        lookups[0].query.contains("where_name=Partners"),
        "{}",
        lookups[0].query
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_multipart_with_body_and_file_and_maps_collisions() {
    let empty = page(&[], 1, 0, 0);
    let mut look = on(
        Method::GET,
        "/otcs/cs.exe/api/v2/nodes/4000/nodes",
        200,
        &empty,
    );
    look.times = 100;
    let mut collide = on(
        Method::POST,
        "/otcs/cs.exe/api/v2/nodes",
        409,
        r#"{"error":"An item with the name 'y.pdf' already exists."}"#,
    );
    collide.times = 100;
    let r = serve(vec![
        look,
        on(
            Method::POST,
            "/otcs/cs.exe/api/v2/nodes",
            200,
            r#"{"results":{"data":{"properties":{"id":4001,"name":"x.pdf","type":144}}}}"#,
        ),
        on(
            Method::POST,
            "/otcs/cs.exe/api/v2/nodes",
            400,
            r#"{"error":"An item with the name 'y.pdf' already exists."}"#,
        ),
        on(
            Method::POST,
            "/otcs/cs.exe/api/v2/nodes",
            409,
            r#"{"error":"An item with the name 'y.pdf' already exists."}"#,
        ),
        on(
            Method::POST,
            "/otcs/cs.exe/api/v2/nodes",
            400,
            r#"{"error":"An item with the name 'y.pdf' already exists."}"#,
        ),
        on(
            Method::POST,
            "/otcs/cs.exe/api/v2/nodes",
            400,
            r#"{"error":"An item with the name 'y.pdf' already exists."}"#,
        ),
        collide,
    ])
    .await;
    let data = b"%PDF-1.7 captured".to_vec();
    let mut d = doc(NodeId(4000), "x.pdf", &data, CollisionPolicy::Reject);
    d.mime_type = "application/pdf".into();
    d.categories = vec![invoice("ACME", 1001, "Approved")];
    let s = store(&r.client, &d, &data).await.unwrap();
    assert_eq!((s.node, s.outcome), (NodeId(4001), StoreOutcome::Created));
    let post = r
        .seen()
        .into_iter()
        .find(|s| s.method == Method::POST && s.path.ends_with("/v2/nodes"))
        .unwrap();
    assert!(post.content_type.starts_with("multipart/form-data"));
    let raw = String::from_utf8_lossy(&post.body);
    assert!(raw.contains("name=\"body\""), "{raw}");
    assert!(raw.contains("name=\"file\"; filename=\"x.pdf\""), "{raw}");
    assert!(raw.contains("Content-Type: application/pdf"), "{raw}");
    assert!(raw.contains("%PDF-1.7 captured"));
    assert!(
        raw.contains(r#""5001":{"#) && raw.contains(r#""5001_2":"ACME""#),
        "{raw}"
    );
    assert!(
        raw.contains(&format!(r#""5100_2":"{}""#, sha(&data))),
        "checksum attribute sent: {raw}"
    );
    // A collision reported by the server (no listing showed it) is typed.
    let d2 = doc(NodeId(4000), "y.pdf", b"y", CollisionPolicy::Reject);
    assert_eq!(
        store(&r.client, &d2, b"y").await.unwrap_err().kind,
        ErrorKind::NameCollision
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_permissions_categories_versions_and_search_shapes() {
    let perms = r#"{"links":{},"results":[
      {"data":{"permissions":{"permissions":["delete","delete_versions","edit_attributes","edit_permissions","modify","reserve","add_major_version","see","see_contents"],"right_id":1000,"type":"owner"}}},
      {"data":{"permissions":{"permissions":[],"right_id":null,"type":"group"}}},
      {"data":{"permissions":{"permissions":["see","see_contents"],"right_id":null,"type":"public"}}},
      {"data":{"permissions":{"permissions":["see","see_contents","modify"],"right_id":1001,"type":"custom"}}}]}"#;
    let cats = r#"{"links":{},"results":[{"data":{"categories":{"5001_1":{"version_number":3},"5001_2":"ACME","5001_3":1001,"5001_4":12.5,"5001_7":false,"5001_9":"unmapped"}},
      "metadata":{"categories":{"5001":{"name":"Invoice","type":-1},"5001_2":{"name":"Supplier","type":-1}}}},
      {"data":{"categories":{"6001_2":"x"}},"metadata":{"categories":{"6001":{"name":"Contract"},"6001_2":{"name":"Party"}}}}]}"#;
    let versions = r#"{"links":{},"results":[{"data":{"versions":{"create_date":"2024-01-02T03:04:05","description":"","file_create_date":"2024-01-02T03:04:05","file_name":"a.pdf","file_size":2048,"file_type":"pdf","id":5000,"locked":false,"mime_type":"application/pdf","name":"a.pdf","owner_id":1000,"version_id":7001,"version_number":2,"version_number_major":0,"version_number_minor":2}}},
      {"data":{"versions":{"create_date":"2024-01-01T03:04:05","description":"first","file_name":"a.pdf","file_size":1024,"id":5000,"mime_type":"application/pdf","version_number":1}}}]}"#;
    let search = r#"{"collection":{"paging":{"limit":7,"page":1,"page_total":1,"range_max":1,"range_min":1,"result_header_string":"Results 1 to 1 of 1","total_count":1},"searching":{"cache_id":123,"facets":{}}},
      "links":{},"results":[{"data":{"properties":{"id":5000,"name":"INV_1.pdf","parent_id":4000,"type":144,"size":2048,"mime_type":"application/pdf"},"regions":{}},"search_result_metadata":{"current_version":true}}]}"#;
    let r = serve(vec![
        on(
            Method::GET,
            "/otcs/cs.exe/api/v2/nodes/5000/permissions",
            200,
            perms,
        ),
        on(
            Method::GET,
            "/otcs/cs.exe/api/v2/nodes/5000/categories",
            200,
            cats,
        ),
        on(
            Method::GET,
            "/otcs/cs.exe/api/v2/nodes/5000/versions",
            200,
            versions,
        ),
        on(Method::POST, "/otcs/cs.exe/api/v2/search", 200, search),
    ])
    .await;
    let c = &r.client;
    let p = c.permissions(NodeId(5000)).await.unwrap();
    assert_eq!(p.len(), 3, "the empty group entry is dropped: {p:?}");
    assert_eq!(p[0].principal, Principal::Owner);
    assert_eq!(
        p[1],
        Grant {
            principal: Principal::Public,
            rights: vec![Right::See, Right::SeeContents]
        }
    );
    assert_eq!(p[2].principal, Principal::User("jdoe".into()));
    let cs = c.categories(NodeId(5000)).await.unwrap();
    assert_eq!(cs[0].name, "Invoice");
    let names: Vec<&str> = cs[0].attributes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["Supplier", "Number", "Amount", "Paid"]);
    assert_eq!(cs[0].attributes[1].value, AttributeValue::Integer(1001));
    assert_eq!(
        cs[1].name, "Contract",
        "unmapped categories are named from metadata"
    );
    assert_eq!(cs[1].attributes[0].name, "Party");
    let vs = c.versions(NodeId(5000)).await.unwrap();
    assert_eq!(
        vs.iter().map(|v| (v.number, v.size)).collect::<Vec<_>>(),
        [(1, 1024), (2, 2048)]
    );
    assert_eq!(vs[0].description.as_deref(), Some("first"));
    let q = SearchQuery {
        location: Some(NodeId(4000)),
        name: Some("INV_*".into()),
        attributes: vec![AttributeFilter {
            category: "Invoice".into(),
            attribute: "Status".into(),
            value: "Approved".into(),
        }],
        limit: None,
    };
    let found = c.search(&q).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, NodeId(5000));
    let post = r
        .seen()
        .into_iter()
        .find(|s| s.path.ends_with("/v2/search"))
        .unwrap();
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&post.body).unwrap();
    let get = |k: &str| {
        form.iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(
        get("where"),
        r#"OTSubType:144 AND OTName:"INV_*" AND "Invoice:Status":"Approved""#
    );
    assert_eq!(get("location_id"), "4000");
    assert_eq!(get("page"), "1");
}
