//! The operator console's subscriptions, `serverStats` and `eventTail`, over real sockets: who may
//! open them (staff and admins; anonymous viewers, customers and expired tokens are refused with
//! the codes the docs name), and that what they show follows what clients do.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const STATS: &str = "subscription($e: Int, $r: Int) { serverStats(every: $e, rooms: $r) { node
    nodes { node local ageMs connections connectionsByChannel { name count } subscriptions subscriptionsByField { name count }
            eventsPublished eventsDelivered publishedPerSecond deliveredPerSecond laggedConsumers droppedDeliveries }
    roomCount presenceMembers rooms { roomId connections memberCount members { userId name connections isTyping typingField } } } }";
const TAIL: &str = "subscription($n: Int) { eventTail(perSecond: $n) { topic sequence kind cursor at skipped } }";
const ORDER_UPDATED: &str = "subscription($o: ID!) { orderUpdated(orderId: $o) { orderId } }";

/// The first snapshot on `id` (this node's figures) for which `ready` holds, within `within`.
async fn snapshot_where(ws: &mut GqlWs, id: &str, within: Duration, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = match ws.next_within(left).await {
            Next::Json(message) => message,
            other => panic!("no matching snapshot within {within:?}: {other:?}"),
        };
        assert_eq!((message["type"].as_str(), message["id"].as_str()), (Some("next"), Some(id)), "{message}");
        let snapshot = message["payload"]["data"]["serverStats"].clone();
        if ready(&snapshot) {
            return snapshot;
        }
    }
}

/// `name`'s count in one of a node's `[NamedCount]` lists.
fn count(list: &Value, name: &str) -> i64 {
    list.as_array()
        .expect("a list")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))["count"]
        .as_i64()
        .unwrap()
}

fn local(snapshot: &Value) -> &Value {
    let node = &snapshot["nodes"][0];
    assert_eq!(node["local"], true, "{snapshot}");
    node
}

async fn notify(app: &TestApp, user: &str) {
    let q = "mutation($u: ID!) { sendNotification(input: {userId: $u, type: \"info\", title: \"t\", message: \"m\"}) { id } }";
    let body = app.gql(Some(&app.staff()), q, json!({ "u": user })).await;
    assert!(body["errors"].is_null(), "{body}");
}

#[tokio::test]
async fn anonymous_viewers_are_refused_unauthenticated() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe("s", STATS, json!({})).await;
    assert_eq!(ws.error_code("s").await, "UNAUTHENTICATED");
    ws.subscribe("t", TAIL, json!({})).await;
    assert_eq!(ws.error_code("t").await, "UNAUTHENTICATED");
}

#[tokio::test]
async fn customers_are_refused_forbidden_and_see_nothing() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws(Some(&app.token("c1", TestRole::Customer))).await;
    ws.subscribe("s", STATS, json!({})).await;
    assert_eq!(ws.error_code("s").await, "FORBIDDEN");
    ws.subscribe("t", TAIL, json!({})).await;
    assert_eq!(ws.error_code("t").await, "FORBIDDEN");
    notify(&app, "c1").await;
    ws.silent().await;
}

#[tokio::test]
async fn an_expired_staff_token_is_refused_with_4403() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws_unacked().await;
    let expired = app.token_expiring("staff-1", TestRole::Staff, -120);
    ws.send(json!({ "type": "connection_init", "payload": { "authorization": expired } })).await;
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 4403, "{reason}");
}

#[tokio::test]
async fn staff_and_admins_get_a_snapshot_at_once() {
    let app = spawn_app().await;
    for role in [TestRole::Staff, TestRole::Admin] {
        let mut ws = app.graphql_ws(Some(&app.token("ops", role))).await;
        ws.subscribe("s", STATS, json!({ "e": 60_000 })).await;
        let snapshot = ws.next_data("s").await["serverStats"].clone();
        let node = local(&snapshot);
        assert_eq!(snapshot["node"], node["node"]);
        assert!(count(&node["connectionsByChannel"], "graphql-transport-ws") >= 1, "{snapshot}");
        assert!(count(&node["subscriptionsByField"], "serverStats") >= 1, "it counts itself: {snapshot}");
        assert!(node["publishedPerSecond"].is_null(), "no rate before a second reading: {snapshot}");
    }
}

#[tokio::test]
async fn arguments_out_of_range_are_bad_user_input() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws(Some(&app.staff())).await;
    ws.subscribe("fast", STATS, json!({ "e": 10 })).await;
    assert_eq!(ws.error_code("fast").await, "BAD_USER_INPUT");
    ws.subscribe("rooms", STATS, json!({ "r": 1000 })).await;
    assert_eq!(ws.error_code("rooms").await, "BAD_USER_INPUT");
    ws.subscribe("tail", TAIL, json!({ "n": 0 })).await;
    assert_eq!(ws.error_code("tail").await, "BAD_USER_INPUT");
}

#[tokio::test]
async fn a_subscription_appears_and_disappears_within_a_second() {
    let app = spawn_app().await;
    let order = app.create_order("c1").await;
    let mut console = app.graphql_ws(Some(&app.staff())).await;
    console.subscribe("s", STATS, json!({ "e": 500 })).await;
    let first = console.next_data("s").await["serverStats"].clone();
    assert_eq!(count(&local(&first)["subscriptionsByField"], "orderUpdated"), 0, "{first}");

    let mut client = app.graphql_ws(Some(&app.token("c1", TestRole::Customer))).await;
    client.subscribe_live(&app, "o", ORDER_UPDATED, json!({ "o": order })).await;
    let shown = snapshot_where(&mut console, "s", Duration::from_secs(1), |s| {
        count(&local(s)["subscriptionsByField"], "orderUpdated") == 1
    })
    .await;
    assert_eq!(count(&local(&shown)["connectionsByChannel"], "graphql-transport-ws"), 2, "{shown}");

    client.send(json!({ "id": "o", "type": "complete" })).await;
    snapshot_where(&mut console, "s", Duration::from_secs(1), |s| {
        count(&local(s)["subscriptionsByField"], "orderUpdated") == 0
    })
    .await;
    drop(client);
    snapshot_where(&mut console, "s", Duration::from_secs(1), |s| {
        count(&local(s)["connectionsByChannel"], "graphql-transport-ws") == 1
    })
    .await;
}

#[tokio::test]
async fn the_rooms_view_shows_members_with_their_tabs_and_who_is_typing() {
    let app = spawn_app().await;
    let mut ana_1 = app.rooms_ws(&app.token("ana", TestRole::Customer)).await;
    let mut ana_2 = app.rooms_ws(&app.token("ana", TestRole::Customer)).await;
    let mut sam = app.rooms_ws(&app.token("sam", TestRole::Customer)).await;
    ana_1.join("lobby").await;
    ana_2.join("lobby").await;
    sam.join("lobby").await;
    sam.send(
        json!({ "type": "typing_indicator", "payload": { "roomId": "lobby", "isTyping": true, "field": "note" } }),
    )
    .await;

    let mut console = app.graphql_ws(Some(&app.token("root", TestRole::Admin))).await;
    console.subscribe("s", STATS, json!({ "e": 500 })).await;
    let snapshot = snapshot_where(&mut console, "s", WAIT, |s| s["rooms"][0]["members"][1]["isTyping"] == true).await;
    assert_eq!((snapshot["roomCount"].as_i64(), snapshot["presenceMembers"].as_i64()), (Some(1), Some(2)));
    let room = &snapshot["rooms"][0];
    assert_eq!(
        (room["roomId"].as_str(), room["connections"].as_i64(), room["memberCount"].as_i64()),
        (Some("lobby"), Some(3), Some(2))
    );
    let members = room["members"].as_array().unwrap();
    assert_eq!((members[0]["userId"].as_str(), members[0]["connections"].as_i64()), (Some("ana"), Some(2)));
    assert_eq!((members[1]["userId"].as_str(), members[1]["typingField"].as_str()), (Some("sam"), Some("note")));
    assert_eq!(count(&local(&snapshot)["connectionsByChannel"], "rooms"), 3);

    drop(ana_2);
    snapshot_where(&mut console, "s", WAIT, |s| s["rooms"][0]["members"][0]["connections"] == 1).await;
}

#[tokio::test]
async fn event_counts_and_rates_follow_what_is_published_and_delivered() {
    let app = spawn_app().await;
    let order = app.create_order("c1").await;
    let mut client = app.graphql_ws(Some(&app.token("c1", TestRole::Customer))).await;
    client.subscribe_live(&app, "o", ORDER_UPDATED, json!({ "o": order })).await;
    let mut console = app.graphql_ws(Some(&app.staff())).await;
    console.subscribe("s", STATS, json!({ "e": 500 })).await;
    let before = local(&console.next_data("s").await["serverStats"]).clone();

    let q = "mutation($o: ID!, $s: OrderStatus) { updateOrder(id: $o, input: {status: $s}) { id } }";
    for status in ["PROCESSING", "SHIPPED", "DELIVERED"] {
        app.gql(Some(&app.staff()), q, json!({ "o": order, "s": status })).await;
        client.next_data("o").await;
    }
    let after = snapshot_where(&mut console, "s", WAIT, |s| {
        local(s)["eventsDelivered"].as_f64() >= Some(before["eventsDelivered"].as_f64().unwrap() + 3.0)
    })
    .await;
    let after = local(&after);
    assert_eq!(after["eventsPublished"].as_f64().unwrap() - before["eventsPublished"].as_f64().unwrap(), 3.0);
    assert!(after["publishedPerSecond"].as_f64().is_some(), "{after}");
}

#[tokio::test]
async fn the_consoles_own_snapshots_are_not_counted_as_delivered_events() {
    let app = spawn_app().await;
    let mut console = app.graphql_ws(Some(&app.staff())).await;
    console.subscribe("s", STATS, json!({ "e": 500 })).await;
    console.subscribe("t", TAIL, json!({})).await;
    for _ in 0..3 {
        let snapshot = snapshot_where(&mut console, "s", WAIT, |_| true).await;
        assert_eq!(local(&snapshot)["eventsDelivered"].as_f64(), Some(0.0), "{snapshot}");
    }
}

#[tokio::test]
async fn the_tail_shows_topic_and_sequence_and_hides_other_peoples_notifications_from_staff() {
    let app = spawn_app().await;
    let product = app.create_product("TAIL-1", 3).await;
    let mut staff = app.graphql_ws(Some(&app.token("staff-2", TestRole::Staff))).await;
    staff.subscribe_live(&app, "t", TAIL, json!({})).await;
    let mut admin = app.graphql_ws(Some(&app.token("root", TestRole::Admin))).await;
    admin.subscribe_live(&app, "t", TAIL, json!({})).await;

    let set = "mutation($p: ID!) { setInventory(productId: $p, quantity: 5) { id } }";
    app.gql(Some(&app.staff()), set, json!({ "p": product })).await;
    notify(&app, "c1").await;
    notify(&app, "staff-2").await;

    let mut staff_events = Vec::new();
    let mut admin_events = Vec::new();
    for _ in 0..3 {
        staff_events.push(staff.next_data("t").await["eventTail"].clone());
        admin_events.push(admin.next_data("t").await["eventTail"].clone());
    }
    let topics = |events: &[Value]| events.iter().map(|e| e["topic"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let product_topic = format!("product:{product}");
    assert_eq!(topics(&admin_events), [product_topic.as_str(), "user:c1", "user:staff-2"]);
    assert_eq!(topics(&staff_events), [product_topic.as_str(), "user:*", "user:staff-2"]);
    let first = &admin_events[0];
    assert_eq!((first["sequence"].as_i64(), first["kind"].as_str()), (Some(1), Some("INVENTORY_CHANGED")));
    assert!(first["cursor"].as_str().is_some_and(|c| !c.is_empty()) && first["skipped"] == 0, "{first}");
}

#[tokio::test]
async fn a_tail_keeps_to_its_rate_and_counts_what_it_skipped() {
    let app = spawn_app().await;
    let product = app.create_product("TAIL-2", 0).await;
    let mut ws = app.graphql_ws(Some(&app.staff())).await;
    ws.subscribe_live(&app, "t", TAIL, json!({ "n": 1 })).await;
    let adjust = || async {
        app.gql(
            Some(&app.staff()),
            "mutation($p: ID!) { adjustInventory(productId: $p, delta: 1) { id } }",
            json!({ "p": product }),
        )
        .await;
    };
    let mut published = 7;
    for _ in 0..published {
        adjust().await;
    }
    let first = ws.next_data("t").await["eventTail"].clone();
    assert_eq!((first["sequence"].as_i64(), first["skipped"].as_i64()), (Some(1), Some(0)), "{first}");
    // At one a second, the burst is skipped; what comes once the tail has its budget back is
    // sent with the count of what it skipped, so that every event is sent or counted.
    let (mut sent, mut accounted) = (1, 1);
    let deadline = Instant::now() + WAIT;
    while accounted < published {
        assert!(Instant::now() < deadline, "{accounted} of {published} accounted for");
        match ws.next_within(Duration::from_millis(1500)).await {
            Next::Json(message) => {
                let event = &message["payload"]["data"]["eventTail"];
                sent += 1;
                accounted += 1 + event["skipped"].as_i64().unwrap();
                assert!(event["sequence"].as_i64() <= Some(published), "{message}");
            }
            Next::Silent => {
                adjust().await;
                published += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(accounted, published, "nothing counted twice");
    assert!(sent < published / 2, "{sent} of {published} sent");
}

#[tokio::test]
async fn every_subscription_field_is_counted_by_name() {
    let sdl = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/schema.graphql")).unwrap();
    let body = sdl.split("type Subscription {").nth(1).expect("a Subscription type").split("\n}").next().unwrap();
    let mut in_doc = false;
    let fields: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|line| {
            if *line == "\"\"\"" {
                in_doc = !in_doc;
                return false;
            }
            !in_doc && line.chars().next().is_some_and(char::is_lowercase)
        })
        .map(|line| line.split(['(', ':']).next().unwrap())
        .collect();
    assert!(fields.len() >= 6, "{fields:?}");
    for field in fields {
        assert!(switchboard::connections::SUBSCRIPTION_FIELDS.contains(&field), "{field} is counted as `other`");
    }
}

/// The body of `GET path`, after checking its status and content type.
async fn page(app: &TestApp, path: &str, status: u16, mime: &str) -> (reqwest::header::HeaderMap, String) {
    let response = app.http.get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), status, "{path}");
    let headers = response.headers().clone();
    if status == 200 {
        let content_type = headers["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(mime), "{path}: {content_type}");
    }
    (headers, response.text().await.unwrap())
}

#[tokio::test]
async fn the_console_page_and_its_files_are_served_from_the_binary_with_a_strict_policy() {
    let app = spawn_app().await;
    let (headers, body) = page(&app, "/console", 200, "text/html").await;
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'") && policy.contains("connect-src 'self'"), "{policy}");
    assert!(body.contains(r#""demoToken":null"#), "no token outside demo mode");
    // The pages' modules and every module they import, transitively (Switchboard's client from
    // /console/lib/, graphql-ws from /console/vendor/): each is served, by a path relative to
    // its importer (a browser resolves nothing else without a build step), and none loads
    // anything from elsewhere.
    let mut queue = vec!["/console/console.js".to_owned(), "/console/rooms.js".to_owned()];
    let mut served = std::collections::BTreeSet::new();
    while let Some(path) = queue.pop() {
        if !served.insert(path.clone()) {
            continue;
        }
        let (_, js) = page(&app, &path, 200, "text/javascript").await;
        // (A URL in a comment, such as graphql-ws's credit for its id generator, loads nothing.)
        let code = js.lines().filter(|l| !["//", "*", "/*"].iter().any(|c| l.trim_start().starts_with(c)));
        assert!(
            code.clone().all(|l| !l.contains("http://") && !l.contains("https://")),
            "{path} loads nothing from elsewhere"
        );
        let dir = &path[..path.rfind('/').unwrap() + 1];
        let statements = ["import ", "export ", "} from "];
        for line in js.lines().filter(|l| statements.iter().any(|s| l.starts_with(s))) {
            let Some(at) = line.find("from '") else { continue };
            let target = &line[at + 6..];
            let target = &target[..target.find('\'').unwrap()];
            assert!(target.starts_with("./"), "{path} imports {target:?}, which a browser cannot resolve");
            queue.push(format!("{dir}{}", &target[2..]));
        }
    }
    assert!(served.len() >= 10, "{served:?}");
    assert!(
        served.contains("/console/lib/rooms.js") && served.contains("/console/vendor/common-CGW11Fyb.js"),
        "{served:?}"
    );
    page(&app, "/console/style.css", 200, "text/css").await;
    page(&app, "/console/nothing.js", 404, "").await;
    page(&app, "/demo/rooms", 404, "").await;
    let (_, graphiql) = page(&app, "/graphql", 200, "text/html").await;
    assert!(!graphiql.contains("/demo/rooms"), "no demo link outside demo mode");
}

#[tokio::test]
async fn in_demo_mode_graphiql_links_to_the_rooms_demo_whose_tokens_join_the_demo_order() {
    let app = spawn_demo_app().await;
    let (_, graphiql) = page(&app, "/graphql", 200, "text/html").await;
    assert!(graphiql.contains(r#"href="/demo/rooms""#) && graphiql.contains(r#"href="/console""#));
    let (headers, body) = page(&app, "/demo/rooms", 200, "text/html").await;
    assert_eq!(headers["cache-control"], "no-store");
    let settings = body.split(r#"<script type="application/json" id="settings">"#).nth(1).unwrap();
    let settings: Value = serde_json::from_str(settings.split("</script>").next().unwrap()).unwrap();
    let people = settings["people"].as_array().unwrap();
    assert_eq!(people.len(), 2);

    let customer = people.iter().find(|p| p["role"] == "customer").unwrap();
    let orders = app.gql(customer["token"].as_str(), "{ orders { id orderNumber } }", json!({})).await;
    let order = orders["data"]["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["orderNumber"] == settings["orderNumber"])
        .unwrap_or_else(|| panic!("the demo order is the customer's: {orders}"))["id"]
        .clone();
    let room = format!("order:{}", order.as_str().unwrap());
    let mut ana = app.rooms_ws(customer["token"].as_str().unwrap()).await;
    ana.join(&room).await;
    let staff = people.iter().find(|p| p["role"] == "staff").unwrap();
    let mut sam = app.rooms_ws(staff["token"].as_str().unwrap()).await;
    assert_eq!(sam.join(&room).await.len(), 2);
    assert_eq!(ana.expect("user_joined_room").await["name"], staff["name"]);

    let (_, console) = page(&app, "/console", 200, "text/html").await;
    assert!(!console.contains(r#""demoToken":null"#), "demo mode offers its staff token");
}

#[tokio::test]
async fn with_a_backplane_every_node_is_shown_with_its_own_figures() {
    let redis = common::redis::RedisServer::start().await;
    let store = shared_store_url().await;
    let mut nodes = Vec::new();
    for name in ["console-a", "console-b"] {
        let (store, url) = (store.clone(), redis.url());
        nodes.push(
            spawn_app_with(move |c| {
                c.database_url = store;
                c.redis_url = Some(url);
                c.node_id = Some(name.into());
            })
            .await,
        );
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let order = a.create_order("c1").await;
    let mut client = b.graphql_ws(Some(&b.token("c1", TestRole::Customer))).await;
    client.subscribe_live(b, "o", ORDER_UPDATED, json!({ "o": order })).await;
    let mut member = b.rooms_ws(&b.token("c1", TestRole::Customer)).await;
    member.join("lobby").await;

    let mut console = a.graphql_ws(Some(&a.staff())).await;
    console.subscribe("s", STATS, json!({ "e": 500 })).await;
    let other = |s: &Value| s["nodes"].as_array().unwrap().iter().find(|n| n["node"] == "console-b").cloned();
    // The other node's figures arrive with its heartbeat, once a second: wait for one taken after
    // both of its clients were there (an earlier one can show the subscription without the room
    // connection that came next, while the room itself is already known through presence).
    let snapshot = snapshot_where(&mut console, "s", Duration::from_secs(10), |s| {
        // (A node that has not reported yet has empty lists: `count` would panic on them.)
        let has = |list: &Value, name: &str| {
            list.as_array().and_then(|l| l.iter().find(|c| c["name"] == name)).and_then(|c| c["count"].as_i64())
                == Some(1)
        };
        other(s).is_some_and(|b| {
            has(&b["subscriptionsByField"], "orderUpdated") && has(&b["connectionsByChannel"], "rooms")
        }) && s["roomCount"] == 1
    })
    .await;
    assert_eq!(snapshot["nodes"][0]["node"], "console-a", "this node first: {snapshot}");
    let b_figures = other(&snapshot).unwrap();
    assert_eq!(b_figures["local"], false);
    assert_eq!(count(&b_figures["connectionsByChannel"], "rooms"), 1, "{b_figures}");
    assert!(b_figures["ageMs"].as_i64().is_some_and(|ms| ms < 5_000), "{b_figures}");
    assert_eq!(count(&local(&snapshot)["subscriptionsByField"], "orderUpdated"), 0, "{snapshot}");
    assert_eq!(snapshot["rooms"][0]["members"][0]["userId"], "c1", "rooms of every node: {snapshot}");

    client.send(json!({ "id": "o", "type": "complete" })).await;
    snapshot_where(&mut console, "s", Duration::from_secs(10), |s| {
        other(s).is_some_and(|b| count(&b["subscriptionsByField"], "orderUpdated") == 0)
    })
    .await;
}
