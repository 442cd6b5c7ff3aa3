//! `Subscription`: each field checks the viewer once, at subscribe time, then listens on the one
//! broker key that carries exactly what this viewer may see. Filtering by key on the server means
//! that no argument a client sends can widen what it receives.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_graphql::{Context, ID, Subscription as SubscriptionObject};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, future};

use super::error::ApiError;
use super::fanout::{Handover, Probe, ReplayOnly, Source};
use super::{SubscriberSettings, commerce, reader, require_staff, require_user};
use crate::console::snapshot::{self, ServerSnapshot};
use crate::console::tail::{self, TailEvent};
use crate::model::{OrderEventKind, OrderStatus, parse_id};
use crate::pubsub::{
    Event, EventBody, InventoryChangePayload, Key, NotificationPayload, OrderEvent, OrderUpdatePayload,
};
use crate::registry::Registry;
use crate::rooms::Rooms;
use crate::slow_consumer::SlowConsumer;

pub struct Subscription;

/// Where a transport resumes a subscription that did not pass `after` itself: the SSE transport
/// sets it from `Last-Event-ID` (whose value is a cursor it sent as an event's `id:`), so that
/// `EventSource`, which reconnects on its own, resumes without the query declaring `$after`.
/// An explicit `after` argument wins.
#[derive(Debug, Clone)]
pub struct ResumeFrom(pub String);

/// The log position of the event the subscription's source yielded last, for a transport that
/// must know which event a response came from (SSE's `id:` is the event's cursor, selected or
/// not). async-graphql resolves one source item at a time (it pulls an item, resolves it, yields
/// the response, and only then pulls the next), so read right after a response is yielded it is
/// that response's event. Clones share the cell; 0 means no event yet.
#[derive(Debug, Clone, Default)]
pub struct EventPosition(Arc<AtomicU64>);

impl EventPosition {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, position: u64) {
        self.0.store(position, Ordering::Release);
    }
}

/// The cursor to resume from: the field's `after`, else the transport's [`ResumeFrom`].
fn resume_point(ctx: &Context<'_>, after: Option<String>) -> Option<String> {
    after.or_else(|| ctx.data_opt::<ResumeFrom>().map(|r| r.0.clone()))
}

/// Records each event's position in the request's [`EventPosition`], if it has one.
fn recorded(ctx: &Context<'_>, events: BoxStream<'static, Arc<Event>>) -> BoxStream<'static, Arc<Event>> {
    match ctx.data_opt::<EventPosition>().cloned() {
        None => events,
        Some(cell) => events.inspect(move |event| cell.set(event.position)).boxed(),
    }
}

/// The events of `key`, for a viewer already found to be allowed them; with `after`, first every
/// event since that cursor (see [`crate::event_log`]).
///
/// Four cases (see [`super::fanout`]): a probe run deposits a fresh broker subscription in the
/// probe (with the cursor it resumes from, if any) and returns nothing; a shared group's run takes
/// over the probe's subscription; a resuming member's own run ([`ReplayOnly`]) replays from the
/// log and stops, recording where; any other run (a subscription that cannot be shared)
/// subscribes for itself, counts itself, and replays first when resuming. Every run records the
/// position of each event it yields in the request's [`EventPosition`], if it has one.
async fn listen(
    ctx: &Context<'_>,
    field: &'static str,
    key: Key,
    after: Option<&str>,
) -> Result<BoxStream<'static, Arc<Event>>, ApiError> {
    let queue = ctx.data_unchecked::<SubscriberSettings>().queue;
    let commerce = commerce(ctx);
    let broker = commerce.broker();
    if let Some(probe) = ctx.data_opt::<Probe>() {
        let consumer = SlowConsumer::new();
        let subscription = broker.subscribe(key.clone(), queue, &consumer);
        probe.found(Source { field, key, subscription, consumer, after: after.map(str::to_owned) });
        return Ok(stream::empty().boxed());
    }
    if let Some(seam) = ctx.data_opt::<ReplayOnly>() {
        let Some(after) = after else { return Ok(stream::empty().boxed()) };
        let replay = commerce.log().replay(&key, after, reader(ctx)).await?;
        seam.set_through(replay.through);
        return Ok(recorded(ctx, seam.track(replay.events)));
    }
    if let Some(subscription) = ctx.data_opt::<Handover>().and_then(Handover::take) {
        return Ok(recorded(ctx, subscription.boxed()));
    }
    // The connection running the operation is the consumer (its socket closes when slow).
    let consumer = ctx.data_opt::<SlowConsumer>().cloned().unwrap_or_default();
    // Live first, then the log: the order that makes the seam exact.
    let subscription = broker.subscribe(key.clone(), queue, &consumer);
    let counted = ctx.data_unchecked::<Registry>().subscription(field);
    let live = subscription.map(move |event| {
        let _alive = &counted;
        event
    });
    let Some(after) = after else { return Ok(recorded(ctx, live.boxed())) };
    let replay = commerce.log().replay(&key, after, reader(ctx)).await?;
    let through = replay.through;
    let resumed = stream::iter(replay.events).chain(live.filter(move |event| future::ready(event.position > through)));
    Ok(recorded(ctx, resumed.boxed()))
}

/// A probe run (see [`super::fanout`]) of a subscription that is never shared: checked, then
/// nothing, so that the transport runs it on its own.
fn probing(ctx: &Context<'_>) -> bool {
    ctx.data_opt::<Probe>().is_some()
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
        let after = resume_point(ctx, after);
        let user = require_user(ctx)?;
        let not_found = || ApiError::NotFound(format!("Order {}", order_id.as_str()));
        let id = parse_id(&order_id).ok_or_else(not_found)?;
        let customer = match commerce(ctx).store().order(reader(ctx), id).await? {
            Some(order) => order.customer_id,
            // Deleted while the client was away: its resume still gets the updates it missed and
            // the completion, authorised against the order as the log last knew it. The same
            // holds for a shared group's own run when the order was deleted after the probe found
            // it: the probe's broker subscription, which this run takes over, holds the deletion.
            None if after.is_some() || ctx.data_opt::<Handover>().is_some() => {
                match commerce(ctx).log().latest(&Event::order_topic(id), reader(ctx)).await? {
                    Some(Event { body: EventBody::Order(e), .. }) => e.order.customer_id,
                    _ => return Err(not_found()),
                }
            }
            None => return Err(not_found()),
        };
        if !user.may_see_customer(&customer) {
            return Err(ApiError::forbidden("this order belongs to another customer"));
        }
        Ok(listen(ctx, "orderUpdated", Key::Order(id), after.as_deref())
            .await?
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
        let after = resume_point(ctx, after);
        let key = match product_id {
            None => Key::AllProducts,
            Some(product_id) => {
                let not_found = || ApiError::NotFound(format!("Product {}", product_id.as_str()));
                let id = parse_id(&product_id).ok_or_else(not_found)?;
                commerce(ctx).store().product(reader(ctx), id).await?.ok_or_else(not_found)?;
                Key::Product(id)
            }
        };
        Ok(listen(ctx, "inventoryChanged", key, after.as_deref()).await?.filter_map(|event| {
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
        let after = resume_point(ctx, after);
        let user = require_user(ctx)?;
        let key = Key::User(user.id.clone());
        Ok(listen(ctx, "notificationCreated", key, after.as_deref()).await?.filter_map(|event| {
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
        let after = resume_point(ctx, after);
        let user = require_user(ctx)?;
        let key = if user.is_staff() { Key::AllOrders } else { Key::CustomerOrders(user.id.clone()) };
        Ok(listen(ctx, "orderEvents", key, after.as_deref()).await?.filter_map(move |event| {
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
        if probing(ctx) {
            return Ok(stream::empty().boxed());
        }
        let registry = ctx.data_unchecked::<Registry>();
        let source = snapshot::Source {
            registry: registry.clone(),
            rooms: ctx.data_unchecked::<Rooms>().clone(),
            broker: commerce(ctx).broker().clone(),
            rooms_shown,
            counted: registry.subscription("serverStats"),
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
        if probing(ctx) {
            return Ok(stream::empty().boxed());
        }
        let counted = ctx.data_unchecked::<Registry>().subscription("eventTail");
        Ok(tail::tail(commerce(ctx).broker().tap(), per_second, reveal, counted).boxed())
    }
}
