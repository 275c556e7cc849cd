-- ps-globus state database, schema version 1.
-- Times are Unix milliseconds. Never stores a token.

-- Processes using this database, for ownership and liveness.
CREATE TABLE processes (
    owner        TEXT PRIMARY KEY,   -- host:pid:start
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started      TEXT NOT NULL,
    heartbeat_at INTEGER NOT NULL
);

-- Leases, e.g. the one poller per identity ("poller:<identity>").
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

-- Bumped by every poll that changes something, so other processes notice.
CREATE TABLE generation (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO generation (id, value) VALUES (1, 0);

-- One Globus task (or one that will be): items grouped by source, destination, options.
-- state: OPEN (taking items) -> READY (items fixed) -> SUBMITTING (submission id fixed)
--        -> SUBMITTED (task id known) -> DONE.
CREATE TABLE batches (
    id                INTEGER PRIMARY KEY,
    label             TEXT NOT NULL UNIQUE,
    identity          TEXT NOT NULL,
    source            TEXT NOT NULL,
    destination       TEXT NOT NULL,
    options           TEXT NOT NULL,
    priority          INTEGER NOT NULL,
    state             TEXT NOT NULL,
    owner             TEXT NOT NULL,
    submission_id     TEXT,
    task_id           TEXT,
    resplit_of        INTEGER REFERENCES batches(id),
    created_at        INTEGER NOT NULL,
    closed_at         INTEGER,
    submitted_at      INTEGER,
    completed_at      INTEGER,
    status            TEXT,
    nice_status       TEXT,
    nice_status_since INTEGER,
    bytes_transferred INTEGER NOT NULL DEFAULT 0,
    files             INTEGER NOT NULL DEFAULT 0,
    files_transferred INTEGER NOT NULL DEFAULT 0,
    fatal_code        TEXT,
    fatal_description TEXT,
    last_error        TEXT
);
CREATE INDEX batches_by_state ON batches (identity, state);
CREATE INDEX batches_by_task ON batches (task_id);

-- One path to transfer. state: PENDING -> SUCCEEDED | FAILED | CANCELED.
CREATE TABLE items (
    id                 INTEGER PRIMARY KEY,
    batch_id           INTEGER NOT NULL REFERENCES batches(id),
    source_path        TEXT NOT NULL,
    destination_path   TEXT NOT NULL,
    recursive          INTEGER,
    external_checksum  TEXT,
    checksum_algorithm TEXT,
    state              TEXT NOT NULL,
    code               TEXT,
    description        TEXT,
    created_at         INTEGER NOT NULL,
    completed_at       INTEGER
);
CREATE INDEX items_by_batch ON items (batch_id);
