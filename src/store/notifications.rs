//! Notifications, each addressed to one user.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};

use super::batch::{Changed, Sql, Statement, WriteBatch};
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

/// Creates a notification (in a batch) for its user, whose topic (`user:<id>`) is `topic`;
/// [`created`] reads the outcome.
pub fn create(new: &NewNotification<'_>, topic: &str) -> Statement {
    let values = vec![
        new.user_id.into(),
        new.kind.into(),
        new.title.into(),
        new.message.into(),
        new.at.to_string().into(),
        topic.into(),
    ];
    Statement::new(&CREATE, values)
}

/// The notification [`create`] made, with the sequence its event takes on `topic` (see
/// [`WriteBatch`]).
pub fn created(batch: &mut WriteBatch, changed: &Changed, topic: &str) -> Result<(Notification, u64), StoreError> {
    let notification = from_row(changed.after.as_ref().ok_or(sqlx::Error::RowNotFound)?)?;
    Ok((notification, batch.sequence(topic, changed)?))
}

pub const CREATE: Sql = Sql {
    name: "sb_notification_create",
    types: "text, text, text, text, text, text",
    sqlite: "\
INSERT INTO notifications (user_id, type, title, message, created_at) VALUES ($1, $2, $3, $4, $5)
RETURNING 1 AS is_after, id, user_id, type, title, message, read, created_at,
          (SELECT seq FROM topic_sequences WHERE topic = $6) AS seq",
    postgres: "\
WITH ins AS (
    INSERT INTO notifications (user_id, type, title, message, created_at) VALUES ($1, $2, $3, $4, $5)
    RETURNING id, user_id, type, title, message, read, created_at
),
seq AS (
    INSERT INTO topic_sequences (topic, seq) SELECT $6, 1 FROM ins
    ON CONFLICT (topic) DO UPDATE SET seq = topic_sequences.seq + 1 RETURNING seq
)
SELECT 1::BIGINT AS is_after, ins.*, seq.seq FROM ins LEFT JOIN seq ON TRUE",
};

/// Marks a notification read (in a batch); [`marked`] reads the outcome.
pub fn mark_read(id: i64) -> Statement {
    Statement::new(&MARK_READ, vec![id.into()])
}

/// The notification [`mark_read`] marked; `None` when there is no such notification.
pub fn marked(changed: &Changed) -> Result<Option<Notification>, StoreError> {
    changed.after.as_ref().map(from_row).transpose()
}

pub const MARK_READ: Sql = Sql {
    name: "sb_notification_mark_read",
    types: "bigint",
    sqlite: "UPDATE notifications SET read = 1 WHERE id = $1
             RETURNING 1 AS is_after, id, user_id, type, title, message, read, created_at, NULL AS seq",
    postgres: "UPDATE notifications SET read = 1 WHERE id = $1
               RETURNING 1::BIGINT AS is_after, id, user_id, type, title, message, read, created_at, NULL::BIGINT AS seq",
};
