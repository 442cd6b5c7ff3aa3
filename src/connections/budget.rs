//! A stranger's budget: who a client is (its address), and how much one address may hold.
//!
//! Whatever a client without a token can make the server hold (connections, SSE reservations and
//! their operations, requests in flight, replays of the event log, store connections) is bounded
//! per client address, so that one address cannot take what everyone else needs; and anonymous
//! clients together are kept to a share of each pool (connections: `ANONYMOUS_CONNECTION_SHARE`;
//! store connections: half the pool), so that signed-in users are served however many strangers
//! there are. `docs/operations.md` has the table: per entry point, what an anonymous client can
//! hold, the setting that bounds it, and what happens past it.
//!
//! The address is the TCP peer's, unless the peer is a proxy listed in `TRUSTED_PROXIES`: then it
//! is the one the proxy reports in `X-Forwarded-For` (the rightmost address that is not itself a
//! trusted proxy, as nginx's `real_ip_recursive` reads it; addresses further left were written by
//! the client and prove nothing).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::lock;

/// The TCP peer of a connection, set on every request by the HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub IpAddr);

/// The client a request comes from (see the module docs), set on every request by [`identify`];
/// also an extractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

/// Where a request that did not come through the server (one built by hand) is from.
const NOWHERE: IpAddr = ClientAddr::NOWHERE;

impl ClientAddr {
    /// Where a request that did not come through the server (one built by hand) is from.
    pub const NOWHERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

    pub fn of(parts: &Parts) -> Self {
        parts.extensions.get::<ClientAddr>().copied().unwrap_or(ClientAddr(NOWHERE))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts))
    }
}

/// `TRUSTED_PROXIES`: one address (`127.0.0.1`) or network (`10.0.0.0/8`).
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is neither an address nor a network like 10.0.0.0/8"))
}

/// The proxies whose `X-Forwarded-For` is believed; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    pub fn new(networks: &[IpNet]) -> Self {
        Self(networks.into())
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client behind `peer`: `peer` itself, or, when `peer` is a trusted proxy, the rightmost
    /// address of `X-Forwarded-For` that is not a trusted proxy (the leftmost one when they all
    /// are). An entry that is not an address ends the walk at the last address trusted so far.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let hops: Vec<&str> = forwarded.flat_map(|v| v.split(',')).map(str::trim).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(addr) = parse_hop(hop) else { break };
            client = addr;
            if !self.trusts(addr) {
                break;
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(addr) = hop.parse::<IpAddr>() {
        return Some(addr);
    }
    hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

/// Sets [`ClientAddr`] on the request from its [`PeerAddr`] and the trusted proxies' header.
pub async fn identify(State(proxies): State<TrustedProxies>, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<PeerAddr>().map_or(NOWHERE, |p| p.0);
    let client = proxies.client(peer, request.headers());
    request.extensions_mut().insert(ClientAddr(client));
    next.run(request).await
}

/// How many of one thing each address holds, at most `limit` each; cheap to clone. Taking one
/// never waits: past the limit it is refused.
#[derive(Debug, Clone)]
pub struct PerAddress {
    inner: Arc<Counts>,
}

#[derive(Debug)]
struct Counts {
    limit: usize,
    by_addr: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    pub fn new(limit: usize) -> Self {
        Self { inner: Arc::new(Counts { limit, by_addr: Mutex::default() }) }
    }

    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// One more for `addr`, held until the returned slot drops; `None` past the limit.
    pub fn take(&self, addr: IpAddr) -> Option<AddressSlot> {
        let mut by_addr = lock::lock(&self.inner.by_addr);
        let count = by_addr.entry(addr).or_default();
        if *count >= self.inner.limit {
            if *count == 0 {
                by_addr.remove(&addr);
            }
            return None;
        }
        *count += 1;
        Some(AddressSlot { owner: self.inner.clone(), addr })
    }

    /// What `addr` holds now.
    pub fn held(&self, addr: IpAddr) -> usize {
        lock::lock(&self.inner.by_addr).get(&addr).copied().unwrap_or(0)
    }

    /// Addresses holding anything (an address that holds nothing is forgotten).
    pub fn addresses(&self) -> usize {
        lock::lock(&self.inner.by_addr).len()
    }
}

/// One of an address's places in a [`PerAddress`]; given back when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    owner: Arc<Counts>,
    addr: IpAddr,
}

impl AddressSlot {
    pub fn addr(&self) -> IpAddr {
        self.addr
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut by_addr = lock::lock(&self.owner.by_addr);
        if let Some(count) = by_addr.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                by_addr.remove(&self.addr);
            }
        }
    }
}

/// Like [`PerAddress`], but past the limit a taker waits its turn (behind the others of its own
/// address only); cheap to clone.
#[derive(Debug, Clone)]
pub struct PerAddressQueue {
    inner: Arc<Queues>,
}

#[derive(Debug)]
struct Queues {
    limit: usize,
    by_addr: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

impl PerAddressQueue {
    pub fn new(limit: usize) -> Self {
        Self { inner: Arc::new(Queues { limit: limit.max(1), by_addr: Mutex::default() }) }
    }

    /// One more for `addr`, once fewer than the limit are held for it.
    pub async fn take(&self, addr: IpAddr) -> QueuedSlot {
        let semaphore = lock::lock(&self.inner.by_addr)
            .entry(addr)
            .or_insert_with(|| Arc::new(Semaphore::new(self.inner.limit)))
            .clone();
        let permit = semaphore.acquire_owned().await.expect("never closed");
        QueuedSlot { owner: self.inner.clone(), addr, permit: Some(permit) }
    }

    /// Addresses holding or waiting for anything.
    pub fn addresses(&self) -> usize {
        lock::lock(&self.inner.by_addr).len()
    }
}

/// A place taken from a [`PerAddressQueue`]; given back when dropped.
#[derive(Debug)]
pub struct QueuedSlot {
    owner: Arc<Queues>,
    addr: IpAddr,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for QueuedSlot {
    fn drop(&mut self) {
        let mut by_addr = lock::lock(&self.owner.by_addr);
        drop(self.permit.take());
        // Forget an address that holds nothing and that nobody waits for (the map's own clone
        // and nothing else refers to its semaphore).
        if let Some(semaphore) = by_addr.get(&self.addr)
            && Arc::strong_count(semaphore) == 1
            && semaphore.available_permits() == self.owner.limit
        {
            by_addr.remove(&self.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn a_peer_that_is_not_trusted_is_the_client_whatever_it_forwards() {
        let proxies = TrustedProxies::new(&[parse_network("10.0.0.0/8").unwrap()]);
        assert_eq!(proxies.client(ip("203.0.113.9"), &forwarded(&["1.2.3.4"])), ip("203.0.113.9"));
        let nobody = TrustedProxies::default();
        assert_eq!(nobody.client(ip("127.0.0.1"), &forwarded(&["1.2.3.4"])), ip("127.0.0.1"));
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_rightmost_untrusted_hop() {
        let proxies = TrustedProxies::new(&[parse_network("10.0.0.0/8").unwrap(), parse_network("127.0.0.1").unwrap()]);
        // The client forged the first entry; the proxies appended the rest.
        let headers = forwarded(&["6.6.6.6, 198.51.100.7", "10.1.2.3"]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &headers), ip("198.51.100.7"));
        assert_eq!(proxies.client(ip("10.0.0.1"), &forwarded(&["[2001:db8::1]:443"])), ip("2001:db8::1"));
        // Every hop trusted: the leftmost; no header: the proxy itself; garbage ends the walk.
        assert_eq!(proxies.client(ip("127.0.0.1"), &forwarded(&["10.0.0.2, 10.0.0.3"])), ip("10.0.0.2"));
        assert_eq!(proxies.client(ip("127.0.0.1"), &HeaderMap::new()), ip("127.0.0.1"));
        assert_eq!(proxies.client(ip("127.0.0.1"), &forwarded(&["1.1.1.1, unknown"])), ip("127.0.0.1"));
        assert!(parse_network("not-an-address").is_err());
    }

    #[test]
    fn an_address_holds_at_most_its_limit_and_gets_it_back() {
        let budget = PerAddress::new(2);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let first = budget.take(a).expect("one");
        let second = budget.take(a).expect("two");
        assert!(budget.take(a).is_none(), "a third from the same address");
        let other = budget.take(b).expect("another address is not affected");
        drop(first);
        let again = budget.take(a).expect("room again");
        drop((second, again, other));
        assert_eq!(budget.addresses(), 0, "an address holding nothing is forgotten");
        assert!(PerAddress::new(0).take(a).is_none());
        assert_eq!(PerAddress::new(0).addresses(), 0);
    }

    #[tokio::test]
    async fn a_queue_makes_an_address_wait_for_its_own_places_only() {
        let queue = PerAddressQueue::new(1);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let held = queue.take(a).await;
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.take(a).await }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), queue.take(b)).await.expect("b does not wait for a");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a's second waits for its first");
        drop(held);
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.expect("its turn").unwrap();
        drop(next);
        assert_eq!(queue.addresses(), 0);
    }
}
