//! Control groups for sandboxes: memory (no swap), CPU share, process count, and the freezer.
//!
//! cgroup v1 is what this project's machines run (each controller its own hierarchy); every
//! instance gets `<controller>/<server's own cgroup>/lamina/<scope>/<instance>` in each of memory, cpu,
//! pids and freezer, so sandboxes nest under whatever limits the server itself runs with.
//! A cgroup v2 host is detected and refused with a clear error until its backend exists.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CONTROLLERS: &[&str] = &["memory", "cpu", "pids", "freezer"];
const MOUNT: &str = "/sys/fs/cgroup";

/// What one sandbox may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// Relative CPU weight (v1 `cpu.shares`; 1024 is one CPU's worth under contention).
    pub cpu_shares: u64,
    pub pids_max: u64,
}

/// Where instance cgroups are created.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    /// (controller, directory holding the instances)
    bases: Vec<(&'static str, PathBuf)>,
}

fn io_context(err: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

impl CgroupRoot {
    /// Finds the server's own cgroups and prepares `lamina/<scope>/` beneath them. Each server
    /// (each data directory) has its own scope, so that one server's clean-up never touches
    /// another's instances.
    pub fn detect(scope: &str) -> io::Result<Self> {
        if Path::new(MOUNT).join("cgroup.controllers").exists() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this host runs cgroup v2 only; Lamina's cgroup v2 backend is not written yet",
            ));
        }
        let own = fs::read_to_string("/proc/self/cgroup")?;
        let mut bases = Vec::new();
        for controller in CONTROLLERS {
            let path = own
                .lines()
                .filter_map(|line| {
                    let mut parts = line.splitn(3, ':');
                    let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
                    names.split(',').any(|n| n == *controller).then_some(path)
                })
                .next()
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("no {controller} cgroup"))
                })?;
            let base = Path::new(MOUNT)
                .join(controller)
                .join(path.trim_start_matches('/'))
                .join("lamina")
                .join(scope);
            fs::create_dir_all(&base).map_err(|e| io_context(e, base.display()))?;
            bases.push((*controller, base));
        }
        Ok(Self { bases })
    }

    /// Creates the cgroups of instance `id` with `limits`.
    pub fn create(&self, id: &str, limits: Limits) -> io::Result<Cgroup> {
        let mut dirs = Vec::new();
        for (controller, base) in &self.bases {
            let dir = base.join(id);
            fs::create_dir(&dir).map_err(|e| io_context(e, dir.display()))?;
            dirs.push((*controller, dir));
        }
        let mut cgroup = Cgroup {
            dirs,
            peak: None,
            limits: std::sync::Mutex::new(None),
        };
        if let Err(err) = cgroup.set_limits(limits) {
            let _ = cgroup.destroy();
            return Err(err);
        }
        cgroup.peak = cgroup
            .dir("memory")
            .and_then(|d| fs::File::open(d.join("memory.max_usage_in_bytes")).ok());
        Ok(cgroup)
    }

    /// Kills and removes instance cgroups left behind by a server that did not stop cleanly.
    pub fn remove_stale(&self) -> io::Result<usize> {
        let mut ids = std::collections::BTreeSet::new();
        for (_, base) in &self.bases {
            for entry in fs::read_dir(base)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    ids.insert(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        for id in &ids {
            let dirs = self
                .bases
                .iter()
                .map(|(c, base)| (*c, base.join(id)))
                .filter(|(_, d)| d.exists())
                .collect();
            Cgroup {
                dirs,
                peak: None,
                limits: Default::default(),
            }
            .destroy()?;
        }
        Ok(ids.len())
    }
}

/// The cgroups of one instance.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<(&'static str, PathBuf)>,
    /// `memory.max_usage_in_bytes`, kept open: it is read after every invocation, and
    /// re-reading from offset 0 regenerates it without a path lookup.
    peak: Option<fs::File>,
    /// The limits last set, so that setting the same again writes nothing.
    limits: std::sync::Mutex<Option<Limits>>,
}

impl Cgroup {
    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }

    fn write(&self, controller: &str, file: &str, value: &str) -> io::Result<()> {
        let Some(dir) = self.dir(controller) else {
            return Ok(());
        };
        let path = dir.join(file);
        fs::write(&path, value).map_err(|e| io_context(e, path.display()))
    }

    /// Sets the instance's limits; they may change while it runs (a sandbox built ahead of
    /// time gets its function's limits when it is assigned).
    pub fn set_limits(&self, limits: Limits) -> io::Result<()> {
        let mut current = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let old = current.take();
        let changed =
            |field: fn(&Limits) -> u64| old.as_ref().is_none_or(|o| field(o) != field(&limits));
        if changed(|l| l.memory_bytes) {
            self.set_memory(limits.memory_bytes)?;
        }
        if changed(|l| l.cpu_shares) {
            self.write("cpu", "cpu.shares", &limits.cpu_shares.max(2).to_string())?;
        }
        if changed(|l| l.pids_max) {
            self.write("pids", "pids.max", &limits.pids_max.to_string())?;
        }
        *current = Some(limits);
        Ok(())
    }

    fn set_memory(&self, bytes: u64) -> io::Result<()> {
        let memory = bytes.to_string();
        // With swap accounting the combined limit must match, or the instance could swap;
        // without it (no swap on the host) the file is absent and there is nothing to swap to.
        // The kernel keeps memsw >= memory at every step: raise memsw first, lower it last.
        if self
            .dir("memory")
            .is_some_and(|d| d.join("memory.memsw.limit_in_bytes").exists())
        {
            if self
                .write("memory", "memory.memsw.limit_in_bytes", &memory)
                .is_ok()
            {
                self.write("memory", "memory.limit_in_bytes", &memory)?;
            } else {
                self.write("memory", "memory.limit_in_bytes", &memory)?;
                self.write("memory", "memory.memsw.limit_in_bytes", &memory)?;
            }
        } else {
            self.write("memory", "memory.limit_in_bytes", &memory)?;
        }
        if self
            .dir("memory")
            .is_some_and(|d| d.join("memory.swappiness").exists())
        {
            let _ = self.write("memory", "memory.swappiness", "0");
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process writes its pid to in order to join every cgroup of
    /// the instance but the freezer's (see [`freezer_dir`](Self::freezer_dir)).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .filter(|(controller, _)| *controller != "freezer")
            .map(|(_, d)| d.join("cgroup.procs"))
            .collect()
    }

    /// The freezer cgroup: the sandbox's processes join it, its helper stays out, so that the
    /// helper can still thaw a frozen sandbox (frozen processes cannot act on SIGKILL).
    pub fn freezer_dir(&self) -> Option<PathBuf> {
        self.dir("freezer").map(Path::to_path_buf)
    }

    /// The peak memory use since creation, in bytes.
    pub fn memory_peak(&self) -> io::Result<u64> {
        use std::os::unix::fs::FileExt as _;
        let file = self.peak.as_ref().ok_or(io::ErrorKind::NotFound)?;
        let mut buf = [0u8; 32];
        let read = file.read_at(&mut buf, 0)?;
        std::str::from_utf8(&buf[..read])
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| io::ErrorKind::InvalidData.into())
    }

    /// Whether the kernel's OOM killer has acted in this cgroup.
    pub fn oom_killed(&self) -> bool {
        self.dir("memory")
            .and_then(|d| fs::read_to_string(d.join("memory.oom_control")).ok())
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
            })
            .is_some_and(|kills| kills > 0)
    }

    pub fn freeze(&self) -> io::Result<()> {
        self.write("freezer", "freezer.state", "FROZEN")
    }

    pub fn thaw(&self) -> io::Result<()> {
        self.write("freezer", "freezer.state", "THAWED")
    }

    fn pids(&self) -> Vec<i32> {
        self.dir("pids")
            .or_else(|| self.dir("memory"))
            .and_then(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills every process in the instance (frozen first, so none can fork away) and removes
    /// its cgroups.
    pub fn destroy(&self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            let _ = self.freeze();
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.thaw();
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "sandbox processes survived SIGKILL",
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for (_, dir) in &self.dirs {
            // rmdir may briefly fail with EBUSY while the kernel finishes tearing tasks down.
            let mut attempts = 0;
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) if attempts < 100 => {
                        attempts += 1;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(io_context(e, dir.display())),
                }
            }
        }
        Ok(())
    }
}
