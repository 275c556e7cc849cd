-- Named, persistent dataset references: a store configuration and a key.
CREATE TABLE refs (
    name       TEXT PRIMARY KEY,
    v          BIGINT NOT NULL,
    store      TEXT NOT NULL,   -- StoreConfig, JSON
    key        TEXT NOT NULL,   -- Key, JSON
    created_at BIGINT NOT NULL  -- Unix milliseconds
);
