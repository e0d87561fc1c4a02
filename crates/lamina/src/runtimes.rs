//! Which Lambda runtimes this host can run. A runtime is offered only when its interpreter is
//! really here; the sandbox binds the host's `/usr`, so only system locations count.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use lamina_core::function::Runtimes;

const SYSTEM_BINS: &[&str] = &["/usr/bin", "/usr/local/bin"];

pub fn detect() -> Runtimes {
    let mut found: BTreeSet<String> = ["provided", "provided.al2", "provided.al2023"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    for dir in SYSTEM_BINS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(minor) = name.strip_prefix("python3.")
                && !minor.is_empty()
                && minor.bytes().all(|b| b.is_ascii_digit())
            {
                found.insert(name);
            }
        }
        let node = Path::new(dir).join("node");
        if let Some(major) = node_major(&node) {
            found.insert(format!("nodejs{major}.x"));
        }
    }
    Runtimes(found)
}

fn node_major(node: &Path) -> Option<u32> {
    let output = Command::new(node).arg("--version").output().ok()?;
    let version = String::from_utf8(output.stdout).ok()?;
    version
        .trim()
        .strip_prefix('v')?
        .split('.')
        .next()?
        .parse()
        .ok()
}
