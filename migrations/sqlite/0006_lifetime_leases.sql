-- Schema version 6: lease lifetimes. A lease evicts its objects when it expires; it is
-- kept here, not in its owner's memory, so that any process of this database evicts the
-- objects of a lease whose owner died.
CREATE TABLE lifetime_leases (
    id         TEXT PRIMARY KEY,
    store      TEXT NOT NULL,        -- StoreConfig, JSON: what the evicting process rebuilds
    expires_at INTEGER NOT NULL,      -- Unix milliseconds, by the database's clock
    ending     INTEGER NOT NULL DEFAULT 0, -- 1 once a process has claimed its eviction
    created_at INTEGER NOT NULL
);
CREATE INDEX lifetime_leases_by_expiry ON lifetime_leases (expires_at);

-- The objects of each lease.
CREATE TABLE lifetime_objects (
    lease_id TEXT NOT NULL REFERENCES lifetime_leases (id) ON DELETE CASCADE,
    key      TEXT NOT NULL,          -- Key, JSON
    PRIMARY KEY (lease_id, key)
);
