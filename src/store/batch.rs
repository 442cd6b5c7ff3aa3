//! One group-commit batch: many changes in one transaction, one `COMMIT` (one flush to disk).
//!
//! A [`WriteBatch`] is a [`WriteTx`] that also assigns the event log's positions and topic
//! sequences, and runs each change as one [`Statement`]:
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
//! - **Changes** are one statement each. On SQLite each is one hand-off to sqlx's worker thread. On
//!   PostgreSQL every statement is prepared once per connection ([`prepare_all`] of [`super::PREPARED`], when the writer's
//!   pool opens it), and the statements of consecutive changes go to the server together, as
//!   `EXECUTE`s in one message ([`WriteBatch::run_all`]): one round trip for all of them, so the
//!   log's lock is held for a few round trips per batch rather than one per change, and other
//!   nodes wait that much less for it.
//! - **Events** are buffered and appended in one statement before `COMMIT`, with the head (and on
//!   SQLite the sequences).
//! - **The flush** happens outside the log's lock on PostgreSQL: the batch runs with
//!   `synchronous_commit = off`, so its `COMMIT` releases the lock once the commit record is
//!   written, and the next batch (on any node) takes it while this one's flush is under way; the
//!   wait for the flush follows in `COMMIT`'s round trip ([`super::WAIT_FOR_FLUSH`]), before
//!   anything is published or answered. With the lock held through the flush, the nodes' batches flushed one
//!   after another, and three nodes wrote less than one (BENCHMARKS.md, issue 17). Until its flush
//!   is done a batch is visible to other sessions: readers of the log wait for it
//!   ([`Store::wait_durable`](super::Store::wait_durable)) before they hand out what they read.
//!
//! So a batch of *n* changes runs *n* + 3 statements, counted in
//! `switchboard_writer_statements_total`: `BEGIN` with the head, one per change, the append,
//! `COMMIT` (on PostgreSQL one more, the wait for the flush, sent with `COMMIT`). On SQLite that
//! is *n* + 3 round trips; on PostgreSQL three (`BEGIN` with the head; the changes; the append,
//! `COMMIT` and the wait for the flush, in one message, the events written as a literal), counted
//! in `switchboard_writer_round_trips_total`. The log's lock is held for the first two and the
//! start of the third.
//!
//! Each change's statement returns rows of one shape: `is_after` (0 for the entity before the
//! change, 1 for after it), the entity's columns, and `seq` (see above). A change that is refused
//! by its statement's guard (a product that would go below zero, an order with nothing to change)
//! returns no `is_after = 1` row and has written nothing, so the batch goes on without it.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Either, Executor, Row};

use super::{Backend, Store, StoreError, WriteTx};

/// The writer's statements and round trips, counted as they are sent (see `docs/operations.md`).
pub const STATEMENTS_METRIC: &str = "switchboard_writer_statements_total";
pub const ROUND_TRIPS_METRIC: &str = "switchboard_writer_round_trips_total";

/// One of the writer's statements, in both dialects, with its name and parameter types for
/// PostgreSQL's `PREPARE`. Both use `$1`, `$2`, … for the parameters.
#[derive(Debug)]
pub struct Sql {
    pub name: &'static str,
    /// PostgreSQL's types of `$1`, `$2`, …, as `PREPARE` takes them.
    pub types: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// A value given to a statement.
#[derive(Debug, Clone)]
pub enum Value {
    Int(i64),
    Int4(i32),
    Bool(bool),
    Text(Option<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int4(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_owned()))
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::Text(v)
    }
}

/// One change's statement and its values.
#[derive(Debug, Clone)]
pub struct Statement {
    sql: &'static Sql,
    values: Vec<Value>,
}

impl Statement {
    pub fn new(sql: &'static Sql, values: Vec<Value>) -> Self {
        Self { sql, values }
    }

    fn query(&self, backend: Backend) -> sqlx::query::Query<'_, Any, sqlx::any::AnyArguments<'_>> {
        let text = match backend {
            Backend::Sqlite => self.sql.sqlite,
            Backend::Postgres => self.sql.postgres,
        };
        self.values.iter().fold(sqlx::query(text), |query, value| match value {
            Value::Int(v) => query.bind(*v),
            Value::Int4(v) => query.bind(*v),
            Value::Bool(v) => query.bind(*v),
            Value::Text(v) => query.bind(v.as_deref()),
        })
    }

    fn has_nul(&self) -> bool {
        self.values.iter().any(|v| matches!(v, Value::Text(Some(text)) if text.contains('\0')))
    }

    /// `EXECUTE name(values…)` of the statement prepared by [`prepare_all`], its values as
    /// literals (see [`literal`]).
    fn execute(&self, out: &mut String) {
        out.push_str("EXECUTE ");
        out.push_str(self.sql.name);
        out.push('(');
        for (i, value) in self.values.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            literal(value, out);
        }
        out.push_str(");\n");
    }
}

/// Writes `value` as a PostgreSQL literal. Text is an escape string (`E'…'`), whose meaning does
/// not depend on `standard_conforming_strings`: a backslash is doubled, a quote is doubled, and a
/// NUL (which would end the protocol message the query travels in) is written as `\000`, which
/// PostgreSQL's parser refuses (as the server refuses a NUL given as a parameter; the writer sends
/// such a value as a parameter instead, see [`WriteBatch::run_all`]).
fn literal(value: &Value, out: &mut String) {
    use std::fmt::Write;
    match value {
        Value::Int(v) => write!(out, "{v}").expect("a String takes any write"),
        Value::Int4(v) => write!(out, "{v}").expect("a String takes any write"),
        Value::Bool(v) => out.push_str(if *v { "TRUE" } else { "FALSE" }),
        Value::Text(None) => out.push_str("NULL"),
        Value::Text(Some(text)) => text_literal(text, out),
    }
}

/// Writes `text` as an escape string (see [`literal`]).
fn text_literal(text: &str, out: &mut String) {
    out.push_str("E'");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            '\0' => out.push_str("\\000"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// `PREPARE`s `statements`: run once on each new connection of the writer's PostgreSQL pool
/// (prepared statements belong to a session); the list is the store's ([`super::PREPARED`]), which
/// knows every entity's statements.
pub fn prepare_all(statements: &[&Sql]) -> String {
    statements.iter().map(|sql| format!("PREPARE {} ({}) AS {};\n", sql.name, sql.types, sql.postgres)).collect()
}

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
    round_trips: u64,
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
            // `synchronous_commit = off` for this transaction alone: its `COMMIT` releases the
            // log's lock without waiting for the flush, which `commit` then waits for outside it
            // (see the module docs).
            Backend::Postgres => format!(
                "BEGIN; SET LOCAL statement_timeout = {}; SET LOCAL synchronous_commit = off; \
                 SELECT head FROM log_state WHERE id = 1 FOR UPDATE",
                statement_timeout.as_millis().max(1)
            ),
        };
        count(1, 1);
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
            round_trips: 1,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection, for one statement in one round trip (counted).
    pub fn conn(&mut self) -> &mut AnyConnection {
        self.sent(1, 1);
        self.tx.conn()
    }

    fn sent(&mut self, statements: u64, round_trips: u64) {
        count(statements, round_trips);
        self.statements += statements;
        self.round_trips += round_trips;
    }

    /// Statements and round trips this batch has sent so far.
    pub fn sent_so_far(&self) -> (u64, u64) {
        (self.statements, self.round_trips)
    }

    /// What [`WriteBatch::commit`] will send, as (statements, round trips): the append (when
    /// there are events), then `COMMIT`; on SQLite one round trip each, on PostgreSQL all in one
    /// message with the wait for the flush.
    pub fn to_commit(&self) -> (u64, u64) {
        let append = u64::from(!self.events.is_empty());
        match self.backend {
            Backend::Sqlite => (append + 1, append + 1),
            Backend::Postgres => (append + 2, 1),
        }
    }

    /// Events buffered so far.
    pub fn events(&self) -> usize {
        self.events.len()
    }

    /// The last position this batch has assigned (the head it will write back).
    pub fn last_position(&self) -> u64 {
        self.head
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

    /// Runs one change's statement (one round trip) and sorts its rows (see the module docs).
    pub async fn run(&mut self, statement: &Statement) -> Result<Changed, StoreError> {
        let backend = self.backend;
        let rows = statement.query(backend).fetch_all(self.conn()).await?;
        Changed::of(rows)
    }

    /// Runs consecutive changes' statements in order: on PostgreSQL all in one round trip, on
    /// SQLite one hand-off each. On failure, the index of the statement that failed and its error:
    /// what the ones before it wrote stands until the batch is rolled back.
    pub async fn run_all(&mut self, statements: &[Statement]) -> Result<Vec<Changed>, (usize, StoreError)> {
        let mut out = Vec::with_capacity(statements.len());
        // PostgreSQL parses a whole message before it runs any of it, so an error of its parser
        // could not be traced to one statement: a text with a NUL (the one value its parser
        // refuses, see `literal`) goes as a parameter, in a message of its own.
        let one_by_one = statements.len() == 1 || statements.iter().any(Statement::has_nul);
        if self.backend == Backend::Sqlite || one_by_one {
            for (at, statement) in statements.iter().enumerate() {
                out.push(self.run(statement).await.map_err(|e| (at, e))?);
            }
            return Ok(out);
        }
        let mut text = String::with_capacity(statements.len() * 160);
        for statement in statements {
            statement.execute(&mut text);
        }
        self.sent(statements.len() as u64, 1);
        // Each statement's rows, then its completion; an error ends the message (PostgreSQL
        // skips the statements after a failed one).
        let mut results = self.tx.conn().fetch_many(text.as_str());
        let mut rows = Vec::new();
        while let Some(item) = results.next().await {
            match item {
                Ok(Either::Right(row)) => rows.push(row),
                Ok(Either::Left(_done)) => {
                    out.push(Changed::of(std::mem::take(&mut rows)).map_err(|e| (out.len(), e))?)
                }
                Err(e) => return Err((out.len(), e)),
            }
        }
        if out.len() != statements.len() {
            return Err((out.len(), protocol("PostgreSQL answered fewer statements than it was sent")));
        }
        Ok(out)
    }

    /// Appends the batch's events, writes the head (and on SQLite the sequences) back, and
    /// commits: one flush for every change of the batch. On failure nothing of the batch is
    /// stored, and the connection is closed (see [`WriteTx::commit`]).
    pub async fn commit(mut self) -> Result<(), StoreError> {
        debug_assert_eq!(self.events.len() as u64, self.head - self.began_at);
        let events = if self.events.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&self.events).map_err(|e| sqlx::Error::Encode(Box::new(e)))?)
        };
        let head = self.head as i64;
        // Counted as [`WriteBatch::to_commit`] says, which the writer's own figures use too.
        let (statements, round_trips) = self.to_commit();
        count(statements, round_trips);
        match self.backend {
            Backend::Sqlite => {
                if let Some(events) = events {
                    let sequences: Vec<(&str, u64)> = self.sequences.iter().map(|(t, s)| (t.as_str(), *s)).collect();
                    let sequences = serde_json::to_string(&sequences).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                    sqlx::query(SQLITE_APPEND).bind(events).bind(sequences).bind(head).execute(self.tx.conn()).await?;
                }
                self.tx.commit().await
            }
            Backend::Postgres => {
                // One message: the append, `COMMIT`, the wait for the flush. PostgreSQL skips
                // the rest of a message after an error, so a failed append never commits.
                let mut text = String::with_capacity(events.as_ref().map_or(0, String::len) + 512);
                if let Some(events) = &events {
                    postgres_append(events, head, &mut text);
                }
                text.push_str("COMMIT; ");
                text.push_str(super::WAIT_FOR_FLUSH);
                self.tx.commit_with(&text).await
            }
        }
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

/// Appends the events (a JSON array of [`EventRow`], written as a literal) and writes the head, in
/// one statement (the sequences are written already), for the message that commits. `COMMIT`
/// follows it without waiting for the flush (the batch runs with `synchronous_commit = off`),
/// which releases the log's lock at once, then [`super::WAIT_FOR_FLUSH`] waits for the flush.
fn postgres_append(events: &str, head: i64, out: &mut String) {
    use std::fmt::Write;
    out.push_str(
        "WITH appended AS (\n\
         INSERT INTO event_log (position, topic, seq, kind, audience, body, created_at)\n\
         SELECT position, topic, seq, kind, audience, body, created_at\n\
         FROM json_to_recordset(",
    );
    text_literal(events, out);
    out.push_str(
        "::json)\n\
         AS e(position BIGINT, topic TEXT, seq BIGINT, kind TEXT, audience TEXT, body TEXT, created_at TEXT)\n\
         )\n",
    );
    writeln!(out, "UPDATE log_state SET head = {head} WHERE id = 1;").expect("a String takes any write");
}

fn count(statements: u64, round_trips: u64) {
    metrics::counter!(STATEMENTS_METRIC).increment(statements);
    metrics::counter!(ROUND_TRIPS_METRIC).increment(round_trips);
}

fn protocol(message: &str) -> StoreError {
    sqlx::Error::Protocol(message.to_owned())
}

impl Changed {
    fn of(rows: Vec<AnyRow>) -> Result<Self, StoreError> {
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
}

/// Rewrites the store's probe row (what `/ready` writes to prove that the store can commit).
pub const PROBE: Sql = Sql {
    name: "sb_probe",
    types: "text",
    sqlite: "INSERT INTO store_probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
    postgres: "INSERT INTO store_probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
};

pub fn probe(at: crate::commerce::model::Timestamp) -> Statement {
    Statement::new(&PROBE, vec![at.to_string().into()])
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
        assert_eq!(batch.sent_so_far(), (1, 1), "BEGIN and the head in one round trip");
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

    #[test]
    fn literals_quote_whatever_text_they_are_given() {
        let literal = |value: Value| {
            let mut out = String::new();
            super::literal(&value, &mut out);
            out
        };
        assert_eq!(literal(Value::Int(-42)), "-42");
        assert_eq!(literal(Value::Int4(7)), "7");
        assert_eq!(literal(Value::Bool(true)), "TRUE");
        assert_eq!(literal(Value::Text(None)), "NULL");
        assert_eq!(literal("plain".into()), "E'plain'");
        assert_eq!(literal("it's".into()), "E'it''s'");
        assert_eq!(literal("a\\'); DROP TABLE orders; --".into()), "E'a\\\\''); DROP TABLE orders; --'");
        assert_eq!(literal("$$ é \u{1F600}".into()), "E'$$ é \u{1F600}'");
        assert_eq!(literal("nul\0here".into()), "E'nul\\000here'", "a NUL never reaches the protocol");
        let mut execute = String::new();
        Statement::new(&PROBE, vec!["x'y".into()]).execute(&mut execute);
        assert_eq!(execute, "EXECUTE sb_probe(E'x''y');\n");
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
