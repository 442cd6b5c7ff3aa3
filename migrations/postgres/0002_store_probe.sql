-- One row that `/ready` rewrites to prove the store can commit.
CREATE TABLE store_probe (
    id BIGINT PRIMARY KEY,
    at TEXT   NOT NULL
);
