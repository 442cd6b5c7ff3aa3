//! The store: SQLite (the embedded default) or PostgreSQL, behind one seam.
//!
//! Both backends run the same SQL through sqlx's `Any` driver: `$1`-style parameters (SQLite reads
//! them as numbered), `RETURNING`, `ON CONFLICT`, and only the column types both share: integers
//! and text. Amounts are text so that they keep the exact digits and scale they were given
//! (`"12.50"`); timestamps are RFC 3339 text with milliseconds, which sorts as time does. Each
//! backend has its own migrations (`migrations/sqlite`, `migrations/postgres`) for the DDL that
//! differs.
//!
//! Reads go through [`Store::read`]. Changes go through [`batch::WriteBatch`]: many in one
//! transaction, each in one statement where the engine allows it, committed once (the writer in
//! [`crate::commerce`] makes the batches, and publishes their events in commit order). Under it,
//! and under the few other writes ([`Store::write`]: retention, demo data), [`WriteTx`] never lets
//! a connection go back to the pool in the middle of a transaction (see `tx.rs` for why that lost
//! acknowledged writes on a full disk).
//!
//! # The rule for pooled connections
//!
//! A pooled connection is taken, used and given back inside one task that nothing but the store
//! work itself keeps waiting: [`Store::read`] runs each read in a task of its own, and the writer
//! runs its batches in its own task. Never inside a stream or a future that its owner may stop
//! polling: a subscription's resolver runs inside a stream that its connection polls only between
//! messages, so a read started there and then left unpolled (the connection busy handling its next
//! message, which itself waits for a connection) held the pool's only connection until the pool's
//! timeout, and froze every request on the node meanwhile. And nothing holds one for long: every
//! statement has a deadline, `STORE_TIMEOUT` (PostgreSQL's `statement_timeout` on the server, the
//! same bound on the wait for a connection, and on each read as the caller sees it; a batch has
//! `WRITE_BATCH_TIMEOUT`); SQLite reads are bounded by their `LIMIT`s.

pub mod batch;
pub mod events;
pub mod notifications;
pub mod orders;
pub mod products;
mod tx;

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row};
use tokio::sync::Semaphore;

pub use tx::WriteTx;

pub type StoreError = sqlx::Error;

/// A statement that returns (in autocommit) once the WAL is on disk up to its own commit, and so
/// up to every commit before it: PostgreSQL's log is one sequence. PostgreSQL flushes at commit
/// only for a transaction that has an id *and* wrote to the log (`RecordTransactionCommit`);
/// `txid_current()` alone writes nothing and commits without a flush, which the crash test in
/// tests/durability.rs caught. A transactional logical-decoding message is the smallest write that
/// does both, touches no table, and may be sent by any role. Under `synchronous_commit = on`, the
/// default, for the session. (It returns a `pg_lsn`, which sqlx's `Any` driver cannot decode:
/// hence `SELECT 1 FROM`.)
pub const WAIT_FOR_FLUSH: &str = "SELECT 1 FROM pg_logical_emit_message(true, 'switchboard', 'flush')";

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
    /// The longest a statement may run, and a caller may wait for a connection or a read.
    pub timeout: Duration,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 8,
            sqlite_synchronous: SqliteSynchronous::Full,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Whom a read is for. Anonymous reads together take at most half of the pool's connections at
/// once ([`Store::read`]): however many strangers query at once, signed-in users' reads find a
/// connection (and the writer has its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// A client without a token, from this address.
    Anonymous(std::net::IpAddr),
    SignedIn,
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
    timeout: Duration,
    /// The connections anonymous reads may hold at once (see [`Reader`]).
    anonymous: Arc<Semaphore>,
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
            Backend::Postgres => postgres_pool(url, options, options.max_connections, false).await?,
        };
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        let writer = match backend {
            // An in-memory database is its one connection: the writer shares it.
            Backend::Sqlite if sqlite_in_memory(url) => pool.clone(),
            Backend::Sqlite => sqlite_pool(url, options, 1).await?,
            Backend::Postgres => postgres_pool(url, options, 1, true).await?,
        };
        let size = pool.options().get_max_connections() as usize;
        let anonymous = Arc::new(Semaphore::new((size / 2).max(1)));
        Ok(Self { pool, writer, backend, timeout: options.timeout, anonymous })
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

    /// Runs one read for `reader` on a pooled connection, in a task of its own (see the module
    /// docs: the connection is never held by a future that might not be polled), and gives up
    /// after `STORE_TIMEOUT`. `read` gets the pool and returns the read's future, which must own
    /// what it needs.
    pub async fn read<T, Fut>(&self, reader: Reader, read: impl FnOnce(AnyPool) -> Fut) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let gate = match reader {
            Reader::SignedIn => None,
            Reader::Anonymous(_) => Some(self.anonymous.clone()),
        };
        let work = read(self.pool.clone());
        let timeout = self.timeout;
        // Everything that waits for a share of the pool waits in this task, which nothing but the
        // read keeps waiting, never in the caller: a semaphore hands its permit to the first
        // waiter in line, polled or not, and a caller inside a stream that is not being polled
        // would hold it for nobody. The gate goes with the read, for as long as it holds a
        // connection, even when the caller has stopped waiting.
        let task = tokio::spawn(async move {
            let _gate = match gate {
                None => None,
                Some(gate) => match tokio::time::timeout(timeout, gate.acquire_owned()).await {
                    Ok(permit) => Some(permit.expect("the gate is never closed")),
                    Err(_) => return Err(timed_out()),
                },
            };
            work.await
        });
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(failed)) => Err(sqlx::Error::Io(std::io::Error::other(format!("a store read failed: {failed}")))),
            Err(_) => Err(timed_out()),
        }
    }

    /// Returns once everything committed before the call is on disk. On PostgreSQL the writer
    /// commits its batches without waiting for the flush (so that the log's lock is not held
    /// through it; see `batch.rs`), and another session may read such a batch before its flush:
    /// what is read from the log is handed out only after this (one round trip:
    /// [`WAIT_FOR_FLUSH`]). SQLite's commits are on disk when they are visible: nothing to wait
    /// for.
    pub async fn wait_durable(&self, reader: Reader) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => Ok(()),
            Backend::Postgres => {
                self.read(reader, |db| async move { db.execute(WAIT_FOR_FLUSH).await.map(drop) }).await
            }
        }
    }

    /// The order with this id, read for `reader`.
    pub async fn order(&self, reader: Reader, id: i64) -> Result<Option<crate::commerce::model::Order>, StoreError> {
        self.read(reader, move |db| async move { orders::get(&db, id).await }).await
    }

    /// The product with this id, read for `reader`.
    pub async fn product(
        &self,
        reader: Reader,
        id: i64,
    ) -> Result<Option<crate::commerce::model::Product>, StoreError> {
        self.read(reader, move |db| async move { products::get(&db, id).await }).await
    }

    /// Opens a write transaction (see [`WriteTx`]).
    pub async fn write(&self) -> Result<WriteTx, StoreError> {
        Ok(WriteTx::begin(&self.pool, self.backend.begin()).await?.0)
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(Reader::SignedIn, |db| async move { sqlx::query("SELECT 1").execute(&db).await.map(drop) }).await
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// Every statement the writer's changes run: prepared on each of its PostgreSQL connections. Kept
/// here, beside the entity modules that define them, rather than in `batch`, which every entity
/// module uses (a list there would make them import each other).
pub const PREPARED: &[&batch::Sql] = &[
    &products::CREATE,
    &products::CHANGE_STOCK,
    &orders::CREATE,
    &orders::UPDATE,
    &orders::DELETE,
    &notifications::CREATE,
    &notifications::MARK_READ,
    &batch::PROBE,
];

/// A PostgreSQL pool; `writer`: the writer's, whose connections prepare the writer's statements
/// when they open (see [`batch::prepare_all`]). The server itself ends a statement that runs past
/// `STORE_TIMEOUT` (waiting for a lock included), so that no request holds a connection longer.
async fn postgres_pool(url: &str, options: &StoreOptions, size: u32, writer: bool) -> Result<AnyPool, StoreError> {
    let connect: AnyConnectOptions = url.parse()?;
    let mut setup = format!("SET statement_timeout = {};\n", options.timeout.as_millis().max(1));
    if writer {
        setup.push_str(&batch::prepare_all(PREPARED));
    }
    AnyPoolOptions::new()
        .max_connections(size.max(1))
        .acquire_timeout(options.timeout)
        .after_connect(move |conn, _| {
            let setup = setup.clone();
            Box::pin(async move { conn.execute(setup.as_str()).await.map(drop) })
        })
        .connect_with(connect)
        .await
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
        .acquire_timeout(options.timeout)
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

/// What a read or a wait for a connection that took longer than `STORE_TIMEOUT` fails with.
fn timed_out() -> StoreError {
    sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "the store did not answer within STORE_TIMEOUT"))
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
