//! Products and their stock.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};

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

pub async fn sku_exists(db: impl Executor<'_, Database = Any>, sku: &str) -> Result<bool, StoreError> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE sku = $1").bind(sku).fetch_one(db).await?;
    Ok(count > 0)
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

pub async fn set_quantity(conn: &mut AnyConnection, id: i64, quantity: i32, at: Timestamp) -> Result<(), StoreError> {
    sqlx::query("UPDATE products SET quantity = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(quantity)
        .bind(at.to_string())
        .execute(conn)
        .await
        .map(drop)
}
