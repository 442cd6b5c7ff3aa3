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

use rand::Rng;
use sqlx::SqliteConnection;
use tokio::sync::Mutex;

use crate::model::{Decimal, Notification, Order, OrderEventKind, OrderStatus, PaymentStatus, Product, Timestamp};
use crate::pubsub::{Broker, Event, EventBody, InventoryChangePayload, OrderEvent};
use crate::store::{self, Store, StoreError, notifications, orders, products};

#[derive(Debug, thiserror::Error)]
pub enum CommerceError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    BadInput(String),
    #[error(transparent)]
    Store(#[from] StoreError),
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
    broker: Broker,
    writer: Mutex<()>,
}

impl Commerce {
    pub fn new(store: Store, broker: Broker) -> Self {
        Self { store, broker, writer: Mutex::new(()) }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
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
        let _writer = self.writer.lock().await;
        let mut tx = self.store.pool().begin().await?;
        let at = Timestamp::now();
        let order_number = order_number(at);
        let order = orders::insert(
            &mut tx,
            orders::NewOrder { order_number: &order_number, customer_id, total, currency: &currency, at },
        )
        .await?;
        let event = order_event(&mut tx, OrderEventKind::Created, order.clone(), Vec::new(), at).await?;
        tx.commit().await?;
        self.broker.publish(event);
        Ok(order)
    }

    /// Applies `changes`; when nothing actually changes, nothing is stored or published.
    pub async fn update_order(&self, id: i64, changes: OrderChanges) -> Result<Order> {
        if let Some(Some(tracking)) = &changes.tracking_number
            && tracking.len() > 128
        {
            return Err(CommerceError::BadInput("trackingNumber is longer than 128 characters".into()));
        }
        let _writer = self.writer.lock().await;
        let mut tx = self.store.pool().begin().await?;
        let mut order = orders::get(&mut *tx, id).await?.ok_or_else(|| not_found("Order", id))?;
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
        orders::save(&mut tx, &order).await?;
        let event = order_event(&mut tx, OrderEventKind::Updated, order.clone(), changed, at).await?;
        tx.commit().await?;
        self.broker.publish(event);
        Ok(order)
    }

    pub async fn delete_order(&self, id: i64) -> Result<Order> {
        let _writer = self.writer.lock().await;
        let mut tx = self.store.pool().begin().await?;
        let order = orders::get(&mut *tx, id).await?.ok_or_else(|| not_found("Order", id))?;
        orders::delete(&mut tx, id).await?;
        let event = order_event(&mut tx, OrderEventKind::Deleted, order.clone(), Vec::new(), Timestamp::now()).await?;
        tx.commit().await?;
        self.broker.publish(event);
        Ok(order)
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
        let _writer = self.writer.lock().await;
        let mut tx = self.store.pool().begin().await?;
        if products::sku_exists(&mut *tx, sku).await? {
            return Err(CommerceError::BadInput(format!("a product with sku {sku:?} already exists")));
        }
        let product = products::insert(&mut tx, sku, name, price, quantity, Timestamp::now()).await?;
        tx.commit().await?;
        Ok(product)
    }

    /// Adds `delta` (which may be negative) to the stock; the result may not go below zero.
    pub async fn adjust_inventory(&self, product_id: i64, delta: i32) -> Result<Product> {
        self.change_stock(product_id, |current| {
            current.checked_add(delta).ok_or_else(|| CommerceError::BadInput("stock would overflow".into()))
        })
        .await
    }

    pub async fn set_inventory(&self, product_id: i64, quantity: i32) -> Result<Product> {
        self.change_stock(product_id, |_| Ok(quantity)).await
    }

    /// Read, compute, write and publish under the writer lock: no concurrent change is lost.
    async fn change_stock(&self, id: i64, new_quantity: impl FnOnce(i32) -> Result<i32>) -> Result<Product> {
        let _writer = self.writer.lock().await;
        let mut tx = self.store.pool().begin().await?;
        let mut product = products::get(&mut *tx, id).await?.ok_or_else(|| not_found("Product", id))?;
        let previous = product.quantity;
        let quantity = new_quantity(previous)?;
        if quantity < 0 {
            return Err(CommerceError::BadInput(format!("stock cannot go below zero (product {id} has {previous})")));
        }
        let at = Timestamp::now();
        products::set_quantity(&mut tx, id, quantity, at).await?;
        product.quantity = quantity;
        product.updated_at = at;
        let topic = Event::product_topic(id);
        let seq = store::next_seq(&mut tx, &topic).await?;
        tx.commit().await?;
        self.broker.publish(Event {
            topic,
            seq,
            body: EventBody::Inventory(InventoryChangePayload {
                product_id: async_graphql::ID(id.to_string()),
                new_quantity: quantity,
                previous_quantity: Some(previous),
                timestamp: at,
                product: product.clone(),
            }),
        });
        Ok(product)
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
        let _writer = self.writer.lock().await;
        let mut tx = self.store.pool().begin().await?;
        let notification = notifications::insert(
            &mut tx,
            notifications::NewNotification { user_id, kind: kind.trim(), title, message, at: Timestamp::now() },
        )
        .await?;
        let topic = Event::user_topic(user_id);
        let seq = store::next_seq(&mut tx, &topic).await?;
        tx.commit().await?;
        self.broker.publish(Event { topic, seq, body: EventBody::Notification((&notification).into()) });
        Ok(notification)
    }

    /// Marks one notification read. The caller has checked that it belongs to the viewer.
    pub async fn mark_notification_read(&self, id: i64) -> Result<Notification> {
        let _writer = self.writer.lock().await;
        let mut notification =
            notifications::get(self.store.pool(), id).await?.ok_or_else(|| not_found("Notification", id))?;
        if !notification.read {
            notifications::mark_read(self.store.pool(), id).await?;
            notification.read = true;
        }
        Ok(notification)
    }
}

fn not_found(what: &str, id: i64) -> CommerceError {
    CommerceError::NotFound(format!("{what} {id}"))
}

async fn order_event(
    conn: &mut SqliteConnection,
    kind: OrderEventKind,
    order: Order,
    changed_fields: Vec<String>,
    at: Timestamp,
) -> Result<Event> {
    let topic = Event::order_topic(order.id);
    let seq = store::next_seq(conn, &topic).await?;
    Ok(Event { topic, seq, body: EventBody::Order(OrderEvent { kind, order, changed_fields, at }) })
}

/// `SB-260125-7K2Q9XWD`: the date and eight random characters; the column is UNIQUE, and at
/// 32^8 combinations per day a collision is not a practical concern.
fn order_number(at: Timestamp) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut rng = rand::rng();
    let suffix: String = (0..8).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("SB-{}-{suffix}", at.0.format("%y%m%d"))
}
