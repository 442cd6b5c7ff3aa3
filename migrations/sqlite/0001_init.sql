-- Amounts are TEXT so that they keep the exact digits and scale they were given ("12.50").
-- Timestamps are TEXT in RFC 3339 with milliseconds, UTC, which sorts as time does.

CREATE TABLE orders (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    order_number    TEXT    NOT NULL UNIQUE,
    customer_id     TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    payment_status  TEXT    NOT NULL,
    total           TEXT    NOT NULL,
    currency        TEXT    NOT NULL,
    tracking_number TEXT,
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL
);
CREATE INDEX orders_by_customer ON orders (customer_id, id);

CREATE TABLE products (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    sku        TEXT    NOT NULL UNIQUE,
    name       TEXT    NOT NULL,
    price      TEXT    NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity >= 0),
    updated_at TEXT    NOT NULL
);

CREATE TABLE notifications (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    title      TEXT    NOT NULL,
    message    TEXT    NOT NULL,
    read       INTEGER NOT NULL DEFAULT 0,
    created_at TEXT    NOT NULL
);
CREATE INDEX notifications_by_user ON notifications (user_id, id);

-- One row per event stream ("order:42", "product:7", "user:u1"): the sequence number of the last
-- event stored on it. Bumped in the same transaction as the change, so a number names one change.
CREATE TABLE topic_sequences (
    topic TEXT    PRIMARY KEY,
    seq   INTEGER NOT NULL
) WITHOUT ROWID;
