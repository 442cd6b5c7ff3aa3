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
    let message = format!("{n:06}-{}", "x".repeat(16 * 1024));
    let (status, body) = app.post(Some(&app.staff()), NOTIFY, json!({ "u": "u1", "m": message })).await;
    assert_eq!(status, 200, "{body}");
    match body["data"]["sendNotification"]["id"].as_str() {
        Some(id) => Some(id.to_owned()),
        None => {
            assert_eq!(error_code(&body), "INTERNAL_SERVER_ERROR", "{body}");
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

/// The real binary, on a file store, killed with SIGKILL while clients write: after a restart,
/// every write that was acknowledged is there.
#[tokio::test]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = std::env::temp_dir().join(format!("switchboard-kill-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("store.db").display());

    let server = Server::start(&url);
    let staff = server.token("staff-1", "staff");
    let http = reqwest::Client::new();
    // At most 800 writes in all, so that one page of `notifications` (1000) reads them all back.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (http, url, staff) = (http.clone(), server.url("/graphql"), staff.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for n in 0..200 {
                    let body = json!({ "query": NOTIFY, "variables": { "u": "u1", "m": format!("{w}-{n}") } });
                    let Ok(response) = http.post(&url).bearer_auth(&staff).json(&body).send().await else { break };
                    let Ok(body) = response.json::<Value>().await else { break };
                    if let Some(id) = body["data"]["sendNotification"]["id"].as_str() {
                        acknowledged.push(id.to_owned());
                    }
                }
                acknowledged
            })
        })
        .collect();

    // Let the writers get going, then kill the server in the middle of their writes.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stored = count_notifications(&http, &server).await;
        if stored >= 100 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the writers never got going ({stored} stored)");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    assert!(acknowledged.len() >= 100, "only {} writes were acknowledged", acknowledged.len());

    let server = Server::start(&url);
    let stored: std::collections::HashSet<String> = all_notification_ids(&http, &server).await.into_iter().collect();
    let lost: Vec<_> = acknowledged.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost after kill -9: {lost:?}", lost.len());
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
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
