//! Orders.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};

use super::batch::{Changed, Sql, Statement, WriteBatch};
use super::{StoreError, by_id, decode};
use crate::commerce::model::{Decimal, Order, OrderStatus, PaymentStatus, Timestamp};

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

/// Creates an order (in a batch); [`created`] reads the outcome.
pub fn create(new: &NewOrder<'_>) -> Statement {
    let at = new.at.to_string();
    let values = vec![
        new.order_number.into(),
        new.customer_id.into(),
        new.total.to_string().into(),
        new.currency.into(),
        at.into(),
    ];
    Statement::new(&CREATE, values)
}

/// The order [`create`] made, with the sequence its event takes on its topic (`order:<id>`; see
/// [`WriteBatch`]).
pub fn created(batch: &mut WriteBatch, changed: &Changed) -> Result<(Order, u64), StoreError> {
    let order = from_row(changed.after.as_ref().ok_or(sqlx::Error::RowNotFound)?)?;
    let seq = batch.sequence(&format!("order:{}", order.id), changed)?;
    Ok((order, seq))
}

pub const CREATE: Sql = Sql {
    name: "sb_order_create",
    types: "text, text, text, text, text",
    // A new order's topic has no sequence yet unless ids were reused; it is read all the same.
    sqlite: "\
INSERT INTO orders (order_number, customer_id, status, payment_status, total, currency, created_at, updated_at)
VALUES ($1, $2, 'PENDING', 'PENDING', $3, $4, $5, $5)
RETURNING 1 AS is_after, id, order_number, customer_id, status, payment_status, total, currency, tracking_number,
          created_at, updated_at, (SELECT seq FROM topic_sequences WHERE topic = 'order:' || id) AS seq",
    postgres: "\
WITH ins AS (
    INSERT INTO orders (order_number, customer_id, status, payment_status, total, currency, created_at, updated_at)
    VALUES ($1, $2, 'PENDING', 'PENDING', $3, $4, $5, $5)
    RETURNING id, order_number, customer_id, status, payment_status, total, currency, tracking_number,
              created_at, updated_at
),
seq AS (
    INSERT INTO topic_sequences (topic, seq) SELECT 'order:' || id, 1 FROM ins
    ON CONFLICT (topic) DO UPDATE SET seq = topic_sequences.seq + 1 RETURNING seq
)
SELECT 1::BIGINT AS is_after, ins.*, seq.seq FROM ins LEFT JOIN seq ON TRUE",
};

/// What `updateOrder` asks for; `None` leaves a field alone, `tracking_number: Some(None)`
/// clears it.
#[derive(Debug, Default, Clone)]
pub struct OrderChanges {
    pub status: Option<OrderStatus>,
    pub payment_status: Option<PaymentStatus>,
    pub tracking_number: Option<Option<String>>,
}

/// What an update found and did.
#[derive(Debug)]
pub struct OrderUpdate {
    pub before: Order,
    /// The order after the update with the sequence its event takes; `None` when nothing would
    /// change (then nothing was written).
    pub after: Option<(Order, u64)>,
}

/// Applies `changes` in one statement that reads the order, writes it only if a field actually
/// changes, and takes the next sequence on `topic`; [`updated`] reads the outcome.
pub fn update(id: i64, changes: &OrderChanges, at: Timestamp, topic: &str) -> Statement {
    let values = vec![
        id.into(),
        changes.status.map(|s| s.as_str().to_owned()).into(),
        changes.payment_status.map(|s| s.as_str().to_owned()).into(),
        changes.tracking_number.is_some().into(),
        changes.tracking_number.clone().flatten().into(),
        at.to_string().into(),
        topic.into(),
    ];
    Statement::new(&UPDATE, values)
}

/// What [`update`] did; `None` when there is no such order.
pub fn updated(batch: &mut WriteBatch, changed: &Changed, topic: &str) -> Result<Option<OrderUpdate>, StoreError> {
    let Some(before) = changed.before.as_ref().map(from_row).transpose()? else { return Ok(None) };
    let after = match changed.after.as_ref().map(from_row).transpose()? {
        Some(order) => Some((order, batch.sequence(topic, changed)?)),
        None => None,
    };
    Ok(Some(OrderUpdate { before, after }))
}

pub const UPDATE: Sql = Sql {
    name: "sb_order_update",
    types: "bigint, text, text, boolean, text, text, text",
    sqlite: "\
SELECT 0 AS is_after, id, order_number, customer_id, status, payment_status, total, currency, tracking_number,
       created_at, updated_at, (SELECT seq FROM topic_sequences WHERE topic = $7) AS seq
FROM orders WHERE id = $1;
UPDATE orders SET status = COALESCE($2, status), payment_status = COALESCE($3, payment_status),
                  tracking_number = CASE WHEN $4 THEN $5 ELSE tracking_number END, updated_at = $6
WHERE id = $1 AND (status IS NOT COALESCE($2, status) OR payment_status IS NOT COALESCE($3, payment_status)
                   OR ($4 AND tracking_number IS NOT $5))
RETURNING 1 AS is_after, id, order_number, customer_id, status, payment_status, total, currency, tracking_number,
          created_at, updated_at, NULL AS seq",
    postgres: "\
WITH cur AS (
    SELECT id, order_number, customer_id, status, payment_status, total, currency, tracking_number, created_at,
           updated_at
    FROM orders WHERE id = $1
),
upd AS (
    UPDATE orders SET status = COALESCE($2, orders.status), payment_status = COALESCE($3, orders.payment_status),
                      tracking_number = CASE WHEN $4 THEN $5 ELSE orders.tracking_number END, updated_at = $6
    WHERE id = $1 AND (orders.status IS DISTINCT FROM COALESCE($2, orders.status)
                       OR orders.payment_status IS DISTINCT FROM COALESCE($3, orders.payment_status)
                       OR ($4 AND orders.tracking_number IS DISTINCT FROM $5))
    RETURNING id, order_number, customer_id, status, payment_status, total, currency, tracking_number, created_at,
              updated_at
),
seq AS (
    INSERT INTO topic_sequences (topic, seq) SELECT $7, 1 FROM upd
    ON CONFLICT (topic) DO UPDATE SET seq = topic_sequences.seq + 1 RETURNING seq
)
SELECT 0::BIGINT AS is_after, cur.*, NULL::BIGINT AS seq FROM cur
UNION ALL SELECT 1::BIGINT, upd.*, seq.seq FROM upd LEFT JOIN seq ON TRUE",
};

/// Deletes an order in one statement; [`deleted`] reads the outcome.
pub fn delete(id: i64, topic: &str) -> Statement {
    Statement::new(&DELETE, vec![id.into(), topic.into()])
}

/// The order [`delete`] removed, with the sequence its event takes on `topic`; `None` when there
/// was no such order.
pub fn deleted(batch: &mut WriteBatch, changed: &Changed, topic: &str) -> Result<Option<(Order, u64)>, StoreError> {
    let Some(order) = changed.after.as_ref().map(from_row).transpose()? else { return Ok(None) };
    Ok(Some((order, batch.sequence(topic, changed)?)))
}

pub const DELETE: Sql = Sql {
    name: "sb_order_delete",
    types: "bigint, text",
    sqlite: "\
DELETE FROM orders WHERE id = $1
RETURNING 1 AS is_after, id, order_number, customer_id, status, payment_status, total, currency, tracking_number,
          created_at, updated_at, (SELECT seq FROM topic_sequences WHERE topic = $2) AS seq",
    postgres: "\
WITH del AS (
    DELETE FROM orders WHERE id = $1
    RETURNING id, order_number, customer_id, status, payment_status, total, currency, tracking_number, created_at,
              updated_at
),
seq AS (
    INSERT INTO topic_sequences (topic, seq) SELECT $2, 1 FROM del
    ON CONFLICT (topic) DO UPDATE SET seq = topic_sequences.seq + 1 RETURNING seq
)
SELECT 1::BIGINT AS is_after, del.*, seq.seq FROM del LEFT JOIN seq ON TRUE",
};

pub async fn count(db: impl Executor<'_, Database = Any>) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT COUNT(*) FROM orders").fetch_one(db).await
}
