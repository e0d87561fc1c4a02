//! The embedded queue engine: its own SQLite database (WAL, fsync at every commit), separate
//! from the metadata so that queue traffic never waits on configuration changes, written by one
//! thread that commits the operations waiting for it together — one fsync for a batch of
//! concurrent sends (group commit). A caller hears back only once its batch is durable.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{Notify, oneshot};

use crate::queue::{Counts, NewMessage, QueueSettings, QueueStore, Receipt, Received};
use crate::{Result, StoreError};

const SCHEMA: &str = r#"
    CREATE TABLE IF NOT EXISTS queues (
        name        TEXT PRIMARY KEY,
        body        TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS messages (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        queue           TEXT NOT NULL,
        message_id      TEXT NOT NULL,
        body            BLOB NOT NULL,
        attributes      TEXT NOT NULL,
        sent_ms         INTEGER NOT NULL,
        visible_ms      INTEGER NOT NULL,
        expires_ms      INTEGER NOT NULL,
        receive_count   INTEGER NOT NULL DEFAULT 0,
        first_receive_ms INTEGER,
        receipt         TEXT,
        leased          INTEGER NOT NULL DEFAULT 0,
        dlq_source      TEXT
    );
    CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, visible_ms, seq);
    CREATE INDEX IF NOT EXISTS messages_expiry ON messages (expires_ms);
"#;

/// How often a long poll looks again for messages that became visible without a send.
const RECHECK_MS: i64 = 200;

/// Operations a batch commits at most at once.
const MAX_BATCH_JOBS: usize = 512;

/// Work for the writer: runs inside the batch's transaction and returns how to answer its
/// caller once the batch has committed (`true`) or failed (`false`).
type Job = Box<dyn FnOnce(&Connection) -> Box<dyn FnOnce(bool) + Send> + Send>;

pub struct SqliteQueues {
    jobs: std::sync::mpsc::Sender<Job>,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Set by [`QueueStore::stop_waiting`]: long polls answer with what is there.
    stopping: AtomicBool,
}

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

/// A receipt handle names the message (`seq`), the delivery (the receive count it was made for)
/// and the message's token, a secret drawn at its first delivery: a handle is the message's if
/// the token matches, and the current delivery's if the count does too.
fn encode_receipt(seq: i64, delivery: u32, token: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{seq}:{delivery}:{token}"))
}

/// A decoded receipt handle: the message, the delivery (`None` for the handles of earlier
/// versions, `seq:token`, whose token was the delivery's own) and the token.
struct Handle {
    seq: i64,
    delivery: Option<u32>,
    token: String,
}

fn decode_receipt(receipt: &str) -> Option<Handle> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(receipt)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let parts: Vec<&str> = text.split(':').collect();
    let (seq, delivery, token) = match parts.as_slice() {
        [seq, token] => (seq, None, token),
        [seq, delivery, token] => (seq, Some(delivery.parse().ok()?), token),
        _ => return None,
    };
    Some(Handle {
        seq: seq.parse().ok()?,
        delivery,
        token: (*token).to_owned(),
    })
}

fn settings_of(conn: &Connection, queue: &str) -> rusqlite::Result<Option<QueueSettings>> {
    let body: Option<String> = conn
        .query_row(
            "SELECT body FROM queues WHERE name = ?1",
            params![queue],
            |row| row.get(0),
        )
        .optional()?;
    Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
}

impl SqliteQueues {
    /// Opens (creating if needed) the queue database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        Self::start(conn)
    }

    /// A private in-memory engine, for tests.
    pub fn in_memory() -> Result<Self> {
        Self::start(Connection::open_in_memory().map_err(backend)?)
    }

    fn start(conn: Connection) -> Result<Self> {
        // FULL: the WAL is fsynced at every commit, so an acknowledged send survives a crash.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        let (jobs, inbox) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("lamina-queues".into())
            .spawn(move || {
                while let Ok(first) = inbox.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH_JOBS {
                        match inbox.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    let began = conn.execute_batch("BEGIN IMMEDIATE").is_ok();
                    let answers: Vec<_> = batch.into_iter().map(|job| job(&conn)).collect();
                    let committed = began && conn.execute_batch("COMMIT").is_ok();
                    if !committed {
                        let _ = conn.execute_batch("ROLLBACK");
                    }
                    for answer in answers {
                        answer(committed);
                    }
                }
            })
            .map_err(backend)?;
        Ok(Self {
            jobs,
            wakers: Mutex::default(),
            stopping: AtomicBool::new(false),
        })
    }

    /// Runs `work` in the writer's next batch, all-or-nothing, and returns its result once the
    /// batch is durable.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = conn.execute_batch("SAVEPOINT job");
            let result = work(conn);
            let _ = match &result {
                Ok(_) => conn.execute_batch("RELEASE job"),
                Err(_) => conn.execute_batch("ROLLBACK TO job; RELEASE job"),
            };
            Box::new(move |committed| {
                let _ = reply.send(match result {
                    Ok(value) if committed => Ok(value),
                    Ok(_) => Err(backend("the queue database could not commit")),
                    Err(err) => Err(backend(err)),
                });
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| backend("the queue writer stopped"))?;
        answer
            .await
            .map_err(|_| backend("the queue writer stopped"))?
    }

    /// Makes the delivery `receipt` names visible `after_s` from now, still leased or not, with
    /// new attributes if given; wakes long polls if it is visible at once. The delivery must be
    /// the message's latest, unless `earlier_in_flight` allows an earlier one of a message that
    /// is still in flight (as SQS allows for a visibility change).
    #[allow(clippy::too_many_arguments)]
    async fn update_lease(
        &self,
        queue: &str,
        receipt: &str,
        now_ms: i64,
        after_s: u32,
        leased: bool,
        attributes: Option<String>,
        earlier_in_flight: bool,
    ) -> Result<Receipt> {
        let Some(handle) = decode_receipt(receipt) else {
            return Ok(Receipt::Invalid);
        };
        let name = queue.to_owned();
        let visible_ms = now_ms + i64::from(after_s) * 1000;
        let changed = self
            .run(move |conn| {
                let changed = conn.execute(
                    "UPDATE messages SET visible_ms = ?4, leased = ?5,
                        attributes = COALESCE(?6, attributes)
                     WHERE seq = ?1 AND queue = ?2 AND receipt = ?3 AND leased = 1
                       AND (receive_count = COALESCE(?7, receive_count)
                            OR (?8 AND receive_count > ?7 AND visible_ms > ?9))",
                    params![
                        handle.seq,
                        name,
                        handle.token,
                        visible_ms,
                        leased,
                        attributes,
                        handle.delivery,
                        earlier_in_flight,
                        now_ms
                    ],
                )?;
                Ok(Receipt::from_changed(changed))
            })
            .await?;
        if after_s == 0 && changed == Receipt::Done {
            self.waker(queue).notify_waiters();
        }
        Ok(changed)
    }

    fn waker(&self, queue: &str) -> Arc<Notify> {
        self.wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }
}

#[async_trait]
impl QueueStore for SqliteQueues {
    async fn create_queue(&self, name: &str, settings: QueueSettings) -> Result<bool> {
        let (name, body) = (
            name.to_owned(),
            serde_json::to_string(&settings).expect("settings serialize"),
        );
        self.run(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO queues (name, body) VALUES (?1, ?2)",
                params![name, body],
            )
            .map(|changed| changed == 1)
        })
        .await
    }

    async fn queue(&self, name: &str) -> Result<Option<QueueSettings>> {
        let name = name.to_owned();
        self.run(move |conn| settings_of(conn, &name)).await
    }

    async fn queues(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = prefix.to_owned();
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name FROM queues WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
            )?;
            let names = stmt.query_map(params![prefix], |row| row.get(0))?;
            names.collect()
        })
        .await
    }

    async fn set_queue(&self, name: &str, settings: QueueSettings) -> Result<bool> {
        let (name, body) = (
            name.to_owned(),
            serde_json::to_string(&settings).expect("settings serialize"),
        );
        self.run(move |conn| {
            conn.execute(
                "UPDATE queues SET body = ?2 WHERE name = ?1",
                params![name, body],
            )
            .map(|changed| changed == 1)
        })
        .await
    }

    async fn delete_queue(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.run(move |conn| {
            conn.execute("DELETE FROM messages WHERE queue = ?1", params![name])?;
            conn.execute("DELETE FROM queues WHERE name = ?1", params![name])
                .map(|changed| changed == 1)
        })
        .await
    }

    async fn purge(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.run(move |conn| {
            if settings_of(conn, &name)?.is_none() {
                return Ok(false);
            }
            conn.execute("DELETE FROM messages WHERE queue = ?1", params![name])?;
            Ok(true)
        })
        .await
    }

    async fn send(
        &self,
        queue: &str,
        messages: Vec<NewMessage>,
        now_ms: i64,
    ) -> Result<Option<Vec<String>>> {
        let name = queue.to_owned();
        let sent = self
            .run(move |conn| {
                let Some(settings) = settings_of(conn, &name)? else {
                    return Ok(None);
                };
                let mut stmt = conn.prepare_cached(
                    "INSERT INTO messages (queue, message_id, body, attributes, sent_ms, visible_ms, expires_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                let mut ids = Vec::with_capacity(messages.len());
                for message in messages {
                    let id = uuid::Uuid::new_v4().to_string();
                    let delay = i64::from(message.delay.unwrap_or(settings.delay)) * 1000;
                    let expires = now_ms + i64::from(settings.retention) * 1000;
                    stmt.execute(params![
                        name,
                        id,
                        message.body,
                        message.attributes,
                        now_ms,
                        now_ms + delay,
                        expires
                    ])?;
                    ids.push(id);
                }
                Ok(Some(ids))
            })
            .await?;
        if sent.is_some() {
            self.waker(queue).notify_waiters();
        }
        Ok(sent)
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility_s: Option<u32>,
        now_ms: i64,
    ) -> Result<Option<Vec<Received>>> {
        let name = queue.to_owned();
        let (received, moved_to) = self
            .run(move |conn| {
                let Some(settings) = settings_of(conn, &name)? else {
                    return Ok((None, None));
                };
                let visibility = i64::from(visibility_s.unwrap_or(settings.visibility_timeout)) * 1000;
                let mut candidates = conn.prepare_cached(
                    "SELECT seq, message_id, body, attributes, sent_ms, receive_count, first_receive_ms, dlq_source, receipt
                     FROM messages WHERE queue = ?1 AND visible_ms <= ?2 AND expires_ms > ?2
                     ORDER BY visible_ms, seq LIMIT ?3",
                )?;
                type Row = (i64, String, Vec<u8>, String, i64, u32, Option<i64>, Option<String>, Option<String>);
                let rows: Vec<Row> = candidates
                    .query_map(params![name, now_ms, max as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                let dead_letter = settings
                    .redrive
                    .as_ref()
                    .filter(|r| settings_of(conn, &r.dead_letter_queue).ok().flatten().is_some());
                let (mut out, mut moved) = (Vec::new(), false);
                for (seq, message_id, body, attributes, sent_ms, count, first, source, token) in rows {
                    if let Some(redrive) = dead_letter
                        && count >= redrive.max_receive_count
                    {
                        // Delivered as often as allowed: off to the dead-letter queue, where
                        // its receive count goes on (as in SQS). Its token is drawn anew, so
                        // no handle from the source queue reaches it there.
                        conn.execute(
                            "UPDATE messages SET queue = ?2, visible_ms = ?3,
                                receipt = NULL, leased = 0, dlq_source = ?4
                             WHERE seq = ?1",
                            params![seq, redrive.dead_letter_queue, now_ms, name],
                        )?;
                        moved = true;
                        continue;
                    }
                    let token = token.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
                    let first = first.unwrap_or(now_ms);
                    conn.execute(
                        "UPDATE messages SET visible_ms = ?2, receive_count = receive_count + 1,
                            first_receive_ms = ?3, receipt = ?4, leased = 1
                         WHERE seq = ?1",
                        params![seq, now_ms + visibility, first, token],
                    )?;
                    out.push(Received {
                        message_id,
                        receipt: encode_receipt(seq, count + 1, &token),
                        body,
                        attributes,
                        sent_ms,
                        receive_count: count + 1,
                        first_received_ms: first,
                        dead_letter_source: source,
                    });
                }
                let moved_to = moved.then(|| dead_letter.map(|r| r.dead_letter_queue.clone())).flatten();
                Ok((Some(out), moved_to))
            })
            .await?;
        if let Some(dead_letter) = moved_to {
            self.waker(&dead_letter).notify_waiters();
        }
        Ok(received)
    }

    async fn delete(&self, queue: &str, receipt: &str) -> Result<Receipt> {
        let Some(handle) = decode_receipt(receipt) else {
            return Ok(Receipt::Invalid);
        };
        let name = queue.to_owned();
        self.run(move |conn| {
            let deleted = conn.execute(
                "DELETE FROM messages WHERE seq = ?1 AND queue = ?2 AND receipt = ?3
                    AND receive_count = COALESCE(?4, receive_count)",
                params![handle.seq, name, handle.token, handle.delivery],
            )?;
            Ok(Receipt::from_changed(deleted))
        })
        .await
    }

    async fn change_visibility(
        &self,
        queue: &str,
        receipt: &str,
        visibility_s: u32,
        now_ms: i64,
    ) -> Result<Receipt> {
        // Still leased until it shows again, unless released at once.
        let leased = visibility_s > 0;
        self.update_lease(queue, receipt, now_ms, visibility_s, leased, None, true)
            .await
    }

    async fn reschedule(
        &self,
        queue: &str,
        receipt: &str,
        delay_s: u32,
        attributes: String,
        now_ms: i64,
    ) -> Result<Receipt> {
        self.update_lease(
            queue,
            receipt,
            now_ms,
            delay_s,
            false,
            Some(attributes),
            false,
        )
        .await
    }

    async fn counts(&self, queue: &str, now_ms: i64) -> Result<Counts> {
        let name = queue.to_owned();
        self.run(move |conn| {
            conn.query_row(
                "SELECT
                    COALESCE(SUM(visible_ms <= ?2), 0),
                    COALESCE(SUM(visible_ms > ?2 AND leased = 1), 0),
                    COALESCE(SUM(visible_ms > ?2 AND leased = 0), 0)
                 FROM messages WHERE queue = ?1 AND expires_ms > ?2",
                params![name, now_ms],
                |row| {
                    Ok(Counts {
                        visible: row.get::<_, i64>(0)? as u64,
                        in_flight: row.get::<_, i64>(1)? as u64,
                        delayed: row.get::<_, i64>(2)? as u64,
                    })
                },
            )
        })
        .await
    }

    async fn release_leases(&self, queue: &str, now_ms: i64) -> Result<u64> {
        let name = queue.to_owned();
        self.run(move |conn| {
            conn.execute(
                "UPDATE messages SET visible_ms = ?2, leased = 0 WHERE queue = ?1 AND leased = 1 AND visible_ms > ?2",
                params![name, now_ms],
            )
            .map(|n| n as u64)
        })
        .await
    }

    async fn expire(&self, now_ms: i64) -> Result<u64> {
        self.run(move |conn| {
            conn.execute(
                "DELETE FROM messages WHERE expires_ms <= ?1",
                params![now_ms],
            )
            .map(|n| n as u64)
        })
        .await
    }

    async fn receive_waiting(
        &self,
        queue: &str,
        max: usize,
        visibility_s: Option<u32>,
        deadline_ms: i64,
    ) -> Result<Option<Vec<Received>>> {
        let waker = self.waker(queue);
        loop {
            // Listening before looking: a send between the look and the wait still wakes us.
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let received = self
                .receive(queue, max, visibility_s, crate::now_ms())
                .await?;
            if !matches!(&received, Some(messages) if messages.is_empty()) {
                return Ok(received);
            }
            let now = crate::now_ms();
            if now >= deadline_ms || self.stopping.load(Ordering::SeqCst) {
                return Ok(received);
            }
            // Delayed messages and expiring leases wake nobody: look again now and then.
            let wait = (deadline_ms - now).min(RECHECK_MS) as u64;
            let _ = tokio::time::timeout(std::time::Duration::from_millis(wait), notified).await;
        }
    }

    fn stop_waiting(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let wakers = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        for waker in wakers.values() {
            waker.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue_conformance::{message, queue, suite};

    #[tokio::test]
    async fn in_memory_engine_behaves_as_sqs() {
        suite(&SqliteQueues::in_memory().unwrap()).await;
    }

    #[tokio::test]
    async fn on_disk_engine_behaves_as_sqs_and_keeps_what_it_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queues.db");
        {
            let engine = SqliteQueues::open(&path).unwrap();
            suite(&engine).await;
            engine
                .send("src", vec![message("kept")], 100_000)
                .await
                .unwrap();
        }
        let reopened = SqliteQueues::open(&path).unwrap();
        let kept = reopened
            .receive("src", 10, None, 100_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept[0].body, b"kept");
    }

    #[tokio::test]
    async fn receipts_of_the_earlier_form_still_work_for_their_delivery() {
        let engine = SqliteQueues::in_memory().unwrap();
        queue(&engine, "q", |_| {}).await;
        engine.send("q", vec![message("m")], 0).await.unwrap();
        let got = engine.receive("q", 1, None, 0).await.unwrap().unwrap();
        let handle = decode_receipt(&got[0].receipt).unwrap();
        assert_eq!(handle.delivery, Some(1));
        // Handed out before deliveries were counted in it: `seq:token`.
        let earlier = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}:{}", handle.seq, handle.token));
        assert_eq!(
            engine
                .change_visibility("q", &earlier, 60, 0)
                .await
                .unwrap(),
            Receipt::Done
        );
        assert_eq!(engine.delete("q", &earlier).await.unwrap(), Receipt::Done);
        assert_eq!(
            engine.delete("q", "bm90IGEgcmVjZWlwdA").await.unwrap(),
            Receipt::Invalid
        );
    }

    #[tokio::test]
    async fn long_polling_wakes_up_on_a_send() {
        let engine = Arc::new(SqliteQueues::in_memory().unwrap());
        queue(engine.as_ref(), "q", |_| {}).await;
        let waiting = {
            let engine = engine.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let got = engine
                    .receive_waiting("q", 1, None, crate::now_ms() + 10_000)
                    .await
                    .unwrap()
                    .unwrap();
                (got.len(), started.elapsed())
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        engine
            .send("q", vec![message("wake")], crate::now_ms())
            .await
            .unwrap();
        let (got, waited) = waiting.await.unwrap();
        assert_eq!(got, 1);
        assert!(waited < std::time::Duration::from_secs(5));
        // Nothing there: the wait runs out with an empty answer.
        let none = engine
            .receive_waiting("q", 1, None, crate::now_ms() + 300)
            .await
            .unwrap();
        assert_eq!(none, Some(vec![]));
        assert_eq!(
            engine.receive_waiting("nope", 1, None, 0).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn stopping_ends_long_polls_at_once() {
        let engine = Arc::new(SqliteQueues::in_memory().unwrap());
        queue(engine.as_ref(), "q", |_| {}).await;
        let waiting = {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine
                    .receive_waiting("q", 1, None, crate::now_ms() + 20_000)
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        engine.stop_waiting();
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the poll ended")
            .unwrap()
            .unwrap();
        assert_eq!(answer, Some(vec![]));
        // Polls begun afterwards do not wait either, but still take what is there.
        engine
            .send("q", vec![message("m")], crate::now_ms())
            .await
            .unwrap();
        let got = engine
            .receive_waiting("q", 1, None, crate::now_ms() + 20_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 1);
        let started = std::time::Instant::now();
        engine
            .receive_waiting("q", 1, None, crate::now_ms() + 20_000)
            .await
            .unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
