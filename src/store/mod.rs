//! The SQLite store: one pool, migrations run at start, one module per entity.
//!
//! Reads go straight to the pool. Writes are made by [`crate::commerce`], which serialises them
//! (SQLite has one writer anyway) so that the order events are published in is the order they were
//! committed in. The functions here take a connection so that one transaction can span several.

pub mod notifications;
pub mod orders;
pub mod products;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};

pub type StoreError = sqlx::Error;

#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `url`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(if in_memory { SqliteJournalMode::Memory } else { SqliteJournalMode::Wal })
            // WAL with NORMAL is durable across a process crash; only an OS crash can lose the
            // last commits, which is the usual trade for SQLite servers.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // An in-memory database lives and dies with its one connection: keep exactly one, forever.
        let pool_options = if in_memory {
            SqlitePoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(8)
        }
        // No `SELECT 1` before every acquire: each statement is a round trip to sqlx's SQLite
        // worker thread, and a file database does not go away under us (`/ready` pings it).
        .test_before_acquire(false);
        let pool = pool_options.connect_with(options).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Bumps and returns the sequence number of an event stream, inside the caller's transaction.
pub async fn next_seq(conn: &mut SqliteConnection, topic: &str) -> Result<u64, StoreError> {
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO topic_sequences (topic, seq) VALUES (?1, 1)
         ON CONFLICT (topic) DO UPDATE SET seq = seq + 1 RETURNING seq",
    )
    .bind(topic)
    .fetch_one(conn)
    .await?;
    Ok(seq as u64)
}

/// The row of `table` with this id, decoded by `from_row`.
async fn by_id<T>(
    db: impl sqlx::SqliteExecutor<'_>,
    table: &str,
    columns: &str,
    id: i64,
    from_row: fn(&sqlx::sqlite::SqliteRow) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    sqlx::query(&format!("SELECT {columns} FROM {table} WHERE id = ?1"))
        .bind(id)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Decodes a text column into a domain value, turning a bad stored value into a decode error.
fn decode<T: FromStr>(row: &sqlx::sqlite::SqliteRow, column: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    use sqlx::Row;
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|e: T::Err| sqlx::Error::ColumnDecode { index: column.to_owned(), source: format!("{e}").into() })
}
