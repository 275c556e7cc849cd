-- Schema version 4: reporting what happened to every file.

-- The item's size in bytes where the enqueuer knew it (a stored object, a local file):
-- with it, progress can say how much of the whole has moved and when it will be done.
ALTER TABLE items ADD COLUMN size INTEGER;
-- Files the task skipped as already up to date (--sync-level: not a failure), and files
-- skipped on errors (skip_source_errors: each one a failed item), as last polled.
ALTER TABLE batches ADD COLUMN files_skipped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN skipped_errors INTEGER NOT NULL DEFAULT 0;
