//! The HTTP limits a server in front of the internet needs: deadlines for headers, bodies and idle
//! connections, capped headers and bodies whose refusals reach the client, file-descriptor
//! exhaustion that heals, and `ALLOWED_ORIGINS` for upgrades and CORS.

mod common;

use std::time::Duration;

use common::{TestRole, WAIT, spawn_app, spawn_app_with};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite;

/// Reads until the server closes the connection (EOF or reset); returns what was read, or
/// `None` if it is still open at `deadline`.
async fn read_until_closed(stream: &mut TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// One response read from a raw socket: status, headers (lowercase names), body.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one response with a `Content-Length` body.
async fn read_response(stream: &mut TcpStream) -> std::io::Result<RawResponse> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    }
    Ok(RawResponse { status, headers, body: data[head_end..head_end + length].to_vec() })
}

fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}"))
}

/// Writes `piece` every 100 ms until the server closes the connection (true) or `deadline` passes
/// with it still open (false); any answer fails the test.
async fn drip(stream: &mut TcpStream, piece: &[u8], deadline: Instant) -> bool {
    loop {
        if stream.write_all(piece).await.is_err() {
            return true;
        }
        let mut buf = [0u8; 1024];
        match timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(n)) => panic!("unexpected answer: {}", String::from_utf8_lossy(&buf[..n])),
            Err(_) if Instant::now() > deadline => return false,
            Err(_) => {}
        }
    }
}

#[tokio::test]
async fn a_client_dripping_its_headers_is_cut_off_after_the_header_timeout() {
    let app = spawn_app_with(|c| c.http_header_timeout = 400).await;
    // The server's clock starts when it accepts, which may come before `connect` returns here.
    let started = Instant::now();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();

    // One header line every 100 ms, never the blank line that ends them.
    let closed = drip(&mut stream, b"X-Drip: 1\r\n", started + WAIT).await;

    assert!(closed, "the connection was still open after {WAIT:?}");
    assert!(started.elapsed() >= Duration::from_millis(400), "closed before the timeout: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_silent_new_connection_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(|c| c.http_header_timeout = 300).await;
    // As above: measured from before the connection exists, the one instant known to come first.
    let started = Instant::now();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();

    let received = read_until_closed(&mut stream, started + WAIT).await;

    assert_eq!(received.as_deref(), Some(&b""[..]), "still open after {WAIT:?}, or answered");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_client_dripping_its_body_is_cut_off_after_the_body_timeout() {
    let app = spawn_app_with(|c| c.http_body_timeout = 500).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
        )
        .await
        .unwrap();
    let started = Instant::now();

    // One byte of the body every 100 ms, never all of it.
    let closed = drip(&mut stream, b" ", started + WAIT).await;

    assert!(closed, "the connection was still open after {WAIT:?}");
    assert!(started.elapsed() >= Duration::from_millis(500), "closed before the timeout: {:?}", started.elapsed());
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(|c| c.http_idle_timeout = 500).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    // The server's idle time starts once it has written the response, which is after the request
    // was sent and before this side has read it: measure from the send, the one instant known to
    // come first.
    let sent = Instant::now();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let response = read_response(&mut stream).await.unwrap();
    assert_eq!(response.status, 200);

    let received = read_until_closed(&mut stream, Instant::now() + WAIT).await;

    assert_eq!(received.as_deref(), Some(&b""[..]), "still open after {WAIT:?}, or answered");
    assert!(sent.elapsed() >= Duration::from_millis(500), "closed too early: {:?}", sent.elapsed());
}

#[tokio::test]
async fn the_idle_timeout_is_not_the_header_timeout() {
    // A kept-alive connection may wait longer for its next request than a client has to send one
    // request's headers, and the next request is served.
    let app = spawn_app_with(|c| {
        c.http_header_timeout = 200;
        c.http_idle_timeout = 10_000;
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut stream).await.unwrap().status, 200);

    tokio::time::sleep(Duration::from_millis(600)).await;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();

    assert_eq!(read_response(&mut stream).await.expect("served after an idle wait").status, 200);
}

/// Sends `request` whole before reading anything, as simple clients do, then reads the response.
/// Had the server closed with unread bytes in its receive buffer, the kernel would have reset the
/// connection and the client would read no response at all.
async fn send_whole_then_read(app: &common::TestApp, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let sent = timeout(WAIT, stream.write_all(request)).await.expect("the server stopped reading");
    let response = timeout(WAIT, read_response(&mut stream)).await.expect("no response");
    sent.expect("the request was sent whole");
    response.expect("the response was readable")
}

#[tokio::test]
async fn a_one_megabyte_header_gets_431_on_get_and_post() {
    let app = spawn_app().await;
    let big = "a".repeat(1024 * 1024);
    let get = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    // A body large enough that the client is still sending when the server answers: what a
    // browser or Node client uploading something is doing then.
    let body = " ".repeat(4 * 1024 * 1024);
    let post = format!(
        concat!(
            "POST /graphql HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n",
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}"
        ),
        body.len(),
        body,
        big = big,
    );

    let get = send_whole_then_read(&app, get.as_bytes()).await;
    let post = send_whole_then_read(&app, post.as_bytes()).await;
    let with_reqwest = app.http.post(app.url("/graphql")).header("x-big", &big).body(body).send().await.unwrap();

    assert_eq!(get.status, 431);
    assert_eq!(post.status, 431);
    assert_eq!(with_reqwest.status(), 431);
}

#[tokio::test]
async fn a_normal_request_with_headers_near_the_limit_is_served() {
    let app = spawn_app().await;
    let cookie = "c".repeat(16 * 1024);

    let response = app.http.get(app.url("/health")).header("cookie", &cookie).send().await.unwrap();

    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_413_reaches_a_client_that_sends_its_whole_body_first() {
    let app = spawn_app_with(|c| c.max_body_bytes = 64 * 1024).await;
    let body = " ".repeat(4 * 1024 * 1024);
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );

    let response = send_whole_then_read(&app, request.as_bytes()).await;

    assert_eq!(response.status, 413);
    assert!(response.header("content-type").is_some_and(|t| t.starts_with("application/json")));
    assert_eq!(error_code(&response.json()), "PAYLOAD_TOO_LARGE");
    // The rest of the body is never read, so the connection cannot carry another request.
    assert_eq!(response.header("connection"), Some("close"));
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_a_json_413() {
    let app = spawn_app_with(|c| c.max_body_bytes = 1024).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            concat!(
                "POST /graphql HTTP/1.1\r\nHost: x\r\n",
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    for _ in 0..4 {
        stream.write_all(format!("400\r\n{}\r\n", " ".repeat(1024)).as_bytes()).await.unwrap();
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();

    let response = timeout(WAIT, read_response(&mut stream)).await.expect("no response").unwrap();

    assert_eq!(response.status, 413);
    assert_eq!(error_code(&response.json()), "PAYLOAD_TOO_LARGE");
    assert_eq!(response.header("connection"), Some("close"));
}

#[tokio::test]
async fn requests_still_work_over_one_keep_alive_connection() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let body = r#"{"query":"{ __typename }"}"#;
    for _ in 0..3 {
        let request = format!(
            "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = read_response(&mut stream).await.unwrap();
        assert_eq!((response.status, response.json()["data"]["__typename"].as_str()), (200, Some("Query")));
    }
}

// ALLOWED_ORIGINS

const SHOP: &str = "https://shop.example";
const EVIL: &str = "https://evil.example";

async fn upgrade_status(app: &common::TestApp, path: &str, origin: &str) -> u16 {
    let protocols: &[&str] = if path.starts_with("/graphql") { &["graphql-transport-ws"] } else { &[] };
    match app.ws_raw(path, protocols, &[("origin", origin)]).await {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn websocket_upgrades_from_a_foreign_origin_are_refused() {
    let app = spawn_app_with(|c| c.allowed_origins = vec![SHOP.into()]).await;
    let token = app.token("u1", TestRole::Customer);

    assert_eq!(upgrade_status(&app, "/graphql", EVIL).await, 403);
    assert_eq!(upgrade_status(&app, &format!("/ws?token={token}"), EVIL).await, 403);
    assert_eq!(upgrade_status(&app, "/graphql", SHOP).await, 101);
    assert_eq!(upgrade_status(&app, &format!("/ws?token={token}"), SHOP).await, 101);
    // The server's own pages (GraphiQL) are always allowed.
    assert_eq!(upgrade_status(&app, "/graphql", &format!("http://{}", app.addr)).await, 101);
    // Clients that are not browsers send no Origin.
    app.graphql_ws(None).await;
}

#[tokio::test]
async fn cors_requests_from_a_foreign_origin_are_refused_and_listed_ones_allowed() {
    let app = spawn_app_with(|c| c.allowed_origins = vec![SHOP.into(), "http://localhost:3000".into()]).await;
    let preflight = |origin: &str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, authorization")
            .send()
    };

    let refused = preflight(EVIL).await.unwrap();
    let allowed = preflight(SHOP).await.unwrap();
    let post =
        app.http.post(app.url("/graphql")).header("origin", EVIL).json(&serde_json::json!({"query": "{ __typename }"}));
    let refused_post = post.send().await.unwrap();

    assert_eq!(refused.status(), 403);
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    assert_eq!(error_code(&refused.json::<Value>().await.unwrap()), "FORBIDDEN");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(allowed.headers()["access-control-allow-origin"], SHOP);
    assert_eq!(refused_post.status(), 403);
    assert_eq!(error_code(&refused_post.json::<Value>().await.unwrap()), "FORBIDDEN");
    let ok =
        app.http.post(app.url("/graphql")).header("origin", SHOP).json(&serde_json::json!({"query": "{ __typename }"}));
    let ok = ok.send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["access-control-allow-origin"], SHOP);
}

#[tokio::test]
async fn without_allowed_origins_any_origin_is_allowed() {
    let app = spawn_app().await;

    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/graphql"))
        .header("origin", EVIL)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();

    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert_eq!(upgrade_status(&app, "/graphql", EVIL).await, 101);
}

// File descriptors

/// The server binary in a process of its own whose file-descriptor limit is `fd_limit` (the
/// shared test process's limit must not change), on a free port; killed when dropped.
struct LimitedServer {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
    pid: u32,
}

impl LimitedServer {
    async fn start(fd_limit: u32, env: &[(&str, &str)]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {fd_limit} && exec \"$0\""))
            .arg(env!("CARGO_BIN_EXE_switchboard"))
            .current_dir(std::env::temp_dir())
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", "sqlite::memory:")
            .env("JWT_SECRET", "fd-test")
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("server starts");
        let pid = child.id().expect("running");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    return addr.trim().parse().expect("an address");
                }
            }
            panic!("the server exited before listening");
        })
        .await
        .expect("the server listens");
        // Keep reading its log, or it would block on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        LimitedServer { child, addr, pid }
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map(|d| d.count()).unwrap_or(0)
    }

    /// User + system CPU time so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10)
    }
}

#[tokio::test]
async fn idle_connections_beyond_the_fd_limit_do_not_lock_out_new_clients() {
    const FD_LIMIT: usize = 64;
    let server = LimitedServer::start(FD_LIMIT as u32, &[("HTTP_HEADER_TIMEOUT", "2000")]).await;
    let spare = FD_LIMIT - server.open_fds();
    // Enough silent connections to use up every descriptor, and a few waiting in the backlog.
    let mut idle = Vec::new();
    for _ in 0..spare + 16 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = server.cpu();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = server.cpu() - before;

    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let response = timeout(Duration::from_secs(10), read_response(&mut client)).await;

    assert!(spent < Duration::from_millis(300), "the accept loop spun while out of descriptors: {spent:?} CPU in 1 s");
    let response = response.expect("a new client was locked out").expect("a response");
    assert_eq!(response.status, 200);
    drop(idle);
    drop(server.child);
}

#[tokio::test]
async fn a_response_the_client_does_not_read_is_cut_after_the_idle_timeout() {
    let app = spawn_app_with(|c| c.http_idle_timeout = 300).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(app.addr).await.unwrap();
    // Far more than the socket buffers hold: 20 copies of a ~1 MB file, asked for at once.
    const COPIES: usize = 20;
    let request = "GET /graphiql/graphiql.min.js HTTP/1.1\r\nHost: x\r\n\r\n".repeat(COPIES);
    stream.write_all(request.as_bytes()).await.unwrap();

    // The client reads nothing for a while…
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = read_until_closed(&mut stream, Instant::now() + WAIT).await;

    // …so the server gave up on it: the connection ended before all the copies were sent.
    let received = received.expect("the connection was still open");
    let whole = COPIES * include_bytes!("../assets/graphiql/graphiql.min.js").len();
    assert!(received.len() < whole / 2, "received {} of {whole} bytes", received.len());
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_stops_accepting() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let body = r#"{"query":"{ __typename }"}"#;
    let (first, rest) = body.split_at(10);
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Wait until the server is reading the body, then shut down.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;

    stream.write_all(rest.as_bytes()).await.unwrap();
    let response = timeout(WAIT, read_response(&mut stream)).await.expect("no response").unwrap();
    let refused = timeout(WAIT, async {
        loop {
            match TcpStream::connect(app.addr).await {
                Err(_) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;

    assert_eq!((response.status, response.json()["data"]["__typename"].as_str()), (200, Some("Query")));
    assert_eq!(response.header("connection"), Some("close"));
    assert!(refused.is_ok(), "still accepting connections after shutdown");
}
