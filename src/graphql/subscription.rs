//! `Subscription`: each field checks the viewer once, at subscribe time, then returns the events
//! of the one broker key that carries exactly what this viewer may see ([`EventSource::events`]).
//! Filtering by key on the server means that no argument a client sends can widen what it
//! receives. Where the events come from (live, replayed from the log, shared with identical
//! subscribers) is not these resolvers' business: see [`super::source`].

use async_graphql::{Context, ID, Subscription as SubscriptionObject};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, future};

use super::context::{commerce, reader, require_staff, require_user};
use super::error::ApiError;
use super::source::EventSource;
use crate::commerce::model::{OrderEventKind, OrderStatus, parse_id};
use crate::connections::Connections;
use crate::console::snapshot::{self, ServerSnapshot};
use crate::console::tail::{self, TailEvent};
use crate::events::{
    Event, EventBody, InventoryChangePayload, Key, NotificationPayload, OrderEvent, OrderUpdatePayload,
};
use crate::rooms::Rooms;

pub struct Subscription;

/// The request's event source: every transport runs subscriptions with one (see
/// `super::operations`); a request built without one (by hand) gets one that is never fed.
fn source(ctx: &Context<'_>) -> EventSource {
    ctx.data_opt::<EventSource>().cloned().unwrap_or_default()
}

#[SubscriptionObject]
impl Subscription {
    /// Changes to one order; the stream completes when the order is deleted. With `after` (a
    /// `cursor` this subscription sent), the changes since then come first.
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
        after: Option<String>,
    ) -> Result<impl Stream<Item = OrderUpdatePayload> + use<>, ApiError> {
        let source = source(ctx);
        let after = source.resume_point(after);
        let user = require_user(ctx)?;
        let not_found = || ApiError::NotFound(format!("Order {}", order_id.as_str()));
        let id = parse_id(&order_id).ok_or_else(not_found)?;
        let customer = match commerce(ctx).store().order(reader(ctx), id).await? {
            Some(order) => order.customer_id,
            // Deleted while the client was away: its resume still gets the updates it missed and
            // the completion, authorised against the order as the log last knew it.
            None if after.is_some() => match commerce(ctx).log().latest(&Event::order_topic(id), reader(ctx)).await? {
                Some(Event { body: EventBody::Order(e), .. }) => e.order.customer_id,
                _ => return Err(not_found()),
            },
            None => return Err(not_found()),
        };
        if !user.may_see_customer(&customer) {
            return Err(ApiError::forbidden("this order belongs to another customer"));
        }
        Ok(source
            .events(Key::Order(id), after)
            .take_while(|event| {
                future::ready(!matches!(&event.body, EventBody::Order(e) if e.kind == OrderEventKind::Deleted))
            })
            .filter_map(|event| {
                future::ready(match &event.body {
                    EventBody::Order(e) if e.kind == OrderEventKind::Updated => Some(e.update_payload()),
                    _ => None,
                })
            }))
    }

    /// Stock changes of one product, or of every product when `productId` is left out. With
    /// `after`, the changes since that cursor come first.
    async fn inventory_changed(
        &self,
        ctx: &Context<'_>,
        product_id: Option<ID>,
        after: Option<String>,
    ) -> Result<impl Stream<Item = InventoryChangePayload> + use<>, ApiError> {
        let key = match product_id {
            None => Key::AllProducts,
            Some(product_id) => {
                let not_found = || ApiError::NotFound(format!("Product {}", product_id.as_str()));
                let id = parse_id(&product_id).ok_or_else(not_found)?;
                commerce(ctx).store().product(reader(ctx), id).await?.ok_or_else(not_found)?;
                Key::Product(id)
            }
        };
        Ok(source(ctx).events(key, after).filter_map(|event| {
            future::ready(match &event.body {
                EventBody::Inventory(change) => Some(change.clone()),
                _ => None,
            })
        }))
    }

    /// Notifications sent to the viewer, and to nobody else. With `after`, the ones since that
    /// cursor come first.
    async fn notification_created(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
    ) -> Result<impl Stream<Item = NotificationPayload> + use<>, ApiError> {
        let user = require_user(ctx)?;
        let key = Key::User(user.id.clone());
        Ok(source(ctx).events(key, after).filter_map(|event| {
            future::ready(match &event.body {
                EventBody::Notification(n) => Some(n.clone()),
                _ => None,
            })
        }))
    }

    /// Orders created, updated and deleted: all of them for staff, their own for customers;
    /// `status` narrows to orders that have that status after the change. With `after`, the
    /// events since that cursor come first (the same ones, filtered the same way).
    async fn order_events(
        &self,
        ctx: &Context<'_>,
        status: Option<OrderStatus>,
        after: Option<String>,
    ) -> Result<impl Stream<Item = OrderEvent> + use<>, ApiError> {
        let user = require_user(ctx)?;
        let key = if user.is_staff() { Key::AllOrders } else { Key::CustomerOrders(user.id.clone()) };
        Ok(source(ctx).events(key, after).filter_map(move |event| {
            future::ready(match &event.body {
                EventBody::Order(e) if status.is_none_or(|s| e.order.status == s) => Some(e.clone()),
                _ => None,
            })
        }))
    }

    /// For the operator console (staff and admins): a snapshot of the server at once, then one
    /// every `every` milliseconds (500 to 60000): connections by channel, subscriptions by
    /// field, events published and delivered per second, slow consumers, for every node of a
    /// cluster; rooms and members, and the `rooms` busiest rooms (0 to 100) with who is in them
    /// and who is typing.
    async fn server_stats(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(1000)")] every: Option<i32>,
        #[graphql(default_with = "Some(10)")] rooms: Option<i32>,
    ) -> Result<BoxStream<'static, ServerSnapshot>, ApiError> {
        require_staff(ctx)?;
        let every = every.unwrap_or(1000);
        let range = snapshot::MIN_EVERY.as_millis()..=snapshot::MAX_EVERY.as_millis();
        let every = u64::try_from(every).ok().filter(|ms| range.contains(&u128::from(*ms))).ok_or_else(|| {
            ApiError::BadInput(format!("every must be between {} and {} (milliseconds)", range.start(), range.end()))
        })?;
        let rooms_shown = usize::try_from(rooms.unwrap_or(10))
            .ok()
            .filter(|n| *n <= snapshot::MAX_ROOMS)
            .ok_or_else(|| ApiError::BadInput(format!("rooms must be between 0 and {}", snapshot::MAX_ROOMS)))?;
        let source = snapshot::Source {
            connections: ctx.data_unchecked::<Connections>().clone(),
            rooms: ctx.data_unchecked::<Rooms>().clone(),
            broker: commerce(ctx).broker().clone(),
            rooms_shown,
        };
        Ok(source.snapshots(std::time::Duration::from_millis(every)).boxed())
    }

    /// For the operator console (staff and admins): every event published from now on (on every
    /// node of a cluster) with its topic, sequence, kind and cursor, at most `perSecond` (1 to
    /// 100) a second. A tail for people: past that rate, or while the reader is slow, events are
    /// skipped and counted (`skipped`), never queued up. Another user's notification shows as
    /// topic `user:*` to staff (admins see every topic).
    async fn event_tail(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(20)")] per_second: Option<i32>,
    ) -> Result<BoxStream<'static, TailEvent>, ApiError> {
        let viewer = require_staff(ctx)?;
        let reveal = if viewer.is_admin() { tail::Reveal::All } else { tail::Reveal::Own(viewer.id.clone()) };
        let per_second = u32::try_from(per_second.unwrap_or(20))
            .ok()
            .filter(|n| (1..=tail::MAX_PER_SECOND).contains(n))
            .ok_or_else(|| ApiError::BadInput(format!("perSecond must be between 1 and {}", tail::MAX_PER_SECOND)))?;
        Ok(tail::tail(commerce(ctx).broker().tap(), per_second, reveal).boxed())
    }
}
