-- Schema version 7: where a lease's objects can be evicted from (JSON: the process, host
-- or site its store's objects are held at; {} for anywhere). A process that cannot reach
-- them leaves the lease for one that can, instead of forgetting it with its objects kept.
ALTER TABLE lifetime_leases ADD COLUMN reach TEXT NOT NULL DEFAULT '{}';
