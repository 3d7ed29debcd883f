//! Returns a filing whose target is taken from the file name, so tests can
//! offer escaping paths: `up.csv` → `../../x`, `abs.csv` → `/etc`, `nul.csv`
//! → a NUL in the path, `name.csv` → a document name with a '/', `ws.csv` →
//! a workspace folder escaping the workspace, `esc.csv` → terminal escape
//! sequences in the description; anything else is filed safely.
use wharf_sdk::prelude::*;

struct HostileTarget;

impl Plugin for HostileTarget {
    fn on_file(file: FileInfo, _content: &Content) -> Verdict {
        let filing = match file.name.as_str() {
            "up.csv" => Filing::to_folder("../../x", "up.csv"),
            "abs.csv" => Filing::to_folder("/etc", "abs.csv"),
            "nul.csv" => Filing::to_folder("In\0box", "nul.csv"),
            "ctrl.csv" => Filing::to_folder("In\u{1b}[31mbox", "ctrl.csv"),
            "name.csv" => Filing::to_folder("Inbox", "../escape.csv"),
            "ws.csv" => Filing::to_workspace("Supplier", "1", "a/../../b", "ws.csv"),
            "esc.csv" => {
                Filing::to_folder("Inbox", "esc.csv").description("\u{1b}[2J\u{1b}[Hforged")
            }
            other => Filing::to_folder("Inbox", other),
        };
        Verdict::accept(filing)
    }
}

wharf_sdk::export!(HostileTarget);
