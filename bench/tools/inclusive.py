#!/usr/bin/env python3
"""Where a Switchboard server's CPU goes during the resume scenarios: the share of perf samples
that have a frame matching each part (inclusive, so parts nest and overlap), the share per thread,
and the top leaf functions. Patterns: `callee<caller` counts a sample whose stack has a frame
matching `callee` called (at any depth) from a frame matching `caller`; `comm:RE` matches the
thread name. Usage:
  perf script -i perf.data -F comm,tid,ip,sym --no-inline | inclusive.py"""
import re
import sys
from collections import Counter

PARTS = [
    # the mutation path
    ("HTTP/1 dispatch (everything under a request)", r"hyper::proto::h1::dispatch"),
    ("  async-graphql parse + validate", r"async_graphql_parser::|async_graphql::validation"),
    ("  request guard (graphql::guard)", r"graphql::guard::"),
    ("Commerce::set_inventory (the write transaction's task)", r"commerce::Commerce::(set_inventory|adjust_inventory|change_stock)"),
    ("  WriteTx begin/commit", r"store::tx::WriteTx"),
    ("  products::get / set_quantity", r"store::products::(get|set_quantity)<commerce::"),
    ("  store::next_seq", r"store::next_seq"),
    ("  events::next_position (UPDATE log_state … RETURNING, the log's position)", r"store::events::next_position"),
    ("  events::append (INSERT INTO event_log)", r"store::events::append"),
    ("  the event body as JSON for the log (serde, timestamps)", r"pubsub::event::_::|pubsub::event::EventBody as serde|InventoryChangePayload as serde"),
    ("broker publish", r"pubsub::Broker::publish"),
    # the resume path
    ("graphql-ws on_subscribe: parse the message, guard, probe run, start", r"GraphqlWs::on_subscribe|GraphqlWs::try_share|ClientMessage::parse"),
    ("results of unshared operations (GraphqlWs::poll_outgoing)", r"GraphqlWs as switchboard::socket::handler::Handler>::poll_outgoing"),
    ("  to a next frame (ServerMessage::to_json)", r"ServerMessage::to_json"),
    ("request preparation: parse + validate (PhaseTags prepare_request/validation)", r"PhaseTags as async_graphql::extensions::Extension>::(prepare_request|validation)"),
    ("  graphql::guard::check", r"graphql::guard::check"),
    ("subscription resolver (create_field_stream: checks, listen)", r"Subscription as async_graphql::subscription::SubscriptionType>::create_field_stream"),
    ("  products::get (does the product exist; probe and real run)", r"store::products::get"),
    ("  subscription::listen (broker subscribe, EventLog::replay)", r"graphql::subscription::listen"),
    ("    events::snapshot (log head, retention mark and the rows, one statement)", r"store::events::snapshot"),
    ("    events::from_row (decoding the rows)", r"store::events::from_row"),
    ("    decode: serde_json of stored event bodies", r"event_log::decode"),
    ("    broker subscribe", r"pubsub::Broker::subscribe"),
    ("executing each event (PhaseTags::resolve, field resolvers)", r"PhaseTags as async_graphql::extensions::Extension>::resolve|resolve_container|resolve_field"),
    ("shared groups (fanout deliver, frame_for)", r"fanout::deliver|frame_for|fanout::run_group"),
    ("tungstenite (framing, flush)", r"tungstenite::"),
    ("WebSocket upgrade / accept", r"hyper::upgrade|derive_accept_key|accept4|on_upgrade"),
    ("connection close / drop", r"drop_in_place<switchboard::socket|socket::connection::close|tcp_close|tcp_fin"),
    # below everyone
    ("sqlx (any statement, both sides of its channel)", r"sqlx|sqlite3|libsqlite|flume"),
    ("  SQLite library (sqlite3*)", r"sqlite3"),
    ("kernel: fsync / file writes", r"fsync|fdatasync|ext4_|jbd2|vfs_write|xfs_"),
    ("kernel: TCP send", r"tcp_sendmsg"),
    ("kernel: TCP receive", r"tcp_recvmsg"),
    ("kernel: futex / context switch", r"futex|finish_task_switch|__schedule"),
    ("kernel: epoll", r"epoll_wait|do_epoll"),
    ("allocator (leaf)", r"LEAF:malloc|free|realloc|_int_|cfree|sdallocx|je_|rallocx"),
    ("memcpy/memmove (leaf)", r"LEAF:memmove|memcpy|memset"),
    ("thread sqlx-sqlite-worker", r"comm:sqlx-sqlite"),
    ("thread tokio-runtime-worker", r"comm:tokio-runtime"),
]


def compile_part(pattern):
    if pattern.startswith("comm:"):
        rx = re.compile(pattern[5:])
        return lambda comm, frames: bool(rx.search(comm))
    if pattern.startswith("LEAF:"):
        rx = re.compile(pattern[5:])
        return lambda comm, frames: bool(frames) and bool(rx.search(frames[0]))
    if "<" in pattern and not pattern.startswith("drop_in_place<"):
        callee, caller = pattern.split("<", 1)
        a, b = re.compile(callee), re.compile(caller)

        def nested(comm, frames):
            for i, f in enumerate(frames):
                if a.search(f):
                    return any(b.search(g) for g in frames[i + 1:])
            return False
        return nested
    rx = re.compile(pattern)
    return lambda comm, frames: any(rx.search(f) for f in frames)


def stacks(lines):
    comm, frames = None, []
    for line in lines:
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
            continue
        if line.startswith((" ", "\t")):
            parts = line.strip().split(None, 1)
            frames.append(parts[1] if len(parts) > 1 else "")
        else:
            comm, frames = line.split()[0], []
    if comm is not None:
        yield comm, frames


def main():
    parts = [(name, compile_part(p)) for name, p in PARTS]
    counts, leaves, total = Counter(), Counter(), 0
    for comm, frames in stacks(sys.stdin):
        total += 1
        for name, match in parts:
            if match(comm, frames):
                counts[name] += 1
        if frames:
            leaves[re.sub(r"\+0x[0-9a-f]+$", "", frames[0])[:110]] += 1
    print(f"{total} samples (inclusive shares: parts overlap)")
    for name, _ in PARTS:
        if counts[name] * 200 >= total:
            print(f"{100.0 * counts[name] / max(total, 1):6.1f}%  {name}")
    print("top leaf functions:")
    for name, n in leaves.most_common(20):
        print(f"{100.0 * n / max(total, 1):6.1f}%    {name}")


if __name__ == "__main__":
    main()
