//! One group-commit batch: many changes in one transaction, one `COMMIT` (one flush to disk).
//!
//! A [`WriteBatch`] is a [`WriteTx`] that also assigns the event log's positions and topic
//! sequences, so that each change costs one round trip to the store where the engine allows it:
//!
//! - **The log's head** is read in the round trip that opens the transaction, under the store's
//!   write lock (SQLite's `BEGIN IMMEDIATE`; on PostgreSQL the lock on `log_state`'s row, taken
//!   once per batch), and the batch's events take the next positions from memory. The head is
//!   written back once, before `COMMIT`. Reading it in every batch, not once at start-up, is what
//!   keeps positions right when other processes write to the same store.
//! - **Topic sequences** come back from each change's own statement. On PostgreSQL the statement
//!   bumps `topic_sequences` itself (a `WITH …` clause), so that is the sequence the event takes.
//!   On SQLite the statement reads the stored sequence, the batch counts on from it in memory
//!   (two changes on one topic in one batch), and every topic's last sequence is written back once,
//!   before `COMMIT`.
//! - **Events** are buffered and appended in one statement before `COMMIT`, with the head (and on
//!   SQLite the sequences): one round trip for the whole batch.
//!
//! So a batch of *n* changes sends *n* + 3 statements (PostgreSQL's pool also pings the
//! connection it hands out): `BEGIN` with the head, one per change, the append, `COMMIT`. Every
//! one is counted in `switchboard_writer_statements_total`.
//!
//! Each change's statement returns rows of one shape: `is_after` (0 for the entity before the
//! change, 1 for after it), the entity's columns, and `seq` (see above). A change that is refused
//! by its statement's guard (a product that would go below zero, an order with nothing to change)
//! returns no `is_after = 1` row and has written nothing, so the batch goes on without it.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row};

use super::{Backend, Store, StoreError, WriteTx};

/// The writer's statements, counted as they are sent (see `docs/operations.md`).
pub const STATEMENTS_METRIC: &str = "switchboard_writer_statements_total";

/// An open batch. Commit it with [`WriteBatch::commit`]; dropping it rolls everything back.
#[derive(Debug)]
pub struct WriteBatch {
    tx: WriteTx,
    backend: Backend,
    /// The last position assigned (the log's head as read at `BEGIN`, plus this batch's events).
    head: u64,
    /// The head as read at `BEGIN`.
    began_at: u64,
    /// SQLite: the last sequence this batch assigned on each topic, written back before `COMMIT`.
    /// PostgreSQL: the same, for the record (the statements have written them already).
    sequences: HashMap<String, u64>,
    /// The rows to append to `event_log` before `COMMIT`.
    events: Vec<EventRow>,
    statements: u64,
}

/// One event as the log stores it, buffered until the batch appends them all.
#[derive(Debug, Serialize)]
pub struct EventRow {
    pub position: u64,
    pub topic: String,
    pub seq: u64,
    pub kind: &'static str,
    pub audience: Option<String>,
    /// The event's body as JSON.
    pub body: String,
    pub created_at: String,
}

/// What one change's statement returned (see the module docs for the shape of its rows).
#[derive(Default)]
pub struct Changed {
    /// The entity before the change, for the changes that read it.
    pub before: Option<AnyRow>,
    /// The entity after the change; `None` when the statement changed nothing.
    pub after: Option<AnyRow>,
    /// The `seq` column: the sequence the change took (PostgreSQL) or the stored one (SQLite).
    seq: Option<u64>,
}

impl WriteBatch {
    /// Opens a batch on the writer's connection ([`Store::writer_pool`]): `BEGIN`, the write lock
    /// and the log's head in one round trip. On PostgreSQL every statement of the batch may run at most
    /// `statement_timeout` (the store stops it; the caller bounds the batch as a whole too).
    pub async fn begin(store: &Store, statement_timeout: Duration) -> Result<Self, StoreError> {
        let begin = match store.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE; SELECT head FROM log_state WHERE id = 1".to_owned(),
            Backend::Postgres => format!(
                "BEGIN; SET LOCAL statement_timeout = {}; SELECT head FROM log_state WHERE id = 1 FOR UPDATE",
                statement_timeout.as_millis().max(1)
            ),
        };
        count_statement();
        let (tx, rows) = WriteTx::begin(store.writer_pool(), &begin).await?;
        let head = match rows.last() {
            Some(row) => row.try_get::<i64, _>("head")? as u64,
            None => {
                tx.rollback().await;
                return Err(sqlx::Error::RowNotFound);
            }
        };
        Ok(Self {
            tx,
            backend: store.backend,
            head,
            began_at: head,
            sequences: HashMap::new(),
            events: Vec::new(),
            statements: 1,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection, for one statement (counted).
    pub fn statement(&mut self) -> &mut AnyConnection {
        count_statement();
        self.statements += 1;
        self.tx.conn()
    }

    /// Statements this batch has sent so far.
    pub fn statements(&self) -> u64 {
        self.statements
    }

    /// What [`WriteBatch::commit`] will send: the append (when there are events) and `COMMIT`.
    pub fn statements_to_commit(&self) -> u64 {
        if self.events.is_empty() { 1 } else { 2 }
    }

    /// Events buffered so far.
    pub fn events(&self) -> usize {
        self.events.len()
    }

    /// The next position in the log (the batch holds the write lock: nobody else assigns one).
    pub fn next_position(&mut self) -> u64 {
        self.head += 1;
        self.head
    }

    /// Buffers an event for the append before `COMMIT`.
    pub fn append(&mut self, row: EventRow) {
        self.events.push(row);
    }

    /// The sequence a change on `topic` takes, from what its statement returned.
    pub fn sequence(&mut self, topic: &str, changed: &Changed) -> Result<u64, StoreError> {
        let seq = match self.backend {
            // The statement bumped `topic_sequences` itself.
            Backend::Postgres => changed.seq.ok_or_else(|| protocol("the change's statement returned no sequence"))?,
            // The stored sequence, which this batch has not written back yet: count on from the
            // batch's own last one on this topic, if any.
            Backend::Sqlite => self.sequences.get(topic).copied().unwrap_or(changed.seq.unwrap_or(0)) + 1,
        };
        self.sequences.insert(topic.to_owned(), seq);
        Ok(seq)
    }

    /// Runs one change's statement and sorts its rows (see the module docs).
    pub async fn change<'q>(
        &mut self,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<Changed, StoreError> {
        let rows = query.fetch_all(self.statement()).await?;
        let mut changed = Changed::default();
        for row in rows {
            if let Some(seq) = row.try_get::<Option<i64>, _>("seq")? {
                changed.seq = Some(seq as u64);
            }
            if row.try_get::<i64, _>("is_after")? == 0 {
                changed.before = Some(row);
            } else {
                changed.after = Some(row);
            }
        }
        Ok(changed)
    }

    /// Appends the batch's events, writes the head (and on SQLite the sequences) back, and
    /// commits: one flush for every change of the batch. On failure nothing of the batch is
    /// stored, and the connection is closed (see [`WriteTx::commit`]).
    pub async fn commit(mut self) -> Result<(), StoreError> {
        if !self.events.is_empty() {
            debug_assert_eq!(self.events.len() as u64, self.head - self.began_at);
            let events = serde_json::to_string(&self.events).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            let head = self.head as i64;
            match self.backend {
                Backend::Sqlite => {
                    let sequences: Vec<(&str, u64)> = self.sequences.iter().map(|(t, s)| (t.as_str(), *s)).collect();
                    let sequences = serde_json::to_string(&sequences).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                    sqlx::query(SQLITE_APPEND)
                        .bind(events)
                        .bind(sequences)
                        .bind(head)
                        .execute(self.statement())
                        .await?;
                }
                Backend::Postgres => {
                    sqlx::query(POSTGRES_APPEND).bind(events).bind(head).execute(self.statement()).await?;
                }
            }
        }
        count_statement();
        self.tx.commit().await
    }

    /// Rolls everything back; the connection goes back to the pool if that worked.
    pub async fn rollback(self) {
        self.tx.rollback().await;
    }
}

/// Appends the events (a JSON array of [`EventRow`]), writes the sequences (a JSON array of
/// `[topic, seq]`) and the head: three statements in one round trip to SQLite's worker thread.
const SQLITE_APPEND: &str = "\
INSERT INTO event_log (position, topic, seq, kind, audience, body, created_at)
SELECT value ->> 'position', value ->> 'topic', value ->> 'seq', value ->> 'kind', value ->> 'audience',
       value ->> 'body', value ->> 'created_at'
FROM json_each($1);
INSERT INTO topic_sequences (topic, seq) SELECT value ->> 0, value ->> 1 FROM json_each($2) WHERE TRUE
ON CONFLICT (topic) DO UPDATE SET seq = excluded.seq;
UPDATE log_state SET head = $3 WHERE id = 1";

/// Appends the events and writes the head in one statement (the sequences are written already).
const POSTGRES_APPEND: &str = "\
WITH appended AS (
    INSERT INTO event_log (position, topic, seq, kind, audience, body, created_at)
    SELECT position, topic, seq, kind, audience, body, created_at
    FROM json_to_recordset($1::json)
        AS e(position BIGINT, topic TEXT, seq BIGINT, kind TEXT, audience TEXT, body TEXT, created_at TEXT)
)
UPDATE log_state SET head = $2 WHERE id = 1";

fn count_statement() {
    metrics::counter!(STATEMENTS_METRIC).increment(1);
}

fn protocol(message: &str) -> StoreError {
    sqlx::Error::Protocol(message.to_owned())
}

/// Rewrites the store's probe row (what `/ready` writes to prove that the store can commit).
pub async fn probe(batch: &mut WriteBatch) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO store_probe (id, at) VALUES (1, $1)
         ON CONFLICT (id) DO UPDATE SET at = excluded.at",
    )
    .bind(crate::model::Timestamp::now().to_string())
    .execute(batch.statement())
    .await
    .map(drop)
}

/// Whether a statement's error is the change's own doing (it broke a constraint or gave a value
/// the store refuses), as opposed to the store failing (a full disk, a lost connection, a
/// timeout), which no other change of the batch would survive either.
pub fn is_change_error(e: &StoreError) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.kind() != sqlx::error::ErrorKind::Other
                // PostgreSQL's class 22: data exceptions (a value out of range, bad text).
                || db.code().is_some_and(|code| code.starts_with("22"))
        }
        sqlx::Error::Encode(_) | sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn log_state(store: &Store) -> u64 {
        sqlx::query(
            "INSERT INTO log_state (id, epoch, head, pruned_through) VALUES (1, 'e', 0, 0) ON CONFLICT (id) DO NOTHING",
        )
        .execute(store.pool())
        .await
        .expect("state row");
        sqlx::query_scalar::<_, i64>("SELECT head FROM log_state").fetch_one(store.pool()).await.expect("head") as u64
    }

    fn row(batch: &mut WriteBatch, topic: &str, seq: u64) -> EventRow {
        EventRow {
            position: batch.next_position(),
            topic: topic.into(),
            seq,
            kind: "notification",
            audience: None,
            body: format!("{{\"quote\":\"a \\\" b\",\"seq\":{seq}}}"),
            created_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[tokio::test]
    async fn a_batch_appends_its_events_and_sequences_in_one_statement_and_commits_once() {
        let store = Store::connect("sqlite::memory:").await.expect("store");
        assert_eq!(log_state(&store).await, 0);
        let mut batch = WriteBatch::begin(&store, Duration::from_secs(5)).await.expect("begin");
        let stored = Changed { seq: Some(4), ..Default::default() };
        let first = batch.sequence("user:a", &stored).expect("seq");
        let second = batch.sequence("user:a", &stored).expect("seq");
        assert_eq!((first, second), (5, 6), "counted on from the stored sequence, in memory");
        let fresh = batch.sequence("user:b", &Changed::default()).expect("seq");
        assert_eq!(fresh, 1);
        for (topic, seq) in [("user:a", first), ("user:a", second), ("user:b", fresh)] {
            let row = row(&mut batch, topic, seq);
            batch.append(row);
        }
        assert_eq!(batch.statements(), 1, "BEGIN and the head in one round trip");
        batch.commit().await.expect("commit");

        assert_eq!(log_state(&store).await, 3);
        let events: Vec<(i64, String, i64, String)> =
            sqlx::query_as("SELECT position, topic, seq, body FROM event_log ORDER BY position")
                .fetch_all(store.pool())
                .await
                .expect("events");
        assert_eq!(
            events.iter().map(|e| (e.0, e.1.as_str(), e.2)).collect::<Vec<_>>(),
            [(1, "user:a", 5), (2, "user:a", 6), (3, "user:b", 1)]
        );
        assert_eq!(events[0].3, "{\"quote\":\"a \\\" b\",\"seq\":5}", "the body is stored as it was given");
        let sequences: Vec<(String, i64)> = sqlx::query_as("SELECT topic, seq FROM topic_sequences ORDER BY topic")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(sequences, [("user:a".to_owned(), 6), ("user:b".to_owned(), 1)]);
    }

    #[tokio::test]
    async fn a_rolled_back_batch_leaves_the_log_as_it_was() {
        let store = Store::connect("sqlite::memory:").await.expect("store");
        log_state(&store).await;
        let mut batch = WriteBatch::begin(&store, Duration::from_secs(5)).await.expect("begin");
        let row = row(&mut batch, "user:a", 1);
        batch.append(row);
        batch.rollback().await;
        assert_eq!(log_state(&store).await, 0);
        let mut batch = WriteBatch::begin(&store, Duration::from_secs(5)).await.expect("begin");
        assert_eq!(batch.next_position(), 1, "the position was given back");
    }
}
