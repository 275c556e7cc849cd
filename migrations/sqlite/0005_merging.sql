-- Schema version 5: batches of many processes (and hosts) join at submission.

-- A READY batch that joined another batch of the same collections, options and priority
-- when that one was submitted (state MERGED): its items travel in that batch.
ALTER TABLE batches ADD COLUMN merged_into INTEGER;

-- The batch an item was enqueued in, when it has since moved into another at a merge:
-- the item is still found by its first batch's label.
ALTER TABLE items ADD COLUMN merged_from INTEGER;
