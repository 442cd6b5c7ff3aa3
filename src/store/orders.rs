//! Orders.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};

use super::{StoreError, by_id, decode};
use crate::commerce::model::{Decimal, Order, OrderStatus, Timestamp};

const COLUMNS: &str = "id, order_number, customer_id, status, payment_status, total, currency, tracking_number, \
                       created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<Order, StoreError> {
    Ok(Order {
        id: row.try_get("id")?,
        order_number: row.try_get("order_number")?,
        customer_id: row.try_get("customer_id")?,
        status: decode(row, "status")?,
        payment_status: decode(row, "payment_status")?,
        total: decode(row, "total")?,
        currency: row.try_get("currency")?,
        tracking_number: row.try_get("tracking_number")?,
        created_at: decode(row, "created_at")?,
        updated_at: decode(row, "updated_at")?,
    })
}

pub async fn get(db: impl Executor<'_, Database = Any>, id: i64) -> Result<Option<Order>, StoreError> {
    by_id(db, "orders", COLUMNS, id, from_row).await
}

/// Newest first; `customer` narrows to one customer's orders.
pub async fn list(
    db: impl Executor<'_, Database = Any>,
    customer: Option<&str>,
    status: Option<OrderStatus>,
    limit: i64,
) -> Result<Vec<Order>, StoreError> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM orders
         WHERE ($1 IS NULL OR customer_id = $1) AND ($2 IS NULL OR status = $2)
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(customer)
    .bind(status.map(OrderStatus::as_str))
    .bind(limit)
    .fetch_all(db)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

pub struct NewOrder<'a> {
    pub order_number: &'a str,
    pub customer_id: &'a str,
    pub total: Decimal,
    pub currency: &'a str,
    pub at: Timestamp,
}

pub async fn insert(conn: &mut AnyConnection, new: NewOrder<'_>) -> Result<Order, StoreError> {
    let row = sqlx::query(&format!(
        "INSERT INTO orders (order_number, customer_id, status, payment_status, total, currency, created_at, updated_at)
         VALUES ($1, $2, 'PENDING', 'PENDING', $3, $4, $5, $5) RETURNING {COLUMNS}"
    ))
    .bind(new.order_number)
    .bind(new.customer_id)
    .bind(new.total.to_string())
    .bind(new.currency)
    .bind(new.at.to_string())
    .fetch_one(conn)
    .await?;
    from_row(&row)
}

/// Writes the mutable fields of `order` back.
pub async fn save(conn: &mut AnyConnection, order: &Order) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE orders SET status = $2, payment_status = $3, tracking_number = $4, updated_at = $5 WHERE id = $1",
    )
    .bind(order.id)
    .bind(order.status.as_str())
    .bind(order.payment_status.as_str())
    .bind(order.tracking_number.as_deref())
    .bind(order.updated_at.to_string())
    .execute(conn)
    .await
    .map(drop)
}

pub async fn delete(conn: &mut AnyConnection, id: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM orders WHERE id = $1").bind(id).execute(conn).await.map(drop)
}

pub async fn count(db: impl Executor<'_, Database = Any>) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT COUNT(*) FROM orders").fetch_one(db).await
}
