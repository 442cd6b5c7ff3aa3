//! The changes clients can make: each one stored in a transaction, then published.
//!
//! Callers have already decided *whether* the viewer may make the change (that is the GraphQL
//! layer's job); this module decides whether the change is valid, stores it and publishes it.
//!
//! Writes are serialised by one async mutex held from `BEGIN` until the event is handed to the
//! broker. SQLite admits one writer at a time anyway, so this costs no throughput, and it makes
//! commit order and publish order the same: two concurrent `adjustInventory` calls can neither
//! lose an update nor reach a subscriber in the wrong order. A refused or failed change rolls
//! back (the transaction is dropped) and publishes nothing.
//!
//! Each change runs in a task of its own ([`detached`]): a client that disconnects while its
//! mutation is committing drops the request's future, and a change cancelled between `COMMIT`
//! and `publish` would be stored but never reach its subscribers. In its own task, a change that
//! has started always finishes: committed and published, or rolled back.

pub mod demo;
pub mod model;

use std::sync::Arc;

use rand::Rng;
use sqlx::AnyConnection;
use tokio::sync::Mutex;

use crate::cluster::Backplane;
use crate::commerce::model::{
    Decimal, Notification, Order, OrderEventKind, OrderStatus, PaymentStatus, Product, Timestamp,
};
use crate::events::log::EventLog;
use crate::events::{Broker, Event, EventBody, InventoryChangePayload, NotificationPayload, OrderEvent};
use crate::store::{Store, StoreError, notifications, orders, products};

#[derive(Debug, thiserror::Error)]
pub enum CommerceError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    BadInput(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change's task failed without an answer (it panicked); nothing was published.
    #[error("the change failed: {0}")]
    Internal(String),
}

type Result<T> = std::result::Result<T, CommerceError>;

/// What `updateOrder` may change; `None` leaves a field alone. `tracking_number: Some(None)`
/// clears it.
#[derive(Debug, Default, Clone)]
pub struct OrderChanges {
    pub status: Option<OrderStatus>,
    pub payment_status: Option<PaymentStatus>,
    pub tracking_number: Option<Option<String>>,
}

#[derive(Debug)]
pub struct Commerce {
    store: Store,
    log: EventLog,
    broker: Broker,
    /// With several nodes, events go through the backplane (which hands them to `broker` in the
    /// store's commit order, with the other nodes' events); alone, straight to `broker`.
    backplane: Option<Backplane>,
    writer: Mutex<()>,
}

impl Commerce {
    pub fn new(store: Store, log: EventLog, broker: Broker, backplane: Option<Backplane>) -> Self {
        Self { store, log, broker, backplane, writer: Mutex::new(()) }
    }

    /// Publishes a committed change (under the writer lock, so in commit order).
    fn publish(&self, event: Event) {
        match &self.backplane {
            Some(backplane) => backplane.publish(event),
            None => self.broker.publish(event),
        }
    }

    pub fn backplane(&self) -> Option<&Backplane> {
        self.backplane.as_ref()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Proves the store can commit now (for `/ready`), in turn with the other writes.
    pub async fn probe_write(&self) -> Result<()> {
        let _writer = self.writer.lock().await;
        Ok(self.store.probe_write().await?)
    }

    pub async fn create_order(self: &Arc<Self>, customer_id: &str, total: Decimal, currency: &str) -> Result<Order> {
        let customer_id = customer_id.trim();
        if customer_id.is_empty() {
            return Err(CommerceError::BadInput("customerId must not be empty".into()));
        }
        if total.is_negative() {
            return Err(CommerceError::BadInput("total must not be negative".into()));
        }
        let currency = currency.trim().to_ascii_uppercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(CommerceError::BadInput("currency must be a 3-letter ISO 4217 code".into()));
        }
        let (this, customer_id) = (self.clone(), customer_id.to_owned());
        detached(async move {
            let _writer = this.writer.lock().await;
            let mut tx = this.store.write().await?;
            let at = Timestamp::now();
            let order_number = order_number(at);
            let new = orders::NewOrder {
                order_number: &order_number,
                customer_id: &customer_id,
                total,
                currency: &currency,
                at,
            };
            let order = orders::insert(tx.conn(), new).await?;
            let event = this.order_event(tx.conn(), OrderEventKind::Created, order.clone(), Vec::new(), at).await?;
            tx.commit().await?;
            this.publish(event);
            Ok(order)
        })
        .await
    }

    /// Applies `changes`; when nothing actually changes, nothing is stored or published.
    pub async fn update_order(self: &Arc<Self>, id: i64, changes: OrderChanges) -> Result<Order> {
        if let Some(Some(tracking)) = &changes.tracking_number
            && tracking.len() > 128
        {
            return Err(CommerceError::BadInput("trackingNumber is longer than 128 characters".into()));
        }
        let this = self.clone();
        detached(async move { this.store_order_changes(id, changes).await }).await
    }

    async fn store_order_changes(&self, id: i64, changes: OrderChanges) -> Result<Order> {
        let _writer = self.writer.lock().await;
        let mut tx = self.store.write().await?;
        let mut order = orders::get(tx.conn(), id).await?.ok_or_else(|| not_found("Order", id))?;
        let mut changed = Vec::new();
        if let Some(status) = changes.status.filter(|s| *s != order.status) {
            order.status = status;
            changed.push("status".to_owned());
        }
        if let Some(payment) = changes.payment_status.filter(|p| *p != order.payment_status) {
            order.payment_status = payment;
            changed.push("paymentStatus".to_owned());
        }
        if let Some(tracking) = changes.tracking_number.filter(|t| *t != order.tracking_number) {
            order.tracking_number = tracking;
            changed.push("trackingNumber".to_owned());
        }
        if changed.is_empty() {
            return Ok(order);
        }
        let at = Timestamp::now();
        order.updated_at = at;
        orders::save(tx.conn(), &order).await?;
        let event = self.order_event(tx.conn(), OrderEventKind::Updated, order.clone(), changed, at).await?;
        tx.commit().await?;
        self.publish(event);
        Ok(order)
    }

    pub async fn delete_order(self: &Arc<Self>, id: i64) -> Result<Order> {
        let this = self.clone();
        detached(async move {
            let _writer = this.writer.lock().await;
            let mut tx = this.store.write().await?;
            let order = orders::get(tx.conn(), id).await?.ok_or_else(|| not_found("Order", id))?;
            orders::delete(tx.conn(), id).await?;
            let at = Timestamp::now();
            let event = this.order_event(tx.conn(), OrderEventKind::Deleted, order.clone(), Vec::new(), at).await?;
            tx.commit().await?;
            this.publish(event);
            Ok(order)
        })
        .await
    }

    pub async fn create_product(
        self: &Arc<Self>,
        sku: &str,
        name: &str,
        price: Decimal,
        quantity: i32,
    ) -> Result<Product> {
        let (sku, name) = (sku.trim(), name.trim());
        if sku.is_empty() || name.is_empty() {
            return Err(CommerceError::BadInput("sku and name must not be empty".into()));
        }
        if price.is_negative() {
            return Err(CommerceError::BadInput("price must not be negative".into()));
        }
        if quantity < 0 {
            return Err(CommerceError::BadInput("quantity must not be negative".into()));
        }
        let (this, sku, name) = (self.clone(), sku.to_owned(), name.to_owned());
        detached(async move {
            let _writer = this.writer.lock().await;
            let mut tx = this.store.write().await?;
            if products::sku_exists(tx.conn(), &sku).await? {
                return Err(CommerceError::BadInput(format!("a product with sku {sku:?} already exists")));
            }
            let product = products::insert(tx.conn(), &sku, &name, price, quantity, Timestamp::now()).await?;
            tx.commit().await?;
            Ok(product)
        })
        .await
    }

    /// Adds `delta` (which may be negative) to the stock; the result may not go below zero.
    pub async fn adjust_inventory(self: &Arc<Self>, product_id: i64, delta: i32) -> Result<Product> {
        let this = self.clone();
        detached(async move {
            this.change_stock(product_id, |current| {
                current.checked_add(delta).ok_or_else(|| CommerceError::BadInput("stock would overflow".into()))
            })
            .await
        })
        .await
    }

    pub async fn set_inventory(self: &Arc<Self>, product_id: i64, quantity: i32) -> Result<Product> {
        let this = self.clone();
        detached(async move { this.change_stock(product_id, |_| Ok(quantity)).await }).await
    }

    /// Read, compute, write and publish under the writer lock: no concurrent change is lost.
    async fn change_stock(&self, id: i64, new_quantity: impl FnOnce(i32) -> Result<i32>) -> Result<Product> {
        let _writer = self.writer.lock().await;
        let mut tx = self.store.write().await?;
        let mut product = products::get(tx.conn(), id).await?.ok_or_else(|| not_found("Product", id))?;
        let previous = product.quantity;
        let quantity = new_quantity(previous)?;
        if quantity < 0 {
            return Err(CommerceError::BadInput(format!("stock cannot go below zero (product {id} has {previous})")));
        }
        let at = Timestamp::now();
        products::set_quantity(tx.conn(), id, quantity, at).await?;
        product.quantity = quantity;
        product.updated_at = at;
        let event = self
            .log
            .record(tx.conn(), Event::product_topic(id), |stamp| {
                EventBody::Inventory(InventoryChangePayload {
                    product_id: async_graphql::ID(id.to_string()),
                    new_quantity: quantity,
                    previous_quantity: Some(previous),
                    timestamp: at,
                    product: product.clone(),
                    cursor: stamp.cursor,
                    sequence: stamp.sequence,
                })
            })
            .await?;
        tx.commit().await?;
        self.publish(event);
        Ok(product)
    }

    pub async fn send_notification(
        self: &Arc<Self>,
        user_id: &str,
        kind: &str,
        title: &str,
        message: &str,
    ) -> Result<Notification> {
        let user_id = user_id.trim();
        if user_id.is_empty() || kind.trim().is_empty() || title.trim().is_empty() {
            return Err(CommerceError::BadInput("userId, type and title must not be empty".into()));
        }
        let this = self.clone();
        let (user_id, kind, title, message) =
            (user_id.to_owned(), kind.trim().to_owned(), title.to_owned(), message.to_owned());
        detached(async move {
            let _writer = this.writer.lock().await;
            let mut tx = this.store.write().await?;
            let new = notifications::NewNotification {
                user_id: &user_id,
                kind: &kind,
                title: &title,
                message: &message,
                at: Timestamp::now(),
            };
            let notification = notifications::insert(tx.conn(), new).await?;
            let event = this
                .log
                .record(tx.conn(), Event::user_topic(&user_id), |stamp| {
                    EventBody::Notification(NotificationPayload::new(&notification, stamp))
                })
                .await?;
            tx.commit().await?;
            this.publish(event);
            Ok(notification)
        })
        .await
    }

    /// Marks one notification read. The caller has checked that it belongs to the viewer.
    pub async fn mark_notification_read(self: &Arc<Self>, id: i64) -> Result<Notification> {
        let this = self.clone();
        detached(async move {
            let _writer = this.writer.lock().await;
            let mut tx = this.store.write().await?;
            let mut notification =
                notifications::get(tx.conn(), id).await?.ok_or_else(|| not_found("Notification", id))?;
            if !notification.read {
                notifications::mark_read(tx.conn(), id).await?;
                tx.commit().await?;
                notification.read = true;
            }
            Ok(notification)
        })
        .await
    }
}

/// Runs a change in a task of its own, so that it finishes even if its caller stops waiting.
async fn detached<T: Send + 'static>(change: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    match tokio::spawn(change).await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(error = %e, "a change's task failed");
            Err(CommerceError::Internal(e.to_string()))
        }
    }
}

fn not_found(what: &str, id: i64) -> CommerceError {
    CommerceError::NotFound(format!("{what} {id}"))
}

impl Commerce {
    /// Records an order event in the caller's transaction (see [`EventLog::record`]).
    async fn order_event(
        &self,
        conn: &mut AnyConnection,
        kind: OrderEventKind,
        order: Order,
        changed_fields: Vec<String>,
        at: Timestamp,
    ) -> Result<Event> {
        let topic = Event::order_topic(order.id);
        let event = self
            .log
            .record(conn, topic, |stamp| {
                EventBody::Order(OrderEvent {
                    kind,
                    order,
                    changed_fields,
                    at,
                    cursor: stamp.cursor,
                    sequence: stamp.sequence,
                })
            })
            .await?;
        Ok(event)
    }
}

/// `SB-260125-7K2Q9XWD`: the date and eight random characters; the column is UNIQUE, and at
/// 32^8 combinations per day a collision is not a practical concern.
fn order_number(at: Timestamp) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut rng = rand::rng();
    let suffix: String = (0..8).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("SB-{}-{suffix}", at.0.format("%y%m%d"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::events::Key;
    use crate::events::slow_consumer::SlowConsumer;

    /// hyper drops a request's future when its client goes away. A change that had started must
    /// still finish: stored *and* published, never one without the other.
    #[tokio::test]
    async fn a_change_whose_caller_stops_waiting_is_still_stored_and_published() {
        let store = Store::connect("sqlite::memory:").await.expect("store");
        let log = EventLog::open(store.clone(), Default::default()).await.expect("log");
        let commerce = Arc::new(Commerce::new(store, log, Broker::new(), None));
        let price = "1.00".parse().expect("decimal");
        let product = commerce.create_product("A", "A", price, 1).await.expect("product");
        let mut events = commerce.broker().subscribe(Key::Product(product.id), 8, &SlowConsumer::new());

        let mut change = Box::pin(commerce.adjust_inventory(product.id, 1));
        assert!(futures::poll!(&mut change).is_pending(), "the change should still be running");
        drop(change);

        let event =
            tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("published").expect("event");
        assert_eq!(event.seq, 1);
        let stored = products::get(commerce.store().pool(), product.id).await.expect("read").expect("product");
        assert_eq!(stored.quantity, 2);
    }
}
