//! A gate in the writer's queue, to put known changes in one batch.
//!
//! [`close`] hands the writer a change that writes nothing and waits until the test opens it.
//! The gate's batch is then running (past its window), so every change submitted meanwhile waits
//! in the queue, and the next batch takes them all at once.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use switchboard::commerce::{Change, ChangeTx, CommerceError};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::{TestApp, WAIT};

struct Gate {
    entered: Arc<Semaphore>,
    open: Arc<Semaphore>,
}

impl Change for Gate {
    type Output = ();
    fn apply<'a>(&'a self, _: &'a mut ChangeTx<'_>) -> BoxFuture<'a, Result<(), CommerceError>> {
        Box::pin(async move {
            self.entered.add_permits(1);
            let _ = self.open.acquire().await.expect("never closed");
            Ok(())
        })
    }
}

/// A closed gate: its batch is running and waits for [`Closed::open_when_queued`].
pub struct Closed {
    open: Arc<Semaphore>,
    task: JoinHandle<()>,
}

/// Hands the writer a gate and waits until its batch runs it.
pub async fn close(app: &TestApp) -> Closed {
    let (entered, open) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let commerce = app.state.commerce.clone();
    let gate = Gate { entered: entered.clone(), open: open.clone() };
    let task = tokio::spawn(async move { commerce.change(gate).await.expect("the gate passes") });
    tokio::time::timeout(WAIT, entered.acquire()).await.expect("the gate's batch runs").expect("open").forget();
    Closed { open, task }
}

impl Closed {
    /// Waits until exactly `n` changes queue behind the gate, then lets its batch commit and
    /// waits for that.
    pub async fn open_when_queued(self, app: &TestApp, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while app.state.commerce.writer_stats().queued < n {
            assert!(tokio::time::Instant::now() < deadline, "only {:?} queued", app.state.commerce.writer_stats());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(app.state.commerce.writer_stats().queued, n, "something else queued behind the gate");
        self.open.add_permits(1);
        self.task.await.expect("the gate's caller");
    }
}
