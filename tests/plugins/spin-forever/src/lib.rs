//! Never returns from `on-file`: the host must stop it at its deadline.
use wharf_sdk::prelude::*;

struct SpinForever;

impl Plugin for SpinForever {
    fn on_file(file: FileInfo, _content: &Content) -> Verdict {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(file.size | 1));
        }
    }
}

wharf_sdk::export!(SpinForever);
