//! What one HTTP connection is doing, and the one deadline that goes with it.
//!
//! A connection moves through phases, each with its own limit: sending headers (`Headers`), sending
//! the body (`Body`), waiting while we answer (`Handling`, no limit of its own), waiting between
//! kept-alive requests (`Idle`), being closed politely (`Lingering`), and handed to a WebSocket
//! (`Upgraded`, which no longer concerns this clock). The socket wrapper, the service and the
//! bodies move the phase; the connection task sleeps until the current deadline and closes the
//! connection when it passes.
//!
//! All of them run inside the connection's one task (hyper polls the service and the bodies from
//! the connection future), so relaxed atomics are enough: they only make the type `Sync`.

use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::task::Context;
use std::time::Duration;

use tokio::time::Instant;

/// The limits of each phase; `None` is no limit.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From connecting, or from the first byte of a later request, to the end of its headers.
    pub header: Option<Duration>,
    /// From the end of the headers to the end of the body.
    pub body: Option<Duration>,
    /// Between kept-alive requests; also how long a response may stay blocked on a client that
    /// reads none of it.
    pub idle: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Headers = 0,
    Body = 1,
    Handling = 2,
    Idle = 3,
    Lingering = 4,
    Upgraded = 5,
    /// The response gave up on its client (see [`Clock::close_when`]): the connection is cut
    /// once a grace period passes without a write going through.
    Abandoned = 6,
}

impl Phase {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Phase::Headers,
            1 => Phase::Body,
            2 => Phase::Handling,
            3 => Phase::Idle,
            4 => Phase::Lingering,
            5 => Phase::Upgraded,
            _ => Phase::Abandoned,
        }
    }

    /// What a connection cut in this phase was doing, for logs and metrics.
    pub fn timeout_reason(self) -> &'static str {
        match self {
            Phase::Headers => "header",
            Phase::Body => "body",
            Phase::Handling => "response_stalled",
            Phase::Idle => "idle",
            Phase::Lingering => "linger",
            Phase::Upgraded => "upgraded",
            Phase::Abandoned => "abandoned",
        }
    }
}

const NO_DEADLINE: u64 = u64::MAX;

/// What a response watches for, to give up on its client ([`Clock::close_when`]).
type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

pub struct Clock {
    start: Instant,
    timeouts: Timeouts,
    phase: AtomicU8,
    /// Milliseconds after `start`, or [`NO_DEADLINE`].
    deadline: AtomicU64,
    /// A response's signal to give up, and the grace it then gives its last writes.
    abandon: Mutex<Option<(Signal, Duration)>>,
    /// That grace, once given up (milliseconds).
    grace: AtomicU64,
}

impl Clock {
    /// A new connection: its first request's headers are due within the header timeout.
    pub fn new(timeouts: Timeouts) -> Self {
        let clock = Clock {
            start: Instant::now(),
            timeouts,
            phase: AtomicU8::new(Phase::Headers as u8),
            deadline: AtomicU64::new(NO_DEADLINE),
            abandon: Mutex::new(None),
            grace: AtomicU64::new(0),
        };
        clock.set_deadline(timeouts.header);
        clock
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Relaxed))
    }

    pub fn deadline(&self) -> Option<Instant> {
        match self.deadline.load(Relaxed) {
            NO_DEADLINE => None,
            ms => Some(self.start + Duration::from_millis(ms)),
        }
    }

    /// Whether `now` is past the deadline (the connection task's timer may fire for an older one).
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|deadline| now >= deadline)
    }

    /// A request's headers have arrived: its body is now due, if it has one.
    pub fn request_started(&self, has_body: bool) {
        if has_body {
            self.enter(Phase::Body, self.timeouts.body);
        } else {
            self.enter(Phase::Handling, None);
        }
    }

    /// The request body was read to its end, or dropped unread.
    pub fn body_finished(&self) {
        self.leave(Phase::Body, Phase::Handling, None);
    }

    /// The response has been handed over whole: the connection waits for the next request.
    pub fn response_finished(&self) {
        self.leave(Phase::Handling, Phase::Idle, self.timeouts.idle);
        *crate::lock::lock(&self.abandon) = None;
    }

    /// Bytes arrived: on an idle connection they start the next request, whose headers are due.
    pub fn bytes_arrived(&self) {
        if self.phase() == Phase::Idle {
            self.enter(Phase::Headers, self.timeouts.header);
        }
    }

    /// A response write found the client's window closed: it may stay so for the idle timeout.
    pub fn write_blocked(&self) {
        if self.phase() == Phase::Handling && self.deadline.load(Relaxed) == NO_DEADLINE {
            self.set_deadline(self.timeouts.idle);
        }
    }

    /// A response write went through: the client is reading. While the handler runs, that lifts
    /// the deadline of [`Clock::write_blocked`]; once hyper holds the whole response (`Idle`, the
    /// rest of it still being flushed), the idle wait counts from the last write, so that a slow
    /// client that keeps reading gets a large response whole.
    pub fn write_went_through(&self) {
        match self.phase() {
            Phase::Handling if self.deadline.load(Relaxed) != NO_DEADLINE => self.deadline.store(NO_DEADLINE, Relaxed),
            Phase::Idle => self.set_deadline(self.timeouts.idle),
            Phase::Abandoned => self.set_deadline(Some(Duration::from_millis(self.grace.load(Relaxed)))),
            _ => {}
        }
    }

    /// The connection is being closed politely, until `until` at the latest.
    pub fn linger_until(&self, until: Instant) {
        self.phase.store(Phase::Lingering as u8, Relaxed);
        self.deadline.store(self.millis(until), Relaxed);
    }

    /// Once `signal` is ready, the response in flight has given up on its client: the connection
    /// is closed once `grace` passes without a write going through (a client that reads gets
    /// the end of the response; one that reads nothing is cut `grace` later). A response that
    /// streams for as long as the client reads (an event stream) sets this, so that a client that
    /// stopped reading gives back what the stream holds once the stream knows it, not after the
    /// idle timeout. The connection task polls `signal` (so it must wake the task that polls it).
    pub fn close_when(&self, signal: impl Future<Output = ()> + Send + 'static, grace: Duration) {
        *crate::lock::lock(&self.abandon) = Some((Box::pin(signal), grace));
    }

    /// Polled by the connection task: moves to [`Phase::Abandoned`] once the signal of
    /// [`Clock::close_when`] is ready.
    pub fn poll_abandon(&self, cx: &mut Context<'_>) {
        let mut abandon = crate::lock::lock(&self.abandon);
        let Some((signal, grace)) = abandon.as_mut() else { return };
        if signal.as_mut().poll(cx).is_ready() {
            let grace = *grace;
            *abandon = None;
            if matches!(self.phase(), Phase::Handling | Phase::Idle) {
                self.grace.store(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX), Relaxed);
                self.enter(Phase::Abandoned, Some(grace));
            }
        }
    }

    /// The connection became a WebSocket: nothing here applies to it any more.
    pub fn upgraded(&self) {
        self.enter(Phase::Upgraded, None);
    }

    fn enter(&self, phase: Phase, timeout: Option<Duration>) {
        self.phase.store(phase as u8, Relaxed);
        self.set_deadline(timeout);
    }

    /// Moves from `from` to `to`, unless the connection has already moved on.
    fn leave(&self, from: Phase, to: Phase, timeout: Option<Duration>) {
        if self.phase.compare_exchange(from as u8, to as u8, Relaxed, Relaxed).is_ok() {
            self.set_deadline(timeout);
        }
    }

    fn set_deadline(&self, timeout: Option<Duration>) {
        let ms = timeout.map_or(NO_DEADLINE, |timeout| self.millis(Instant::now() + timeout));
        self.deadline.store(ms, Relaxed);
    }

    /// Rounded up, so that a deadline never comes early.
    fn millis(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.start);
        u64::try_from(since.as_micros().div_ceil(1000)).unwrap_or(NO_DEADLINE - 1).min(NO_DEADLINE - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> Clock {
        let s = Some(Duration::from_secs(1));
        Clock::new(Timeouts { header: s, body: Some(Duration::from_secs(2)), idle: Some(Duration::from_secs(3)) })
    }

    #[tokio::test(start_paused = true)]
    async fn phases_follow_a_keep_alive_request() {
        let clock = clock();
        let t0 = Instant::now();
        assert_eq!((clock.phase(), clock.deadline()), (Phase::Headers, Some(t0 + Duration::from_secs(1))));
        clock.request_started(true);
        assert_eq!((clock.phase(), clock.deadline()), (Phase::Body, Some(t0 + Duration::from_secs(2))));
        clock.body_finished();
        assert_eq!((clock.phase(), clock.deadline()), (Phase::Handling, None));
        clock.write_blocked();
        assert_eq!(clock.deadline(), Some(t0 + Duration::from_secs(3)));
        clock.write_went_through();
        assert_eq!(clock.deadline(), None);
        clock.response_finished();
        assert_eq!((clock.phase(), clock.deadline()), (Phase::Idle, Some(t0 + Duration::from_secs(3))));
        // The rest of the response is still being flushed to a client that reads: each write
        // that goes through restarts the idle wait.
        tokio::time::advance(Duration::from_millis(200)).await;
        clock.write_went_through();
        assert_eq!(clock.deadline(), Some(t0 + Duration::from_millis(3200)));
        tokio::time::advance(Duration::from_millis(300)).await;
        clock.bytes_arrived();
        assert_eq!((clock.phase(), clock.deadline()), (Phase::Headers, Some(t0 + Duration::from_millis(1500))));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_response_gets_its_grace_and_no_more() {
        let clock = clock();
        let t0 = Instant::now();
        clock.request_started(false);
        let (give_up, signal) = tokio::sync::oneshot::channel::<()>();
        clock.close_when(async move { drop(signal.await) }, Duration::from_secs(5));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        clock.poll_abandon(&mut cx);
        assert_eq!((clock.phase(), clock.deadline()), (Phase::Handling, None));
        give_up.send(()).unwrap();
        clock.poll_abandon(&mut cx);
        assert_eq!((clock.phase(), clock.deadline()), (Phase::Abandoned, Some(t0 + Duration::from_secs(5))));
        // A write that goes through (the client reads the end) restarts the grace; one that is
        // blocked does not, and neither lifts it.
        tokio::time::advance(Duration::from_secs(2)).await;
        clock.write_went_through();
        assert_eq!(clock.deadline(), Some(t0 + Duration::from_secs(7)));
        clock.write_blocked();
        assert_eq!(clock.deadline(), Some(t0 + Duration::from_secs(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_body_drop_does_not_undo_an_upgrade() {
        let clock = clock();
        clock.request_started(false);
        clock.upgraded();
        clock.body_finished();
        clock.response_finished();
        assert_eq!((clock.phase(), clock.deadline()), (Phase::Upgraded, None));
    }
}
