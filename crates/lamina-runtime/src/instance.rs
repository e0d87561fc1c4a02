//! One execution environment: a sandbox running a runtime, its Runtime API, its logs.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::serve::ListenerExt as _;
use lamina_sandbox::{Assignment, Cgroup, CgroupRoot, Limits, Workload};
use std::io::Read as _;
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::catalogue::{Catalogue, Launch};
use crate::logs::{LogSink, LogStream};
use crate::runtime_api::{self, Channel, Invocation, Outcome, Pending, Progress};
use crate::sandboxes::{Blueprint, Built, SandboxPool, base_environment};

/// The Runtime API port inside every sandbox, as in Lambda.
pub const RUNTIME_API_PORT: u16 = 9001;
/// How long a runtime may take to initialise before its first invocation (Lambda: 10 s).
pub const INIT_LIMIT: Duration = Duration::from_secs(10);
/// The unprivileged identity functions run as.
pub const SANDBOX_UID: u32 = 993;

/// What every instance of this server shares.
#[derive(Debug)]
pub struct Host {
    /// The `lamina` binary, re-executed as the sandbox helper.
    pub helper: PathBuf,
    pub cgroups: CgroupRoot,
    /// Where per-instance directories (root mount point, `/tmp` image) are made.
    pub work_dir: PathBuf,
    /// Where the empty `/tmp` images, one per size, are kept.
    pub images: PathBuf,
    pub catalogue: Catalogue,
    pub logs: LogSink,
    /// Sandboxes built ahead of time.
    pub sandboxes: SandboxPool,
}

/// How long an invocation took, for its `REPORT` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// From the start of the instance until its runtime took this invocation: on the first
    /// invocation of an instance started on demand only.
    pub init: Option<Duration>,
    /// From the runtime taking the invocation until its outcome (the handler's time).
    pub duration: Duration,
}

/// Why an instance is started (`AWS_LAMBDA_INITIALIZATION_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitType {
    /// For an invocation that found no idle instance.
    #[default]
    OnDemand,
    /// Ahead of any invocation, for provisioned concurrency.
    Provisioned,
}

impl InitType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnDemand => "on-demand",
            Self::Provisioned => "provisioned-concurrency",
        }
    }
}

/// What an instance runs.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    pub function_name: String,
    pub version: String,
    pub runtime: String,
    pub handler: String,
    pub memory_mb: u32,
    /// The size of `/tmp`.
    pub ephemeral_storage_mb: u32,
    pub environment: Vec<(String, String)>,
    pub code_dir: PathBuf,
    pub log_group: String,
    pub region: String,
    pub init_type: InitType,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the runtime {0} is not available on this host")]
    UnknownRuntime(String),
    #[error("no bootstrap: the package has no executable /var/task/bootstrap")]
    NoBootstrap,
    #[error("the sandbox could not be created: {0}")]
    Sandbox(String),
}

/// A running execution environment. Serves one invocation at a time.
pub struct Instance {
    pub id: String,
    pub log: LogStream,
    pub memory_mb: u32,
    channel: Arc<Channel>,
    next: mpsc::Sender<Invocation>,
    cgroup: Arc<Cgroup>,
    exit: watch::Receiver<Option<i32>>,
    tasks: Vec<JoinHandle<()>>,
    pipes: Vec<Arc<Pipe>>,
    work: PathBuf,
    started: Instant,
    initialised: AtomicBool,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("id", &self.id).finish()
    }
}

pub(crate) fn limits(memory_mb: u32) -> Limits {
    let memory_bytes = u64::from(memory_mb) << 20;
    // Lambda: 1,769 MB is one vCPU; cpu.shares 1024 is one CPU's weight.
    let cpu_shares = u64::from(memory_mb) * 1024 / 1769;
    Limits {
        memory_bytes,
        cpu_shares,
        pids_max: 1024,
    }
}

/// `LD_LIBRARY_PATH`: of Lambda's list (`/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:
/// /var/task:/var/task/lib:/opt/lib`), the directories that can hold the function's own
/// libraries and exist. The system directories are left out: the loader finds system
/// libraries through its cache anyway, and it probes every listed directory in eight
/// variants (glibc-hwcaps, tls, x86_64) before the cache, ~1 ms of a cold start here.
fn library_path(config: &InstanceConfig) -> String {
    let mut dirs = vec!["/var/task"];
    if config.code_dir.join("lib").is_dir() {
        dirs.push("/var/task/lib");
    }
    dirs.join(":")
}

/// The function's whole environment: its own variables, then the platform's (Lambda reserves
/// those names, so nothing of the function's is overridden).
fn environment(config: &InstanceConfig, log_stream: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = config.environment.clone();
    env.extend(
        base_environment()
            .into_iter()
            .filter(|(key, _)| key != "LD_LIBRARY_PATH"),
    );
    let mut set = |k: &str, v: String| env.push((k.to_owned(), v));
    set("LD_LIBRARY_PATH", library_path(config));
    set("_HANDLER", config.handler.clone());
    set("AWS_REGION", config.region.clone());
    set("AWS_DEFAULT_REGION", config.region.clone());
    if !config.runtime.starts_with("provided") {
        set(
            "AWS_EXECUTION_ENV",
            format!("AWS_Lambda_{}", config.runtime),
        );
    }
    set("AWS_LAMBDA_FUNCTION_NAME", config.function_name.clone());
    set("AWS_LAMBDA_FUNCTION_VERSION", config.version.clone());
    set(
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        config.memory_mb.to_string(),
    );
    set(
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        config.init_type.as_str().into(),
    );
    set("AWS_LAMBDA_LOG_GROUP_NAME", config.log_group.clone());
    set("AWS_LAMBDA_LOG_STREAM_NAME", log_stream.to_owned());
    env
}

/// Whether a runtime already started can take on the function: variables an interpreter reads
/// only as it starts (its options, its library path, its locale) need a fresh start, and so
/// does a package with its own `lib/` (the loader of a process started before the code was
/// there remembers that directory as missing).
fn zygote_can_take(config: &InstanceConfig) -> bool {
    !config.code_dir.join("lib").exists()
        && config.environment.iter().all(|(key, _)| {
            !(key.starts_with("PYTHON") && key != "PYTHONPATH"
                || key.starts_with("NODE_")
                || key.starts_with("LD_")
                || key.starts_with("LC_")
                || key == "LANG"
                || key == "AWS_LAMBDA_EXEC_WRAPPER")
        })
}

fn log_stream_name(version: &str, id: &str) -> String {
    let today = time::OffsetDateTime::now_utc().date();
    format!(
        "{:04}/{:02}/{:02}/[{version}]{id}",
        today.year(),
        u8::from(today.month()),
        today.day()
    )
}

impl Instance {
    /// Takes a sandbox built ahead of time (or builds one), gives it the function and starts
    /// the runtime; returns once the runtime runs (its initialisation continues until it first
    /// asks for an invocation).
    pub async fn start(host: &Arc<Host>, config: &InstanceConfig) -> Result<Instance, StartError> {
        let started = Instant::now();
        let launch = host
            .catalogue
            .launch(&config.runtime)
            .ok_or_else(|| StartError::UnknownRuntime(config.runtime.clone()))?;
        let zygote = match launch {
            Launch::Custom => {
                if !config.code_dir.join("bootstrap").is_file() {
                    return Err(StartError::NoBootstrap);
                }
                None
            }
            Launch::Interpreter { program, args } => {
                zygote_can_take(config).then(|| (program.clone(), args.clone()))
            }
        };
        let blueprint = Blueprint {
            zygote,
            tmp_mb: config.ephemeral_storage_mb,
        };
        let built = match host.sandboxes.take(&blueprint) {
            Some(built) => built,
            None => {
                let (building, blueprint) = (host.clone(), blueprint.clone());
                tokio::task::spawn_blocking(move || crate::sandboxes::build(&building, &blueprint))
                    .await
                    .map_err(|e| StartError::Sandbox(e.to_string()))??
            }
        };

        let stream = log_stream_name(&config.version, &built.id);
        let log = host.logs.stream(&config.log_group, &stream);
        let env = environment(config, &stream);
        let workload = match launch {
            _ if blueprint.zygote.is_some() => None,
            Launch::Custom => Some(("/var/task/bootstrap".to_owned(), Vec::new())),
            Launch::Interpreter { program, args } => Some((program.clone(), args.clone())),
        };
        let assignment = Assignment {
            code: config.code_dir.clone(),
            opt: None,
            message: match workload {
                None => serde_json::to_vec(&serde_json::json!({
                    "env": env.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                }))
                .expect("an environment serializes"),
                Some(_) => Vec::new(),
            },
            workload: workload.map(|(program, args)| Workload {
                program,
                args,
                env,
                cwd: "/var/task".into(),
            }),
        };
        let memory_mb = config.memory_mb;
        let assigned = tokio::task::spawn_blocking(move || {
            built.cgroup.set_limits(limits(memory_mb))?;
            built
                .sandbox
                .assign(&assignment)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok::<_, std::io::Error>(built)
        })
        .await
        .map_err(|e| StartError::Sandbox(e.to_string()))?;
        let built = assigned.map_err(|e| StartError::Sandbox(e.to_string()))?;
        let instance = Self::run(built, log, config.memory_mb, started);
        // Only now: building the replacement competes for CPU with this cold start.
        SandboxPool::replenish(host, &blueprint);
        instance
    }

    /// Serves the Runtime API of an assigned sandbox, pumps its output into `log`, and
    /// watches for its end.
    fn run(
        built: Built,
        log: LogStream,
        memory_mb: u32,
        started: Instant,
    ) -> Result<Instance, StartError> {
        let Built {
            id,
            work,
            cgroup,
            sandbox,
            stdout,
            stderr,
        } = built;
        let fail = |err: std::io::Error| {
            crate::sandboxes::destroy(&cgroup, &work);
            StartError::Sandbox(err.to_string())
        };
        let (channel, next) = Channel::new();
        let mut tasks = Vec::new();
        sandbox.runtime_api.set_nonblocking(true).map_err(fail)?;
        let listener_fd = sandbox.runtime_api.try_clone().map_err(fail)?;
        let listener = tokio::net::TcpListener::from_std(listener_fd).map_err(fail)?;
        let listener = listener.tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
        let router = runtime_api::router(channel.clone());
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }));
        let mut pipes = Vec::new();
        for fd in [stdout, stderr] {
            let pipe = Arc::new(Pipe::new(fd, log.clone()).map_err(fail)?);
            let pump = pipe.clone();
            tasks.push(tokio::spawn(async move { pump.pump().await }));
            pipes.push(pipe);
        }
        let exited = sandbox.exit_watch().map_err(fail)?;
        let (exit_tx, exit) = watch::channel(None);
        let mut helper = sandbox.helper;
        tokio::spawn(async move {
            exited.wait().await;
            let code = match helper.wait() {
                Ok(status) => status.code().unwrap_or(-1),
                Err(_) => -1,
            };
            let _ = exit_tx.send(Some(code));
        });
        Ok(Instance {
            id,
            log,
            memory_mb,
            channel,
            next,
            cgroup,
            exit,
            tasks,
            pipes,
            work,
            started,
            initialised: AtomicBool::new(false),
        })
    }

    /// Hands `invocation` to the runtime and waits for its outcome. After any outcome but
    /// `Success` and `FunctionError` the instance is unusable and must be destroyed.
    pub async fn invoke(&self, invocation: Invocation) -> (Outcome, Timing) {
        let (reply_tx, mut reply) = oneshot::channel();
        let (delivered_tx, delivered) = oneshot::channel();
        {
            let mut slot = self.channel.slot.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(body) = slot.init_failure.take() {
                return (Outcome::InitError(body), Timing::default());
            }
            slot.pending = Some(Pending {
                request_id: invocation.request_id.clone(),
                stream: invocation.stream.clone(),
                reply: reply_tx,
                delivered: Some(delivered_tx),
            });
        }
        let timeout = invocation.timeout;
        let cold = !self.initialised.swap(true, Ordering::Relaxed);
        let mut exit = self.exit.clone();
        if self.next.send(invocation).await.is_err() {
            return (self.exited_outcome(), Timing::default());
        }
        let mut delivered = delivered;
        // Init lasts from the start of the instance (taking or building its sandbox, assigning
        // it, starting the runtime) until the runtime takes its first event; the invocation's
        // duration from then until its answer, so neither counts the other. An event the
        // runtime never took (it failed or hung first) lasted from the hand-off.
        let handed_over = Instant::now();
        let timing = |delivered_at: Option<Instant>| Timing {
            init: delivered_at
                .filter(|_| cold)
                .map(|at| at.duration_since(self.started)),
            duration: delivered_at.unwrap_or(handed_over).elapsed(),
        };
        let delivered_at = tokio::select! {
            biased;
            outcome = &mut reply => {
                // Answered before this task saw the hand-off: the delivery time is still there.
                let timing = timing(delivered.try_recv().ok());
                return (outcome.unwrap_or_else(|_| self.exited_outcome()), timing);
            }
            at = &mut delivered => match at {
                Ok(at) => at,
                Err(_) => return (self.exited_outcome(), timing(None)),
            },
            _ = exit.wait_for(Option::is_some) => return (self.exited_outcome(), timing(None)),
            _ = tokio::time::sleep(INIT_LIMIT) => return (Outcome::Timeout, timing(None)),
        };
        let outcome = self.await_outcome(reply, exit, timeout).await;
        (outcome, timing(Some(delivered_at)))
    }

    /// Waits until the runtime has initialised (it asks for its first invocation) and returns
    /// how long that took; or the outcome that ended it: an init error, an exit, or the init
    /// limit passing. After an error the instance is unusable. Used for provisioned
    /// concurrency; the first invocation of an instance initialised here reports no init
    /// duration, as in Lambda.
    pub async fn initialise(&self) -> Result<Duration, Outcome> {
        let mut progress = self.channel.progress.subscribe();
        let mut exit = self.exit.clone();
        let reached = tokio::select! {
            reached = progress.wait_for(|p| *p != Progress::Starting) => reached.map(|p| *p),
            _ = exit.wait_for(Option::is_some) => return Err(self.exited_outcome()),
            _ = tokio::time::sleep(INIT_LIMIT) => return Err(Outcome::Timeout),
        };
        match reached {
            Ok(Progress::Waiting) => {
                self.initialised.store(true, Ordering::Relaxed);
                Ok(self.started.elapsed())
            }
            Ok(_) => {
                let body = self
                    .channel
                    .slot
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .init_failure
                    .take();
                Err(Outcome::InitError(body.unwrap_or_default()))
            }
            Err(_) => Err(self.exited_outcome()),
        }
    }

    async fn await_outcome(
        &self,
        mut reply: oneshot::Receiver<Outcome>,
        mut exit: watch::Receiver<Option<i32>>,
        timeout: Duration,
    ) -> Outcome {
        let outcome = tokio::select! {
            biased;
            outcome = &mut reply => outcome.unwrap_or_else(|_| self.exited_outcome()),
            _ = exit.wait_for(Option::is_some) => {
                // The runtime may have answered just before it exited.
                reply.try_recv().unwrap_or_else(|_| self.exited_outcome())
            }
            _ = tokio::time::sleep(timeout) => Outcome::Timeout,
        };
        outcome
    }

    fn exited_outcome(&self) -> Outcome {
        let code = self.exit.borrow().unwrap_or(-1);
        Outcome::Exited {
            code,
            out_of_memory: self.cgroup.oom_killed(),
        }
    }

    /// Stops every process of the instance until [`thaw`](Self::thaw): an idle instance uses
    /// no CPU, as in Lambda between invocations.
    pub fn freeze(&self) {
        if let Err(err) = self.cgroup.freeze() {
            tracing::warn!(%err, instance = %self.id, "freezing an idle instance");
        }
    }

    pub fn thaw(&self) {
        if let Err(err) = self.cgroup.thaw() {
            tracing::warn!(%err, instance = %self.id, "thawing an instance");
        }
    }

    /// Moves everything the function has written so far into its log, so that platform lines
    /// written next come after it.
    pub fn flush_output(&self) {
        for pipe in &self.pipes {
            pipe.drain();
        }
    }

    /// The most memory the instance has used, in MB.
    /// How long ago the instance was started.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn max_memory_used_mb(&self) -> u64 {
        self.cgroup
            .memory_peak()
            .map(|b| b.div_ceil(1 << 20))
            .unwrap_or(0)
    }

    /// Whether the runtime process is still alive.
    pub fn is_alive(&self) -> bool {
        self.exit.borrow().is_none()
    }

    /// Kills every process of the instance and removes what it left on the host.
    pub async fn destroy(self) {
        for task in &self.tasks {
            task.abort();
        }
        let cgroup = self.cgroup.clone();
        let work = self.work.clone();
        let _ =
            tokio::task::spawn_blocking(move || crate::sandboxes::destroy(&cgroup, &work)).await;
    }
}

/// One of the function's output pipes: read by its pump task when the reactor says it is
/// readable, and synchronously (through a second descriptor of the same pipe) by
/// [`Instance::flush_output`], which must see every byte written so far.
struct Pipe {
    receiver: tokio::net::unix::pipe::Receiver,
    direct: std::fs::File,
    partial: Mutex<Vec<u8>>,
    log: LogStream,
}

impl Pipe {
    fn new(fd: std::os::fd::OwnedFd, log: LogStream) -> std::io::Result<Self> {
        let direct = std::fs::File::from(fd.try_clone()?);
        // Makes the pipe non-blocking, for both descriptors.
        let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
        Ok(Self {
            receiver,
            direct,
            partial: Mutex::new(Vec::new()),
            log,
        })
    }

    /// Splits what was read into lines for the log; at end of file, flushes the last one.
    fn take(&self, partial: &mut Vec<u8>, chunk: &[u8]) {
        partial.extend_from_slice(chunk);
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            self.log
                .line(&String::from_utf8_lossy(&line[..line.len() - 1]));
        }
    }

    fn finish(&self, partial: &mut Vec<u8>) {
        if !partial.is_empty() {
            self.log.line(&String::from_utf8_lossy(partial));
            partial.clear();
        }
    }

    /// Reads whatever is in the pipe now.
    fn drain(&self) {
        let mut partial = self.partial.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = [0u8; 16 * 1024];
        loop {
            match (&self.direct).read(&mut buf) {
                Ok(0) => return self.finish(&mut partial),
                Ok(n) => self.take(&mut partial, &buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    async fn pump(&self) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if self.receiver.readable().await.is_err() {
                return;
            }
            let mut partial = self.partial.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                match self.receiver.try_read(&mut buf) {
                    Ok(0) => return self.finish(&mut partial),
                    Ok(n) => self.take(&mut partial, &buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        }
    }
}
