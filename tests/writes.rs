//! The writer's group commit, seen from outside: changes that wait together are made in one
//! batch (one transaction, one `COMMIT`), each change one statement, and a change that is refused,
//! fails or panics fails alone. Runs against SQLite, and against PostgreSQL when the suite does.
//!
//! To put known changes in one batch, a test first closes a gate in the writer's queue
//! (`common::gate`).

mod common;

use std::time::Duration;

use common::*;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use switchboard::commerce::model::Timestamp;
use switchboard::commerce::{Change, ChangeTx, CommerceError, WriterStats};
use switchboard::store::Backend;
use switchboard::store::notifications::{self, NewNotification};

/// A change whose code panics after it has written.
struct Panics;

impl Change for Panics {
    type Output = ();
    fn apply<'a>(&'a self, tx: &'a mut ChangeTx<'_>) -> BoxFuture<'a, Result<(), CommerceError>> {
        Box::pin(async move {
            ghost_notification(tx).await;
            panic!("a bug in a change");
        })
    }
}

/// A change that writes, then breaks a constraint (on PostgreSQL that aborts the transaction).
struct BreaksAConstraint;

impl Change for BreaksAConstraint {
    type Output = ();
    fn apply<'a>(&'a self, tx: &'a mut ChangeTx<'_>) -> BoxFuture<'a, Result<(), CommerceError>> {
        Box::pin(async move {
            ghost_notification(tx).await;
            sqlx::query("INSERT INTO store_probe (id, at) VALUES (7, 'a'), (7, 'b')")
                .execute(tx.batch().conn())
                .await?;
            Ok(())
        })
    }
}

/// Writes a notification for the user `ghost`, whom no test change writes to otherwise.
async fn ghost_notification(tx: &mut ChangeTx<'_>) {
    let new = NewNotification { user_id: "ghost", kind: "info", title: "boo", message: "", at: Timestamp::now() };
    tx.batch().run(&notifications::create(&new, "user:ghost")).await.expect("written");
}

const ADJUST: &str = "mutation($p: ID!, $d: Int!) { adjustInventory(productId: $p, delta: $d) { quantity } }";
const INVENTORY: &str = "subscription($p: ID, $after: String) { inventoryChanged(productId: $p, after: $after) { \
                         previousQuantity newQuantity sequence cursor } }";

/// Sends `adjustInventory(delta)` in a task of its own; its response body.
fn adjust(app: &TestApp, product: &str, delta: i32) -> tokio::task::JoinHandle<Value> {
    let (http, url, staff) = (app.http.clone(), app.url("/graphql"), app.staff());
    let body = json!({ "query": ADJUST, "variables": { "p": product, "d": delta } });
    tokio::spawn(
        async move { http.post(url).bearer_auth(staff).json(&body).send().await.unwrap().json().await.unwrap() },
    )
}

fn stats_since(app: &TestApp, before: WriterStats) -> WriterStats {
    let now = app.state.commerce.writer_stats();
    WriterStats {
        commits: now.commits - before.commits,
        failed: now.failed - before.failed,
        restarts: now.restarts - before.restarts,
        statements: now.statements - before.statements,
        round_trips: now.round_trips - before.round_trips,
        changes: now.changes - before.changes,
        largest_batch: now.largest_batch,
        queued: now.queued,
    }
}

/// The positions of events' cursors (`<epoch>.<position>`).
fn positions(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["cursor"].as_str().unwrap().rsplit_once('.').unwrap().1.parse().unwrap()).collect()
}

#[tokio::test]
async fn changes_that_wait_together_commit_together_one_statement_each() {
    let app = spawn_app().await;
    let product = app.create_product("P", 100).await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe_live(&app, "s", INVENTORY, json!({ "p": product })).await;

    // Fifty adjustments queue behind a gate, so that one batch takes them all.
    let gate = gate::close(&app).await;
    let before = app.state.commerce.writer_stats();
    let calls: Vec<_> = (0..50).map(|_| adjust(&app, &product, 1)).collect();
    gate.open_when_queued(&app, 50).await;
    for call in calls {
        let body = call.await.unwrap();
        assert!(body["errors"].is_null(), "{body}");
    }

    let stats = stats_since(&app, before);
    assert_eq!(stats.commits, 2, "the gate's batch, then one batch of fifty: {stats:?}");
    assert_eq!(stats.largest_batch, 50, "{stats:?}");
    // The gate's batch: BEGIN and COMMIT. The fifty: BEGIN, one statement each, the append, COMMIT
    // (on PostgreSQL followed by the wait for its flush, outside the log's lock).
    let statements = match app.state.commerce.store().backend() {
        Backend::Sqlite => 2 + 50 + 3,
        Backend::Postgres => 3 + 50 + 4,
    };
    assert_eq!(stats.statements, statements, "one statement per change: {stats:?}");
    // SQLite: a hand-off to its worker thread each; PostgreSQL: BEGIN, the fifty in one round
    // trip, then the append, COMMIT and the wait for the flush in one.
    let round_trips = match app.state.commerce.store().backend() {
        Backend::Sqlite => 2 + 50 + 3,
        Backend::Postgres => 2 + 3,
    };
    assert_eq!(stats.round_trips, round_trips, "{stats:?}");

    let mut events = Vec::new();
    for _ in 0..50 {
        events.push(ws.next_data("s").await["inventoryChanged"].clone());
    }
    ws.silent().await;
    let previous: Vec<i64> = events.iter().map(|e| e["previousQuantity"].as_i64().unwrap()).collect();
    let new: Vec<i64> = events.iter().map(|e| e["newQuantity"].as_i64().unwrap()).collect();
    let sequences: Vec<i64> = events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
    assert_eq!(previous, (100..150).collect::<Vec<_>>(), "quantities chain");
    assert_eq!(new, (101..151).collect::<Vec<_>>());
    assert_eq!(sequences, (1..=50).collect::<Vec<_>>());
    let positions = positions(&events);
    assert!(positions.windows(2).all(|w| w[1] == w[0] + 1), "positions gap-free in commit order: {positions:?}");
    let body = app.gql(None, "query($p: ID!) { product(id: $p) { quantity } }", json!({ "p": product })).await;
    assert_eq!(body["data"]["product"]["quantity"], 150);

    // Resuming from before the batch replays exactly the fifty.
    let mut again = app.graphql_ws(None).await;
    let first = events[0]["cursor"].as_str().unwrap();
    let (epoch, _) = first.rsplit_once('.').unwrap();
    let after = format!("{epoch}.{}", positions[0] - 1);
    again.subscribe("r", INVENTORY, json!({ "p": product, "after": after })).await;
    for expected in &events {
        assert_eq!(&again.next_data("r").await["inventoryChanged"], expected);
    }
}

#[tokio::test]
async fn a_refused_change_in_a_batch_fails_alone_and_publishes_nothing() {
    let app = spawn_app().await;
    let product = app.create_product("P", 5).await;
    let other = app.create_product("Q", 0).await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe_live(&app, "s", INVENTORY, json!({})).await;

    let gate = gate::close(&app).await;
    let before = app.state.commerce.writer_stats();
    let mut calls = Vec::new();
    for i in 0..21 {
        // The eleventh asks for more than there is; the others add to another product.
        calls.push(if i == 10 { adjust(&app, &product, -6) } else { adjust(&app, &other, 1) });
    }
    gate.open_when_queued(&app, 21).await;
    let mut refused = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        let body = call.await.unwrap();
        if body["errors"].is_null() {
            assert_ne!(i, 10, "{body}");
        } else {
            assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
            assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
            let message = body["errors"][0]["message"].as_str().unwrap();
            assert!(message.contains(&format!("product {product} has 5")), "{message}");
            refused.push(i);
        }
    }
    assert_eq!(refused, [10], "only the change that asked too much is refused");
    let stats = stats_since(&app, before);
    assert_eq!((stats.commits, stats.failed, stats.restarts, stats.largest_batch), (2, 0, 0, 21), "{stats:?}");

    // Twenty events, all of the other product, quantities chaining; none of the refused one.
    let mut events = Vec::new();
    for _ in 0..20 {
        events.push(ws.next_data("s").await["inventoryChanged"].clone());
    }
    ws.silent().await;
    let new: Vec<i64> = events.iter().map(|e| e["newQuantity"].as_i64().unwrap()).collect();
    assert_eq!(new, (1..=20).collect::<Vec<_>>());
    let quantity = |p: &str| {
        let q = "query($p: ID!) { product(id: $p) { quantity } }";
        let (app, p) = (&app, p.to_owned());
        async move { app.gql(None, q, json!({ "p": p })).await["data"]["product"]["quantity"].as_i64().unwrap() }
    };
    assert_eq!((quantity(&product).await, quantity(&other).await), (5, 20));
}

#[tokio::test]
async fn a_panicking_change_fails_alone_and_the_writer_lives_on() {
    let app = spawn_app().await;
    let product = app.create_product("P", 0).await;
    let mut ghost = app.graphql_ws(Some(&app.token("ghost", TestRole::Customer))).await;
    ghost.subscribe_live(&app, "g", "subscription { notificationCreated { title } }", json!({})).await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe_live(&app, "s", INVENTORY, json!({ "p": product })).await;

    let gate = gate::close(&app).await;
    let before = app.state.commerce.writer_stats();
    let first: Vec<_> = (0..5).map(|_| adjust(&app, &product, 1)).collect();
    let commerce = app.state.commerce.clone();
    let panics = tokio::spawn(async move { commerce.change(Panics).await });
    tokio::time::sleep(Duration::from_millis(20)).await; // queued in this order
    let commerce = app.state.commerce.clone();
    let breaks = tokio::spawn(async move { commerce.change(BreaksAConstraint).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let last: Vec<_> = (0..5).map(|_| adjust(&app, &product, 1)).collect();
    gate.open_when_queued(&app, 12).await;

    let panicked = panics.await.expect("the caller's task itself does not panic");
    assert!(matches!(&panicked, Err(CommerceError::Internal(m)) if m.contains("a bug in a change")), "{panicked:?}");
    let broke = breaks.await.unwrap();
    assert!(matches!(&broke, Err(CommerceError::Store(_))), "{broke:?}");
    for call in first.into_iter().chain(last) {
        let body = call.await.unwrap();
        assert!(body["errors"].is_null(), "another caller's failure reached this one: {body}");
    }
    let stats = stats_since(&app, before);
    assert_eq!((stats.restarts, stats.failed), (2, 0), "the batch ran again without each: {stats:?}");

    // The ten adjustments are made and published in order; what the failed changes wrote is not.
    for expected in 1..=10 {
        assert_eq!(ws.next_data("s").await["inventoryChanged"]["newQuantity"], expected);
    }
    ws.silent().await;
    ghost.silent().await;
    let ghosts = app.gql(Some(&app.token("ghost", TestRole::Customer)), "{ notifications { id } }", json!({})).await;
    assert_eq!(ghosts["data"]["notifications"], json!([]), "a failed change's write was kept");

    // The writer lives on.
    let body = adjust(&app, &product, 1).await.unwrap();
    assert_eq!(body["data"]["adjustInventory"]["quantity"], 11, "{body}");
    assert_eq!(ws.next_data("s").await["inventoryChanged"]["newQuantity"], 11);
}

#[tokio::test]
async fn a_change_whose_caller_went_away_is_made_and_published() {
    let app = spawn_app().await;
    let product = app.create_product("P", 0).await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe_live(&app, "s", INVENTORY, json!({ "p": product })).await;

    let gate = gate::close(&app).await;
    let commerce = app.state.commerce.clone();
    let id: i64 = product.parse().unwrap();
    let caller = tokio::spawn(async move { commerce.adjust_inventory(id, 3).await });
    while app.state.commerce.writer_stats().queued < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The caller goes away while its change waits in the queue.
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    gate.open_when_queued(&app, 1).await;

    assert_eq!(ws.next_data("s").await["inventoryChanged"]["newQuantity"], 3);
    let body = app.gql(None, "query($p: ID!) { product(id: $p) { quantity } }", json!({ "p": product })).await;
    assert_eq!(body["data"]["product"]["quantity"], 3);
}

/// On PostgreSQL a batch's statements travel as `EXECUTE`s with their values written as literals:
/// text that looks like SQL, quotes, backslashes and dollar quotes is stored exactly as given,
/// beside other changes of the same batch, and a NUL (which PostgreSQL refuses) fails its change
/// alone.
#[tokio::test]
async fn text_of_every_kind_is_stored_exactly_as_given_in_a_batch() {
    let app = spawn_app().await;
    let texts =
        ["it's", "a\\'); DROP TABLE notifications; --", "$$ $tag$ E'x' \\\\ é 😀", "line\nbreak\ttab", "%s {0} ?1 $1"];
    let gate = gate::close(&app).await;
    let mut calls = Vec::new();
    for text in texts.iter().chain(["nul\u{0}here"].iter()) {
        let commerce = app.state.commerce.clone();
        let text = text.to_string();
        calls.push(tokio::spawn(async move { commerce.send_notification("texts", "info", &text, &text).await }));
        // One after the other into the queue, so that the NUL comes last.
        while app.state.commerce.writer_stats().queued < calls.len() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    gate.open_when_queued(&app, texts.len() + 1).await;
    let mut stored = Vec::new();
    for call in calls.drain(..texts.len()) {
        let notification = call.await.unwrap().expect("stored");
        assert_eq!(notification.title, notification.message);
        stored.push(notification.title);
    }
    assert_eq!(stored, texts, "what the store returned");
    let with_nul = calls.pop().unwrap().await.unwrap();
    match app.state.commerce.store().backend() {
        // PostgreSQL refuses a NUL in text, as it does when it is a parameter.
        Backend::Postgres => assert!(with_nul.is_err(), "{with_nul:?}"),
        Backend::Sqlite => assert_eq!(with_nul.expect("stored").title, "nul\u{0}here"),
    }
    let body = app
        .gql(Some(&app.token("texts", TestRole::Customer)), "{ notifications(first: 10) { title message } }", json!({}))
        .await;
    let mut read: Vec<String> = body["data"]["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap().to_owned())
        .collect();
    read.retain(|t| !t.starts_with("nul"));
    read.reverse();
    assert_eq!(read, texts, "what a later read returns");
}
