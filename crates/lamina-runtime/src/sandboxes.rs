//! Sandboxes built ahead of time. Building one (cgroups joined, namespaces, root filesystem,
//! `/tmp`, the Runtime API socket, and for Python and Node.js the interpreter itself, loaded
//! and waiting) is most of a cold start; a pool of them per [`Blueprint`] leaves a cold start
//! only the assignment: the code mounted, the runtime released or started, the function's own
//! initialisation.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use lamina_sandbox::{Cgroup, Sandbox, SandboxSpec, Workload};

use crate::instance::{Host, RUNTIME_API_PORT, SANDBOX_UID, StartError, limits};

/// Sandboxes of each default kind built at start: two, so that a second new function right
/// after the first still finds one while the pool refills.
const PREWARMED: usize = 2;

/// Lambda's default `EphemeralStorage`, in MB.
const DEFAULT_TMP_MB: u32 = 512;

/// What a sandbox is built as before it has a function. Sandboxes of one blueprint are
/// interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Blueprint {
    /// The interpreter (program and arguments) waiting in the sandbox for its assignment; none
    /// for a sandbox whose workload starts when it is assigned.
    pub zygote: Option<(String, Vec<String>)>,
    /// The size of its `/tmp`.
    pub tmp_mb: u32,
}

/// The environment every workload starts with; an assignment brings the function's own.
pub(crate) fn base_environment() -> Vec<(String, String)> {
    [
        ("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin"),
        ("LANG", "en_US.UTF-8"),
        ("TZ", ":UTC"),
        // The function's own directories only (see `library_path`); a zygote starts before
        // its code, when `/var/task` is an empty mount point.
        ("LD_LIBRARY_PATH", "/var/task"),
        ("PYTHONUNBUFFERED", "1"),
        ("LAMBDA_TASK_ROOT", "/var/task"),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([(
        "AWS_LAMBDA_RUNTIME_API".to_owned(),
        format!("127.0.0.1:{RUNTIME_API_PORT}"),
    )])
    .collect()
}

/// A sandbox built and waiting for a function.
pub(crate) struct Built {
    pub id: String,
    pub work: PathBuf,
    pub cgroup: Arc<Cgroup>,
    pub sandbox: Sandbox,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl Built {
    /// Kills it, reaps its helper, and removes what it left on the host. Blocking.
    pub fn destroy(self) {
        let mut helper = self.sandbox.helper;
        destroy(&self.cgroup, &self.work);
        // The helper was in the cgroup, so it is dead now: reap it rather than leave a zombie.
        let _ = helper.wait();
    }
}

/// Kills every process of a sandbox and removes its cgroups and directory. Blocking.
pub(crate) fn destroy(cgroup: &Cgroup, work: &std::path::Path) {
    if let Err(err) = cgroup.destroy() {
        tracing::warn!(%err, "removing an instance's cgroups");
    }
    let _ = std::fs::remove_dir_all(work);
}

/// Builds a sandbox of `blueprint`. Blocking: run it off the async workers.
pub(crate) fn build(host: &Host, blueprint: &Blueprint) -> Result<Built, StartError> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let work = host.work_dir.join(&id);
    let (root, tmp) = (work.join("root"), work.join("tmp.img"));
    let sandbox_error = |e: std::io::Error| StartError::Sandbox(e.to_string());
    std::fs::create_dir_all(&root).map_err(sandbox_error)?;
    // Built with the smallest function's limits; an assignment sets its function's.
    let cgroup = match host.cgroups.create(&id, limits(128)) {
        Ok(cgroup) => Arc::new(cgroup),
        Err(err) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(sandbox_error(err));
        }
    };
    let built = (|| {
        lamina_sandbox::tmpfs::prepare_image(
            &host.images,
            blueprint.tmp_mb,
            SANDBOX_UID,
            SANDBOX_UID,
            &tmp,
        )
        .map_err(|e| StartError::Sandbox(format!("/tmp image: {e}")))?;
        // Held until the helper has mounted it; the mount keeps it from then on.
        let device = lamina_sandbox::tmpfs::attach(&tmp)
            .map_err(|e| StartError::Sandbox(format!("/tmp loop device: {e}")))?;
        let spec = SandboxSpec {
            root,
            system_paths: ["/usr", "/bin", "/lib", "/lib64", "/sbin"]
                .map(PathBuf::from)
                .to_vec(),
            // Lambda's images make /bin/sh bash: bootstraps written for them use bashisms.
            sh: host.catalogue.bash.clone(),
            etc_files: [
                "/etc/ssl",
                "/etc/ca-certificates",
                "/etc/ld.so.cache",
                "/etc/localtime",
                "/etc/resolv.conf",
            ]
            .map(PathBuf::from)
            .to_vec(),
            runtime: Some(host.catalogue.runtime_dir.clone()),
            runtime_sdk: host.catalogue.sdk_dir.clone(),
            tmp: device.path.clone(),
            hostname: format!("sandbox-{}", &id[..12]),
            uid: SANDBOX_UID,
            gid: SANDBOX_UID,
            runtime_api_port: RUNTIME_API_PORT,
            cgroup_procs: cgroup.procs_files(),
            freezer: cgroup.freezer_dir(),
            max_open_files: 1024,
            zygote: blueprint.zygote.as_ref().map(|(program, args)| {
                let mut env = base_environment();
                env.push((
                    "_LAMINA_ASSIGNMENT_FD".into(),
                    lamina_sandbox::ASSIGNMENT_FD.to_string(),
                ));
                Workload {
                    program: program.clone(),
                    args: args.clone(),
                    env,
                    cwd: "/var/task".into(),
                }
            }),
        };
        let mut sandbox = Sandbox::build(
            &host.helper,
            &["sandbox-helper"],
            &spec,
            Stdio::piped(),
            Stdio::piped(),
        )
        .map_err(|e| StartError::Sandbox(e.to_string()))?;
        drop(device);
        let (Some(stdout), Some(stderr)) =
            (sandbox.helper.stdout.take(), sandbox.helper.stderr.take())
        else {
            return Err(StartError::Sandbox("the helper has no output pipes".into()));
        };
        Ok((sandbox, stdout.into(), stderr.into()))
    })();
    match built {
        Ok((sandbox, stdout, stderr)) => Ok(Built {
            id,
            work,
            cgroup,
            sandbox,
            stdout,
            stderr,
        }),
        Err(err) => {
            destroy(&cgroup, &work);
            Err(err)
        }
    }
}

/// Built sandboxes waiting for functions, up to `size` per blueprint. A blueprint is pooled
/// from its first use on, and topped up in the background whenever one is taken.
pub struct SandboxPool {
    size: usize,
    ready: Mutex<HashMap<Blueprint, Vec<Built>>>,
    /// Blueprints being built, each with the most sandboxes any fill asked for.
    filling: Mutex<HashMap<Blueprint, usize>>,
}

impl std::fmt::Debug for SandboxPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxPool")
            .field("size", &self.size)
            .field("ready", &self.ready_count())
            .finish()
    }
}

impl SandboxPool {
    /// A pool keeping `size` sandboxes of each blueprint in use; 0 builds every sandbox on
    /// demand.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            ready: Mutex::default(),
            filling: Mutex::default(),
        }
    }

    pub fn ready_count(&self) -> usize {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    pub(crate) fn take(&self, blueprint: &Blueprint) -> Option<Built> {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(blueprint)?
            .pop()
    }

    /// Tops the blueprint's sandboxes up to the pool's size, one at a time, in the background.
    pub(crate) fn replenish(host: &Arc<Host>, blueprint: &Blueprint) {
        let size = host.sandboxes.size;
        if size == 0 {
            return;
        }
        let (host, blueprint) = (host.clone(), blueprint.clone());
        tokio::task::spawn_blocking(move || fill(&host, &blueprint, size));
    }

    /// Builds [`PREWARMED`] sandboxes of each kind a function gets by default — each
    /// interpreter's zygote and the plain kind, with Lambda's default `/tmp` — in the
    /// background, so that the first cold starts after the server starts (even on a new data
    /// directory, whose `/tmp` image this makes) find one built. The pool tops a kind up to
    /// its size once the kind is used.
    pub fn prewarm(host: &Arc<Host>) {
        let size = host.sandboxes.size;
        if size == 0 {
            return;
        }
        let blueprints: Vec<Blueprint> = std::iter::once(None)
            .chain(host.catalogue.zygotes().map(Some))
            .map(|zygote| Blueprint {
                zygote,
                tmp_mb: DEFAULT_TMP_MB,
            })
            .collect();
        let host = host.clone();
        tokio::task::spawn_blocking(move || {
            for blueprint in blueprints {
                fill(&host, &blueprint, PREWARMED.min(size));
            }
        });
    }

    /// Destroys every waiting sandbox (shutdown). Blocking.
    pub fn clear(&self) {
        let all: Vec<Built> = self
            .ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .flat_map(|(_, built)| built)
            .collect();
        for built in all {
            built.destroy();
        }
    }
}

/// Builds sandboxes of `blueprint` one at a time until the pool holds `target` of them. If a
/// fill of the blueprint is under way, that one takes the larger target over instead. Blocking.
fn fill(host: &Host, blueprint: &Blueprint, target: usize) {
    let pool = &host.sandboxes;
    {
        let mut filling = pool.filling.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(wanted) = filling.get_mut(blueprint) {
            *wanted = (*wanted).max(target);
            return;
        }
        filling.insert(blueprint.clone(), target);
    }
    let have = || {
        pool.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(blueprint)
            .map_or(0, Vec::len)
    };
    loop {
        {
            // Decided under the claim's lock, so that no larger target asked for meanwhile
            // is lost.
            let mut filling = pool.filling.lock().unwrap_or_else(|p| p.into_inner());
            let wanted = filling.get(blueprint).copied().unwrap_or(target);
            if have() >= wanted {
                filling.remove(blueprint);
                return;
            }
        }
        match build(host, blueprint) {
            Ok(built) => pool
                .ready
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(blueprint.clone())
                .or_default()
                .push(built),
            Err(err) => {
                tracing::warn!(%err, "building a sandbox ahead");
                pool.filling
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(blueprint);
                return;
            }
        }
    }
}
