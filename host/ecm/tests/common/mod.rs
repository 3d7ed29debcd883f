//! Shared test environment: an embedded repository, optionally served by an
//! in-process facade on 127.0.0.1:0 with a real client in front of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wharf_ecm::embedded::Embedded;
use wharf_ecm::facade::{Facade, FacadeConfig};
use wharf_ecm::otcs::{CategoryIds, Mapping, OtcsClient, OtcsConfig, RetryPolicy, Secret};
use wharf_ecm::*;

pub const USER: &str = "wharf";
pub const PASSWORD: &str = "s3cret-pw-for-tests";

pub fn mapping() -> Mapping {
    let attrs = |pairs: &[(&str, i64)]| -> HashMap<String, i64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    let mut m = Mapping::default();
    m.categories.insert(
        "Invoice".into(),
        CategoryIds {
            id: 5001,
            attributes: attrs(&[
                ("Supplier", 2),
                ("Number", 3),
                ("Amount", 4),
                ("Status", 5),
                ("Date", 6),
                ("Paid", 7),
            ]),
        },
    );
    m.categories.insert(
        "wharf".into(),
        CategoryIds {
            id: 5100,
            attributes: attrs(&[("sha256", 2)]),
        },
    );
    m.workspace_types.insert("Supplier".into(), 31);
    m.workflows.insert("review".into(), 41);
    m.workflows.insert("approval".into(), 42);
    m.rm_classes.insert("FIN-7Y".into(), 61);
    m.users.insert("jdoe".into(), 1001);
    m.groups.insert("Buyers".into(), 1002);
    m
}

pub fn client_config(base: &str) -> OtcsConfig {
    let mut c = OtcsConfig::new(base, USER, Secret::new(PASSWORD));
    c.mapping = mapping();
    c.checksum_attribute = Some(("wharf".into(), "sha256".into()));
    c.metadata_timeout = Duration::from_secs(5);
    c.content_timeout = Duration::from_secs(5);
    c.page_size = 7; // small pages so paging is exercised
    c.retry = RetryPolicy {
        attempts: 6,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    };
    c
}

pub fn facade_config() -> FacadeConfig {
    let mut users = HashMap::new();
    users.insert(USER.to_string(), Secret::new(PASSWORD));
    FacadeConfig {
        users,
        ticket_idle: Duration::from_secs(600),
        mapping: mapping(),
    }
}

/// A temporary embedded repository.
pub struct Local {
    pub dir: tempfile::TempDir,
    pub repo: Embedded,
}

pub async fn local() -> Local {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = Embedded::open(dir.path()).await.unwrap();
    Local { dir, repo }
}

/// An embedded repository behind a facade, and a client of it.
pub struct Remote {
    pub local: Local,
    pub facade: Facade,
    pub client: OtcsClient,
}

pub async fn remote() -> Remote {
    let local = local().await;
    let facade = Facade::start(
        local.repo.clone(),
        facade_config(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let client = OtcsClient::new(client_config(&facade.base_url())).unwrap();
    client.wait_ready(Duration::from_secs(10)).await.unwrap();
    Remote {
        local,
        facade,
        client,
    }
}

pub fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn doc(parent: NodeId, name: &str, data: &[u8], policy: CollisionPolicy) -> NewDocument {
    NewDocument {
        parent,
        name: name.into(),
        description: Some("test document".into()),
        mime_type: "text/plain".into(),
        sha256: sha(data),
        categories: vec![],
        policy,
    }
}

pub fn invoice(supplier: &str, number: i64, status: &str) -> Category {
    Category {
        name: "Invoice".into(),
        attributes: vec![
            Attribute {
                name: "Supplier".into(),
                value: AttributeValue::Text(supplier.into()),
            },
            Attribute {
                name: "Number".into(),
                value: AttributeValue::Integer(number),
            },
            Attribute {
                name: "Amount".into(),
                value: AttributeValue::Decimal("12.5".into()),
            },
            Attribute {
                name: "Status".into(),
                value: AttributeValue::Text(status.into()),
            },
            Attribute {
                name: "Date".into(),
                value: AttributeValue::Date("2026-11-24".into()),
            },
            Attribute {
                name: "Paid".into(),
                value: AttributeValue::Boolean(false),
            },
        ],
    }
}

pub async fn store<R: Repository>(r: &R, d: &NewDocument, data: &[u8]) -> Result<Stored> {
    r.store_document(d, &BytesSource(bytes::Bytes::copy_from_slice(data)))
        .await
}

pub async fn fetch<R: Repository>(r: &R, node: NodeId, version: Option<u32>) -> Vec<u8> {
    collect(r.download(node, version).await.unwrap())
        .await
        .unwrap()
}

pub async fn folder<R: Repository>(r: &R, name: &str) -> NodeId {
    r.ensure_folder(NodeId::ENTERPRISE, &["Tests".to_string(), name.to_string()])
        .await
        .unwrap()
}
