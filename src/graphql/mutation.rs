//! `Mutation`: changes, each authorised here and then made (stored and published) by
//! [`crate::commerce`]. A refused mutation never reaches the store.

use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object};

use super::context::{commerce, require_staff, require_user};
use super::error::{ApiError, ApiResult};
use crate::commerce::OrderChanges;
use crate::commerce::model::{Decimal, Notification, Order, OrderStatus, PaymentStatus, Product, parse_id};
use crate::store::{Reader, notifications};

pub struct Mutation;

#[derive(InputObject)]
struct CreateOrderInput {
    customer_id: Option<ID>,
    total: Decimal,
    #[graphql(default_with = "Some(\"USD\".to_owned())")]
    currency: Option<String>,
}

#[derive(InputObject)]
struct UpdateOrderInput {
    status: Option<OrderStatus>,
    payment_status: Option<PaymentStatus>,
    /// Null clears it; leaving it out leaves it alone.
    tracking_number: MaybeUndefined<String>,
}

#[derive(InputObject)]
struct CreateProductInput {
    sku: String,
    name: String,
    price: Decimal,
    #[graphql(default_with = "Some(0)")]
    quantity: Option<i32>,
}

#[derive(InputObject)]
struct SendNotificationInput {
    user_id: ID,
    #[graphql(name = "type")]
    kind: String,
    title: String,
    message: String,
}

fn id_of(id: &ID, what: &str) -> ApiResult<i64> {
    parse_id(id).ok_or_else(|| ApiError::NotFound(format!("{what} {}", id.as_str())))
}

#[Object]
impl Mutation {
    /// Customers order for themselves; staff for anyone.
    async fn create_order(&self, ctx: &Context<'_>, input: CreateOrderInput) -> ApiResult<Order> {
        let user = require_user(ctx)?;
        let customer_id = input.customer_id.map_or_else(|| user.id.clone(), |id| id.0);
        if !user.is_staff() && customer_id != user.id {
            return Err(ApiError::forbidden("customers can only order for themselves"));
        }
        let currency = input.currency.unwrap_or_else(|| "USD".to_owned());
        Ok(commerce(ctx).create_order(&customer_id, input.total, &currency).await?)
    }

    async fn update_order(&self, ctx: &Context<'_>, id: ID, input: UpdateOrderInput) -> ApiResult<Order> {
        require_staff(ctx)?;
        let changes = OrderChanges {
            status: input.status,
            payment_status: input.payment_status,
            tracking_number: match input.tracking_number {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(v) => Some(Some(v)),
            },
        };
        Ok(commerce(ctx).update_order(id_of(&id, "Order")?, changes).await?)
    }

    async fn delete_order(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Order> {
        require_staff(ctx)?;
        Ok(commerce(ctx).delete_order(id_of(&id, "Order")?).await?)
    }

    async fn create_product(&self, ctx: &Context<'_>, input: CreateProductInput) -> ApiResult<Product> {
        require_staff(ctx)?;
        Ok(commerce(ctx).create_product(&input.sku, &input.name, input.price, input.quantity.unwrap_or(0)).await?)
    }

    /// Adds `delta` to the stock (negative to take away); stock never goes below zero.
    async fn adjust_inventory(&self, ctx: &Context<'_>, product_id: ID, delta: i32) -> ApiResult<Product> {
        require_staff(ctx)?;
        Ok(commerce(ctx).adjust_inventory(id_of(&product_id, "Product")?, delta).await?)
    }

    async fn set_inventory(&self, ctx: &Context<'_>, product_id: ID, quantity: i32) -> ApiResult<Product> {
        require_staff(ctx)?;
        Ok(commerce(ctx).set_inventory(id_of(&product_id, "Product")?, quantity).await?)
    }

    async fn send_notification(&self, ctx: &Context<'_>, input: SendNotificationInput) -> ApiResult<Notification> {
        require_staff(ctx)?;
        Ok(commerce(ctx).send_notification(&input.user_id, &input.kind, &input.title, &input.message).await?)
    }

    /// Everyone, staff included, marks only their own notifications.
    async fn mark_notification_read(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Notification> {
        let user = require_user(ctx)?;
        let id = id_of(&id, "Notification")?;
        let commerce = commerce(ctx);
        let notification = commerce
            .store()
            .read(Reader::SignedIn, move |db| async move { notifications::get(&db, id).await })
            .await?
            .ok_or(ApiError::NotFound(format!("Notification {id}")))?;
        if notification.user_id != user.id {
            return Err(ApiError::forbidden("this notification belongs to another user"));
        }
        Ok(commerce.mark_notification_read(id).await?)
    }
}
