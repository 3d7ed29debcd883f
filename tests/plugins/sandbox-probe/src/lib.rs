//! Tries every ambient authority a WASI guest could have and reports what it
//! reached as the details of a rejection: files, environment, arguments,
//! network. It also writes to stdout and stderr, which the host captures.
use wharf_sdk::prelude::*;

struct SandboxProbe;

/// Calls this instance served before the current one: always 0 when every
/// call gets fresh memory.
static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Memory written by an earlier call of this instance, if one left any.
static LEFT: std::sync::Mutex<Option<Vec<u8>>> = std::sync::Mutex::new(None);

impl Plugin for SandboxProbe {
    fn on_file(_file: FileInfo, _content: &Content) -> Verdict {
        println!("probe: hello from stdout");
        eprintln!("probe: hello from stderr");
        let mut rejection = Rejection::new("probe", "what the sandbox allowed");
        // What this call finds of earlier ones, then 2 MiB written and kept,
        // more than the host keeps mapped between calls.
        let before = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let left = {
            let mut left = LEFT.lock().unwrap();
            let found = left
                .as_ref()
                .map_or(0, |v| v.iter().filter(|&&b| b == 0xA5).count());
            *left = Some(vec![0xA5; 2 * 1024 * 1024]);
            found
        };
        rejection = rejection
            .detail("memory:calls-before", before)
            .detail("memory:bytes-left", left);
        for path in ["/", ".", "/etc/passwd", "/tmp"] {
            let reached = std::fs::read_dir(path).is_ok() || std::fs::read(path).is_ok();
            rejection = rejection.detail(&format!("fs:{path}"), reached);
        }
        rejection = rejection
            .detail("env", std::env::vars().count())
            .detail("args", std::env::args().count())
            .detail(
                "net",
                std::net::TcpStream::connect(("127.0.0.1", 22)).is_ok(),
            )
            .detail(
                "clock",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() > 1_600_000_000)
                    .unwrap_or(false),
            )
            .detail(
                "config:greeting",
                host::setting("greeting").unwrap_or_default(),
            )
            .detail("config:keys", host::setting_keys().join(","))
            .detail(
                "ftp:list",
                outcome(host::list_folder("").map(|entries| {
                    entries
                        .iter()
                        .map(|e| e.name.clone())
                        .collect::<Vec<_>>()
                        .join(",")
                })),
            )
            .detail(
                "ftp:read",
                outcome(
                    host::read_file("companion.txt", 1024)
                        .map(|b| String::from_utf8_lossy(&b).into_owned()),
                ),
            )
            .detail(
                "ftp:escape",
                outcome(host::read_file("../outside.txt", 1024).map(|_| "read".to_string())),
            )
            .detail(
                "ftp:write",
                outcome(
                    host::write_file("receipt.txt", b"received").map(|_| "written".to_string()),
                ),
            )
            .detail(
                "ftp:write-escape",
                outcome(host::write_file("../receipt.txt", b"x").map(|_| "written".to_string())),
            )
            .detail(
                "ecm:find",
                outcome(host::find_workspace("Supplier", "1").map(|id| format!("{id:?}"))),
            );
        rejection.into()
    }
}

/// `ok:<value>` or the kind of host error, so tests can assert on it.
fn outcome(result: Result<String, wharf_sdk::HostError>) -> String {
    match result {
        Ok(value) => format!("ok:{value}"),
        Err(wharf_sdk::HostError::NotFound(_)) => "not-found".into(),
        Err(wharf_sdk::HostError::Denied(_)) => "denied".into(),
        Err(wharf_sdk::HostError::Unavailable(_)) => "unavailable".into(),
        Err(wharf_sdk::HostError::Invalid(_)) => "invalid".into(),
    }
}

wharf_sdk::export!(SandboxProbe);
