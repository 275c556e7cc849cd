-- Named, persistent dataset references: a store configuration and a key.
CREATE TABLE refs (
    name       TEXT PRIMARY KEY,
    v          INTEGER NOT NULL,
    store      TEXT NOT NULL,   -- StoreConfig, JSON
    key        TEXT NOT NULL,   -- Key, JSON
    created_at INTEGER NOT NULL -- Unix milliseconds
);
