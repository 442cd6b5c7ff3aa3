//! Notifications, each addressed to one user.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};

use super::{StoreError, by_id, decode, flag};
use crate::commerce::model::{Notification, Timestamp};

const COLUMNS: &str = "id, user_id, type, title, message, read, created_at";

fn from_row(row: &AnyRow) -> Result<Notification, StoreError> {
    Ok(Notification {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        kind: row.try_get("type")?,
        title: row.try_get("title")?,
        message: row.try_get("message")?,
        read: flag(row, "read")?,
        created_at: decode(row, "created_at")?,
    })
}

pub async fn get(db: impl Executor<'_, Database = Any>, id: i64) -> Result<Option<Notification>, StoreError> {
    by_id(db, "notifications", COLUMNS, id, from_row).await
}

/// One user's notifications, newest first.
pub async fn list_for(
    db: impl Executor<'_, Database = Any>,
    user_id: &str,
    unread_only: bool,
    limit: i64,
) -> Result<Vec<Notification>, StoreError> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND ($2 = 0 OR read = 0) ORDER BY id DESC LIMIT $3"
    ))
    .bind(user_id)
    .bind(i64::from(unread_only))
    .bind(limit)
    .fetch_all(db)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

pub struct NewNotification<'a> {
    pub user_id: &'a str,
    pub kind: &'a str,
    pub title: &'a str,
    pub message: &'a str,
    pub at: Timestamp,
}

pub async fn insert(conn: &mut AnyConnection, new: NewNotification<'_>) -> Result<Notification, StoreError> {
    let row = sqlx::query(&format!(
        "INSERT INTO notifications (user_id, type, title, message, created_at) VALUES ($1, $2, $3, $4, $5)
         RETURNING {COLUMNS}"
    ))
    .bind(new.user_id)
    .bind(new.kind)
    .bind(new.title)
    .bind(new.message)
    .bind(new.at.to_string())
    .fetch_one(conn)
    .await?;
    from_row(&row)
}

pub async fn mark_read(db: impl Executor<'_, Database = Any>, id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE notifications SET read = 1 WHERE id = $1").bind(id).execute(db).await.map(drop)
}
