//! Asynchronous invocation and the queue engine under load: how fast events are accepted
//! (each one durable before its 202), how long from acceptance to the handler starting, how
//! fast the dispatcher drains a backlog, and SendMessage / ReceiveMessage throughput.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http::Method;
use serde_json::{Value, json};

use crate::http::{Connection, Load, load};
use crate::servers::{Lamina, sqs};

/// The time from an Invoke with `InvocationType=Event` being sent to the no-op function's
/// handler receiving the event, `samples` times one after another. The handler's start comes
/// back in its success record, sent to a queue.
pub async fn accept_to_start(
    lamina: &Lamina,
    function: &str,
    samples: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut connection = Connection::open(lamina.address).await?;
    let queue = lamina
        .sqs(
            &mut connection,
            "CreateQueue",
            json!({ "QueueName": "bench-records" }),
        )
        .await?["QueueUrl"]
        .as_str()
        .context("no queue URL")?
        .to_owned();
    let config = format!("/2019-09-25/functions/{function}/event-invoke-config");
    let destination = "arn:aws:sqs:us-east-1:000000000000:bench-records";
    lamina
        .call(
            Method::PUT,
            &config,
            json!({ "DestinationConfig": { "OnSuccess": { "Destination": destination } } }),
        )
        .await?;
    let event = lamina.event(function, r#"{"sleep_ms":0}"#)?;
    let receive = json!({ "QueueUrl": queue, "WaitTimeSeconds": 10, "MaxNumberOfMessages": 1 });
    let mut measured = Vec::with_capacity(samples);
    // The first one is not measured: it may start an instance.
    for sample in 0..=samples {
        let sent = crate::now_us();
        let answer = connection.send(&event).await?;
        if answer.status != 202 {
            bail!("event refused: {}", String::from_utf8_lossy(&answer.body));
        }
        let received = lamina
            .sqs(&mut connection, "ReceiveMessage", receive.clone())
            .await?;
        let message = &received["Messages"][0];
        let record: Value =
            serde_json::from_str(message["Body"].as_str().context("no record arrived")?)?;
        let started = record["responsePayload"]["started_us"]
            .as_u64()
            .context("the record has no start time")?;
        lamina
            .sqs(
                &mut connection,
                "DeleteMessage",
                json!({ "QueueUrl": queue, "ReceiptHandle": message["ReceiptHandle"] }),
            )
            .await?;
        if sample > 0 {
            measured.push(Duration::from_micros(
                u128::from(started).saturating_sub(sent) as u64,
            ));
        }
    }
    lamina.call(Method::DELETE, &config, Value::Null).await?;
    measured.sort();
    Ok(measured)
}

/// Waits until every accepted event has run; returns how long that took.
pub async fn drained(lamina: &Lamina, since: Instant) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while lamina.metric("lamina_async_events").await? > 0.0 {
        if Instant::now() > deadline {
            bail!("the event queue did not drain in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(since.elapsed())
}

/// SendMessage of a 100-byte body by `clients` connections.
pub async fn send_load(
    lamina: &Lamina,
    queue: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Load> {
    let request = lamina.sqs_request(
        "SendMessage",
        &json!({ "QueueUrl": queue, "MessageBody": "x".repeat(100) }),
    )?;
    load(lamina.address, request, clients, warmup, duration).await
}

/// Drains `queue` with `consumers` connections, each receiving up to 10 messages at a time
/// and deleting them in one batch; returns the messages consumed and how long it took.
pub async fn drain(
    address: SocketAddr,
    queue: &str,
    consumers: usize,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let queue = queue.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(address).await?;
            let receive = json!({ "QueueUrl": queue, "MaxNumberOfMessages": 10 });
            let mut consumed = 0u64;
            loop {
                let got = sqs(address, &mut connection, "ReceiveMessage", receive.clone()).await?;
                let Some(messages) = got["Messages"].as_array().filter(|m| !m.is_empty()) else {
                    return anyhow::Ok(consumed);
                };
                let entries: Vec<Value> = messages
                    .iter()
                    .enumerate()
                    .map(|(i, m)| json!({ "Id": i.to_string(), "ReceiptHandle": m["ReceiptHandle"] }))
                    .collect();
                consumed += entries.len() as u64;
                let delete = json!({ "QueueUrl": queue, "Entries": entries });
                sqs(address, &mut connection, "DeleteMessageBatch", delete).await?;
            }
        }));
    }
    let mut consumed = 0;
    for task in tasks {
        consumed += task.await??;
    }
    Ok((consumed, started.elapsed()))
}

/// A backlog: `events` asynchronous invocations of `function`, each holding the handler for
/// `sleep_ms`, sent one after another on one connection. Returns how long the sending took and
/// how long until every event had run, both from the first send.
pub async fn backlog(
    lamina: &Lamina,
    function: &str,
    events: usize,
    sleep_ms: u64,
) -> anyhow::Result<(Duration, Duration)> {
    let request = lamina.event(function, &json!({ "sleep_ms": sleep_ms }).to_string())?;
    let mut connection = Connection::open(lamina.address).await?;
    let since = Instant::now();
    for _ in 0..events {
        let answer = connection.send(&request).await?;
        if answer.status != 202 {
            bail!(
                "an event for {function} was refused: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
    }
    let sent = since.elapsed();
    Ok((sent, drained(lamina, since).await?))
}
