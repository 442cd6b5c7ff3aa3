//! The changes clients can make: each one stored by the node's writer, then published.
//!
//! Callers have already decided *whether* the viewer may make the change (that is the GraphQL
//! layer's job); this module decides whether the change is valid, and hands it to the
//! [`writer`], which stores it with the other changes waiting (one transaction, one flush, a
//! group commit), publishes its event once the batch has committed, in commit order, and only
//! then answers. A refused or failed change publishes nothing and fails alone. Every change is
//! one statement to the store where the engine allows it (see [`crate::store::batch`]).
//!
//! A change handed to the writer is made whether or not its caller still waits: a client that
//! disconnects while its mutation commits drops the request's future, and a change cancelled
//! between `COMMIT` and `publish` would be stored but never reach its subscribers.

pub mod demo;
pub mod model;
pub mod writer;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Backplane;
use crate::commerce::model::{Decimal, Notification, Order, OrderEventKind, Product, Timestamp};
use crate::events::event::Stamp;
use crate::events::log::EventLog;
use crate::events::{Broker, Event, EventBody, InventoryChangePayload, NotificationPayload, OrderEvent};
use crate::store::batch::{Changed, Statement};
pub use crate::store::orders::OrderChanges;
use crate::store::products::Stock;
use crate::store::{Store, StoreError, batch, notifications, orders, products};
pub use writer::{Change, ChangeTx, WriterSettings, WriterStats};
use writer::{Outlet, Writer};

#[derive(Debug, thiserror::Error)]
pub enum CommerceError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    BadInput(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change was not made: its code panicked, its batch could not be committed, or the
    /// server is stopping. Nothing was published.
    #[error("the change failed: {0}")]
    Internal(String),
}

type Result<T> = std::result::Result<T, CommerceError>;

#[derive(Debug)]
pub struct Commerce {
    store: Store,
    log: EventLog,
    broker: Broker,
    backplane: Option<Backplane>,
    writer: Writer,
}

impl Commerce {
    /// Starts the node's writer (on `tracker`; it drains and stops when `shutdown` is cancelled).
    /// With a backplane, events go through it (it hands them to `broker` in the store's commit
    /// order, with the other nodes' events); alone, straight to `broker`.
    pub fn start(
        store: Store,
        log: EventLog,
        broker: Broker,
        backplane: Option<Backplane>,
        settings: WriterSettings,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let outlet = match &backplane {
            Some(backplane) => Outlet::Backplane(backplane.clone()),
            None => Outlet::Broker(broker.clone()),
        };
        let writer = Writer::start(store.clone(), log.clone(), outlet, settings, tracker, shutdown);
        Self { store, log, broker, backplane, writer }
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

    /// Makes `change` through the writer (see [`writer`]): the way every change is made.
    pub async fn change<C: Change>(&self, change: C) -> Result<C::Output> {
        self.writer.submit(change).await
    }

    /// What this node's writer has done so far.
    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// Proves the store can commit now (for `/ready`): a one-row write, in a batch like any change.
    pub async fn probe_write(&self) -> Result<()> {
        self.change(Probe(Timestamp::now())).await
    }

    pub async fn create_order(&self, customer_id: &str, total: Decimal, currency: &str) -> Result<Order> {
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
        let at = Timestamp::now();
        let order_number = order_number(at);
        self.change(CreateOrder { customer_id: customer_id.to_owned(), total, currency, order_number, at }).await
    }

    /// Applies `changes`; when nothing actually changes, nothing is stored or published.
    pub async fn update_order(&self, id: i64, changes: OrderChanges) -> Result<Order> {
        if let Some(Some(tracking)) = &changes.tracking_number
            && tracking.len() > 128
        {
            return Err(CommerceError::BadInput("trackingNumber is longer than 128 characters".into()));
        }
        self.change(UpdateOrder { id, changes, at: Timestamp::now() }).await
    }

    pub async fn delete_order(&self, id: i64) -> Result<Order> {
        self.change(DeleteOrder { id, at: Timestamp::now() }).await
    }

    pub async fn create_product(&self, sku: &str, name: &str, price: Decimal, quantity: i32) -> Result<Product> {
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
        let (sku, name, at) = (sku.to_owned(), name.to_owned(), Timestamp::now());
        self.change(CreateProduct { sku, name, price, quantity, at }).await
    }

    /// Adds `delta` (which may be negative) to the stock; the result may not go below zero.
    pub async fn adjust_inventory(&self, product_id: i64, delta: i32) -> Result<Product> {
        self.change(ChangeStock { id: product_id, stock: Stock::Add(delta), at: Timestamp::now() }).await
    }

    pub async fn set_inventory(&self, product_id: i64, quantity: i32) -> Result<Product> {
        self.change(ChangeStock { id: product_id, stock: Stock::Set(quantity), at: Timestamp::now() }).await
    }

    pub async fn send_notification(
        &self,
        user_id: &str,
        kind: &str,
        title: &str,
        message: &str,
    ) -> Result<Notification> {
        let user_id = user_id.trim();
        if user_id.is_empty() || kind.trim().is_empty() || title.trim().is_empty() {
            return Err(CommerceError::BadInput("userId, type and title must not be empty".into()));
        }
        let (user_id, kind, title, message) =
            (user_id.to_owned(), kind.trim().to_owned(), title.to_owned(), message.to_owned());
        self.change(SendNotification { user_id, kind, title, message, at: Timestamp::now() }).await
    }

    /// Marks one notification read. The caller has checked that it belongs to the viewer.
    pub async fn mark_notification_read(&self, id: i64) -> Result<Notification> {
        self.change(MarkRead { id }).await
    }
}

fn not_found(what: &str, id: i64) -> CommerceError {
    CommerceError::NotFound(format!("{what} {id}"))
}

/// An order event's body.
fn order_event(
    kind: OrderEventKind,
    order: Order,
    changed_fields: Vec<String>,
    at: Timestamp,
) -> impl FnOnce(Stamp) -> EventBody {
    move |stamp| {
        EventBody::Order(OrderEvent { kind, order, changed_fields, at, cursor: stamp.cursor, sequence: stamp.sequence })
    }
}

struct CreateOrder {
    customer_id: String,
    total: Decimal,
    currency: String,
    order_number: String,
    at: Timestamp,
}

impl Change for CreateOrder {
    type Output = Order;

    fn statement(&self) -> Option<Statement> {
        Some(orders::create(&orders::NewOrder {
            order_number: &self.order_number,
            customer_id: &self.customer_id,
            total: self.total,
            currency: &self.currency,
            at: self.at,
        }))
    }

    fn finish(&self, changed: &Changed, tx: &mut ChangeTx<'_>) -> Result<Order> {
        let (order, seq) = orders::created(tx.batch(), changed)?;
        tx.record(
            Event::order_topic(order.id),
            seq,
            order_event(OrderEventKind::Created, order.clone(), Vec::new(), self.at),
        )?;
        Ok(order)
    }
}

struct UpdateOrder {
    id: i64,
    changes: OrderChanges,
    at: Timestamp,
}

impl Change for UpdateOrder {
    type Output = Order;

    fn statement(&self) -> Option<Statement> {
        Some(orders::update(self.id, &self.changes, self.at, &Event::order_topic(self.id)))
    }

    fn finish(&self, changed: &Changed, tx: &mut ChangeTx<'_>) -> Result<Order> {
        let topic = Event::order_topic(self.id);
        let update = orders::updated(tx.batch(), changed, &topic)?.ok_or_else(|| not_found("Order", self.id))?;
        let Some((order, seq)) = update.after else { return Ok(update.before) };
        let before = &update.before;
        let mut changed = Vec::new();
        if order.status != before.status {
            changed.push("status".to_owned());
        }
        if order.payment_status != before.payment_status {
            changed.push("paymentStatus".to_owned());
        }
        if order.tracking_number != before.tracking_number {
            changed.push("trackingNumber".to_owned());
        }
        tx.record(topic, seq, order_event(OrderEventKind::Updated, order.clone(), changed, self.at))?;
        Ok(order)
    }
}

struct DeleteOrder {
    id: i64,
    at: Timestamp,
}

impl Change for DeleteOrder {
    type Output = Order;

    fn statement(&self) -> Option<Statement> {
        Some(orders::delete(self.id, &Event::order_topic(self.id)))
    }

    fn finish(&self, changed: &Changed, tx: &mut ChangeTx<'_>) -> Result<Order> {
        let topic = Event::order_topic(self.id);
        let (order, seq) = orders::deleted(tx.batch(), changed, &topic)?.ok_or_else(|| not_found("Order", self.id))?;
        tx.record(topic, seq, order_event(OrderEventKind::Deleted, order.clone(), Vec::new(), self.at))?;
        Ok(order)
    }
}

struct CreateProduct {
    sku: String,
    name: String,
    price: Decimal,
    quantity: i32,
    at: Timestamp,
}

impl Change for CreateProduct {
    type Output = Product;

    fn statement(&self) -> Option<Statement> {
        Some(products::create(&self.sku, &self.name, self.price, self.quantity, self.at))
    }

    fn finish(&self, changed: &Changed, _: &mut ChangeTx<'_>) -> Result<Product> {
        products::created(changed)?
            .ok_or_else(|| CommerceError::BadInput(format!("a product with sku {:?} already exists", self.sku)))
    }
}

/// `setInventory` and `adjustInventory`: read, compute and write in one statement, under the
/// batch's write lock, so no concurrent change is lost.
struct ChangeStock {
    id: i64,
    stock: Stock,
    at: Timestamp,
}

impl Change for ChangeStock {
    type Output = Product;

    fn statement(&self) -> Option<Statement> {
        Some(products::change_stock(self.id, self.stock, self.at, &Event::product_topic(self.id)))
    }

    fn finish(&self, changed: &Changed, tx: &mut ChangeTx<'_>) -> Result<Product> {
        let (id, topic) = (self.id, Event::product_topic(self.id));
        let change = products::stock_changed(tx.batch(), changed, &topic)?.ok_or_else(|| not_found("Product", id))?;
        let previous = change.before.quantity;
        let Some((product, seq)) = change.after else {
            return Err(CommerceError::BadInput(match self.stock {
                Stock::Add(delta) if previous.checked_add(delta).is_none() => "stock would overflow".into(),
                _ => format!("stock cannot go below zero (product {id} has {previous})"),
            }));
        };
        tx.record(topic, seq, |stamp| {
            EventBody::Inventory(InventoryChangePayload {
                product_id: async_graphql::ID(id.to_string()),
                new_quantity: product.quantity,
                previous_quantity: Some(previous),
                timestamp: self.at,
                product: product.clone(),
                cursor: stamp.cursor,
                sequence: stamp.sequence,
            })
        })?;
        Ok(product)
    }
}

struct SendNotification {
    user_id: String,
    kind: String,
    title: String,
    message: String,
    at: Timestamp,
}

impl Change for SendNotification {
    type Output = Notification;

    fn statement(&self) -> Option<Statement> {
        let new = notifications::NewNotification {
            user_id: &self.user_id,
            kind: &self.kind,
            title: &self.title,
            message: &self.message,
            at: self.at,
        };
        Some(notifications::create(&new, &Event::user_topic(&self.user_id)))
    }

    fn finish(&self, changed: &Changed, tx: &mut ChangeTx<'_>) -> Result<Notification> {
        let topic = Event::user_topic(&self.user_id);
        let (notification, seq) = notifications::created(tx.batch(), changed, &topic)?;
        tx.record(topic, seq, |stamp| EventBody::Notification(NotificationPayload::new(&notification, stamp)))?;
        Ok(notification)
    }
}

struct MarkRead {
    id: i64,
}

impl Change for MarkRead {
    type Output = Notification;

    fn statement(&self) -> Option<Statement> {
        Some(notifications::mark_read(self.id))
    }

    fn finish(&self, changed: &Changed, _: &mut ChangeTx<'_>) -> Result<Notification> {
        notifications::marked(changed)?.ok_or_else(|| not_found("Notification", self.id))
    }
}

/// `/ready`'s write: it proves the store commits only if its batch commits.
struct Probe(Timestamp);

impl Change for Probe {
    type Output = ();

    fn statement(&self) -> Option<Statement> {
        Some(batch::probe(self.0))
    }

    fn finish(&self, _: &Changed, _: &mut ChangeTx<'_>) -> Result<()> {
        Ok(())
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
    use std::sync::Arc;
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
        let tracker = TaskTracker::new();
        let commerce = Arc::new(Commerce::start(
            store,
            log,
            Broker::new(),
            None,
            WriterSettings::default(),
            &tracker,
            CancellationToken::new(),
        ));
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
