//! The durable event log and its cursors: the one seam through which anything resumes.
//!
//! Every published change is appended to the log in the transaction that stores it
//! ([`EventLog::record`], in the writer's batch), with a store-wide position that is gap-free and
//! in commit order, and its entity's per-topic sequence number. A cursor names a position in one log: it is
//! `<epoch>.<position>`, where the epoch is a random name the log got when it was first opened, so
//! that a cursor from another store, or from this one before it was recreated, is recognised
//! rather than misread. Clients treat cursors as opaque.
//!
//! A subscriber that resumes ([`EventLog::replay`]) gets, in order, every event after its cursor
//! that its broker key selects, up to the log's head at the time of the call; it must have
//! subscribed to the broker *before* calling, and then skip live events at or below
//! [`Replay::through`]. Because positions are committed in order, that seam has no gap (an event
//! committed after the head was read is published after the live subscription existed) and no
//! duplicate (an event at or below the head was read from the log). A cursor the log can no
//! longer serve completely fails at once: never a partial replay.
//!
//! Retention ([`EventLog::spawn_retention`]) removes events older than `EVENT_RETENTION` in small
//! batches, each its own short transaction, so writers are never held up for long.
//!
//! A resume first asks the log how far behind its cursor is, from the indexes alone
//! ([`events::behind`]): a cursor that cannot be served (pruned, ahead, too far behind) is refused
//! there, for the price of an index walk, without reading an event or taking any budget. Only
//! then is the replay read, whole, before its first event is sent (so that it is never partial),
//! and its events stay in memory until the subscriber has taken the last one.
//!
//! What replays hold at once is bounded: each takes, before it reads, exactly as many events'
//! worth of a budget of [`REPLAYS_HELD`] full-size replays as it is about to read, and gives them
//! back when its last event is taken or it is dropped. Past the budget a resume waits for another
//! to drain; it is never refused, and a burst of small resumes (a reconnect storm) fits at once.
//! Anonymous resumes have a budget of their own (half as large), so strangers never make a
//! signed-in user's resume wait, and one address may have at most
//! `ANONYMOUS_REPLAYS_PER_ADDRESS` reading or held at once (more wait their turn).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commerce::model::Timestamp;
use crate::connections::budget::{PerAddressQueue, QueuedSlot};
use crate::events::event::Stamp;
use crate::events::{Event, EventBody, Key};
use crate::store::batch::{EventRow, WriteBatch};
use crate::store::events::{self, Selection};
use crate::store::{Reader, Store, StoreError};

/// How the log is kept and read.
#[derive(Debug, Clone, Copy)]
pub struct LogSettings {
    /// How long events are kept for resuming; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// The most events one resume may replay; past it the cursor counts as expired.
    pub max_replay: u64,
    /// Anonymous resumes one client address may have reading or held at once.
    pub anonymous_replays_per_address: usize,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { retention: Some(Duration::from_secs(86_400)), max_replay: 10_000, anonymous_replays_per_address: 2 }
    }
}

/// Why a cursor cannot be resumed from.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// Not a cursor at all (`BAD_USER_INPUT`).
    #[error("{0}")]
    Malformed(String),
    /// A cursor this log cannot serve completely (`CURSOR_EXPIRED`): subscribe without `after`
    /// and refetch.
    #[error("{0}")]
    Expired(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many full-size replays (`RESUME_MAX_EVENTS` events each, ≈ 1 KB an event) may be held in
/// memory at once, summed over all resumes: ≈ 160 MB with the defaults.
pub const REPLAYS_HELD: u32 = 16;

/// What a resuming subscriber receives before going live.
#[derive(Debug)]
pub struct Replay {
    pub events: ReplayEvents,
    /// The log's head when the replay was read: live events at or below it are already covered.
    pub through: u64,
}

/// A replay's events, oldest first; their share of the memory budget (and an anonymous
/// address's turn) is given back once the last one has been taken (or the rest dropped).
#[derive(Debug)]
pub struct ReplayEvents {
    events: std::vec::IntoIter<Arc<Event>>,
    held: Option<(OwnedSemaphorePermit, Option<QueuedSlot>)>,
}

impl ReplayEvents {
    fn empty() -> Self {
        Self { events: Vec::new().into_iter(), held: None }
    }
}

impl ReplayEvents {
    /// The events not taken yet.
    pub fn as_slice(&self) -> &[Arc<Event>] {
        self.events.as_slice()
    }
}

impl Iterator for ReplayEvents {
    type Item = Arc<Event>;

    fn next(&mut self) -> Option<Arc<Event>> {
        let next = self.events.next();
        if next.is_none() {
            self.held = None;
        }
        next
    }
}

/// The store's event log; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventLog {
    store: Store,
    epoch: Arc<str>,
    settings: LogSettings,
    /// The events replays may hold in memory at once: signed-in users', and anonymous clients'
    /// (see the module docs).
    held: Arc<Semaphore>,
    anonymous_held: Arc<Semaphore>,
    /// Each address's turns at anonymous resumes.
    anonymous_turns: PerAddressQueue,
    /// Every position up to this one is known to be on disk (see [`EventLog::on_disk`]).
    durable: Arc<AtomicU64>,
}

impl EventLog {
    /// Opens the store's log, naming it with a fresh epoch if it has none yet.
    pub async fn open(store: Store, settings: LogSettings) -> Result<Self, StoreError> {
        let fresh = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        let state = events::open(store.pool(), &fresh).await?;
        let budget = Self::reservation(settings) as usize * REPLAYS_HELD as usize;
        Ok(Self {
            store,
            epoch: state.epoch.into(),
            settings,
            held: Arc::new(Semaphore::new(budget)),
            anonymous_held: Arc::new(Semaphore::new((budget / 2).max(Self::reservation(settings) as usize))),
            anonymous_turns: PerAddressQueue::new(settings.anonymous_replays_per_address),
            durable: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn settings(&self) -> LogSettings {
        self.settings
    }

    /// The cursor of `position` in this log.
    pub fn cursor(&self, position: u64) -> String {
        format!("{}.{position}", self.epoch)
    }

    /// Reads a cursor of this log back into a position. Strictly: exactly what [`Self::cursor`]
    /// writes (16 hex digits, a dot, the position in plain decimal digits), nothing around it.
    pub fn position_of(&self, cursor: &str) -> Result<u64, ResumeError> {
        let malformed =
            || ResumeError::Malformed(format!("{} is not a cursor: pass a `cursor` the server sent", echo(cursor)));
        let (epoch, position) = cursor.split_once('.').ok_or_else(malformed)?;
        let digits = !position.is_empty() && position.len() <= 20 && position.bytes().all(|b| b.is_ascii_digit());
        let position: u64 = position.parse().ok().filter(|_| digits).ok_or_else(malformed)?;
        if epoch.len() != 16 || !epoch.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        if epoch != &*self.epoch {
            return Err(ResumeError::Expired(
                "the cursor is from another event log (another store, or this one before it was recreated)".into(),
            ));
        }
        Ok(position)
    }

    /// Records a change that `batch` has just made: gives it the batch's next log position,
    /// builds its body with the resulting [`Stamp`] (that position's cursor and `seq`, the
    /// sequence the change's statement took on `topic`), and buffers the row for the batch's
    /// append. The caller publishes the returned event once the batch has committed.
    pub fn record(
        &self,
        batch: &mut WriteBatch,
        topic: String,
        seq: u64,
        body: impl FnOnce(Stamp) -> EventBody,
    ) -> Result<Event, StoreError> {
        let position = batch.next_position();
        let stamp = Stamp { cursor: self.cursor(position), sequence: seq as i64 };
        let event = Event { topic, seq, position, body: body(stamp) };
        let json = serde_json::to_string(&event.body).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        batch.append(EventRow {
            position,
            topic: event.topic.clone(),
            seq,
            kind: event.kind(),
            audience: event.audience().map(str::to_owned),
            body: json,
            created_at: Timestamp::now().to_string(),
        });
        Ok(event)
    }

    /// Notes that every position up to `through` is on disk (the writer, once a batch's flush is
    /// done).
    pub fn on_disk(&self, through: u64) {
        self.durable.fetch_max(through, Ordering::AcqRel);
    }

    /// `head`, just read from the store, once every position up to it is on disk. On PostgreSQL
    /// a batch is visible to readers before its flush is done (see [`Store::wait_durable`]); a
    /// position handed out before then could be lost with a crash of the database and given to
    /// another event after it, which a client resuming from it would never receive. So nothing
    /// read from the log, and no head, is handed out before it is on disk.
    async fn durable(&self, head: u64, reader: Reader) -> Result<u64, StoreError> {
        if head > self.durable.load(Ordering::Acquire) {
            self.store.wait_durable(reader).await?;
            self.on_disk(head);
        }
        Ok(head)
    }

    /// What one replay may hold at most: the budget is counted in units of it.
    fn reservation(settings: LogSettings) -> u32 {
        u32::try_from(settings.max_replay).unwrap_or(u32::MAX).clamp(1, u32::MAX / REPLAYS_HELD)
    }

    /// Every event `key` selects after `cursor`, up to the log's head now (see the module docs for
    /// how to join this to a live subscription), read for `reader`. A cursor that cannot be served
    /// is refused before anything is read or held; past the memory budget (or an anonymous
    /// address's turns) the replay waits.
    pub async fn replay(&self, key: &Key, cursor: &str, reader: Reader) -> Result<Replay, ResumeError> {
        let after = self.position_of(cursor)?;
        let selection = selection(key);
        let max = self.settings.max_replay;
        let behind = {
            let selection = selection.clone();
            let limit = max.saturating_add(1);
            self.store
                .read(reader, move |db| async move { events::behind(&db, &selection, after, limit).await })
                .await?
        };
        if after > behind.head {
            return Err(ResumeError::Expired("the cursor is ahead of this event log (was the store restored?)".into()));
        }
        if after < behind.pruned_through {
            return Err(ResumeError::Expired(
                "the events after this cursor are no longer kept (EVENT_RETENTION); refetch".into(),
            ));
        }
        if behind.events > max {
            return Err(ResumeError::Expired(format!(
                "more than {max} events happened after this cursor (RESUME_MAX_EVENTS); refetch"
            )));
        }
        let through = self.durable(behind.head, reader).await?;
        if behind.events == 0 {
            return Ok(Replay { events: ReplayEvents::empty(), through });
        }
        let (budget, turn) = match reader {
            Reader::SignedIn => (&self.held, None),
            Reader::Anonymous(addr) => (&self.anonymous_held, Some(self.anonymous_turns.take(addr).await)),
        };
        // Events at or below the head are never rewritten, only pruned: the count stands.
        let count = u32::try_from(behind.events).expect("at most max_replay").min(Self::reservation(self.settings));
        let held = budget.clone().acquire_many_owned(count).await.expect("the budget is never closed");
        let limit = behind.events;
        let (pruned_through, rows) = self
            .store
            .read(reader, move |db| async move { events::range(&db, &selection, after, through, limit).await })
            .await?;
        if after < pruned_through {
            return Err(ResumeError::Expired(
                "the events after this cursor are no longer kept (EVENT_RETENTION); refetch".into(),
            ));
        }
        let events = rows.into_iter().map(|row| decode(row).map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
        Ok(Replay { events: ReplayEvents { events: events.into_iter(), held: Some((held, turn)) }, through })
    }

    /// The last position assigned.
    pub async fn head(&self) -> Result<u64, StoreError> {
        let head = self.state().await?.head;
        self.durable(head, Reader::SignedIn).await
    }

    /// The cursor of the log's head now: a place, not an event. Positions are committed in order,
    /// so every event committed later has a greater position, and a subscription resuming from
    /// this cursor receives each of them; one taken before a subscription starts closes the window
    /// in which a drop before its first event would lose events.
    pub async fn head_cursor(&self) -> Result<String, StoreError> {
        Ok(self.cursor(self.head().await?))
    }

    /// Every position up to this one has been removed by retention.
    pub async fn pruned_through(&self) -> Result<u64, StoreError> {
        Ok(self.state().await?.pruned_through)
    }

    async fn state(&self) -> Result<events::LogState, StoreError> {
        self.store.read(Reader::SignedIn, |db| async move { events::state(&db).await }).await
    }

    /// The events with `after < position < before`, oldest first, at most 10,000 at a time (what a
    /// node missed; it asks again for the rest).
    pub async fn read_range(&self, after: u64, before: u64) -> Result<Vec<Event>, StoreError> {
        if before <= after + 1 {
            return Ok(Vec::new());
        }
        let limit = (before - after - 1).min(10_000);
        let rows = self
            .store
            .read(Reader::SignedIn, move |db| async move {
                events::read(&db, &Selection::All, after, before - 1, limit).await
            })
            .await?;
        rows.into_iter().map(decode).collect()
    }

    /// The newest event the log still keeps on `topic` (what a resume of a deleted entity's
    /// subscription is authorised against).
    pub async fn latest(&self, topic: &str, reader: Reader) -> Result<Option<Event>, StoreError> {
        let topic = topic.to_owned();
        let row = self.store.read(reader, move |db| async move { events::latest(&db, &topic).await }).await?;
        row.map(decode).transpose()
    }

    /// Removes the events older than the retention, in batches; returns how many went.
    pub async fn prune(&self, now: chrono::DateTime<Utc>) -> Result<u64, StoreError> {
        const BATCH: u64 = 1_000;
        let Some(retention) = self.settings.retention else { return Ok(0) };
        let cutoff = Timestamp(now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX));
        let cutoff = cutoff.to_string();
        let mut removed = 0;
        loop {
            let state = self.state().await?;
            let oldest = self
                .store
                .read(Reader::SignedIn, move |db| async move { events::oldest(&db, state.pruned_through, BATCH).await })
                .await?;
            // Timestamps are RFC 3339 UTC with milliseconds: text order is time order.
            let Some(through) = oldest.iter().take_while(|(_, at)| *at < cutoff).map(|(p, _)| *p).last() else {
                return Ok(removed);
            };
            let mut tx = self.store.write().await?;
            removed += events::prune(tx.conn(), through).await?;
            tx.commit().await?;
            if (oldest.len() as u64) < BATCH || through < oldest.last().map_or(0, |(p, _)| *p) {
                return Ok(removed);
            }
            // Let writers in between batches.
            tokio::task::yield_now().await;
        }
    }

    /// Runs retention in the background until shutdown.
    pub fn spawn_retention(&self, tracker: &TaskTracker, shutdown: CancellationToken) {
        let Some(retention) = self.settings.retention else { return };
        let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let log = self.clone();
        tracker.spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                match log.prune(Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(removed = n, "event log retention"),
                    Err(e) => tracing::warn!(error = %e, "event log retention failed; will retry"),
                }
            }
        });
    }
}

/// The events of the log that `key` routes to.
fn selection(key: &Key) -> Selection {
    match key {
        Key::Order(id) => Selection::Topic(Event::order_topic(*id)),
        Key::Product(id) => Selection::Topic(Event::product_topic(*id)),
        Key::User(user) => Selection::Topic(Event::user_topic(user)),
        Key::AllOrders => Selection::Kind("order"),
        Key::CustomerOrders(customer) => Selection::Audience(customer.clone()),
        Key::AllProducts => Selection::Kind("inventory"),
    }
}

/// A text a client sent, as an error message may quote it: at most 64 characters.
pub fn echo(text: &str) -> String {
    const MOST: usize = 64;
    match text.char_indices().nth(MOST) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

fn decode(row: events::StoredEvent) -> Result<Event, StoreError> {
    let body = serde_json::from_str(&row.body).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Event { topic: row.topic, seq: row.seq, position: row.position, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::NotificationPayload;
    use crate::store::notifications::{self, NewNotification};

    async fn log_with(settings: LogSettings) -> EventLog {
        let store = Store::connect("sqlite::memory:").await.expect("store");
        EventLog::open(store, settings).await.expect("log")
    }

    async fn notify(log: &EventLog, user: &str) -> Event {
        let mut batch = WriteBatch::begin(&log.store, Duration::from_secs(5)).await.expect("batch");
        let topic = Event::user_topic(user);
        let new = NewNotification { user_id: user, kind: "info", title: "t", message: "m", at: Timestamp::now() };
        let changed = batch.run(&notifications::create(&new, &topic)).await.expect("stored");
        let (n, seq) = notifications::created(&mut batch, &changed, &topic).expect("stored");
        let event = log
            .record(&mut batch, topic, seq, |stamp| EventBody::Notification(NotificationPayload::new(&n, stamp)))
            .expect("recorded");
        batch.commit().await.expect("commit");
        event
    }

    #[tokio::test]
    async fn positions_are_gap_free_across_topics_and_sequences_per_topic() {
        let log = log_with(LogSettings::default()).await;
        let mut seen = Vec::new();
        for user in ["a", "b", "a", "c", "a", "b"] {
            let event = notify(&log, user).await;
            seen.push((event.position, event.topic.clone(), event.seq));
        }
        let positions: Vec<u64> = seen.iter().map(|(p, _, _)| *p).collect();
        assert_eq!(positions, [1, 2, 3, 4, 5, 6]);
        let a: Vec<u64> = seen.iter().filter(|(_, t, _)| t == "user:a").map(|(_, _, s)| *s).collect();
        assert_eq!(a, [1, 2, 3]);
    }

    #[tokio::test]
    async fn a_rolled_back_change_gives_its_position_back() {
        let log = log_with(LogSettings::default()).await;
        notify(&log, "a").await;
        let mut batch = WriteBatch::begin(&log.store, Duration::from_secs(5)).await.expect("batch");
        assert_eq!(batch.next_position(), 2);
        batch.rollback().await;
        assert_eq!(notify(&log, "a").await.position, 2);
    }

    #[tokio::test]
    async fn cursors_name_their_log() {
        let log = log_with(LogSettings::default()).await;
        let other = log_with(LogSettings::default()).await;
        assert_ne!(log.epoch(), other.epoch(), "two stores, two epochs");
        assert_eq!(log.position_of(&log.cursor(42)).expect("own cursor"), 42);
        assert!(matches!(log.position_of(&other.cursor(42)), Err(ResumeError::Expired(_))));
        for bad in ["", "42", "abc.1", "0123456789abcdef.x", "0123456789abcdef.-1", "zz23456789abcdef.1"] {
            assert!(matches!(log.position_of(bad), Err(ResumeError::Malformed(_))), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_epoch_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("switchboard-epoch-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let url = format!("sqlite://{}", dir.join("log.db").display());
        let first =
            EventLog::open(Store::connect(&url).await.expect("store"), LogSettings::default()).await.expect("log");
        let epoch = first.epoch().to_owned();
        first.store.close().await;
        let again =
            EventLog::open(Store::connect(&url).await.expect("store"), LogSettings::default()).await.expect("log");
        assert_eq!(again.epoch(), epoch);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn replay_reads_exactly_the_selected_events_after_the_cursor() {
        let log = log_with(LogSettings::default()).await;
        let first = notify(&log, "a").await;
        notify(&log, "b").await;
        let third = notify(&log, "a").await;
        let fourth = notify(&log, "a").await;
        let replay =
            log.replay(&Key::User("a".into()), &log.cursor(first.position), Reader::SignedIn).await.expect("replay");
        let positions: Vec<u64> = replay.events.as_slice().iter().map(|e| e.position).collect();
        assert_eq!(positions, [third.position, fourth.position]);
        assert_eq!(replay.through, 4);
        let EventBody::Notification(n) = &replay.events.as_slice()[0].body else { panic!("a notification") };
        assert_eq!(n.cursor, log.cursor(third.position), "the replayed payload carries its own cursor");
        let nothing = log.replay(&Key::User("a".into()), &log.cursor(4), Reader::SignedIn).await.expect("replay");
        assert!(nothing.events.as_slice().is_empty());
        assert!(matches!(
            log.replay(&Key::User("a".into()), &log.cursor(5), Reader::SignedIn).await,
            Err(ResumeError::Expired(_))
        ));
    }

    #[tokio::test]
    async fn too_many_events_to_replay_is_an_expired_cursor_not_a_partial_replay() {
        let log = log_with(LogSettings { max_replay: 3, ..LogSettings::default() }).await;
        for _ in 0..5 {
            notify(&log, "a").await;
        }
        assert!(matches!(
            log.replay(&Key::User("a".into()), &log.cursor(1), Reader::SignedIn).await,
            Err(ResumeError::Expired(_))
        ));
        assert_eq!(
            log.replay(&Key::User("a".into()), &log.cursor(2), Reader::SignedIn)
                .await
                .expect("replay")
                .events
                .as_slice()
                .len(),
            3
        );
    }

    #[tokio::test]
    async fn replays_held_at_once_are_bounded_and_a_drained_one_makes_room() {
        let log = log_with(LogSettings { max_replay: 3, ..LogSettings::default() }).await;
        for _ in 0..3 {
            notify(&log, "a").await;
        }
        let key = Key::User("a".into());
        let mut held = Vec::new();
        for _ in 0..REPLAYS_HELD {
            held.push(log.replay(&key, &log.cursor(0), Reader::SignedIn).await.expect("replay"));
        }
        // The budget is spent: the next full-size replay waits...
        let waiting = tokio::spawn({
            let (log, key) = (log.clone(), key.clone());
            async move { log.replay(&key, &log.cursor(0), Reader::SignedIn).await.map(|r| r.events.count()) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "a replay read past the memory budget");
        // ...until one in flight has handed out its last event.
        let drained: Vec<_> = held.pop().expect("held").events.collect();
        assert_eq!(drained.len(), 3);
        let read = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("made room").expect("task");
        assert_eq!(read.expect("replay"), 3);
        // Dropping replays gives their share back too, and an empty replay holds nothing.
        drop(held);
        let mut empty = Vec::new();
        for _ in 0..REPLAYS_HELD * 4 {
            empty.push(log.replay(&key, &log.cursor(3), Reader::SignedIn).await.expect("nothing to replay"));
        }
        assert_eq!(log.held.available_permits(), 3 * REPLAYS_HELD as usize);
    }

    #[tokio::test]
    async fn a_refused_cursor_takes_no_budget_and_strangers_have_their_own() {
        let log =
            log_with(LogSettings { max_replay: 3, anonymous_replays_per_address: 1, ..LogSettings::default() }).await;
        for _ in 0..5 {
            notify(&log, "a").await;
        }
        let key = Key::User("a".into());
        let stranger = Reader::Anonymous("192.0.2.1".parse().unwrap());
        // Too far behind: refused, and nothing of either budget is taken meanwhile.
        for _ in 0..(REPLAYS_HELD * 4) {
            assert!(matches!(log.replay(&key, &log.cursor(0), stranger).await, Err(ResumeError::Expired(_))));
        }
        assert_eq!(log.held.available_permits(), 3 * REPLAYS_HELD as usize);
        assert_eq!(log.anonymous_held.available_permits(), 3 * REPLAYS_HELD as usize / 2);
        // A stranger's replay holds its turn until its events are taken: its next one waits,
        // while another address and a signed-in user do not.
        let first = log.replay(&key, &log.cursor(2), stranger).await.expect("replay");
        let waiting = tokio::spawn({
            let (log, key) = (log.clone(), key.clone());
            async move { log.replay(&key, &log.cursor(2), stranger).await.map(|r| r.events.count()) }
        });
        let other = Reader::Anonymous("192.0.2.2".parse().unwrap());
        let quick = Duration::from_secs(5);
        tokio::time::timeout(quick, log.replay(&key, &log.cursor(2), other)).await.expect("not waiting").expect("ok");
        tokio::time::timeout(quick, log.replay(&key, &log.cursor(2), Reader::SignedIn)).await.expect("no").expect("ok");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "the same address's second replay did not wait its turn");
        assert_eq!(first.events.count(), 3);
        let second = tokio::time::timeout(quick, waiting).await.expect("its turn came").expect("task");
        assert_eq!(second.expect("replay"), 3);
    }

    #[tokio::test]
    async fn cursors_are_read_strictly_and_quoted_briefly() {
        let log = log_with(LogSettings::default()).await;
        let epoch = log.epoch().to_owned();
        assert_eq!(log.position_of(&format!("{epoch}.5")).expect("a cursor"), 5);
        for bad in [
            format!(" {epoch}.5 "),
            format!("{epoch}.+5"),
            format!("{epoch}.5.5"),
            format!("{epoch}."),
            format!("{epoch}.-1"),
            format!("{epoch}.1e3"),
        ] {
            assert!(matches!(log.position_of(&bad), Err(ResumeError::Malformed(_))), "{bad:?} was accepted");
        }
        let long = "x".repeat(30_000);
        let Err(ResumeError::Malformed(message)) = log.position_of(&long) else { panic!("accepted") };
        assert!(message.len() < 200, "the whole header was echoed: {} bytes", message.len());
    }

    #[tokio::test]
    async fn retention_removes_old_events_and_expires_their_cursors() {
        let log = log_with(LogSettings { retention: Some(Duration::from_secs(60)), ..LogSettings::default() }).await;
        for _ in 0..3 {
            notify(&log, "a").await;
        }
        assert_eq!(log.prune(Utc::now()).await.expect("prune"), 0, "nothing is older than a minute yet");
        let later = Utc::now() + chrono::Duration::seconds(120);
        assert_eq!(log.prune(later).await.expect("prune"), 3);
        notify(&log, "a").await;
        assert!(matches!(
            log.replay(&Key::User("a".into()), &log.cursor(1), Reader::SignedIn).await,
            Err(ResumeError::Expired(_))
        ));
        let replay = log
            .replay(&Key::User("a".into()), &log.cursor(3), Reader::SignedIn)
            .await
            .expect("the cut is exactly at 3");
        assert_eq!(replay.events.as_slice().iter().map(|e| e.position).collect::<Vec<_>>(), [4]);
    }

    /// Pruning in batches while writers keep appending: what is left is exactly the positions
    /// after the retention mark, without a hole, and every write landed.
    #[tokio::test]
    async fn pruning_under_load_keeps_the_log_contiguous() {
        let dir = std::env::temp_dir().join(format!("switchboard-prune-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Store::connect(&format!("sqlite://{}", dir.join("log.db").display())).await.expect("store");
        let log = EventLog::open(
            store,
            LogSettings { retention: Some(Duration::from_secs(1)), max_replay: 100_000, ..LogSettings::default() },
        )
        .await
        .expect("log");
        for _ in 0..2_500 {
            notify(&log, "a").await;
        }
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                for _ in 0..500 {
                    notify(&log, "a").await;
                }
            })
        };
        let removed = log.prune(Utc::now() + chrono::Duration::seconds(2)).await.expect("prune");
        writer.await.expect("writer");
        let state = events::state(log.store.pool()).await.expect("state");
        assert_eq!(state.head, 3_000);
        assert!(removed >= 2_500, "{removed}");
        let left =
            events::read(log.store.pool(), &Selection::Kind("notification"), state.pruned_through, state.head, 10_000)
                .await
                .expect("read");
        let positions: Vec<u64> = left.iter().map(|e| e.position).collect();
        let expected: Vec<u64> = (state.pruned_through + 1..=state.head).collect();
        assert_eq!(positions, expected);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
