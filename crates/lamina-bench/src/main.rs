//! `lamina-bench`: starts its own `lamina server`, measures it, and prints a markdown table
//! (and writes JSON) with every figure beside the floor measured in the same run: a bare
//! loopback HTTP/1.1 keep-alive round trip to a minimal hyper server.
//!
//! Measured: warm invoke latency (p50/p99/p999) and throughput at 1, 8 and 64 concurrent
//! clients for a no-op `provided` function (a native Runtime API loop) and a Python function;
//! cold start per runtime; the time from 0 to 100 concurrent instances; private memory per idle
//! instance and the idle server's RSS; server start-to-ready.
#![forbid(unsafe_code)]

mod http;
mod memory;
mod queues;
mod servers;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::http::{Connection, Load, Prepared, load};
use crate::servers::{Floor, Lamina, sibling};

#[derive(Parser)]
#[command(
    name = "lamina-bench",
    about = "Measures Lamina beside a bare loopback HTTP floor"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Seconds each load level is measured for.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Cold starts measured per runtime.
    #[arg(long, default_value_t = 20)]
    cold_samples: usize,
    /// Concurrent clients for the warm measurements.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    clients: Vec<usize>,
    /// Where the JSON results go.
    #[arg(long, default_value = "bench-results.json")]
    json: PathBuf,
    /// The lamina binary [default: next to this one].
    #[arg(long)]
    lamina: Option<PathBuf>,
    /// Extra arguments for `lamina server` (e.g. `--server-arg=--sandbox-pool=0`).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Internal: the floor server.
    #[command(hide = true)]
    FloorServer,
    /// Measures only the floor, at each `--clients` level.
    #[command(hide = true)]
    Floor,
    /// Loads a running server's function (for profiling): Invoke with `{}` at each
    /// `--clients` level for `--duration` seconds. The server must use the harness's key pair.
    #[command(hide = true)]
    Load {
        #[arg(long)]
        address: std::net::SocketAddr,
        #[arg(long)]
        function: String,
    },
    /// Sends 100 invocations at once to a running server's no-op function (for profiling the
    /// scale-out): `{"sleep_ms": 3000}` each.
    #[command(hide = true)]
    Burst {
        #[arg(long)]
        address: std::net::SocketAddr,
        #[arg(long)]
        function: String,
    },
}

const PYTHON_NOOP: &str = "def handler(event, context):\n    return event\n";
const NODE_NOOP: &str = "exports.handler = async (event) => event;\n";

fn zip(files: &[(&str, &[u8], u32)]) -> anyhow::Result<Vec<u8>> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body, mode) in files {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
        writer.start_file(*name, options)?;
        writer.write_all(body)?;
    }
    Ok(writer.finish()?.into_inner())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One row of the table.
struct Row {
    name: String,
    value: String,
    floor: String,
    ratio: String,
}

impl Row {
    fn plain(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            floor: String::new(),
            ratio: String::new(),
        }
    }
}

struct Report {
    rows: Vec<Row>,
    json: serde_json::Map<String, Value>,
}

impl Report {
    fn section(&mut self, title: &str) {
        self.rows.push(Row::plain(format!("**{title}**"), ""));
    }

    fn load_rows(&mut self, label: &str, clients: usize, run: &Load, floor: &Load) {
        for (p, name) in [(50.0, "p50"), (99.0, "p99"), (99.9, "p999")] {
            let (value, base) = (run.percentile(p), floor.percentile(p));
            self.rows.push(Row {
                name: format!("{label}, {clients} client(s), {name}"),
                value: format!("{:.0} µs", micros(value)),
                floor: format!("{:.0} µs", micros(base)),
                ratio: format!("{:.1}×", micros(value) / micros(base).max(1.0)),
            });
        }
        self.rows.push(Row {
            name: format!("{label}, {clients} client(s), throughput"),
            value: format!("{:.0} /s", run.per_second()),
            floor: format!("{:.0} /s", floor.per_second()),
            ratio: format!("{:.2}×", run.per_second() / floor.per_second().max(1.0)),
        });
        if run.errors > 0 {
            self.rows.push(Row::plain(
                format!("{label}, {clients} client(s), errors"),
                run.errors.to_string(),
            ));
        }
    }

    fn print(&self) {
        println!("| measurement | Lamina | floor: loopback HTTP/1.1 | ratio |");
        println!("|---|---:|---:|---:|");
        for row in &self.rows {
            println!(
                "| {} | {} | {} | {} |",
                row.name, row.value, row.floor, row.ratio
            );
        }
    }
}

fn load_json(run: &Load) -> Value {
    json!({
        "p50_us": micros(run.percentile(50.0)),
        "p99_us": micros(run.percentile(99.0)),
        "p999_us": micros(run.percentile(99.9)),
        "per_second": run.per_second(),
        "requests": run.latencies.len(),
        "errors": run.errors,
    })
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": model,
        "kernel": kernel.trim(),
    })
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let lamina_binary = match &cli.lamina {
        Some(path) => path.clone(),
        None => sibling("lamina")?,
    };
    let noop = std::fs::read(sibling("noop-runtime")?)?;
    let duration = Duration::from_secs_f64(cli.duration);
    let warmup = Duration::from_millis(500);
    let mut report = Report {
        rows: Vec::new(),
        json: serde_json::Map::new(),
    };
    report.json.insert("machine".into(), machine());
    eprintln!("machine: {}", report.json["machine"]);

    // Start-to-ready, three times; the last server is the one measured.
    let mut ready = Vec::new();
    let mut lamina = None;
    for _ in 0..3 {
        if let Some(previous) = lamina.take() {
            Lamina::stop(previous)?;
        }
        let server = Lamina::start(&lamina_binary, &cli.server_args)?;
        ready.push(server.ready_in);
        lamina = Some(server);
    }
    let lamina = lamina.context("no server")?;
    ready.sort();
    let idle_rss = memory::rss(lamina.pid());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = idle_rss.max(memory::rss(lamina.pid()));

    // The very first cold start on a new data directory, a moment after the server is ready
    // (the idle measurement above): what a new user's first invocation costs.
    let first_cold = first_cold_start(&lamina).await?;
    create_cold_functions(&lamina, &noop).await?;

    // Warm latency and throughput, each level beside the floor at the same concurrency.
    let floor = Floor::start()?;
    let floor_request = Arc::new(Prepared::plain(
        ::http::Method::POST,
        floor.address,
        "/2015-03-31/functions/floor/invocations",
        Bytes::from_static(b"{}"),
    ));
    let mut warm_json = serde_json::Map::new();
    for (function, label) in [
        ("bench-noop", "warm invoke, no-op provided"),
        ("bench-python", "warm invoke, Python"),
    ] {
        report.section(label);
        let mut levels = serde_json::Map::new();
        for &clients in &cli.clients {
            let base = load(
                floor.address,
                floor_request.clone(),
                clients,
                warmup,
                duration,
            )
            .await?;
            let request = lamina.invocation(function, "{}")?;
            let measured = load(lamina.address, request, clients, warmup, duration).await?;
            eprintln!(
                "{label}, {clients} clients: p50 {:.0} µs (floor {:.0} µs), {:.0}/s (floor {:.0}/s)",
                micros(measured.percentile(50.0)),
                micros(base.percentile(50.0)),
                measured.per_second(),
                base.per_second()
            );
            report.load_rows(label, clients, &measured, &base);
            levels.insert(
                clients.to_string(),
                json!({ "lamina": load_json(&measured), "floor": load_json(&base) }),
            );
        }
        warm_json.insert(function.into(), Value::Object(levels));
    }
    report.json.insert("warm".into(), Value::Object(warm_json));
    drop(floor);

    // Memory of the idle instances the warm runs left behind.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let instances: Vec<_> = memory::instances(lamina.pid(), &lamina.assigned_instances())
        .into_iter()
        .filter(|i| !i.pooled)
        .collect();
    report.section("memory");
    let mut memory_json = serde_json::Map::new();
    for runtime in ["bootstrap", "python3.11"] {
        let mut totals: Vec<_> = instances
            .iter()
            .filter(|i| i.runtime == runtime)
            .map(|i| i.total)
            .collect();
        let mut alone: Vec<_> = instances
            .iter()
            .filter(|i| i.runtime == runtime)
            .map(|i| i.runtime_only)
            .collect();
        if totals.is_empty() {
            continue;
        }
        totals.sort_by_key(|f| f.private);
        alone.sort_by_key(|f| f.private);
        let (median, runtime_median) = (totals[totals.len() / 2], alone[alone.len() / 2]);
        let label = if runtime == "bootstrap" {
            "no-op provided"
        } else {
            "Python"
        };
        report.rows.push(Row::plain(
            format!(
                "private memory per idle {label} instance (runtime alone), median of {}",
                totals.len()
            ),
            format!(
                "{:.2} MiB ({:.2} MiB)",
                median.private as f64 / 1048576.0,
                runtime_median.private as f64 / 1048576.0
            ),
        ));
        memory_json.insert(
            runtime.into(),
            json!({
                "instances": totals.len(),
                "private_bytes": median.private,
                "pss_bytes": median.pss,
                "runtime_private_bytes": runtime_median.private,
            }),
        );
    }
    report.rows.push(Row::plain(
        "idle server RSS (no functions)",
        format!("{:.1} MiB", idle_rss as f64 / 1048576.0),
    ));
    memory_json.insert("idle_server_rss_bytes".into(), json!(idle_rss));
    report
        .json
        .insert("memory".into(), Value::Object(memory_json));

    asynchronous(&lamina, &cli, &mut report, warmup, duration).await?;
    backlogs(&lamina, &noop, &mut report).await?;

    // Cold starts and scale-out, from sandboxes built ahead (the server's default) and, on a
    // second server, built on demand.
    let unpooled_args: Vec<String> = cli
        .server_args
        .iter()
        .cloned()
        .chain(["--sandbox-pool=0".to_owned()])
        .collect();
    let unpooled = Lamina::start(&lamina_binary, &unpooled_args)?;
    create_cold_functions(&unpooled, &noop).await?;
    report.section(
        "cold start (client-observed invoke on a new instance): pooled sandboxes / built on demand",
    );
    let mut cold_json = serde_json::Map::new();
    for (function, label) in [
        ("bench-noop", "provided (no-op)"),
        ("bench-python", "python3.11"),
        ("bench-node", "nodejs20.x"),
    ] {
        let (pooled, on_demand) = match (
            cold_start(&lamina, function, cli.cold_samples).await,
            cold_start(&unpooled, function, cli.cold_samples).await,
        ) {
            (Ok(pooled), Ok(on_demand)) => (pooled, on_demand),
            (Err(err), _) | (_, Err(err)) => {
                eprintln!("no cold start for {label}: {err:#}");
                continue;
            }
        };
        eprintln!(
            "cold start {label}: p50 {:.2} ms pooled, {:.2} ms built on demand",
            millis(pooled.0),
            millis(on_demand.0)
        );
        report.rows.push(Row::plain(
            format!("cold start, {label}, p50 (min)"),
            format!(
                "{:.2} ms ({:.2}) / {:.2} ms ({:.2})",
                millis(pooled.0),
                millis(pooled.1),
                millis(on_demand.0),
                millis(on_demand.1)
            ),
        ));
        cold_json.insert(
            label.into(),
            json!({
                "pooled": { "p50_ms": millis(pooled.0), "min_ms": millis(pooled.1) },
                "on_demand": { "p50_ms": millis(on_demand.0), "min_ms": millis(on_demand.1) },
                "samples": cli.cold_samples,
            }),
        );
    }
    eprintln!(
        "first cold start on a new server (python3.11): {:.2} ms",
        millis(first_cold)
    );
    report.rows.push(Row::plain(
        "first cold start on a new data directory, python3.11, 0.3 s after ready",
        format!("{:.2} ms", millis(first_cold)),
    ));
    cold_json.insert("first_ever_python_ms".into(), json!(millis(first_cold)));
    report
        .json
        .insert("cold_start".into(), Value::Object(cold_json));

    report
        .section("scale-out: 0 → 100 concurrent instances of the no-op, pooled / built on demand");
    let pooled = scale_out(&lamina, &noop).await?;
    let on_demand = scale_out(&unpooled, &noop).await?;
    unpooled.stop()?;
    for (label, (all, half)) in [("pooled", pooled), ("built on demand", on_demand)] {
        eprintln!(
            "0 -> 100 instances ({label}): {:.0} ms (half in {:.0} ms)",
            millis(all),
            millis(half)
        );
    }
    report.rows.push(Row::plain(
        "time until all 100 run (until 50 run)",
        format!(
            "{:.0} ms ({:.0}) / {:.0} ms ({:.0})",
            millis(pooled.0),
            millis(pooled.1),
            millis(on_demand.0),
            millis(on_demand.1)
        ),
    ));
    report.rows.push(Row::plain(
        "instances started per second in that burst",
        format!(
            "{:.0} /s / {:.0} /s",
            100.0 / pooled.0.as_secs_f64(),
            100.0 / on_demand.0.as_secs_f64()
        ),
    ));
    report.json.insert(
        "scale_out".into(),
        json!({
            "pooled": { "all_ms": millis(pooled.0), "half_ms": millis(pooled.1) },
            "on_demand": { "all_ms": millis(on_demand.0), "half_ms": millis(on_demand.1) },
        }),
    );

    report.section("server");
    report.rows.push(Row::plain(
        "start to ready (median of 3)",
        format!("{:.1} ms", millis(ready[1])),
    ));
    report
        .json
        .insert("start_to_ready_ms".into(), json!(millis(ready[1])));
    report
        .json
        .insert("server_args".into(), json!(cli.server_args));
    lamina.stop()?;

    report.print();
    std::fs::write(
        &cli.json,
        serde_json::to_string_pretty(&Value::Object(report.json))?,
    )?;
    eprintln!("results written to {}", cli.json.display());
    Ok(())
}

/// Asynchronous invocation and the queue API, each load level beside the floor at the same
/// concurrency.
async fn asynchronous(
    lamina: &Lamina,
    cli: &Cli,
    report: &mut Report,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<()> {
    let floor = Floor::start()?;
    let floor_request = Arc::new(Prepared::plain(
        ::http::Method::POST,
        floor.address,
        "/floor",
        Bytes::from_static(b"{}"),
    ));
    let mut floors = Vec::new();
    for &clients in &cli.clients {
        floors.push(
            load(
                floor.address,
                floor_request.clone(),
                clients,
                warmup,
                duration,
            )
            .await?,
        );
    }
    drop(floor);

    report.section("asynchronous invoke (InvocationType=Event) of the no-op: durable, then 202");
    let mut levels = serde_json::Map::new();
    let since = Instant::now();
    for (&clients, base) in cli.clients.iter().zip(&floors) {
        let request = lamina.event("bench-noop", "{}")?;
        let measured = load(lamina.address, request, clients, warmup, duration).await?;
        eprintln!(
            "async accept, {clients} clients: p50 {:.0} µs, {:.0}/s",
            micros(measured.percentile(50.0)),
            measured.per_second()
        );
        report.load_rows("accept", clients, &measured, base);
        levels.insert(
            clients.to_string(),
            json!({ "lamina": load_json(&measured), "floor": load_json(base) }),
        );
    }
    let all_run = queues::drained(lamina, since).await?;
    let accepted = lamina.metric("lamina_async_events_accepted_total").await?;
    let run_rate = accepted / all_run.as_secs_f64();
    eprintln!(
        "{accepted} events accepted; all run after {:.1} s",
        all_run.as_secs_f64()
    );
    report.rows.push(Row::plain(
        format!(
            "events run per second ({accepted} accepted during the runs above, all run after {:.1} s)",
            all_run.as_secs_f64()
        ),
        format!("{run_rate:.0} /s"),
    ));
    let latencies = queues::accept_to_start(lamina, "bench-noop", 200).await?;
    let at = |p: f64| latencies[((p / 100.0) * latencies.len() as f64) as usize - 1];
    eprintln!(
        "accept to handler start: p50 {:.2} ms, p99 {:.2} ms",
        millis(at(50.0)),
        millis(at(99.0))
    );
    report.rows.push(Row::plain(
        "accept to handler start, one event at a time, p50 (p99)",
        format!("{:.2} ms ({:.2} ms)", millis(at(50.0)), millis(at(99.0))),
    ));
    report.json.insert(
        "async".into(),
        json!({
            "accept": levels,
            "accepted": accepted,
            "all_run_s": all_run.as_secs_f64(),
            "run_per_second": run_rate,
            "accept_to_start_p50_ms": millis(at(50.0)),
            "accept_to_start_p99_ms": millis(at(99.0)),
        }),
    );

    report.section("queue API (SQS JSON protocol), durable sends");
    let mut connection = Connection::open(lamina.address).await?;
    let created = lamina
        .sqs(
            &mut connection,
            "CreateQueue",
            json!({ "QueueName": "bench-queue" }),
        )
        .await?;
    let queue = created["QueueUrl"].as_str().context("no queue URL")?;
    let mut levels = serde_json::Map::new();
    for (&clients, base) in cli.clients.iter().zip(&floors) {
        let measured = queues::send_load(lamina, queue, clients, warmup, duration).await?;
        eprintln!(
            "SendMessage, {clients} clients: p50 {:.0} µs, {:.0}/s",
            micros(measured.percentile(50.0)),
            measured.per_second()
        );
        report.load_rows("SendMessage (100 B)", clients, &measured, base);
        levels.insert(
            clients.to_string(),
            json!({ "lamina": load_json(&measured), "floor": load_json(base) }),
        );
    }
    let (consumed, took) = queues::drain(lamina.address, queue, 8).await?;
    let drain_rate = consumed as f64 / took.as_secs_f64();
    eprintln!("drained {consumed} messages in {:.1} s", took.as_secs_f64());
    report.rows.push(Row::plain(
        format!("ReceiveMessage (10) + DeleteMessageBatch, 8 consumers, {consumed} messages"),
        format!("{drain_rate:.0} messages/s"),
    ));
    report.json.insert(
        "queue".into(),
        json!({ "send": levels, "drained": consumed, "drain_per_second": drain_rate }),
    );
    Ok(())
}

/// Backlogs of asynchronous events for functions with reserved concurrency 1 and 10: each
/// event holds its instance for 10 ms, so the dispatcher at its best runs 100 × the reservation
/// per second.
async fn backlogs(lamina: &Lamina, noop: &[u8], report: &mut Report) -> anyhow::Result<()> {
    const SLEEP_MS: u64 = 10;
    report.section("asynchronous backlog under reserved concurrency (events of 10 ms)");
    let mut rows = serde_json::Map::new();
    for (reserved, events) in [(1u32, 300usize), (10, 2000)] {
        let name = format!("bench-backlog-{reserved}");
        lamina
            .create_function(
                &name,
                "provided.al2023",
                "noop",
                &zip(&[("bootstrap", noop, 0o755)])?,
            )
            .await?;
        lamina
            .call(
                ::http::Method::PUT,
                &format!("/2017-10-31/functions/{name}/concurrency"),
                json!({ "ReservedConcurrentExecutions": reserved }),
            )
            .await?;
        let (sent, all_run) = queues::backlog(lamina, &name, events, SLEEP_MS).await?;
        let rate = events as f64 / all_run.as_secs_f64();
        let best = f64::from(reserved) * 1000.0 / SLEEP_MS as f64;
        eprintln!(
            "backlog of {events} for reserved {reserved}: sent in {:.2} s, all run after {:.2} s, {rate:.0}/s (best {best:.0}/s)",
            sent.as_secs_f64(),
            all_run.as_secs_f64()
        );
        report.rows.push(Row::plain(
            format!(
                "reserved concurrency {reserved}: {events} events (sent in {:.2} s), all run after {:.2} s",
                sent.as_secs_f64(),
                all_run.as_secs_f64()
            ),
            format!("{rate:.0} /s (at most {best:.0} /s)"),
        ));
        rows.insert(
            reserved.to_string(),
            json!({
                "events": events,
                "sleep_ms": SLEEP_MS,
                "sent_s": sent.as_secs_f64(),
                "all_run_s": all_run.as_secs_f64(),
                "per_second": rate,
                "best_per_second": best,
            }),
        );
    }
    report.json.insert("backlog".into(), Value::Object(rows));
    Ok(())
}

/// The benchmark's functions: the no-op, Python and (if the host has it) Node.js.
async fn create_cold_functions(lamina: &Lamina, noop: &[u8]) -> anyhow::Result<()> {
    lamina
        .create_function(
            "bench-noop",
            "provided.al2023",
            "noop",
            &zip(&[("bootstrap", noop, 0o755)])?,
        )
        .await?;
    lamina
        .create_function(
            "bench-python",
            "python3.11",
            "index.handler",
            &zip(&[("index.py", PYTHON_NOOP.as_bytes(), 0o644)])?,
        )
        .await?;
    if let Err(err) = lamina
        .create_function(
            "bench-node",
            "nodejs20.x",
            "index.handler",
            &zip(&[("index.js", NODE_NOOP.as_bytes(), 0o644)])?,
        )
        .await
    {
        eprintln!("no Node.js function: {err:#}");
    }
    Ok(())
}

/// The client-observed time of the first invocation of the first function a server ever ran.
async fn first_cold_start(lamina: &Lamina) -> anyhow::Result<Duration> {
    let name = "bench-first";
    lamina
        .create_function(
            name,
            "python3.11",
            "index.handler",
            &zip(&[("index.py", PYTHON_NOOP.as_bytes(), 0o644)])?,
        )
        .await?;
    timed_invocation(lamina, name).await
}

/// One invocation of `function` on a connection of its own, timed as the client sees it; fails
/// unless the function succeeded.
async fn timed_invocation(lamina: &Lamina, function: &str) -> anyhow::Result<Duration> {
    let request = lamina.invocation(function, "{}")?;
    let mut connection = Connection::open(lamina.address).await?;
    let sent = Instant::now();
    let answer = connection.send(&request).await?;
    let took = sent.elapsed();
    if answer.status != 200 || answer.headers.contains_key("x-amz-function-error") {
        anyhow::bail!(
            "invoking {function} failed: {}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(took)
}

/// Cold starts of `function`, p50 and min: each sample follows a configuration change, so it
/// needs a new instance. The first invocation, unmeasured, lets the pool learn the kind.
async fn cold_start(
    lamina: &Lamina,
    function: &str,
    samples: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let mut measured = Vec::new();
    for generation in 0..=samples {
        lamina.touch(function, generation).await?;
        // Let the previous instance's teardown and the pool's refill finish off the measured
        // path.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let took = timed_invocation(lamina, function).await?;
        if generation > 0 {
            measured.push(took);
        }
    }
    measured.sort();
    Ok((measured[measured.len() / 2], measured[0]))
}

/// 100 invocations at once of a no-op function with no instance yet, each holding its instance
/// for 3 s: the time until the last (and the 50th) started running.
async fn scale_out(lamina: &Lamina, noop: &[u8]) -> anyhow::Result<(Duration, Duration)> {
    let name = "bench-scale";
    lamina
        .create_function(
            name,
            "provided.al2023",
            "noop",
            &zip(&[("bootstrap", noop, 0o755)])?,
        )
        .await?;
    burst(lamina.address, name).await
}

/// 100 invocations of the no-op `function` at once; when the last and the 50th started.
async fn burst(
    address: std::net::SocketAddr,
    function: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let request = Arc::new(Prepared::signed(
        ::http::Method::POST,
        address,
        &format!("/2015-03-31/functions/{function}/invocations"),
        Bytes::from_static(b"{\"sleep_ms\":3000}"),
    )?);
    let mut connections = Vec::new();
    for _ in 0..100 {
        connections.push(Connection::open(address).await?);
    }
    let start = now_us();
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            let request = request.clone();
            tokio::spawn(async move { connection.send(&request).await })
        })
        .collect();
    let mut started = Vec::new();
    for task in tasks {
        let answer = task.await??;
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        match body["started_us"].as_u64() {
            Some(at) => started.push(u128::from(at)),
            None => anyhow::bail!(
                "scale-out invoke failed: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ),
        }
    }
    started.sort();
    let after = |at: u128| Duration::from_micros(at.saturating_sub(start) as u64);
    Ok((
        after(started[started.len() - 1]),
        after(started[started.len() / 2]),
    ))
}

async fn print_loads(
    address: std::net::SocketAddr,
    request: Arc<Prepared>,
    cli: &Cli,
) -> anyhow::Result<()> {
    for &clients in &cli.clients {
        let run = load(
            address,
            request.clone(),
            clients,
            Duration::from_millis(300),
            Duration::from_secs_f64(cli.duration),
        )
        .await?;
        println!(
            "{clients} client(s): p50 {:.0} µs, p99 {:.0} µs, {:.0}/s, {} errors",
            micros(run.percentile(50.0)),
            micros(run.percentile(99.0)),
            run.per_second(),
            run.errors
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One thread for the client and for the floor server alike: on this kind of machine a
    // multi-threaded runtime adds cross-thread wake-ups to every round trip, which would
    // flatter Lamina by raising the floor.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Some(Command::FloorServer) => runtime.block_on(http::floor_server()),
        Some(Command::Floor) => runtime.block_on(async {
            let floor = Floor::start()?;
            let request = Arc::new(Prepared::plain(
                ::http::Method::POST,
                floor.address,
                "/floor",
                Bytes::from_static(b"{}"),
            ));
            print_loads(floor.address, request, &cli).await
        }),
        Some(Command::Burst {
            address,
            ref function,
        }) => runtime.block_on(async {
            let (all, half) = burst(address, function).await?;
            println!(
                "all 100 running after {:.0} ms, 50 after {:.0} ms",
                millis(all),
                millis(half)
            );
            Ok(())
        }),
        Some(Command::Load {
            address,
            ref function,
        }) => runtime.block_on(async {
            let request = Arc::new(Prepared::signed(
                ::http::Method::POST,
                address,
                &format!("/2015-03-31/functions/{function}/invocations"),
                Bytes::from_static(b"{}"),
            )?);
            print_loads(address, request, &cli).await
        }),
        None => runtime.block_on(run(cli)),
    }
}
