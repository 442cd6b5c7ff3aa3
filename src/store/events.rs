//! The event log's tables: `event_log` (one row per published change) and `log_state` (epoch,
//! head, retention mark). [`crate::events::log`] is the seam the rest of the server calls.

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
pub enum Selection {
    /// One entity's topic (`order:42`, `product:7`, `user:u1`).
    Topic(String),
    /// Every event of one kind (`order`, `inventory`, `notification`).
    Kind(&'static str),
    /// The events addressed to one audience (a customer's orders: only order events have one).
    Audience(String),
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

/// The `WHERE` clause for `selection`, with its parameter numbered `$at`. A topic and an audience
/// are found through their indexes (`(topic, position)`, `(audience, position)`) alone; a kind
/// walks the log by position.
fn selection_clause(selection: &Selection, at: usize) -> String {
    match selection {
        Selection::Topic(_) => format!("topic = ${at}"),
        Selection::Kind(_) => format!("kind = ${at}"),
        Selection::Audience(_) => format!("audience = ${at}"),
        Selection::All => "TRUE".to_owned(),
    }
}

fn bind_selection<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    selection: &'q Selection,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    match selection {
        Selection::Topic(topic) => query.bind(topic.as_str()),
        Selection::Kind(kind) => query.bind(*kind),
        Selection::Audience(audience) => query.bind(audience.as_str()),
        Selection::All => query,
    }
}

/// The selected events with `after < position <= through`, oldest first, at most `limit`.
pub async fn read<'c>(
    db: impl Executor<'c, Database = Any>,
    selection: &Selection,
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

/// How far behind a position is, as one statement saw the log: its head and retention mark, and
/// how many selected events follow the position (counted up to a limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behind {
    pub head: u64,
    pub pruned_through: u64,
    /// Selected events after the position, at most the limit asked for.
    pub events: u64,
}

/// The log's state and the number of selected events after `after`, counted up to `limit`,
/// without reading a single event's body: for a topic or an audience from their indexes alone
/// (what lets a resume that cannot be served be refused for the price of an index walk).
pub async fn behind<'c>(
    db: impl Executor<'c, Database = Any>,
    selection: &Selection,
    after: u64,
    limit: u64,
) -> Result<Behind, StoreError> {
    // No `position <= head` bound: a position above the head is not visible to this statement
    // in either engine (it is assigned and committed with the head).
    let sql = format!(
        "SELECT head, pruned_through,
           (SELECT COUNT(*) FROM (SELECT position FROM event_log WHERE position > $1 AND {}
                                  ORDER BY position LIMIT {limit}) AS selected) AS events
         FROM log_state WHERE id = 1",
        selection_clause(selection, 2)
    );
    let row = bind_selection(sqlx::query(&sql).bind(after as i64), selection).fetch_one(db).await?;
    Ok(Behind {
        head: row.try_get::<i64, _>("head")? as u64,
        pruned_through: row.try_get::<i64, _>("pruned_through")? as u64,
        events: row.try_get::<i64, _>("events")? as u64,
    })
}

/// The retention mark and the selected events with `after < position <= through`, oldest first,
/// at most `limit`, read in one statement: the events are exactly what the log held in that
/// range unless the mark says retention had cut into it.
pub async fn range<'c>(
    db: impl Executor<'c, Database = Any>,
    selection: &Selection,
    after: u64,
    through: u64,
    limit: u64,
) -> Result<(u64, Vec<StoredEvent>), StoreError> {
    // `log_state` and `event_log` share no column name, so the selection needs no prefix. The
    // outer join keeps the state row when no event matches.
    let sql = format!(
        "SELECT pruned_through, position, topic, seq, body
         FROM log_state LEFT JOIN event_log ON position > $1 AND position <= $2 AND {}
         WHERE id = 1 ORDER BY position LIMIT {limit}",
        selection_clause(selection, 3)
    );
    let query = sqlx::query(&sql).bind(after as i64).bind(through as i64);
    let rows = bind_selection(query, selection).fetch_all(db).await?;
    let Some(first) = rows.first() else {
        return Err(sqlx::Error::RowNotFound);
    };
    let pruned_through = first.try_get::<i64, _>("pruned_through")? as u64;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<Option<i64>, _>("position")?.is_some() {
            events.push(from_row(row)?);
        }
    }
    Ok((pruned_through, events))
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
