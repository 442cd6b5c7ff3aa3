-- One row that `/ready` rewrites to prove the store can commit (a full disk answers reads but
-- cannot write).
CREATE TABLE store_probe (
    id INTEGER PRIMARY KEY,
    at TEXT    NOT NULL
);
