//! The processes the harness measures: a `lamina server` of its own, on a fresh data directory,
//! and the floor server (this binary, re-executed). Both are children that die with it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use crate::http::{ACCESS_KEY, Connection, Prepared, SECRET_KEY};

/// A `lamina server` started by the harness.
pub struct Lamina {
    child: Child,
    pub address: SocketAddr,
    /// From spawning the process to its "listening" line.
    pub ready_in: Duration,
    _data: tempfile::TempDir,
}

impl Lamina {
    pub fn start(binary: &Path, args: &[String]) -> anyhow::Result<Self> {
        let data = tempfile::Builder::new().prefix("lamina-bench-").tempdir()?;
        let started = Instant::now();
        let mut child = Command::new(binary)
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--data-dir",
            ])
            .arg(data.path())
            .args(args)
            .env("LAMINA_ACCESS_KEY_ID", ACCESS_KEY)
            .env("LAMINA_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("LAMINA_LOG", "warn,lamina=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut lines = BufReader::new(child.stderr.take().context("no stderr")?).lines();
        let address = loop {
            let Some(line) = lines.next() else {
                let status = child.wait()?;
                bail!("lamina exited ({status}) before listening");
            };
            let line = line?;
            let Ok(record) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if record["fields"]["message"] == "lamina is listening" {
                break record["fields"]["address"]
                    .as_str()
                    .context("no address")?
                    .parse()?;
            }
            if record["level"] == "ERROR" || record["level"] == "WARN" {
                eprintln!("lamina: {line}");
            }
        };
        let ready_in = started.elapsed();
        // Keep draining the log, or the server would block on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("\"ERROR\"") {
                    eprintln!("lamina: {line}");
                }
            }
        });
        Ok(Self {
            child,
            address,
            ready_in,
            _data: data,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The ids of the instances that have been given a function: the suffix of their log
    /// streams' names (`…[VERSION]<id>.log`).
    pub fn assigned_instances(&self) -> std::collections::HashSet<String> {
        let mut ids = std::collections::HashSet::new();
        let Ok(groups) = std::fs::read_dir(self._data.path().join("logs")) else {
            return ids;
        };
        for group in groups.flatten() {
            for stream in std::fs::read_dir(group.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = stream.file_name().to_string_lossy().into_owned();
                if let Some((_, id)) = name.trim_end_matches(".log").rsplit_once(']') {
                    ids.insert(id.to_owned());
                }
            }
        }
        ids
    }

    /// SIGTERM, then wait: the server destroys its sandboxes on the way out.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait()?;
        Ok(())
    }

    /// One signed call to the Lambda API; fails unless it answers 2xx.
    pub async fn call(&self, method: Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let body = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        let request = Prepared::signed(method.clone(), self.address, path, body)?;
        let answer = Connection::open(self.address).await?.send(&request).await?;
        if !(200..300).contains(&answer.status) {
            bail!(
                "{method} {path}: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        Ok(if answer.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&answer.body)?
        })
    }

    pub async fn create_function(
        &self,
        name: &str,
        runtime: &str,
        handler: &str,
        zip: &[u8],
    ) -> anyhow::Result<()> {
        use base64::Engine as _;
        self.call(
            Method::POST,
            "/2015-03-31/functions",
            json!({
                "FunctionName": name,
                "Runtime": runtime,
                "Handler": handler,
                "Role": "arn:aws:iam::000000000000:role/bench",
                "Timeout": 30,
                "Code": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) },
            }),
        )
        .await
        .map(drop)
    }

    /// A configuration change: the function's next invocation needs a new instance.
    pub async fn touch(&self, name: &str, generation: usize) -> anyhow::Result<()> {
        self.call(
            Method::PUT,
            &format!("/2015-03-31/functions/{name}/configuration"),
            json!({ "Environment": { "Variables": { "GENERATION": generation.to_string() } } }),
        )
        .await
        .map(drop)
    }

    /// One request of the SQS-compatible API, signed for service `sqs`.
    pub fn sqs_request(&self, operation: &str, body: &Value) -> anyhow::Result<Arc<Prepared>> {
        sqs_request(self.address, operation, body)
    }

    /// One call to the SQS-compatible API on `connection`; fails unless it answers 200.
    pub async fn sqs(
        &self,
        connection: &mut Connection,
        operation: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        sqs(self.address, connection, operation, body).await
    }

    /// A series of the server's metrics (`/_lamina/metrics`), without labels.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let request = Prepared::plain(Method::GET, self.address, "/_lamina/metrics", Bytes::new());
        let answer = Connection::open(self.address).await?.send(&request).await?;
        let text = String::from_utf8_lossy(&answer.body);
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
            .with_context(|| format!("no metric {name}"))
    }

    /// The asynchronous Invoke request (`X-Amz-Invocation-Type: Event`) for `name`, signed.
    pub fn event(&self, name: &str, payload: &str) -> anyhow::Result<Arc<Prepared>> {
        Prepared::signed_for(
            "lambda",
            Method::POST,
            self.address,
            &format!("/2015-03-31/functions/{name}/invocations"),
            Bytes::from(payload.to_owned()),
            &[("x-amz-invocation-type", "Event")],
        )
        .map(Arc::new)
    }

    /// The Invoke request for `name` with `payload`, signed.
    pub fn invocation(&self, name: &str, payload: &str) -> anyhow::Result<Arc<Prepared>> {
        Prepared::signed(
            Method::POST,
            self.address,
            &format!("/2015-03-31/functions/{name}/invocations"),
            Bytes::from(payload.to_owned()),
        )
        .map(Arc::new)
    }
}

impl Drop for Lamina {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let _ = self.child.wait();
        }
    }
}

/// One request of the SQS-compatible API at `address`, signed for service `sqs`.
pub fn sqs_request(
    address: SocketAddr,
    operation: &str,
    body: &Value,
) -> anyhow::Result<Arc<Prepared>> {
    let target = format!("AmazonSQS.{operation}");
    Prepared::signed_for(
        "sqs",
        Method::POST,
        address,
        "/",
        Bytes::from(body.to_string()),
        &[
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", &target),
        ],
    )
    .map(Arc::new)
}

/// One call to the SQS-compatible API on `connection`; fails unless it answers 200.
pub async fn sqs(
    address: SocketAddr,
    connection: &mut Connection,
    operation: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let answer = connection
        .send(&*sqs_request(address, operation, &body)?)
        .await?;
    if answer.status != 200 {
        bail!(
            "{operation}: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(serde_json::from_slice(&answer.body)?)
}

/// The floor server: `lamina-bench floor-server`, a child process like Lamina.
pub struct Floor {
    child: Child,
    pub address: SocketAddr,
}

impl Floor {
    pub fn start() -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("floor-server")
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        Ok(Self {
            address: line.trim().parse().context("the floor server's address")?,
            child,
        })
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary next to this one (`target/release/…`).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?
        .parent()
        .context("the harness has no directory")?
        .join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it first (cargo build --release -p lamina -p lamina-bench)",
            path.display()
        );
    }
    Ok(path)
}
