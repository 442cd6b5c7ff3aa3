//! GraphQL over HTTP: identity, every row of the authorization table in `docs/contract.md`
//! (refusals included), error codes, values, and bad input.

mod common;

use common::*;
use serde_json::{Value, json};

fn customer(app: &TestApp, sub: &str) -> String {
    app.token(sub, TestRole::Customer)
}

#[tokio::test]
async fn me_is_null_for_anonymous_and_self_otherwise() {
    let app = spawn_app().await;
    let q = "{ me { userId role name } }";
    assert_eq!(app.gql(None, q, json!({})).await, json!({ "data": { "me": null } }));
    let body = app.gql(Some(&app.token("a1", TestRole::Admin)), q, json!({})).await;
    assert_eq!(body["data"]["me"], json!({ "userId": "a1", "role": "ADMIN", "name": "User a1" }));
}

#[tokio::test]
async fn a_present_but_bad_token_is_refused_with_401() {
    let app = spawn_app().await;
    // Garbage, and an unsigned (`alg: none`) token.
    for token in ["garbage", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4IiwiZXhwIjo0MDAwMDAwMDAwfQ."] {
        let (status, body) = app.post(Some(token), "{ me { userId } }", json!({})).await;
        assert_eq!(status, 401, "{token}: {body}");
        assert_eq!(error_code(&body), "UNAUTHENTICATED");
    }
    let other_key = switchboard::auth::Keys::new(b"another", None, None).sign("u", TestRole::Admin, None, 60);
    assert_eq!(app.post(Some(&other_key), "{ me { userId } }", json!({})).await.0, 401);
}

/// A token's role is one of `customer`, `staff`, `admin`, exactly: `ADMIN` grants nothing.
#[tokio::test]
async fn roles_are_matched_exactly_in_lowercase() {
    let app = spawn_app().await;
    let with_role = |role: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({ "sub": "u1", "role": role, "exp": 4_000_000_000u64 }),
            &jsonwebtoken::EncodingKey::from_secret(b"test-secret"),
        )
        .unwrap()
    };
    let body = app.gql(Some(&with_role("admin")), "{ me { role } }", json!({})).await;
    assert_eq!(body["data"]["me"]["role"], "ADMIN");
    for spelled in ["ADMIN", "Admin", "STAFF"] {
        let (status, body) = app.post(Some(&with_role(spelled)), "{ stats { userCount } }", json!({})).await;
        assert_eq!(status, 401, "{spelled}: {body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("unknown role"), "{body}");
    }
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let app = spawn_app_with(|c| {
        c.jwt_issuer = Some("shop".into());
        c.jwt_audience = Some("web".into());
    })
    .await;
    assert_eq!(app.post(Some(&app.staff()), "{ me { userId } }", json!({})).await.0, 200);
    let foreign = switchboard::auth::Keys::new(b"test-secret", Some("other".into()), Some("web".into())).sign(
        "u",
        TestRole::Staff,
        None,
        60,
    );
    assert_eq!(app.post(Some(&foreign), "{ me { userId } }", json!({})).await.0, 401);
    let bare = switchboard::auth::Keys::new(b"test-secret", None, None).sign("u", TestRole::Staff, None, 60);
    assert_eq!(app.post(Some(&bare), "{ me { userId } }", json!({})).await.0, 401);
}

#[tokio::test]
async fn products_are_public() {
    let app = spawn_app().await;
    let id = app.create_product("P-1", 3).await;
    for token in [None, Some(customer(&app, "c1")), Some(app.staff())] {
        let body = app
            .gql(
                token.as_deref(),
                "query($id: ID!) { product(id: $id) { sku quantity price } products { id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(body["data"]["product"], json!({ "sku": "P-1", "quantity": 3, "price": "9.99" }));
        assert_eq!(body["data"]["products"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn order_is_for_its_customer_and_staff() {
    let app = spawn_app().await;
    let id = app.create_order("c1").await;
    let q = "query($id: ID!) { order(id: $id) { id customerId total } }";
    let vars = json!({ "id": id });
    assert_eq!(error_code(&app.gql(None, q, vars.clone()).await), "UNAUTHENTICATED");
    assert_eq!(error_code(&app.gql(Some(&customer(&app, "c2")), q, vars.clone()).await), "FORBIDDEN");
    let own = app.gql(Some(&customer(&app, "c1")), q, vars.clone()).await;
    assert_eq!(own["data"]["order"], json!({ "id": id, "customerId": "c1", "total": "12.50" }));
    let staff = app.gql(Some(&app.staff()), q, vars.clone()).await;
    assert_eq!(staff["data"]["order"]["id"], id);
    let admin = app.gql(Some(&app.token("a", TestRole::Admin)), q, vars).await;
    assert_eq!(admin["data"]["order"]["id"], id);
    let missing = app.gql(Some(&app.staff()), q, json!({ "id": "424242" })).await;
    assert_eq!(missing["data"]["order"], Value::Null);
}

#[tokio::test]
async fn orders_are_filtered_to_the_customer_and_whole_for_staff() {
    let app = spawn_app().await;
    let mine = app.create_order("c1").await;
    app.create_order("c2").await;
    let q = "{ orders { id customerId } }";
    assert_eq!(error_code(&app.gql(None, q, json!({})).await), "UNAUTHENTICATED");
    let body = app.gql(Some(&customer(&app, "c1")), q, json!({})).await;
    assert_eq!(body["data"]["orders"], json!([{ "id": mine, "customerId": "c1" }]));
    let body = app.gql(Some(&app.staff()), q, json!({})).await;
    assert_eq!(body["data"]["orders"].as_array().unwrap().len(), 2);
    let filtered = app.gql(Some(&app.staff()), "{ orders(status: SHIPPED) { id } }", json!({})).await;
    assert_eq!(filtered["data"]["orders"], json!([]));
    let first = app.gql(Some(&app.staff()), "{ orders(first: 1) { id } }", json!({})).await;
    assert_eq!(first["data"]["orders"].as_array().unwrap().len(), 1);
    let negative = app.gql(Some(&app.staff()), "{ orders(first: -1) { id } }", json!({})).await;
    assert_eq!(error_code(&negative), "BAD_USER_INPUT");
}

#[tokio::test]
async fn create_order_is_for_self_unless_staff() {
    let app = spawn_app().await;
    let q = "mutation($c: ID) { createOrder(input: {customerId: $c, total: \"12.50\"}) { customerId status paymentStatus total currency orderNumber } }";
    assert_eq!(error_code(&app.gql(None, q, json!({})).await), "UNAUTHENTICATED");
    let own = app.gql(Some(&customer(&app, "c1")), q, json!({})).await;
    let order = &own["data"]["createOrder"];
    assert_eq!(
        (order["customerId"].as_str(), order["status"].as_str(), order["paymentStatus"].as_str()),
        (Some("c1"), Some("PENDING"), Some("PENDING"))
    );
    assert_eq!((order["total"].as_str(), order["currency"].as_str()), (Some("12.50"), Some("USD")));
    let explicit_self = app.gql(Some(&customer(&app, "c1")), q, json!({ "c": "c1" })).await;
    assert!(explicit_self["errors"].is_null());
    assert_ne!(order["orderNumber"], explicit_self["data"]["createOrder"]["orderNumber"], "order numbers are unique");
    let for_other = app.gql(Some(&customer(&app, "c1")), q, json!({ "c": "c2" })).await;
    assert_eq!(error_code(&for_other), "FORBIDDEN");
    let by_staff = app.gql(Some(&app.staff()), q, json!({ "c": "c2" })).await;
    assert_eq!(by_staff["data"]["createOrder"]["customerId"], "c2");
    // The refused one was not stored.
    let all = app.gql(Some(&app.staff()), "{ orders { customerId } }", json!({})).await;
    assert_eq!(all["data"]["orders"].as_array().unwrap().len(), 3);
}

/// Each staff-only mutation: anonymous → UNAUTHENTICATED, customer → FORBIDDEN (and nothing
/// changes), staff and admin → done.
#[tokio::test]
async fn staff_only_mutations_refuse_everyone_else_and_change_nothing() {
    let app = spawn_app().await;
    let product = app.create_product("P-1", 10).await;
    let order = app.create_order("c1").await;
    let cases = [
        ("mutation($o: ID!) { updateOrder(id: $o, input: {status: SHIPPED}) { status } }", "updateOrder"),
        ("mutation($p: ID!) { adjustInventory(productId: $p, delta: 1) { quantity } }", "adjustInventory"),
        ("mutation($p: ID!) { setInventory(productId: $p, quantity: 99) { quantity } }", "setInventory"),
        ("mutation { createProduct(input: {sku: \"NEW\", name: \"n\", price: \"1.00\"}) { id } }", "createProduct"),
        (
            "mutation { sendNotification(input: {userId: \"c1\", type: \"t\", title: \"t\", message: \"m\"}) { id } }",
            "sendNotification",
        ),
        ("mutation($o: ID!) { deleteOrder(id: $o) { id } }", "deleteOrder"),
    ];
    let vars = json!({ "o": order, "p": product });
    for (q, name) in cases {
        assert_eq!(error_code(&app.gql(None, q, vars.clone()).await), "UNAUTHENTICATED", "{name}");
        assert_eq!(error_code(&app.gql(Some(&customer(&app, "c1")), q, vars.clone()).await), "FORBIDDEN", "{name}");
    }
    let state = "query($o: ID!, $p: ID!) { order(id: $o) { status } product(id: $p) { quantity } products { id } notifications { id } }";
    let unchanged = app.gql(Some(&app.token("c1", TestRole::Customer)), state, vars.clone()).await;
    assert_eq!(unchanged["data"]["order"]["status"], "PENDING");
    assert_eq!(unchanged["data"]["product"]["quantity"], 10);
    assert_eq!(unchanged["data"]["products"].as_array().unwrap().len(), 1);
    assert_eq!(unchanged["data"]["notifications"], json!([]));
    for (i, (q, name)) in cases.into_iter().enumerate() {
        let token = if i % 2 == 0 { app.staff() } else { app.token("a1", TestRole::Admin) };
        let body = app.gql(Some(&token), q, vars.clone()).await;
        assert!(body["errors"].is_null(), "{name}: {body}");
    }
}

#[tokio::test]
async fn notifications_are_each_users_own_even_for_staff() {
    let app = spawn_app().await;
    let send = "mutation($u: ID!) { sendNotification(input: {userId: $u, type: \"info\", title: \"Hi\", message: \"m\"}) { id userId read } }";
    let to_c1 = app.gql(Some(&app.staff()), send, json!({ "u": "c1" })).await["data"]["sendNotification"]["id"].clone();
    app.gql(Some(&app.staff()), send, json!({ "u": "staff-1" })).await;
    let list = "{ notifications { id userId type title read } }";
    assert_eq!(error_code(&app.gql(None, list, json!({})).await), "UNAUTHENTICATED");
    let c1 = app.gql(Some(&customer(&app, "c1")), list, json!({})).await;
    assert_eq!(
        c1["data"]["notifications"],
        json!([{ "id": to_c1, "userId": "c1", "type": "info", "title": "Hi", "read": false }])
    );
    let staff = app.gql(Some(&app.staff()), list, json!({})).await;
    assert_eq!(staff["data"]["notifications"].as_array().unwrap().len(), 1, "staff see only their own");
    assert_eq!(staff["data"]["notifications"][0]["userId"], "staff-1");

    let mark = "mutation($id: ID!) { markNotificationRead(id: $id) { read } }";
    let vars = json!({ "id": to_c1 });
    assert_eq!(error_code(&app.gql(None, mark, vars.clone()).await), "UNAUTHENTICATED");
    assert_eq!(error_code(&app.gql(Some(&customer(&app, "c2")), mark, vars.clone()).await), "FORBIDDEN");
    assert_eq!(error_code(&app.gql(Some(&app.staff()), mark, vars.clone()).await), "FORBIDDEN");
    assert_eq!(app.gql(Some(&customer(&app, "c1")), mark, vars).await["data"]["markNotificationRead"]["read"], true);
    let unread = app.gql(Some(&customer(&app, "c1")), "{ notifications(unreadOnly: true) { id } }", json!({})).await;
    assert_eq!(unread["data"]["notifications"], json!([]));
    let missing = app.gql(Some(&customer(&app, "c1")), mark, json!({ "id": "999" })).await;
    assert_eq!(error_code(&missing), "NOT_FOUND");
}

#[tokio::test]
async fn online_and_stats_are_for_staff() {
    let app = spawn_app().await;
    for q in
        ["{ isUserOnline(userId: \"x\") }", "{ stats { userCount totalConnections activeSubscriptions activeRooms } }"]
    {
        assert_eq!(error_code(&app.gql(None, q, json!({})).await), "UNAUTHENTICATED");
        assert_eq!(error_code(&app.gql(Some(&customer(&app, "c1")), q, json!({})).await), "FORBIDDEN");
        assert!(app.gql(Some(&app.staff()), q, json!({})).await["errors"].is_null());
    }
    // A signed-in graphql-ws connection makes its user online and counts in stats.
    let _ws = app.graphql_ws(Some(&customer(&app, "c9"))).await;
    let body = app
        .gql(Some(&app.staff()), "{ isUserOnline(userId: \"c9\") stats { userCount totalConnections } }", json!({}))
        .await;
    assert_eq!(body["data"], json!({ "isUserOnline": true, "stats": { "userCount": 1, "totalConnections": 1 } }));
}

#[tokio::test]
async fn room_presence_follows_the_room_rules() {
    let app = spawn_app().await;
    let order = app.create_order("c1").await;
    let q = "query($r: String!) { roomPresence(roomId: $r) { userId } }";
    assert_eq!(error_code(&app.gql(None, q, json!({ "r": "lobby" })).await), "UNAUTHENTICATED");
    let c1 = customer(&app, "c1");
    let c2 = customer(&app, "c2");
    assert_eq!(app.gql(Some(&c1), q, json!({ "r": "lobby" })).await["data"]["roomPresence"], json!([]));
    assert_eq!(
        app.gql(Some(&c1), q, json!({ "r": format!("order:{order}") })).await["data"]["roomPresence"],
        json!([])
    );
    assert_eq!(error_code(&app.gql(Some(&c2), q, json!({ "r": format!("order:{order}") })).await), "FORBIDDEN");
    assert_eq!(error_code(&app.gql(Some(&c2), q, json!({ "r": "user:c1" })).await), "FORBIDDEN");
    assert_eq!(error_code(&app.gql(Some(&c2), q, json!({ "r": "bad room!" })).await), "BAD_USER_INPUT");
    assert!(app.gql(Some(&app.staff()), q, json!({ "r": "user:c1" })).await["errors"].is_null());
}

#[tokio::test]
async fn stock_never_goes_below_zero_and_values_are_checked() {
    let app = spawn_app().await;
    let product = app.create_product("P-1", 2).await;
    let staff = app.staff();
    let adjust = "mutation($p: ID!, $d: Int!) { adjustInventory(productId: $p, delta: $d) { quantity } }";
    assert_eq!(error_code(&app.gql(Some(&staff), adjust, json!({ "p": product, "d": -3 })).await), "BAD_USER_INPUT");
    let set = "mutation($p: ID!, $q: Int!) { setInventory(productId: $p, quantity: $q) { quantity } }";
    assert_eq!(error_code(&app.gql(Some(&staff), set, json!({ "p": product, "q": -1 })).await), "BAD_USER_INPUT");
    assert_eq!(error_code(&app.gql(Some(&staff), set, json!({ "p": "999", "q": 1 })).await), "NOT_FOUND");
    assert_eq!(error_code(&app.gql(Some(&staff), set, json!({ "p": "abc", "q": 1 })).await), "NOT_FOUND");
    let body = app.gql(Some(&staff), "query($p: ID!) { product(id: $p) { quantity } }", json!({ "p": product })).await;
    assert_eq!(body["data"]["product"]["quantity"], 2);

    let create = "mutation($t: Decimal!) { createOrder(input: {total: $t}) { total } }";
    for bad in [json!("1e3"), json!("abc"), json!(12.5), json!("-1.00")] {
        assert_eq!(error_code(&app.gql(Some(&staff), create, json!({ "t": bad })).await), "BAD_USER_INPUT", "{bad}");
    }
    for (given, kept) in [("12.50", "12.50"), ("0.10", "0.10"), ("100", "100")] {
        let body = app.gql(Some(&staff), create, json!({ "t": given })).await;
        assert_eq!(body["data"]["createOrder"]["total"], kept);
    }
    let literal = app
        .gql(
            Some(&staff),
            "mutation { createOrder(input: {total: \"7.00\", currency: \"eur\"}) { total currency } }",
            json!({}),
        )
        .await;
    assert_eq!(literal["data"]["createOrder"], json!({ "total": "7.00", "currency": "EUR" }));
    let currency = app
        .gql(Some(&staff), "mutation { createOrder(input: {total: \"7\", currency: \"EURO\"}) { id } }", json!({}))
        .await;
    assert_eq!(error_code(&currency), "BAD_USER_INPUT");
    let unknown_enum = app.gql(Some(&staff), "{ orders(status: LOST) { id } }", json!({})).await;
    assert_eq!(error_code(&unknown_enum), "BAD_USER_INPUT");
    let duplicate_sku = "mutation { createProduct(input: {sku: \"P-1\", name: \"again\", price: \"1.00\"}) { id } }";
    assert_eq!(error_code(&app.gql(Some(&staff), duplicate_sku, json!({})).await), "BAD_USER_INPUT");
}

/// The GraphQL spec fails a request whose required variable has no value before anything runs;
/// async-graphql alone failed only the field reading it, after the fields before it had run.
#[tokio::test]
async fn a_required_variable_without_a_value_fails_the_request_before_anything_runs() {
    let app = spawn_app().await;
    let product = app.create_product("P-1", 2).await;
    let both = "mutation($p: ID!, $q: Int!) { a: adjustInventory(productId: $p, delta: 1) { quantity } \
                b: setInventory(productId: $p, quantity: $q) { quantity } }";
    let body = app.gql(Some(&app.staff()), both, json!({ "p": product })).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("$q"), "{body}");
    assert!(body["data"].is_null(), "{body}");
    let stock = app.gql(None, "query($p: ID!) { product(id: $p) { quantity } }", json!({ "p": product })).await;
    assert_eq!(stock["data"]["product"]["quantity"], 2, "the first mutation did not run");
    let null = app.gql(Some(&app.staff()), both, json!({ "p": product, "q": null })).await;
    assert_eq!(error_code(&null), "BAD_USER_INPUT", "{null}");
}

/// Codes come from the phase an error happens in, whatever async-graphql's message says.
#[tokio::test]
async fn error_codes_follow_the_phase() {
    let app = spawn_app().await;
    let code = |q: &'static str, v: Value| {
        let app = &app;
        async move { error_code(&app.gql(None, q, v).await).to_owned() }
    };
    assert_eq!(code("{ products(first: 99999999999) { id } }", json!({})).await, "BAD_USER_INPUT");
    assert_eq!(code("query($f: Int) { products(first: $f) { id } }", json!({ "f": "ten" })).await, "BAD_USER_INPUT");
    assert_eq!(code("{ products { id } ", json!({})).await, "GRAPHQL_PARSE_FAILED");
    assert_eq!(code("{ products { nope } }", json!({})).await, "GRAPHQL_VALIDATION_FAILED");
    assert_eq!(code("query($unused: Int) { products { id } }", json!({})).await, "GRAPHQL_VALIDATION_FAILED");
    assert_eq!(code("{ ...A } fragment A on Query { ...A }", json!({})).await, "GRAPHQL_VALIDATION_FAILED");
    let two = json!({ "query": "query A { products { id } } query B { me { userId } }" });
    let body: Value = app.http.post(app.url("/graphql")).json(&two).send().await.unwrap().json().await.unwrap();
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "which operation to run: {body}");
}

#[tokio::test]
async fn update_order_reports_what_changed_and_ignores_no_ops() {
    let app = spawn_app().await;
    let order = app.create_order("c1").await;
    let staff = app.staff();
    let q = "mutation($o: ID!, $i: UpdateOrderInput!) { updateOrder(id: $o, input: $i) { status paymentStatus trackingNumber updatedAt createdAt } }";
    let body =
        app.gql(Some(&staff), q, json!({ "o": order, "i": { "status": "SHIPPED", "trackingNumber": "TN1" } })).await;
    let updated = &body["data"]["updateOrder"];
    assert_eq!((updated["status"].as_str(), updated["trackingNumber"].as_str()), (Some("SHIPPED"), Some("TN1")));
    let stamp = updated["updatedAt"].as_str().unwrap();
    assert!(stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.', "{stamp}");
    let again = app.gql(Some(&staff), q, json!({ "o": order, "i": { "status": "SHIPPED" } })).await;
    assert_eq!(again["data"]["updateOrder"]["updatedAt"], updated["updatedAt"], "a no-op stores nothing");
    let cleared = app.gql(Some(&staff), q, json!({ "o": order, "i": { "trackingNumber": null } })).await;
    assert_eq!(cleared["data"]["updateOrder"]["trackingNumber"], Value::Null);
    assert_eq!(error_code(&app.gql(Some(&staff), q, json!({ "o": "77", "i": {} })).await), "NOT_FOUND");
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_hurt_nobody() {
    let app = spawn_app_with(|c| c.max_body_bytes = 64 * 1024).await;
    let post_raw =
        |body: String| app.http.post(app.url("/graphql")).header("content-type", "application/json").body(body).send();
    let malformed = post_raw("{not json".into()).await.unwrap();
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(error_code(&body), "BAD_REQUEST");
    let huge = post_raw(format!("{{\"query\": \"{{ products {{ id }} }}\", \"x\": \"{}\"}}", "a".repeat(100_000)))
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let deep = format!("{{ products(first: {}1{}) {{ id }} }}", "[".repeat(4000), "]".repeat(4000));
    assert_eq!(error_code(&app.gql(None, &deep, json!({})).await), "GRAPHQL_PARSE_FAILED");
    let deep_object = format!("{{ products(first: {}) {{ id }} }}", "{a: ".repeat(3000) + "1" + &"}".repeat(3000));
    assert_eq!(error_code(&app.gql(None, &deep_object, json!({})).await), "GRAPHQL_PARSE_FAILED");
    let deep_selection = format!("{{ {} }}", "me { ".repeat(40) + "userId" + &" }".repeat(40));
    assert!(app.gql(None, &deep_selection, json!({})).await["errors"].is_array());
    let aliases =
        format!("{{ {} }}", (0..600).map(|i| format!("a{i}: products {{ id }}")).collect::<Vec<_>>().join(" "));
    assert_eq!(error_code(&app.gql(None, &aliases, json!({})).await), "GRAPHQL_VALIDATION_FAILED");
    let directives = format!("{{ products {} {{ id }} }}", "@include(if: true) ".repeat(200));
    assert_eq!(error_code(&app.gql(None, &directives, json!({})).await), "GRAPHQL_VALIDATION_FAILED");
    let subscription = app.post(None, "subscription { inventoryChanged { productId } }", json!({})).await;
    assert_eq!(subscription.0, 400);
    // Still serving.
    assert_eq!(app.gql(None, "{ products { id } }", json!({})).await, json!({ "data": { "products": [] } }));
}

#[tokio::test]
async fn get_runs_queries_but_not_mutations_and_serves_graphiql() {
    let app = spawn_app().await;
    let ok = app.http.get(app.url("/graphql?query=%7B%20products%20%7B%20id%20%7D%20%7D")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap(), json!({ "data": { "products": [] } }));
    let mutation = app
        .http
        .get(app.url("/graphql?query=mutation%20%7B%20deleteOrder(id%3A%221%22)%20%7B%20id%20%7D%20%7D"))
        .send()
        .await
        .unwrap();
    assert_eq!(mutation.status(), 405);
    assert_eq!(mutation.headers()["allow"], "POST");
    let body: Value = mutation.json().await.unwrap();
    assert_eq!(error_code(&body), "BAD_REQUEST");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("mutations must be sent with POST"), "{body}");
    let page = app.http.get(app.url("/graphql")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("/graphiql/graphiql.min.js") && html.contains("subscriptionUrl"));
    let asset = app.http.get(app.url("/graphiql/graphiql.min.js")).send().await.unwrap();
    assert_eq!(asset.status(), 200);
    assert!(asset.bytes().await.unwrap().len() > 100_000);
}

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let app = spawn_app().await;
    let health = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap(), json!({ "status": "ok" }));
    assert_eq!(app.http.get(app.url("/ready")).send().await.unwrap().status(), 200);
    let _ws = app.graphql_ws(None).await;
    let metrics = app.metrics().await;
    assert!(metrics.contains("switchboard_ws_connections"), "{metrics}");
    app.state.commerce.store().close().await;
    assert_eq!(app.http.get(app.url("/ready")).send().await.unwrap().status(), 503);
}

/// graphql-js 16's `getIntrospectionQuery()`, which codegen tools send (14 deep as async-graphql
/// counts; GraphiQL 3.9's variant, tested in tests/e2e, 15): the default depth limit must admit it.
#[tokio::test]
async fn the_standard_introspection_query_is_admitted() {
    let app = spawn_app().await;
    let type_ref = "kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";
    let query = format!(
        "query IntrospectionQuery {{ __schema {{ queryType {{ name }} mutationType {{ name }} subscriptionType {{ name }} \
         types {{ ...FullType }} directives {{ name description locations args {{ ...InputValue }} }} }} }} \
         fragment FullType on __Type {{ kind name description fields(includeDeprecated: true) {{ name description \
         args {{ ...InputValue }} type {{ ...TypeRef }} isDeprecated deprecationReason }} inputFields {{ ...InputValue }} \
         interfaces {{ ...TypeRef }} enumValues(includeDeprecated: true) {{ name description isDeprecated deprecationReason }} \
         possibleTypes {{ ...TypeRef }} }} \
         fragment InputValue on __InputValue {{ name description type {{ ...TypeRef }} defaultValue }} \
         fragment TypeRef on __Type {{ {type_ref} }}"
    );
    let body = app.gql(None, &query, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["__schema"]["subscriptionType"]["name"], "Subscription");
}
