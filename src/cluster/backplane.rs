//! The event backplane: every node's committed changes reach every other node's subscribers, in
//! commit order, nothing missing, nothing twice, with Redis carrying each event once per publish.
//!
//! - A node publishes each change it commits to one Redis channel, `switchboard:<epoch>:events`
//!   (the epoch names the store's event log, so clusters on different stores never hear each
//!   other), with one `PUBLISH`: one round trip, whatever the number of subscribers anywhere.
//! - Every node subscribes to that channel and feeds what arrives, and its own commits, to one
//!   [`Sequencer`], which hands events to the local broker strictly by log position. The local
//!   broker routes by key as before, so a node's clients see only what they asked for.
//! - Redis pub/sub is at-most-once. A hole in the positions that does not fill within
//!   [`GAP_WAIT`] is read from the log; a log head ahead of what was delivered (a publisher that
//!   died between commit and publish, or messages lost while Redis was away) is read from the log
//!   every [`HEAD_CHECK`]; so nothing stored is ever lost to a subscriber.
//! - A connection that is up but deaf is found by a probe: the node publishes a probe to the same
//!   channel every [`PROBE_EVERY`] and expects to hear it back within [`PROBE_DEADLINE`]; if not,
//!   the subscription is dropped and made again, and the backplane counts as down meanwhile.
//!
//! Why one channel rather than one per key: a node would subscribe to a channel per order,
//! product and user its clients watch (tens of thousands of `SUBSCRIBE`s to keep in step), and an
//! order event would be published to three channels (its order, all orders, its customer). One
//! channel costs each node the events nobody on it watches: a wake-up, a JSON decode and a map
//! lookup per event, about 50 µs of CPU at a few hundred events/s (mostly the wake-up) and 6-7 µs
//! at 20,000/s, when one wake-up serves many (BENCHMARKS.md, "Several nodes"); and it lets the
//! global position expose every lost message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::presence::{self, Heard, Keys};
use super::sequencer::Sequencer;
use crate::connections::Connections;
use crate::events::log::EventLog;
use crate::events::{Broker, Event};
use crate::rooms::Rooms;

/// How long a hole in the positions may wait for the missing event to arrive through Redis
/// before it is read from the log. Redis delivers within a millisecond on a healthy network.
pub const GAP_WAIT: Duration = Duration::from_millis(50);
/// How often the log's head is compared with what was delivered.
pub const HEAD_CHECK: Duration = Duration::from_secs(1);
/// How often a node probes its own subscription.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a probe may take to come back before the subscription counts as deaf.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(3);
/// Events waiting to be published to Redis; past it they are left to the log (other nodes read
/// them from there), so that a slow or absent Redis never holds up a write.
const PUBLISH_QUEUE: usize = 10_000;

/// What travels on the channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Message {
    Event { node: String, event: Arc<Event> },
    Probe { node: String, n: u64 },
}

/// A node's handle on the backplane; cheap to clone.
#[derive(Clone, Debug)]
pub struct Backplane {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: String,
    /// The sequencer's input: this node's commits and what Redis brings.
    input: mpsc::UnboundedSender<Arc<Event>>,
    /// Events to publish to Redis.
    outbox: mpsc::Sender<Arc<Event>>,
    up: AtomicBool,
}

impl Backplane {
    /// Starts the backplane's tasks for this node: the sequencer, the publisher, the subscriber
    /// (events and presence share one subscription and its probe) and the presence replica.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        redis_url: &str,
        node: String,
        log: EventLog,
        broker: Broker,
        rooms: Rooms,
        connections: Connections,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, BackplaneError> {
        let client = redis::Client::open(redis_url).map_err(BackplaneError::Url)?;
        let channel = format!("switchboard:{}:events", log.epoch());
        let head = log.head().await?;
        let (input, inputs) = mpsc::unbounded_channel();
        let (outbox, outgoing) = mpsc::channel(PUBLISH_QUEUE);
        let inner = Arc::new(Inner { node, input, outbox, up: AtomicBool::new(false) });
        metrics::gauge!("switchboard_backplane_up").set(0.0);
        let commands = ConnectionManager::new_lazy_with_config(
            client.clone(),
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)))
                .set_number_of_retries(1),
        )
        .map_err(BackplaneError::Url)?;
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let (heard_tx, heard_rx) = mpsc::unbounded_channel();
        let presence_keys = Keys::new(log.epoch());
        let presence_channel = presence_keys.channel.clone();
        let span = tracing::info_span!("backplane", node = %inner.node);
        tracker.spawn(
            presence::run(
                commands.clone(),
                presence_keys,
                inner.node.clone(),
                rooms,
                connections,
                broker.clone(),
                heard_rx,
                shutdown.clone(),
            )
            .instrument(span.clone()),
        );
        tracker.spawn(sequence(Sequencer::new(head), inputs, log, broker, shutdown.clone()).instrument(span.clone()));
        tracker.spawn(
            publish(commands, channel.clone(), inner.node.clone(), outgoing, probe_rx, shutdown.clone())
                .instrument(span.clone()),
        );
        let channels = Channels { events: channel, presence: presence_channel };
        tracker.spawn(subscribe(client, channels, inner.clone(), probe_tx, heard_tx, shutdown).instrument(span));
        Ok(Self { inner })
    }

    /// Hands a change this node committed to the local subscribers and to the other nodes.
    /// Called in commit order (under the writer lock); never waits.
    pub fn publish(&self, event: Event) {
        let event = Arc::new(event);
        if self.inner.outbox.try_send(event.clone()).is_err() {
            // Redis is slow or away: the other nodes will read this one from the log.
            metrics::counter!("switchboard_backplane_publish_skipped_total").increment(1);
        }
        let _ = self.inner.input.send(event);
    }

    /// Whether the subscription to the channel is live (its last probe came back in time).
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackplaneError {
    #[error("REDIS_URL is not a Redis URL: {0}")]
    Url(redis::RedisError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Delivers events to the local broker in position order, filling holes from the log.
async fn sequence(
    mut sequencer: Sequencer,
    mut inputs: mpsc::UnboundedReceiver<Arc<Event>>,
    log: EventLog,
    broker: Broker,
    shutdown: CancellationToken,
) {
    // When the current hole stops waiting for Redis and is read from the log.
    let mut gap_deadline: Option<Instant> = None;
    let mut next_head_check = Instant::now() + HEAD_CHECK;
    loop {
        let wake = gap_deadline.map_or(next_head_check, |gap| gap.min(next_head_check));
        tokio::select! {
            () = shutdown.cancelled() => return,
            event = inputs.recv() => {
                let Some(event) = event else { return };
                deliver(&broker, sequencer.offer(event));
            }
            () = sleep_until(wake) => {
                let now = Instant::now();
                if gap_deadline.is_some_and(|gap| now >= gap) {
                    let gap = sequencer.gap();
                    catch_up(&mut sequencer, &log, &broker, gap).await;
                    gap_deadline = None;
                }
                if now >= next_head_check {
                    next_head_check = now + HEAD_CHECK;
                    catch_up(&mut sequencer, &log, &broker, None).await;
                }
            }
        }
        // A hole starts its wait when it appears (or when a read left it open), and stops waiting
        // when it fills.
        gap_deadline = sequencer.gap().map(|_| gap_deadline.unwrap_or_else(|| Instant::now() + GAP_WAIT));
        metrics::gauge!("switchboard_backplane_waiting").set(sequencer.waiting() as f64);
    }
}

fn deliver(broker: &Broker, events: Vec<Arc<Event>>) {
    for event in events {
        broker.publish_shared(event);
    }
}

/// Reads from the log what the sequencer misses: the hole `gap` if given, else everything up to
/// the log's head.
async fn catch_up(sequencer: &mut Sequencer, log: &EventLog, broker: &Broker, gap: Option<(u64, u64)>) {
    let (after, before) = match gap {
        Some(gap) => gap,
        None => match log.head().await {
            Ok(head) if head > sequencer.delivered_through() && sequencer.gap().is_none() => {
                (sequencer.delivered_through(), head + 1)
            }
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "backplane: cannot read the event log's head");
                return;
            }
        },
    };
    tracing::trace!(after, before, waiting = sequencer.waiting(), "backplane: reading the log");
    match log.read_range(after, before).await {
        Ok(missed) => {
            let found = missed.len();
            if found > 0 {
                metrics::counter!("switchboard_backplane_repaired_total").increment(found as u64);
                tracing::debug!(after, before, found, "backplane: events read from the log");
            }
            for event in missed {
                deliver(broker, sequencer.offer(Arc::new(event)));
            }
            // Whatever is still missing below `before` is no longer in the log (retention).
            if gap.is_some() && sequencer.gap().is_some_and(|(a, b)| a == after && b == before) {
                match log.pruned_through().await {
                    Ok(pruned) if pruned > after => {
                        tracing::warn!(through = pruned, "backplane: events were pruned before this node got them");
                        deliver(broker, sequencer.skip_to(pruned.min(before - 1)));
                    }
                    _ => {}
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, after, before, "backplane: cannot read missed events from the log"),
    }
}

/// Publishes this node's events (and its probes) to the channel.
async fn publish(
    mut redis: ConnectionManager,
    channel: String,
    node: String,
    mut outgoing: mpsc::Receiver<Arc<Event>>,
    mut probes: mpsc::UnboundedReceiver<u64>,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return,
            event = outgoing.recv() => match event {
                Some(event) => Message::Event { node: node.clone(), event },
                None => return,
            },
            n = probes.recv() => match n {
                Some(n) => Message::Probe { node: node.clone(), n },
                None => return,
            },
        };
        let payload = serde_json::to_string(&message).expect("messages serialise");
        let mut sent = redis.publish::<_, _, i64>(&channel, &payload).await;
        if sent.as_ref().is_err_and(|e| e.is_io_error()) {
            // The manager reconnects after an I/O error (a Redis that restarted): try once more.
            sent = redis.publish::<_, _, i64>(&channel, &payload).await;
        }
        match sent {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("backplane: publishing to Redis again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "backplane: cannot publish to Redis; other nodes will read the log");
            }
            Err(_) => {}
        }
    }
}

struct Channels {
    events: String,
    presence: String,
}

/// Keeps a subscription to the events and presence channels, probing it, and feeds what arrives
/// to the sequencer and the presence replica.
async fn subscribe(
    client: redis::Client,
    channels: Channels,
    inner: Arc<Inner>,
    probes: mpsc::UnboundedSender<u64>,
    heard: mpsc::UnboundedSender<Heard>,
    shutdown: CancellationToken,
) {
    let channel = &channels.events;
    let mut backoff = Duration::from_millis(50);
    let mut probe_n = 0u64;
    loop {
        let session = async {
            let mut pubsub = tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub())
                .await
                .map_err(|_| "timed out connecting".to_owned())?
                .map_err(|e| e.to_string())?;
            pubsub.subscribe(&[channel, &channels.presence]).await.map_err(|e| e.to_string())?;
            let mut messages = pubsub.on_message();
            let mut next_probe = Instant::now();
            let mut awaited: Option<(u64, Instant)> = None;
            loop {
                let probe_due = awaited.map_or(next_probe, |(_, deadline)| deadline.min(next_probe));
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = sleep_until(probe_due) => {
                        let now = Instant::now();
                        if awaited.is_some_and(|(_, deadline)| now >= deadline) {
                            return Err("deaf: a probe did not come back".to_owned());
                        }
                        if now >= next_probe {
                            next_probe = now + PROBE_EVERY;
                            if awaited.is_none() {
                                probe_n += 1;
                                awaited = Some((probe_n, now + PROBE_DEADLINE));
                                let _ = probes.send(probe_n);
                            }
                        }
                    }
                    message = messages.next() => {
                        let Some(message) = message else { return Err("the connection closed".to_owned()) };
                        if message.get_channel_name() == channels.presence {
                            match serde_json::from_slice::<presence::Message>(message.get_payload_bytes()) {
                                Ok(m) => {
                                    let _ = heard.send(Heard::Message(m));
                                }
                                Err(e) => tracing::warn!(error = %e, "cluster: a presence message that is not ours"),
                            }
                            continue;
                        }
                        match serde_json::from_slice::<Message>(message.get_payload_bytes()) {
                            Ok(Message::Event { event, .. }) => {
                                let _ = inner.input.send(event);
                            }
                            Ok(Message::Probe { node, n }) if node == inner.node => {
                                if awaited.is_some_and(|(m, _)| m == n) {
                                    awaited = None;
                                    if !inner.up.swap(true, Ordering::Relaxed) {
                                        tracing::info!("backplane up: subscribed to {channel}");
                                        metrics::gauge!("switchboard_backplane_up").set(1.0);
                                        // Presence messages may have been missed meanwhile.
                                        let _ = heard.send(Heard::Resubscribed);
                                    }
                                }
                            }
                            Ok(Message::Probe { .. }) => {}
                            Err(e) => tracing::warn!(error = %e, "backplane: a message that is not ours"),
                        }
                    }
                }
            }
        };
        let result: Result<(), String> = session.await;
        let was_up = inner.up.swap(false, Ordering::Relaxed);
        if was_up {
            metrics::gauge!("switchboard_backplane_up").set(0.0);
            let reason = result.as_ref().err().map_or("shutdown", String::as_str);
            tracing::warn!(
                reason,
                "backplane down: serving this node's own events; the log fills in when Redis is back"
            );
        } else if let Err(reason) = &result {
            tracing::debug!(reason, "backplane: still down");
        }
        if shutdown.is_cancelled() {
            return;
        }
        // A session that was up starts the backoff afresh; repeated failures back off to 2 s.
        backoff = if was_up { Duration::from_millis(100) } else { (backoff * 2).min(Duration::from_secs(2)) };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
    }
}
