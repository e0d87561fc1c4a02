//! The execution engine as the server starts it: the host's sandboxes, the runtime catalogue,
//! the invoker, and the housekeeping around them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use lamina_core::arn::Account;
use lamina_core::function::Runtimes;
use lamina_core::invoke::{Invoke, InvokeRequest, InvokeResponse};
use lamina_core::{Error, Result};
use lamina_invoke::{Invoker, Settings};
use lamina_runtime::logs::LogSink;
use lamina_runtime::{Catalogue, Host, SandboxPool};
use lamina_sandbox::CgroupRoot;
use lamina_store::{CodeStore, Observed};

pub struct Engine {
    pub invoker: Arc<dyn Invoke>,
    pub runtimes: Runtimes,
    running: Option<Arc<Invoker>>,
}

/// Stands in for the invoker where this host cannot build sandboxes: the control plane works,
/// and every invocation says why nothing can run.
struct Unavailable(String);

#[async_trait::async_trait]
impl Invoke for Unavailable {
    async fn invoke(&self, _: InvokeRequest) -> Result<InvokeResponse> {
        Err(Error::service(format!(
            "This server cannot run functions: {}",
            self.0
        )))
    }

    async fn resolve(&self, _: &str, _: Option<&str>) -> Result<String> {
        Err(Error::service(format!(
            "This server cannot run functions: {}",
            self.0
        )))
    }
}

/// How the host's sandboxes are kept.
pub struct HostOptions {
    /// Sandboxes built ahead per kind in use.
    pub sandbox_pool: usize,
    pub log_retention: Option<Duration>,
    /// The SDK directory the runtimes' AWS SDKs are installed in, shared by the servers.
    pub sdk_dir: std::path::PathBuf,
}

/// Installs the Python runtimes' boto3 in the background when it is missing: functions that
/// import it without bundling it can, once it is there.
fn install_sdk(catalogue: &Catalogue, sdk_dir: &Path) {
    if lamina_runtime::sdk::python_installed(sdk_dir) {
        return;
    }
    let Some(python) = catalogue.python() else {
        return;
    };
    let sdk_dir = sdk_dir.to_owned();
    tokio::task::spawn_blocking(move || {
        tracing::info!(
            dir = %sdk_dir.display(),
            version = lamina_runtime::sdk::BOTO3_VERSION,
            "installing boto3 for the Python runtimes"
        );
        match lamina_runtime::sdk::install_python(&sdk_dir, &python) {
            Ok(_) => tracing::info!("boto3 is installed for the Python runtimes"),
            Err(err) => tracing::warn!(%err, "could not install boto3 for the Python runtimes"),
        }
    });
}

impl Engine {
    pub async fn start(
        data_dir: &Path,
        store: Arc<Observed>,
        code: CodeStore,
        account: Account,
        settings: Settings,
        options: HostOptions,
    ) -> anyhow::Result<Self> {
        let HostOptions {
            sandbox_pool,
            log_retention,
            sdk_dir,
        } = options;
        let catalogue =
            Catalogue::install(&data_dir.join("runtime")).context("installing the runtimes")?;
        // Without a usable SDK directory functions still run, only without the SDK.
        let catalogue = match catalogue.clone().with_sdk_dir(&sdk_dir) {
            Ok(with_sdk) => {
                install_sdk(&with_sdk, &sdk_dir);
                with_sdk
            }
            Err(err) => {
                tracing::warn!(%err, dir = %sdk_dir.display(), "no SDK directory; the runtimes carry no AWS SDK");
                catalogue
            }
        };
        let runtimes = catalogue.runtimes();
        let host = match host(data_dir, catalogue, sandbox_pool) {
            Ok(host) => host,
            Err(err) => {
                let reason = format!("{err:#}");
                tracing::warn!(%reason, "sandboxes are unavailable; functions cannot run");
                return Ok(Self {
                    invoker: Arc::new(Unavailable(reason)),
                    runtimes,
                    running: None,
                });
            }
        };
        if let Some(retention) = log_retention {
            let logs = host.logs.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    tick.tick().await;
                    let logs = logs.clone();
                    match tokio::task::spawn_blocking(move || logs.remove_older_than(retention))
                        .await
                    {
                        Ok(Ok(0)) => {}
                        Ok(Ok(removed)) => tracing::info!(removed, "removed expired log streams"),
                        Ok(Err(err)) => tracing::warn!(%err, "log retention"),
                        Err(_) => {}
                    }
                }
            });
        }
        let host = Arc::new(host);
        // Built now, in the background: the first cold start need not build its sandbox.
        SandboxPool::prewarm(&host);
        let invoker = Invoker::new(store.clone(), code, host, account, settings);
        let weak = Arc::downgrade(&invoker);
        store.observe(move |function| {
            if let Some(invoker) = weak.upgrade() {
                invoker.function_changed(function);
            }
        });
        invoker
            .start()
            .await
            .map_err(|e| anyhow::anyhow!("taking up reserved and provisioned concurrency: {e}"))?;
        every(&invoker, Duration::from_secs(1), Invoker::reap_idle);
        every(
            &invoker,
            lamina_invoke::FREEZE_AFTER / 2,
            Invoker::freeze_idle,
        );
        Ok(Self {
            invoker: invoker.clone(),
            runtimes,
            running: Some(invoker),
        })
    }

    /// Destroys every execution environment.
    pub async fn shutdown(&self) {
        if let Some(invoker) = &self.running {
            invoker.shutdown().await;
        }
    }
}

/// Runs `work` on the invoker every `period` for as long as the invoker exists.
fn every(invoker: &Arc<Invoker>, period: Duration, work: fn(&Invoker)) {
    let invoker = Arc::downgrade(invoker);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(invoker) = invoker.upgrade() else {
                break;
            };
            work(&invoker);
        }
    });
}

/// The host's physical memory, in MB.
pub fn host_memory_mb() -> anyhow::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb / 1024)
        .context("no MemTotal in /proc/meminfo")
}

/// A name for this server's cgroups, derived from its data directory: stable across restarts
/// (so a restart finds what a killed run left), distinct between servers.
fn scope(data_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let canonical = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_owned());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    canonical.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn host(data_dir: &Path, catalogue: Catalogue, sandbox_pool: usize) -> anyhow::Result<Host> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("sandboxes need root (namespaces, cgroups, mounts)");
    }
    let cgroups = CgroupRoot::detect(&scope(data_dir)).context("finding cgroups")?;
    // A server killed with -9 leaves its instances' cgroups (their processes died with it).
    let stale = cgroups.remove_stale().context("removing stale sandboxes")?;
    if stale > 0 {
        tracing::info!(removed = stale, "removed sandboxes left by an earlier run");
    }
    let work_dir = data_dir.join("instances");
    if work_dir.exists() {
        std::fs::remove_dir_all(&work_dir).context("clearing old instance directories")?;
    }
    std::fs::create_dir_all(&work_dir)?;
    Ok(Host {
        helper: std::env::current_exe().context("locating the lamina binary")?,
        cgroups,
        work_dir,
        images: data_dir.join("images"),
        catalogue,
        logs: LogSink::start(&data_dir.join("logs")).context("opening the log directory")?,
        sandboxes: SandboxPool::new(sandbox_pool),
    })
}
