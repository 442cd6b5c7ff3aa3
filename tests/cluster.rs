//! Several nodes as one: servers sharing one store and one Redis. Events committed on any node
//! reach the subscribers and rooms of every node, in commit order, nothing missing and nothing
//! twice, through Redis outages, restarts and a deaf connection.
//!
//! Each test starts its own `redis-server` (Debian's package) on a free port. The store is one
//! SQLite file, or a PostgreSQL schema when the suite runs against PostgreSQL.

mod common;

use std::time::Duration;

use common::redis::{DeafProxy, RedisServer};
use common::*;
use serde_json::{Value, json};

const INVENTORY: &str = "subscription($p: ID) { inventoryChanged(productId: $p) { newQuantity sequence } }";
const ORDER_UPDATED: &str = "subscription($o: ID!) { orderUpdated(orderId: $o) { trackingNumber sequence } }";
const ORDER_EVENTS: &str = "subscription { orderEvents { kind sequence order { id } } }";
const NOTIFICATIONS: &str = "subscription { notificationCreated { title sequence } }";

/// `n` nodes on one store and the Redis at `redis_url`, each past its first backplane probe.
async fn nodes(n: usize, redis_url: &str) -> Vec<TestApp> {
    let store = shared_store_url().await;
    let mut apps = Vec::new();
    for i in 0..n {
        let (store, redis) = (store.clone(), redis_url.to_owned());
        apps.push(
            spawn_app_with(move |c| {
                c.database_url = store;
                c.redis_url = Some(redis);
                c.node_id = Some(format!("node-{i}"));
            })
            .await,
        );
    }
    for app in &apps {
        wait_for_redis(app, "up").await;
    }
    apps
}

async fn ready(app: &TestApp) -> Value {
    app.http.get(app.url("/ready")).send().await.expect("ready").json().await.expect("JSON")
}

async fn wait_for_redis(app: &TestApp, state: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = ready(app).await;
        if body["redis"] == state {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "redis never became {state}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next `n` events of subscription `id`, within a generous deadline each.
async fn events(ws: &mut GqlWs, id: &str, field: &str, n: usize, within: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        match ws.next_within(within).await {
            Next::Json(message) => {
                assert_eq!((message["type"].as_str(), message["id"].as_str()), (Some("next"), Some(id)), "{message}");
                out.push(message["payload"]["data"][field].clone());
            }
            other => panic!("expected event {} of {n} on {id}, got {other:?}", out.len() + 1),
        }
    }
    out
}

fn sequences(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["sequence"].as_i64().expect("sequence")).collect()
}

#[tokio::test]
async fn a_change_on_any_node_reaches_every_subscription_on_every_node_in_order() {
    let redis = RedisServer::start().await;
    let apps = nodes(3, &redis.url()).await;
    let product = apps[0].create_product("P", 0).await;
    let order = apps[1].create_order("alice").await;
    let alice = apps[0].token("alice", TestRole::Customer);

    let mut watchers = Vec::new();
    for app in &apps {
        let mut ws = app.graphql_ws(Some(&app.staff())).await;
        ws.subscribe_live(app, "inv", INVENTORY, json!({ "p": product })).await;
        ws.subscribe_live(app, "ord", ORDER_UPDATED, json!({ "o": order })).await;
        ws.subscribe_live(app, "all", ORDER_EVENTS, json!({})).await;
        let mut mine = app.graphql_ws(Some(&alice)).await;
        mine.subscribe_live(app, "n", NOTIFICATIONS, json!({})).await;
        watchers.push((ws, mine));
    }

    // Each node makes a third of the changes, interleaved.
    for i in 0..9usize {
        let app = &apps[i % 3];
        app.set_stock(&product, i as i64 + 1).await;
        let body = app
            .gql(
                Some(&app.staff()),
                "mutation($o: ID!, $t: String!) { updateOrder(id: $o, input: {trackingNumber: $t}) { id } }",
                json!({ "o": order, "t": format!("T{i}") }),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
        let body = app
            .gql(
                Some(&app.staff()),
                "mutation($t: String!) { sendNotification(input: {userId: \"alice\", type: \"info\", title: $t, message: \"m\"}) { id } }",
                json!({ "t": format!("N{i}") }),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
    }

    for (ws, mine) in &mut watchers {
        // One socket carries three subscriptions: pick each one's events out in arrival order.
        let mut by_id: std::collections::HashMap<String, Vec<Value>> = Default::default();
        while by_id.values().map(Vec::len).sum::<usize>() < 27 {
            match ws.next_within(WAIT).await {
                Next::Json(m) => {
                    let id = m["id"].as_str().unwrap().to_owned();
                    let field = match id.as_str() {
                        "inv" => "inventoryChanged",
                        "ord" => "orderUpdated",
                        _ => "orderEvents",
                    };
                    by_id.entry(id).or_default().push(m["payload"]["data"][field].clone());
                }
                other => panic!("missing events: {other:?} after {by_id:?}"),
            }
        }
        let quantities: Vec<i64> = by_id["inv"].iter().map(|e| e["newQuantity"].as_i64().unwrap()).collect();
        assert_eq!(quantities, (1..=9).collect::<Vec<_>>());
        let tracking: Vec<&str> = by_id["ord"].iter().map(|e| e["trackingNumber"].as_str().unwrap()).collect();
        assert_eq!(tracking, (0..9).map(|i| format!("T{i}")).collect::<Vec<_>>());
        assert_eq!(sequences(&by_id["all"]), (2..=10).collect::<Vec<_>>(), "orderEvents: the 9 updates after CREATED");
        ws.silent().await;
        let notes = events(mine, "n", "notificationCreated", 9, WAIT).await;
        assert_eq!(sequences(&notes), (1..=9).collect::<Vec<_>>());
        mine.silent().await;
    }
}

/// A node's `connection_ack` cursor is where a subscription on that node starts: once a change
/// committed on another node has reached it through Redis, the ack names that change's place, and
/// a subscription sent with it (say, one cut off before its first event) gets every later change,
/// wherever it is committed, and nothing before.
#[tokio::test]
async fn the_ack_cursor_follows_what_reached_the_node() {
    let redis = RedisServer::start().await;
    let apps = nodes(2, &redis.url()).await;
    let (a, b) = (&apps[0], &apps[1]);
    let product = a.create_product("P", 0).await;
    let mut watcher = b.graphql_ws(None).await;
    watcher.subscribe_live(b, "w", INVENTORY, json!({ "p": product })).await;
    a.set_stock(&product, 1).await;
    events(&mut watcher, "w", "inventoryChanged", 1, Duration::from_secs(10)).await;
    let head = a.gql(None, "{ eventCursor }", json!({})).await["data"]["eventCursor"].clone();

    let mut acked = b.graphql_ws_unacked().await;
    acked.send(json!({ "type": "connection_init" })).await;
    let ack = acked.recv().await;
    assert_eq!(ack["payload"]["cursor"], head, "node-1's change reached node-2, and its ack says so: {ack}");
    a.set_stock(&product, 2).await;
    b.set_stock(&product, 3).await;
    let query = "subscription($p: ID, $after: String) { inventoryChanged(productId: $p, after: $after) { newQuantity sequence } }";
    acked.subscribe("s", query, json!({ "p": product, "after": ack["payload"]["cursor"] })).await;
    let got = events(&mut acked, "s", "inventoryChanged", 2, Duration::from_secs(10)).await;
    assert_eq!(sequences(&got), [2, 3]);
    acked.silent().await;
}

/// Fifty concurrent `adjustInventory(+1)` spread over three nodes that write at once (each in its
/// own batches, the batches of all three taking turns at the store's write lock): none is lost,
/// and every node's subscriber sees fifty events whose quantities and sequences chain, in
/// commit order.
#[tokio::test]
async fn fifty_concurrent_adjustments_across_three_nodes_chain_exactly() {
    let redis = RedisServer::start().await;
    let apps = nodes(3, &redis.url()).await;
    let product = apps[0].create_product("P", 100).await;
    let query = "subscription($p: ID) { inventoryChanged(productId: $p) { previousQuantity newQuantity sequence } }";
    let mut watchers = Vec::new();
    for app in &apps {
        let mut ws = app.graphql_ws(None).await;
        ws.subscribe_live(app, "s", query, json!({ "p": product })).await;
        watchers.push(ws);
    }

    let staff = apps[0].staff();
    let calls = (0..50).map(|i| {
        apps[i % 3].gql(
            Some(&staff),
            "mutation($p: ID!) { adjustInventory(productId: $p, delta: 1) { quantity } }",
            json!({ "p": product }),
        )
    });
    for body in futures::future::join_all(calls).await {
        assert!(body["errors"].is_null(), "{body}");
    }

    let body = apps[2].gql(None, "query($p: ID!) { product(id: $p) { quantity } }", json!({ "p": product })).await;
    assert_eq!(body["data"]["product"]["quantity"], 150, "an update was lost");
    for ws in &mut watchers {
        let events = events(ws, "s", "inventoryChanged", 50, WAIT).await;
        let previous: Vec<i64> = events.iter().map(|e| e["previousQuantity"].as_i64().unwrap()).collect();
        let new: Vec<i64> = events.iter().map(|e| e["newQuantity"].as_i64().unwrap()).collect();
        assert_eq!(previous, (100..150).collect::<Vec<_>>(), "quantities chain in commit order");
        assert_eq!(new, (101..151).collect::<Vec<_>>());
        assert_eq!(sequences(&events), (1..=50).collect::<Vec<_>>());
        ws.silent().await;
    }
}

#[tokio::test]
async fn the_room_relays_reach_members_on_every_node() {
    let redis = RedisServer::start().await;
    let apps = nodes(2, &redis.url()).await;
    let product = apps[0].create_product("P", 0).await;
    let order = apps[0].create_order("alice").await;
    let alice = apps[1].token("alice", TestRole::Customer);
    let mut member = apps[1].rooms_ws(&alice).await;
    member.join(&format!("order:{order}")).await;
    member.join(&format!("product:{product}")).await;

    apps[0].set_stock(&product, 5).await;
    let body = apps[0]
        .gql(
            Some(&apps[0].staff()),
            "mutation($o: ID!) { updateOrder(id: $o, input: {status: SHIPPED}) { id } }",
            json!({ "o": order }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let body = apps[0]
        .gql(
            Some(&apps[0].staff()),
            "mutation { sendNotification(input: {userId: \"alice\", type: \"info\", title: \"hi\", message: \"m\"}) { id } }",
            json!({}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");

    assert_eq!(member.expect("inventory_update").await["newQuantity"], 5);
    assert_eq!(member.expect("order_update").await["status"], "SHIPPED");
    assert_eq!(member.expect("notification").await["title"], "hi");
}

/// Redis stopped for 10 s while one node keeps changing stock: the other node's subscriber
/// still gets every change, in order, without a gap (from the log while Redis is away).
#[tokio::test]
async fn redis_stopped_for_ten_seconds_under_writes_loses_nothing() {
    let mut redis = RedisServer::start().await;
    let apps = nodes(2, &redis.url()).await;
    let product = apps[0].create_product("P", 0).await;
    let mut far = apps[1].graphql_ws(None).await;
    far.subscribe_live(&apps[1], "s", INVENTORY, json!({ "p": product })).await;

    let writer = {
        let (http, url, staff, product) =
            (apps[0].http.clone(), apps[0].url("/graphql"), apps[0].staff(), product.clone());
        tokio::spawn(async move {
            for q in 1..=150 {
                let body = json!({ "query": "mutation($p: ID!, $q: Int!) { setInventory(productId: $p, quantity: $q) { id } }", "variables": { "p": product, "q": q } });
                let response: Value =
                    http.post(&url).bearer_auth(&staff).json(&body).send().await.unwrap().json().await.unwrap();
                assert!(response["errors"].is_null(), "{response}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.stop();
    wait_for_redis(&apps[0], "down").await;
    wait_for_redis(&apps[1], "down").await;
    assert!(apps[1].metrics().await.contains("switchboard_backplane_up{node=\""), "the gauge is exported");
    assert_eq!(apps[0].metric("switchboard_backplane_up", &[]).await, 0.0);
    tokio::time::sleep(Duration::from_secs(10)).await;
    redis.restart().await;
    wait_for_redis(&apps[0], "up").await;
    wait_for_redis(&apps[1], "up").await;
    writer.await.unwrap();

    let got = events(&mut far, "s", "inventoryChanged", 150, Duration::from_secs(5)).await;
    assert_eq!(sequences(&got), (1..=150).collect::<Vec<_>>(), "a gap, a duplicate or a reordering");
    far.silent().await;
}

/// A connection that stays up but hears nothing is found by the probe, and the node catches up
/// from the log meanwhile.
#[tokio::test]
async fn a_deaf_redis_connection_is_found_and_nothing_is_lost() {
    let redis = RedisServer::start().await;
    let proxy = DeafProxy::start(redis.port).await;
    let store = shared_store_url().await;
    let (s1, s2, direct, deaf) = (store.clone(), store, redis.url(), proxy.url());
    let a = spawn_app_with(move |c| {
        c.database_url = s1;
        c.redis_url = Some(direct);
        c.node_id = Some("a".into());
    })
    .await;
    let b = spawn_app_with(move |c| {
        c.database_url = s2;
        c.redis_url = Some(deaf);
        c.node_id = Some("b".into());
    })
    .await;
    wait_for_redis(&a, "up").await;
    wait_for_redis(&b, "up").await;
    let product = a.create_product("P", 0).await;
    let mut far = b.graphql_ws(None).await;
    far.subscribe_live(&b, "s", INVENTORY, json!({ "p": product })).await;

    proxy.set_deaf(true);
    a.set_stock(&product, 1).await;
    wait_for_redis(&b, "down").await;
    a.set_stock(&product, 2).await;
    // Deaf to Redis, node b still delivers both, from the log.
    let got = events(&mut far, "s", "inventoryChanged", 2, Duration::from_secs(5)).await;
    assert_eq!(sequences(&got), [1, 2]);
    proxy.set_deaf(false);
    wait_for_redis(&b, "up").await;
    a.set_stock(&product, 3).await;
    let got = events(&mut far, "s", "inventoryChanged", 1, Duration::from_secs(5)).await;
    assert_eq!(sequences(&got), [3]);
}

/// Redis restarted empty (nothing saved): nodes resubscribe and carry on.
#[tokio::test]
async fn a_redis_restart_that_empties_it_loses_nothing() {
    let mut redis = RedisServer::start().await;
    let apps = nodes(2, &redis.url()).await;
    let product = apps[0].create_product("P", 0).await;
    let mut far = apps[1].graphql_ws(None).await;
    far.subscribe_live(&apps[1], "s", INVENTORY, json!({ "p": product })).await;
    apps[0].set_stock(&product, 1).await;
    redis.restart().await;
    apps[0].set_stock(&product, 2).await;
    wait_for_redis(&apps[1], "up").await;
    apps[0].set_stock(&product, 3).await;
    let got = events(&mut far, "s", "inventoryChanged", 3, Duration::from_secs(5)).await;
    assert_eq!(sequences(&got), [1, 2, 3]);
    far.silent().await;
}

async fn presence_query(app: &TestApp, room: &str) -> Vec<(String, i64)> {
    let body = app
        .gql(
            Some(&app.staff()),
            "query($r: String!) { roomPresence(roomId: $r) { userId connections } }",
            json!({ "r": room }),
        )
        .await;
    let mut members: Vec<(String, i64)> = body["data"]["roomPresence"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|m| (m["userId"].as_str().unwrap().to_owned(), m["connections"].as_i64().unwrap()))
        .collect();
    members.sort();
    members
}

/// Waits until `roomPresence` on `app` is `expected`.
async fn presence_becomes(app: &TestApp, room: &str, expected: &[(&str, i64)]) {
    let expected: Vec<(String, i64)> = expected.iter().map(|(u, n)| ((*u).to_owned(), *n)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = presence_query(app, room).await;
        if now == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "presence stayed {now:?}, expected {expected:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn presence_is_one_list_for_the_whole_cluster() {
    let redis = RedisServer::start().await;
    let apps = nodes(3, &redis.url()).await;
    let (ann, bob) = (apps[0].token("ann", TestRole::Customer), apps[0].token("bob", TestRole::Customer));

    let mut ann_a = apps[0].rooms_ws(&ann).await;
    assert_eq!(ann_a.join("lobby").await.len(), 1);
    // Replication takes a moment: wait for it, as a second user would in practice.
    presence_becomes(&apps[1], "lobby", &[("ann", 1)]).await;
    let mut bob_b = apps[1].rooms_ws(&bob).await;
    // Bob, on another node, sees Ann in the list; Ann hears Bob arrive.
    let members = bob_b.join("lobby").await;
    let ids: Vec<&str> = members.iter().map(|m| m["userId"].as_str().unwrap()).collect();
    assert!(ids.contains(&"ann") && ids.contains(&"bob"), "{members:?}");
    assert_eq!(ann_a.expect("user_joined_room").await["userId"], "bob");

    // Ann's second tab on a third node: one member with two connections, announced to nobody.
    let mut ann_c = apps[2].rooms_ws(&ann).await;
    ann_c.join("lobby").await;
    for app in &apps {
        presence_becomes(app, "lobby", &[("ann", 2), ("bob", 1)]).await;
    }
    bob_b.silent().await;

    // Typing crosses nodes and stops by itself.
    ann_a.send(json!({ "type": "typing_indicator", "payload": { "roomId": "lobby", "isTyping": true } })).await;
    let typing = bob_b.expect("typing_indicator").await;
    assert_eq!((typing["userId"].as_str(), typing["isTyping"].as_bool()), (Some("ann"), Some(true)));
    let stopped = bob_b.expect("typing_indicator").await;
    assert_eq!(stopped["isTyping"], false, "the indicator stops by itself");

    // isUserOnline and stats answer for the cluster, on any node.
    let online = apps[2]
        .gql(Some(&apps[2].staff()), "{ bob: isUserOnline(userId: \"bob\") nobody: isUserOnline(userId: \"zed\") stats { userCount activeRooms } }", json!({}))
        .await;
    assert_eq!(online["data"]["bob"], true, "{online}");
    assert_eq!(online["data"]["nobody"], false);
    assert_eq!(online["data"]["stats"]["userCount"], 2);
    assert_eq!(online["data"]["stats"]["activeRooms"], 1);

    // Ann's tabs close one by one: she leaves everywhere with the last one, wherever it was.
    drop(ann_a);
    for app in &apps {
        presence_becomes(app, "lobby", &[("ann", 1), ("bob", 1)]).await;
    }
    bob_b.silent().await;
    drop(ann_c);
    assert_eq!(bob_b.expect("user_left_room").await["userId"], "ann");
    for app in &apps {
        presence_becomes(app, "lobby", &[("bob", 1)]).await;
    }
}

/// A node that dies (no goodbye, no heartbeat) has its members removed everywhere within 10 s,
/// with `user_left_room`. The dead node is played by hand in Redis: its heartbeat, its stored
/// presence and its announcement, then silence.
#[tokio::test]
async fn a_dead_nodes_members_leave_everywhere_within_ten_seconds() {
    let redis = RedisServer::start().await;
    let apps = nodes(2, &redis.url()).await;
    let bob = apps[0].token("bob", TestRole::Customer);
    let mut bob_a = apps[0].rooms_ws(&bob).await;
    bob_a.join("lobby").await;

    let epoch = apps[0].state.commerce.log().epoch().to_owned();
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stored = json!({ "name": "Ghost", "joined_at": "2026-01-01T00:00:00.000Z", "count": 1 }).to_string();
    let announce = json!({ "t": "count", "node": "ghost", "room": "lobby", "user": "ghost", "name": "Ghost", "joined_at": "2026-01-01T00:00:00.000Z", "count": 1 }).to_string();
    let _: () = ::redis::pipe()
        .pset_ex(format!("switchboard:{epoch}:node:ghost"), "{\"connections\":1,\"subscriptions\":0}", 3000)
        .sadd(format!("switchboard:{epoch}:nodes"), "ghost")
        .hset(format!("switchboard:{epoch}:presence:ghost"), "r\u{1f}lobby\u{1f}ghost", stored)
        .publish(format!("switchboard:{epoch}:presence"), announce)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(bob_a.expect("user_joined_room").await["userId"], "ghost");
    presence_becomes(&apps[1], "lobby", &[("bob", 1), ("ghost", 1)]).await;

    // The ghost node's heartbeat runs out; nobody says goodbye.
    let started = tokio::time::Instant::now();
    let left = loop {
        match bob_a.next_within(Duration::from_secs(10)).await {
            Next::Json(m) if m["type"] == "user_left_room" => break m,
            Next::Json(_) => continue,
            other => panic!("the dead node's member never left: {other:?}"),
        }
    };
    assert_eq!(left["payload"]["userId"], "ghost");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    presence_becomes(&apps[1], "lobby", &[("bob", 1)]).await;
}

/// A node that shuts down takes its members with it at once.
#[tokio::test]
async fn a_node_that_shuts_down_removes_its_members_at_once() {
    let redis = RedisServer::start().await;
    let mut apps = nodes(2, &redis.url()).await;
    let (ann, bob) = (apps[0].token("ann", TestRole::Customer), apps[0].token("bob", TestRole::Customer));
    let mut bob_a = apps[0].rooms_ws(&bob).await;
    bob_a.join("lobby").await;
    let mut ann_b = apps[1].rooms_ws(&ann).await;
    ann_b.join("lobby").await;
    assert_eq!(bob_a.expect("user_joined_room").await["userId"], "ann");

    let leaving = apps.pop().unwrap();
    let started = tokio::time::Instant::now();
    leaving.stop().await;
    assert_eq!(bob_a.expect("user_left_room").await["userId"], "ann");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    drop(ann_b);
}

/// Redis restarted empty (nothing saved): every node writes its presence back whole, so that each
/// list stays whole, and nobody sees a member leave and come back meanwhile. Before, a node whose
/// writes had not failed never rewrote its part: after the others' next resynchronisation its
/// members vanished from every other node (with `user_left_room`) until they moved again.
#[tokio::test]
async fn a_redis_restart_that_empties_it_keeps_presence_whole() {
    let mut redis = RedisServer::start().await;
    let apps = nodes(2, &redis.url()).await;
    let (ann, bob) = (apps[0].token("ann", TestRole::Customer), apps[0].token("bob", TestRole::Customer));
    let mut ann_a = apps[0].rooms_ws(&ann).await;
    ann_a.join("lobby").await;
    presence_becomes(&apps[1], "lobby", &[("ann", 1)]).await;
    let mut bob_b = apps[1].rooms_ws(&bob).await;
    bob_b.join("lobby").await;
    assert_eq!(ann_a.expect("user_joined_room").await["userId"], "bob");
    presence_becomes(&apps[0], "lobby", &[("ann", 1), ("bob", 1)]).await;

    redis.restart().await;
    // Past a node's time to live and a full resynchronisation, neither member hears anything.
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(7);
    for ws in [&mut ann_a, &mut bob_b] {
        match ws.next_within(quiet_until.saturating_duration_since(tokio::time::Instant::now())).await {
            Next::Silent => {}
            other => panic!("a member heard something while Redis came back empty: {other:?}"),
        }
    }
    for app in &apps {
        wait_for_redis(app, "up").await;
        presence_becomes(app, "lobby", &[("ann", 1), ("bob", 1)]).await;
    }
    // Presence still crosses nodes.
    drop(bob_b);
    assert_eq!(ann_a.expect("user_left_room").await["userId"], "bob");
    presence_becomes(&apps[0], "lobby", &[("ann", 1)]).await;
}
