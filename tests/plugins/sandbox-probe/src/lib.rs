//! Tries every ambient authority a WASI guest could have and reports what it
//! reached as the details of a rejection: files, environment, arguments,
//! network. It also writes to stdout and stderr, which the host captures.
use wharf_sdk::prelude::*;

struct SandboxProbe;

impl Plugin for SandboxProbe {
    fn on_file(_file: FileInfo, _content: &Content) -> Verdict {
        println!("probe: hello from stdout");
        eprintln!("probe: hello from stderr");
        let mut rejection = Rejection::new("probe", "what the sandbox allowed");
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
            );
        rejection.into()
    }
}

wharf_sdk::export!(SandboxProbe);
