//! Asynchronous invocation: events are committed to a durable queue before the caller hears
//! 202, and a dispatcher runs them through the same invoker as synchronous calls. A function
//! error is retried after `retry_interval` × the attempt's number (Lambda: one minute, then
//! two), up to `MaximumRetryAttempts`; a throttle or a platform error puts the event back with
//! exponential backoff (1 s to 5 min) until `MaximumEventAgeInSeconds`. An event that fails
//! goes to the version's dead-letter queue and the on-failure destination; one that succeeds
//! to the on-success destination, with Lambda's invocation record.
//!
//! Delivery is at least once: an event is deleted from the queue only after it has been
//! handled, so one running when the server dies runs again after restart. Its state between
//! retries (attempts, last error) travels in the message's attributes.
//!
//! Each function has its own queue and, while that queue holds events, its own dispatcher,
//! which takes one event at a time as the invoker admits it ([`Invoke::admit`]): a function's
//! backlog runs at the function's concurrency — its reservation, or what the unreserved pool
//! has free — and one function's backlog never holds up another's. Throttle backoff is left
//! for admissions that wait out their patience.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use lamina_core::arn::{Account, LATEST};
use lamina_core::event_invoke::{
    Condition, Destination, EventInvokeConfig, RecordedResponse, invocation_record,
};
use lamina_core::function::{MAX_CHAIN_INVOCATIONS, RecursiveLoop};
use lamina_core::invoke::{
    Admission, AsyncMetrics, Enqueue, Invoke, InvokeRequest, InvokeResponse, MAX_ASYNC_PAYLOAD,
    Publish,
};
use lamina_core::{Error, ErrorKind, Result, ThrottleReason};
use lamina_store::queue::{MAX_BATCH, NewMessage, QueueSettings, Received};
use lamina_store::{MetadataStore, QueueStore, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Instant;
use tokio::sync::{Semaphore, TryAcquireError};

/// Accepted events are queued in `lamina:events:<function>`, one queue per function; names
/// with a character no SQS queue name may have, so the queue API can neither see nor touch
/// them. A server before per-function queues kept every event in `lamina:events` itself,
/// which is drained into them at start.
pub const EVENT_QUEUE: &str = "lamina:events";

/// A function's entry among the running dispatchers, removed when its dispatcher ends unless
/// the dispatcher removed it itself.
struct Registered<'a> {
    dispatchers: &'a Mutex<HashMap<String, u64>>,
    function: &'a str,
    armed: bool,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut dispatchers = self.dispatchers.lock().unwrap_or_else(|p| p.into_inner());
            dispatchers.remove(self.function);
        }
    }
}

/// What the events of one leased batch share.
struct Batch {
    /// When the batch was leased: an event that starts long after has its lease renewed.
    leased: Instant,
    /// Once one event of a batch waited out its patience, the rest do not wait again.
    patient: bool,
    /// The event invoke configuration of each qualifier, read once a batch.
    configs: HashMap<Option<String>, EventInvokeConfig>,
}

/// The queue of `function`'s events.
fn event_queue(function: &str) -> String {
    format!("{EVENT_QUEUE}:{function}")
}

/// How long an event waits for its function to have room before the wait counts as a
/// throttle (and the event backs off).
const ADMISSION_PATIENCE: Duration = Duration::from_secs(60);
/// How long a dispatcher with nothing to do waits for an event before it looks whether its
/// queue is empty (and the dispatcher can end).
const IDLE_POLL_MS: i64 = 20_000;

/// How long the dispatcher holds an event it runs: longer than any invocation may take. A
/// server that dies holding events releases them at its next start.
const LEASE_S: u32 = 960;
/// An event that starts this long after its batch was leased has its lease renewed first.
const LEASE_RENEWAL: Duration = Duration::from_secs(30);
/// Backoff after a throttle or a platform error, doubling from the first to the last.
const BACKOFF_FIRST_S: u32 = 1;
const BACKOFF_LAST_S: u32 = 300;
/// Attempts at delivering a record or a dead letter before it is given up (and counted).
const DELIVERY_TRIES: u32 = 3;
/// Lambda keeps the first kilobyte of the error message in a dead letter.
const DEAD_LETTER_MESSAGE_BYTES: usize = 1024;

pub struct AsyncSettings {
    /// Events accepted but not finished at most; more are refused with a throttle.
    pub max_depth: u64,
    /// Events run at once.
    pub concurrency: usize,
    /// The wait before the first retry of a function error; the second waits twice as long.
    pub retry_interval: Duration,
}

/// An event's state, kept in its message's attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Envelope {
    function: String,
    qualifier: Option<String>,
    request_id: String,
    accepted_ms: i64,
    /// Runs that ended in a function error.
    #[serde(default)]
    errors: u32,
    /// Runs that reached the function (`approximateInvokeCount`).
    #[serde(default)]
    invokes: u32,
    /// Throttles and platform errors since the last run.
    #[serde(default)]
    backoffs: u32,
    /// The status and message of the last failure, for a dead letter.
    #[serde(default)]
    last_error: Option<(u16, String)>,
    /// Invocations before this one in its chain: 0 for an event a caller sent, one more than
    /// its cause's for an event that carries a record to a function destination.
    #[serde(default)]
    chain: u32,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    attempts: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    dead_letter_failures: AtomicU64,
    destination_failures: AtomicU64,
    recursive_dropped: AtomicU64,
}

pub struct AsyncInvoker {
    this: std::sync::Weak<AsyncInvoker>,
    queues: Arc<dyn QueueStore>,
    invoker: Arc<dyn Invoke>,
    store: Arc<dyn MetadataStore>,
    publisher: Arc<dyn Publish>,
    account: Account,
    settings: AsyncSettings,
    /// Events accepted and not yet finished.
    depth: AtomicU64,
    counters: Counters,
    /// One permit per event that may run at once; all of them free means none is running.
    slots: Arc<Semaphore>,
    /// Set when the server stops: the dispatchers take no more events.
    stopping: AtomicBool,
    /// Ends admissions waiting for room when the server stops.
    stop_signal: tokio::sync::watch::Sender<bool>,
    /// The functions with a running dispatcher, each with the number of events sent to it
    /// since it started: a dispatcher ends only if none arrived while it found its queue empty.
    dispatchers: Mutex<HashMap<String, u64>>,
    /// Event queues known to exist.
    queues_made: RwLock<HashSet<String>>,
}

fn store_error(err: lamina_store::StoreError) -> Error {
    Error::service(err.to_string())
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl AsyncInvoker {
    /// Takes back the events a previous server held when it stopped and starts a dispatcher
    /// for every function with events.
    pub async fn start(
        queues: Arc<dyn QueueStore>,
        invoker: Arc<dyn Invoke>,
        store: Arc<dyn MetadataStore>,
        publisher: Arc<dyn Publish>,
        account: Account,
        settings: AsyncSettings,
    ) -> Result<Arc<Self>> {
        let now = now_ms();
        let mut depth = 0;
        let mut resumed = 0;
        let mut waiting = Vec::new();
        let names = queues
            .queues(&format!("{EVENT_QUEUE}:"))
            .await
            .map_err(store_error)?;
        for name in &names {
            resumed += queues
                .release_leases(name, now)
                .await
                .map_err(store_error)?;
            let counts = queues.counts(name, now).await.map_err(store_error)?;
            let events = counts.visible + counts.in_flight + counts.delayed;
            depth += events;
            if events > 0 {
                waiting.push(name[EVENT_QUEUE.len() + 1..].to_owned());
            }
        }
        let legacy = queues
            .queue(EVENT_QUEUE)
            .await
            .map_err(store_error)?
            .is_some();
        if legacy {
            resumed += queues
                .release_leases(EVENT_QUEUE, now)
                .await
                .map_err(store_error)?;
            let counts = queues.counts(EVENT_QUEUE, now).await.map_err(store_error)?;
            depth += counts.visible + counts.in_flight + counts.delayed;
        }
        if depth > 0 {
            tracing::info!(events = depth, resumed, "resuming asynchronous events");
        }
        let this = Arc::new_cyclic(|this| Self {
            this: this.clone(),
            queues,
            invoker,
            store,
            publisher,
            account,
            depth: AtomicU64::new(depth),
            counters: Counters::default(),
            slots: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            stopping: AtomicBool::new(false),
            stop_signal: tokio::sync::watch::Sender::new(false),
            dispatchers: Mutex::default(),
            queues_made: RwLock::new(names.into_iter().collect()),
            settings,
        });
        for function in waiting {
            this.wake(&function);
        }
        if legacy {
            tokio::spawn(this.clone().drain_legacy_queue());
        }
        Ok(this)
    }

    /// Stops taking events from the queues; those running go on. Dispatchers notice at once
    /// if they wait for room, and when their poll of the queue ends otherwise (at once if the
    /// queue store's long polls were stopped).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop_signal.send_replace(true);
    }

    /// Waits until no event runs, and lets none start after. After [`stop`](Self::stop), an
    /// event either finished (its records sent, its message deleted) or was never taken (or
    /// was handed back), so a graceful stop neither fails an event nor runs one twice.
    pub async fn drained(&self) {
        let all = u32::try_from(self.settings.concurrency.max(1)).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(all).await;
        self.slots.close();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Makes sure `function` has a dispatcher, after an event was sent to its queue.
    fn wake(&self, function: &str) {
        let mut dispatchers = self.dispatchers.lock().unwrap_or_else(|p| p.into_inner());
        match dispatchers.get_mut(function) {
            Some(sends) => *sends += 1,
            None => {
                let Some(this) = self.this.upgrade() else {
                    return;
                };
                dispatchers.insert(function.to_owned(), 0);
                tokio::spawn(this.dispatch(function.to_owned()));
            }
        }
    }

    fn sends_to(&self, function: &str) -> Option<u64> {
        let dispatchers = self.dispatchers.lock().unwrap_or_else(|p| p.into_inner());
        dispatchers.get(function).copied()
    }

    /// Runs `function`'s events as the invoker admits them, oldest first, until its queue is
    /// empty or the server stops.
    async fn dispatch(self: Arc<Self>, function: String) {
        let queue = event_queue(&function);
        // Whatever ends this dispatcher (a stop, a panic) lets the next event start another.
        let mut registered = Registered {
            dispatchers: &self.dispatchers,
            function: &function,
            armed: true,
        };
        while !self.stopping() {
            let sends = self.sends_to(&function);
            let received = self
                .queues
                .receive_waiting(&queue, MAX_BATCH, Some(LEASE_S), now_ms() + IDLE_POLL_MS)
                .await;
            let messages = match received {
                Ok(Some(messages)) => messages,
                Ok(None) => {
                    tracing::error!(queue, "an event queue is gone");
                    break;
                }
                Err(err) => {
                    tracing::error!(%err, queue, "reading an event queue");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if messages.is_empty() {
                if self.stopping() {
                    break;
                }
                if let Ok(counts) = self.queues.counts(&queue, now_ms()).await
                    && counts.visible + counts.in_flight + counts.delayed == 0
                {
                    let mut dispatchers =
                        self.dispatchers.lock().unwrap_or_else(|p| p.into_inner());
                    // An event sent since this pass began keeps the dispatcher.
                    if dispatchers.get(&function).copied() == sends {
                        registered.armed = false;
                        dispatchers.remove(&function);
                        return;
                    }
                }
                continue;
            }
            let mut batch = Batch {
                leased: Instant::now(),
                patient: true,
                configs: HashMap::new(),
            };
            for message in messages {
                self.admit_and_start(&queue, message, &mut batch).await;
            }
        }
        drop(registered);
    }

    /// Waits for the invoker to admit `message`'s invocation, then runs it in the background.
    async fn admit_and_start(self: &Arc<Self>, queue: &str, message: Received, batch: &mut Batch) {
        if self.stopping() {
            return self.hand_back(queue, &message).await;
        }
        let envelope: Envelope = match serde_json::from_str(&message.attributes) {
            Ok(envelope) => envelope,
            Err(err) => {
                tracing::error!(%err, message = %message.message_id, "an unreadable event; dropping it");
                bump(&self.counters.dropped);
                self.finish(queue, &message).await;
                return;
            }
        };
        let config = match batch.configs.get(&envelope.qualifier) {
            Some(config) => config.clone(),
            None => {
                let config = self.config(&envelope).await;
                batch
                    .configs
                    .insert(envelope.qualifier.clone(), config.clone());
                config
            }
        };
        let deadline = envelope.accepted_ms + i64::from(config.event_age_s()) * 1000;
        let until_deadline = Duration::from_millis(u64::try_from(deadline - now_ms()).unwrap_or(0));
        let patience = if batch.patient {
            ADMISSION_PATIENCE.min(until_deadline)
        } else {
            Duration::ZERO
        };
        let mut stop = self.stop_signal.subscribe();
        let (admission, slot) = loop {
            let admission = tokio::select! {
                admission = self.invoker.admit(&envelope.function, envelope.qualifier.as_deref(), patience) => admission,
                () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => {
                    return self.hand_back(queue, &message).await;
                }
            };
            if matches!(&admission, Err(err) if matches!(err.kind, ErrorKind::TooManyRequests(_))) {
                batch.patient = false;
            }
            // A place among the events running at once; the function's place is not held
            // while waiting for one, so its synchronous callers are not throttled meanwhile.
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => break (admission, slot),
                Err(TryAcquireError::Closed) => return self.hand_back(queue, &message).await,
                Err(TryAcquireError::NoPermits) if admission.is_err() => {
                    match self.slots.clone().acquire_owned().await {
                        Ok(slot) => break (admission, slot),
                        Err(_) => return self.hand_back(queue, &message).await,
                    }
                }
                Err(TryAcquireError::NoPermits) => {
                    drop(admission);
                    match self.slots.clone().acquire_owned().await {
                        Ok(slot) => drop(slot),
                        Err(_) => return self.hand_back(queue, &message).await,
                    }
                }
            }
        };
        if self.stopping() {
            return self.hand_back(queue, &message).await;
        }
        // The batch's lease was taken for one invocation's longest run; one that starts late
        // gets it again in full, and one whose lease ran out (delivered again meanwhile) is the
        // other delivery's to run.
        if batch.leased.elapsed() > LEASE_RENEWAL {
            match self
                .queues
                .change_visibility(queue, &message.receipt, LEASE_S, now_ms())
                .await
            {
                Ok(lamina_store::queue::Receipt::Done) => {}
                Ok(other) => {
                    tracing::warn!(?other, message = %message.message_id, "an event's lease ran out before it started");
                    return;
                }
                Err(err) => {
                    tracing::warn!(%err, message = %message.message_id, "renewing an event's lease");
                }
            }
        }
        let this = self.clone();
        let queue = queue.to_owned();
        tokio::spawn(async move {
            this.process(&queue, message, envelope, config, deadline, admission)
                .await;
            drop(slot);
        });
    }

    /// Counts an event as finished. Saturating: an event run twice (at least once) must not
    /// wrap the depth and refuse every event after.
    fn settled(&self) {
        let _ = self
            .depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1));
    }

    /// Makes a leased event visible again at once: the server stops before running it.
    async fn hand_back(&self, queue: &str, message: &Received) {
        if let Err(err) = self
            .queues
            .change_visibility(queue, &message.receipt, 0, now_ms())
            .await
        {
            tracing::warn!(%err, message = %message.message_id, "handing back an event; its lease will run out instead");
        }
    }

    /// Moves the events of the single queue of earlier servers into their functions' queues,
    /// each as it becomes due, then deletes that queue. A crash between a move and its delete
    /// runs the event twice at most, never loses it.
    async fn drain_legacy_queue(self: Arc<Self>) {
        while !self.stopping() {
            let received = self
                .queues
                .receive_waiting(
                    EVENT_QUEUE,
                    MAX_BATCH,
                    Some(LEASE_S),
                    now_ms() + IDLE_POLL_MS,
                )
                .await;
            let messages = match received {
                Ok(Some(messages)) => messages,
                Ok(None) => return,
                Err(err) => {
                    tracing::error!(%err, "reading the queue of earlier servers' events");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for message in &messages {
                let Ok(envelope) = serde_json::from_str::<Envelope>(&message.attributes) else {
                    tracing::error!(message = %message.message_id, "an unreadable event; dropping it");
                    bump(&self.counters.dropped);
                    if let Ok(lamina_store::queue::Receipt::Done) =
                        self.queues.delete(EVENT_QUEUE, &message.receipt).await
                    {
                        self.settled();
                    }
                    continue;
                };
                let moved = NewMessage {
                    body: message.body.clone(),
                    attributes: message.attributes.clone(),
                    delay: Some(0),
                };
                if self.send_event(&envelope.function, moved).await.is_ok() {
                    let _ = self.queues.delete(EVENT_QUEUE, &message.receipt).await;
                }
            }
            if let Ok(counts) = self.queues.counts(EVENT_QUEUE, now_ms()).await
                && counts.visible + counts.in_flight + counts.delayed == 0
            {
                let _ = self.queues.delete_queue(EVENT_QUEUE).await;
                tracing::info!("moved the events of earlier servers to per-function queues");
                return;
            }
        }
    }

    /// Sends an event to its function's queue (made on first use) and wakes its dispatcher.
    async fn send_event(&self, function: &str, message: NewMessage) -> Result<()> {
        let queue = event_queue(function);
        let known = self
            .queues_made
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&queue);
        if !known {
            let mut settings = QueueSettings::new(now_ms() / 1000);
            // Events leave the queue only through the dispatcher, which reports those too old
            // to their failure destination: the queue itself keeps them as long as SQS would.
            settings.retention = 1_209_600;
            self.queues
                .create_queue(&queue, settings)
                .await
                .map_err(store_error)?;
            self.queues_made
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(queue.clone());
        }
        match self.queues.send(&queue, vec![message], now_ms()).await {
            Ok(Some(_)) => {
                self.wake(function);
                Ok(())
            }
            Ok(None) => {
                // Deleted under us (it never is by Lamina): make it again next time.
                self.queues_made
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&queue);
                Err(Error::service("The event queue does not exist."))
            }
            Err(err) => {
                tracing::error!(%err, "could not queue an asynchronous event");
                Err(Error::service("The event could not be queued."))
            }
        }
    }

    async fn config(&self, envelope: &Envelope) -> EventInvokeConfig {
        let qualifier = envelope.qualifier.as_deref().unwrap_or(LATEST);
        match self
            .store
            .event_invoke_config(&envelope.function, qualifier)
            .await
        {
            Ok(Some(config)) => config,
            Ok(None) => EventInvokeConfig::put(Default::default(), qualifier, &self.account, 0.0)
                .expect("the default configuration is valid"),
            Err(err) => {
                tracing::warn!(%err, "reading an event invoke configuration; using the defaults");
                EventInvokeConfig::put(Default::default(), qualifier, &self.account, 0.0)
                    .expect("the default configuration is valid")
            }
        }
    }

    /// Runs one admitted event and decides what becomes of it.
    async fn process(
        &self,
        queue: &str,
        message: Received,
        mut envelope: Envelope,
        config: EventInvokeConfig,
        deadline: i64,
        admission: Result<Admission>,
    ) {
        if now_ms() >= deadline {
            // Its place is not needed for the records' delivery.
            drop(admission);
            self.fail(
                queue,
                &message,
                &envelope,
                &config,
                Condition::EventAgeExceeded,
                None,
            )
            .await;
            return;
        }
        let request = InvokeRequest {
            function: envelope.function.clone(),
            qualifier: envelope.qualifier.clone(),
            payload: Bytes::from(message.body.clone()),
            request_id: envelope.request_id.clone(),
            // Lambda passes a client context to synchronous invocations only.
            client_context: None,
            tail: false,
            stream: None,
        };
        let result = match admission {
            Ok(admission) => {
                bump(&self.counters.attempts);
                self.invoker.invoke_admitted(request, admission).await
            }
            Err(err) => Err(err),
        };
        match result {
            Ok(response) => {
                envelope.invokes += 1;
                envelope.backoffs = 0;
                if response.function_error.is_none() {
                    self.succeed(queue, &message, &envelope, &config, &response)
                        .await;
                    return;
                }
                envelope.errors += 1;
                envelope.last_error = Some((200, error_message(&response.payload)));
                if envelope.errors > config.retry_attempts() {
                    let condition = Condition::RetriesExhausted;
                    self.fail(
                        queue,
                        &message,
                        &envelope,
                        &config,
                        condition,
                        Some(&response),
                    )
                    .await;
                } else {
                    let wait = self.settings.retry_interval * envelope.errors;
                    self.retry(queue, &message, &envelope, wait, deadline).await;
                }
            }
            Err(err) if err.kind == ErrorKind::ResourceNotFound => {
                tracing::warn!(
                    function = %envelope.function,
                    request_id = %envelope.request_id,
                    %err,
                    "dropping an asynchronous event: its function is gone"
                );
                bump(&self.counters.dropped);
                self.finish(queue, &message).await;
            }
            Err(err) => {
                envelope.last_error = Some((err.kind.status(), err.message.clone()));
                if matches!(
                    err.kind,
                    ErrorKind::TooManyRequests(
                        ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded
                    )
                ) && self.reserved_zero(&envelope.function).await
                {
                    let condition = Condition::ZeroReservedConcurrency;
                    self.fail(queue, &message, &envelope, &config, condition, None)
                        .await;
                    return;
                }
                let wait = (BACKOFF_FIRST_S << envelope.backoffs.min(16)).min(BACKOFF_LAST_S);
                envelope.backoffs += 1;
                tracing::debug!(request_id = %envelope.request_id, %err, wait, "backing off");
                self.retry(
                    queue,
                    &message,
                    &envelope,
                    Duration::from_secs(u64::from(wait)),
                    deadline,
                )
                .await;
            }
        }
    }

    async fn reserved_zero(&self, function: &str) -> bool {
        matches!(
            self.store.function(function).await,
            Ok(Some((record, _))) if record.reserved_concurrency == Some(0)
        )
    }

    /// Puts the event back to run again after `wait` (and no later than its deadline, when it
    /// will be reported as too old).
    async fn retry(
        &self,
        queue: &str,
        message: &Received,
        envelope: &Envelope,
        wait: Duration,
        deadline: i64,
    ) {
        let now = now_ms();
        let until_deadline = u64::try_from(deadline - now).unwrap_or(0).div_ceil(1000);
        let wait_s = wait.as_secs().min(until_deadline).max(1) as u32;
        let state = serde_json::to_string(envelope).expect("an envelope serializes");
        match self
            .queues
            .reschedule(queue, &message.receipt, wait_s, state, now)
            .await
        {
            Ok(lamina_store::queue::Receipt::Done) => {}
            Ok(other) => {
                tracing::warn!(?other, request_id = %envelope.request_id, "an event's lease was lost")
            }
            Err(err) => {
                tracing::error!(%err, request_id = %envelope.request_id, "could not schedule a retry; the lease will run out instead")
            }
        }
    }

    /// Deletes a handled event.
    async fn finish(&self, queue: &str, message: &Received) {
        match self.queues.delete(queue, &message.receipt).await {
            Ok(lamina_store::queue::Receipt::Done) => self.settled(),
            Ok(other) => {
                tracing::warn!(?other, message = %message.message_id, "an event's lease was lost")
            }
            Err(err) => {
                tracing::error!(%err, message = %message.message_id, "could not delete a handled event; it will run again")
            }
        }
    }

    fn function_arn(&self, envelope: &Envelope) -> String {
        let qualifier = envelope.qualifier.as_deref().unwrap_or(LATEST);
        self.account.qualified_arn(&envelope.function, qualifier)
    }

    fn record(
        &self,
        message: &Received,
        envelope: &Envelope,
        condition: Condition,
        response: Option<&InvokeResponse>,
    ) -> serde_json::Value {
        invocation_record(
            &lamina_core::time::iso_timestamp(lamina_core::time::now()),
            &envelope.request_id,
            &self.function_arn(envelope),
            condition,
            envelope.invokes,
            &message.body,
            response.map(|r| RecordedResponse {
                executed_version: &r.executed_version,
                function_error: r.function_error.as_deref(),
                payload: &r.payload,
            }),
        )
    }

    async fn succeed(
        &self,
        queue: &str,
        message: &Received,
        envelope: &Envelope,
        config: &EventInvokeConfig,
        response: &InvokeResponse,
    ) {
        bump(&self.counters.succeeded);
        if let Some(target) = &config.on_success {
            let record = self.record(message, envelope, Condition::Success, Some(response));
            self.deliver(target, &record, envelope, Condition::Success)
                .await;
        }
        self.finish(queue, message).await;
    }

    async fn fail(
        &self,
        queue: &str,
        message: &Received,
        envelope: &Envelope,
        config: &EventInvokeConfig,
        condition: Condition,
        response: Option<&InvokeResponse>,
    ) {
        bump(&self.counters.failed);
        tracing::info!(
            function = %envelope.function,
            request_id = %envelope.request_id,
            condition = condition.as_str(),
            invokes = envelope.invokes,
            "asynchronous invocation failed"
        );
        let executed = response.map(|r| r.executed_version.as_str());
        if let Some(target) = self.dead_letter_target(envelope, executed).await {
            self.dead_letter(&target, message, envelope, condition)
                .await;
        }
        if let Some(target) = &config.on_failure {
            let record = self.record(message, envelope, condition, response);
            self.deliver(target, &record, envelope, condition).await;
        }
        self.finish(queue, message).await;
    }

    /// The dead-letter queue of the version that ran (or would run) the event.
    async fn dead_letter_target(
        &self,
        envelope: &Envelope,
        executed: Option<&str>,
    ) -> Option<String> {
        let version = match executed {
            Some(version) => version.to_owned(),
            None => self
                .invoker
                .resolve(&envelope.function, envelope.qualifier.as_deref())
                .await
                .ok()?,
        };
        match self.store.version(&envelope.function, &version).await {
            Ok(version) => version?.dead_letter_target,
            Err(err) => {
                tracing::warn!(%err, "reading a version for its dead-letter queue");
                None
            }
        }
    }

    async fn dead_letter(
        &self,
        target: &str,
        message: &Received,
        envelope: &Envelope,
        condition: Condition,
    ) {
        let (code, text) = envelope.last_error.clone().unwrap_or_else(|| {
            (
                ErrorKind::TooManyRequests(ThrottleReason::ConcurrentInvocationLimitExceeded)
                    .status(),
                condition.as_str().to_owned(),
            )
        });
        let attributes = json!({
            "RequestID": { "DataType": "String", "StringValue": envelope.request_id },
            "ErrorCode": { "DataType": "Number", "StringValue": code.to_string() },
            "ErrorMessage": { "DataType": "String", "StringValue": truncate(&text, DEAD_LETTER_MESSAGE_BYTES) },
        });
        let Ok(Destination::Queue(queue)) = Destination::parse(target, &self.account) else {
            tracing::error!(
                target,
                "a dead-letter target that is not a queue of this account"
            );
            bump(&self.counters.dead_letter_failures);
            return;
        };
        let letter = NewMessage {
            body: message.body.clone(),
            attributes: attributes.to_string(),
            delay: None,
        };
        for attempt in 1..=DELIVERY_TRIES {
            match self
                .queues
                .send(&queue, vec![letter.clone()], now_ms())
                .await
            {
                Ok(Some(_)) => return,
                Ok(None) => {
                    tracing::error!(queue, request_id = %envelope.request_id, "the dead-letter queue does not exist; the event is lost");
                    break;
                }
                Err(err) if attempt == DELIVERY_TRIES => {
                    tracing::error!(%err, queue, request_id = %envelope.request_id, "could not send a dead letter");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await,
            }
        }
        bump(&self.counters.dead_letter_failures);
    }

    /// Sends an invocation record to a destination, trying a few times; a record that cannot
    /// be delivered is logged and counted (Lambda's `DestinationDeliveryFailures`).
    async fn deliver(
        &self,
        target: &str,
        record: &serde_json::Value,
        envelope: &Envelope,
        condition: Condition,
    ) {
        let body = record.to_string();
        let mut last = String::new();
        for attempt in 1..=DELIVERY_TRIES {
            match self.deliver_once(target, &body, envelope, condition).await {
                Ok(()) => return,
                Err(err) => last = err,
            }
            if attempt < DELIVERY_TRIES {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
        tracing::error!(target, request_id = %envelope.request_id, error = %last, "could not deliver an invocation record");
        bump(&self.counters.destination_failures);
    }

    async fn deliver_once(
        &self,
        target: &str,
        body: &str,
        envelope: &Envelope,
        condition: Condition,
    ) -> std::result::Result<(), String> {
        match Destination::parse(target, &self.account).map_err(|e| e.message)? {
            Destination::Queue(queue) => {
                let message = NewMessage {
                    body: body.as_bytes().to_vec(),
                    attributes: "{}".into(),
                    delay: None,
                };
                match self.queues.send(&queue, vec![message], now_ms()).await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(format!("the queue {queue} does not exist")),
                    Err(err) => Err(err.to_string()),
                }
            }
            Destination::Function { name, qualifier } => {
                if body.len() > MAX_ASYNC_PAYLOAD {
                    return Err(format!(
                        "the record ({} bytes) is larger than an asynchronous invocation \
                         may be ({MAX_ASYNC_PAYLOAD} bytes)",
                        body.len()
                    ));
                }
                self.invoker
                    .resolve(&name, qualifier.as_deref())
                    .await
                    .map_err(|e| e.message)?;
                let chain = envelope.chain + 1;
                if chain >= MAX_CHAIN_INVOCATIONS && !self.recursion_allowed(&name).await {
                    // The record would make the chain's 17th invocation: a loop of
                    // destinations, stopped here (Lambda's recursive loop detection).
                    tracing::warn!(
                        function = %name,
                        from = %envelope.function,
                        request_id = %envelope.request_id,
                        "recursive loop detected: a chain of {MAX_CHAIN_INVOCATIONS} invocations \
                         stops here and the record is not delivered \
                         (PutFunctionRecursionConfig RecursiveLoop=Allow lets it go on)"
                    );
                    bump(&self.counters.recursive_dropped);
                    return Ok(());
                }
                let request = InvokeRequest {
                    function: name,
                    qualifier,
                    payload: Bytes::from(body.to_owned()),
                    request_id: uuid::Uuid::new_v4().to_string(),
                    client_context: None,
                    tail: false,
                    stream: None,
                };
                self.enqueue_chained(request, chain)
                    .await
                    .map_err(|e| e.message)
            }
            Destination::RedisStream { server, key } => {
                let fields = [
                    ("condition", condition.as_str()),
                    ("requestId", envelope.request_id.as_str()),
                    ("functionArn", &self.function_arn(envelope)),
                ];
                self.publisher
                    .redis_stream(&server, &key, body.as_bytes(), &fields)
                    .await
            }
        }
    }
}

/// The message of a function error's payload (`errorMessage`), or the payload itself.
fn error_message(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| {
            v.get("errorMessage")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned())
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl AsyncInvoker {
    async fn recursion_allowed(&self, function: &str) -> bool {
        matches!(
            self.store.function(function).await,
            Ok(Some((record, _))) if record.recursive_loop == RecursiveLoop::Allow
        )
    }

    /// Accepts an event `chain` invocations down a chain of destinations.
    async fn enqueue_chained(&self, request: InvokeRequest, chain: u32) -> Result<()> {
        let max = self.settings.max_depth;
        if self.depth.fetch_add(1, Ordering::SeqCst) >= max {
            self.depth.fetch_sub(1, Ordering::SeqCst);
            bump(&self.counters.refused);
            return Err(Error::new(
                ErrorKind::TooManyRequests(ThrottleReason::FunctionInvocationRateLimitExceeded),
                format!(
                    "Rate Exceeded. The queue of asynchronous events is full ({max} events); \
                     try again later."
                ),
            ));
        }
        let now = now_ms();
        let envelope = Envelope {
            function: request.function,
            qualifier: request.qualifier,
            request_id: request.request_id,
            accepted_ms: now,
            errors: 0,
            invokes: 0,
            backoffs: 0,
            last_error: None,
            chain,
        };
        let message = NewMessage {
            body: request.payload.to_vec(),
            attributes: serde_json::to_string(&envelope).expect("an envelope serializes"),
            delay: Some(0),
        };
        let sent = match self.this.upgrade() {
            Some(this) => this.send_event(&envelope.function, message).await,
            None => Err(Error::service("the server is stopping")),
        };
        match sent {
            Ok(()) => {
                bump(&self.counters.accepted);
                Ok(())
            }
            Err(err) => {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                Err(err)
            }
        }
    }
}

#[async_trait]
impl Enqueue for AsyncInvoker {
    async fn enqueue(&self, request: InvokeRequest) -> Result<()> {
        self.enqueue_chained(request, 0).await
    }

    fn metrics(&self) -> AsyncMetrics {
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        AsyncMetrics {
            depth: self.depth.load(Ordering::Relaxed),
            max_depth: self.settings.max_depth,
            accepted: get(&c.accepted),
            refused: get(&c.refused),
            attempts: get(&c.attempts),
            succeeded: get(&c.succeeded),
            failed: get(&c.failed),
            dropped: get(&c.dropped),
            dead_letter_failures: get(&c.dead_letter_failures),
            destination_failures: get(&c.destination_failures),
            recursive_dropped: get(&c.recursive_dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_store::{SqliteQueues, SqliteStore};
    use std::sync::atomic::AtomicU32;
    use tokio::sync::OwnedSemaphorePermit;

    /// An engine with room for `room` invocations at a time, each taking 10 ms.
    struct Engine {
        room: Arc<Semaphore>,
        running: AtomicU32,
        most: AtomicU32,
        ran: Mutex<Vec<String>>,
    }

    impl Engine {
        fn new(room: usize) -> Arc<Self> {
            Arc::new(Self {
                room: Arc::new(Semaphore::new(room)),
                running: AtomicU32::new(0),
                most: AtomicU32::new(0),
                ran: Mutex::default(),
            })
        }

        fn ran(&self) -> Vec<String> {
            self.ran.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl Invoke for Engine {
        async fn invoke(&self, request: InvokeRequest) -> Result<InvokeResponse> {
            let admission = self.admit(&request.function, None, Duration::ZERO).await?;
            self.invoke_admitted(request, admission).await
        }

        async fn resolve(&self, _: &str, _: Option<&str>) -> Result<String> {
            Ok(LATEST.into())
        }

        async fn admit(&self, _: &str, _: Option<&str>, patience: Duration) -> Result<Admission> {
            match tokio::time::timeout(patience, self.room.clone().acquire_owned()).await {
                Ok(Ok(place)) => Ok(Admission::holding(place)),
                _ => Err(Error::throttled(
                    ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded,
                )),
            }
        }

        async fn invoke_admitted(
            &self,
            request: InvokeRequest,
            admission: Admission,
        ) -> Result<InvokeResponse> {
            let place = admission.into_place::<OwnedSemaphorePermit>();
            assert!(
                place.is_some(),
                "every event runs in a place it was admitted to"
            );
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.ran.lock().unwrap().push(request.request_id);
            Ok(InvokeResponse {
                executed_version: LATEST.into(),
                payload: Bytes::from_static(b"{}"),
                function_error: None,
                log_tail: None,
            })
        }
    }

    struct NoBrokers;

    #[async_trait]
    impl Publish for NoBrokers {
        async fn redis_stream(
            &self,
            _: &str,
            _: &str,
            _: &[u8],
            _: &[(&str, &str)],
        ) -> std::result::Result<(), String> {
            Err("no brokers here".into())
        }
    }

    async fn start(queues: Arc<dyn QueueStore>, engine: Arc<Engine>) -> Arc<AsyncInvoker> {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let account = Account {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        };
        let settings = AsyncSettings {
            max_depth: 1000,
            concurrency: 10,
            retry_interval: Duration::from_secs(1),
        };
        AsyncInvoker::start(
            queues,
            engine,
            store,
            Arc::new(NoBrokers),
            account,
            settings,
        )
        .await
        .unwrap()
    }

    fn event(function: &str, id: String) -> InvokeRequest {
        InvokeRequest {
            function: function.into(),
            qualifier: None,
            payload: Bytes::from_static(b"{}"),
            request_id: id,
            client_context: None,
            tail: false,
            stream: None,
        }
    }

    async fn until(what: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !what() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("in time");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_run_as_admission_allows_one_at_a_time() {
        let queues: Arc<dyn QueueStore> = Arc::new(SqliteQueues::in_memory().unwrap());
        let engine = Engine::new(1);
        let events = start(queues, engine.clone()).await;
        for n in 0..10 {
            events.enqueue(event("f", format!("r{n}"))).await.unwrap();
        }
        until(|| engine.ran().len() == 10).await;
        assert_eq!(engine.most.load(Ordering::SeqCst), 1);
        let wanted: Vec<String> = (0..10).map(|n| format!("r{n}")).collect();
        assert_eq!(engine.ran(), wanted, "oldest first");
        until(|| events.metrics().succeeded == 10).await;
        let metrics = events.metrics();
        assert_eq!(
            (metrics.attempts, metrics.failed),
            (10, 0),
            "no event backed off"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_of_an_earlier_servers_single_queue_move_to_their_functions() {
        let queues: Arc<dyn QueueStore> = Arc::new(SqliteQueues::in_memory().unwrap());
        queues
            .create_queue(EVENT_QUEUE, QueueSettings::new(0))
            .await
            .unwrap();
        let envelope = Envelope {
            function: "f".into(),
            qualifier: None,
            request_id: "from-before".into(),
            accepted_ms: now_ms(),
            errors: 0,
            invokes: 0,
            backoffs: 0,
            last_error: None,
            chain: 0,
        };
        let message = NewMessage {
            body: b"{}".to_vec(),
            attributes: serde_json::to_string(&envelope).unwrap(),
            delay: Some(0),
        };
        queues
            .send(EVENT_QUEUE, vec![message], now_ms())
            .await
            .unwrap();
        let engine = Engine::new(1);
        let _events = start(queues.clone(), engine.clone()).await;
        until(|| engine.ran() == ["from-before"]).await;
        for _ in 0..200 {
            if queues.queue(EVENT_QUEUE).await.unwrap().is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the earlier servers' queue is still there");
    }

    #[test]
    fn error_messages_come_from_the_error_payload() {
        assert_eq!(
            error_message(br#"{"errorMessage":"boom","errorType":"E"}"#),
            "boom"
        );
        assert_eq!(error_message(b"plain"), "plain");
        assert_eq!(truncate("h\u{e9}llo", 2), "h");
        assert_eq!(truncate("hello", 10), "hello");
    }
}
