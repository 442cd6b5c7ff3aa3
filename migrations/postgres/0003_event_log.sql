-- The durable event log: every published change, appended in the transaction that stores it.
--
-- `position` is one counter for the whole store, assigned from `log_state.head` under the write
-- lock, so positions are gap-free and in commit order: a reader that sees position N committed
-- knows every position below N is committed too. `seq` is the change's number on its entity's
-- topic (`order:42` -> 1, 2, 3...). `kind` and `audience` (the customer of an order event) let a
-- resuming subscriber read exactly the events its subscription would have received.
CREATE TABLE event_log (
    position   BIGINT  PRIMARY KEY,
    topic      TEXT    NOT NULL,
    seq        BIGINT  NOT NULL,
    kind       TEXT    NOT NULL,
    audience   TEXT,
    body       TEXT    NOT NULL,
    created_at TEXT    NOT NULL
);
CREATE INDEX event_log_by_topic ON event_log (topic, position);
CREATE INDEX event_log_by_kind ON event_log (kind, position);
CREATE INDEX event_log_by_audience ON event_log (audience, position);

-- One row: the log's epoch (a random name given when the log is first opened, so that a cursor
-- from another store, or from this one before it was recreated, is recognised), the last position
-- assigned, and the last position removed by retention.
CREATE TABLE log_state (
    id             BIGINT PRIMARY KEY CHECK (id = 1),
    epoch          TEXT    NOT NULL,
    head           BIGINT  NOT NULL,
    pruned_through BIGINT  NOT NULL
);
