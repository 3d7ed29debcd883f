//! Allocates without bound in `on-file`: the host's memory cap must stop it.
use wharf_sdk::prelude::*;

struct MemoryHog;

impl Plugin for MemoryHog {
    fn on_file(_file: FileInfo, _content: &Content) -> Verdict {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![0xA5; 16 * 1024 * 1024]);
            std::hint::black_box(&hoard);
        }
    }
}

wharf_sdk::export!(MemoryHog);
