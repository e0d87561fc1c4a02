//! Instances end to end: a real sandbox, our Python bootstrap, the Runtime API. Needs root.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lamina_runtime::logs::LogSink;
use lamina_runtime::{Catalogue, Host, Instance, InstanceConfig, Invocation, Outcome, SandboxPool};
use lamina_sandbox::CgroupRoot;

struct Fixture {
    dir: tempfile::TempDir,
    host: Arc<Host>,
}

fn fixture() -> Option<Fixture> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: instances need root");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = Host {
        helper: PathBuf::from(env!("CARGO_BIN_EXE_lamina")),
        cgroups: CgroupRoot::detect("tests").unwrap(),
        work_dir: dir.path().join("instances"),
        images: dir.path().join("images"),
        catalogue: Catalogue::install(&dir.path().join("runtime")).unwrap(),
        logs: LogSink::start(&dir.path().join("logs")).unwrap(),
        sandboxes: SandboxPool::new(0),
    };
    Some(Fixture {
        dir,
        host: Arc::new(host),
    })
}

impl Fixture {
    fn code(&self, files: &[(&str, &str)]) -> PathBuf {
        let code = self.dir.path().join(format!("code-{}", uuid_like()));
        for (name, body) in files {
            let path = code.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, body).unwrap();
            if *name == "bootstrap" {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        code
    }

    fn config(&self, runtime: &str, handler: &str, code: &Path) -> InstanceConfig {
        InstanceConfig {
            function_name: "probe".into(),
            version: "$LATEST".into(),
            runtime: runtime.into(),
            handler: handler.into(),
            memory_mb: 128,
            ephemeral_storage_mb: 512,
            environment: vec![("GREETING".into(), "hi".into())],
            code_dir: code.to_owned(),
            log_group: "/aws/lambda/probe".into(),
            region: "us-east-1".into(),
            init_type: Default::default(),
        }
    }
}

fn uuid_like() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn invocation(payload: &str, timeout: Duration) -> Invocation {
    Invocation {
        request_id: format!("req-{}", uuid_like()),
        payload: Bytes::from(payload.to_owned()),
        invoked_arn: "arn:aws:lambda:us-east-1:000000000000:function:probe".into(),
        client_context: None,
        trace_id: "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
        timeout,
        stream: None,
    }
}

const PYTHON: &str = r#"
import os
count = 0
def handler(event, context):
    global count
    count += 1
    print("handling", event)
    if event.get("fail"):
        raise ValueError("asked to fail")
    if event.get("sleep"):
        import time; time.sleep(event["sleep"])
    if event.get("exit"):
        os._exit(3)
    return {"echo": event, "count": count, "env": os.environ["GREETING"],
            "request_id": context.aws_request_id, "remaining": context.get_remaining_time_in_millis() > 0,
            "uid": os.getuid()}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_instance_serves_warm_invocations() {
    let Some(f) = fixture() else { return };
    let code = f.code(&[("app/main.py", PYTHON)]);
    let instance = Instance::start(&f.host, &f.config("python3.11", "app/main.handler", &code))
        .await
        .unwrap();
    let (first, timing) = instance
        .invoke(invocation(r#"{"n": 1}"#, Duration::from_secs(5)))
        .await;
    let Outcome::Success(body) = first else {
        panic!("{first:?}")
    };
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["echo"]["n"], 1);
    assert_eq!(body["count"], 1);
    assert_eq!(body["env"], "hi");
    assert_eq!(body["uid"], 993);
    assert_eq!(body["remaining"], true);
    assert!(timing.init.is_some(), "a cold start reports its init");
    assert!(timing.duration > Duration::ZERO);
    let (second, timing) = instance
        .invoke(invocation(r#"{"n": 2}"#, Duration::from_secs(5)))
        .await;
    let Outcome::Success(body) = second else {
        panic!("{second:?}")
    };
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["count"], 2,
        "module state survives between warm invocations"
    );
    assert!(timing.init.is_none());
    assert!(timing.duration > Duration::ZERO);
    let (error, _) = instance
        .invoke(invocation(r#"{"fail": true}"#, Duration::from_secs(5)))
        .await;
    let Outcome::FunctionError(body) = error else {
        panic!("{error:?}")
    };
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["errorType"], "ValueError");
    assert_eq!(body["errorMessage"], "asked to fail");
    assert!(instance.is_alive());
    instance.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_crashes_and_init_errors_are_reported() {
    let Some(f) = fixture() else { return };
    let code = f.code(&[("index.py", PYTHON)]);
    let config = f.config("python3.11", "index.handler", &code);

    let instance = Instance::start(&f.host, &config).await.unwrap();
    let (outcome, _) = instance
        .invoke(invocation(r#"{"sleep": 5}"#, Duration::from_secs(1)))
        .await;
    assert_eq!(outcome, Outcome::Timeout);
    instance.destroy().await;

    let instance = Instance::start(&f.host, &config).await.unwrap();
    let (outcome, _) = instance
        .invoke(invocation(r#"{"exit": true}"#, Duration::from_secs(5)))
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::Exited {
                code: 3,
                out_of_memory: false
            }
        ),
        "{outcome:?}"
    );
    instance.destroy().await;

    let broken = f.config("python3.11", "missing.handler", &code);
    let instance = Instance::start(&f.host, &broken).await.unwrap();
    let (outcome, _) = instance
        .invoke(invocation("{}", Duration::from_secs(5)))
        .await;
    let Outcome::InitError(body) = outcome else {
        panic!("{outcome:?}")
    };
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["errorType"], "Runtime.ImportModuleError");
    instance.destroy().await;
}

/// A custom runtime that streams its response with curl (`-T -` uploads stdin chunk by chunk),
/// with a pause between two chunks; asked to fail, it reports the error after a first chunk the
/// way `lambda_runtime` does, in the body.
const STREAMING_BOOTSTRAP: &str = r#"#!/bin/sh
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
while true; do
  HEADERS="$(mktemp)"
  EVENT="$(curl -sS -D "$HEADERS" "$API/next")"
  ID="$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)"
  if [ "$EVENT" = '"fail"' ]; then
    BODY="$(printf '{"errorType":"StreamFailed","errorMessage":"half way"}' | base64 -w0)"
    { printf 'one'; sleep 0.3; printf 'Lambda-Runtime-Function-Error-Type: StreamFailed\r\nLambda-Runtime-Function-Error-Body: %s\r\n' "$BODY"; } |
      curl -sS -T - -X POST -H 'Lambda-Runtime-Function-Response-Mode: streaming' \
        -H 'Content-Type: text/plain' "$API/$ID/response" > /dev/null
  else
    { printf 'one'; sleep 0.5; printf 'two'; } |
      curl -sS -T - -X POST -H 'Lambda-Runtime-Function-Response-Mode: streaming' \
        -H 'Content-Type: text/plain' "$API/$ID/response" > /dev/null
  fi
done
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_responses_arrive_as_written_or_collected() {
    use lamina_core::invoke::ResponsePart;
    let Some(f) = fixture() else { return };
    let code = f.code(&[("bootstrap", STREAMING_BOOTSTRAP)]);
    let instance = Instance::start(&f.host, &f.config("provided.al2023", "ignored", &code))
        .await
        .unwrap();
    // Streamed: the first chunk is here while the function still runs.
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let mut streamed = invocation("\"go\"", Duration::from_secs(10));
    streamed.stream = Some(tx);
    let started = std::time::Instant::now();
    let mut parts = Vec::new();
    let outcome = {
        let running = instance.invoke(streamed);
        tokio::pin!(running);
        loop {
            tokio::select! {
                Some(part) = rx.recv() => parts.push((part, started.elapsed())),
                (outcome, _) = &mut running => break outcome,
            }
        }
    };
    while let Ok(part) = rx.try_recv() {
        parts.push((part, started.elapsed()));
    }
    assert_eq!(outcome, Outcome::Success(Bytes::new()));
    assert_eq!(parts[0].0, ResponsePart::ContentType("text/plain".into()));
    let data: Vec<u8> = parts
        .iter()
        .filter_map(|(p, _)| match p {
            ResponsePart::Data(d) => Some(d.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(data, b"onetwo");
    let first = parts
        .iter()
        .find(|(p, _)| matches!(p, ResponsePart::Data(_)))
        .unwrap()
        .1;
    assert!(
        started.elapsed() - first >= Duration::from_millis(300),
        "the first chunk came {first:?} in, the end {:?}",
        started.elapsed()
    );
    // Not streamed: collected into the outcome.
    let (outcome, _) = instance
        .invoke(invocation("\"go\"", Duration::from_secs(10)))
        .await;
    assert_eq!(outcome, Outcome::Success(Bytes::from_static(b"onetwo")));
    // An error reported half way through is the function's error.
    let (outcome, _) = instance
        .invoke(invocation("\"fail\"", Duration::from_secs(10)))
        .await;
    let Outcome::FunctionError(body) = outcome else {
        panic!("expected a function error, got {outcome:?}")
    };
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["errorType"], "StreamFailed");
    instance.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_runtime_runs_bootstrap_from_var_task() {
    let Some(f) = fixture() else { return };
    // A provided.al2023 function: the platform runs /var/task/bootstrap, which implements the
    // Runtime API itself (here with Python's urllib, opening a new connection per request).
    let bootstrap = r#"#!/usr/bin/python3 -S
import os, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
while True:
    with urllib.request.urlopen(api + "next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        body = r.read()
    urllib.request.urlopen(urllib.request.Request(api + rid + "/response", data=b"custom:" + body, method="POST")).read()
"#;
    let code = f.code(&[("bootstrap", bootstrap)]);
    let instance = Instance::start(&f.host, &f.config("provided.al2023", "ignored", &code))
        .await
        .unwrap();
    for n in 0..3 {
        let (outcome, _) = instance
            .invoke(invocation(&format!("{n}"), Duration::from_secs(5)))
            .await;
        assert_eq!(
            outcome,
            Outcome::Success(Bytes::from(format!("custom:{n}")))
        );
    }
    instance.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmp_is_sized_by_ephemeral_storage_and_not_charged_as_memory() {
    let Some(f) = fixture() else { return };
    let code = f.code(&[(
        "fill.py",
        r#"
import os
def handler(event, context):
    written = 0
    chunk = b"x" * (4 << 20)
    try:
        with open("/tmp/fill", "wb") as out:
            while written < event["mb"] << 20:
                out.write(chunk)
                written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        result = "ok"
    except OSError as e:
        result = e.strerror
    os.remove("/tmp/fill")
    st = os.statvfs("/tmp")
    return {"result": result, "written_mb": written >> 20, "size_mb": st.f_blocks * st.f_frsize >> 20}
"#,
    )]);
    let instance = Instance::start(&f.host, &f.config("python3.11", "fill.handler", &code))
        .await
        .unwrap();
    // 128 MB of memory, 400 MB written to /tmp: disk, not memory.
    let (outcome, _) = instance
        .invoke(invocation(r#"{"mb": 400}"#, Duration::from_secs(60)))
        .await;
    let Outcome::Success(body) = outcome else {
        panic!("{outcome:?}")
    };
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["result"], "ok", "{body}");
    assert!(
        (480..=512).contains(&body["size_mb"].as_u64().unwrap()),
        "{body}"
    );
    // More than the 512 MB /tmp holds: the file system is full, the function lives on.
    let (outcome, _) = instance
        .invoke(invocation(r#"{"mb": 600}"#, Duration::from_secs(60)))
        .await;
    let Outcome::Success(body) = outcome else {
        panic!("{outcome:?}")
    };
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["result"], "No space left on device", "{body}");
    instance.destroy().await;
}
