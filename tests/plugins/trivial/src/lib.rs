//! Accepts every file at once; for names ending in `.stream` it first reads
//! the whole content and records the byte count in the description.
use std::io::Read;

use wharf_sdk::prelude::*;

struct Trivial;

impl Plugin for Trivial {
    fn on_file(file: FileInfo, content: &Content) -> Verdict {
        let mut filing = Filing::to_folder("Inbox", &file.name);
        if file.name.ends_with(".stream") {
            let mut buf = vec![0u8; 256 * 1024];
            let mut reader = content.reader();
            let mut total: u64 = 0;
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(e) => return Verdict::reject("read-failed", &e.to_string()),
                }
            }
            filing = filing.description(&format!("{total} bytes"));
        }
        Verdict::accept(filing)
    }
}

wharf_sdk::export!(Trivial);
