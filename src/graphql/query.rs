//! `Query`: reads, each checked against who is asking.

use async_graphql::{Context, ID, Object, SimpleObject};

use super::context::{commerce, page_size, reader, require_staff, require_user, viewer};
use super::error::{ApiError, ApiResult};
use crate::auth::Role;
use crate::commerce::model::{Notification, Order, OrderStatus, PresenceUser, Product, parse_id};
use crate::connections::Connections;
use crate::rooms::{self, Rooms};
use crate::store::{notifications, orders, products};

pub struct Query;

#[derive(SimpleObject)]
#[graphql(name = "Viewer")]
struct ViewerObject {
    user_id: ID,
    role: Role,
    name: Option<String>,
}

#[derive(SimpleObject)]
struct RoomStats {
    room_id: String,
    client_count: i32,
}

#[derive(SimpleObject)]
struct ServerStats {
    user_count: i32,
    total_connections: i32,
    active_subscriptions: i32,
    active_rooms: i32,
    room_stats: Vec<RoomStats>,
}

#[Object]
impl Query {
    /// The signed-in user, or null when anonymous.
    async fn me(&self, ctx: &Context<'_>) -> Option<ViewerObject> {
        viewer(ctx).map(|u| ViewerObject { user_id: ID(u.id.clone()), role: u.role, name: u.name.clone() })
    }

    /// One order: staff see any, customers their own (FORBIDDEN otherwise); null when none.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Order>> {
        let user = require_user(ctx)?;
        let Some(id) = parse_id(&id) else { return Ok(None) };
        let Some(order) = commerce(ctx).store().order(reader(ctx), id).await? else { return Ok(None) };
        if !user.may_see_customer(&order.customer_id) {
            return Err(ApiError::forbidden("this order belongs to another customer"));
        }
        Ok(Some(order))
    }

    /// Orders, newest first: all of them for staff, their own for customers.
    async fn orders(
        &self,
        ctx: &Context<'_>,
        status: Option<OrderStatus>,
        #[graphql(default_with = "Some(50)")] first: Option<i32>,
    ) -> ApiResult<Vec<Order>> {
        let user = require_user(ctx)?;
        let customer = (!user.is_staff()).then_some(user.id.as_str());
        let (customer, limit) = (customer.map(str::to_owned), page_size(first, 50)?);
        let list = move |db| async move { orders::list(&db, customer.as_deref(), status, limit).await };
        Ok(commerce(ctx).store().read(reader(ctx), list).await?)
    }

    async fn product(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Product>> {
        let Some(id) = parse_id(&id) else { return Ok(None) };
        Ok(commerce(ctx).store().product(reader(ctx), id).await?)
    }

    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(100)")] first: Option<i32>,
    ) -> ApiResult<Vec<Product>> {
        let limit = page_size(first, 100)?;
        Ok(commerce(ctx).store().read(reader(ctx), move |db| async move { products::list(&db, limit).await }).await?)
    }

    /// The viewer's own notifications, newest first.
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(false)")] unread_only: Option<bool>,
        #[graphql(default_with = "Some(50)")] first: Option<i32>,
    ) -> ApiResult<Vec<Notification>> {
        let user = require_user(ctx)?;
        let (user, unread_only, limit) = (user.id.clone(), unread_only.unwrap_or(false), page_size(first, 50)?);
        let list = move |db| async move { notifications::list_for(&db, &user, unread_only, limit).await };
        Ok(commerce(ctx).store().read(reader(ctx), list).await?)
    }

    /// Who is in a room, one entry per person; the same rules as joining it apply.
    async fn room_presence(&self, ctx: &Context<'_>, room_id: String) -> ApiResult<Vec<PresenceUser>> {
        let user = require_user(ctx)?;
        if !user.is_staff() {
            rooms::access::check(user, &room_id, commerce(ctx).store()).await?;
        } else {
            rooms::access::check_id(&room_id)?;
        }
        Ok(ctx.data_unchecked::<Rooms>().presence(&room_id))
    }

    /// The cursor of the event log's head now, for anyone: it names a place, not an event.
    /// Subscribing with it as `after` delivers every matching event committed after it, so a
    /// client that takes one before it subscribes loses nothing to a drop before its first event.
    async fn event_cursor(&self, ctx: &Context<'_>) -> ApiResult<String> {
        Ok(commerce(ctx).log().head_cursor().await?)
    }

    async fn is_user_online(&self, ctx: &Context<'_>, user_id: ID) -> ApiResult<bool> {
        require_staff(ctx)?;
        Ok(ctx.data_unchecked::<Connections>().is_online(&user_id))
    }

    async fn stats(&self, ctx: &Context<'_>) -> ApiResult<ServerStats> {
        require_staff(ctx)?;
        let connections = ctx.data_unchecked::<Connections>();
        let rooms = ctx.data_unchecked::<Rooms>().stats();
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        Ok(ServerStats {
            user_count: count(connections.user_count()),
            total_connections: count(connections.cluster_connection_count()),
            active_subscriptions: count(connections.cluster_subscription_count()),
            active_rooms: count(rooms.len()),
            room_stats: rooms.into_iter().map(|(room_id, n)| RoomStats { room_id, client_count: count(n) }).collect(),
        })
    }
}
