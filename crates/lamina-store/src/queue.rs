//! The durable queue engine: SQS's model (visibility timeouts, delays, receive counts,
//! retention, redrive to a dead-letter queue) behind one trait, serving both the SQS-compatible
//! API and Lamina's own queue of asynchronous invocations.
//!
//! Every change is durable when its call returns. Consumers lease messages: a received message
//! is invisible until its visibility timeout passes or its receipt handle deletes or releases
//! it, so a consumer that dies loses nothing (at-least-once delivery).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Sends to a queue carry at most this many messages at once.
pub const MAX_BATCH: usize = 10;

/// Where a queue sends messages received too often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redrive {
    /// The dead-letter queue's name.
    pub dead_letter_queue: String,
    pub max_receive_count: u32,
}

/// A queue's settings (the SQS attributes that shape its behaviour).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    /// Seconds a received message stays invisible (0–43,200; SQS default 30).
    pub visibility_timeout: u32,
    /// Seconds a message is kept (60–1,209,600; default 4 days).
    pub retention: u32,
    /// Seconds a new message stays invisible (0–900).
    pub delay: u32,
    /// Seconds ReceiveMessage waits when nothing is there (0–20).
    pub receive_wait: u32,
    /// Largest message body in bytes (1,024–1,048,576).
    pub max_message_size: u32,
    pub redrive: Option<Redrive>,
    /// Cost-allocation tags: metadata, no behaviour.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Attributes the engine records but does not act on (access policies, encryption
    /// settings), by their SQS names, as last set: they read back as written.
    #[serde(default)]
    pub recorded: BTreeMap<String, String>,
    /// Epoch seconds.
    pub created: i64,
    pub modified: i64,
}

impl QueueSettings {
    pub fn new(now_s: i64) -> Self {
        Self {
            visibility_timeout: 30,
            retention: 345_600,
            delay: 0,
            receive_wait: 0,
            max_message_size: 1_048_576,
            redrive: None,
            tags: BTreeMap::new(),
            recorded: BTreeMap::new(),
            created: now_s,
            modified: now_s,
        }
    }
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub body: Vec<u8>,
    /// Its attributes as a JSON document, kept as given: opaque to the engine (the SQS API keeps
    /// message and system attributes there, Lamina's own queues a retry's state).
    pub attributes: String,
    /// Seconds it stays invisible; `None` takes the queue's delay.
    pub delay: Option<u32>,
}

/// A message as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: String,
    /// Deletes or releases this delivery of the message (and no later one).
    pub receipt: String,
    pub body: Vec<u8>,
    pub attributes: String,
    pub sent_ms: i64,
    /// Deliveries so far, this one included, counting those from a queue it was redriven from.
    pub receive_count: u32,
    pub first_received_ms: i64,
    /// The queue it came from, when it was moved here by redrive.
    pub dead_letter_source: Option<String>,
}

/// Messages of a queue by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

/// What became of a request about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    Done,
    /// The receipt handle is not one this queue issued.
    Invalid,
    /// The handle is a past delivery's: the message was delivered again since, or is gone.
    Stale,
}

impl Receipt {
    /// The outcome of a change to the one row a valid receipt names.
    pub fn from_changed(rows: usize) -> Self {
        if rows == 1 { Self::Done } else { Self::Stale }
    }
}

/// The queue engine. Names are the queues' names; times are epoch milliseconds, passed in so
/// that behaviour is testable and a cluster agrees on one clock per call.
#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Creates the queue; `false` if it exists (its settings are left as they were).
    async fn create_queue(&self, name: &str, settings: QueueSettings) -> Result<bool>;
    async fn queue(&self, name: &str) -> Result<Option<QueueSettings>>;
    /// Queue names beginning with `prefix`, in order.
    async fn queues(&self, prefix: &str) -> Result<Vec<String>>;
    /// Replaces a queue's settings; `false` if there is no such queue.
    async fn set_queue(&self, name: &str, settings: QueueSettings) -> Result<bool>;
    /// Deletes a queue and its messages; `false` if there was none.
    async fn delete_queue(&self, name: &str) -> Result<bool>;
    /// Deletes every message of a queue.
    async fn purge(&self, name: &str) -> Result<bool>;
    /// Appends messages; returns their ids, in order, or `None` if there is no such queue.
    async fn send(
        &self,
        queue: &str,
        messages: Vec<NewMessage>,
        now_ms: i64,
    ) -> Result<Option<Vec<String>>>;
    /// Leases up to `max` visible messages for `visibility_s` seconds (`None`: the queue's).
    /// Messages received `max_receive_count` times already move to the dead-letter queue instead,
    /// keeping their receive count there.
    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility_s: Option<u32>,
        now_ms: i64,
    ) -> Result<Option<Vec<Received>>>;
    /// Deletes the message of a delivery.
    async fn delete(&self, queue: &str, receipt: &str) -> Result<Receipt>;
    /// Sets how much longer a delivery stays invisible (0 releases it at once). The message
    /// stays in flight, leased to its receiver, until then. As in SQS, the handle of an earlier
    /// delivery is honoured while the message is in flight (received again, not yet visible).
    async fn change_visibility(
        &self,
        queue: &str,
        receipt: &str,
        visibility_s: u32,
        now_ms: i64,
    ) -> Result<Receipt>;
    /// Hands a delivery back, to be received again after `delay_s` with `attributes` in place
    /// of the message's (Lamina's own queues carry a retry's state there). Unlike a changed
    /// visibility the message is no longer in flight but delayed: no lease of it remains for
    /// [`release_leases`](Self::release_leases) to take back early.
    async fn reschedule(
        &self,
        queue: &str,
        receipt: &str,
        delay_s: u32,
        attributes: String,
        now_ms: i64,
    ) -> Result<Receipt>;
    async fn counts(&self, queue: &str, now_ms: i64) -> Result<Counts>;
    /// Makes every leased message of `queue` visible now (its consumer died with the process).
    /// Rescheduled messages keep their delay.
    async fn release_leases(&self, queue: &str, now_ms: i64) -> Result<u64>;
    /// Deletes messages past their queue's retention; returns how many.
    async fn expire(&self, now_ms: i64) -> Result<u64>;
    /// Like [`receive`](Self::receive) at the current time, but if nothing is visible waits
    /// for a message to arrive or become visible, until `deadline_ms` (long polling). Returns
    /// an empty list when the wait ran out, or at once after [`stop_waiting`](Self::stop_waiting).
    async fn receive_waiting(
        &self,
        queue: &str,
        max: usize,
        visibility_s: Option<u32>,
        deadline_ms: i64,
    ) -> Result<Option<Vec<Received>>>;
    /// Ends every long poll, now and from now on, with what is there (the server is stopping:
    /// its requests should finish without waiting out their polls).
    fn stop_waiting(&self);
}
