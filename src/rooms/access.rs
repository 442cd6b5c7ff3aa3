//! Who may enter which room (`docs/rooms.md`), shared by `join_room` on `/ws` and by the
//! `roomPresence` query so that the two can never disagree.
//!
//! - `order:<id>`: staff, admins and that order's customer (the order must exist);
//! - `product:<id>`: any signed-in user (the product must exist);
//! - `user:<id>`: that user and admins;
//! - anything else: any signed-in user.

use crate::auth::User;
use crate::commerce::model::parse_id;
use crate::store::{Reader, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("internal error")]
    Store(#[from] StoreError),
}

/// Room ids match `^[A-Za-z0-9_.:-]{1,128}$`.
pub fn check_id(room_id: &str) -> Result<(), Denied> {
    let valid = (1..=128).contains(&room_id.len())
        && room_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if valid { Ok(()) } else { Err(Denied::BadRequest("roomId must match ^[A-Za-z0-9_.:-]{1,128}$".into())) }
}

pub async fn check(user: &User, room_id: &str, store: &Store) -> Result<(), Denied> {
    check_id(room_id)?;
    if let Some(id) = room_id.strip_prefix("order:") {
        let order = match parse_id(id) {
            Some(n) => store.order(Reader::SignedIn, n).await?,
            None => None,
        };
        let order = order.ok_or_else(|| Denied::NotFound(format!("Order {id}")))?;
        if !user.may_see_customer(&order.customer_id) {
            return Err(Denied::Forbidden("this order belongs to another customer".into()));
        }
    } else if let Some(id) = room_id.strip_prefix("product:") {
        let product = match parse_id(id) {
            Some(n) => store.product(Reader::SignedIn, n).await?,
            None => None,
        };
        product.ok_or_else(|| Denied::NotFound(format!("Product {id}")))?;
    } else if let Some(id) = room_id.strip_prefix("user:")
        && !(user.is_admin() || user.id == id)
    {
        return Err(Denied::Forbidden("only that user and admins may join".into()));
    }
    Ok(())
}
