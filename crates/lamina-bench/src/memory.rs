//! Memory of the measured server and of its execution environments, from `/proc`.
//!
//! Every instance is one subtree of the server's process tree: the sandbox helper, the sandbox's
//! init, and the runtime. Its private memory is what it costs the host beyond what it shares
//! (the interpreter's binary and libraries are page cache shared by every instance).

use std::collections::HashMap;
use std::fs;

/// Bytes of one process: private (clean + dirty) and proportional set size.
#[derive(Debug, Clone, Copy, Default)]
pub struct Footprint {
    pub private: u64,
    pub pss: u64,
}

impl std::ops::AddAssign for Footprint {
    fn add_assign(&mut self, other: Self) {
        self.private += other.private;
        self.pss += other.pss;
    }
}

pub fn footprint(pid: u32) -> Footprint {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return Footprint::default();
    };
    let kb = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
            * 1024
    };
    Footprint {
        private: kb("Private_Clean:") + kb("Private_Dirty:"),
        pss: kb("Pss:"),
    }
}

/// The resident set of a process, in bytes.
pub fn rss(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .unwrap_or(0)
        * 1024
}

fn children() -> HashMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return children;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces; ppid is the 2nd field after.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        children.entry(ppid).or_default().push(pid);
    }
    children
}

fn subtree(root: u32, children: &HashMap<u32, Vec<u32>>) -> Vec<u32> {
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        all.extend(children.get(&all[i]).into_iter().flatten().copied());
        i += 1;
    }
    all
}

/// One instance's memory, by the program its runtime runs.
pub struct InstanceMemory {
    /// Built ahead of time and not yet given a function.
    pub pooled: bool,
    /// `python3.11`, `node`, `bootstrap`, ...
    pub runtime: String,
    /// The whole instance: helper, init, runtime and its children.
    pub total: Footprint,
    /// The runtime process alone.
    pub runtime_only: Footprint,
}

/// The instance id a process belongs to: the last component of its cgroup path.
fn instance_id(pid: u32) -> Option<String> {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    cgroups
        .lines()
        .find(|line| line.contains(":memory:"))
        .and_then(|line| line.rsplit('/').next())
        .map(str::to_owned)
}

/// Every sandbox of the server `server`; those whose id is not in `assigned` (the ids of the
/// instances that have a log stream) are pooled.
pub fn instances(server: u32, assigned: &std::collections::HashSet<String>) -> Vec<InstanceMemory> {
    let children = children();
    let mut out = Vec::new();
    for helper in children.get(&server).into_iter().flatten() {
        let tree = subtree(*helper, &children);
        // The runtime is the deepest process: helper -> init -> runtime.
        let Some(runtime) = tree.get(2).copied() else {
            continue;
        };
        let name = fs::read_link(format!("/proc/{runtime}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "?".into());
        let mut total = Footprint::default();
        for pid in &tree {
            total += footprint(*pid);
        }
        out.push(InstanceMemory {
            pooled: instance_id(*helper).is_none_or(|id| !assigned.contains(&id)),
            runtime: name,
            total,
            runtime_only: footprint(runtime),
        });
    }
    out
}
