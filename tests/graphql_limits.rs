//! What one request may cost: fragment bombs, alias and directive storms, many operations, deep
//! variables and long error lists are refused (or answered) within milliseconds on every
//! transport, and `/health` keeps answering while they arrive.
//!
//! These tests run on a multi-threaded runtime so that a request that ties up one server thread
//! cannot also stop the test's own clock: a server that takes seconds fails them at the deadline.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::time::timeout;

/// How long a refusal may take, generously: it takes about a millisecond, but the machine may be busy.
const PROMPT: Duration = Duration::from_secs(1);

/// `fragment F0 on ROOT { __typename }`, each `Fi` spreading `F(i-1)` twice, and an operation
/// spreading `F(levels)`: about 40 bytes a level, 2^levels fields once expanded.
fn bomb(levels: usize, root: &str) -> String {
    let mut text = format!("fragment F0 on {root} {{ __typename }}");
    for i in 1..=levels {
        text += &format!(" fragment F{i} on {root} {{ ...F{p} ...F{p} }}", p = i - 1);
    }
    let keyword = if root == "Subscription" { "subscription " } else { "" };
    text + &format!(" {keyword}{{ ...F{levels} }}")
}

/// POST /graphql without a token, failing if the answer takes longer than [`PROMPT`].
async fn post_promptly(app: &TestApp, query: &str, variables: Value) -> (u16, Value, Duration) {
    let started = Instant::now();
    let (status, body) = timeout(PROMPT, app.post(None, query, variables))
        .await
        .unwrap_or_else(|_| panic!("no answer within {PROMPT:?} to a {}-byte query", query.len()));
    (status, body, started.elapsed())
}

async fn legacy_ws(app: &TestApp) -> GqlWs {
    let mut ws = GqlWs(app.ws_raw("/graphql", &["graphql-ws"], &[]).await.expect("upgrade"));
    ws.send(json!({ "type": "connection_init", "payload": {} })).await;
    assert_eq!(ws.recv().await["type"], "connection_ack");
    assert_eq!(ws.recv().await["type"], "ka");
    ws
}

/// The next message within [`PROMPT`], which must be an `error` for `id`; returns its errors.
async fn error_promptly(ws: &mut GqlWs, id: &str) -> Vec<Value> {
    let message = match ws.next_within(PROMPT).await {
        Next::Json(message) => message,
        other => panic!("no answer to {id} within {PROMPT:?}: {other:?}"),
    };
    assert_eq!((message["type"].as_str(), message["id"].as_str()), (Some("error"), Some(id)), "{message}");
    message["payload"].as_array().expect("a list of errors").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fragment_bombs_over_http_are_refused_within_milliseconds() {
    let app = spawn_app().await;
    // 20 levels first: a server that expands the bomb needs seconds for it (not the minutes of 24+).
    for levels in [20, 24, 30, 64] {
        let query = bomb(levels, "Query");
        let (status, body, took) = post_promptly(&app, &query, json!({})).await;
        println!("fragment bomb, {levels} levels, {} bytes: refused in {took:?}", query.len());
        assert_eq!(status, 200, "{body}");
        assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
        assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
        assert!(body["data"].is_null(), "{body}");
    }
    // The limit counts `__typename` too: 1,024 of them are refused, 512 answered.
    let (_, body, _) = post_promptly(&app, &bomb(10, "Query"), json!({})).await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("1024 fields"), "{body}");
    let (_, body, _) = post_promptly(&app, &bomb(9, "Query"), json!({})).await;
    assert_eq!(body, json!({ "data": { "__typename": "Query" } }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_fragment_bomb_is_one_error_message_on_both_websocket_protocols() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws(None).await;
    let mut legacy = legacy_ws(&app).await;
    for levels in [12, 23, 30] {
        let query = bomb(levels, "Subscription");
        let started = Instant::now();
        ws.subscribe("bomb", &query, json!({})).await;
        let errors = error_promptly(&mut ws, "bomb").await;
        println!("subscription bomb, {levels} levels, {} bytes: `error` in {:?}", query.len(), started.elapsed());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED");

        legacy.send(json!({ "id": "bomb", "type": "start", "payload": { "query": query } })).await;
        let errors = error_promptly(&mut legacy, "bomb").await;
        assert_eq!((errors.len(), &errors[0]["extensions"]["code"]), (1, &json!("GRAPHQL_VALIDATION_FAILED")));
    }
    // Both sockets still serve.
    ws.subscribe("after", "{ products { id } }", json!({})).await;
    assert_eq!(ws.next_data("after").await, json!({ "products": [] }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_answers_while_bombs_keep_coming() {
    let app = spawn_app().await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    // 20 levels: enough to tie up a server that expands it for seconds per request.
    let body = json!({ "query": bomb(20, "Query") });
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, body) = (app.http.clone(), app.url("/graphql"), body.clone());
            let (stop, sent) = (stop.clone(), sent.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let answer: Value = http.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
                    assert_eq!(error_code(&answer), "GRAPHQL_VALIDATION_FAILED", "{answer}");
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let until = Instant::now() + Duration::from_secs(2);
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        let started = Instant::now();
        let health = timeout(Duration::from_millis(500), app.http.get(app.url("/health")).send())
            .await
            .expect("/health answers within 500 ms while bombs arrive")
            .unwrap();
        assert_eq!(health.status(), 200);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.await.expect("every bomb was refused");
    }
    let sent = sent.load(Ordering::Relaxed);
    println!("{sent} bombs refused in 2 s; slowest /health {slowest:?}");
    assert!(sent >= 20, "the bombs really were arriving ({sent})");
}

#[tokio::test]
async fn identical_errors_appear_once() {
    // Within the limits (8 fields), but `__typename` is not a field of `Subscription`:
    // async-graphql reports it once per expansion, all at the same place.
    let app = spawn_app().await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe("s", &bomb(3, "Subscription"), json!({})).await;
    let errors = error_promptly(&mut ws, "s").await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0]["message"].as_str().unwrap().contains("__typename"), "{errors:?}");
    let mut legacy = legacy_ws(&app).await;
    legacy.send(json!({ "id": "s", "type": "start", "payload": { "query": bomb(3, "Subscription") } })).await;
    assert_eq!(error_promptly(&mut legacy, "s").await.len(), 1);
}

#[tokio::test]
async fn thousands_of_unused_variables_answer_a_small_body_on_every_transport() {
    let app = spawn_app().await;
    let declared: Vec<_> = (0..2500).map(|i| format!("$v{i}: Int")).collect();
    let query = format!("query({}) {{ __typename }}", declared.join(", "));
    assert!(query.len() <= 32 * 1024, "within the size limit");

    let (status, body, _) = post_promptly(&app, &query, json!({})).await;
    assert_eq!(status, 200);
    let size = body.to_string().len();
    assert!(size < 16 * 1024, "{size} bytes");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 101);
    assert_eq!(errors[100]["message"], "2400 more errors were left out");
    assert!(errors.iter().all(|e| e["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"), "{body}");

    // Signed in or not makes no difference.
    let mut ws = app.graphql_ws(Some(&app.token("c1", TestRole::Customer))).await;
    ws.subscribe("v", &query, json!({})).await;
    assert_eq!(error_promptly(&mut ws, "v").await.len(), 101);
    let mut legacy = legacy_ws(&app).await;
    legacy.send(json!({ "id": "v", "type": "start", "payload": { "query": query } })).await;
    assert_eq!(error_promptly(&mut legacy, "v").await.len(), 101);
}

#[tokio::test]
async fn alias_storms_and_many_operations_are_refused_promptly() {
    let app = spawn_app().await;
    let aliases = format!("{{ {} }}", (0..1800).map(|i| format!("a{i}:__typename")).collect::<Vec<_>>().join(" "));
    let (_, body, took) = post_promptly(&app, &aliases, json!({})).await;
    println!("1,800 aliases, {} bytes: refused in {took:?}", aliases.len());
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("1800 fields"), "{body}");

    // async-graphql validates every operation of a document, not only the one it runs.
    let operations: String = (0..1200).map(|i| format!("query Q{i}{{__typename}}")).collect();
    let request = json!({ "query": operations, "operationName": "Q7" });
    let started = Instant::now();
    let body: Value = app.http.post(app.url("/graphql")).json(&request).send().await.unwrap().json().await.unwrap();
    println!("1,200 operations, {} bytes: refused in {:?}", operations.len(), started.elapsed());
    assert!(started.elapsed() < PROMPT);
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    let fewer: String = (0..900).map(|i| format!("query Q{i}{{__typename}}")).collect();
    let request = json!({ "query": fewer, "operationName": "Q7" });
    let body: Value = app.http.post(app.url("/graphql")).json(&request).send().await.unwrap().json().await.unwrap();
    assert_eq!(body, json!({ "data": { "__typename": "Query" } }), "900 operations are within the limits");
}

#[tokio::test]
async fn directive_storms_are_refused_promptly() {
    let app = spawn_app().await;
    // On one field (async-graphql's own limit), on a fragment spread and an inline fragment (which
    // it does not check), and repeated by expansion.
    let storm = "@skip(if: false) ".repeat(1500);
    let fragment = "fragment F on Query { __typename }";
    let on_spread = format!("{{ ...F {storm} }} {fragment}");
    for query in [format!("{{ __typename {storm} }}"), on_spread, format!("{{ ... {storm} {{ __typename }} }}")] {
        let (_, body, took) = post_promptly(&app, &query, json!({})).await;
        println!("1,500 directives, {} bytes: refused in {took:?}", query.len());
        assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
        assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    }
    let heavy = format!("fragment F0 on Query {{ __typename {} }}", "@include(if: true) ".repeat(40));
    let expanded = (1..=6).fold(heavy, |q, i| q + &format!(" fragment F{i} on Query {{ ...F{p} ...F{p} }}", p = i - 1));
    let (_, body, _) = post_promptly(&app, &(expanded + " { ...F6 }"), json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "64 fields, but 64 x 40 directives: {body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("parts"), "{body}");
}

#[tokio::test]
async fn deeply_nested_variables_are_refused_or_answered_promptly() {
    let app = spawn_app().await;
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let query = "query($f: Int) { products(first: $f) { id } }";

    // serde_json stops at 128 levels: a clear 400 before anything else reads the request.
    let body = format!("{{\"query\": \"{query}\", \"variables\": {{\"f\": {}}}}}", nested(5000));
    let started = Instant::now();
    let response =
        app.http.post(app.url("/graphql")).header("content-type", "application/json").body(body).send().await.unwrap();
    assert!(started.elapsed() < PROMPT);
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(&response.json().await.unwrap()), "BAD_REQUEST");
    let get = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", query.to_owned()), ("variables", format!("{{\"f\": {}}}", nested(5000)))])
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 400);

    // Within serde_json's limit: a value of the wrong shape, answered as such.
    let within: Value = serde_json::from_str(&nested(100)).unwrap();
    let (status, body, _) = post_promptly(&app, query, json!({ "f": within })).await;
    assert_eq!(status, 200);
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");

    // graphql-ws: a message serde_json cannot read is an invalid message (4400), as the protocol says.
    let mut ws = app.graphql_ws(None).await;
    let message = format!(
        "{{\"id\": \"d\", \"type\": \"subscribe\", \"payload\": {{\"query\": \"{query}\", \"variables\": {{\"f\": {}}}}}}}",
        nested(5000)
    );
    ws.send_text(&message).await;
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 4400, "{reason}");
    assert!(reason.len() <= 123);
}
