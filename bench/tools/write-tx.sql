-- The tables setInventory writes, for bench/tools/write-tx.pgbench (bench/cluster.sh loads them
-- into a database of their own: the transaction below must never touch a live event log).
CREATE TABLE products (id BIGINT PRIMARY KEY, sku TEXT NOT NULL UNIQUE, name TEXT NOT NULL, price TEXT NOT NULL,
                       quantity BIGINT NOT NULL CHECK (quantity >= 0), updated_at TEXT NOT NULL);
CREATE TABLE log_state (id BIGINT PRIMARY KEY, epoch TEXT NOT NULL, head BIGINT NOT NULL, pruned_through BIGINT NOT NULL);
CREATE TABLE topic_sequences (topic TEXT PRIMARY KEY, seq BIGINT NOT NULL);
CREATE TABLE event_log (position BIGINT PRIMARY KEY, topic TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL,
                        audience TEXT, body TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX event_log_by_topic ON event_log (topic, position);
CREATE INDEX event_log_by_audience ON event_log (audience, position);
INSERT INTO log_state VALUES (1, 'bench', 0, 0);
INSERT INTO products SELECT i, 'sku-' || i, 'bench', '1.00', 0, 'now' FROM generate_series(1, 12) AS i;
