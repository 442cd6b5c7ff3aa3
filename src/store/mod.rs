//! The store: SQLite (the embedded default) or PostgreSQL, behind one seam.
//!
//! Both backends run the same SQL through sqlx's `Any` driver: `$1`-style parameters (SQLite reads
//! them as numbered), `RETURNING`, `ON CONFLICT`, and only the column types both share: integers
//! and text. Amounts are text so that they keep the exact digits and scale they were given
//! (`"12.50"`); timestamps are RFC 3339 text with milliseconds, which sorts as time does. Each
//! backend has its own migrations (`migrations/sqlite`, `migrations/postgres`) for the DDL that
//! differs.
//!
//! Reads go straight to the pool. Changes go through [`batch::WriteBatch`]: many in one
//! transaction, each in one statement where the engine allows it, committed once (the writer in
//! [`crate::commerce`] makes the batches, and publishes their events in commit order). Under it,
//! and under the few other writes ([`Store::write`]: retention, demo data), [`WriteTx`] never lets
//! a connection go back to the pool in the middle of a transaction (see `tx.rs` for why that lost
//! acknowledged writes on a full disk).

pub mod batch;
pub mod events;
pub mod notifications;
pub mod orders;
pub mod products;
mod tx;

use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row};

pub use tx::WriteTx;

pub type StoreError = sqlx::Error;

/// Which database engine is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The statements that open a write transaction and take the store's write lock, so that
    /// writes are serialised, as read-modify-write changes (`adjustInventory`) and a gap-free,
    /// commit-ordered event log need, however many nodes share the store.
    ///
    /// SQLite's `IMMEDIATE` takes its one write lock at once (two writers never both read and then
    /// fail to upgrade). PostgreSQL locks the event log's state row, which every write then holds
    /// until it commits or rolls back. Either way the statements also read the log's head, in the
    /// same round trip (sent as one string, without parameters: PostgreSQL's simple protocol
    /// takes several statements at once).
    fn begin(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE; SELECT head FROM log_state WHERE id = 1",
            Backend::Postgres => "BEGIN; SELECT head FROM log_state WHERE id = 1 FOR UPDATE",
        }
    }
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub url: String,
    /// Pool size for a server database (a SQLite file or PostgreSQL); an in-memory SQLite
    /// database always has exactly one connection.
    pub max_connections: u32,
    /// SQLite's `synchronous` for file databases: `full` syncs the log at every commit (a commit
    /// survives power loss), `normal` only at checkpoints (a commit survives a process crash).
    pub sqlite_synchronous: SqliteSynchronous,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), max_connections: 8, sqlite_synchronous: SqliteSynchronous::Full }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteSynchronous {
    Full,
    Normal,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// The writer's own connection (see [`Store::writer_pool`]).
    writer: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `url` with default options.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::open(&StoreOptions::new(url)).await
    }

    /// Opens (creating if needed) and migrates the database.
    pub async fn open(options: &StoreOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let url = options.url.trim();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(sqlx::Error::Configuration(
                format!("DATABASE_URL must start with sqlite: or postgres://, not {:?}", redact(url)).into(),
            ));
        };
        let pool = match backend {
            Backend::Sqlite => sqlite_pool(url, options, options.max_connections).await?,
            Backend::Postgres => postgres_pool(url, options.max_connections, false).await?,
        };
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        let writer = match backend {
            // An in-memory database is its one connection: the writer shares it.
            Backend::Sqlite if sqlite_in_memory(url) => pool.clone(),
            Backend::Sqlite => sqlite_pool(url, options, 1).await?,
            Backend::Postgres => postgres_pool(url, 1, true).await?,
        };
        Ok(Self { pool, writer, backend })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A pool of one connection for the node's writer, so that every batch runs on the same
    /// connection: SQLite drops a connection's whole page cache when another connection has
    /// committed since it last read, so a writer that took any pooled connection re-read its pages
    /// from the file at almost every batch (measured: 2.6 % of the server's CPU in `read` calls
    /// at saturation). It also means reads never keep the writer waiting for a connection. Its
    /// connection is used, and given back, within one function per batch, and closed after a
    /// failed `COMMIT` like any other ([`WriteTx`]); the pool then opens a fresh one.
    pub fn writer_pool(&self) -> &AnyPool {
        &self.writer
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Opens a write transaction (see [`WriteTx`]).
    pub async fn write(&self) -> Result<WriteTx, StoreError> {
        Ok(WriteTx::begin(&self.pool, self.backend.begin()).await?.0)
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// A PostgreSQL pool; `writer`: the writer's, whose connections prepare the writer's statements
/// when they open (see [`batch::prepare_all`]).
async fn postgres_pool(url: &str, size: u32, writer: bool) -> Result<AnyPool, StoreError> {
    let connect: AnyConnectOptions = url.parse()?;
    let options = AnyPoolOptions::new().max_connections(size.max(1)).acquire_timeout(Duration::from_secs(5));
    let options = if writer {
        options.after_connect(|conn, _| {
            Box::pin(async move { conn.execute(batch::prepare_all().as_str()).await.map(drop) })
        })
    } else {
        options
    };
    options.connect_with(connect).await
}

fn sqlite_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

async fn sqlite_pool(url: &str, options: &StoreOptions, size: u32) -> Result<AnyPool, StoreError> {
    let in_memory = sqlite_in_memory(url);
    // `mode=rwc` creates the file when it is missing, as a first `cargo run` needs.
    let url = if in_memory || url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    };
    let connect: AnyConnectOptions = url.parse()?;
    let synchronous = match options.sqlite_synchronous {
        SqliteSynchronous::Full => "FULL",
        SqliteSynchronous::Normal => "NORMAL",
    };
    // An in-memory database lives and dies with its one connection: keep exactly one, forever.
    let pool_options = if in_memory {
        AnyPoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
    } else {
        AnyPoolOptions::new().max_connections(size.max(1))
    };
    pool_options
        // No `SELECT 1` before every acquire: each statement is a round trip to sqlx's SQLite
        // worker thread, and a connection never goes back to the pool in a bad state (`WriteTx`).
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                let journal = if in_memory { "MEMORY" } else { "WAL" };
                conn.execute(format!("PRAGMA journal_mode = {journal}").as_str()).await?;
                conn.execute(format!("PRAGMA synchronous = {synchronous}").as_str()).await?;
                conn.execute("PRAGMA busy_timeout = 5000").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        })
        .connect_with(connect)
        .await
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| Some((scheme, rest.split_once('@')?))) {
        Some((scheme, (_, host))) => format!("{scheme}://…@{host}"),
        None => url.to_owned(),
    }
}

/// The row of `table` with this id, decoded by `from_row`.
async fn by_id<'c, T>(
    db: impl Executor<'c, Database = Any>,
    table: &str,
    columns: &str,
    id: i64,
    from_row: fn(&AnyRow) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    sqlx::query(&format!("SELECT {columns} FROM {table} WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Decodes a text column into a domain value, turning a bad stored value into a decode error.
fn decode<T: std::str::FromStr>(row: &AnyRow, column: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|e: T::Err| sqlx::Error::ColumnDecode { index: column.to_owned(), source: format!("{e}").into() })
}

/// A 0/1 integer column as a boolean (the one boolean representation both engines share).
fn flag(row: &AnyRow, column: &str) -> Result<bool, StoreError> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}
