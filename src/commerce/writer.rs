//! The node's one writer: every change waits in one queue, and one task takes all that wait, runs
//! them in one transaction and commits once (a group commit: one flush to disk for the batch).
//!
//! **Batches.** The writer takes the first change that waits and every other one already
//! waiting, up to `WRITE_BATCH_MAX`, and commits them together. So a lone change commits at once,
//! and under load each flush serves as many changes as arrived while the previous one was on its
//! way to disk. With `WRITE_BATCH_WINDOW` set, a batch also takes changes that arrive while it
//! runs, for that long from its start (fewer commits, a longer wait for its first changes; off by
//! default: at a steady rate it saved no CPU per change and made the p99 worse). A batch, `COMMIT`
//! included, may hold its connection at most `WRITE_BATCH_TIMEOUT` (on PostgreSQL every statement
//! is also stopped by the store after that long); past it the batch fails as a whole.
//!
//! **One statement per change.** Most changes are one statement ([`Change::statement`]); the
//! statements of consecutive changes run together ([`WriteBatch::run_all`]: on PostgreSQL in one
//! round trip), then each change turns its rows into its output and events ([`Change::finish`]).
//!
//! **One change alone.** A change that is *refused* (not found, bad input, stock below zero)
//! decides so before it writes, or with a statement whose guard wrote nothing, so the batch goes
//! on without it and only its caller hears of it. A change that *fails* after it may have written
//! (it broke a constraint, or its code panicked) rolls the whole batch back, and the batch runs
//! again without it: its caller gets its error, nobody else notices. That is what a savepoint per
//! change would give, without its cost on every change: two more statements each (on SQLite two
//! more hand-offs to the worker thread), and on PostgreSQL a subtransaction each, which past 64 in
//! one transaction slow down every other session's snapshots (the subtransaction cache overflows).
//! An error of the store itself (a full disk, a lost connection, a timeout) fails the whole
//! batch: no change would survive it, and blaming one of them would be wrong.
//!
//! **Commit order.** Events are published only after `COMMIT` succeeds, in the batch's order
//! (which is the log's), and only then are callers answered; a caller never hears "done" before
//! its change is durable (on PostgreSQL the flush is waited for after the log's lock is released,
//! see `store/batch.rs`, and the batch's positions are noted as on disk for the log's readers,
//! [`EventLog::on_disk`]). A failed `COMMIT` fails every change of the batch: none is answered as
//! done, none published. The connection whose `COMMIT` failed is closed (see `store/tx.rs`), and
//! the next batch starts afresh, reading the log's head again: the node recovers by itself.
//!
//! **Callers that leave.** A change handed to the writer is made whether or not its caller still
//! waits (hyper drops a request's future when its client goes away): stored and published, or
//! refused. At shutdown the writer stops taking new changes, makes those it has, and ends.
//!
//! **One connection, one function.** A batch takes the writer's connection from its pool of one
//! ([`Store::writer_pool`]), uses it and gives it back within one call of the task's `batch`, in
//! this one task, never held by a future that might not be polled.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::CommerceError;
use crate::cluster::Backplane;
use crate::events::event::Stamp;
use crate::events::log::EventLog;
use crate::events::{Broker, Event, EventBody};
use crate::store::batch::{self, Changed, Statement, WriteBatch};
use crate::store::{Store, StoreError};

/// How the writer makes its batches (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// The most changes one batch holds.
    pub max_changes: usize,
    /// How long a batch keeps taking changes that arrive while it runs.
    pub window: Duration,
    /// The longest a batch may hold its connection, `COMMIT` included.
    pub timeout: Duration,
}

impl Default for WriterSettings {
    fn default() -> Self {
        Self { max_changes: 256, window: Duration::ZERO, timeout: Duration::from_secs(5) }
    }
}

/// A change the writer makes, inside a batch. It may run more than once (when another change of
/// its batch fails, the batch runs again without that one), so it keeps no state between runs.
///
/// Most changes are one [`Statement`] ([`Change::statement`]) whose rows [`Change::finish`] turns
/// into the output and the events: the writer then sends the statements of consecutive changes
/// together (on PostgreSQL in one round trip). A change that needs more implements
/// [`Change::apply`] instead, and runs with the batch to itself.
///
/// A change that refuses (`NotFound`, `BadInput`) must do so before it writes, or with a
/// statement that wrote nothing; any other error, and a panic, rolls its batch back.
pub trait Change: Send + Sync + 'static {
    type Output: Send + 'static;

    /// The change's one statement, if it is one.
    fn statement(&self) -> Option<Statement> {
        None
    }

    /// The output, and the events recorded in `tx`, from what [`Change::statement`] returned.
    fn finish(&self, _changed: &Changed, _tx: &mut ChangeTx<'_>) -> Result<Self::Output, CommerceError> {
        Err(CommerceError::Internal("a change without a statement was finished".into()))
    }

    /// Makes the change (by default: its statement, then [`Change::finish`]).
    fn apply<'a>(&'a self, tx: &'a mut ChangeTx<'_>) -> BoxFuture<'a, Result<Self::Output, CommerceError>> {
        Box::pin(async move {
            let statement =
                self.statement().ok_or_else(|| CommerceError::Internal("a change without a statement".into()))?;
            let changed = tx.batch().run(&statement).await?;
            self.finish(&changed, tx)
        })
    }
}

/// What a change runs with: the batch (for its statements) and the event log (for its events).
pub struct ChangeTx<'b> {
    batch: &'b mut WriteBatch,
    log: &'b EventLog,
    events: Vec<Event>,
}

impl ChangeTx<'_> {
    pub fn batch(&mut self) -> &mut WriteBatch {
        self.batch
    }

    /// Records the change's event on `topic`, with the sequence its statement took there (see
    /// [`EventLog::record`]); it is published once the batch has committed.
    pub fn record(&mut self, topic: String, seq: u64, body: impl FnOnce(Stamp) -> EventBody) -> Result<(), StoreError> {
        let event = self.log.record(self.batch, topic, seq, body)?;
        self.events.push(event);
        Ok(())
    }
}

/// What the writer has done, for this writer alone (the metrics are the process's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Batches committed.
    pub commits: u64,
    /// Batches that failed as a whole (their changes were all refused).
    pub failed: u64,
    /// Batches run again without a change that failed.
    pub restarts: u64,
    /// Statements sent to the store, `BEGIN` and `COMMIT` included.
    pub statements: u64,
    /// Round trips to the store (on PostgreSQL a batch's changes share one).
    pub round_trips: u64,
    /// Changes answered: done, refused or failed.
    pub changes: u64,
    /// The most changes one committed batch held.
    pub largest_batch: u64,
    /// Changes handed over and not taken into a batch yet.
    pub queued: usize,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    failed: AtomicU64,
    restarts: AtomicU64,
    statements: AtomicU64,
    round_trips: AtomicU64,
    changes: AtomicU64,
    largest_batch: AtomicU64,
}

/// Where committed events go: the backplane with several nodes (which hands them to the local
/// broker in the log's order, with the other nodes' events), else straight to the broker.
#[derive(Debug, Clone)]
pub(crate) enum Outlet {
    Broker(Broker),
    Backplane(Backplane),
}

impl Outlet {
    fn publish(&self, event: Event) {
        match self {
            Outlet::Broker(broker) => broker.publish(event),
            Outlet::Backplane(backplane) => backplane.publish(event),
        }
    }
}

/// The handle changes are submitted through; the task behind it runs until shutdown.
#[derive(Debug)]
pub(crate) struct Writer {
    queue: mpsc::Sender<Box<dyn Job>>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Starts the writer's task on `tracker`; it drains and ends when `shutdown` is cancelled.
    pub fn start(
        store: Store,
        log: EventLog,
        outlet: Outlet,
        settings: WriterSettings,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let settings = WriterSettings { max_changes: settings.max_changes.max(1), ..settings };
        // Room for a few batches' worth: past it, submitters wait for the writer (backpressure
        // on the requests, not memory without bound).
        let (queue, changes) = mpsc::channel(settings.max_changes.saturating_mul(4));
        let counters = Arc::new(Counters::default());
        let task = Task { store, log, outlet, settings, counters: counters.clone() };
        tracker.spawn(task.run(changes, shutdown).instrument(tracing::info_span!("writer")));
        Self { queue, counters }
    }

    /// Hands `change` to the writer and waits for its outcome. Once handed over, the change is
    /// made even if this future is dropped.
    pub async fn submit<C: Change>(&self, change: C) -> Result<C::Output, CommerceError> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending { change, output: None, reply });
        if self.queue.send(job).await.is_err() {
            return Err(CommerceError::Internal("the server is shutting down: the change was not made".into()));
        }
        answer.await.unwrap_or_else(|_| Err(CommerceError::Internal("the writer stopped before answering".into())))
    }

    pub fn stats(&self) -> WriterStats {
        let c = &self.counters;
        WriterStats {
            commits: c.commits.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            restarts: c.restarts.load(Ordering::Relaxed),
            statements: c.statements.load(Ordering::Relaxed),
            round_trips: c.round_trips.load(Ordering::Relaxed),
            changes: c.changes.load(Ordering::Relaxed),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
            queued: self.queue.max_capacity() - self.queue.capacity(),
        }
    }
}

/// A change with its caller's answer, its output type erased so that one queue takes them all.
trait Job: Send {
    fn statement(&self) -> Option<Statement>;
    fn finish(&mut self, changed: &Changed, tx: &mut ChangeTx<'_>) -> Result<(), CommerceError>;
    fn run<'a>(&'a mut self, tx: &'a mut ChangeTx<'_>) -> BoxFuture<'a, Result<(), CommerceError>>;
    fn answer(self: Box<Self>, outcome: Result<(), CommerceError>);
}

struct Pending<C: Change> {
    change: C,
    output: Option<C::Output>,
    reply: oneshot::Sender<Result<C::Output, CommerceError>>,
}

impl<C: Change> Job for Pending<C> {
    fn statement(&self) -> Option<Statement> {
        self.change.statement()
    }

    fn finish(&mut self, changed: &Changed, tx: &mut ChangeTx<'_>) -> Result<(), CommerceError> {
        self.output = Some(self.change.finish(changed, tx)?);
        Ok(())
    }

    fn run<'a>(&'a mut self, tx: &'a mut ChangeTx<'_>) -> BoxFuture<'a, Result<(), CommerceError>> {
        Box::pin(async move {
            self.output = Some(self.change.apply(tx).await?);
            Ok(())
        })
    }

    fn answer(self: Box<Self>, outcome: Result<(), CommerceError>) {
        let this = *self;
        let result = outcome.and_then(|()| {
            this.output.ok_or_else(|| CommerceError::Internal("a change finished without its result".into()))
        });
        // The caller may have gone away; the change is made all the same.
        let _ = this.reply.send(result);
    }
}

/// How one change of an attempt ended.
enum Outcome {
    Done(Vec<Event>),
    Refused(CommerceError),
}

/// Why an attempt at a batch stopped short of `COMMIT`, or at it.
enum Failure {
    /// The change at this index failed after it may have written: run the batch again without it.
    Change(usize, CommerceError),
    /// The store failed: every change of the batch fails.
    Store(StoreError),
    /// The batch held its connection longer than `WRITE_BATCH_TIMEOUT`.
    TimedOut,
}

struct Task {
    store: Store,
    log: EventLog,
    outlet: Outlet,
    settings: WriterSettings,
    counters: Arc<Counters>,
}

impl Task {
    async fn run(self, mut changes: mpsc::Receiver<Box<dyn Job>>, shutdown: CancellationToken) {
        let mut closing = false;
        loop {
            let first = if closing {
                changes.recv().await
            } else {
                tokio::select! {
                    job = changes.recv() => job,
                    () = shutdown.cancelled() => {
                        // Take no more; make what was handed over (`recv` still yields it).
                        changes.close();
                        closing = true;
                        continue;
                    }
                }
            };
            let Some(first) = first else { return };
            let mut jobs = vec![first];
            self.take_waiting(&mut changes, &mut jobs);
            self.batch(jobs, &mut changes).await;
        }
    }

    fn take_waiting(&self, changes: &mut mpsc::Receiver<Box<dyn Job>>, jobs: &mut Vec<Box<dyn Job>>) {
        while jobs.len() < self.settings.max_changes {
            match changes.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
    }

    /// Makes one batch of `jobs` (and of what arrives within the window), answering every one.
    async fn batch(&self, mut jobs: Vec<Box<dyn Job>>, changes: &mut mpsc::Receiver<Box<dyn Job>>) {
        let started = Instant::now();
        loop {
            let attempt = self.attempt(&mut jobs, changes, started);
            let failure = match tokio::time::timeout(self.settings.timeout, attempt).await {
                Ok(Ok(outcomes)) => return self.committed(jobs, outcomes),
                Ok(Err(failure)) => failure,
                Err(_) => Failure::TimedOut,
            };
            match failure {
                Failure::Change(at, error) => {
                    tracing::warn!(error = %error, batch = jobs.len(), "a change failed; its batch runs again without it");
                    self.counters.restarts.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("switchboard_writer_restarts_total").increment(1);
                    self.answer(jobs.remove(at), Err(error), "failed");
                    if jobs.is_empty() {
                        return;
                    }
                }
                Failure::Store(error) => {
                    let message = format!("the store could not commit the change: {error}");
                    return self.failed(jobs, &message, started);
                }
                Failure::TimedOut => {
                    let message = format!(
                        "the store did not answer within WRITE_BATCH_TIMEOUT ({} ms)",
                        self.settings.timeout.as_millis()
                    );
                    return self.failed(jobs, &message, started);
                }
            }
        }
    }

    /// One try at the batch: `BEGIN`, every change, `COMMIT`.
    async fn attempt(
        &self,
        jobs: &mut Vec<Box<dyn Job>>,
        changes: &mut mpsc::Receiver<Box<dyn Job>>,
        started: Instant,
    ) -> Result<Vec<Outcome>, Failure> {
        let mut batch = match WriteBatch::begin(&self.store, self.settings.timeout).await {
            Ok(batch) => batch,
            Err(error) => {
                self.count_sent((1, 1));
                return Err(Failure::Store(error));
            }
        };
        let mut outcomes = Vec::with_capacity(jobs.len());
        loop {
            let at = outcomes.len();
            if at == jobs.len() && started.elapsed() < self.settings.window {
                self.take_waiting(changes, jobs);
            }
            if at == jobs.len() {
                break;
            }
            // The statements of the changes from here up to the next one that is not one
            // statement go together (on PostgreSQL in one round trip).
            let statements: Vec<Statement> = jobs[at..].iter().map_while(|job| job.statement()).collect();
            if statements.is_empty() {
                let mut tx = ChangeTx { batch: &mut batch, log: &self.log, events: Vec::new() };
                let result = AssertUnwindSafe(jobs[at].run(&mut tx)).catch_unwind().await;
                let events = tx.events;
                match sort(at, result, events) {
                    Ok(outcome) => outcomes.push(outcome),
                    Err(failure) => return Err(self.give_up(batch, failure).await),
                }
                continue;
            }
            let results = match batch.run_all(&statements).await {
                Ok(results) => results,
                Err((failed, error)) => {
                    let failure = if batch::is_change_error(&error) {
                        Failure::Change(at + failed, CommerceError::Store(error))
                    } else {
                        Failure::Store(error)
                    };
                    return Err(self.give_up(batch, failure).await);
                }
            };
            for (i, changed) in results.iter().enumerate() {
                let mut tx = ChangeTx { batch: &mut batch, log: &self.log, events: Vec::new() };
                let job = &mut jobs[at + i];
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| job.finish(changed, &mut tx)));
                let events = tx.events;
                match sort(at + i, result, events) {
                    Ok(outcome) => outcomes.push(outcome),
                    Err(failure) => return Err(self.give_up(batch, failure).await),
                }
            }
        }
        self.count_sent(batch.sent_so_far());
        self.count_sent(batch.to_commit());
        let through = batch.last_position();
        batch.commit().await.map_err(Failure::Store)?;
        self.log.on_disk(through);
        Ok(outcomes)
    }

    /// Rolls the batch back (a change failed, or the store did) and says why.
    async fn give_up(&self, batch: WriteBatch, failure: Failure) -> Failure {
        self.count_sent(batch.sent_so_far());
        batch.rollback().await;
        failure
    }

    fn count_sent(&self, (statements, round_trips): (u64, u64)) {
        self.counters.statements.fetch_add(statements, Ordering::Relaxed);
        self.counters.round_trips.fetch_add(round_trips, Ordering::Relaxed);
    }

    /// Publishes the batch's events in commit order, then answers its callers.
    fn committed(&self, jobs: Vec<Box<dyn Job>>, outcomes: Vec<Outcome>) {
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        self.counters.largest_batch.fetch_max(jobs.len() as u64, Ordering::Relaxed);
        metrics::counter!("switchboard_writer_batches_total", "outcome" => "committed").increment(1);
        let mut answers = Vec::with_capacity(jobs.len());
        for outcome in outcomes {
            answers.push(match outcome {
                Outcome::Done(events) => {
                    for event in events {
                        self.outlet.publish(event);
                    }
                    (Ok(()), "committed")
                }
                Outcome::Refused(error) => (Err(error), "refused"),
            });
        }
        for (job, (answer, outcome)) in jobs.into_iter().zip(answers) {
            self.answer(job, answer, outcome);
        }
    }

    /// The store failed the batch: every change of it fails, nothing is published.
    fn failed(&self, jobs: Vec<Box<dyn Job>>, message: &str, started: Instant) {
        tracing::error!(
            error = message,
            changes = jobs.len(),
            after_ms = started.elapsed().as_millis() as u64,
            "a batch could not be committed: none of its changes was made"
        );
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("switchboard_writer_batches_total", "outcome" => "failed").increment(1);
        for job in jobs {
            self.answer(job, Err(CommerceError::Internal(message.to_owned())), "failed");
        }
    }

    fn answer(&self, job: Box<dyn Job>, answer: Result<(), CommerceError>, outcome: &'static str) {
        self.counters.changes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("switchboard_writer_changes_total", "outcome" => outcome).increment(1);
        job.answer(answer);
    }
}

/// Sorts how the change at `at` ended (its `run` or `finish`, a panic caught), with the events it
/// recorded. A refusal is one only if the change recorded nothing (a change refuses before it
/// writes); anything else that is not done makes its batch run again without it, unless the store
/// itself failed.
fn sort(
    at: usize,
    result: Result<Result<(), CommerceError>, Box<dyn Any + Send>>,
    events: Vec<Event>,
) -> Result<Outcome, Failure> {
    match result {
        Ok(Ok(())) => Ok(Outcome::Done(events)),
        Ok(Err(refusal @ (CommerceError::NotFound(_) | CommerceError::BadInput(_)))) if events.is_empty() => {
            Ok(Outcome::Refused(refusal))
        }
        Ok(Err(CommerceError::Store(error))) if !batch::is_change_error(&error) => Err(Failure::Store(error)),
        Ok(Err(error)) => Err(Failure::Change(at, error)),
        Err(panic) => Err(Failure::Change(at, CommerceError::Internal(panic_message(&panic)))),
    }
}

fn panic_message(panic: &Box<dyn Any + Send>) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    tracing::error!(panic = %what, "a change panicked; its batch runs again without it");
    format!("the change failed: {what}")
}
