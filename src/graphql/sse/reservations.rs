//! Single-connection mode: reservations, the operations behind each, and the one stream that
//! carries their results.
//!
//! A reservation (`PUT`) is a task (its *pump*) that owns the reservation's operations, and an
//! outbox that the pump fills and the attached stream empties. Because the operations belong to
//! the reservation and not to the stream, they run before the stream opens (results wait in the
//! outbox, as the protocol asks) and survive the stream dropping: for `SSE_RESERVATION_TTL` the
//! reservation waits, results keep arriving, and the outbox keeps the events already written to
//! the lost stream. A stream that reattaches with `Last-Event-ID` first gets, in the order they
//! were first written, the events written after that one, then everything new: no gap, no
//! duplicate. Past the grace period the reservation and its operations end.
//!
//! The outbox is bounded like every queue here: more than `SUBSCRIBER_QUEUE` events waiting for
//! a stream marks the reservation slow (`slow_consumer`), and its operations end with a final
//! `next` whose error is `SLOW_CONSUMER`. It keeps the last `SUBSCRIBER_QUEUE` events written, for
//! resuming; a `Last-Event-ID` older than those ends the operations with `CURSOR_EXPIRED`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use axum::body::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::protocol;
use super::stream::{SLOW_CONSUMER, STALLED_STREAM_GRACE, Source, ending_errors};
use crate::connections::Permit;
use crate::events::slow_consumer::SlowConsumer;
use crate::graphql::error::code;
use crate::graphql::operations::{Channel, Json, Operations, Output, Runner, Start};
use crate::lock;

/// Every reservation on this node, by token, and what their pumps run with; cheap to clone.
#[derive(Clone)]
pub struct Reservations {
    by_token: Arc<Mutex<HashMap<Arc<str>, Arc<Reservation>>>>,
    pumps: Arc<Pumps>,
}

/// What every reservation's pump runs with.
struct Pumps {
    runner: Runner,
    /// `SUBSCRIBER_QUEUE`: the outbox's bound.
    queue: usize,
    /// `SSE_RESERVATION_TTL`: how long a reservation waits for a stream.
    ttl: std::time::Duration,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// Who made a reservation: every later request on it must come from the same user (or be
/// anonymous too), else it is answered as if there were no reservation.
pub type Owner = Option<String>;

pub struct Reservation {
    token: Arc<str>,
    owner: Owner,
    commands: mpsc::UnboundedSender<Command>,
    outbox: Mutex<Outbox>,
    /// Wakes the pump when a stream attaches, detaches or drains the outbox.
    changed: Notify,
    /// Cancelled when the reservation ends (what a stream's connection watches, see `attach`).
    ended: CancellationToken,
}

enum Command {
    Start {
        id: Arc<str>,
        operation: Start,
        reply: oneshot::Sender<Started>,
    },
    Stop {
        id: Arc<str>,
    },
    /// A stream reattached with a `Last-Event-ID` the outbox no longer holds.
    ResumeLost,
}

/// What became of an operation `POST`ed to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    Accepted,
    /// An operation with that id is running (`409`).
    Duplicate,
    /// The reservation ended meanwhile (`404`).
    Gone,
}

/// Why a stream could not attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// A stream is attached (`409`).
    Busy,
    Gone,
}

struct Frame {
    /// The log position of the event behind a subscription's `next`; 0 for anything else.
    position: u64,
    bytes: Bytes,
}

#[derive(Default)]
struct Outbox {
    /// Not written to any stream yet.
    pending: VecDeque<Frame>,
    /// Written to a stream, kept for a stream that resumes.
    sent: VecDeque<Frame>,
    /// Whether `sent` ever dropped an event.
    evicted: bool,
    capacity: usize,
    /// The attached stream, by generation (a stream that takes over ends the one before).
    stream: Option<u64>,
    generations: u64,
    waker: Option<Waker>,
    /// Since when no stream is attached.
    detached_at: Option<Instant>,
    /// The operations have ended: the stream ends once `pending` is written.
    closing: bool,
    /// The reservation is gone: the stream ends now.
    gone: bool,
}

impl Outbox {
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Puts back in `pending`, ahead of what is there, the events written after the one at
    /// `last` (all of them without `last`). False when the outbox no longer knows what followed.
    fn rewind(&mut self, last: Option<u64>) -> bool {
        let from = match last {
            None => 0,
            Some(position) => match self.sent.iter().rposition(|f| f.position == position) {
                Some(at) => at + 1,
                None if !self.evicted => 0,
                None => return false,
            },
        };
        for frame in self.sent.drain(from..).rev() {
            self.pending.push_front(frame);
        }
        true
    }
}

impl Reservations {
    /// No reservations yet; their operations will run with `runner`, their outboxes hold at most
    /// `queue` events, and a reservation without a stream lasts `ttl`.
    pub fn new(
        runner: Runner,
        queue: usize,
        ttl: std::time::Duration,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        let pumps = Arc::new(Pumps { runner, queue, ttl, shutdown, tracker });
        Self { by_token: Default::default(), pumps }
    }

    /// Makes a reservation for `owner`, admitted with `permit`, whose operations end when
    /// `expires` (the owner's token) passes. Returns its token.
    pub fn create(&self, owner: Owner, permit: Permit, expires: Option<Instant>) -> Arc<str> {
        let token: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let (commands, receiver) = mpsc::unbounded_channel();
        let outbox =
            Outbox { capacity: self.pumps.queue.max(1), detached_at: Some(Instant::now()), ..Outbox::default() };
        let reservation = Arc::new(Reservation {
            token: token.clone(),
            owner,
            commands,
            outbox: Mutex::new(outbox),
            changed: Notify::new(),
            ended: CancellationToken::new(),
        });
        lock::lock(&self.by_token).insert(token.clone(), reservation.clone());
        metrics::gauge!("switchboard_sse_reservations").increment(1.0);
        self.pumps.tracker.spawn(pump(self.clone(), reservation, receiver, permit, expires));
        token
    }

    pub fn exists(&self, token: &str) -> bool {
        lock::lock(&self.by_token).contains_key(token)
    }

    /// The reservation `token` names, if `owner` made it.
    pub fn find(&self, token: &str, owner: &Owner) -> Option<Arc<Reservation>> {
        lock::lock(&self.by_token).get(token).filter(|r| &r.owner == owner).cloned()
    }

    pub fn len(&self) -> usize {
        lock::lock(&self.by_token).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&self, reservation: &Arc<Reservation>) {
        let mut by_token = lock::lock(&self.by_token);
        if by_token.get(&reservation.token).is_some_and(|r| Arc::ptr_eq(r, reservation)) {
            by_token.remove(&reservation.token);
            metrics::gauge!("switchboard_sse_reservations").decrement(1.0);
        }
    }
}

impl Reservation {
    /// Hands an operation to the pump.
    pub async fn start(&self, id: Arc<str>, operation: Start) -> Started {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Start { id, operation, reply }).is_err() {
            return Started::Gone;
        }
        answer.await.unwrap_or(Started::Gone)
    }

    /// Ready once the reservation has ended.
    pub fn ended(&self) -> impl Future<Output = ()> + Send + 'static {
        self.ended.clone().cancelled_owned()
    }

    pub fn stop(&self, id: Arc<str>) {
        let _ = self.commands.send(Command::Stop { id });
    }

    /// Attaches the reservation's one stream. With `last_event_id` (a resume), it takes over from
    /// a stream still attached (whose client is gone, though the server may not know it yet)
    /// and starts with the events written after that one; without, a second stream is refused.
    pub fn attach(self: &Arc<Self>, last_event_id: Option<u64>, resuming: bool) -> Result<Attached, AttachError> {
        let mut outbox = lock::lock(&self.outbox);
        if outbox.gone {
            return Err(AttachError::Gone);
        }
        if outbox.stream.is_some() && !resuming {
            return Err(AttachError::Busy);
        }
        if !outbox.rewind(last_event_id) {
            let _ = self.commands.send(Command::ResumeLost);
        }
        outbox.generations += 1;
        let generation = outbox.generations;
        outbox.stream = Some(generation);
        outbox.detached_at = None;
        outbox.wake(); // a stream taken over ends
        drop(outbox);
        self.changed.notify_one();
        Ok(Attached { reservation: self.clone(), generation })
    }

    fn push(&self, frame: Frame, consumer: &SlowConsumer, bounded: bool) {
        let mut outbox = lock::lock(&self.outbox);
        if bounded && outbox.pending.len() >= outbox.capacity {
            drop(outbox);
            consumer.mark_slow();
            return;
        }
        outbox.pending.push_back(frame);
        outbox.wake();
    }

    /// When the grace period of a detached reservation ends.
    fn grace_ends(&self, ttl: std::time::Duration) -> Option<Instant> {
        lock::lock(&self.outbox).detached_at.map(|at| at + ttl)
    }

    /// Whether the stream has written everything the closing operations left.
    fn drained(&self) -> bool {
        let outbox = lock::lock(&self.outbox);
        outbox.stream.is_some() && outbox.pending.is_empty()
    }
}

/// The source of the stream attached to a reservation.
pub struct Attached {
    reservation: Arc<Reservation>,
    generation: u64,
}

impl Source for Attached {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut outbox = lock::lock(&self.reservation.outbox);
        if outbox.gone || outbox.stream != Some(self.generation) {
            return Poll::Ready(None);
        }
        if let Some(frame) = outbox.pending.pop_front() {
            let bytes = frame.bytes.clone();
            outbox.sent.push_back(frame);
            if outbox.sent.len() > outbox.capacity {
                outbox.sent.pop_front();
                outbox.evicted = true;
            }
            if outbox.closing && outbox.pending.is_empty() {
                self.reservation.changed.notify_one();
            }
            return Poll::Ready(Some(bytes));
        }
        if outbox.closing {
            return Poll::Ready(None);
        }
        outbox.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let mut outbox = lock::lock(&self.reservation.outbox);
        if outbox.stream == Some(self.generation) {
            outbox.stream = None;
            outbox.waker = None;
            outbox.detached_at = Some(Instant::now());
            drop(outbox);
            self.reservation.changed.notify_one();
        }
    }
}

/// Why the operations of a reservation ended early.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Slow,
    Expired,
    ResumeLost,
}

enum Step {
    Command(Command),
    Output(Output),
}

/// The reservation's task: runs its operations and fills its outbox until the reservation ends
/// (shutdown, its grace period passed without a stream, or its operations ended early and the
/// stream has written what they left).
async fn pump(
    reservations: Reservations,
    reservation: Arc<Reservation>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    _permit: Permit,
    expires: Option<Instant>,
) {
    let pumps = reservations.pumps.clone();
    let consumer = SlowConsumer::new();
    let mut operations = Operations::new(pumps.runner.clone(), Channel::Sse, consumer.clone());
    let ttl = pumps.ttl;
    let far = || Instant::now() + std::time::Duration::from_secs(86_400 * 365);
    let ending = loop {
        let grace_ends = reservation.grace_ends(ttl);
        let step = tokio::select! {
            () = pumps.shutdown.cancelled() => break None,
            () = consumer.slow() => break Some(Ending::Slow),
            () = tokio::time::sleep_until(expires.unwrap_or_else(far)) => break Some(Ending::Expired),
            () = tokio::time::sleep_until(grace_ends.unwrap_or_else(far)) => {
                if reservation.grace_ends(ttl).is_some_and(|at| at <= Instant::now()) { break None }
                continue;
            }
            () = reservation.changed.notified() => continue,
            step = std::future::poll_fn(|cx| {
                if let Poll::Ready(Some(command)) = commands.poll_recv(cx) {
                    return Poll::Ready(Step::Command(command));
                }
                operations.poll_next(cx).map(Step::Output)
            }) => step,
        };
        match step {
            Step::Command(Command::Start { id, operation, reply }) => {
                if operations.contains(&id) {
                    let _ = reply.send(Started::Duplicate);
                    continue;
                }
                let _ = reply.send(Started::Accepted);
                // Past the operation limit the runner refuses it, as the `next` the protocol
                // sends refusals in.
                operations.start(id, operation).await;
            }
            Step::Command(Command::Stop { id }) => {
                operations.stop(&id);
            }
            Step::Command(Command::ResumeLost) => break Some(Ending::ResumeLost),
            Step::Output(output) => {
                for frame in frames(&operations, output) {
                    reservation.push(frame, &consumer, true);
                }
            }
        }
    };
    if let Some(ending) = ending {
        let (code, complete) = match ending {
            Ending::Slow => (SLOW_CONSUMER, false),
            Ending::Expired => (code::UNAUTHENTICATED, true),
            Ending::ResumeLost => (code::CURSOR_EXPIRED, true),
        };
        let errors = Json::errors(ending_errors(code));
        for id in operations.ids() {
            let id_json = serde_json::to_string(&*id).expect("strings serialise");
            let next = protocol::next(None, Some(&id_json), errors.as_str());
            reservation.push(Frame { position: 0, bytes: next }, &consumer, false);
            if complete {
                reservation.push(Frame { position: 0, bytes: protocol::complete(Some(&id_json)) }, &consumer, false);
            }
        }
        drop(operations);
        lock::lock(&reservation.outbox).closing = true;
        reservation.changed.notify_one();
        // What the operations left reaches a stream that is, or comes back, within the grace; a
        // stream attached meanwhile has a few seconds to write it (one that reads nothing at all,
        // which is what made it slow, would otherwise hold the reservation and its place forever).
        let attached_grace = Instant::now() + STALLED_STREAM_GRACE;
        loop {
            let grace_ends = reservation.grace_ends(ttl).unwrap_or(attached_grace);
            if reservation.drained() || grace_ends <= Instant::now() {
                break;
            }
            tokio::select! {
                () = pumps.shutdown.cancelled() => break,
                () = tokio::time::sleep_until(grace_ends) => {}
                () = reservation.changed.notified() => {}
            }
        }
    }
    reservation.ended.cancel();
    reservations.remove(&reservation);
    let mut outbox = lock::lock(&reservation.outbox);
    outbox.gone = true;
    outbox.wake();
}

/// The outbox frames of an operation's output: one, or for a refusal its `next` and `complete`.
fn frames(operations: &Operations, output: Output) -> Vec<Frame> {
    match output {
        Output::Next { id, result, position } => {
            let id_json = serde_json::to_string(&*id).expect("strings serialise");
            let cursor = (position > 0).then(|| operations.runner().cursor(position));
            let bytes = protocol::next(cursor.as_deref(), Some(&id_json), result.as_str());
            vec![Frame { position, bytes }]
        }
        Output::Refused { id, errors } => {
            let id_json = serde_json::to_string(&*id).expect("strings serialise");
            let next = protocol::next(None, Some(&id_json), Json::errors(errors).as_str());
            vec![Frame { position: 0, bytes: next }, Frame { position: 0, bytes: protocol::complete(Some(&id_json)) }]
        }
        Output::Complete { id } => {
            let id_json = serde_json::to_string(&*id).expect("strings serialise");
            vec![Frame { position: 0, bytes: protocol::complete(Some(&id_json)) }]
        }
    }
}
