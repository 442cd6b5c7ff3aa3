//! Products and their stock.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};

use super::batch::{Changed, Sql, Statement, WriteBatch};
use super::{StoreError, by_id, decode};
use crate::commerce::model::{Decimal, Product, Timestamp};

const COLUMNS: &str = "id, sku, name, price, quantity, updated_at";

fn from_row(row: &AnyRow) -> Result<Product, StoreError> {
    Ok(Product {
        id: row.try_get("id")?,
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        price: decode(row, "price")?,
        quantity: row.try_get("quantity")?,
        updated_at: decode(row, "updated_at")?,
    })
}

pub async fn get(db: impl Executor<'_, Database = Any>, id: i64) -> Result<Option<Product>, StoreError> {
    by_id(db, "products", COLUMNS, id, from_row).await
}

/// In creation order.
pub async fn list(db: impl Executor<'_, Database = Any>, limit: i64) -> Result<Vec<Product>, StoreError> {
    sqlx::query(&format!("SELECT {COLUMNS} FROM products ORDER BY id LIMIT $1"))
        .bind(limit)
        .fetch_all(db)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

pub async fn insert(
    conn: &mut AnyConnection,
    sku: &str,
    name: &str,
    price: Decimal,
    quantity: i32,
    at: Timestamp,
) -> Result<Product, StoreError> {
    let row = sqlx::query(&format!(
        "INSERT INTO products (sku, name, price, quantity, updated_at) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(sku)
    .bind(name)
    .bind(price.to_string())
    .bind(quantity)
    .bind(at.to_string())
    .fetch_one(conn)
    .await?;
    from_row(&row)
}

/// Creates a product (in a batch); [`created`] reads the outcome.
pub fn create(sku: &str, name: &str, price: Decimal, quantity: i32, at: Timestamp) -> Statement {
    let values = vec![sku.into(), name.into(), price.to_string().into(), quantity.into(), at.to_string().into()];
    Statement::new(&CREATE, values)
}

/// The product [`create`] made; `None` when the sku is taken (nothing was written then).
pub fn created(changed: &Changed) -> Result<Option<Product>, StoreError> {
    changed.after.as_ref().map(from_row).transpose()
}

pub const CREATE: Sql = Sql {
    name: "sb_product_create",
    types: "text, text, text, integer, text",
    sqlite: "INSERT INTO products (sku, name, price, quantity, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (sku) DO NOTHING
             RETURNING 1 AS is_after, id, sku, name, price, quantity, updated_at, NULL AS seq",
    postgres: "INSERT INTO products (sku, name, price, quantity, updated_at) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (sku) DO NOTHING
               RETURNING 1::BIGINT AS is_after, id, sku, name, price, quantity, updated_at, NULL::BIGINT AS seq",
};

/// How a stock change sets the quantity.
#[derive(Debug, Clone, Copy)]
pub enum Stock {
    Set(i32),
    Add(i32),
}

/// What a stock change found and did.
#[derive(Debug)]
pub struct StockChange {
    pub before: Product,
    /// The product after the change and the sequence its event takes on the product's topic;
    /// `None` when the new quantity would leave `0..=i32::MAX` (then nothing was written).
    pub after: Option<(Product, u64)>,
}

/// Sets or adjusts a product's stock in one statement, which reads the product, writes it only
/// if the new quantity stays in `0..=i32::MAX`, and takes the next sequence on `topic` (see
/// [`WriteBatch`]); [`stock_changed`] reads the outcome.
pub fn change_stock(id: i64, stock: Stock, at: Timestamp, topic: &str) -> Statement {
    let (add, value) = match stock {
        Stock::Set(q) => (false, q),
        Stock::Add(d) => (true, d),
    };
    Statement::new(&CHANGE_STOCK, vec![id.into(), add.into(), value.into(), at.to_string().into(), topic.into()])
}

/// What [`change_stock`] did; `None` when there is no such product.
pub fn stock_changed(
    batch: &mut WriteBatch,
    changed: &Changed,
    topic: &str,
) -> Result<Option<StockChange>, StoreError> {
    let Some(before) = changed.before.as_ref().map(from_row).transpose()? else { return Ok(None) };
    let after = match changed.after.as_ref().map(from_row).transpose()? {
        Some(product) => Some((product, batch.sequence(topic, changed)?)),
        None => None,
    };
    Ok(Some(StockChange { before, after }))
}

pub const CHANGE_STOCK: Sql = Sql {
    name: "sb_product_change_stock",
    types: "bigint, boolean, integer, text, text",
    // The product before (with its topic's stored sequence), then the guarded update: two
    // statements in one hand-off to SQLite's worker thread, under the batch's write lock.
    sqlite: "\
SELECT 0 AS is_after, id, sku, name, price, quantity, updated_at,
       (SELECT seq FROM topic_sequences WHERE topic = $5) AS seq
FROM products WHERE id = $1;
UPDATE products SET quantity = CASE WHEN $2 THEN quantity + $3 ELSE $3 END, updated_at = $4
WHERE id = $1 AND CASE WHEN $2 THEN quantity + $3 ELSE $3 END BETWEEN 0 AND 2147483647
RETURNING 1 AS is_after, id, sku, name, price, quantity, updated_at, NULL AS seq",
    // The same as one statement, which also bumps the topic's sequence when the update happened.
    postgres: "\
WITH cur AS (SELECT id, sku, name, price, quantity, updated_at FROM products WHERE id = $1),
upd AS (
    UPDATE products SET quantity = CASE WHEN $2 THEN products.quantity + $3 ELSE $3 END, updated_at = $4
    WHERE id = $1 AND CASE WHEN $2 THEN products.quantity + $3 ELSE $3 END BETWEEN 0 AND 2147483647
    RETURNING id, sku, name, price, quantity, updated_at
),
seq AS (
    INSERT INTO topic_sequences (topic, seq) SELECT $5, 1 FROM upd
    ON CONFLICT (topic) DO UPDATE SET seq = topic_sequences.seq + 1 RETURNING seq
)
SELECT 0::BIGINT AS is_after, cur.*, NULL::BIGINT AS seq FROM cur
UNION ALL SELECT 1::BIGINT, upd.*, seq.seq FROM upd LEFT JOIN seq ON TRUE",
};
