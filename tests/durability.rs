//! Nothing acknowledged is lost: the store on a real, small, full filesystem (a tmpfs).
//!
//! Needs root (to mount the tmpfs), as CI has. Where that is impossible, set
//! `SWITCHBOARD_SKIP_TMPFS=1` to skip it explicitly; it never skips on its own.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// A tmpfs of `size` mounted on a fresh directory; unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        if std::env::var_os("SWITCHBOARD_SKIP_TMPFS").is_some() {
            eprintln!("SWITCHBOARD_SKIP_TMPFS is set: skipping the full-disk test");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("switchboard-full-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("the mount command runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root); set SWITCHBOARD_SKIP_TMPFS=1 to skip this test"
        );
        Some(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes zeros into `name` until the filesystem refuses more.
    fn fill(&self, name: &str) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4k"])
            .arg(format!("of={}", self.path(name).display()))
            .stderr(std::process::Stdio::null())
            .status();
        let free = free_bytes(&self.dir);
        assert!(free < 8192, "the disk should be full, {free} bytes free");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df").args(["-B1", "--output=avail"]).arg(dir).output().expect("df runs");
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df output")
}

const NOTIFY: &str = "mutation($u: ID!, $m: String!) { sendNotification(input: {userId: $u, type: \"info\", title: \"t\", message: $m}) { id } }";
const COUNT: &str = "{ notifications(first: 1000) { id message } }";

/// Sends one large notification; `Some(id)` when acknowledged, `None` when refused with
/// INTERNAL_SERVER_ERROR (the only acceptable failure on a full disk).
async fn notify(app: &TestApp, n: usize) -> Option<String> {
    notify_in_task(app, n).await.expect("the request's task")
}

/// [`notify`] in a task of its own.
fn notify_in_task(app: &TestApp, n: usize) -> tokio::task::JoinHandle<Option<String>> {
    let (http, url, staff) = (app.http.clone(), app.url("/graphql"), app.staff());
    tokio::spawn(async move {
        let message = format!("{n:06}-{}", "x".repeat(16 * 1024));
        let request = json!({ "query": NOTIFY, "variables": { "u": "u1", "m": message } });
        let response = http.post(url).bearer_auth(staff).json(&request).send().await.expect("answered");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("JSON");
        refused_or_acknowledged(status, &body)
    })
}

fn refused_or_acknowledged(status: u16, body: &Value) -> Option<String> {
    assert_eq!(status, 200, "{body}");
    match body["data"]["sendNotification"]["id"].as_str() {
        Some(id) => Some(id.to_owned()),
        None => {
            assert_eq!(error_code(body), "INTERNAL_SERVER_ERROR", "{body}");
            let text = body.to_string();
            assert!(!text.contains("disk") && !text.contains("database"), "internals leaked: {text}");
            None
        }
    }
}

async fn stored_ids(app: &TestApp) -> Vec<String> {
    let body = app.gql(Some(&app.token("u1", TestRole::Customer)), COUNT, json!({})).await;
    let mut ids: Vec<String> = body["data"]["notifications"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

async fn ready_status(app: &TestApp) -> (u16, Value) {
    let response = app.http.get(app.url("/ready")).send().await.expect("ready answers");
    (response.status().as_u16(), response.json().await.expect("JSON"))
}

/// Collects every `notificationCreated` event that arrives within `quiet` of the previous one.
async fn drain_events(ws: &mut GqlWs, quiet: Duration) -> Vec<String> {
    let mut ids = Vec::new();
    while let Next::Json(message) = ws.next_within(quiet).await {
        assert_eq!(message["type"], "next", "{message}");
        ids.push(message["payload"]["data"]["notificationCreated"]["id"].as_str().expect("id").to_owned());
    }
    ids
}

#[tokio::test]
async fn a_full_disk_loses_no_acknowledged_write_and_the_server_recovers_by_itself() {
    let Some(disk) = SmallDisk::mount("3m") else { return };
    let url = format!("sqlite://{}", disk.path("store.db").display());
    let app = spawn_app_with(|c| c.database_url = url.clone()).await;
    let mut subscriber = app.graphql_ws(Some(&app.token("u1", TestRole::Customer))).await;
    subscriber.subscribe_live(&app, "n", "subscription { notificationCreated { id } }", json!({})).await;

    // Arrange: some writes before the disk fills, then a full disk.
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        acknowledged.push(notify(&app, n).await.expect("the disk has room"));
    }
    disk.fill("filler");

    // Act: keep writing on the full disk.
    let mut refused = 0;
    for n in 5..60 {
        match notify(&app, n).await {
            Some(id) => acknowledged.push(id),
            None => refused += 1,
        }
    }
    assert!(refused > 0, "a full disk refused no write: the test proved nothing");
    let (status, body) = ready_status(&app).await;
    assert_eq!(status, 503, "/ready must notice a store that cannot write: {body}");

    // Every acknowledged write is stored and was published; nothing else was.
    let mut published = drain_events(&mut subscriber, Duration::from_millis(500)).await;
    published.sort();
    let mut expected = acknowledged.clone();
    expected.sort();
    assert_eq!(published, expected, "published events must be exactly the acknowledged writes");
    assert_eq!(stored_ids(&app).await, expected, "reads must show exactly the acknowledged writes");

    // Free the space: the server recovers without a restart.
    std::fs::remove_file(disk.path("filler")).expect("filler removed");
    let deadline = tokio::time::Instant::now() + WAIT;
    while ready_status(&app).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "/ready never recovered: {:?}", ready_status(&app).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 60..65 {
        acknowledged.push(notify(&app, n).await.expect("the disk has room again"));
    }
    let mut expected = acknowledged.clone();
    expected.sort();
    assert_eq!(stored_ids(&app).await, expected);
    app.stop().await;

    // A restart keeps every acknowledged write.
    let app = spawn_app_with(|c| c.database_url = url.clone()).await;
    assert_eq!(stored_ids(&app).await, expected, "a restart lost acknowledged writes");
    app.stop().await;
}

/// A batch of twenty changes whose `COMMIT` fails for want of disk: none of them is answered as
/// done or published, `/ready` says 503, and writes recover by themselves once there is room.
#[tokio::test]
async fn a_batch_whose_commit_fails_is_neither_acknowledged_nor_published() {
    let Some(disk) = SmallDisk::mount("3m") else { return };
    let url = format!("sqlite://{}", disk.path("store.db").display());
    let app = spawn_app_with(|c| c.database_url = url.clone()).await;
    let mut subscriber = app.graphql_ws(Some(&app.token("u1", TestRole::Customer))).await;
    subscriber.subscribe_live(&app, "n", "subscription { notificationCreated { id } }", json!({})).await;
    let mut acknowledged = Vec::new();
    for n in 0..3 {
        acknowledged.push(notify(&app, n).await.expect("the disk has room"));
    }
    assert_eq!(drain_events(&mut subscriber, Duration::from_millis(300)).await, acknowledged);

    // Twenty writes wait behind a gate while the disk fills; then one batch takes them all.
    let gate = gate::close(&app).await;
    let before = app.state.commerce.writer_stats();
    let writes: Vec<_> = (3..23).map(|n| notify_in_task(&app, n)).collect();
    disk.fill("filler");
    gate.open_when_queued(&app, 20).await;
    for write in writes {
        assert_eq!(write.await.expect("task"), None, "a change of the failed batch was acknowledged");
    }
    let stats = app.state.commerce.writer_stats();
    assert_eq!((stats.commits - before.commits, stats.failed - before.failed), (1, 1), "{stats:?}");
    let (status, body) = ready_status(&app).await;
    assert_eq!(status, 503, "/ready must notice a store that cannot commit: {body}");
    assert_eq!(drain_events(&mut subscriber, Duration::from_millis(500)).await, Vec::<String>::new());
    let mut expected = acknowledged.clone();
    expected.sort();
    assert_eq!(stored_ids(&app).await, expected, "a change of the failed batch was stored");

    // Room again: the writer recovers by itself, without a restart.
    std::fs::remove_file(disk.path("filler")).expect("filler removed");
    let deadline = tokio::time::Instant::now() + WAIT;
    while ready_status(&app).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "/ready never recovered: {:?}", ready_status(&app).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let writes: Vec<_> = (23..33).map(|n| notify_in_task(&app, n)).collect();
    for write in writes {
        acknowledged.push(write.await.expect("task").expect("the disk has room again"));
    }
    let mut published = drain_events(&mut subscriber, Duration::from_millis(500)).await;
    published.sort();
    let mut expected = acknowledged[3..].to_vec();
    expected.sort();
    assert_eq!(published, expected, "after recovering, exactly the acknowledged writes are published");
    let mut expected = acknowledged.clone();
    expected.sort();
    assert_eq!(stored_ids(&app).await, expected);
    app.stop().await;
}

/// The real binary, on a file store, killed with SIGKILL while sixteen clients write at once (so
/// that its writer commits them in batches): after a restart, every write that was acknowledged is
/// there, and resuming from any cursor a subscriber saw before the kill gives exactly the stored
/// events after it, in order.
#[tokio::test]
async fn kill_9_in_the_middle_of_batches_loses_no_acknowledged_write() {
    let dir = std::env::temp_dir().join(format!("switchboard-kill-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("store.db").display());
    crash_in_the_middle_of_batches(&url, Crash::Server).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// PostgreSQL itself crashing (an immediate stop: its processes die without writing what they
/// hold in memory) while sixteen clients write through one node. On PostgreSQL the writer commits
/// a batch without waiting for the flush, which it waits for after the log's lock is released
/// (`store/batch.rs`): a change answered or an event published before its flush would be lost
/// here. After PostgreSQL restarts, the node recovers by itself; every acknowledged write is
/// stored, every event a subscriber was sent is stored, and resuming from any cursor it saw gives
/// exactly the stored events after it. Runs with the PostgreSQL suite, on a private server of its
/// own (it is the one the test crashes).
#[tokio::test]
async fn a_database_crash_in_the_middle_of_batches_loses_no_acknowledged_write_or_sent_event() {
    if std::env::var_os("SWITCHBOARD_TEST_POSTGRES").is_none() {
        eprintln!("runs with the PostgreSQL suite (SWITCHBOARD_TEST_POSTGRES): it needs PostgreSQL's programs");
        return;
    }
    let postgres = PrivatePostgres::start();
    crash_in_the_middle_of_batches(&postgres.url.clone(), Crash::Database(postgres)).await;
}

/// What is killed in the middle of the batches.
enum Crash {
    /// The server, with SIGKILL; it is started again on the same store.
    Server,
    /// The store's PostgreSQL, which is started again; the server lives on.
    Database(PrivatePostgres),
}

async fn crash_in_the_middle_of_batches(url: &str, crash: Crash) {
    let mut server = Server::start(url);
    let staff = server.token("staff-1", "staff");
    let customer = server.token("u1", "customer");
    let http = reqwest::Client::new();
    // A subscriber keeps every (id, cursor) it is sent, until its socket closes (the server was
    // killed) or nothing comes for a while (the writers have stopped).
    let mut watcher = server.graphql_ws(&customer).await;
    watcher.subscribe("n", "subscription { notificationCreated { id cursor } }", json!({})).await;
    wait_until_live(&http, &server, &staff, &mut watcher).await;
    let seen = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Next::Json(message) = watcher.next_within(Duration::from_secs(3)).await {
            let event = &message["payload"]["data"]["notificationCreated"];
            seen.push((id_number(&event["id"]), event["cursor"].as_str().expect("cursor").to_owned()));
        }
        seen
    });
    // At most 800 writes in all, so that one page of `notifications` (1000) reads them all back.
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (http, url, staff) = (http.clone(), server.url("/graphql"), staff.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for n in 0..50 {
                    let body = json!({ "query": NOTIFY, "variables": { "u": "u1", "m": format!("{w}-{n}") } });
                    let Ok(response) = http.post(&url).bearer_auth(&staff).json(&body).send().await else { break };
                    let Ok(body) = response.json::<Value>().await else { break };
                    match body["data"]["sendNotification"]["id"].as_str() {
                        Some(id) => acknowledged.push(id.to_owned()),
                        // The store is gone: this writer stops.
                        None => break,
                    }
                }
                acknowledged
            })
        })
        .collect();

    // Let the writers get going, then crash in the middle of their batches.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stored = count_notifications(&http, &server).await;
        if stored >= 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the writers never got going ({stored} stored)");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = http.get(server.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let database = match crash {
        Crash::Server => {
            server.kill9();
            None
        }
        Crash::Database(postgres) => {
            postgres.crash();
            Some(postgres)
        }
    };
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    // At least 200 were stored before the crash; all but the sixteen in flight were answered.
    assert!(acknowledged.len() >= 200 - 16, "only {} writes were acknowledged", acknowledged.len());
    let commits = metric(&metrics, "switchboard_writer_batches_total{", "outcome=\"committed\"");
    let changes = metric(&metrics, "switchboard_writer_changes_total{", "outcome=\"committed\"");
    assert!(commits < changes, "the writes were not batched: {commits} commits for {changes} changes");
    let seen = seen.await.expect("watcher");
    assert!(seen.len() >= 100, "the subscriber saw only {} events", seen.len());

    match &database {
        None => server = Server::start(url),
        Some(postgres) => {
            postgres.restart();
            // The node recovers by itself: ready again, and a write goes through.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let body = json!({ "query": NOTIFY, "variables": { "u": "u1", "m": "after" } });
                let sent = http.post(server.url("/graphql")).bearer_auth(&staff).json(&body).send().await;
                let answer = match sent {
                    Ok(response) => response.json::<Value>().await.ok(),
                    Err(_) => None,
                };
                if let Some(id) = answer.as_ref().and_then(|b| b["data"]["sendNotification"]["id"].as_str()) {
                    acknowledged.push(id.to_owned());
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "no write went through after the restart: {answer:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let stored = all_notification_ids(&http, &server).await;
    let stored_set: std::collections::HashSet<&String> = stored.iter().collect();
    let lost: Vec<_> = acknowledged.iter().filter(|id| !stored_set.contains(id)).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost in the crash: {lost:?}", lost.len());
    let mut stored: Vec<u64> = stored.iter().map(|id| id.parse().expect("numeric id")).collect();
    stored.sort();
    for (id, _) in &seen {
        assert!(stored.binary_search(id).is_ok(), "notification {id} was published but not stored");
    }
    // Resuming from a cursor seen before the crash replays exactly what is stored after it.
    let customer = server.token("u1", "customer");
    for (seen_id, cursor) in [&seen[0], &seen[seen.len() / 2], &seen[seen.len() - 1]] {
        let mut ws = server.graphql_ws(&customer).await;
        ws.subscribe("r", "subscription($a: String) { notificationCreated(after: $a) { id } }", json!({ "a": cursor }))
            .await;
        let mut replayed = Vec::new();
        while let Next::Json(message) = ws.next_within(Duration::from_millis(500)).await {
            assert_eq!(message["type"], "next", "{message}");
            replayed.push(id_number(&message["payload"]["data"]["notificationCreated"]["id"]));
        }
        let expected: Vec<u64> = stored.iter().copied().filter(|id| id > seen_id).collect();
        assert_eq!(replayed, expected, "resuming after notification {seen_id}");
    }
    drop(server);
    drop(database);
}

/// A PostgreSQL server of this test's own (scripts/lib/services.sh, as the suite's), on a free
/// loopback port, deleted when dropped.
struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    url: String,
}

impl PrivatePostgres {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("switchboard-pg-crash-{}", uuid::Uuid::new_v4()));
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
        let this = Self { url: format!("postgres://switchboard@127.0.0.1:{port}/switchboard"), dir, port };
        this.restart();
        this
    }

    fn services(&self, command: &str) {
        let script = format!(
            "set -e; source {}/scripts/lib/services.sh; dir={}; port={}; {command}",
            env!("CARGO_MANIFEST_DIR"),
            self.dir.display(),
            self.port
        );
        let status = Command::new("bash").arg("-c").arg(&script).status().expect("bash runs");
        assert!(status.success(), "{command} failed");
    }

    /// Starts it (again), on the same data and port.
    fn restart(&self) {
        self.services(r#"start_postgres "$dir" "$port" >/dev/null"#);
    }

    /// An immediate stop: every process of the server quits at once, nothing written on the way
    /// out; the next start recovers from its log, as after a crash.
    fn crash(&self) {
        self.services(r#"_as_pg "$(pg_bindir)/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null"#);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let command = format!("stop_postgres {}", self.dir.display());
        let script = format!("source {}/scripts/lib/services.sh; {command}", env!("CARGO_MANIFEST_DIR"));
        let _ = Command::new("bash").arg("-c").arg(&script).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn id_number(id: &Value) -> u64 {
    id.as_str().and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("a numeric id, not {id}"))
}

/// The sum of a metric's samples in Prometheus text whose line starts with `name` and contains
/// `label`.
fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends notifications to someone else until the subscription of `ws` is certainly live (a
/// `ping` answered after the subscribe), then one more to `u1` that it must see; drops that one.
async fn wait_until_live(http: &reqwest::Client, server: &Server, staff: &str, ws: &mut GqlWs) {
    ws.send(json!({ "type": "ping" })).await;
    loop {
        match ws.next_within(WAIT).await {
            Next::Json(message) if message["type"] == "pong" => break,
            Next::Json(_) => continue,
            other => panic!("no pong: {other:?}"),
        }
    }
    let body = json!({ "query": NOTIFY, "variables": { "u": "u1", "m": "first" } });
    http.post(server.url("/graphql")).bearer_auth(staff).json(&body).send().await.expect("sent");
    match ws.next_within(WAIT).await {
        Next::Json(message) => assert_eq!(message["type"], "next", "{message}"),
        other => panic!("the subscription is not live: {other:?}"),
    }
}

/// The release or debug binary of this build, run as a child process on a free port.
struct Server {
    child: std::process::Child,
    addr: String,
}

impl Server {
    fn start(database_url: &str) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .current_dir(std::env::temp_dir())
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", database_url)
            .env("JWT_SECRET", "kill-secret")
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "text")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the server starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next().expect("the server logs its address").expect("log line");
            if let Some(addr) = line.split("listening on ").nth(1) {
                break addr.trim().to_owned();
            }
        };
        // Keep draining the log so that the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A graphql-transport-ws connection, initialised with `token` and acknowledged.
    async fn graphql_ws(&self, token: &str) -> GqlWs {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}/graphql", self.addr).into_client_request().expect("request");
        request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().expect("header"));
        let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
        let mut ws = GqlWs(ws);
        ws.send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } })).await;
        assert_eq!(ws.recv().await["type"], "connection_ack");
        ws
    }

    fn token(&self, sub: &str, role: &str) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .current_dir(std::env::temp_dir())
            .args(["token", "--sub", sub, "--role", role])
            .env("JWT_SECRET", "kill-secret")
            .output()
            .expect("token command");
        String::from_utf8(output.stdout).expect("utf-8").trim().to_owned()
    }

    fn kill9(&self) {
        let status = Command::new("kill").args(["-9", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn all_notification_ids(http: &reqwest::Client, server: &Server) -> Vec<String> {
    let mut ids = Vec::new();
    let token = server.token("u1", "customer");
    let body: Value = http
        .post(server.url("/graphql"))
        .bearer_auth(&token)
        .json(&json!({ "query": "{ notifications(first: 1000) { id } }" }))
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("JSON");
    for n in body["data"]["notifications"].as_array().unwrap_or_else(|| panic!("{body}")) {
        ids.push(n["id"].as_str().expect("id").to_owned());
    }
    ids
}

async fn count_notifications(http: &reqwest::Client, server: &Server) -> usize {
    all_notification_ids(http, server).await.len()
}
