//! One execution environment: a sandbox running a runtime, its Runtime API, its logs.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::serve::ListenerExt as _;
use lamina_sandbox::{Cgroup, CgroupRoot, Limits, Sandbox, SandboxSpec};
use std::io::Read as _;
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::catalogue::{Catalogue, Launch};
use crate::logs::{LogSink, LogStream};
use crate::runtime_api::{self, Channel, Invocation, Outcome, Pending, Progress};

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

fn limits(memory_mb: u32) -> Limits {
    let memory_bytes = u64::from(memory_mb) << 20;
    // Lambda: 1,769 MB is one vCPU; cpu.shares 1024 is one CPU's weight.
    let cpu_shares = u64::from(memory_mb) * 1024 / 1769;
    Limits {
        memory_bytes,
        cpu_shares,
        pids_max: 1024,
    }
}

fn environment(config: &InstanceConfig, log_stream: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = config.environment.clone();
    let mut set = |k: &str, v: String| env.push((k.to_owned(), v));
    set("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin".into());
    set("LANG", "en_US.UTF-8".into());
    set("TZ", ":UTC".into());
    set(
        "LD_LIBRARY_PATH",
        "/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib".into(),
    );
    set("PYTHONUNBUFFERED", "1".into());
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
    set(
        "AWS_LAMBDA_RUNTIME_API",
        format!("127.0.0.1:{RUNTIME_API_PORT}"),
    );
    set("LAMBDA_TASK_ROOT", "/var/task".into());
    set("LAMBDA_RUNTIME_DIR", "/var/runtime".into());
    env
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
    /// Creates the sandbox and starts the runtime; returns once the runtime process runs (its
    /// initialisation continues until it first asks for an invocation).
    pub async fn start(host: &Host, config: &InstanceConfig) -> Result<Instance, StartError> {
        let (program, args) = match host.catalogue.launch(&config.runtime) {
            None => return Err(StartError::UnknownRuntime(config.runtime.clone())),
            Some(Launch::Interpreter { program, args }) => (program.clone(), args.clone()),
            Some(Launch::Custom) => {
                if !config.code_dir.join("bootstrap").is_file() {
                    return Err(StartError::NoBootstrap);
                }
                ("/var/task/bootstrap".to_owned(), Vec::new())
            }
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let stream = log_stream_name(&config.version, &id);
        let log = host.logs.stream(&config.log_group, &stream);
        let work = host.work_dir.join(&id);
        let (root, tmp) = (work.join("root"), work.join("tmp.img"));
        let sandbox_error = |e: std::io::Error| StartError::Sandbox(e.to_string());
        std::fs::create_dir_all(&root).map_err(sandbox_error)?;
        let cgroup = Arc::new(
            host.cgroups
                .create(&id, limits(config.memory_mb))
                .map_err(sandbox_error)?,
        );

        let spec = SandboxSpec {
            root,
            system_paths: ["/usr", "/bin", "/lib", "/lib64", "/sbin"]
                .map(PathBuf::from)
                .to_vec(),
            etc_files: [
                "/etc/ssl",
                "/etc/ca-certificates",
                "/etc/ld.so.cache",
                "/etc/localtime",
                "/etc/resolv.conf",
            ]
            .map(PathBuf::from)
            .to_vec(),
            code: config.code_dir.clone(),
            opt: None,
            runtime: Some(host.catalogue.runtime_dir.clone()),
            tmp,
            hostname: format!("sandbox-{}", &id[..12]),
            uid: SANDBOX_UID,
            gid: SANDBOX_UID,
            runtime_api_port: RUNTIME_API_PORT,
            cgroup_procs: cgroup.procs_files(),
            max_open_files: 1024,
            program,
            args,
            env: environment(config, &stream),
            cwd: "/var/task".into(),
        };
        let helper = host.helper.clone();
        let (images, size) = (host.images.clone(), config.ephemeral_storage_mb);
        let spawned = tokio::task::spawn_blocking(move || {
            lamina_sandbox::tmpfs::prepare_image(
                &images,
                size,
                SANDBOX_UID,
                SANDBOX_UID,
                &spec.tmp,
            )
            .map_err(|e| lamina_sandbox::SandboxError::Helper(format!("/tmp image: {e}")))?;
            Sandbox::spawn(
                &helper,
                &["sandbox-helper"],
                &spec,
                Stdio::piped(),
                Stdio::piped(),
            )
        })
        .await
        .map_err(|e| StartError::Sandbox(e.to_string()))?;
        let mut sandbox = match spawned {
            Ok(sandbox) => sandbox,
            Err(err) => {
                let cgroup = cgroup.clone();
                let _ = tokio::task::spawn_blocking(move || cgroup.destroy()).await;
                let _ = std::fs::remove_dir_all(&work);
                return Err(StartError::Sandbox(err.to_string()));
            }
        };

        let (channel, next) = Channel::new();
        let mut tasks = Vec::new();
        sandbox
            .runtime_api
            .set_nonblocking(true)
            .map_err(sandbox_error)?;
        let listener =
            tokio::net::TcpListener::from_std(sandbox.runtime_api).map_err(sandbox_error)?;
        let listener = listener.tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
        let router = runtime_api::router(channel.clone());
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }));
        let mut pipes = Vec::new();
        let outputs: [Option<std::os::fd::OwnedFd>; 2] = [
            sandbox.helper.stdout.take().map(Into::into),
            sandbox.helper.stderr.take().map(Into::into),
        ];
        for fd in outputs.into_iter().flatten() {
            let pipe = Arc::new(Pipe::new(fd, log.clone()).map_err(sandbox_error)?);
            let pump = pipe.clone();
            tasks.push(tokio::spawn(async move { pump.pump().await }));
            pipes.push(pipe);
        }
        let (exit_tx, exit) = watch::channel(None);
        let mut child = sandbox.helper;
        tokio::task::spawn_blocking(move || {
            let code = match child.wait() {
                Ok(status) => status.code().unwrap_or(-1),
                Err(_) => -1,
            };
            let _ = exit_tx.send(Some(code));
        });
        Ok(Instance {
            id,
            log,
            memory_mb: config.memory_mb,
            channel,
            next,
            cgroup,
            exit,
            tasks,
            pipes,
            work,
            started: Instant::now(),
            initialised: AtomicBool::new(false),
        })
    }

    /// Hands `invocation` to the runtime and waits for its outcome. After any outcome but
    /// `Success` and `FunctionError` the instance is unusable and must be destroyed.
    /// The second value is the init duration, on the instance's first invocation only.
    pub async fn invoke(&self, invocation: Invocation) -> (Outcome, Option<Duration>) {
        let (reply_tx, mut reply) = oneshot::channel();
        let (delivered_tx, delivered) = oneshot::channel();
        {
            let mut slot = self.channel.slot.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(body) = slot.init_failure.take() {
                return (Outcome::InitError(body), None);
            }
            slot.pending = Some(Pending {
                request_id: invocation.request_id.clone(),
                reply: reply_tx,
                delivered: Some(delivered_tx),
            });
        }
        let timeout = invocation.timeout;
        let cold = !self.initialised.swap(true, Ordering::Relaxed);
        let mut exit = self.exit.clone();
        if self.next.send(invocation).await.is_err() {
            return (self.exited_outcome(), None);
        }
        let mut delivered = delivered;
        let init_duration = |at: Instant| cold.then(|| at.duration_since(self.started));
        let delivered_at = tokio::select! {
            biased;
            outcome = &mut reply => {
                // Answered before this task saw the hand-off: the delivery time is still there.
                let init = delivered.try_recv().ok().and_then(init_duration);
                return (outcome.unwrap_or_else(|_| self.exited_outcome()), init);
            }
            at = &mut delivered => match at {
                Ok(at) => at,
                Err(_) => return (self.exited_outcome(), None),
            },
            _ = exit.wait_for(Option::is_some) => return (self.exited_outcome(), None),
            _ = tokio::time::sleep(INIT_LIMIT) => return (Outcome::Timeout, None),
        };
        self.await_outcome(reply, exit, timeout, init_duration(delivered_at))
            .await
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
        init_duration: Option<Duration>,
    ) -> (Outcome, Option<Duration>) {
        let outcome = tokio::select! {
            biased;
            outcome = &mut reply => outcome.unwrap_or_else(|_| self.exited_outcome()),
            _ = exit.wait_for(Option::is_some) => {
                // The runtime may have answered just before it exited.
                reply.try_recv().unwrap_or_else(|_| self.exited_outcome())
            }
            _ = tokio::time::sleep(timeout) => Outcome::Timeout,
        };
        (outcome, init_duration)
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
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(err) = cgroup.destroy() {
                tracing::warn!(%err, "removing an instance's cgroups");
            }
            let _ = std::fs::remove_dir_all(work);
        })
        .await;
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
