//! "Delivered" is counted once, where an event's result is handed to its transport, with its
//! channel: one event to the members of one shared group, live and resumed, on graphql-ws and on
//! SSE, adds exactly that many to each channel of `switchboard_events_delivered_total`.
//!
//! A file of its own: `/metrics` is per process, and this test asserts exact deltas.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

const INVENTORY: &str =
    "subscription($p: ID, $after: String) { inventoryChanged(productId: $p, after: $after) { newQuantity cursor } }";
const EACH: usize = 3;

async fn delivered(app: &TestApp, channel: &str) -> f64 {
    app.metric("switchboard_events_delivered_total", &[&format!("channel=\"{channel}\"")]).await
}

#[tokio::test]
async fn one_event_to_n_members_of_a_group_counts_n_per_channel() {
    let app = spawn_app().await;
    let product = app.create_product("P", 0).await;
    // A first event, whose cursor the resumed subscribers come back from.
    let mut probe = app.graphql_ws(None).await;
    probe.subscribe_live(&app, "s", INVENTORY, json!({ "p": product })).await;
    app.set_stock(&product, 1).await;
    let cursor = probe.next_data("s").await["inventoryChanged"]["cursor"].as_str().unwrap().to_owned();
    drop(probe);
    app.set_stock(&product, 2).await;

    let mut ws = Vec::new();
    let mut sse = Vec::new();
    for n in 0..2 * EACH {
        let resumed = n >= EACH;
        let mut client = app.graphql_ws(None).await;
        let variables = if resumed { json!({ "p": product, "after": cursor }) } else { json!({ "p": product }) };
        client.subscribe_live(&app, "s", INVENTORY, variables).await;
        if resumed {
            assert_eq!(client.next_data("s").await["inventoryChanged"]["newQuantity"], 2, "replayed");
        }
        ws.push(client);
        let before = app.state.connections.subscription_count();
        let mut request = app.sse_request(Method::POST, None).header("accept", "text/event-stream");
        if resumed {
            request = request.header("last-event-id", &cursor);
        }
        let response =
            request.json(&json!({ "query": INVENTORY, "variables": { "p": product } })).send().await.unwrap();
        let mut stream = common::sse::Stream::new(response);
        app.await_subscriptions(before, 1).await;
        if resumed {
            assert_eq!(stream.next().await.json()["data"]["inventoryChanged"]["newQuantity"], 2, "replayed");
        }
        sse.push(stream);
    }
    assert_eq!(app.state.fanout.group_count(), 1, "one group for all twelve");

    let (graphql_before, sse_before, rooms_before) =
        (delivered(&app, "graphql").await, delivered(&app, "sse").await, delivered(&app, "rooms").await);
    app.set_stock(&product, 3).await;
    for client in &mut ws {
        assert_eq!(client.next_data("s").await["inventoryChanged"]["newQuantity"], 3);
    }
    for stream in &mut sse {
        assert_eq!(stream.next().await.json()["data"]["inventoryChanged"]["newQuantity"], 3);
    }
    assert_eq!(delivered(&app, "graphql").await - graphql_before, (2 * EACH) as f64);
    assert_eq!(delivered(&app, "sse").await - sse_before, (2 * EACH) as f64);
    assert_eq!(delivered(&app, "rooms").await - rooms_before, 0.0);
}
