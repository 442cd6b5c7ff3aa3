//! Where a subscription resolver gets its events: it checks the viewer, picks the one broker key
//! that carries what this viewer may see, and returns [`EventSource::events`] of that key. That is
//! all it knows. Whether those events come live from the broker, from the log for a resume, or to
//! an execution shared by every identical subscriber is decided by whoever runs the operation
//! (`super::operations` and `super::fanout`): they put an [`EventSource`] in each subscription's
//! request, read which key the resolver asked for, and feed the execution what it should see.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use futures::Stream;
use futures::stream::BoxStream;

use crate::events::{Event, Key};
use crate::lock;

/// What a resolver asked for: the events of `key`, after `after` when resuming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub key: Key,
    pub after: Option<String>,
}

/// One subscription execution's event source; clones share it.
#[derive(Clone, Default)]
pub struct EventSource(Arc<Inlet>);

#[derive(Default)]
struct Inlet {
    /// Where the transport resumes a subscription whose field has no `after`: SSE's
    /// `Last-Event-ID` (a cursor it sent as an event's `id:`), so that `EventSource`, which
    /// reconnects on its own, resumes without the query declaring `$after`.
    resume_from: Option<String>,
    state: std::sync::Mutex<State>,
    /// The log position of the event the execution took last (0: none yet). async-graphql
    /// resolves one item at a time (it pulls an item, resolves it, yields the response, then
    /// pulls the next), so read right after a response it is that response's event.
    position: AtomicU64,
    /// The events fed to the execution were all taken (its stream did not end inside them).
    exhausted: AtomicBool,
}

#[derive(Default)]
struct State {
    asked: Option<Asked>,
    feed: Option<BoxStream<'static, Arc<Event>>>,
    waker: Option<Waker>,
}

impl EventSource {
    /// A source for a subscription that resumes from `resume_from` unless its field says where.
    pub fn new(resume_from: Option<String>) -> Self {
        Self(Arc::new(Inlet { resume_from, ..Inlet::default() }))
    }

    /// The cursor the subscription resumes from: the field's `after`, else the transport's.
    pub fn resume_point(&self, after: Option<String>) -> Option<String> {
        after.or_else(|| self.0.resume_from.clone())
    }

    /// The events of `key`, after the cursor `after` (or the transport's) when resuming. For a
    /// viewer already found to be allowed them.
    pub fn events(&self, key: Key, after: Option<String>) -> BoxStream<'static, Arc<Event>> {
        let after = self.resume_point(after);
        lock::lock(&self.0.state).asked = Some(Asked { key, after });
        Box::pin(Events(self.0.clone()))
    }

    /// What the resolver asked for, once it has.
    pub fn asked(&self) -> Option<Asked> {
        lock::lock(&self.0.state).asked.clone()
    }

    /// Feeds the execution `events` (once): a shared group's live broker subscription, or a
    /// replay's events from the log.
    pub fn feed(&self, events: BoxStream<'static, Arc<Event>>) {
        let mut state = lock::lock(&self.0.state);
        state.feed = Some(events);
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// The log position of the event behind the execution's latest response.
    pub fn position(&self) -> u64 {
        self.0.position.load(Ordering::Acquire)
    }

    /// Whether the execution took every event it was fed, to their end.
    pub fn exhausted(&self) -> bool {
        self.0.exhausted.load(Ordering::Acquire)
    }
}

/// The stream a resolver gets: nothing until the source is fed, then what it is fed.
struct Events(Arc<Inlet>);

impl Stream for Events {
    type Item = Arc<Event>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Arc<Event>>> {
        let inlet = &self.0;
        let mut state = lock::lock(&inlet.state);
        let Some(feed) = state.feed.as_mut() else {
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        match feed.as_mut().poll_next(cx) {
            Poll::Ready(Some(event)) => {
                inlet.position.store(event.position, Ordering::Release);
                Poll::Ready(Some(event))
            }
            Poll::Ready(None) => {
                inlet.exhausted.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
