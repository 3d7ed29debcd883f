//! Panics in `on-file` with a recognisable message.
use wharf_sdk::prelude::*;

struct Panicker;

impl Plugin for Panicker {
    fn on_file(file: FileInfo, _content: &Content) -> Verdict {
        panic!("panicker refuses to look at {}", file.name);
    }
}

wharf_sdk::export!(Panicker);
