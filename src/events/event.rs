//! What the broker carries: one [`Event`] per stored change, with the stream it belongs to and its
//! sequence number on that stream, and the payload types that both the GraphQL subscriptions and
//! the room channel send (so that `order_update` on `/ws` is exactly an `OrderUpdatePayload`).

use async_graphql::{ID, SimpleObject};
use serde::{Deserialize, Serialize};

use super::Key;
use crate::commerce::model::{Notification, Order, OrderEventKind, OrderStatus, PaymentStatus, Product, Timestamp};

/// One stored change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// The entity's event stream: `order:42`, `product:7`, `user:u1`.
    pub topic: String,
    /// Position on `topic`, starting at 1 and without gaps: a subscriber that sees 5 after 3 knows
    /// it missed one. Assigned in the transaction that stored the change.
    pub seq: u64,
    /// Position in the store's event log: one gap-free, commit-ordered counter for every topic.
    pub position: u64,
    pub body: EventBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data")]
pub enum EventBody {
    Order(OrderEvent),
    Inventory(InventoryChangePayload),
    Notification(NotificationPayload),
}

impl Event {
    /// The broker keys whose subscribers may want this event. Routing by key keeps a publish as
    /// cheap as its matching subscribers, however many others there are.
    pub fn keys(&self) -> Vec<Key> {
        match &self.body {
            EventBody::Order(e) => {
                vec![Key::Order(e.order.id), Key::AllOrders, Key::CustomerOrders(e.order.customer_id.clone())]
            }
            EventBody::Inventory(c) => vec![Key::Product(c.product.id), Key::AllProducts],
            EventBody::Notification(n) => vec![Key::User(n.user_id.to_string())],
        }
    }

    /// What the log files the event under: its kind, and for order events the customer (so that
    /// a customer's `orderEvents` can be replayed without reading anyone else's).
    pub fn kind(&self) -> &'static str {
        match &self.body {
            EventBody::Order(_) => "order",
            EventBody::Inventory(_) => "inventory",
            EventBody::Notification(_) => "notification",
        }
    }

    pub fn audience(&self) -> Option<&str> {
        match &self.body {
            EventBody::Order(e) => Some(&e.order.customer_id),
            _ => None,
        }
    }

    pub fn order_topic(id: i64) -> String {
        format!("order:{id}")
    }

    pub fn product_topic(id: i64) -> String {
        format!("product:{id}")
    }

    pub fn user_topic(user_id: &str) -> String {
        format!("user:{user_id}")
    }
}

/// `orderEvents`: an order was created, updated or deleted.
#[derive(Debug, Clone, Serialize, Deserialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct OrderEvent {
    pub kind: OrderEventKind,
    pub order: Order,
    pub changed_fields: Vec<String>,
    pub at: Timestamp,
    /// Where this event is in the log: pass it as `after` to resume right after it.
    pub cursor: String,
    /// The event's number on its order's topic (`order:<id>`): 1, 2, 3... without gaps.
    pub sequence: i64,
}

impl OrderEvent {
    /// The `orderUpdated` view of an `UPDATED` event.
    pub fn update_payload(&self) -> OrderUpdatePayload {
        OrderUpdatePayload {
            order_id: ID(self.order.id.to_string()),
            status: Some(self.order.status),
            payment_status: Some(self.order.payment_status),
            tracking_number: self.order.tracking_number.clone(),
            updated_at: self.order.updated_at,
            changed_fields: self.changed_fields.clone(),
            order: self.order.clone(),
            cursor: self.cursor.clone(),
            sequence: self.sequence,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct OrderUpdatePayload {
    pub order_id: ID,
    pub status: Option<OrderStatus>,
    pub payment_status: Option<PaymentStatus>,
    pub tracking_number: Option<String>,
    pub updated_at: Timestamp,
    /// The fields this update changed, in camelCase.
    pub changed_fields: Vec<String>,
    pub order: Order,
    /// Where this event is in the log: pass it as `after` to resume right after it.
    pub cursor: String,
    /// The event's number on its order's topic (`order:<id>`).
    pub sequence: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct InventoryChangePayload {
    pub product_id: ID,
    pub new_quantity: i32,
    pub previous_quantity: Option<i32>,
    pub timestamp: Timestamp,
    pub product: Product,
    /// Where this event is in the log: pass it as `after` to resume right after it.
    pub cursor: String,
    /// The event's number on its product's topic (`product:<id>`).
    pub sequence: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct NotificationPayload {
    pub id: ID,
    #[serde(rename = "type")]
    #[graphql(name = "type")]
    pub kind: String,
    pub title: String,
    pub message: String,
    pub user_id: ID,
    pub created_at: Timestamp,
    /// Where this event is in the log: pass it as `after` to resume right after it.
    pub cursor: String,
    /// The event's number on its user's topic (`user:<id>`).
    pub sequence: i64,
}

impl NotificationPayload {
    pub fn new(n: &Notification, stamp: Stamp) -> Self {
        Self {
            id: ID(n.id.to_string()),
            kind: n.kind.clone(),
            title: n.title.clone(),
            message: n.message.clone(),
            user_id: ID(n.user_id.clone()),
            created_at: n.created_at,
            cursor: stamp.cursor,
            sequence: stamp.sequence,
        }
    }
}

/// An event's place: its cursor in the log and its number on its topic.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub cursor: String,
    pub sequence: i64,
}
