-- Schema version 9: batch-scheduler jobs tied to their data (staging/job/). A job is
-- tracked from its submission until a watcher has seen it end and done what its end
-- calls for (a release, a stage-out, cancelling its stage-in): each of these is claimed
-- first, so two watchers, or one restarted, do it once (state/jobs.rs).
CREATE TABLE jobs (
    scheduler         TEXT NOT NULL,            -- 'slurm'
    cluster           TEXT NOT NULL,            -- sbatch's cluster name, '' if it gave none
    job_id            TEXT NOT NULL,            -- the scheduler's job id
    identity          TEXT NOT NULL,            -- whose transfers: the watcher of this identity acts
    stage_in          TEXT NOT NULL,            -- JSON: the files the job waits for (StagedFile)
    stage_out         TEXT NOT NULL,            -- JSON: the copies to make when it ends
    stage_out_always  BIGINT NOT NULL,         -- 1: stage out whatever the end, not only COMPLETED
    held              BIGINT NOT NULL,         -- 1: submitted held, released when staged
    on_failure        TEXT NOT NULL,            -- fail, cancel, hold or run
    release_claim     BIGINT,                  -- a watcher's claim to release it: until when
    released_at       BIGINT,                  -- when it was released (or seen released)
    releases          BIGINT NOT NULL DEFAULT 0, -- release commands run (1 at most)
    stage_out_claim   BIGINT,                  -- a watcher's claim to stage out: until when
    stage_out_items   TEXT,                     -- JSON: the stage-out's transfer items, once queued
    stage_in_cancelled BIGINT NOT NULL DEFAULT 0, -- 1: its unfinished stage-in was cancelled
    ended             TEXT,                     -- its final state, or UNKNOWN; NULL while tracked
    ended_at          BIGINT,
    reason            TEXT,                     -- why it waits or what went wrong, as status says
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (scheduler, cluster, job_id)
);
CREATE INDEX jobs_open ON jobs (identity, ended);
