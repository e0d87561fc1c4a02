//! The `lamina` binary. `lamina server` runs the whole platform on one address.
#![forbid(unsafe_code)]

mod credentials;
mod engine;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use clap::{Parser, Subcommand, ValueEnum};
use lamina_api::{ApiState, sigv4::Keyring};
use lamina_core::arn::Account;
use lamina_core::concurrency::ConcurrencyLimits;
use lamina_core::session::SessionKey;
use lamina_invoke::asynchronous::{AsyncInvoker, AsyncSettings};
use lamina_store::{CodeStore, MetadataStore, Observed, QueueStore, SqliteQueues, SqliteStore};

#[derive(Parser)]
#[command(
    name = "lamina",
    version,
    about = "A self-hosted, AWS Lambda-compatible serverless platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Lambda API (and everything else) on one address.
    Server(Box<ServerArgs>),
    /// Install the AWS SDK the Python runtimes carry (boto3), as the server does in the
    /// background when it is missing; here it waits until it is done.
    InstallSdk {
        /// The SDK directory [default: $XDG_CACHE_HOME/lamina/sdk or ~/.cache/lamina/sdk].
        #[arg(long, env = "LAMINA_SDK_DIR")]
        sdk_dir: Option<PathBuf>,
    },
    /// Internal: builds one sandbox; started by the server, never by hand.
    #[command(hide = true)]
    SandboxHelper,
}

#[derive(Parser)]
struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "LAMINA_LISTEN", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Where metadata, code and credentials live [default: $XDG_DATA_HOME/lamina or
    /// ~/.local/share/lamina].
    #[arg(long, env = "LAMINA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The region in every ARN this server makes.
    #[arg(long, env = "LAMINA_REGION", default_value = "us-east-1")]
    region: String,
    /// The 12-digit account id in every ARN this server makes.
    #[arg(long, env = "LAMINA_ACCOUNT_ID", default_value = "000000000000")]
    account_id: String,
    /// The account's concurrency limit.
    #[arg(long, env = "LAMINA_CONCURRENCY_LIMIT", default_value_t = 1000)]
    concurrency_limit: u32,
    /// How much concurrency must stay unreserved (Lambda keeps 100).
    #[arg(long, env = "LAMINA_MIN_UNRESERVED_CONCURRENCY", default_value_t = 100)]
    min_unreserved_concurrency: u32,
    /// How long an idle execution environment is kept warm, in seconds (with the hybrid
    /// policy: until a function's own pattern is known).
    #[arg(long, env = "LAMINA_INSTANCE_KEEP_ALIVE", default_value_t = 300)]
    instance_keep_alive: u64,
    /// How idle execution environments are kept: `fixed` (the keep-alive above, as Lambda
    /// does) or `hybrid` (per function, from the gaps between its invocations).
    #[arg(long, env = "LAMINA_KEEP_ALIVE_POLICY", value_enum, default_value_t = KeepAlive::Fixed)]
    keep_alive_policy: KeepAlive,
    /// New execution environments one function may gain per 10 seconds (Lambda: 1,000).
    #[arg(long, env = "LAMINA_SCALE_OUT_RATE", default_value_t = 1000)]
    scale_out_rate: u32,
    /// Memory all execution environments together may be given, in MB [default: the host's
    /// memory less 1 GiB]. Idle environments are evicted to make room before work is refused.
    #[arg(long, env = "LAMINA_MEMORY_BUDGET_MB")]
    memory_budget_mb: Option<u64>,
    /// Sandboxes kept built ahead of time for each kind in use (a runtime's interpreter
    /// waiting in it, and a `/tmp` size); 0 builds every sandbox on demand.
    #[arg(long, env = "LAMINA_SANDBOX_POOL", default_value_t = 4)]
    sandbox_pool: usize,
    /// How many days function logs are kept (0: forever).
    #[arg(long, env = "LAMINA_LOG_RETENTION_DAYS", default_value_t = 30)]
    log_retention_days: u64,
    /// A domain pointed at this server (a wildcard DNS record or a proxy) under which function
    /// URLs are `<scheme>://<url-id>.lambda-url.<region>.<host>/`, say
    /// `https://lambda.example.com` [default: the path form on the listen address,
    /// `http://127.0.0.1:9000/_lamina/urls/<url-id>/`].
    #[arg(long, env = "LAMINA_FUNCTION_URL_BASE")]
    function_url_base: Option<String>,
    /// Asynchronous events that may wait in the queue at most; further `Event` invocations are
    /// refused (429) until it drains.
    #[arg(long, env = "LAMINA_ASYNC_QUEUE_DEPTH", default_value_t = 100_000)]
    async_queue_depth: u64,
    /// Asynchronous events run at once.
    #[arg(long, env = "LAMINA_ASYNC_CONCURRENCY", default_value_t = 100)]
    async_concurrency: usize,
    /// Seconds before the first retry of an asynchronous event whose function failed; the
    /// second retry waits twice as long (Lambda: 60).
    #[arg(long, env = "LAMINA_ASYNC_RETRY_INTERVAL", default_value_t = 60)]
    async_retry_interval: u64,
    /// Seconds the temporary credentials of a function's role stay valid from the start of
    /// its execution environment.
    #[arg(long, env = "LAMINA_CREDENTIALS_LIFETIME", default_value_t = 43_200)]
    credentials_lifetime: u64,
    /// Where the AWS SDKs the runtimes carry are installed, shared by every server on the
    /// machine [default: $XDG_CACHE_HOME/lamina/sdk or ~/.cache/lamina/sdk].
    #[arg(long, env = "LAMINA_SDK_DIR")]
    sdk_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "LAMINA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum KeepAlive {
    Fixed,
    Hybrid,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> anyhow::Result<()> {
    // The sandbox helper is started once per sandbox: straight to it, before building the
    // whole command-line parser.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "sandbox-helper")
    {
        lamina_sandbox::helper_main();
    }
    let cli = Cli::parse();
    match cli.command {
        // Before anything else: the helper must stay single-threaded.
        Command::SandboxHelper => lamina_sandbox::helper_main(),
        Command::InstallSdk { sdk_dir } => {
            let dir = sdk_dir.unwrap_or_else(lamina_runtime::sdk::default_dir);
            let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .unwrap_or_else(|| PathBuf::from("python3"));
            let installed = lamina_runtime::sdk::install_python(&dir, &python)
                .with_context(|| format!("installing boto3 into {}", dir.display()))?;
            let what = if installed {
                "installed"
            } else {
                "already there"
            };
            println!(
                "boto3 {} {what}: {}",
                lamina_runtime::sdk::BOTO3_VERSION,
                lamina_runtime::sdk::python_dir(&dir).display()
            );
            Ok(())
        }
        Command::Server(args) => {
            init_logging(args.log_format);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(serve(*args))
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAMINA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: a service's journal, a redirect or CI gets
    // plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("lamina");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/lamina")
}

async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    if args.account_id.len() != 12 || !args.account_id.bytes().all(|b| b.is_ascii_digit()) {
        anyhow::bail!("--account-id must be 12 digits, not {:?}", args.account_id);
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let _lock = lock_data_dir(&data_dir)?;
    let keys = credentials::load_or_create(&data_dir)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr()?;
    let urls = match &args.function_url_base {
        Some(base) => lamina_api::UrlDirectory::under_domain(base, &args.region)
            .map_err(|e| anyhow::anyhow!("--function-url-base: {e}"))?,
        None => lamina_api::UrlDirectory::on_address(address, &args.region),
    };
    let (state, engine, events) = open_state(&args, &data_dir, &keys, urls).await?;

    // Without TCP_NODELAY every small response waits for a delayed ACK: ~45 ms per boto3 call.
    let listener = listener.tap_io(|stream| {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::warn!(%err, "could not set TCP_NODELAY");
        }
    });
    // Installed before readiness is announced, so a SIGTERM that follows it is always graceful.
    let shutdown = shutdown_signal()?;
    tracing::info!(
        %address,
        data_dir = %data_dir.display(),
        region = %args.region,
        account = %args.account_id,
        runtimes = %state.runtimes.list(),
        "lamina is listening"
    );
    let stopping = {
        let (events, queues) = (events.clone(), state.queues.clone());
        async move {
            shutdown.await;
            tracing::info!("stopping: finishing requests and running events");
            // No event starts from now on, and long polls (ReceiveMessage's, the event
            // dispatcher's) answer now rather than holding the stop up for their wait.
            events.stop();
            queues.stop_waiting();
        }
    };
    let app = lamina_api::app(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(stopping)
        .await
        .context("serving")?;
    // Events running at the stop finish like requests do: none fails for it or runs twice.
    events.drained().await;
    // In-flight requests and events have finished; no sandbox may outlive the server.
    engine.shutdown().await;
    tracing::info!("lamina stopped");
    Ok(())
}

/// Holds an exclusive lock on the data directory for the life of the server: two servers on
/// one directory would corrupt each other's sandboxes and code.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = data_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, err)| {
            anyhow::anyhow!(
                "{} is in use by another lamina server ({err})",
                data_dir.display()
            )
        },
    )
}

async fn open_state(
    args: &ServerArgs,
    data_dir: &Path,
    keys: &credentials::KeyPair,
    urls: lamina_api::UrlDirectory,
) -> anyhow::Result<(Arc<ApiState>, engine::Engine, Arc<AsyncInvoker>)> {
    let sqlite =
        SqliteStore::open(&data_dir.join("metadata.db")).context("opening the metadata store")?;
    let code = CodeStore::open(&data_dir.join("code")).context("opening the code store")?;
    // Packages written for a create that never committed (a crash, a failed commit) and those
    // of deleted functions are removed here, before anything can refer to them again.
    let in_use = sqlite.code_in_use().await.context("listing code in use")?;
    let swept = code.sweep(&in_use).context("sweeping unused code")?;
    if swept > 0 {
        tracing::info!(removed = swept, "removed unused code packages");
    }
    let store = Arc::new(Observed::new(sqlite));
    let account = Account {
        region: args.region.clone(),
        account_id: args.account_id.clone(),
    };
    let limits = ConcurrencyLimits {
        account: args.concurrency_limit,
        min_unreserved: args.min_unreserved_concurrency,
    };
    let keep_alive = Duration::from_secs(args.instance_keep_alive);
    // Seals the temporary credentials of functions' roles.
    let sessions = SessionKey::new(keys.derive_key(b"lamina role sessions"));
    let settings = lamina_invoke::Settings {
        limits,
        scale_out_per_10s: args.scale_out_rate,
        memory_budget_mb: match args.memory_budget_mb {
            Some(budget) => budget,
            None => engine::host_memory_mb()?.saturating_sub(1024),
        },
        credentials: Some(lamina_invoke::RoleCredentials {
            key: sessions.clone(),
            lifetime: Duration::from_secs(args.credentials_lifetime.max(1)),
        }),
        keep_alive: match args.keep_alive_policy {
            KeepAlive::Fixed => Arc::new(lamina_invoke::keep_alive::Fixed(keep_alive)),
            KeepAlive::Hybrid => {
                Arc::new(lamina_invoke::keep_alive::HybridHistogram::new(keep_alive))
            }
        },
    };
    let engine = engine::Engine::start(
        data_dir,
        store.clone(),
        code.clone(),
        account.clone(),
        settings,
        engine::HostOptions {
            sandbox_pool: args.sandbox_pool,
            log_retention: (args.log_retention_days > 0)
                .then(|| Duration::from_secs(args.log_retention_days * 86_400)),
            sdk_dir: args
                .sdk_dir
                .clone()
                .unwrap_or_else(lamina_runtime::sdk::default_dir),
        },
    )
    .await?;
    let queues: Arc<dyn QueueStore> = Arc::new(
        SqliteQueues::open(&data_dir.join("queues.db")).context("opening the queue store")?,
    );
    let events = AsyncInvoker::start(
        queues.clone(),
        engine.invoker.clone(),
        store.clone(),
        Arc::new(lamina_sources::Brokers::default()),
        account.clone(),
        AsyncSettings {
            max_depth: args.async_queue_depth,
            concurrency: args.async_concurrency,
            retry_interval: Duration::from_secs(args.async_retry_interval),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting asynchronous invocation: {e}"))?;
    expire_messages(queues.clone());
    let state = Arc::new(ApiState {
        store: store.clone(),
        code,
        account,
        runtimes: engine.runtimes.clone(),
        keyring: Keyring::new([(keys.access_key_id.clone(), keys.secret_access_key.clone())])
            .with_sessions(sessions),
        url_key: keys.derive_key(b"lamina code location"),
        concurrency: limits,
        invoker: engine.invoker.clone(),
        urls,
        events: events.clone(),
        queues,
    });
    // A commit to a function may change what its URLs invoke or who may call them.
    let observing = Arc::downgrade(&state);
    store.observe(move |function| {
        if let Some(state) = observing.upgrade() {
            state.urls.function_changed(function);
        }
    });
    Ok((state, engine, events))
}

/// Deletes queue messages past their retention, every minute.
fn expire_messages(queues: Arc<dyn QueueStore>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            match queues.expire(lamina_store::now_ms()).await {
                Ok(0) => {}
                Ok(expired) => tracing::info!(expired, "deleted messages past their retention"),
                Err(err) => tracing::warn!(%err, "expiring queue messages"),
            }
        }
    });
}

fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = interrupt.recv() => tracing::info!("interrupted, shutting down"),
        }
    })
}
