//! The event log's tables: `event_log` (one row per published change) and `log_state` (epoch,
//! head, retention mark). [`crate::event_log`] is the seam the rest of the server calls.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};

use super::StoreError;

/// The log's single state row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogState {
    pub epoch: String,
    /// The last position assigned (0 for an empty log).
    pub head: u64,
    /// Every position up to this one has been removed by retention.
    pub pruned_through: u64,
}

/// One stored event, as the log keeps it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub position: u64,
    pub topic: String,
    pub seq: u64,
    /// The event as JSON (`pubsub::Event`'s body).
    pub body: String,
}

/// Which events of the log a reader wants: the same routing as the broker's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<'a> {
    /// One entity's topic (`order:42`, `product:7`, `user:u1`).
    Topic(&'a str),
    /// Every event of one kind (`order`, `inventory`, `notification`).
    Kind(&'a str),
    /// The events of one kind addressed to one audience (a customer's orders).
    Audience(&'a str, &'a str),
    /// Every event.
    All,
}

/// Creates the state row with `epoch` if the log has none yet, then returns the state.
pub async fn open(db: &sqlx::AnyPool, epoch: &str) -> Result<LogState, StoreError> {
    sqlx::query(
        "INSERT INTO log_state (id, epoch, head, pruned_through) VALUES (1, $1, 0, 0) ON CONFLICT (id) DO NOTHING",
    )
    .bind(epoch)
    .execute(db)
    .await?;
    state(db).await
}

pub async fn state<'c>(db: impl Executor<'c, Database = Any>) -> Result<LogState, StoreError> {
    let row = sqlx::query("SELECT epoch, head, pruned_through FROM log_state WHERE id = 1").fetch_one(db).await?;
    Ok(LogState {
        epoch: row.try_get("epoch")?,
        head: row.try_get::<i64, _>("head")? as u64,
        pruned_through: row.try_get::<i64, _>("pruned_through")? as u64,
    })
}

fn from_row(row: &AnyRow) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        position: row.try_get::<i64, _>("position")? as u64,
        topic: row.try_get("topic")?,
        seq: row.try_get::<i64, _>("seq")? as u64,
        body: row.try_get("body")?,
    })
}

/// The `WHERE` clause for `selection`, with its parameters numbered from `$first`.
fn selection_clause(selection: &Selection<'_>, first: usize) -> String {
    match selection {
        Selection::Topic(_) => format!("topic = ${first}"),
        Selection::Kind(_) => format!("kind = ${first}"),
        Selection::Audience(_, _) => format!("kind = ${first} AND audience = ${}", first + 1),
        Selection::All => "TRUE".to_owned(),
    }
}

fn bind_selection<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    selection: &Selection<'q>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    match *selection {
        Selection::Topic(topic) => query.bind(topic),
        Selection::Kind(kind) => query.bind(kind),
        Selection::Audience(kind, audience) => query.bind(kind).bind(audience),
        Selection::All => query,
    }
}

/// The selected events with `after < position <= through`, oldest first, at most `limit`.
pub async fn read<'c>(
    db: impl Executor<'c, Database = Any>,
    selection: &Selection<'_>,
    after: u64,
    through: u64,
    limit: u64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!(
        "SELECT position, topic, seq, body FROM event_log
         WHERE position > $1 AND position <= $2 AND {} ORDER BY position LIMIT {limit}",
        selection_clause(selection, 3)
    );
    let query = sqlx::query(&sql).bind(after as i64).bind(through as i64);
    bind_selection(query, selection).fetch_all(db).await?.iter().map(from_row).collect()
}

/// What one statement saw of the log: its head and retention mark, and the selected events after
/// a position up to that head.
#[derive(Debug)]
pub struct Snapshot {
    pub head: u64,
    pub pruned_through: u64,
    pub events: Vec<StoredEvent>,
}

/// The log's state and up to `limit` selected events with `after < position <= head`, oldest
/// first, read in one statement: one round trip, and one snapshot in both engines, so the events
/// are exactly what the log held up to `head` unless `pruned_through` says retention had cut
/// into them.
pub async fn snapshot<'c>(
    db: impl Executor<'c, Database = Any>,
    selection: &Selection<'_>,
    after: u64,
    limit: u64,
) -> Result<Snapshot, StoreError> {
    // `log_state` and `event_log` share no column name, so the selection needs no prefix. The
    // outer join keeps the state row when no event matches.
    let sql = format!(
        "SELECT head, pruned_through, position, topic, seq, body
         FROM log_state LEFT JOIN event_log ON position > $1 AND position <= head AND {}
         WHERE id = 1 ORDER BY position LIMIT {limit}",
        selection_clause(selection, 2)
    );
    let rows = bind_selection(sqlx::query(&sql).bind(after as i64), selection).fetch_all(db).await?;
    let Some(first) = rows.first() else {
        return Err(sqlx::Error::RowNotFound);
    };
    let mut snapshot = Snapshot {
        head: first.try_get::<i64, _>("head")? as u64,
        pruned_through: first.try_get::<i64, _>("pruned_through")? as u64,
        events: Vec::with_capacity(rows.len()),
    };
    for row in &rows {
        if row.try_get::<Option<i64>, _>("position")?.is_some() {
            snapshot.events.push(from_row(row)?);
        }
    }
    Ok(snapshot)
}

/// The newest event still kept on `topic`.
pub async fn latest<'c>(db: impl Executor<'c, Database = Any>, topic: &str) -> Result<Option<StoredEvent>, StoreError> {
    sqlx::query("SELECT position, topic, seq, body FROM event_log WHERE topic = $1 ORDER BY position DESC LIMIT 1")
        .bind(topic)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The positions and creation times of up to `limit` events after `after`, oldest first: what
/// retention looks at to find where to cut.
pub async fn oldest<'c>(
    db: impl Executor<'c, Database = Any>,
    after: u64,
    limit: u64,
) -> Result<Vec<(u64, String)>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT position, created_at FROM event_log WHERE position > $1 ORDER BY position LIMIT {limit}"
    ))
    .bind(after as i64)
    .fetch_all(db)
    .await?;
    rows.iter().map(|row| Ok((row.try_get::<i64, _>("position")? as u64, row.try_get("created_at")?))).collect()
}

/// Removes every event up to `through` and records it as the retention mark, in the caller's
/// transaction.
pub async fn prune(conn: &mut AnyConnection, through: u64) -> Result<u64, StoreError> {
    let deleted =
        sqlx::query("DELETE FROM event_log WHERE position <= $1").bind(through as i64).execute(&mut *conn).await?;
    sqlx::query("UPDATE log_state SET pruned_through = $1 WHERE id = 1 AND pruned_through < $1")
        .bind(through as i64)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected())
}
