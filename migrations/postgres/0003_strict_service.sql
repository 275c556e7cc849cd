-- Schema version 3: surviving the real service's rules (SPEC §3.11). The same as
-- migrations/sqlite/0003_strict_service.sql.

ALTER TABLE batches ADD COLUMN hold_until BIGINT;
ALTER TABLE batches ADD COLUMN holds BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN progress BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN attention TEXT;

CREATE TABLE watches (
    label      TEXT NOT NULL,
    owner      TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (label, owner)
);

CREATE TABLE watched_tasks (
    label   TEXT PRIMARY KEY,
    task    TEXT NOT NULL,
    seen_at BIGINT NOT NULL
);

CREATE TABLE request_budget (
    identity   TEXT PRIMARY KEY,
    tokens     DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL
);
