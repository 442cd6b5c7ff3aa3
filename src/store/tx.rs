//! Write transactions that cannot leak.
//!
//! sqlx's own `Transaction` keeps its depth counter on the connection: when `COMMIT` fails (a full
//! disk answers `SQLITE_FULL`), the counter stays at one and the connection goes back to the pool
//! still inside the failed transaction. The next `begin()` on it then opens a *savepoint* instead
//! of a transaction, and its "commit" releases the savepoint without committing anything: the
//! mutation is answered as a success and published, and is never stored. (It also holds SQLite's
//! write lock, so the other connections see "database is locked" until a restart.)
//!
//! [`WriteTx`] owns the statements itself: `BEGIN`, then `COMMIT` or `ROLLBACK`. A connection goes
//! back to the pool only after a successful `COMMIT` or `ROLLBACK`; after any failure it is rolled
//! back where possible and closed, never reused, and the pool opens a fresh one when needed. That
//! is also what lets the server recover by itself once the disk has room again.
//!
//! A rollback that does not answer within [`ROLLBACK_WITHIN`] (a connection whose last statement
//! was abandoned mid-flight, a server that stopped answering) closes the connection instead, so
//! that a stuck connection never sits outside the pool for good.

use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};

use super::StoreError;

/// An open write transaction on a pooled connection. Commit it with [`WriteTx::commit`]; dropping
/// it (an error path, a refused change) rolls it back.
pub struct WriteTx {
    conn: Option<PoolConnection<Any>>,
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx").field("open", &self.conn.is_some()).finish()
    }
}

/// The longest a rollback may take before its connection is closed instead.
const ROLLBACK_WITHIN: Duration = Duration::from_secs(5);

impl WriteTx {
    /// Takes a connection and runs `begin` on it: the statements that open the transaction (one
    /// round trip, however many statements), returning the rows they read. The connection is
    /// held until `commit`, `rollback` or drop: call it only from a task that does nothing but
    /// this write (the writer's, see `commerce::writer`), never from a stream or a future that
    /// its owner might stop polling.
    pub(super) async fn begin(pool: &AnyPool, begin: &str) -> Result<(Self, Vec<AnyRow>), StoreError> {
        let mut conn = pool.acquire().await?;
        match conn.fetch_all(begin).await {
            Ok(rows) => Ok((Self { conn: Some(conn) }, rows)),
            Err(e) => {
                // Whatever failed may fail again on this connection: roll back and close it.
                let _ = tokio::time::timeout(ROLLBACK_WITHIN, conn.execute("ROLLBACK")).await;
                conn.close_on_drop();
                Err(e)
            }
        }
    }

    /// The connection, for the statements of this transaction.
    pub fn conn(&mut self) -> &mut AnyConnection {
        self.conn.as_mut().expect("a WriteTx is open until it is consumed")
    }

    /// Commits. On failure the transaction is rolled back (if the engine has not already done
    /// so) and the connection is closed rather than returned to the pool.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.commit_with("COMMIT").await
    }

    /// Commits with `commit`, the statements that end the transaction (one round trip: `COMMIT`
    /// and whatever must follow it at once), failing as [`WriteTx::commit`] does.
    pub async fn commit_with(mut self, commit: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.take().expect("a WriteTx is open until it is consumed");
        match conn.execute(commit).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let _ = tokio::time::timeout(ROLLBACK_WITHIN, conn.execute("ROLLBACK")).await;
                conn.close_on_drop();
                Err(e)
            }
        }
    }

    /// Rolls back; the connection returns to the pool only if that worked.
    pub async fn rollback(mut self) {
        if let Some(conn) = self.conn.take() {
            rollback(conn).await;
        }
    }
}

async fn rollback(mut conn: PoolConnection<Any>) {
    if !matches!(tokio::time::timeout(ROLLBACK_WITHIN, conn.execute("ROLLBACK")).await, Ok(Ok(_))) {
        conn.close_on_drop();
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        // Dropped open: a refused change returned early, or the caller's future was cancelled.
        // The rollback needs an await, so it runs beside the caller; outside a runtime the
        // connection is simply closed, which rolls the transaction back too.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(rollback(conn));
            }
            Err(_) => conn.close_on_drop(),
        }
    }
}
