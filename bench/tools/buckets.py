#!/usr/bin/env python3
"""Groups `perf script -F comm,tid,ip,sym --no-inline` stacks of a Switchboard server into
buckets (first match wins, in the order below), so that a profile reads as "where a delivery's
CPU goes". Usage: perf script -i perf.data -F comm,tid,ip,sym --no-inline | buckets.py"""
import re
import sys
from collections import Counter

BUCKETS = [
    ("HTTP mutation path (hyper, GraphQL mutation, SQLite)", r"graphql::http::post|sqlx|sqlite3|libsqlite|commerce::|hyper::proto::h1::dispatch|hyper::server|Mutation"),
    ("accept/upgrade/handshake", r"on_upgrade::\{\{closure\}\}::\{\{closure\}\}|hyper::upgrade|derive_accept_key|accept4"),
    ("serialize next frame (ServerMessage::to_json)", r"ServerMessage::to_json"),
    ("kernel TCP send (sendto, loopback delivery)", r"__sys_sendto|tcp_sendmsg"),
    ("kernel TCP receive (recvfrom)", r"__sys_recvfrom|tcp_recvmsg"),
    ("epoll / scheduler park", r"epoll_wait|do_epoll|futex|park_timeout|Parker"),
    ("tungstenite framing + flush (user space)", r"tungstenite::"),
    ("timestamp formatting (chrono)", r"Timestamp as core::fmt::Display|chrono::format"),
    ("GraphQL resolve (async-graphql resolve_container, field resolvers)", r"resolve_container|Fields::add_set|resolve_field|ContextBase|OutputType"),
    ("GraphQL response post-processing (add_codes, Response drop)", r"add_codes|drop_in_place<async_graphql::response|drop_in_place<async_graphql_value"),
    ("event payload clone/filter (subscription stream closures)", r"subscription::Subscription as async_graphql::subscription::SubscriptionType|InventoryChangePayload|filter_map"),
    ("metrics counters", r"metrics::|metrics_exporter|metrics_util"),
    ("tracing span enter/exit (Instrumented)", r"tracing_subscriber|tracing_core|tracing::span"),
    ("broker publish (Broker::publish, mpsc send)", r"pubsub::Broker::publish|chan::Tx"),
    ("async-graphql stream plumbing (execute_stream, FuturesUnordered, asynk_strim, StreamMap)", r"asynk_strim|execute_stream|FuturesUnordered|StreamMap|collect_subscription|TryFlatten|Chain<|select_all"),
    ("building each connection's frame (Connection::frame_for: look-ups, String, copy)", r"frame_for"),
    ("per-subscriber queue (mpsc receive, semaphore, waker registration)", r"mpsc::|batch_semaphore|list::Rx|atomic_waker"),
    ("connection loop select!, timers, cancellation tokens", r"time::sleep|Sleep|timeout::Timeout|cancellation_token|Notified|connection::Connection::serve"),
]
COMPILED = [(name, re.compile(pattern)) for name, pattern in BUCKETS]

def stacks(lines):
    frames = []
    for line in lines:
        if not line.strip():
            if frames:
                yield frames
            frames = []
            continue
        if line.startswith((" ", "\t")):
            parts = line.strip().split(None, 1)
            frames.append(parts[1] if len(parts) > 1 else "")
    if frames:
        yield frames

def main():
    counts = Counter()
    leaves = Counter()
    other = Counter()
    total = 0
    for frames in stacks(sys.stdin):
        total += 1
        joined = "\n".join(frames)
        for name, pattern in COMPILED:
            if pattern.search(joined):
                counts[name] += 1
                break
        else:
            counts["other (tokio scheduler, allocator outside the above, ...)"] += 1
            other[" <- ".join(f[:60] for f in frames[:2])] += 1
        leaf = frames[0]
        if re.search(r"malloc|free|realloc|_int_|cfree|memmove|memcpy", leaf):
            leaves["allocator + memcpy (leaf, all buckets)"] += 1
    print(f"{total} samples")
    for name, n in counts.most_common():
        print(f"{100.0 * n / total:6.1f}%  {name}")
    for name, n in leaves.items():
        print(f"{100.0 * n / total:6.1f}%  {name}")
    print("top of 'other':")
    for name, n in other.most_common(12):
        print(f"{100.0 * n / total:6.1f}%    {name}")

if __name__ == "__main__":
    main()
