-- Schema version 3: surviving the real service's rules (SPEC §3.11).

-- A batch Globus asked to wait (409: identical paths still in flight, or the
-- pending-task limit) is not posted again before hold_until (Unix ms); holds counts how
-- often it was held, for the back-off. A finishing task of the identity lifts every hold.
ALTER TABLE batches ADD COLUMN hold_until INTEGER;
ALTER TABLE batches ADD COLUMN holds INTEGER NOT NULL DEFAULT 0;
-- Files and subtasks the task has finished, as last polled: with bytes_transferred, what
-- tells a task that moves from one that is stuck.
ALTER TABLE batches ADD COLUMN progress INTEGER NOT NULL DEFAULT 0;
-- Why the task waits for a human (a permission error that persists), while it does.
ALTER TABLE batches ADD COLUMN attention TEXT;

-- Labels the readers of each process wait on; expired rows belong to gone processes.
CREATE TABLE watches (
    label      TEXT NOT NULL,
    owner      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (label, owner)
);

-- The task of each watched label as the watcher (the lease holder) last saw it, JSON.
CREATE TABLE watched_tasks (
    label   TEXT PRIMARY KEY,
    task    TEXT NOT NULL,
    seen_at INTEGER NOT NULL
);

-- One token bucket of Transfer requests per identity, shared by every process of this
-- database (manager, poller and watcher alike).
CREATE TABLE request_budget (
    identity   TEXT PRIMARY KEY,
    tokens     REAL NOT NULL,
    updated_at INTEGER NOT NULL
);
