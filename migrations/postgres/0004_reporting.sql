-- Schema version 4: reporting what happened to every file. The same as
-- migrations/sqlite/0004_reporting.sql.

ALTER TABLE items ADD COLUMN size BIGINT;
ALTER TABLE batches ADD COLUMN files_skipped BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN skipped_errors BIGINT NOT NULL DEFAULT 0;
