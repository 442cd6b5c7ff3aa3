//! The server under test: one already running (addresses given), or one this harness starts and
//! pins to its own core: Switchboard, the built-in baseline, or the Node reference peer.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Switchboard,
    Baseline,
    Node,
    /// Switchboard as it was before the event log (commit `d182529`, or whatever binary
    /// `--without-log` names): the "without" side of `logcost` and `logidle`.
    PreLog,
    /// A previous build of Switchboard (`--baseline-bin`, e.g. main before the group commit): the
    /// other side of `writes`.
    Previous,
    /// Started by someone else.
    External,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Switchboard => "switchboard",
            Kind::Baseline => "baseline",
            Kind::Node => "node-peer",
            Kind::PreLog => "pre-log",
            Kind::Previous => "previous",
            Kind::External => "external",
        }
    }
}

/// How to start servers: paths and settings shared by every scenario.
#[derive(Clone, Debug)]
pub struct SpawnSettings {
    pub switchboard_bin: PathBuf,
    /// The pre-event-log Switchboard binary ([`Kind::PreLog`]).
    pub prelog_bin: PathBuf,
    /// A previous Switchboard build ([`Kind::Previous`]).
    pub previous_bin: Option<PathBuf>,
    pub node_dir: PathBuf,
    pub jwt_secret: String,
    /// `None`: a fresh SQLite file under /tmp per server.
    pub database_url: Option<String>,
    pub server_core: Option<usize>,
    /// Extra environment for spawned servers (e.g. `WS_HEARTBEAT_INTERVAL`, `BASELINE_READ_BUFFER`).
    pub extra_env: Vec<(String, String)>,
}

/// A server to drive. Dropping it stops a server this harness started.
pub struct Server {
    pub addr: SocketAddr,
    pub ws_url: String,
    pub pid: Option<u32>,
    child: Option<Child>,
    pub log: Option<PathBuf>,
    db_file: Option<PathBuf>,
}

impl Server {
    pub fn external(ws_url: &str, http: Option<&str>, pid: Option<u32>) -> anyhow::Result<Self> {
        let hostport = http
            .unwrap_or(ws_url)
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .context("url without host:port")?;
        let addr: SocketAddr = hostport.parse().with_context(|| format!("{hostport} is not ip:port"))?;
        if !addr.ip().is_loopback() {
            bail!("this harness only sends traffic to 127.0.0.0/8, not {addr}");
        }
        Ok(Self { addr, ws_url: ws_url.to_owned(), pid, child: None, log: None, db_file: None })
    }

    pub fn spawn(kind: Kind, settings: &SpawnSettings) -> anyhow::Result<Self> {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{}-{}-{n}", kind.label(), std::process::id());
        let log = PathBuf::from(format!("/tmp/switchboard-bench-{tag}.log"));
        let mut db_file = None;
        let mut command = match kind {
            Kind::Switchboard | Kind::PreLog | Kind::Previous => {
                let bin = match kind {
                    Kind::PreLog => &settings.prelog_bin,
                    Kind::Previous => settings.previous_bin.as_ref().context("no --baseline-bin given")?,
                    _ => &settings.switchboard_bin,
                };
                if !bin.exists() {
                    bail!("{} not found (see BENCHMARKS.md: bench/build-prelog.sh builds it)", bin.display());
                }
                let mut c = Command::new(bin);
                let url = match &settings.database_url {
                    Some(url) => url.clone(),
                    None => {
                        let path = PathBuf::from(format!("/tmp/switchboard-bench-{tag}.db"));
                        remove_db(&path);
                        db_file = Some(path.clone());
                        format!("sqlite://{}", path.display())
                    }
                };
                c.env("DATABASE_URL", url).env("RUST_LOG", "info,tower_http=warn");
                // Every generated connection signs in as the same staff user, far past the
                // default per-user share of connections; the node's own limit stays in force.
                c.env("MAX_CONNECTIONS_PER_USER", "1000000");
                c
            }
            Kind::Baseline => {
                let mut c = Command::new(std::env::current_exe()?);
                c.arg("baseline-server");
                c
            }
            Kind::Node => {
                let mut c = Command::new("node");
                c.arg("server.js").current_dir(&settings.node_dir);
                if !settings.node_dir.join("node_modules").is_dir() {
                    bail!(
                        "{}: no node_modules (copy the peer to a temp dir and run `npm ci` there)",
                        settings.node_dir.display()
                    );
                }
                c
            }
            Kind::External => bail!("an external server is not spawned"),
        };
        for (k, v) in &settings.extra_env {
            command.env(k, v);
        }
        let out = std::fs::File::create(&log)?;
        command
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("JWT_SECRET", &settings.jwt_secret)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if let Some(core) = settings.server_core {
            // SAFETY: only async-signal-safe work (one syscall) between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(core, &mut set);
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                    Ok(())
                });
            }
        }
        let child = command.spawn().with_context(|| format!("starting {}", kind.label()))?;
        let pid = child.id();
        let mut server = Self {
            addr: "127.0.0.1:0".parse().expect("literal"),
            ws_url: String::new(),
            pid: Some(pid),
            child: Some(child),
            log: Some(log.clone()),
            db_file,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = listening_addr(&text) {
                server.addr = addr;
                server.ws_url = format!("ws://{addr}/graphql");
                return Ok(server);
            }
            if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("{} exited ({status}) before listening; log {}:\n{text}", kind.label(), log.display());
            }
            if Instant::now() > deadline {
                bail!("{} did not log `listening on` within 30 s; log {}", kind.label(), log.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where a spawned server's output goes (for the reader of a failed run).
    pub fn log_path(&self) -> String {
        self.log.as_ref().map_or_else(|| "-".into(), |p| p.display().to_string())
    }
}

fn remove_db(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// Finds `listening on ADDR` in a log, whatever the log format around it.
fn listening_addr(log: &str) -> Option<SocketAddr> {
    let at = log.find("listening on ")? + "listening on ".len();
    let token: String = log[at..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
    token.parse().ok()
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(db) = &self.db_file {
            remove_db(db);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_tracing_and_node_logs() {
        let tracing = "2026-01-01T00:00:00Z  INFO switchboard::app: listening on 127.0.0.1:4321\n";
        assert_eq!(listening_addr(tracing), Some("127.0.0.1:4321".parse().unwrap()));
        let node = r#"{"level":"info","msg":"listening on 127.0.0.1:999"}"#;
        assert_eq!(listening_addr(node), Some("127.0.0.1:999".parse().unwrap()));
    }
}
