-- Schema version 8: when another process's put last joined an open batch (share.rs): its
-- owner keeps the batch open while puts keep joining it (within max_delay). NULL: never.
ALTER TABLE batches ADD COLUMN joined_at BIGINT;
