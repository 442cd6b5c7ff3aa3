//! Shared replays: members of one group that resume from the same place share one read of the
//! log and one execution of each replayed event.
//!
//! A reconnect storm is the case this is for: a node drops, and every subscriber of a product
//! comes back with the cursor of the same last event. Each of them still runs its own resolver
//! (its viewer is checked as it is now), but the first one's replay is read and executed once
//! and every other one takes it.
//!
//! The seam, for each member, is that of a replay of its own (see `event_log`): the member joins
//! the group (whose broker subscription already exists) before the replay's head is read, so
//! every later event reaches it through the group. A member that joins after the replay was
//! read also needs what the group delivered between the read and its joining: the replay keeps
//! the group's results from its start ([`Replays::record`]), and hands each member those it came
//! too late for. That history is bounded (a group's queue's worth): once it is full, the replay
//! takes no new members, and the next one to resume from there starts another. So does one that
//! comes more than [`JOINABLE`] after the replay was read.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_graphql::{PathSegment, ServerError};
use futures::StreamExt;
use futures::task::AtomicWaker;
use tokio::time::Instant;

use super::{Execution, Fanout, Group, Payload, Serialized};
use crate::events::Key;
use crate::graphql::documents::RootField;
use crate::graphql::error::{ApiError, add_codes, failed_before_execution};
use crate::lock;
use crate::store::Reader;

/// How long after it was read a replay still takes members resuming from its place.
pub const JOINABLE: Duration = Duration::from_secs(10);

/// What a resuming member gets before it goes on with the group's results.
#[derive(Debug)]
pub enum MemberReplay {
    /// The cursor cannot be served (expired, too far behind), or the operation was refused.
    Refused(Vec<ServerError>),
    Replayed {
        /// The results of the replayed events, then those the group delivered before the member
        /// joined, in order.
        payloads: Vec<Payload>,
        /// The log's head when the replay was read: the group's results at or below it are in
        /// the replay.
        through: u64,
        /// The subscription ended inside the replay (`orderUpdated` at its order's deletion):
        /// nothing more follows.
        ended: bool,
    },
}

/// Where a member's replay is put when it is ready; the member's connection polls it.
#[derive(Debug, Default)]
pub struct ReplaySlot {
    replay: Mutex<Option<MemberReplay>>,
    waker: AtomicWaker,
}

impl ReplaySlot {
    fn put(&self, replay: MemberReplay) {
        *lock::lock(&self.replay) = Some(replay);
        self.waker.wake();
    }

    /// The replay, once it is ready (taken: a second call waits forever).
    pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<MemberReplay> {
        if let Some(replay) = lock::lock(&self.replay).take() {
            return Poll::Ready(replay);
        }
        self.waker.register(cx.waker());
        match lock::lock(&self.replay).take() {
            Some(replay) => Poll::Ready(replay),
            None => Poll::Pending,
        }
    }
}

/// One group's replays in progress or recently read, by the position resumed from.
#[derive(Default)]
pub(super) struct Replays {
    batches: Vec<Batch>,
    next_id: u64,
}

struct Batch {
    id: u64,
    after: u64,
    /// The group's results since the replay started, numbered (see [`super::GroupState`]).
    history: Vec<(u64, Payload)>,
    /// No more room in `history`: the replay takes no new members.
    full: bool,
    /// Members waiting for the replay.
    waiting: Vec<Waiting>,
    done: Option<(Arc<Outcome>, Instant)>,
}

struct Waiting {
    membership: u64,
    /// The number of the first group result the member receives through its own queue.
    joined_at: u64,
    slot: Arc<ReplaySlot>,
}

enum Outcome {
    Refused(Vec<ServerError>),
    Replayed { payloads: Vec<Payload>, through: u64, ended: bool },
}

impl Batch {
    fn joinable(&self) -> bool {
        !self.full && self.done.as_ref().is_none_or(|(_, at)| at.elapsed() < JOINABLE)
    }

    /// What a member that joined the group at `joined_at` gets.
    fn replay_for(&self, outcome: &Outcome, joined_at: u64) -> MemberReplay {
        match outcome {
            Outcome::Refused(errors) => MemberReplay::Refused(errors.clone()),
            Outcome::Replayed { payloads, through, ended } => {
                let mut all = payloads.clone();
                if !ended {
                    let missed = self.history.iter().filter(|(n, p)| *n < joined_at && p.position > *through);
                    all.extend(missed.map(|(_, p)| p.clone()));
                }
                MemberReplay::Replayed { payloads: all, through: *through, ended: *ended }
            }
        }
    }
}

impl Replays {
    /// A member that joined the group at `joined_at` resumes from `after`: it joins the replay
    /// from there if one takes members, else starts one (then `true`: the caller reads it).
    pub(super) fn join(&mut self, membership: u64, after: u64, joined_at: u64) -> (Arc<ReplaySlot>, Option<u64>) {
        self.batches.retain(|b| !b.waiting.is_empty() || b.joinable());
        let slot = Arc::new(ReplaySlot::default());
        if let Some(batch) = self.batches.iter_mut().find(|b| b.after == after && b.joinable()) {
            match &batch.done {
                Some((outcome, _)) => slot.put(batch.replay_for(&outcome.clone(), joined_at)),
                None => batch.waiting.push(Waiting { membership, joined_at, slot: slot.clone() }),
            }
            return (slot, None);
        }
        let id = self.next_id;
        self.next_id += 1;
        let waiting = vec![Waiting { membership, joined_at, slot: slot.clone() }];
        self.batches.push(Batch { id, after, history: Vec::new(), full: false, waiting, done: None });
        (slot, Some(id))
    }

    /// The group delivered result number `number`: replays that may still take members keep it.
    pub(super) fn record(&mut self, number: u64, payload: &Payload, room: usize) {
        if self.batches.is_empty() {
            return;
        }
        for batch in self.batches.iter_mut().filter(|b| b.joinable()) {
            if batch.history.len() >= room {
                batch.full = true;
            } else {
                batch.history.push((number, payload.clone()));
            }
        }
        self.batches.retain(|b| !b.waiting.is_empty() || b.joinable());
    }

    /// A member left before its replay was ready.
    pub(super) fn leave(&mut self, membership: u64) {
        for batch in &mut self.batches {
            batch.waiting.retain(|w| w.membership != membership);
        }
    }

    fn finish(&mut self, id: u64, outcome: Outcome) {
        let Some(batch) = self.batches.iter_mut().find(|b| b.id == id) else { return };
        for waiting in std::mem::take(&mut batch.waiting) {
            waiting.slot.put(batch.replay_for(&outcome, waiting.joined_at));
        }
        // A refusal goes to those who waited for it, not to later ones: a store that failed once
        // may answer the next read, and refusing a cursor costs no more than an index walk.
        batch.full |= matches!(outcome, Outcome::Refused(_));
        batch.done = Some((Arc::new(outcome), Instant::now()));
    }
}

/// Which replay to read: its number in its group, the events of `audience` after log position
/// `after`, read for `reader`, for a subscription of `field`.
pub(super) struct Read {
    pub id: u64,
    pub audience: Key,
    pub after: u64,
    pub reader: Reader,
    pub field: RootField,
}

/// Reads a replay of `group`, runs `execution` over its events, and hands the results to the
/// members waiting for it. In a task of its own: the store read and the replay budget are never
/// held by a future that might not be polled.
pub(super) async fn run(fanout: Fanout, group: Arc<Group>, read: Read, execution: Execution) {
    let Read { id, audience, after, reader, field } = read;
    let inner = &fanout.0;
    inner.replays_read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let work = async {
        let replay = match inner.log.replay(&audience, &inner.log.cursor(after), reader).await {
            Ok(replay) => replay,
            Err(refused) => {
                let error = async_graphql::Error::from(ApiError::from(refused))
                    .into_server_error(field.pos)
                    .with_path(vec![PathSegment::Field(field.name.to_string())]);
                return Outcome::Refused(vec![error]);
            }
        };
        let through = replay.through;
        let Execution { mut results, source } = execution;
        source.feed(futures::stream::iter(replay.events).boxed());
        let mut payloads = Vec::new();
        while let Some(mut response) = results.next().await {
            if payloads.is_empty() && failed_before_execution(&response, true) {
                add_codes(&mut response);
                return Outcome::Refused(response.errors);
            }
            metrics::counter!("switchboard_subscription_executions_total").increment(1);
            payloads.push(Serialized::new(&mut response, source.position()));
        }
        Outcome::Replayed { payloads, through, ended: !source.exhausted() }
    };
    let outcome = tokio::select! {
        outcome = work => outcome,
        // Nobody to hand it to: the members went with the group.
        () = group.stop.cancelled() => return,
        () = inner.shutdown.cancelled() => return,
    };
    lock::lock(&group.state).replays.finish(id, outcome);
}
